"""Semantic deduplication of dialogs (paper section 4.2.3), exact and deterministic on a CPU.

The paper embeds whole dialogs, clusters them, sorts each cluster by quality x difficulty and keeps a dialog only
if its maximum cosine similarity to the dialogs already kept in its cluster is below a threshold. Here:

1. embed: `wordllama` (default: a static-embedding sentence encoder whose weights ship inside its wheel, so it
   works offline; ~1,400 dialogs/s of ~150 words on a loaded 2-core machine), `model` (the project's own model,
   final hidden states of a model.checkpoint directory, mean-pooled), or `hf` (a local Hugging Face encoder
   directory, mean-pooled).
2. cluster: `components` (default, exact): every pair at cosine >= threshold is found with blocked matrix
   products, and the clusters are the connected components of that graph. No pair across components can ever
   block a keep, so the result equals the greedy keep over all pairs (`brute_force_keep`), only faster.
   `kmeans`: spherical k-means with a fixed seed, pairs compared only inside a cluster (the paper's recipe;
   cheaper at millions of dialogs, but a duplicate pair split across clusters survives: the benchmark
   measures how often).
3. keep: dialogs in order of score (quality x difficulty) descending, ties by input order; a dialog is removed
   when a kept one in its cluster has cosine >= threshold with it (removed_by names the most similar).

The paper gives no threshold; 0.85 is the default here. data/benchmarks/bench_semantic_dedup.py measures its
effect with wordllama: planted near-duplicates (a few words edited) are removed at 0.85 with recall 0.99 and
precision 1.0, heavier rewordings (sentences reordered and dropped, 15% of the words replaced) only at 0.7-0.8;
of 2,000 distinct GSM8K problems (one topic, one style) 17 are merged at 0.85, 72 at 0.8 and 406 at 0.7.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from data.dialogs import Dialog

Embedder = Callable[[list[str]], np.ndarray]  # texts -> [n, dim] float32, rows of unit length
MARGIN = 1e-4  # candidate pairs from float32 products are taken this far below the threshold, then checked in fp64


@dataclass
class SemanticDedupConfig:
    embedder: str = "wordllama"  # wordllama | model | hf
    path: str = ""  # model: a model.checkpoint directory; hf: a local Hugging Face encoder directory
    threshold: float = 0.85  # keep a dialog only if its max cosine to kept dialogs of its cluster is below this
    cluster: str = "components"  # components (exact, see above) | kmeans (the paper's approximation)
    cluster_size: int = 2000  # kmeans: average dialogs per cluster (k = ceil(n / cluster_size))
    kmeans_iters: int = 20
    seed: int = 0  # kmeans initial centroids
    batch_size: int = 64  # dialogs per embedding call
    max_tokens: int = 512  # model, hf: tokens embedded per dialog (the start is kept)


def dialog_text(d: Dialog) -> str:
    """The whole dialog as one text to embed."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in d.messages)


def _normalise(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, dtype=np.float32)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def wordllama_embedder() -> Embedder:
    import wordllama

    # wordllama 0.4 looks for its tokenizer under <package>/tokenizer/ but ships it in <package>/tokenizers/,
    # which is where it looks when the package folder is given as cache_dir: no download is ever tried.
    wl = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent)
    return lambda texts: _normalise(wl.embed(texts, norm=True))


def model_embedder(model, tok, max_tokens: int = 512) -> Embedder:
    """The project's model: final-norm hidden states (Transformer.hidden) averaged over the dialog's tokens."""
    import torch

    @torch.no_grad()
    def embed(texts: list[str]) -> np.ndarray:
        rows = [model.hidden(torch.tensor([tok.encode(t)[:max_tokens] or [tok.bos_id]]))[0].mean(0) for t in texts]
        return _normalise(torch.stack(rows).float().numpy())

    return embed


