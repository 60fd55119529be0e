"""Contamination: n-gram overlap of eval items with the training shards, in token space (Llama 3 paper 5.1.4).

Each eval item's text (question + reference solution) is tokenized with the training tokenizer. A token of the
item is *contaminated* when it lies inside some n-gram (default 8 tokens) that also occurs in the training data;
the item's score is the fraction of its tokens that are contaminated, and the item counts as contaminated when the
score reaches `threshold`. Working in token space means the training shards are read as they are (no decoding),
and an item matches wherever its tokenization agrees with the training document's, which is everywhere except
the first token or two after a different preceding character.

The scan holds only the eval side in memory: the hashes of every eval n-gram, sorted. Training shards are
streamed in blocks; each block's n-grams (never spanning two documents) are hashed with numpy and looked up by
binary search, so memory is independent of the training set's size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from data.shards import ShardSet
from eval import stats
from tools.hashing import mix64

_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial rolling hash


@dataclass
class ContaminationConfig:
    shards: str = ""  # the training shard set; empty = no contamination report
    split: str = "train"
    n: int = 8
    threshold: float = 0.5  # an item is contaminated when >= this fraction of its tokens are in a training n-gram
    block_tokens: int = 1 << 22  # training tokens hashed at a time (memory ~ 40 bytes per token)


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every length-n window of `tokens` ([len - n + 1]; empty when shorter than n)."""
    m = mix64(np.asarray(tokens).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))  # token ids over 64 bits
    count = len(m) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
        for j in range(n):
            h = h * _P + m[j : j + count]
    return h


class NgramIndex:
    """The eval items' n-grams; `scan` marks those present in training token streams."""

    def __init__(self, items: dict[str, Sequence[int]], n: int = 8):
        self.n = n
        self.item_hashes = {k: ngram_hashes(np.asarray(v, dtype=np.int64), n) for k, v in items.items()}
        self.item_lengths = {k: len(v) for k, v in items.items()}
        every = [h for h in self.item_hashes.values() if len(h)]
        self.keys = np.unique(np.concatenate(every)) if every else np.zeros(0, dtype=np.uint64)
        self.seen = np.zeros(len(self.keys), dtype=bool)

    def scan(self, tokens: np.ndarray, offsets: np.ndarray, block: int = 1 << 24) -> None:
        """Mark the eval n-grams that occur in this training shard (documents delimited by `offsets`)."""
        if not len(self.keys):
            return
        doc_starts = np.asarray(offsets[1:-1])
        for start in range(0, len(tokens), block):
            stop = min(len(tokens), start + block + self.n - 1)  # overlap so no window is lost at a block edge
            h = ngram_hashes(tokens[start:stop], self.n)
            if not len(h):
                continue
            # Drop windows that span a document boundary: window i covers [start+i, start+i+n).
            first = start + np.arange(len(h))
            k = np.searchsorted(doc_starts, first, side="right")
            nxt = np.where(k < len(doc_starts), doc_starts[np.minimum(k, len(doc_starts) - 1)], np.iinfo(np.int64).max)
            h = h[first + self.n <= nxt]
            idx = np.searchsorted(self.keys, h)
            idx = np.minimum(idx, len(self.keys) - 1)
            self.seen[idx[self.keys[idx] == h]] = True

    def scores(self) -> dict[str, float]:
        """Per item: the fraction of its tokens covered by an n-gram seen in training."""
        out = {}
        for k, h in self.item_hashes.items():
            length = self.item_lengths[k]
            if length == 0:
                out[k] = 0.0
                continue
            hit = self.seen[np.searchsorted(self.keys, h)] if len(h) else np.zeros(0, dtype=bool)
            covered = np.zeros(length + 1, dtype=np.int64)
            starts = np.nonzero(hit)[0]
            np.add.at(covered, starts, 1)  # difference array: +1 at each hit window's start ...
            np.add.at(covered, starts + self.n, -1)  # ... -1 just past its end
            out[k] = float((np.cumsum(covered)[:length] > 0).mean())
        return out


def scan_shards(index: NgramIndex, shards: ShardSet, split: str = "train", block: int = 1 << 24, progress=True):
    entries = shards.select(split=split)
    if not entries:
        raise ValueError(f"shard set {shards.root} has no '{split}' shards to check contamination against")
    for e in tqdm(entries, desc="contamination", unit="shard", disable=not progress):
        index.scan(shards.tokens(e), shards.offsets(e), block)


def item_texts(task: str, items) -> dict[str, str]:
    """What is checked for each eval item: its question and its reference solution."""
    if task == "gsm8k":
        return {it.id: f"{it.question}\n{it.solution}" for it in items}
    if task.startswith("math"):
        return {it.id: f"{it.problem}\n{it.solution}" for it in items}
    raise ValueError(f"no contamination texts for task '{task}' (known: gsm8k, math500, math)")


def report(
    benchmarks: dict[str, dict[str, str]],
    encode: Callable[[str], list[int]],
    shards: ShardSet,
    cfg: ContaminationConfig,
    progress: bool = True,
) -> dict:
    """{benchmark: {"n", "contaminated", "fraction", "threshold", "scores": {id: score}}}; one scan for all."""
    keyed = {f"{b}\x00{i}": encode(t) for b, texts in benchmarks.items() for i, t in texts.items()}
    index = NgramIndex(keyed, cfg.n)
    scan_shards(index, shards, cfg.split, cfg.block_tokens, progress)
    scores = index.scores()
    out = {}
    for b, texts in benchmarks.items():
        s = {i: scores[f"{b}\x00{i}"] for i in texts}
        bad = sorted(i for i, v in s.items() if v >= cfg.threshold)
        out[b] = {
            "n": len(s),
            "contaminated": len(bad),
            "fraction": len(bad) / len(s) if s else 0.0,
            "threshold": cfg.threshold,
            "ngram": cfg.n,
            "contaminated_ids": bad,
            "scores": s,
        }
    return out


def clean_subset_score(records: Sequence[dict], contaminated_ids: Sequence[str], key: str, seed: int = 0) -> dict:
    """Accuracy on all items, on the clean ones and on the contaminated ones (the paper reports all and clean)."""
    bad = set(contaminated_ids)
    clean = [r[key] for r in records if r["id"] not in bad]
    dirty = [r[key] for r in records if r["id"] in bad]
    return {
        "all": stats.accuracy([r[key] for r in records], seed=seed),
        "clean": stats.accuracy(clean, seed=seed),
        "contaminated": stats.accuracy(dirty, seed=seed),
    }
