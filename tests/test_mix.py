"""Dataset mixing by ratio."""

import logging
from collections import Counter

import pytest
from omegaconf import OmegaConf
from PIL import Image

from lfpc.config import load_samples
from lfpc.data.mix import mix_by_ratio
from lfpc.data.records import DatasetError, Sample, write_jsonl


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
