"""Tokenized shards: the on-disk contract between data/ (which writes them) and training/ and eval/ (which read).

A shard set is a directory:

    manifest.json
    <category>/<split>-<NNNNN>.tokens   token ids, uint32 little-endian, documents back to back
    <category>/<split>-<NNNNN>.index    document start offsets, int64 little-endian, documents + 1 entries
                                        (the last one is the shard's token count)

Documents carry whatever delimiters the tokenize step put in (Llama 3 packs <|begin_of_text|> ...
<|end_of_text|>); readers take document boundaries from the index, not from the tokens, and feed them
to the model as doc_ids for document masking.

manifest.json holds the format version, the tokenizer's identity, one entry per shard (paths, category,
split, token and document counts, sha256 of both files) and totals per category and split. Every file
is written to a temporary name and renamed; the manifest is written last, so a shard set with a
manifest is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tools import atomic

# The categories shard sets are organised by, and the paper's pre-training mix over them (section 3.1.2): the
# data package's mix step draws to it and training's loader mixes by it unless a config says otherwise.
CATEGORIES = ("general", "math", "code", "multilingual")
PAPER_MIX = {"general": 0.50, "math": 0.25, "code": 0.17, "multilingual": 0.08}

FORMAT = "herd-shards/1"
TOKEN_DTYPE = np.dtype("<u4")
INDEX_DTYPE = np.dtype("<i8")


@dataclass(frozen=True)
class ShardEntry:
    path: str  # the .tokens file, relative to the shard set's root
    index: str  # the .index file, relative to the root
    category: str
    split: str
    tokens: int
    documents: int
    tokens_sha256: str
    index_sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Writes one shard: add() documents, then close() to publish both files and get the entry."""

    def __init__(self, root: str | os.PathLike, category: str, split: str, number: int):
        self.root = Path(root)
        stem = f"{category}/{split}-{number:05d}"
        self.rel_tokens, self.rel_index = f"{stem}.tokens", f"{stem}.index"
        self.category, self.split = category, split
        self.final = self.root / self.rel_tokens
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(f".{self.final.name}.{os.getpid()}.tmp")
        self.file = open(self.tmp, "wb")  # noqa: SIM115 (held open across add() calls, closed in close())
        self.offsets = [0]

    def add(self, tokens: Sequence[int] | np.ndarray) -> None:
        arr = np.asarray(tokens)
        if arr.ndim != 1 or len(arr) == 0:
            raise ValueError(f"{self.rel_tokens}: a document must be a non-empty 1-D token sequence")
        if arr.min() < 0 or arr.max() > np.iinfo(TOKEN_DTYPE).max:
            raise ValueError(f"{self.rel_tokens}: token ids out of uint32 range")
        self.file.write(arr.astype(TOKEN_DTYPE).tobytes())
        self.offsets.append(self.offsets[-1] + len(arr))

    def close(self) -> ShardEntry:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.final)
        atomic.write_bytes(self.root / self.rel_index, np.asarray(self.offsets, dtype=INDEX_DTYPE).tobytes())
        return ShardEntry(
            path=self.rel_tokens,
            index=self.rel_index,
            category=self.category,
            split=self.split,
            tokens=self.offsets[-1],
            documents=len(self.offsets) - 1,
            tokens_sha256=_sha256(self.final),
            index_sha256=_sha256(self.root / self.rel_index),
        )


def write_manifest(
    root: str | os.PathLike, entries: Iterable[ShardEntry], tokenizer: dict, extra: dict | None = None
) -> Path:
    """Write manifest.json (last, atomically). `tokenizer` names the tokenizer (name, vocab_size, ids, hash)."""
    entries = sorted(entries, key=lambda e: e.path)
    totals: dict = {"tokens": 0, "documents": 0, "by_category": {}, "by_split": {}}
    by_cat: dict = defaultdict(lambda: {"tokens": 0, "documents": 0})
    by_split: dict = defaultdict(lambda: {"tokens": 0, "documents": 0})
    for e in entries:
        for bucket in (totals, by_cat[e.category], by_split[e.split]):
            bucket["tokens"] += e.tokens
            bucket["documents"] += e.documents
    totals["by_category"], totals["by_split"] = dict(sorted(by_cat.items())), dict(sorted(by_split.items()))
    manifest = {"format": FORMAT, "tokenizer": tokenizer, "shards": [asdict(e) for e in entries], "totals": totals}
    if extra:
        manifest["extra"] = extra
    return atomic.write_json(Path(root) / "manifest.json", manifest)


class ShardSet:
    """Read side: the manifest, its entries, and memory-mapped tokens and document offsets."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no manifest (not a shard set, or its writing never finished)")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: format is {self.manifest.get('format')!r}, expected {FORMAT!r}")
        self.entries = [ShardEntry(**e) for e in self.manifest["shards"]]
        for e in self.entries:
            for rel, size in (
                (e.path, e.tokens * TOKEN_DTYPE.itemsize),
                (e.index, (e.documents + 1) * INDEX_DTYPE.itemsize),
            ):
                f = self.root / rel
                if not f.is_file() or f.stat().st_size != size:
                    found = f.stat().st_size if f.is_file() else "missing"
                    raise ValueError(f"{f}: expected {size} bytes from the manifest, found {found}")

    @property
    def tokenizer(self) -> dict:
        return self.manifest["tokenizer"]

    @property
    def categories(self) -> list[str]:
        return sorted({e.category for e in self.entries})

    def select(self, category: str | None = None, split: str | None = None) -> list[ShardEntry]:
        return [
            e
            for e in self.entries
            if (category is None or e.category == category) and (split is None or e.split == split)
        ]

    def tokens(self, entry: ShardEntry) -> np.ndarray:
        if entry.tokens == 0:
            return np.zeros(0, dtype=TOKEN_DTYPE)
        return np.memmap(self.root / entry.path, dtype=TOKEN_DTYPE, mode="r", shape=(entry.tokens,))

    def offsets(self, entry: ShardEntry) -> np.ndarray:
        return np.fromfile(self.root / entry.index, dtype=INDEX_DTYPE)

    def documents(self, entry: ShardEntry) -> Iterable[np.ndarray]:
        toks, offs = self.tokens(entry), self.offsets(entry)
        for start, end in zip(offs[:-1], offs[1:]):
            yield toks[start:end]

    def verify(self) -> None:
        """Check every file's sha256 against the manifest (slow: reads everything)."""
        for e in self.entries:
            for rel, want in ((e.path, e.tokens_sha256), (e.index, e.index_sha256)):
                got = _sha256(self.root / rel)
                if got != want:
                    raise ValueError(f"{self.root / rel}: sha256 {got} does not match the manifest's {want}")
