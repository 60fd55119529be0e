"""Semantic dedup (data/posttrain/semantic_dedup.py): exactly the all-pairs greedy keep, ranked by score,
deterministic; wordllama offline; the model and HF embedders."""

from __future__ import annotations

import numpy as np
import pytest

from data.dialogs import Dialog
from data.posttrain.semantic_dedup import (
    SemanticDedupConfig,
    brute_force_keep,
    dedup,
    embed_dialogs,
    hf_embedder,
    make_embedder,
    model_embedder,
    wordllama_embedder,
)


def planted(n_base: int = 400, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Random unit vectors plus noisy copies of some of them, at a range of similarities (chains included)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_base, dim))
    copies = [base[i] + rng.uniform(0.05, 0.6) * rng.standard_normal(dim) for i in rng.integers(0, n_base, 300)]
    copies += [c + 0.1 * rng.standard_normal(dim) for c in copies[:50]]  # copies of copies
    e = np.concatenate([base, np.array(copies)])
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9, 0.97])
def test_components_equal_the_brute_force_greedy(threshold):
    e = planted()
    scores = np.random.default_rng(1).integers(0, 4, len(e)).astype(float)  # ties on purpose
    result = dedup(e, scores, SemanticDedupConfig(threshold=threshold))
    exact = brute_force_keep(e, scores, threshold)
    assert np.array_equal(result.kept, exact)
    assert 0 < (~exact).sum() < len(e)  # the thresholds do remove something, and not everything
    removed = np.flatnonzero(~result.kept)
    # Each removed dialog names a kept one at cosine >= threshold, ranked at least as high.
    assert result.kept[result.removed_by[removed]].all() and (result.similarity[removed] >= threshold).all()
    assert (scores[result.removed_by[removed]] >= scores[removed]).all()
    sims = e[result.kept] @ e[result.kept].T
    assert (sims[~np.eye(len(sims), dtype=bool)] < threshold + 1e-6).all()  # the kept set has no pair above it


def test_ranking_keeps_the_best_and_ties_keep_input_order():
    e = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32)
    r = dedup(e, np.array([1.0, 2.0, 1.0, 1.0]), SemanticDedupConfig(threshold=0.9))
    assert r.kept.tolist() == [False, True, True, False] and r.removed_by.tolist() == [1, -1, -1, 2]
    assert r.clusters == 2 and r.pairs == 2


def test_kmeans_is_deterministic_and_exact_with_one_cluster():
    e, scores = planted(), np.arange(750, dtype=float)
    cfg = SemanticDedupConfig(threshold=0.8, cluster="kmeans", cluster_size=100, seed=3)
    a, b = dedup(e, scores, cfg), dedup(e, scores, cfg)
    assert np.array_equal(a.kept, b.kept) and a.clusters == 8  # ceil(750 / 100)
    # Only pairs inside a cluster are compared: a subset of the exact pairs.
    assert a.pairs <= dedup(e, scores, SemanticDedupConfig(threshold=0.8)).pairs
    exact = brute_force_keep(e, scores, 0.8)
    one = dedup(e, scores, SemanticDedupConfig(threshold=0.8, cluster="kmeans", cluster_size=10_000))
    assert np.array_equal(one.kept, exact)
    with pytest.raises(ValueError, match="components or kmeans"):
        dedup(e, scores, SemanticDedupConfig(cluster="dbscan"))


def test_wordllama_offline(monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("wordllama tried to download")

    monkeypatch.setattr(requests, "get", no_network)
    embed = wordllama_embedder()
    e = embed(
        [
            "How do I sort a list of numbers in Python?",
            "How can I sort a Python list of numbers?",
            "The recipe needs two eggs, flour and a cup of milk.",
        ]
    )
    assert e.shape == (3, 256) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] > 0.85 and e[0] @ e[2] < 0.4


def test_semantic_dedup_of_dialogs_with_wordllama():
    def d(q, a):
        return Dialog([{"role": "user", "content": q}, {"role": "assistant", "content": a}])

    dialogs = [
        d("How do I reverse a string in Python?", "Use slicing: s[::-1] returns the reversed string."),
        d("How do I reverse a string in Python?", "Use slicing: s[::-1] returns the reversed string!"),
        d("What is the capital of France?", "Paris is the capital of France."),
        d(
            "Write a haiku about autumn leaves.",
            "Red leaves drift and fall, the wind hums a quiet song, branches wait.",
        ),
    ]
    e = embed_dialogs(dialogs, make_embedder(SemanticDedupConfig()), batch_size=3)
    r = dedup(e, np.array([1.0, 2.0, 1.0, 1.0]), SemanticDedupConfig())
    assert r.kept.tolist() == [False, True, True, True] and r.removed_by[0] == 1


def test_model_embedder_mean_pools_the_projects_model(tmp_path):
    from model.checkpoint import save_model
    from model.llama import build
    from model.presets import preset
    from model.tokenizer import Tokenizer

    tok = Tokenizer({bytes([i]): i for i in range(256)})
    model = build(preset("tiny", n_layers=1, dim=64, n_heads=4, n_kv_heads=2, vocab_size=512), seed=0).eval()
    save_model(model, tok, tmp_path / "m")
    embed = make_embedder(SemanticDedupConfig(embedder="model", path=str(tmp_path / "m"), max_tokens=64))
    e = embed(["same text", "same text", "something else entirely"])
    assert e.shape == (3, 64) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert np.allclose(e[0], e[1]) and e[0] @ e[2] < 0.999
    assert np.allclose(
        e, model_embedder(model, tok, max_tokens=64)(["same text", "same text", "something else entirely"])
    )
    with pytest.raises(ValueError, match="needs semantic_dedup.path"):
        make_embedder(SemanticDedupConfig(embedder="model"))


def test_hf_embedder_needs_a_local_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs a local Hugging Face model directory"):
        hf_embedder(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        make_embedder(SemanticDedupConfig(embedder="hf", path=""))
    with pytest.raises(ValueError, match="wordllama, model or hf"):
        make_embedder(SemanticDedupConfig(embedder="word2vec"))
