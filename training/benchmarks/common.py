"""Synthetic shards for benchmarks: random documents of a given vocabulary (throughput does not depend on
what the tokens say)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.shards import ShardWriter, write_manifest


def random_shards(root: Path, vocab: int, tokens: int, mean_doc: int = 600, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    w = ShardWriter(root, "general", "train", 0)
    done = 0
    while done < tokens:
        n = int(rng.integers(mean_doc // 4, mean_doc * 2))
        w.add(rng.integers(0, vocab, n, dtype=np.int64))
        done += n
    write_manifest(root, [w.close()], {"name": "random", "vocab_size": vocab})
    return root
