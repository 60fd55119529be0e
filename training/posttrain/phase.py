"""One post-training run (SFT, reward model or DPO) on the open training loop, single process.

    summary = fit(model, items, collate, loss_fn, PhaseConfig(lr=1e-5, steps=100, per_step=32), workdir, "sft")

`items` are packed rows (sft.pack_dialogs), ranked groups (reward.encode_ranked) or pairs (dpo.encode_pair);
DialogBatches serves `per_step` of them a step. The run is `steps` steps long: the loop counts tokens, so the
target is the tokens of exactly those steps (the batch order is a function of the seed). AdamW, warm-up then
the schedule, checkpoints in workdir/checkpoints, exact resume, metrics in workdir/metrics.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from training import distributed as D
from training.config import CheckpointConfig, LRConfig, MonitorConfig, OptimConfig, ParallelConfig, TrainConfig
from training.loop import LossFn, TrainLoop
from training.monitor import Monitor
from training.posttrain.sft import DialogBatches
from training.schedule import lr_at
from training.trainer import optimizer


@dataclass
class PhaseConfig:
    lr: float = 1e-5  # peak
    steps: int = 100
    per_step: int = 32  # items a step: packed rows (SFT), prompts (reward model), pairs (DPO)
    micro: int = 0  # items per micro-batch (0: the whole step at once)
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | linear | constant after the warm-up
    final_lr: float = 0.0
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    checkpoint_every: int = 50  # steps
    seed: int = 0  # of the data order


def step_tokens(items, per_step: int, steps: int, seed: int) -> int:
    """Tokens of the first `steps` steps of a DialogBatches over `items` (the loop's target for `steps` steps)."""
    probe = DialogBatches(items, lambda chunk: None, per_step, seed=seed)
    return sum(probe.next_batch(s, 0).tokens for s in range(steps))


def fit(
    model: nn.Module,
    items: list,
    collate,
    loss_fn: LossFn,
    cfg: PhaseConfig,
    workdir: str | Path,
    phase: str,
    monitor: MonitorConfig | None = None,
    validate=None,
    valid_every: int = 0,
) -> dict:
    """Train `model` in place for cfg.steps steps (resuming from workdir/checkpoints); the loop's summary.
    `validate()` is called every `valid_every` steps (0: never)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    info = D.DistInfo()
    mon_cfg = monitor or MonitorConfig(wandb=False, progress=False)
    train_cfg = TrainConfig(
        optim=OptimConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip),
        checkpoint=CheckpointConfig(every_steps=cfg.checkpoint_every, keep_last=1),
        valid_every=valid_every,
    )
    sched = LRConfig(schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, final_lr=cfg.final_lr)
    loop = TrainLoop(
        model,
        DialogBatches(items, collate, cfg.per_step, cfg.micro, cfg.seed, info),
        loss_fn,
        optimizer(model, train_cfg.optim),
        lambda step: lr_at(step, cfg.lr, sched, cfg.steps),
        train_cfg,
        phase=phase,
        workdir=workdir,
        info=info,
        parallel=ParallelConfig(),
        monitor=Monitor(workdir, mon_cfg, True, phase),
        log_every=mon_cfg.log_every,
        validate=validate,
    )
    loop.resume()
    try:
        return loop.fit(step_tokens(items, cfg.per_step, cfg.steps, cfg.seed))
    finally:
        loop.monitor.close()
