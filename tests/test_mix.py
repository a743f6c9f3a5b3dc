"""Dataset mixing by ratio."""

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from lfpc.config import load_samples
from lfpc.data.mix import mix_by_ratio
from lfpc.data.records import DatasetError, Sample, load_jsonl, write_jsonl
from lfpc.data.stage1 import build_stage1, main, stage1_config


def make(prefix, n):
    return [Sample(id=f"{prefix}{i}", image_path="x.jpg", question="q", options=("a", "b"), answer="A")
            for i in range(n)]


def test_ratio_shares_and_determinism():
    sources = [("a", make("a", 10), 3.0), ("b", make("b", 10), 1.0)]
    mixed = mix_by_ratio(sources, total=8, seed=1)
    # 3/4 of 8 = 6 from a, 1/4 of 8 = 2 from b
    assert sum(s.id.startswith("a") for s in mixed) == 6 and sum(s.id.startswith("b") for s in mixed) == 2
    assert len({s.id for s in mixed}) == 8
    assert [s.id for s in mixed] == [s.id for s in mix_by_ratio(sources, total=8, seed=1)]
    assert [s.id for s in mixed] != [s.id for s in mix_by_ratio(sources, total=8, seed=2)]


def test_total_none_takes_whole_sources_with_positive_ratio():
    mixed = mix_by_ratio([("a", make("a", 3), 1.0), ("b", make("b", 5), 0.0)], total=None)
    assert sorted(s.id for s in mixed) == ["a0", "a1", "a2"]


def test_too_small_source_is_drawn_with_replacement_evenly(caplog):
    with caplog.at_level(logging.INFO, logger="lfpc.data.mix"):
        mixed = mix_by_ratio([("a", make("a", 10), 1.0), ("b", make("b", 2), 1.0)], total=10)
    b = Counter(s.id for s in mixed if s.id.startswith("b"))
    assert sum(b.values()) == 5 and sorted(b.values()) == [2, 3]  # 5 draws from 2 samples: 2 + 3
    assert len({s.id for s in mixed if s.id.startswith("a")}) == 5  # a is drawn without replacement
    assert "a 5 of 10, b 5 of 2 (with replacement)" in caplog.text


def test_default_total_is_one_to_one_with_every_sample_at_least_once():
    """Table 8: Stage I data and 256 VisualProbe samples at 1:1 -> all of Stage I, as many VisualProbe draws."""
    mixed = mix_by_ratio([("stage1", make("s", 12), 1.0), ("vp", make("v", 4), 1.0)], total=None, seed=3)
    ids = Counter(s.id[0] for s in mixed)
    assert ids == {"s": 12, "v": 12}
    assert {s.id for s in mixed if s.id.startswith("s")} == {f"s{i}" for i in range(12)}
    assert Counter(s.id for s in mixed if s.id.startswith("v")) == {f"v{i}": 3 for i in range(4)}


def test_bad_mixes_are_named():
    with pytest.raises(ValueError, match="source 'b' has ratio 1.0 but no samples"):
        mix_by_ratio([("a", make("a", 2), 1.0), ("b", [], 1.0)], total=None)
    with pytest.raises(ValueError, match="negative ratio"):
        mix_by_ratio([("a", make("a", 2), 1.0), ("b", make("b", 2), -0.5)], total=None)


def test_a_mix_whose_sources_share_an_id_is_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg")
    for name, question in (("d1", "q1"), ("d2", "q2")):
        write_jsonl([Sample(id="same", image_path="x.jpg", question=question, options=("a", "b"), answer="A")],
                    tmp_path / f"{name}.jsonl")
    sources = {name: {"kind": "jsonl", "path": str(tmp_path / f"{name}.jsonl"), "ratio": 1.0} for name in ("d1", "d2")}
    data = OmegaConf.create({"kind": "mix", "num_samples": None, "sources": sources})
    with pytest.raises(DatasetError, match=r"data mix of \['d1', 'd2'\]: sample \d+ has the id 'same' of sample \d+"):
        load_samples(data)


def _converted(folder, prefix, n, image):
    """A converted source file of ``n`` rows (ids ``<prefix>-<i>``) on one real image."""
    path = folder / f"{prefix}.jsonl"
    write_jsonl([Sample(id=f"{prefix}-{i}", image_path=str(image), question=f"q{i}?", options=(), answer=str(i),
                        source=prefix) for i in range(n)], path)
    return path


def test_stage1_file_holds_the_configured_count_of_each_source_and_records_its_make_up(tmp_path):
    image = tmp_path / "img.png"
    Image.new("RGB", (64, 48)).save(image)
    pr, cof, tl = (_converted(tmp_path, name, n, image) for name, n in (("pr", 7), ("cof", 5), ("tl", 20)))
    out = tmp_path / "mix" / "stage1.jsonl"
    overrides = [f"out={out}", f"sources.pixel_reasoner.path={pr}", f"sources.cof.path={cof}",
                 f"sources.thinklite.path={tl}", "sources.thinklite.count=3",
                 f"sources.deepeyes.path={tmp_path / 'absent.jsonl'}"]  # count 0: never read
    main(overrides)
    samples = load_jsonl(out)
    counts = Counter(s.id.split("-")[0] for s in samples)
    assert counts == {"pr": 7, "cof": 5, "tl": 3} and len({s.id for s in samples}) == 15
    assert all(Path(s.image_path) == image for s in samples)  # image paths still resolve from the new folder
    make_up = json.loads(Path(f"{out}.mix.json").read_text())
    assert {n: (v["rows"], v["drawn"]) for n, v in make_up["sources"].items()} == \
        {"pixel_reasoner": (7, 7), "cof": (5, 5), "thinklite": (20, 3)}
    assert make_up["sources"]["thinklite"]["share"] == pytest.approx(3 / 15) and make_up["rows"] == 15
    first = [s.id for s in samples]
    build_stage1(stage1_config(overrides))
    assert [s.id for s in load_jsonl(out)] == first  # seeded
    with pytest.raises(DatasetError, match="sources.thinklite.count is 30, but .*tl.jsonl holds 20 rows"):
        build_stage1(stage1_config([*overrides, "sources.thinklite.count=30"]))


def test_paper_stage1_config_draws_pixel_reasoner_cof_and_some_thinklite_not_deepeyes():
    sources = stage1_config().sources
    assert sources.pixel_reasoner.count is None and sources.cof.count is None
    assert 0 < sources.thinklite.count < 11000 and sources.deepeyes.count == 0
