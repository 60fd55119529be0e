"""ccNet-style line dedup: lines seen in more than `max_count` documents of a bucket of `bucket_docs`
documents are removed (Llama 3: more than 6 times per bucket of 30M documents); boilerplate such as
navigation, cookie notices and footers goes, the rest of each document stays.

A line is normalised (lowercase, digits -> 0, punctuation removed; data/textnorm.py) and hashed to 64 bits
(xxh3; ccNet takes the first 8 bytes of SHA-1, any good 64-bit hash does). A document counts each distinct
line once, and belongs to bucket hash(id) mod n_buckets, so buckets do not depend on the sharding. On disk:
16 bytes per (document, distinct line), split into `partitions` by line hash for the counting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from data.base import Collector, GlobalStep, Task, load_arrays, save_arrays, shard_name
from data.document import Document
from data.textnorm import combine, hash_str, normalize


@dataclass
class LineDedupConfig:
    bucket_docs: int = 30_000_000
    max_count: int = 6  # a line in more than this many documents of a bucket is removed
    partitions: int = 16
    per_language: bool = True  # lines only count against documents of the same language


def line_hashes(doc: Document, per_language: bool) -> list[int | None]:
    """One 64-bit hash per line of doc.text (None for lines that are empty once normalised)."""
    seed = hash_str(doc.lang) & 0xFFFFFFFF if per_language else 0
    out = []
    for line in normalize(doc.text).split("\n"):
        key = " ".join(line.split())
        out.append(xxhash.xxh3_64_intdigest(key.encode("utf-8", "surrogatepass"), seed) if key else None)
    return out


def bucketed(lines: np.ndarray, keys: np.ndarray, n_buckets: int) -> np.ndarray:
    return combine(lines, keys % np.uint64(n_buckets))


class _LineCollector(Collector):
    def __init__(self, cfg: LineDedupConfig):
        self.cfg = cfg
        self.lines: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []
        self.docs = 0

    def add(self, doc: Document) -> None:
        hs = np.unique(np.array([h for h in line_hashes(doc, self.cfg.per_language) if h is not None], np.uint64))
        self.lines.append(hs)
        self.keys.append(np.full(len(hs), hash_str(doc.id), np.uint64))
        self.docs += 1

    def save(self, path: Path) -> None:
        lines = np.concatenate(self.lines) if self.lines else np.zeros(0, np.uint64)
        keys = np.concatenate(self.keys) if self.keys else np.zeros(0, np.uint64)
        part = (lines >> np.uint64(40)) % np.uint64(self.cfg.partitions)
        arrays = {"docs": np.array([self.docs])}
        for j in range(self.cfg.partitions):
            m = part == j
            arrays[f"l{j}"], arrays[f"k{j}"] = lines[m], keys[m]
        save_arrays(path.with_suffix(".npz"), **arrays)


class LineDedup(GlobalStep):
    name = "line_dedup"

    def collector(self, rnd: int, gdir: Path, shard: int) -> Collector:
        return _LineCollector(self.cfg)

    def resolve(self, rnd: int, gdir: Path, shards: list[int]) -> dict:
        files = [gdir / "round-0" / f"{shard_name(s)}.npz" for s in shards]
        total = sum(int(load_arrays(f, ["docs"])["docs"][0]) for f in files)
        n_buckets = max(1, -(-total // self.cfg.bucket_docs))
        frequent, distinct = [], 0
        for j in range(self.cfg.partitions):
            parts = [load_arrays(f, [f"l{j}", f"k{j}"]) for f in files]
            lines = np.concatenate([p[f"l{j}"] for p in parts])
            keys = np.concatenate([p[f"k{j}"] for p in parts])
            uniq, counts = np.unique(bucketed(lines, keys, n_buckets), return_counts=True)
            distinct += len(uniq)
            frequent.append(uniq[counts > self.cfg.max_count])
        frequent_all = np.sort(np.concatenate(frequent)) if frequent else np.zeros(0, np.uint64)
        save_arrays(gdir / "resolved-0" / "frequent.npz", frequent=frequent_all, n_buckets=np.array([n_buckets]))
        return {
            "documents": total,
            "buckets": n_buckets,
            "distinct (bucket, line) pairs": distinct,
            "lines over max_count": int(len(frequent_all)),
        }

    def setup(self) -> None:
        d = load_arrays(self.env.global_dir(self.name) / "resolved-0" / "frequent.npz")
        self.frequent = set(d["frequent"].tolist())
        self.n_buckets = int(d["n_buckets"][0])

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        st = task.step_stats(self.name)
        for doc in docs:
            hashes = line_hashes(doc, self.cfg.per_language)
            present = [h for h in hashes if h is not None]
            if not present or not self.frequent:
                yield doc
                continue
            bucket_keys = bucketed(np.array(present, np.uint64), np.uint64(hash_str(doc.id)), self.n_buckets).tolist()
            drop = {h for h, b in zip(present, bucket_keys) if b in self.frequent}
            if not drop:
                yield doc
                continue
            kept = [line for line, h in zip(doc.text.split("\n"), hashes) if h is None or h not in drop]
            removed = len(hashes) - len(kept)
            st.counters["lines removed"] += removed
            text = "\n".join(kept).strip()
            if not text:
                task.drop(doc, self.name, "every line is a frequent duplicate", f"{removed} lines")
                continue
            doc.text = text
            yield doc
