"""URL dedup across the whole dataset: normalise each URL and keep only the most recent crawl of it.

Per shard, documents become 32 bytes on disk (URL hash, crawl time, two tie-break hashes), split into
`partitions` by URL hash; the resolve step sorts one partition at a time, so memory is bounded by the
largest partition rather than the dataset. Ties in crawl time go to the smaller content hash, then id hash,
so the survivor does not depend on how the input was sharded. Documents without a URL pass untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np

from data.base import Collector, GlobalStep, Task, load_arrays, save_arrays, shard_name
from data.document import Document
from data.textnorm import hash_str

TRACKING = re.compile(r"^(utm_[a-z]+|fbclid|gclid|mc_[a-z]+|ref|sessionid|sid|phpsessid)$", re.I)


@dataclass
class UrlDedupConfig:
    partitions: int = 16


def normalize_url(url: str) -> str:
    """Scheme-less, lower-case host without www. or default port, no fragment, tracking parameters
    removed, remaining query parameters sorted, no trailing slash."""
    url = url.strip().strip("<>").strip()
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port
    except ValueError:
        return url.lower()
    host = host.removeprefix("www.")
    if port and not (parts.scheme == "http" and port == 80) and not (parts.scheme == "https" and port == 443):
        host = f"{host}:{port}"
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not TRACKING.match(k))
    path = parts.path or "/"
    if len(path) > 1:
        path = path.rstrip("/")
    return host + path + ("?" + urlencode(query) if query else "")


def crawl_time(date: str) -> int:
    """Seconds since 1970 from an ISO 8601 date ("" or unparseable: 0, the oldest)."""
    if not date:
        return 0
    try:
        dt = datetime.fromisoformat(date.strip().replace("Z", "+00:00"))
    except ValueError:
        return 0
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def priority(doc: Document) -> tuple[int, int]:
    """Deterministic, shard-independent tie-break keys: content hash, then id hash."""
    return hash_str(doc.text), hash_str(doc.id)


class _UrlCollector(Collector):
    def __init__(self, partitions: int):
        self.p = partitions
        self.rows: list[tuple[int, int, int, int, int]] = []
        self.pos = 0

    def add(self, doc: Document) -> None:
        if doc.url:
            h = hash_str(normalize_url(doc.url))
            self.rows.append((h, crawl_time(doc.date), *priority(doc), self.pos))
        self.pos += 1

    def save(self, path: Path) -> None:
        arr = {}
        cols = list(zip(*self.rows)) if self.rows else [(), (), (), (), ()]
        h, t, p1, p2, pos = (
            np.array(c, dtype=d) for c, d in zip(cols, (np.uint64, np.int64, np.uint64, np.uint64, np.uint32))
        )
        part = (h % np.uint64(self.p)).astype(np.int64)
        for j in range(self.p):
            m = part == j
            arr.update({f"h{j}": h[m], f"t{j}": t[m], f"p{j}": p1[m], f"q{j}": p2[m], f"pos{j}": pos[m]})
        save_arrays(path.with_suffix(".npz"), **arr)


class UrlDedup(GlobalStep):
    name = "url_dedup"

    def collector(self, rnd: int, gdir: Path, shard: int) -> Collector:
        return _UrlCollector(self.cfg.partitions)

    def resolve(self, rnd: int, gdir: Path, shards: list[int]) -> dict:
        drops: dict[int, list[np.ndarray]] = {s: [] for s in shards}
        times: dict[int, list[np.ndarray]] = {s: [] for s in shards}
        urls = dropped = 0
        for j in range(self.cfg.partitions):
            parts = [
                load_arrays(gdir / "round-0" / f"{shard_name(s)}.npz", [f"h{j}", f"t{j}", f"p{j}", f"q{j}", f"pos{j}"])
                for s in shards
            ]
            h = np.concatenate([p[f"h{j}"] for p in parts])
            if not len(h):
                continue
            t = np.concatenate([p[f"t{j}"] for p in parts])
            p1 = np.concatenate([p[f"p{j}"] for p in parts])
            p2 = np.concatenate([p[f"q{j}"] for p in parts])
            pos = np.concatenate([p[f"pos{j}"] for p in parts])
            shard = np.concatenate([np.full(len(p[f"h{j}"]), s, np.int64) for s, p in zip(shards, parts)])
            order = np.lexsort((p2, p1, -t, h))  # by URL, newest first, then the tie-breaks
            h, t, pos, shard = h[order], t[order], pos[order], shard[order]
            first = np.ones(len(h), bool)
            first[1:] = h[1:] != h[:-1]
            urls += int(first.sum())
            keep_time = t[np.maximum.accumulate(np.where(first, np.arange(len(h)), 0))]
            for s in np.unique(shard[~first]):
                m = (~first) & (shard == s)
                drops[int(s)].append(pos[m])
                times[int(s)].append(keep_time[m])
                dropped += int(m.sum())
        for s in shards:
            pos = np.concatenate(drops[s]) if drops[s] else np.zeros(0, np.uint32)
            kt = np.concatenate(times[s]) if times[s] else np.zeros(0, np.int64)
            order = np.argsort(pos, kind="stable")
            save_arrays(gdir / "resolved-0" / f"{shard_name(s)}.npz", pos=pos[order], keep_time=kt[order])
        return {"distinct urls": urls, "older crawls dropped": dropped}

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        d = load_arrays(self.env.global_dir(self.name) / "resolved-0" / f"{shard_name(task.shard)}.npz")
        drop = dict(zip(d["pos"].tolist(), d["keep_time"].tolist()))
        for i, doc in enumerate(docs):
            if i in drop:
                kept = datetime.fromtimestamp(drop[i], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                task.drop(doc, self.name, "older crawl of the same URL", f"kept the crawl of {kept}")
            else:
                yield doc
