"""Global MinHash document dedup (FineWeb settings by default): word 5-gram shingles of the normalised text
(lowercase, digits -> 0, punctuation removed), 14 bands x 8 rows = 112 permutations, LSH buckets, connected
components across all shards, one survivor per component. Words are the document language's word units
(data/textnorm.py): characters in Chinese, Japanese, Thai and the other scripts written without spaces, so
their shingles are character 5-grams rather than whole sentences.

Signatures: each shingle's 64-bit hash x (data/textnorm.py) goes through 112 multiply-add-shift hash functions
h_k(x) = (a_k * (x >> 32) + b_k) mod 2^64 >> 32 (a strongly universal family on 32-bit keys); the signature
is the minimum per function. A whole batch of documents is one [shingles, 112] numpy computation reduced per
document with minimum.reduceat, which is what makes it fast without compiled code.

Band hashes (plus the language when `per_language`) are the only thing written to disk. Components are found
over all shards at once and the survivor of each is the document with the smallest (content hash, id hash):
the result does not depend on the number of shards or workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.base import Collector, GlobalStep, Task, load_arrays, save_arrays, shard_name
from data.document import Document
from data.textnorm import hash_str, mix64, ngram_hashes, normalize, word_units


@dataclass
class MinHashConfig:
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1
    per_language: bool = True  # documents only cluster with documents of the same language
    # > 0: keep an LSH candidate pair only if their signatures agree on at least this fraction of values (an
    # estimate of their Jaccard similarity): fewer false positives at the cost of storing signatures.
    verify: float = 0.0
    batch_shingles: int = 4096  # shingles per numpy block (memory: 8 bytes x 112 x this)
    # numpy | cuda: the same signatures, bit for bit, computed on a GPU (kernels/minhash.py, `//kernels:herd_cuda`)
    backend: str = "numpy"


class MinHasher:
    def __init__(
        self, num_perm: int = 112, ngram: int = 5, seed: int = 1, batch_shingles: int = 4096, backend: str = "numpy"
    ):
        if backend not in ("numpy", "cuda"):
            raise ValueError(f"minhash backend must be numpy or cuda, got '{backend}'")
        rng = np.random.default_rng(seed)
        self.a = (rng.integers(0, 2**63, num_perm, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)  # odd
        self.b = rng.integers(0, 2**63, num_perm, dtype=np.uint64) << np.uint64(1)
        self.num_perm, self.ngram, self.batch, self.backend = num_perm, ngram, batch_shingles, backend

    def shingles(self, text: str, lang: str = "") -> np.ndarray:
        return ngram_hashes(word_units(normalize(text), lang), self.ngram)

    def signatures_from_shingles(self, shingle_sets: Sequence[np.ndarray]) -> np.ndarray:
        """[len(shingle_sets), num_perm] uint32 signatures; an empty set gives all 0xFFFFFFFF."""
        n = len(shingle_sets)
        out = np.full((n, self.num_perm), np.iinfo(np.uint32).max, np.uint32)
        lens = np.fromiter((len(s) for s in shingle_sets), np.int64, n)
        if self.backend == "cuda":
            from kernels import minhash as cuda_minhash

            hashes = np.concatenate([np.zeros(0, np.uint64), *shingle_sets])
            return cuda_minhash.signatures(hashes, np.concatenate(([0], np.cumsum(lens))), self.a, self.b)
        if not lens.sum():
            return out
        x = np.concatenate(list(shingle_sets)) >> np.uint64(32)
        ends = np.cumsum(lens)
        starts = ends - lens
        docs = np.flatnonzero(lens)  # documents with at least one shingle
        mins = np.full((self.num_perm, n), np.iinfo(np.uint64).max, np.uint64)
        buf = np.empty((self.num_perm, self.batch), np.uint64)
        a, b = self.a[:, None], self.b[:, None]
        # Chunks of `batch` shingles: a [num_perm, batch] block of a*x+b (in place, cache-sized), reduced to
        # one minimum per document piece in the chunk; a document spanning chunks keeps a running minimum.
        for c0 in range(0, len(x), self.batch):
            c1 = min(c0 + self.batch, len(x))
            v = buf[:, : c1 - c0]
            np.multiply(a, x[None, c0:c1], out=v)
            np.add(v, b, out=v)
            sel = docs[(ends[docs] > c0) & (starts[docs] < c1)]  # documents with shingles in this chunk
            cuts = np.maximum(starts[sel], c0) - c0
            red = np.minimum.reduceat(v, cuts, axis=1)
            np.minimum(mins[:, sel], red, out=red)
            mins[:, sel] = red
        out[docs] = (mins[:, docs] >> np.uint64(32)).astype(np.uint32).T
        return out

    def signatures(self, texts: Sequence[str], langs: Sequence[str] | None = None) -> np.ndarray:
        langs = langs if langs is not None else [""] * len(texts)
        return self.signatures_from_shingles([self.shingles(t, lang) for t, lang in zip(texts, langs, strict=True)])


def band_hashes(sig: np.ndarray, bands: int, rows: int, salt: np.ndarray | None = None) -> np.ndarray:
    """[n, bands] uint64: a hash of each band's `rows` signature values (and the band number and salt)."""
    n = sig.shape[0]
    s = sig[:, : bands * rows].astype(np.uint64).reshape(n, bands, rows)
    h = np.broadcast_to(np.arange(bands, dtype=np.uint64)[None, :], (n, bands)).copy()
    if salt is not None:
        h ^= salt[:, None]
    for r in range(rows):
        h = mix64(h * np.uint64(0x9E3779B97F4A7C15) + s[:, :, r])
    return h


