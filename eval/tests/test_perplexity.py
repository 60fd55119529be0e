import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.shards import ShardSet, ShardWriter, write_manifest
from eval import perplexity
from model.llama import build
from model.presets import preset

V = 512


@pytest.fixture(scope="module")
def model():
    return build(preset("tiny", n_layers=2, dim=64, n_heads=4, n_kv_heads=2, vocab_size=V, max_seq_len=256), seed=0)


def write_shards(root, docs_by_key):
    entries = []
    for (category, split, number), docs in docs_by_key.items():
        w = ShardWriter(root, category, split, number)
        for d in docs:
            w.add(d)
        entries.append(w.close())
    write_manifest(root, entries, {"name": "test", "vocab_size": V})
    return ShardSet(root)


def make_docs(rng, n, lo, hi):
    return [rng.integers(0, V, size=int(rng.integers(lo, hi))) for _ in range(n)]


def reference(model, docs, seq_len):
    """Brute force: cut the stream into the same windows, run every document piece of a window on its own."""
    stream = np.concatenate(docs)
    doc = np.concatenate([np.full(len(d), i) for i, d in enumerate(docs)])
    total, count = 0.0, 0
    for start in range(0, len(stream) - 1, seq_len):
        w, d = stream[start : start + seq_len + 1], doc[start : start + seq_len + 1]
        for piece in np.unique(d):
            idx = np.nonzero(d == piece)[0]
            if len(idx) < 2:
                continue
            toks = torch.tensor(w[idx], dtype=torch.long)[None]
            with torch.no_grad():
                logits = model(toks[:, :-1])
            total += float(F.cross_entropy(logits[0], toks[0, 1:], reduction="sum"))
            count += len(idx) - 1
    return total / count, count


def test_loss_matches_per_document_brute_force_and_counts(model, tmp_path):
    rng = np.random.default_rng(0)
    math_docs, code_docs = make_docs(rng, 7, 5, 90), make_docs(rng, 3, 40, 200)
    train_docs = make_docs(rng, 4, 10, 20)
    shards = write_shards(
        tmp_path,
        {
            ("math", "valid", 0): math_docs,
            ("code", "valid", 0): code_docs,
            ("math", "train", 0): train_docs,
        },
    )
    cfg = perplexity.PerplexityConfig(seq_len=64, batch_size=3)
    res = perplexity.evaluate(model, cfg, shards, progress=False)
    assert set(res) == {"math", "code", "all"}
    for cat, docs in (("math", math_docs), ("code", code_docs)):
        want_loss, want_count = reference(model, docs, 64)
        assert res[cat]["tokens"] == want_count == sum(len(d) for d in docs) - len(docs)
        assert res[cat]["loss"] == pytest.approx(want_loss, rel=1e-4)
        assert res[cat]["perplexity"] == pytest.approx(math.exp(want_loss), rel=1e-4)
    n = res["math"]["tokens"] + res["code"]["tokens"]
    mixed = (res["math"]["loss"] * res["math"]["tokens"] + res["code"]["loss"] * res["code"]["tokens"]) / n
    assert res["all"]["loss"] == pytest.approx(mixed, rel=1e-6)


def test_a_uniform_model_scores_log_vocab_and_token_budget_is_respected(model, tmp_path):
    uniform = build(preset("tiny", n_layers=1, dim=64, n_heads=4, n_kv_heads=2, vocab_size=V, max_seq_len=64), seed=0)
    with torch.no_grad():
        uniform.output.weight.zero_()  # all logits 0: every token has probability 1/V
    rng = np.random.default_rng(1)
    shards = write_shards(tmp_path, {("general", "valid", 0): make_docs(rng, 20, 30, 60)})
    cfg = perplexity.PerplexityConfig(seq_len=32, batch_size=4, max_tokens=128)
    res = perplexity.evaluate(uniform, cfg, shards, progress=False)
    assert res["general"]["loss"] == pytest.approx(math.log(V), rel=1e-6)
    assert res["general"]["windows"] == 4 and res["general"]["tokens"] <= 128
    with pytest.raises(ValueError, match="no 'test' shards"):
        perplexity.evaluate(uniform, perplexity.PerplexityConfig(split="test"), shards, progress=False)


def test_loss_by_position_bins_the_per_token_nll(model):
    g = torch.Generator().manual_seed(3)
    windows = torch.randint(0, V, (5, 65), generator=g)
    with torch.no_grad():
        nll = F.cross_entropy(model(windows[:, :-1]).transpose(1, 2), windows[:, 1:], reduction="none")  # [5, 64]
    early, late = perplexity.loss_by_position(model, windows, [0, 16, 64], batch_size=2)
    assert early == pytest.approx(float(nll[:, :16].mean()), rel=1e-5)
    assert late == pytest.approx(float(nll[:, 16:].mean()), rel=1e-5)
    # The bins weigh their positions: 16 early and 48 late targets make up the whole window's mean.
    assert (16 * early + 48 * late) / 64 == pytest.approx(float(nll.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="must rise"):
        perplexity.loss_by_position(model, windows, [0, 70])
