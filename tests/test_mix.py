"""Dataset mixing by ratio."""

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


def test_too_small_source_is_named():
    with pytest.raises(ValueError, match="source 'b' has 2 samples but its ratio asks for 5"):
        mix_by_ratio([("a", make("a", 10), 1.0), ("b", make("b", 2), 1.0)], total=10)


def test_a_mix_repeating_ids_is_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg")
    write_jsonl([Sample(id="same", image_path="x.jpg", question="q", options=("a", "b"), answer="A")],
                tmp_path / "d.jsonl")
    source = {"kind": "jsonl", "path": str(tmp_path / "d.jsonl"), "ratio": 1.0}
    data = OmegaConf.create({"kind": "mix", "num_samples": None, "sources": {"one": source, "two": source}})
    with pytest.raises(DatasetError, match=r"data mix of \['one', 'two'\]: sample 2 has the id 'same' of sample 1"):
        load_samples(data)
