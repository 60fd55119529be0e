"""The packed, document-masked loader: exact packing, exact mix, resumable position, rank splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import DataConfig
from training.data import IGNORE, PackedLoader
from training.tests.helpers import write_shards

# token = category * 100,000 + document * 1,000 + position, so every token says where it came from.
LENGTHS = {
    "a": [int(x) for x in np.random.default_rng(0).integers(1, 60, 40)],
    "b": [int(x) for x in np.random.default_rng(1).integers(1, 60, 30)],
}


def doc(cat: int, i: int, n: int) -> list[int]:
    return [cat * 100_000 + i * 1000 + j for j in range(n)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    docs = {(name, "train"): [doc(c + 1, i, n) for i, n in enumerate(LENGTHS[name])] for c, name in enumerate("ab")}
    docs[("b", "valid")] = [doc(9, i, 20) for i in range(5)]
    return write_shards(root, docs, vocab=1_000_000)


def where(token: int) -> tuple[int, int, int]:
    return token // 100_000, token % 100_000 // 1000, token % 1000


def test_rows_pack_whole_documents_with_masked_boundaries(shards):
    loader = PackedLoader(shards, DataConfig(mix={"a": 1.0}))
    seen = []
    for _ in range(sum(LENGTHS["a"]) // 64 + 2):
        b = loader.next_batch(4, 16)
        for row in range(4):
            tokens, targets, ids = b.tokens[row].tolist(), b.targets[row].tolist(), b.doc_ids[row].tolist()
            for t in range(16):
                cat, d, pos = where(tokens[t])
                same_next = t + 1 < 16 and ids[t + 1] == ids[t]
                if same_next:  # inside a segment: consecutive positions of one document
                    assert where(tokens[t + 1]) == (cat, d, pos + 1) and targets[t] == tokens[t + 1]
                elif pos + 1 < LENGTHS["a"][d]:  # the row ends mid-document: the target is its next token
                    assert t == 15 and targets[t] == tokens[t] + 1
                else:  # a document's last token has no target
                    assert targets[t] == IGNORE
            seen.extend(tokens)
    # The first epoch (in its seeded order) covers every token of every document exactly once.
    total = sum(LENGTHS["a"])
    first_epoch = seen[:total]
    assert sorted(first_epoch) == sorted(t for i, n in enumerate(LENGTHS["a"]) for t in doc(1, i, n))
    order = list(dict.fromkeys(where(t)[1] for t in first_epoch))
    assert order != sorted(order)  # shuffled, not in file order


def test_mix_is_exact_by_tokens(shards):
    loader = PackedLoader(shards, DataConfig(mix={"a": 0.75, "b": 0.25}))
    counts = {1: 0, 2: 0}
    for _ in range(20):
        b = loader.next_batch(8, 32)
        cats = b.tokens // 100_000
        for c in counts:
            counts[c] += int((cats == c).sum())
    total = counts[1] + counts[2]
    assert total == 20 * 8 * 32
    assert abs(counts[1] / total - 0.75) < 60 / total  # off by less than one document


def test_resuming_from_a_state_continues_the_same_stream(shards):
    cfg = DataConfig(mix={"a": 0.5, "b": 0.5}, seed=3)
    full = PackedLoader(shards, cfg)
    batches = [full.next_batch(4, 24) for _ in range(7)]
    part = PackedLoader(shards, cfg)
    for _ in range(3):
        part.next_batch(4, 24)
    state = part.state_dict()
    resumed = PackedLoader(shards, cfg)
    resumed.load_state_dict(state)
    for b in batches[3:]:
        r = resumed.next_batch(4, 24)
        assert torch.equal(r.tokens, b.tokens) and torch.equal(r.targets, b.targets)
        assert torch.equal(r.doc_ids, b.doc_ids)
    other_seed = PackedLoader(shards, DataConfig(mix={"a": 0.5, "b": 0.5}, seed=4)).next_batch(4, 24)
    assert not torch.equal(other_seed.tokens, batches[0].tokens)


def test_ranks_get_contiguous_shares_of_the_same_global_batch(shards):
    cfg = DataConfig(mix={"a": 0.6, "b": 0.4})
    whole = PackedLoader(shards, cfg)
    halves = [PackedLoader(shards, cfg) for _ in range(2)]
    for _ in range(3):
        w = whole.next_batch(6, 20)
        parts = [h.next_batch(6, 20, rank=r, world=2) for r, h in enumerate(halves)]
        assert torch.equal(torch.cat([p.tokens for p in parts]), w.tokens)
        assert torch.equal(torch.cat([p.targets for p in parts]), w.targets)
        assert sum(p.n_targets for p in parts) == w.n_targets
    with pytest.raises(ValueError, match="cannot be split evenly"):
        whole.next_batch(5, 20, rank=0, world=2)


def test_a_new_mix_keeps_document_cursors(shards):
    first = PackedLoader(shards, DataConfig(mix={"a": 0.5, "b": 0.5}))
    first.next_batch(4, 30)
    state = first.state_dict()
    only_b = PackedLoader(shards, DataConfig(mix={"b": 1.0}))
    only_b.load_state_dict(state, reset_mix=True)
    assert only_b.cursor["b"] == state["cursor"]["b"] and only_b.taken == {"b": 0}
    # Category a's position survives a phase that does not use it.
    assert only_b.state_dict()["cursor"]["a"] == state["cursor"]["a"]


def test_missing_categories_are_dropped_or_refused(shards, tmp_path):
    loose = PackedLoader(shards, DataConfig(mix={"a": 0.5, "code": 0.5}))
    assert loose.skipped == ["code"] and loose.weights == {"a": 1.0}
    with pytest.raises(ValueError, match="data.mix key 'code': no 'train' shards"):
        PackedLoader(shards, DataConfig(mix={"a": 0.5, "code": 0.5}, strict=True))
    valid = PackedLoader(shards, DataConfig(mix={"a": 0.5, "b": 0.5}), split="valid")
    assert valid.skipped == ["a"] and int(valid.next_batch(1, 10).tokens[0, 0]) // 100_000 == 9


def test_another_shard_set_can_join_the_mix_by_category(shards, tmp_path):
    other = write_shards(
        tmp_path / "other",
        {("x", "train"): [doc(5, i, 10) for i in range(5)], ("y", "train"): [doc(6, i, 10) for i in range(5)]},
        vocab=1_000_000,
    )
    loader = PackedLoader(shards, DataConfig(mix={"a": 0.5, "cand": 0.5}, sources={"cand": f"{other}#y"}))
    cats = set((loader.next_batch(8, 16).tokens // 100_000).unique().tolist())
    assert cats == {1, 6}
