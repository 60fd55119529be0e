"""Semantic dedup of dialogs on a CPU (data/posttrain/semantic_dedup.py): quality against ground truth, speed
against the brute-force greedy, and the effect of the threshold.

    PYTHONPATH=. .venv/bin/python data/benchmarks/bench_semantic_dedup.py        # ~4,000 dialogs, ~1 minute
    PYTHONPATH=. .venv/bin/python data/benchmarks/bench_semantic_dedup.py base=1000 repeats=3

The dialogs are synthetic with known ground truth: base dialogs built from random sentences of the vendored
Paul Graham essays (third_party/data/niah), and planted copies of some of them: near-duplicates (a few words
replaced or dropped, case and punctuation changed) and rewordings (the response's sentences reordered, one
dropped, ~15% of the words replaced). All methods run on the same wordllama embeddings and the same ranking
(the rule scorers' quality x difficulty), so they do the same work:

- exact: `brute_force_keep`, each dialog against every dialog kept before it (all pairs, fp64), the reference;
- components (the default): thresholded pair graph from blocked matrix products, greedy keep over it;
- kmeans: the paper's recipe, greedy keep inside spherical k-means clusters only.

Printed: precision and recall of each method's removed set against the exact removed set and against the
planted copies (a removal is right when the dialog and the one that removed it come from the same base; recall
counts, per planted group, up to size - 1 removals), dialogs/s as the median of alternated repeats with the
min-max spread, whether the kept sets equal the exact one, and a table of thresholds.
"""

from __future__ import annotations

import os
import random
import re
import sys
from dataclasses import dataclass, field
from statistics import median
from time import perf_counter

# One BLAS thread for every method unless the caller sets OPENBLAS_NUM_THREADS: on a shared 2-core machine a
# multithreaded gemv inside the brute force's loop measures thread contention, not work (measured at load 5:
# 281 dialogs/s with the library's threads, 5,631 with one). Set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from data.dialogs import Dialog  # noqa: E402
from data.posttrain.scorers import rules_difficulty, rules_intents, rules_quality  # noqa: E402
from data.posttrain.semantic_dedup import (  # noqa: E402
    SemanticDedupConfig,
    brute_force_keep,
    dedup,
    embed_dialogs,
    wordllama_embedder,
)
from tools import assets  # noqa: E402
from tools.config import parse  # noqa: E402


@dataclass
class BenchConfig:
    base: int = 3000  # base dialogs
    near_dup_share: float = 0.2  # of bases, given 1-2 near-duplicate copies
    reword_share: float = 0.1  # of bases, given one reworded copy
    threshold: float = 0.85  # the default of SemanticDedupConfig
    thresholds: list[float] = field(default_factory=lambda: [0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98])  # the table
    gsm8k: int = 2000  # distinct GSM8K problems: how many a threshold merges
    cluster_size: int = 500  # kmeans
    repeats: int = 5
    seed: int = 0


def sentences() -> list[str]:
    folder = assets.path("niah/paul_graham_essays")
    text = " ".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt")))
    return [s for s in re.split(r"(?<=[.?!])\s+", " ".join(text.split())) if 8 <= len(s.split()) <= 40]


def near_duplicate(d: Dialog, rng: random.Random, vocab: list[str]) -> Dialog:
    def edit(text: str) -> str:
        words = text.split()
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(words))
            words[i] = rng.choice([rng.choice(vocab), words[i].upper(), words[i].rstrip(".,") + ","])
        if len(words) > 10:
            del words[rng.randrange(len(words))]
        return " ".join(words)

    return Dialog([{"role": m["role"], "content": edit(m["content"])} for m in d.messages])


def reword(d: Dialog, rng: random.Random, vocab: list[str]) -> Dialog:
    user, answer = d.messages[0]["content"], d.messages[1]["content"]
    parts = re.split(r"(?<=[.?!])\s+", answer)
    rng.shuffle(parts)
    if len(parts) >= 3:
        parts.pop()
    words = " ".join(parts).split()
    words = [rng.choice(vocab) if rng.random() < 0.15 else w for w in words]
    return Dialog([{"role": "user", "content": f"Question: {user}"}, {"role": "assistant", "content": " ".join(words)}])


def corpus(cfg: BenchConfig) -> tuple[list[Dialog], np.ndarray, np.ndarray]:
    """Dialogs (bases then copies, shuffled), each one's group (the base it comes from) and each group's kind
    (0: no copy, 1: near-duplicates, 2: a reworded copy)."""
    rng = random.Random(cfg.seed)
    sents = sentences()
    vocab = sorted({w.strip(".,;:!?\"'()").lower() for s in sents for w in s.split()} - {""})
    dialogs, group, kind = [], [], np.zeros(cfg.base, np.int64)
    for b in range(cfg.base):
        ask = rng.choice(sents)
        dialogs.append(
            Dialog([{"role": "user", "content": ask}, {"role": "assistant", "content": " ".join(rng.sample(sents, 4))}])
        )
        group.append(b)
    for b in range(cfg.base):
        r = rng.random()
        if r < cfg.near_dup_share:
            kind[b] = 1
            for _ in range(rng.randint(1, 2)):
                dialogs.append(near_duplicate(dialogs[b], rng, vocab))
                group.append(b)
        elif r < cfg.near_dup_share + cfg.reword_share:
            kind[b] = 2
            dialogs.append(reword(dialogs[b], rng, vocab))
            group.append(b)
    order = list(range(len(dialogs)))
    rng.shuffle(order)
    return [dialogs[i] for i in order], np.array(group)[order], kind


