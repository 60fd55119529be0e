"""Packed, document-masked batches from tokenized shards, deterministic and resumable.

The loader turns each category of a shard set into a stream of documents (a seeded permutation per epoch)
and mixes the streams by token share: the next document always comes from the category furthest below its
share of the tokens taken so far, so the mix is exact without any random state. Documents are packed back
to back into rows of `seq_len` tokens; a document that does not fit continues in the next row.

A batch row carries `doc_ids` (one id per document segment, for document masking) and `targets`: the next
token of the same document, or -100 (ignored) at a document's last token. The last token of a row whose
document continues in the next row gets that document's next token as its target, so every in-document
transition is trained exactly once.

The layout of a global batch (which document segments go in which row) is computed from document lengths
alone; each rank then reads only the tokens of its own rows. The loader's whole position is a small JSON
dict (`state_dict`), saved in every checkpoint.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.shards import PAPER_MIX, ShardSet
from training.config import DataConfig

IGNORE = -100
log = logging.getLogger(__name__)


@dataclass
class Batch:
    tokens: torch.Tensor  # [rows, T] int64
    targets: torch.Tensor  # [rows, T] int64, IGNORE where there is no target
    doc_ids: torch.Tensor  # [rows, T] int64, equal ids = one document segment

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())

    def rows(self, start: int, stop: int) -> Batch:
        return Batch(self.tokens[start:stop], self.targets[start:stop], self.doc_ids[start:stop])


class Category:
    """Every document of one mix key: memory-mapped tokens and (shard, start, length) per document."""

    def __init__(self, name: str, shards: ShardSet, entries: list):
        self.name = name
        self.tokens = [shards.tokens(e) for e in entries]
        shard_ids, starts, lengths = [], [], []
        for i, e in enumerate(entries):
            offs = shards.offsets(e)
            n = len(offs) - 1
            shard_ids.append(np.full(n, i, dtype=np.int32))
            starts.append(offs[:-1])
            lengths.append(np.diff(offs))
        self.shard = np.concatenate(shard_ids) if shard_ids else np.zeros(0, np.int32)
        self.start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        keep = self.length > 0
        self.shard, self.start, self.length = self.shard[keep], self.start[keep], self.length[keep]
        self.total_tokens = int(self.length.sum())
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return len(self.length)

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """The documents of `epoch` in a seeded random order."""
        if epoch != self._perm_epoch:
            key = [seed, zlib.crc32(self.name.encode()), epoch]
            self._perm, self._perm_epoch = np.random.default_rng(key).permutation(len(self)), epoch
        return self._perm

    def read(self, doc: int, offset: int, n: int) -> np.ndarray:
        start = int(self.start[doc]) + offset
        return self.tokens[int(self.shard[doc])][start : start + n]


def mix_of(cfg: DataConfig) -> dict[str, float]:
    return dict(cfg.mix) if cfg.mix else dict(PAPER_MIX)


def open_categories(shards_dir: str | Path, cfg: DataConfig, split: str) -> tuple[dict[str, Category], list[str]]:
    """The mix's categories that exist for `split`, and the names of those skipped (with a warning)."""
    main = ShardSet(shards_dir)
    found, skipped = {}, []
    for name in mix_of(cfg):
        if name in cfg.sources:
            # "DIR" (every category of the split) or "DIR#CATEGORY"
            where, _, category = cfg.sources[name].partition("#")
            other = ShardSet(where)
            entries = other.select(category=category or None, split=split)
            source = other
        else:
            entries = main.select(category=name, split=split)
            source = main
        if not entries:
            where = cfg.sources.get(name, str(shards_dir))
            if cfg.strict:
                raise ValueError(f"data.mix key '{name}': no '{split}' shards in {where}")
            log.warning("data.mix key '%s': no '%s' shards in %s; dropped from the mix", name, split, where)
            skipped.append(name)
            continue
        cat = Category(name, source, entries)
        if len(cat) == 0:
            skipped.append(name)
            continue
        found[name] = cat
    if not found:
        raise ValueError(f"none of the mix's categories {sorted(mix_of(cfg))} has '{split}' documents in {shards_dir}")
    return found, skipped


