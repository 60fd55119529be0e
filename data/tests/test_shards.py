import json

import numpy as np
import pytest

from data.shards import ShardSet, ShardWriter, write_manifest

TOK = {"name": "test", "vocab_size": 100, "eos_id": 99}


def write_set(root, docs_by_key):
    entries = []
    for (category, split), docs in docs_by_key.items():
        w = ShardWriter(root, category, split, 0)
        for d in docs:
            w.add(d)
        entries.append(w.close())
    write_manifest(root, entries, TOK)


def test_round_trip_counts_and_offsets(tmp_path):
    rng = np.random.default_rng(0)
    general = [rng.integers(0, 99, size=n) for n in (5, 1, 17)]
    code = [np.array([1, 2, 99])]
    write_set(tmp_path, {("general", "train"): general, ("code", "valid"): code})
    s = ShardSet(tmp_path)
    assert s.categories == ["code", "general"]
    (g,) = s.select(category="general")
    assert (g.tokens, g.documents, g.split) == (23, 3, "train")
    assert s.offsets(g).tolist() == [0, 5, 6, 23]
    got = list(s.documents(g))
    assert all(np.array_equal(a, b) for a, b in zip(got, general, strict=True))
    totals = json.loads((tmp_path / "manifest.json").read_text())["totals"]
    assert totals["tokens"] == 26 and totals["documents"] == 4
    assert totals["by_category"]["code"] == {"tokens": 3, "documents": 1}
    assert totals["by_split"]["train"] == {"tokens": 23, "documents": 3}
    s.verify()


def test_corruption_and_truncation_are_caught(tmp_path):
    write_set(tmp_path, {("general", "train"): [np.arange(10)]})
    path = tmp_path / "general/train-00000.tokens"
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        ShardSet(tmp_path).verify()
    path.write_bytes(bytes(data[:-4]))
    with pytest.raises(ValueError, match="expected 40 bytes"):
        ShardSet(tmp_path)


def test_unfinished_set_and_bad_documents(tmp_path):
    w = ShardWriter(tmp_path, "general", "train", 0)
    with pytest.raises(ValueError, match="non-empty"):
        w.add([])
    with pytest.raises(ValueError, match="uint32"):
        w.add([-1])
    w.add([3])
    w.close()
    with pytest.raises(FileNotFoundError, match="no manifest"):
        ShardSet(tmp_path)