def hf_embedder(path: str, max_tokens: int = 512) -> Embedder:
    """A local Hugging Face encoder directory (AutoModel + AutoTokenizer, never downloaded), mean-pooled."""
    if not path or not Path(path).is_dir():
        raise FileNotFoundError(
            f"semantic_dedup.path={path!r}: the hf embedder needs a local Hugging Face model directory "
            "(config.json, weights, tokenizer files); nothing is downloaded"
        )
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    @torch.no_grad()
    def embed(texts: list[str]) -> np.ndarray:
        batch = tok(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        h = model(**batch).last_hidden_state
        m = batch["attention_mask"][..., None].to(h.dtype)
        return _normalise(((h * m).sum(1) / m.sum(1).clamp(min=1)).float().numpy())

    return embed


def make_embedder(cfg: SemanticDedupConfig) -> Embedder:
    from tools.paths import user_path

    if cfg.embedder == "wordllama":
        return wordllama_embedder()
    if cfg.embedder == "hf":
        return hf_embedder(str(user_path(cfg.path)) if cfg.path else "", cfg.max_tokens)
    if cfg.embedder == "model":
        from model.checkpoint import load_model

        if not cfg.path:
            raise ValueError("semantic_dedup.embedder=model needs semantic_dedup.path (a model directory)")
        model, tok = load_model(user_path(cfg.path))
        return model_embedder(model.eval(), tok, cfg.max_tokens)
    raise ValueError(f"semantic_dedup.embedder must be wordllama, model or hf, got {cfg.embedder!r}")


def embed_dialogs(dialogs: list[Dialog], embedder: Embedder, batch_size: int = 64) -> np.ndarray:
    texts = [dialog_text(d) for d in dialogs]
    parts = [embedder(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def kmeans(e: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """Spherical k-means (cosine), deterministic for a seed: initial centroids are k distinct rows."""
    n = len(e)
    k = max(1, min(k, n))
    centroids = e[np.sort(np.random.default_rng(seed).choice(n, k, replace=False))]
    labels = np.zeros(n, np.int64)
    for _ in range(iters):
        labels = np.argmax(e @ centroids.T, axis=1)
        sums = csr_matrix((np.ones(n, e.dtype), (labels, np.arange(n))), shape=(k, n)) @ e  # per-cluster sums
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centroids)  # an empty cluster stays put
    return labels


def candidate_pairs(e: np.ndarray, groups: list[np.ndarray], threshold: float, block: int = 1024):
    """Pairs (i < j, same group) with cosine >= threshold, cosines recomputed in float64 (blocked fp32 products
    find the candidates, MARGIN below the threshold so that rounding cannot lose one)."""
    a, b = [], []
    for g in groups:
        for s in range(0, len(g), block):
            sims = e[g[s : s + block]] @ e[g[s:]].T  # this block against itself and what follows: j >= i
            r, c = np.nonzero(sims >= threshold - MARGIN)
            upper = c > r
            a.append(g[s + r[upper]])
            b.append(g[s + c[upper]])
    a = np.concatenate(a) if a else np.zeros(0, np.int64)
    b = np.concatenate(b) if b else np.zeros(0, np.int64)
    e64 = e.astype(np.float64)
    sims = (e64[a] * e64[b]).sum(axis=1)
    hit = sims >= threshold
    return a[hit], b[hit], sims[hit]


def keep_order(scores: np.ndarray) -> np.ndarray:
    """Score descending, ties in input order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


@dataclass
class DedupResult:
    kept: np.ndarray  # bool per dialog
    removed_by: np.ndarray  # the kept dialog that removed it (-1: kept)
    similarity: np.ndarray  # the cosine to removed_by (0: kept)
    clusters: int  # clusters with 2 or more dialogs (components) or k (kmeans)
    pairs: int  # pairs at cosine >= threshold that were compared


def greedy_keep(n: int, order: np.ndarray, a: np.ndarray, b: np.ndarray, sims: np.ndarray, clusters: int):
    """Walk `order`; keep a dialog unless one of its above-threshold neighbours is already kept."""
    src, dst, w = np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([sims, sims])
    by = np.argsort(src, kind="stable")
    src, dst, w = src[by], dst[by], w[by]
    start = np.searchsorted(src, np.arange(n + 1))
    kept = np.ones(n, bool)
    removed_by, similarity = np.full(n, -1, np.int64), np.zeros(n)
    seen = np.zeros(n, bool)  # decided already (kept[i] is only final once seen)
    for i in order[start[order + 1] > start[order]]:  # dialogs without neighbours are kept as they are
        nb, ws = dst[start[i] : start[i + 1]], w[start[i] : start[i + 1]]
        blocking = seen[nb] & kept[nb]
        if blocking.any():
            j = int(np.argmax(np.where(blocking, ws, -np.inf)))
            kept[i], removed_by[i], similarity[i] = False, nb[j], ws[j]
        seen[i] = True
    return DedupResult(kept, removed_by, similarity, clusters, len(a))


def components(n: int, a: np.ndarray, b: np.ndarray) -> int:
    """Connected components of 2+ dialogs in the pair graph."""
    _, labels = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    return int((np.bincount(labels) > 1).sum())


def dedup(e: np.ndarray, scores: np.ndarray, cfg: SemanticDedupConfig) -> DedupResult:
    """Semantic dedup of embedded dialogs `e` (unit rows) ranked by `scores` (quality x difficulty)."""
    n = len(e)
    if cfg.cluster == "components":
        a, b, sims = candidate_pairs(e, [np.arange(n)], cfg.threshold)
        clusters = components(n, a, b) if n else 0
    elif cfg.cluster == "kmeans":
        k = -(-n // max(1, cfg.cluster_size))
        labels = kmeans(e, k, cfg.kmeans_iters, cfg.seed) if n else np.zeros(0, np.int64)
        groups = [np.flatnonzero(labels == c) for c in range(k)]
        a, b, sims = candidate_pairs(e, [g for g in groups if len(g) > 1], cfg.threshold)
        clusters = k
    else:
        raise ValueError(f"semantic_dedup.cluster must be components or kmeans, got {cfg.cluster!r}")
    return greedy_keep(n, keep_order(scores), a, b, sims, clusters)


def brute_force_keep(e: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """The reference: the greedy keep over all pairs, each dialog against every dialog kept before it (fp64)."""
    e64 = e.astype(np.float64)
    kept_rows = np.zeros_like(e64)
    kept = np.zeros(len(e), bool)
    m = 0
    for i in keep_order(scores):
        if m == 0 or (kept_rows[:m] @ e64[i]).max() < threshold:
            kept_rows[m], kept[i] = e64[i], True
            m += 1
    return kept
