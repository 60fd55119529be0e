"""The data mix and the tokenized shards.

`mix` (a global step, after `tokenize`) holds out a validation split per category (whole documents, in
id-hash order, until `valid_fraction` of the category's tokens), then draws the training documents of every
category to target token proportions (Llama 3: 50% general, 25% math and reasoning, 17% code, 8%
multilingual): each document gets floor(rate) copies plus one more for documents taken in id-hash order
until the category's target is met, so each category lands within one document of its target (capped at
`max_repeats` copies). A separate annealing mix draws from documents whose quality score is at least
`anneal.min_quality`, with its own targets (code and math up-weighted).

`shards` writes the documents as data.shards sets: output/shards (the main mix, train and valid) and
output/anneal (train), copies of a document spread epoch by epoch; the manifests carry exact token counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.base import Collector, GlobalStep, Step, Task, load_arrays, save_arrays, shard_name
from data.document import Document
from data.shards import PAPER_MIX, ShardEntry, ShardWriter, write_manifest
from data.textnorm import hash_str


@dataclass
class AnnealConfig:
    enabled: bool = True
    targets: dict[str, float] = field(
        default_factory=lambda: {"general": 0.30, "math": 0.35, "code": 0.30, "multilingual": 0.05}
    )
    total_tokens: int = 0  # 0: the tokens of the selected documents
    min_quality: float = 0.5  # documents whose meta[quality_key] is under this are not used
    quality_key: str = "quality"
    max_repeats: float = 4.0


@dataclass
class MixConfig:
    targets: dict[str, float] = field(default_factory=lambda: dict(PAPER_MIX))
    total_tokens: int = 0  # training tokens of the mix; 0: the available training tokens
    max_repeats: float = 4.0  # no document is used more often than this
    valid_fraction: float = 0.01  # of each category's tokens, held out as whole documents
    min_valid_docs: int = 1
    seed: int = 0
    # Training documents of at least this many tokens also go, once each and whatever the mix draws, to a
    # long-context set (output/long_context) for the long-context stages (0: no such set).
    long_context_min_tokens: int = 0
    anneal: AnnealConfig = field(default_factory=AnnealConfig)


def category_of(doc: Document) -> str:
    return doc.category or "general"


class _MixCollector(Collector):
    def __init__(self, cfg: MixConfig):
        self.cfg, self.rows = cfg, []

    def add(self, doc: Document) -> None:
        cats = list(self.cfg.targets)
        cat = category_of(doc)
        q = doc.meta.get(self.cfg.anneal.quality_key, 1.0)
        self.rows.append(
            (
                hash_str(doc.id, self.cfg.seed),
                cats.index(cat) if cat in cats else -1,
                0 if doc.tokens is None else len(doc.tokens),
                float(q),
            )
        )

    def save(self, path: Path) -> None:
        cols = list(zip(*self.rows)) if self.rows else [(), (), (), ()]
        save_arrays(
            path.with_suffix(".npz"),
            key=np.array(cols[0], np.uint64),
            cat=np.array(cols[1], np.int64),
            tokens=np.array(cols[2], np.int64),
            quality=np.array(cols[3], np.float64),
        )


def draw(tokens: np.ndarray, order: np.ndarray, target: float, max_repeats: float) -> np.ndarray:
    """Copies per document so the total is within one document of `target` tokens: floor(rate) copies for
    all, one more for documents taken in `order` while the remainder lasts; rate capped at max_repeats."""
    avail = int(tokens.sum())
    copies = np.zeros(len(tokens), np.int64)
    if avail == 0 or target <= 0:
        return copies
    rate = min(target / avail, max_repeats)
    base = int(np.floor(rate))
    copies[:] = base
    remainder = rate * avail - base * avail
    cum = np.cumsum(tokens[order])
    take = int(np.searchsorted(cum, remainder, side="left"))  # documents whose cumulative sum reaches it
    if take < len(order) and cum[take] - remainder < remainder - (cum[take - 1] if take else 0):
        take += 1  # one more document lands closer to the target than one fewer
    copies[order[:take]] += 1
    return copies


def present_shares(targets: dict[str, float], available: dict[str, int]) -> dict[str, float]:
    """The target shares renormalised over the categories that have training tokens at all (a category the
    data lacks cannot be drawn, so the others share its part in their own proportions)."""
    present = {k: v for k, v in targets.items() if available.get(k, 0) > 0}
    total = sum(present.values())
    return {k: (present[k] / total if k in present else 0.0) for k in targets}


class Mix(GlobalStep):
    name = "mix"

    def collector(self, rnd: int, gdir: Path, shard: int) -> Collector:
        return _MixCollector(self.cfg)

    def resolve(self, rnd: int, gdir: Path, shards: list[int]) -> dict:
        c = self.cfg
        cats = list(c.targets)
        if abs(sum(c.targets.values()) - 1.0) > 1e-6:
            raise ValueError(f"mix.targets must sum to 1, got {sum(c.targets.values())}")
        parts = [load_arrays(gdir / "round-0" / f"{shard_name(s)}.npz") for s in shards]
        key, cat, tokens, quality = (np.concatenate([p[k] for p in parts]) for k in ("key", "cat", "tokens", "quality"))
        n = len(key)
        split = np.zeros(n, np.int64)  # 0 train, 1 valid
        copies = np.zeros(n, np.int64)
        anneal = np.zeros(n, np.int64)
        summary: dict = {"categories": {}, "anneal": {}}
        avail = {}
        for ci, name in enumerate(cats):
            idx = np.flatnonzero(cat == ci)
            idx = idx[np.argsort(key[idx], kind="stable")]
            total = int(tokens[idx].sum())
            cum = np.cumsum(tokens[idx])
            n_valid = int(np.searchsorted(cum, c.valid_fraction * total, side="left")) + 1 if len(idx) else 0
            n_valid = min(max(n_valid, c.min_valid_docs), max(len(idx) - 1, 0)) if c.valid_fraction > 0 else 0
            split[idx[:n_valid]] = 1
            avail[name] = idx[n_valid:]
            summary["categories"][name] = {
                "documents": int(len(idx)),
                "tokens": total,
                "valid_documents": n_valid,
                "valid_tokens": int(tokens[idx[:n_valid]].sum()),
                "train_available_tokens": int(tokens[idx[n_valid:]].sum()),
            }
        total_train = c.total_tokens or sum(int(tokens[v].sum()) for v in avail.values())
        shares = present_shares(c.targets, {k: int(tokens[v].sum()) for k, v in avail.items()})
        for name, idx in avail.items():
            got = draw(tokens[idx], np.arange(len(idx)), shares[name] * total_train, c.max_repeats)
            copies[idx] = got
            s = summary["categories"][name]
            s.update(
                target_share=shares[name],
                target_tokens=round(shares[name] * total_train),
                train_tokens=int((got * tokens[idx]).sum()),
                max_copies=int(got.max()) if len(got) else 0,
            )
        mixed = sum(s["train_tokens"] for s in summary["categories"].values())
        for s in summary["categories"].values():
            s["actual_share"] = s["train_tokens"] / mixed if mixed else 0.0
        summary["train_tokens"] = mixed
        a = c.anneal
        if a.enabled:
            chosen = {name: idx[quality[idx] >= a.min_quality] for name, idx in avail.items() if name in a.targets}
            a_total = a.total_tokens or sum(int(tokens[v].sum()) for v in chosen.values())
            a_shares = present_shares(a.targets, {k: int(tokens[v].sum()) for k, v in chosen.items()})
            for name, idx in chosen.items():
                got = draw(tokens[idx], np.arange(len(idx)), a_shares[name] * a_total, a.max_repeats)
                anneal[idx] = got
                summary["anneal"][name] = {
                    "documents": int(len(idx)),
                    "target_share": a_shares[name],
                    "tokens": int((got * tokens[idx]).sum()),
                }
        offsets = np.concatenate(([0], np.cumsum([len(p["key"]) for p in parts])))
        for k, s in enumerate(shards):
            lo, hi = offsets[k], offsets[k + 1]
            save_arrays(
                gdir / "resolved-0" / f"{shard_name(s)}.npz",
                split=split[lo:hi],
                copies=copies[lo:hi],
                anneal=anneal[lo:hi],
            )
        return summary

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        st = task.step_stats(self.name)
        d = load_arrays(self.env.global_dir(self.name) / "resolved-0" / f"{shard_name(task.shard)}.npz")
        long_min = self.cfg.long_context_min_tokens
        for i, doc in enumerate(docs):
            split, copies, anneal = int(d["split"][i]), int(d["copies"][i]), int(d["anneal"][i])
            if category_of(doc) not in self.cfg.targets:
                task.drop(doc, self.name, "category not in the mix", category_of(doc))
                continue
            long = bool(long_min) and split == 0 and doc.tokens is not None and len(doc.tokens) >= long_min
            if split == 0 and copies == 0 and anneal == 0 and not long:
                task.drop(doc, self.name, "down-sampled by the mix")
                continue
            doc.meta["split"] = "valid" if split else "train"
            doc.meta["copies"] = 1 if split else copies
            doc.meta["anneal_copies"] = anneal
            if long:
                doc.meta["long_context"] = True
                st.counters["long-context documents"] += 1
            st.counters["repeated copies added"] += max(doc.meta["copies"] - 1, 0)
            yield doc


@dataclass
class ShardsConfig:
    anneal: bool = True  # also write output/anneal (the annealing mix)


class WriteShards(Step):
    """Writes token shards (last step). Copies of a document are written epoch by epoch: every document's
    first copy, then second copies, and so on, so repeats are spread through the shard."""

    name = "shards"

    def setup(self) -> None:
        self.writers: dict[tuple[str, str, str], ShardWriter] = {}

    def _writer(self, task: Task, root: str, cat: str, split: str) -> ShardWriter:
        key = (root, cat, split)
        if key not in self.writers:
            self.writers[key] = ShardWriter(self.env.output / root, cat, split, task.shard)
        return self.writers[key]

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        later: list[tuple[str, str, str, np.ndarray, int]] = []  # (root, cat, split, tokens, copies)
        for doc in docs:
            if doc.tokens is None:
                raise ValueError(f"{doc.id}: no tokens; the shards step needs tokenize and mix before it")
            cat, split = category_of(doc), doc.meta.get("split", "train")
            for root, n in (
                ("shards", int(doc.meta.get("copies", 1))),
                ("anneal", int(doc.meta.get("anneal_copies", 0))),
                ("long_context", int(bool(doc.meta.get("long_context")))),
            ):
                if root == "anneal" and (not self.cfg.anneal or split != "train"):
                    continue
                if n >= 1:
                    self._writer(task, root, cat, split).add(doc.tokens)
                if n >= 2:
                    later.append((root, cat, split, doc.tokens, n))
            yield doc
        for epoch in range(1, max((n for *_, n in later), default=1)):
            for root, cat, split, toks, n in later:
                if n > epoch:
                    self._writer(task, root, cat, split).add(toks)
        entries = {"shards": [], "anneal": [], "long_context": []}
        for (root, _, _), w in sorted(self.writers.items()):
            entries[root].append(dataclasses.asdict(w.close()))
        task.results["shards"] = entries

    def finish_run(self, result: dict, tokenizer_info: dict, mix_summary: dict | None) -> dict:
        """In the driver, after every task: write the manifests (last, so a set with a manifest is complete)."""
        out = {}
        parts = result["results"].get("shards", [])
        for root in ("shards", "anneal", "long_context"):
            entries = [ShardEntry(**e) for part in parts for e in part[root]]
            if root != "shards" and not entries:
                continue
            extra = {"mix": mix_summary} if mix_summary else None
            write_manifest(self.env.output / root, entries, tokenizer_info, extra)
            out[root] = {"tokens": sum(e.tokens for e in entries), "documents": sum(e.documents for e in entries)}
        return out
