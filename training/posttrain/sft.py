"""Supervised finetuning (paper section 4.1.3): dialogs packed into rows, cross-entropy on the assistant tokens only;
and the batch source every post-training loss (SFT, reward model, DPO) feeds training.loop.TrainLoop with.

Data path: encoded dialogs (model.dialog.encode_dialog: ids and loss mask) from several sources are mixed
(`mix`: a high-quality source repeated for several epochs, a large one down-sampled, section 4.2.3), packed
whole into rows of seq_len tokens (`pack_dialogs`: a dialog is never cut, an over-long one is dropped and
counted), and served by `DialogBatches`, a seeded shuffle per epoch whose position is in every checkpoint.

A packed row follows training/data.py: `doc_ids` separate the dialogs (attention never crosses them, RoPE
positions restart) and `targets[t]` is the token at t + 1 when that token is trained, else IGNORE; the last
token of a dialog has no target. Right padding is one more document with no targets.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training import distributed as D
from training.data import IGNORE, Batch
from training.loop import StepBatch
from training.losses import NextTokenLoss


class SFTLoss(NextTokenLoss):
    """loss_fn(model, Batch) -> (cross-entropy summed over the trained target tokens, their count). The dialog
    mask is already in the targets (IGNORE where it is False), so this is the pre-training loss, with its
    cross_entropy / chunked / fused kinds; the loop divides by the step's trained tokens over all ranks."""


@dataclass(frozen=True)
class Row:
    """One packed row, each array [seq_len]."""

    tokens: np.ndarray
    targets: np.ndarray
    doc_ids: np.ndarray

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


@dataclass
class Packed:
    rows: list[Row]
    dropped: dict[str, int]  # reason -> dialogs left out


def pack_dialogs(encoded: Sequence[tuple[list[int], list[bool]]], seq_len: int, pad_id: int = 0) -> Packed:
    """Pack (ids, loss_mask) dialogs whole into rows of `seq_len`, in order: a dialog that does not fit in the
    current row's space starts the next row. A dialog longer than seq_len is dropped (cutting it would train
    on a reply without its prompt, or lose the end of turn), and counted."""
    rows, current, fill, dropped = [], [], 0, Counter()
    for ids, mask in encoded:
        if len(ids) != len(mask):
            raise ValueError(f"dialog of {len(ids)} tokens has a mask of {len(mask)}")
        if len(ids) > seq_len:
            dropped[f"longer than seq_len {seq_len}"] += 1
            continue
        if fill + len(ids) > seq_len:
            rows.append(_row(current, seq_len, pad_id))
            current, fill = [], 0
        current.append((ids, mask))
        fill += len(ids)
    if current:
        rows.append(_row(current, seq_len, pad_id))
    return Packed(rows, dict(dropped))


def _row(dialogs: list[tuple[list[int], list[bool]]], seq_len: int, pad_id: int) -> Row:
    tokens = np.full(seq_len, pad_id, dtype=np.int64)
    targets = np.full(seq_len, IGNORE, dtype=np.int64)
    doc_ids = np.full(seq_len, len(dialogs), dtype=np.int64)  # the padding is a document of its own
    pos = 0
    for d, (ids, mask) in enumerate(dialogs):
        n = len(ids)
        ids_a, mask_a = np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)
        tokens[pos : pos + n] = ids_a
        # Position t predicts token t + 1: a target only where that next token is trained.
        targets[pos : pos + n - 1] = np.where(mask_a[1:], ids_a[1:], IGNORE)
        doc_ids[pos : pos + n] = d
        pos += n
    return Row(tokens, targets, doc_ids)


def collate_rows(rows: Sequence[Row]) -> Batch:
    return Batch(*(torch.from_numpy(np.stack([getattr(r, k) for r in rows])) for k in ("tokens", "targets", "doc_ids")))


@dataclass(frozen=True)
class Source:
    """A named list of items (encoded dialogs, preferences) and how many passes over it the mix takes: 3.0 repeats
    it three times, 0.25 keeps a seeded quarter of it, 1.5 all of it plus a seeded half."""

    name: str
    items: Sequence
    epochs: float = 1.0


def mix(sources: Sequence[Source], seed: int = 0) -> tuple[list, dict[str, int]]:
    """The sources' items, repeated or down-sampled per source, in one seeded shuffle; and items per source."""
    out, counts = [], {}
    for s in sources:
        if s.epochs < 0:
            raise ValueError(f"source '{s.name}': epochs must be >= 0, got {s.epochs}")
        whole, frac = int(s.epochs), s.epochs - int(s.epochs)
        rng = np.random.default_rng([seed, zlib.crc32(s.name.encode())])
        part = sorted(rng.choice(len(s.items), size=round(frac * len(s.items)), replace=False))
        taken = list(s.items) * whole + [s.items[i] for i in part]
        out += taken
        counts[s.name] = len(taken)
    order = np.random.default_rng([seed]).permutation(len(out))
    return [out[i] for i in order], counts


class DialogBatches:
    """The loop's batch source for post-training: `per_step` items (packed rows, preference groups, pairs) a step,
    in a seeded random order per epoch over `items`; this rank's contiguous share of them, collated into
    micro-batches of `micro` items (0: all at once). An item's `n_tokens` makes the step's token count."""

    def __init__(
        self,
        items: Sequence,
        collate: Callable[[list], Any],
        per_step: int,
        micro: int = 0,
        seed: int = 0,
        info: D.DistInfo | None = None,
    ):
        self.items, self.collate, self.per_step, self.seed = items, collate, per_step, seed
        self.info = info or D.DistInfo()
        if not items:
            raise ValueError("no items to train on")
        if per_step % self.info.world:
            raise ValueError(f"{per_step} items per step cannot be split evenly over {self.info.world} ranks")
        self.local = per_step // self.info.world
        self.micro = micro or self.local
        if self.local % self.micro:
            raise ValueError(f"{self.local} items per rank are not a multiple of {self.micro} per micro-batch")
        self.epoch, self.pos = 0, 0
        self._perm_epoch, self._perm = -1, None

    def _order(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.items))
            self._perm_epoch = self.epoch
        return self._perm

    def _take(self, n: int) -> list:
        out = []
        while len(out) < n:
            order = self._order()
            k = min(n - len(out), len(order) - self.pos)
            out += [self.items[i] for i in order[self.pos : self.pos + k]]
            self.pos += k
            if self.pos == len(order):
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    def next_batch(self, step: int, tokens: int) -> StepBatch:
        epoch = self.epoch
        items = self._take(self.per_step)  # every rank draws the whole step, so all agree on its tokens
        mine = items[self.info.rank * self.local : (self.info.rank + 1) * self.local]
        micro = [self.collate(mine[i : i + self.micro]) for i in range(0, self.local, self.micro)]
        return StepBatch(micro, sum(x.n_tokens for x in items), {"epoch": epoch})

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "items": len(self.items)}

    def load_state_dict(self, state: dict) -> None:
        if state["items"] != len(self.items):
            raise ValueError(f"checkpoint's batch source had {state['items']} items, this one has {len(self.items)}")
        self.epoch, self.pos, self.seed = state["epoch"], state["pos"], state["seed"]
