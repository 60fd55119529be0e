"""Token-distribution KL outliers (Llama 3): documents whose word unigram distribution diverges most from the
corpus distribution of their language are dropped.

Two global rounds: (0) every shard adds its word counts, hashed into `bins`, per language: the corpus
distribution q (add-`alpha` smoothed); (1) every document's KL(p_doc || q) is written as one float; the
threshold per language is the `percentile` of those values, and documents above it are dropped. Languages
with fewer than `min_docs` documents, and documents with fewer than `min_words` words, are not judged.

A short document's raw unigram distribution is far from any corpus distribution just because it is short,
so p_doc is the posterior mean under a Dirichlet prior centred on q worth `prior_tokens` tokens:
p = (counts + prior_tokens * q) / (n + prior_tokens). Outliers are then documents whose words really are
unusual, not merely few.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.base import Collector, GlobalStep, Task, load_arrays, save_arrays, shard_name
from data.document import Document
from data.textnorm import normalize, word_hashes


@dataclass
class KLConfig:
    bins: int = 1 << 16
    percentile: float = 99.0  # drop documents above this percentile of KL, per language
    min_words: int = 20
    min_docs: int = 100  # languages with fewer documents are not filtered
    alpha: float = 0.5  # additive smoothing of the corpus distribution
    prior_tokens: float = 50.0  # weight of the corpus distribution in each document's distribution


def bins_of(text: str, bins: int) -> np.ndarray:
    return (word_hashes(normalize(text).split()) % np.uint64(bins)).astype(np.int64)


def divergence(bins: np.ndarray, logq: np.ndarray, prior: float) -> float:
    """KL(p || q) with p = (counts + prior * q) / (n + prior): the document's bins in closed form, plus the
    bins it does not use, where p = prior * q / (n + prior) contributes (prior / (n + prior)) log(...) * q."""
    idx, counts = np.unique(bins, return_counts=True)
    n = counts.sum()
    q = np.exp(logq[idx])
    p = (counts + prior * q) / (n + prior)
    rest = prior / (n + prior)
    return float(np.sum(p * (np.log(p) - logq[idx])) + (rest * np.log(rest) * (1.0 - q.sum()) if prior > 0 else 0.0))


def _lang_key(lang: str) -> str:
    return "lang_" + "".join(ch if ch.isalnum() else "_" for ch in (lang or "none"))


class _CountCollector(Collector):
    def __init__(self, cfg: KLConfig):
        self.cfg, self.counts = cfg, {}

    def add(self, doc: Document) -> None:
        key = _lang_key(doc.lang)
        if key not in self.counts:
            self.counts[key] = np.zeros(self.cfg.bins, np.int64)
        np.add.at(self.counts[key], bins_of(doc.text, self.cfg.bins), 1)

    def save(self, path: Path) -> None:
        save_arrays(path.with_suffix(".npz"), **self.counts)


class _DivergenceCollector(Collector):
    def __init__(self, cfg: KLConfig, logq: dict[str, np.ndarray]):
        self.cfg, self.logq = cfg, logq
        self.kl: list[float] = []
        self.lang: list[str] = []

    def add(self, doc: Document) -> None:
        b = bins_of(doc.text, self.cfg.bins)
        key = _lang_key(doc.lang)
        self.lang.append(key)
        if len(b) < self.cfg.min_words:
            self.kl.append(np.nan)
            return
        self.kl.append(divergence(b, self.logq[key], self.cfg.prior_tokens))

    def save(self, path: Path) -> None:
        save_arrays(path.with_suffix(".npz"), kl=np.array(self.kl, np.float64), lang=np.array(self.lang, dtype=str))


class KLOutliers(GlobalStep):
    name = "kl"
    rounds = 2

    def _logq(self, gdir: Path) -> dict[str, np.ndarray]:
        return load_arrays(gdir / "resolved-0" / "logq.npz")

    def collector(self, rnd: int, gdir: Path, shard: int) -> Collector:
        if rnd == 0:
            return _CountCollector(self.cfg)
        return _DivergenceCollector(self.cfg, self._logq(gdir))

    def resolve(self, rnd: int, gdir: Path, shards: list[int]) -> dict:
        if rnd == 0:
            total: dict[str, np.ndarray] = {}
            for s in shards:
                for key, c in load_arrays(gdir / "round-0" / f"{shard_name(s)}.npz").items():
                    total[key] = total.get(key, 0) + c
            logq = {k: np.log((c + self.cfg.alpha) / (c.sum() + self.cfg.alpha * len(c))) for k, c in total.items()}
            save_arrays(gdir / "resolved-0" / "logq.npz", **logq)
            return {"languages": len(total), "words": int(sum(int(c.sum()) for c in total.values()))}
        parts = [load_arrays(gdir / "round-1" / f"{shard_name(s)}.npz") for s in shards]
        kl = np.concatenate([p["kl"] for p in parts]) if parts else np.zeros(0)
        lang = np.concatenate([p["lang"] for p in parts]) if parts else np.zeros(0, str)
        thresholds = {}
        for key in np.unique(lang):
            vals = kl[(lang == key) & ~np.isnan(kl)]
            if len(vals) >= self.cfg.min_docs:
                thresholds[str(key)] = float(np.percentile(vals, self.cfg.percentile))
        dropped = 0
        for s, p in zip(shards, parts):
            limit = np.array([thresholds.get(str(k), np.inf) for k in p["lang"]], np.float64)
            drop = np.flatnonzero(np.nan_to_num(p["kl"], nan=-np.inf) > limit).astype(np.uint32)
            dropped += len(drop)
            save_arrays(gdir / "resolved-1" / f"{shard_name(s)}.npz", pos=drop, kl=p["kl"][drop], limit=limit[drop])
        return {"thresholds": thresholds, "dropped": dropped}

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        d = load_arrays(self.env.global_dir(self.name) / "resolved-1" / f"{shard_name(task.shard)}.npz")
        drop = {int(p): (k, lim) for p, k, lim in zip(d["pos"], d["kl"], d["limit"])}
        for i, doc in enumerate(docs):
            if i in drop:
                k, lim = drop[i]
                task.drop(doc, self.name, "token distribution outlier (KL)", f"KL {k:.3f} > {lim:.3f}")
            else:
                yield doc
