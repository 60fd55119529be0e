"""Trainer overhead on CPU: the Trainer's time for a round of steps against a bare PyTorch loop doing the same work.

    ./bazelw run //training:bench_overhead -- [preset=tiny] [steps=4] [rounds=9] [rows=16] [seq_len=256]

Equal work on both sides: the same preset from the same initialisation, each with its own PackedLoader over the
same shards (so the same batches, packed inside the timed loop on both sides), the same loss module (the
recipe's), the loss scaled by the batch's target tokens, clipping, AdamW with the schedule's LR, the same steps.
The bare loop does only that; the trainer also checks for loss spikes, logs JSONL metrics with MFU, draws a
progress bar and handles preemption signals (no checkpoints). Equal work is checked on the result: after the last
round both models' weights must be bit-identical.

Rounds alternate which side runs first, so a busy machine slows both alike; the result is the median over rounds
of trainer seconds / bare seconds, with its range (overhead = that ratio - 1; the goal is <= 5%), and the same for
CPU seconds of the process, which a busy machine disturbs less.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from model.llama import build
from tools import config as tools_config
from training.benchmarks.common import random_shards
from training.config import Recipe
from training.data import PackedLoader
from training.losses import NextTokenLoss
from training.schedule import lr_at
from training.trainer import Trainer, optimizer


@dataclass
class OverheadConfig:
    preset: str = "tiny"
    steps: int = 4  # per round and side
    rounds: int = 9
    rows: int = 16
    seq_len: int = 256
    threads: int = 1  # one: two threads on a shared 2-core machine wait on each other (rounds vary by 2x)
    out: str = ""  # also write the result as JSON here


WARMUP_STEPS = 2  # per side, not timed (allocator, first-call costs)


def recipe_for(cfg: OverheadConfig) -> Recipe:
    tokens = cfg.rows * cfg.seq_len
    return tools_config.load(Recipe, [], [
        f"model.preset={cfg.preset}", f"threads={cfg.threads}", "device=cpu", "monitor.wandb=false",
        f"pretrain.batch=[{{tokens: 0, batch_tokens: {tokens}, seq_len: {cfg.seq_len}}}]",
        f"pretrain.tokens={tokens * (cfg.steps * cfg.rounds + WARMUP_STEPS)}", "pretrain.checkpoint.every_steps=0",
        "pretrain.lr.warmup_steps=2", "pretrain.data.mix={general: 1.0}",
    ])  # fmt: skip


class BareLoop:
    """The minimal training loop: batch, summed loss / target tokens, backward, clip, LR, AdamW step."""

    def __init__(self, trainer: Trainer, shards: Path, rows: int, seq_len: int):
        cfg = trainer.cfg
        self.cfg, self.rows, self.seq_len, self.last_step = cfg, rows, seq_len, trainer.last_step
        self.model = build(trainer.args, seed=trainer.recipe.seed)
        self.loss = NextTokenLoss(cfg.loss)
        self.opt = optimizer(self.model, cfg.optim)
        self.loader = PackedLoader(shards, cfg.data)
        self.step = 0

    def train_step(self) -> float:
        b = self.loader.next_batch(self.rows, self.seq_len)
        s, n = self.loss(self.model, b)
        n = max(float(n), 1.0)
        s.backward()
        for p in self.model.parameters():  # the summed loss's gradient / target tokens, as the loop does
            p.grad.mul_(1.0 / n)
        clip = self.cfg.optim.grad_clip
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, self.cfg.optim.lr, self.cfg.lr, self.last_step)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        return float(s.detach()) / n


def run(cfg: OverheadConfig) -> dict:
    recipe = recipe_for(cfg)
    tokens = cfg.rows * cfg.seq_len * cfg.steps  # per round and side
    with tempfile.TemporaryDirectory() as tmp:
        vocab = 8192 if cfg.preset == "tiny" else 32768
        shards = random_shards(Path(tmp) / "shards", vocab, cfg.rows * cfg.seq_len * (cfg.steps * cfg.rounds + 4) * 2)
        trainer = Trainer(recipe, recipe.pretrain, Path(tmp) / "run", shards, phase="pretrain")
        bare = BareLoop(trainer, shards, cfg.rows, cfg.seq_len)
        trainer.fit(until_tokens=trainer.tokens + cfg.rows * cfg.seq_len * WARMUP_STEPS, final_save=False)
        for _ in range(WARMUP_STEPS):
            bare.train_step()
        seconds: dict[str, list[float]] = {"trainer": [], "bare": []}
        cpu: dict[str, list[float]] = {"trainer": [], "bare": []}
        for r in range(cfg.rounds):
            for side in ("trainer", "bare") if r % 2 == 0 else ("bare", "trainer"):
                start, start_cpu = time.perf_counter(), time.process_time()
                if side == "trainer":
                    trainer.fit(until_tokens=trainer.tokens + tokens, final_save=False)
                else:
                    for _ in range(cfg.steps):
                        bare.train_step()
                seconds[side].append(time.perf_counter() - start)
                cpu[side].append(time.process_time() - start_cpu)
        pairs = zip(trainer.model.state_dict().values(), bare.model.state_dict().values(), strict=True)
        same = all(torch.equal(a, b) for a, b in pairs)
        steps = (trainer.step, bare.step, trainer.spike["events"])
        trainer.close()
    if not same or steps[0] != steps[1] or steps[2]:
        raise RuntimeError(f"not equal work: weights identical {same}, steps (trainer, bare, spikes) {steps}")
    ratios = [t / b for t, b in zip(seconds["trainer"], seconds["bare"])]
    ratio = statistics.median(ratios)
    cpu_ratios = [t / b for t, b in zip(cpu["trainer"], cpu["bare"])]
    return {
        "preset": cfg.preset, "rows": cfg.rows, "seq_len": cfg.seq_len, "steps_per_round": cfg.steps,
        "rounds": cfg.rounds, "threads": cfg.threads, "weights_identical": same,
        "trainer_tokens_per_s": tokens / statistics.median(seconds["trainer"]),
        "bare_tokens_per_s": tokens / statistics.median(seconds["bare"]),
        "time_ratio": ratio, "time_ratio_min": min(ratios), "time_ratio_max": max(ratios),
        "overhead": ratio - 1, "cpu_time_ratio": statistics.median(cpu_ratios),
        "cpu_time_ratio_min": min(cpu_ratios), "cpu_time_ratio_max": max(cpu_ratios), "seconds": seconds,
        "cpu_seconds": cpu,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    cfg = tools_config.parse(OverheadConfig, argv)
    result = run(cfg)
    print(json.dumps(result, indent=2))
    r = result
    print(
        f"trainer / bare loop time per round: median {r['time_ratio']:.3f} (min {r['time_ratio_min']:.3f}, "
        f"max {r['time_ratio_max']:.3f}) over {cfg.rounds} alternating rounds: overhead {r['overhead']:+.1%}; "
        f"CPU time: median {r['cpu_time_ratio']:.3f} (min {r['cpu_time_ratio_min']:.3f}, "
        f"max {r['cpu_time_ratio_max']:.3f})",
        file=sys.stderr,
    )
    if cfg.out:
        from tools import atomic
        from tools.paths import user_path

        atomic.write_json(user_path(cfg.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