def pr(removed: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = int((removed & truth).sum())
    return tp / max(1, removed.sum()), tp / max(1, truth.sum())


def planted_pr(kept, removed_by, group, groups=None) -> tuple[float, float]:
    """Precision: removals whose remover comes from the same base. Recall: per group, removals up to size - 1
    (over `groups`, a boolean mask of groups, when given)."""
    removed = np.flatnonzero(~kept)
    sizes = np.bincount(group)
    if removed_by is None:  # the brute force does not name the remover: a removal is right in a planted group
        right = int((sizes[group[removed]] > 1).sum())
    else:
        right = int((group[removed] == group[removed_by[removed]]).sum())
    per_group = np.bincount(group[removed], minlength=len(sizes))
    expected = (sizes - 1).clip(0) * (True if groups is None else groups)
    found = int(np.minimum(per_group, expected).sum())
    return right / max(1, len(removed)), found / max(1, int(expected.sum()))


def gsm8k_dialogs(n: int) -> list[Dialog]:
    """Distinct real problems of one topic (GSM8K train): what a threshold should not merge."""
    rows = assets.jsonl("gsm8k/train.jsonl.gz")[:n]
    return [
        Dialog([{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}])
        for r in rows
    ]


def main(argv: list[str] | None = None) -> None:
    cfg = parse(BenchConfig, sys.argv[1:] if argv is None else argv)
    dialogs, group, kind = corpus(cfg)
    n = len(dialogs)
    print(f"{n:,} dialogs: {cfg.base:,} bases, {n - cfg.base:,} planted copies")
    print(f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, load average {os.getloadavg()}")

    t0 = perf_counter()
    embedder = wordllama_embedder()
    t1 = perf_counter()
    e = embed_dialogs(dialogs, embedder)
    t2 = perf_counter()
    print(f"wordllama: load {t1 - t0:.2f} s, embed {n / (t2 - t1):,.0f} dialogs/s (dim {e.shape[1]})")
    scores = np.array(rules_quality(dialogs)) * (np.array(rules_intents(dialogs)) + np.array(rules_difficulty(dialogs)))

    methods = {
        "exact (brute force)": lambda: (brute_force_keep(e, scores, cfg.threshold), None),
        "components": lambda: _ours(e, scores, SemanticDedupConfig(threshold=cfg.threshold)),
        "kmeans": lambda: _ours(
            e, scores, SemanticDedupConfig(threshold=cfg.threshold, cluster="kmeans", cluster_size=cfg.cluster_size)
        ),
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    results = {name: fn() for name, fn in methods.items()}  # warm-up (imports, allocator), not timed
    for _ in range(cfg.repeats):  # alternated, so that load changes hit every method alike
        for name, fn in methods.items():
            t = perf_counter()
            results[name] = fn()
            times[name].append(perf_counter() - t)
    exact_removed = ~results["exact (brute force)"][0]
    brute = median(times["exact (brute force)"])
    print(f"\nthreshold {cfg.threshold}, {cfg.repeats} alternated repeats, embeddings shared (not timed here)")
    print("| method | kept | P vs exact | R vs exact | P planted | R planted | dialogs/s (median, min-max) ", end="")
    print("| speedup | same kept set |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (kept, removed_by) in results.items():
        p, r = pr(~kept, exact_removed)
        pp, rp = planted_pr(kept, removed_by, group)
        ts = times[name]
        same = "yes" if np.array_equal(kept, ~exact_removed) else f"no ({int((kept != ~exact_removed).sum())} differ)"
        print(
            f"| {name} | {int(kept.sum()):,} | {p:.4f} | {r:.4f} | {pp:.4f} | {rp:.4f} | "
            f"{n / median(ts):,.0f} ({n / max(ts):,.0f}-{n / min(ts):,.0f}) | {brute / median(ts):.1f}x | {same} |"
        )

    g = gsm8k_dialogs(cfg.gsm8k)
    eg = embed_dialogs(g, embedder)
    print("\n| threshold | kept | removed | P planted | R planted | R near-dup | R reworded | = exact ", end="")
    print(f"| GSM8K removed of {len(g):,} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for th in cfg.thresholds:
        kept, removed_by = _ours(e, scores, SemanticDedupConfig(threshold=th))
        pp, rp = planted_pr(kept, removed_by, group)
        r_near, r_reword = (planted_pr(kept, removed_by, group, kind == k)[1] for k in (1, 2))
        same = np.array_equal(kept, brute_force_keep(e, scores, th))
        g_removed = int((~_ours(eg, np.ones(len(g)), SemanticDedupConfig(threshold=th))[0]).sum())
        print(
            f"| {th} | {int(kept.sum()):,} | {int((~kept).sum()):,} | {pp:.4f} | {rp:.4f} | {r_near:.4f} | "
            f"{r_reword:.4f} | {same} | {g_removed:,} |"
        )

    # Cosines of the planted pairs (all) and of unrelated pairs (the largest one per dialog, in blocks).
    by = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, group[by][1:] != group[by][:-1]])
    planted = [e[by[a:b]] @ e[by[a:b]].T for a, b in zip(starts, np.r_[starts[1:], n], strict=True) if b - a > 1]
    planted = np.concatenate([p[np.triu_indices(len(p), 1)] for p in planted])
    nearest = np.concatenate(
        [
            np.where(group[i : i + 1024, None] == group[None, :], -1, e[i : i + 1024] @ e.T).max(1)
            for i in range(0, n, 1024)
        ]
    )
    print(
        f"\ncosine of planted pairs: min {planted.min():.3f}, median {np.median(planted):.3f}; most similar "
        f"unrelated dialog: median {np.median(nearest):.3f}, 99th percentile {np.quantile(nearest, 0.99):.3f}, "
        f"max {nearest.max():.3f}"
    )
    print(f"load average {os.getloadavg()}")


def _ours(e, scores, cfg):
    result = dedup(e, scores, cfg)
    return result.kept, result.removed_by


if __name__ == "__main__":
    main()