class PackedLoader:
    def __init__(self, shards_dir: str | Path, cfg: DataConfig, split: str | None = None, seed: int | None = None):
        self.split = split or cfg.split
        self.seed = cfg.seed if seed is None else seed
        self.categories, self.skipped = open_categories(shards_dir, cfg, self.split)
        names, mix = list(self.categories), mix_of(cfg)
        total = sum(mix[n] for n in names)
        if total <= 0:
            raise ValueError(f"data.mix weights of {names} sum to {total}")
        self.weights = {n: mix[n] / total for n in names if mix[n] > 0}
        self.cursor = {n: {"epoch": 0, "pos": 0} for n in names}
        self.other_cursors: dict = {}  # positions in categories outside this mix, kept for later phases
        self.taken = {n: 0 for n in self.weights}
        self.current: list | None = None  # [category, doc, offset] of a document split across rows
        self.batches = 0

    # ---- position ----
    def state_dict(self) -> dict:
        return {
            "cursor": {**self.other_cursors, **{n: dict(c) for n, c in self.cursor.items()}},
            "taken": dict(self.taken),
            "current": list(self.current) if self.current else None,
            "batches": self.batches,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict, reset_mix: bool = False) -> None:
        """Restore a position. `reset_mix` keeps the document cursors but restarts the mix's token counts
        (a new phase with another mix continues each category's stream where the last phase left it)."""
        for name, c in state["cursor"].items():
            if name in self.cursor:
                self.cursor[name] = dict(c)
            else:
                self.other_cursors[name] = dict(c)
        if reset_mix:
            cur = state.get("current")
            self.current = list(cur) if cur and cur[0] in self.weights else None
            return
        self.taken = {n: int(state["taken"].get(n, 0)) for n in self.weights}
        self.current = list(state["current"]) if state["current"] else None
        self.batches = int(state["batches"])

    # ---- layout ----
    def _next_document(self) -> list:
        # The category furthest below its token share; ties go to the first in mix order.
        name = min(self.weights, key=lambda n: self.taken[n] / self.weights[n])
        cat, cur = self.categories[name], self.cursor[name]
        doc = int(cat.order(self.seed, cur["epoch"])[cur["pos"]])
        cur["pos"] += 1
        if cur["pos"] == len(cat):
            cur["epoch"], cur["pos"] = cur["epoch"] + 1, 0
        return [name, doc, 0]

    def _layout_row(self, seq_len: int) -> tuple[list[tuple[str, int, int, int]], bool]:
        """Segments (category, doc, offset, n) filling one row, and whether the last document continues."""
        segments, fill = [], 0
        while fill < seq_len:
            if self.current is None:
                self.current = self._next_document()
            name, doc, offset = self.current
            n = min(seq_len - fill, int(self.categories[name].length[doc]) - offset)
            segments.append((name, doc, offset, n))
            self.taken[name] += n
            fill += n
            if offset + n == self.categories[name].length[doc]:
                self.current = None
            else:
                self.current = [name, doc, offset + n]
        return segments, self.current is not None

    def _materialise(self, segments, continues: bool, seq_len: int):
        tokens = np.empty(seq_len, dtype=np.int64)
        targets = np.full(seq_len, IGNORE, dtype=np.int64)
        doc_ids = np.empty(seq_len, dtype=np.int64)
        pos = 0
        for i, (name, doc, offset, n) in enumerate(segments):
            last = i == len(segments) - 1
            cat = self.categories[name]
            # One token more than the segment when its document continues: the last target.
            chunk = cat.read(doc, offset, n + 1 if (last and continues) else n)
            tokens[pos : pos + n] = chunk[:n]
            targets[pos : pos + len(chunk) - 1] = chunk[1:]
            doc_ids[pos : pos + n] = i
            pos += n
        return tokens, targets, doc_ids

    def next_batch(self, rows: int, seq_len: int, rank: int = 0, world: int = 1) -> Batch:
        """The next global batch of `rows` x `seq_len`; this rank's share of the rows (contiguous)."""
        if rows % world:
            raise ValueError(f"{rows} rows per batch cannot be split evenly over {world} ranks")
        per_rank = rows // world
        mine = range(rank * per_rank, (rank + 1) * per_rank)
        out = []
        for r in range(rows):
            segments, continues = self._layout_row(seq_len)
            if r in mine:
                out.append(self._materialise(segments, continues, seq_len))
        self.batches += 1
        tokens, targets, doc_ids = (torch.from_numpy(np.stack(x)) for x in zip(*out))
        return Batch(tokens, targets, doc_ids)
