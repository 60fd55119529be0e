"""Trainer overhead on CPU: the Trainer's throughput vs a bare PyTorch loop over the same model and batches.

    ./bazelw run //training:bench_overhead -- [preset=tiny] [steps=8] [rounds=3] [rows=16] [seq_len=256]

Both sides train the same preset from the same initialisation with AdamW, clipping and the same token-normalised
cross-entropy on the same packed document-masked batches. The bare loop gets its batches precomputed and does
nothing else; the trainer also packs batches from the shards, all-reduces token counts, checks for loss spikes,
sets the LR, logs JSONL metrics with MFU and draws a progress bar (no checkpoints). Rounds alternate between the
two so that a busy machine slows both alike; the ratio is trainer tokens/s over bare tokens/s, summed over rounds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from model.llama import build
from tools import config as tools_config
from training.benchmarks.common import random_shards
from training.config import Recipe
from training.data import IGNORE, PackedLoader
from training.trainer import Trainer, optimizer


@dataclass
class OverheadConfig:
    preset: str = "tiny"
    steps: int = 8  # per round and side
    rounds: int = 3
    rows: int = 16
    seq_len: int = 256
    threads: int = 2
    out: str = ""  # also write the result as JSON here


def recipe_for(cfg: OverheadConfig) -> Recipe:
    tokens = cfg.rows * cfg.seq_len
    return tools_config.load(Recipe, [], [
        f"model.preset={cfg.preset}", f"threads={cfg.threads}", "device=cpu", "monitor.wandb=false",
        f"pretrain.batch=[{{tokens: 0, batch_tokens: {tokens}, seq_len: {cfg.seq_len}}}]",
        f"pretrain.tokens={tokens * cfg.steps * cfg.rounds * 2}", "pretrain.checkpoint.every_steps=0",
        "pretrain.lr.warmup_steps=2", "pretrain.data.mix={general: 1.0}",
    ])  # fmt: skip


def bare_step(model, opt, batch, clip: float) -> float:
    logits = model(batch.tokens, batch.doc_ids)
    n = (batch.targets != IGNORE).sum()
    loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE, reduction="sum") / n
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def run(cfg: OverheadConfig) -> dict:
    recipe = recipe_for(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        shards = random_shards(Path(tmp) / "shards", 8192 if cfg.preset == "tiny" else 32768,
                               cfg.rows * cfg.seq_len * cfg.steps * cfg.rounds * 3)  # fmt: skip
        trainer = Trainer(recipe, recipe.pretrain, Path(tmp) / "run", shards, phase="pretrain")
        model = build(trainer.args, seed=recipe.seed)
        opt = optimizer(model, recipe.pretrain.optim)
        feed = PackedLoader(shards, recipe.pretrain.data)
        batches = [feed.next_batch(cfg.rows, cfg.seq_len) for _ in range(cfg.steps * cfg.rounds)]
        # Warm-up both sides (allocator, first-call costs), not timed.
        trainer.fit(until_tokens=trainer.tokens + cfg.rows * cfg.seq_len * 2, final_save=False)
        for b in batches[:2]:
            bare_step(model, opt, b, recipe.pretrain.optim.grad_clip)
        times = {"trainer": 0.0, "bare": 0.0}
        tokens = cfg.rows * cfg.seq_len * cfg.steps
        for r in range(cfg.rounds):
            start = time.perf_counter()
            trainer.fit(until_tokens=trainer.tokens + tokens, final_save=False)
            times["trainer"] += time.perf_counter() - start
            start = time.perf_counter()
            for b in batches[r * cfg.steps : (r + 1) * cfg.steps]:
                bare_step(model, opt, b, recipe.pretrain.optim.grad_clip)
            times["bare"] += time.perf_counter() - start
        trainer.close()
    total = tokens * cfg.rounds
    result = {
        "preset": cfg.preset, "rows": cfg.rows, "seq_len": cfg.seq_len, "steps": cfg.steps * cfg.rounds,
        "threads": cfg.threads, "trainer_tokens_per_s": total / times["trainer"],
        "bare_tokens_per_s": total / times["bare"], "ratio": times["bare"] / times["trainer"],
    }  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    cfg = tools_config.parse(OverheadConfig, argv)
    result = run(cfg)
    print(json.dumps(result, indent=2))
    print(f"trainer / bare loop throughput: {result['ratio']:.3f}x", file=sys.stderr)
    if cfg.out:
        from tools import atomic
        from tools.paths import user_path

        atomic.write_json(user_path(cfg.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
