"""Shared test fixtures: a micro recipe and a subprocess helper; shard sets of real text come from
training.sample_shards."""

from __future__ import annotations

import os
import subprocess
import sys

from tools import config as tools_config
from tools.paths import PACKAGE_ROOT
from training.config import Recipe
from training.sample_shards import byte_tokenizer, text_shards, write_shards


def micro_recipe(*overrides: str) -> Recipe:
    """A 2-layer, dim-32 model on the byte tokenizer, fp32, 1 thread, no wandb or progress bar."""
    base = [
        "model.preset=tiny",
        "model.overrides={dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, multiple_of: 32}",
        "threads=1",
        "device=cpu",
        "monitor.wandb=false",
        "monitor.progress=false",
        "pretrain.optim.lr=0.01",
        "pretrain.lr.warmup_steps=2",
        "pretrain.batch=[{tokens: 0, batch_tokens: 256, seq_len: 32}]",
        "pretrain.tokens=2560",
        "pretrain.checkpoint.every_steps=4",
        "pretrain.data.mix={general: 0.6, math: 0.25, multilingual: 0.15}",
        "pretrain.valid_batches=1",
        "pretrain.valid_rows=4",
    ]
    return tools_config.load(Recipe, [], base + list(overrides))


def python(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """`python args...` from the repository root with the repository importable."""
    full_env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen([sys.executable, *args], cwd=PACKAGE_ROOT, env=full_env, **kw)


__all__ = ["byte_tokenizer", "micro_recipe", "python", "text_shards", "write_shards"]