class _MinHashCollector(Collector):
    def __init__(self, cfg: MinHashConfig, hasher: MinHasher):
        self.cfg, self.hasher = cfg, hasher
        self.pending: list[Document] = []
        self.bands: list[np.ndarray] = []
        self.sigs: list[np.ndarray] = []
        self.prio: list[tuple[int, int]] = []

    def add(self, doc: Document) -> None:
        self.pending.append(doc)
        if len(self.pending) >= 256:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        sig = self.hasher.signatures([d.text for d in self.pending], [d.lang for d in self.pending])
        salt = None
        if self.cfg.per_language:
            salt = np.array([hash_str(d.lang) for d in self.pending], np.uint64)
        self.bands.append(band_hashes(sig, self.cfg.bands, self.cfg.rows, salt))
        if self.cfg.verify > 0:
            self.sigs.append(sig)
        self.prio += [(hash_str(d.text), hash_str(d.id)) for d in self.pending]
        self.pending = []

    def save(self, path: Path) -> None:
        self._flush()
        b = np.concatenate(self.bands) if self.bands else np.zeros((0, self.cfg.bands), np.uint64)
        p = np.array(self.prio, np.uint64).reshape(-1, 2)
        extra = {"sig": np.concatenate(self.sigs)} if self.sigs else {}
        save_arrays(
            path.with_suffix(".npz"),
            prio=p,
            **extra,
            **{f"b{j}": np.ascontiguousarray(b[:, j]) for j in range(self.cfg.bands)},
        )


def components(n: int, edges: list[np.ndarray]) -> np.ndarray:
    """Connected-component label of each of n nodes, given [k, 2] edge arrays: the smallest node of its
    component. Every node points to a smaller or equal node, roots to themselves. Each round, the root of each
    edge's ends is hooked to the smaller of the two roots, then pointers jump to their root; a round with an
    edge whose ends still differ merges at least two trees. (scipy's connected_components does the same job,
    but importing scipy.sparse costs 0.25 s of CPU, a tenth of a short pipeline run.)"""
    e = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    u, v = e[:, 0], e[:, 1]
    label = np.arange(n)
    while True:
        lu, lv = label[u], label[v]
        differ = lu != lv
        if not differ.any():
            return label
        lu, lv = lu[differ], lv[differ]
        low = np.minimum(lu, lv)
        np.minimum.at(label, lu, low)  # lu and lv are roots: label[root] <- the smallest root it meets
        np.minimum.at(label, lv, low)
        while True:  # pointer jumping until every node points at a root
            up = label[label]
            if np.array_equal(up, label):
                break
            label = up


def bucket_edges(h: np.ndarray) -> np.ndarray:
    """Edges joining every node to the first node of its run of equal hashes."""
    order = np.argsort(h, kind="stable")
    hs = h[order]
    first = np.ones(len(hs), bool)
    first[1:] = hs[1:] != hs[:-1]
    head = order[np.maximum.accumulate(np.where(first, np.arange(len(hs)), 0))]
    m = ~first
    return np.stack([head[m], order[m]], axis=1)


def verified(edges: np.ndarray, sig: np.ndarray | None, verify: float) -> np.ndarray:
    """Only the edges whose two signatures agree on at least `verify` of their values."""
    if sig is None or verify <= 0 or not len(edges):
        return edges
    agree = (sig[edges[:, 0]] == sig[edges[:, 1]]).mean(axis=1)
    return edges[agree >= verify]


def clusters(
    band_columns: list[np.ndarray], prio: np.ndarray, sig: np.ndarray | None = None, verify: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, keep mask, cluster size per node): components over shared band buckets (edges optionally
    verified by signature agreement); per component the node with the smallest (prio[:, 0], prio[:, 1]) is kept."""
    n = len(prio)
    labels = components(n, [verified(bucket_edges(col), sig, verify) for col in band_columns])
    order = np.lexsort((prio[:, 1], prio[:, 0], labels))
    first = np.ones(n, bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    keep = np.zeros(n, bool)
    keep[order[first]] = True
    sizes = np.bincount(labels, minlength=n)[labels]
    return labels, keep, sizes


class MinHashDedup(GlobalStep):
    name = "minhash"

    def hasher(self) -> MinHasher:
        c = self.cfg
        return MinHasher(c.bands * c.rows, c.ngram, c.seed, c.batch_shingles, c.backend)

    def collector(self, rnd: int, gdir: Path, shard: int) -> Collector:
        return _MinHashCollector(self.cfg, self.hasher())

    def resolve(self, rnd: int, gdir: Path, shards: list[int]) -> dict:
        files = [gdir / "round-0" / f"{shard_name(s)}.npz" for s in shards]
        prio = [load_arrays(f, ["prio"])["prio"] for f in files]
        counts = [len(p) for p in prio]
        offsets = np.concatenate(([0], np.cumsum(counts)))
        cols = [np.concatenate([load_arrays(f, [f"b{j}"])[f"b{j}"] for f in files]) for j in range(self.cfg.bands)]
        sig = np.concatenate([load_arrays(f, ["sig"])["sig"] for f in files]) if self.cfg.verify > 0 else None
        labels, keep, sizes = clusters(
            cols, np.concatenate(prio) if prio else np.zeros((0, 2), np.uint64), sig, self.cfg.verify
        )
        for k, s in enumerate(shards):
            lo, hi = offsets[k], offsets[k + 1]
            drop = np.flatnonzero(~keep[lo:hi]).astype(np.uint32)
            save_arrays(
                gdir / "resolved-0" / f"{shard_name(s)}.npz", pos=drop, size=sizes[lo:hi][drop].astype(np.int64)
            )
        multi = np.unique(labels[sizes > 1]) if len(labels) else np.zeros(0)
        return {
            "documents": int(len(labels)),
            "clusters with duplicates": int(len(multi)),
            "duplicates dropped": int((~keep).sum()),
        }

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        d = load_arrays(self.env.global_dir(self.name) / "resolved-0" / f"{shard_name(task.shard)}.npz")
        drop = dict(zip(d["pos"].tolist(), d["size"].tolist()))
        for i, doc in enumerate(docs):
            if i in drop:
                task.drop(doc, self.name, "near-duplicate (MinHash)", f"cluster of {drop[i]} documents")
            else:
                yield doc


def evaluate(texts: Sequence[str], cfg: MinHashConfig | None = None, threshold: float = 0.8, lang: str = "") -> dict:
    """Precision and recall of MinHash LSH against brute-force Jaccard similarity of the shingle sets:
    true pairs have Jaccard >= threshold; predicted pairs share a band bucket (candidates) or a component."""
    from scipy.sparse import csr_matrix

    cfg = cfg or MinHashConfig()
    hasher = MinHasher(cfg.bands * cfg.rows, cfg.ngram, cfg.seed, cfg.batch_shingles, cfg.backend)
    sets = [np.unique(hasher.shingles(t, lang)) for t in texts]
    vocab, inverse = np.unique(np.concatenate(sets), return_inverse=True)
    rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    x = csr_matrix((np.ones(len(rows), np.float32), (rows, inverse)), shape=(len(sets), len(vocab)))
    inter = (x @ x.T).tocoo()
    sizes = np.array([len(s) for s in sets], np.float64)
    m = inter.row < inter.col
    i, j, v = inter.row[m], inter.col[m], inter.data[m]
    jac = v / (sizes[i] + sizes[j] - v)
    truth = {(a, b) for a, b, s in zip(i.tolist(), j.tolist(), jac.tolist()) if s >= threshold}
    sig = hasher.signatures_from_shingles(sets)
    bands = band_hashes(sig, cfg.bands, cfg.rows)
    candidates: set[tuple[int, int]] = set()
    for j_ in range(cfg.bands):
        order = np.argsort(bands[:, j_], kind="stable")
        hs = bands[order, j_]
        start = 0
        for k in range(1, len(hs) + 1):
            if k == len(hs) or hs[k] != hs[start]:
                members = sorted(order[start:k].tolist())
                candidates.update((a, b) for x_, a in enumerate(members) for b in members[x_ + 1 :])
                start = k
    if cfg.verify > 0:
        candidates = {(a, b) for a, b in candidates if (sig[a] == sig[b]).mean() >= cfg.verify}
    labels = components(len(sets), [verified(bucket_edges(bands[:, j_]), sig, cfg.verify) for j_ in range(cfg.bands)])
    comp: set[tuple[int, int]] = set()
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab).tolist()
        if len(members) > 1:
            comp.update((a, b) for x_, a in enumerate(members) for b in members[x_ + 1 :])

    def pr(pred: set) -> tuple[float, float]:
        tp = len(pred & truth)
        return (tp / len(pred) if pred else 1.0), (tp / len(truth) if truth else 1.0)

    (cp, cr), (kp, kr) = pr(candidates), pr(comp)
    return {
        "documents": len(texts),
        "true pairs": len(truth),
        "candidate pairs": len(candidates),
        "candidate precision": cp,
        "candidate recall": cr,
        "component pairs": len(comp),
        "component precision": kp,
        "component recall": kr,
        "threshold": threshold,
    }
