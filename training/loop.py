"""The open training loop: any model, any batches, any loss; resumable at any step.

The loop takes a model (already parallelised), an optimizer, a schedule (step -> LR), a source of batches and a
loss `loss_fn(model, micro_batch) -> (loss_sum, count)`: the loss summed over the micro-batch's units (target
tokens for language modelling, pairs for DPO) and how many units there are. Pre-training, long-context and anneal
(training/trainer.py) and the post-training stages are builders over it.

A step: the batch source hands this rank's micro-batches; each one's summed loss is backpropagated (gradient
reduction only after the last, DDP or FSDP2); then the gradients are scaled by world / (units of the whole step,
all ranks). DDP and FSDP2 average gradients over ranks, so the update is that of sum(loss) / sum(count) over one
big batch, whatever the micro-batch and rank counts. Then clipping, a loss-spike check (skip the update, or roll
back to the last checkpoint and move on past the data), and the optimizer step with the schedule's LR.

Everything the next step depends on (weights, optimizer, step, tokens, batch-source position, spike statistics,
RNG) is in the checkpoint, so a resumed run repeats the uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from training import checkpoint as ckpt
from training import distributed as D
from training.config import ParallelConfig, TrainConfig
from training.monitor import Monitor, memory_gb
from training.preemption import Preemption, describe

log = logging.getLogger(__name__)
PREEMPTED_CLOSE_S = 10.0  # wandb's finish after a preemption save (Slurm's KillWait, 30 s by default, follows)

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor | int | float]]


class SpikeError(RuntimeError):
    """Too many loss spikes in a row."""


@dataclass
class StepBatch:
    """One step's data on this rank."""

    micro: list[Any]  # this rank's micro-batches, in order
    tokens: int  # tokens the step consumes on all ranks together: the unit of phase lengths and progress
    fields: dict = field(default_factory=dict)  # extra columns of the step's metrics record, e.g. seq_len


class Batches(Protocol):
    """A resumable source of steps: its state_dict goes into every checkpoint."""

    def next_batch(self, step: int, tokens: int) -> StepBatch: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class Objective(nn.Module):
    """The model and its loss as one module, so that DDP's hooks see the whole forward."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


class TrainLoop:
    """`TrainLoop(model, batches, loss_fn, optimizer, lr_at, cfg, ...)`, then `resume()` and `fit(tokens)`.

    cfg supplies grad_clip (cfg.optim), spike, checkpoint and valid_every; `validate` (optional) is called every
    valid_every steps; `flops_per_token(step_batch)` (optional) gives the MFU column; `extra_state()` adds
    entries to each checkpoint's trainer state (e.g. the model arguments)."""

    def __init__(
        self,
        model: nn.Module,
        batches: Batches,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        lr_at: Callable[[int], float],
        cfg: TrainConfig,
        *,
        phase: str,
        workdir: str | Path,
        info: D.DistInfo,
        parallel: ParallelConfig,
        monitor: Monitor,
        log_every: int = 1,
        validate: Callable[[], Any] | None = None,
        flops_per_token: Callable[[StepBatch], float] | None = None,
        peak_flops: float = 0.0,
        extra_state: Callable[[], dict] | None = None,
    ):
        self.model, self.batches, self.optimizer, self.lr_at, self.cfg = model, batches, optimizer, lr_at, cfg
        self.phase, self.info, self.parallel, self.monitor = phase, info, parallel, monitor
        self.objective = D.wrap_ddp(Objective(model, loss_fn), parallel, info)
        self.log_every, self.validate = log_every, validate
        self.flops_per_token, self.peak, self.extra_state = flops_per_token, peak_flops, extra_state
        self.checkpointer = ckpt.Checkpointer(
            Path(workdir) / "checkpoints", info, cfg.checkpoint.keep_last, cfg.checkpoint.checksum
        )
        self.preemption = Preemption()
        self.step, self.tokens = 0, 0
        self.spike = {"mean": None, "run": 0, "events": 0}
        self.last_saved_step = -1
        self._last_save_time = time.time()

    # ---- checkpoints ----
    def state(self) -> dict:
        extra = self.extra_state() if self.extra_state else {}
        return {
            "phase": self.phase,
            "step": self.step,
            "tokens": self.tokens,
            "loader": self.batches.state_dict(),
            "spike": self.spike,
            **extra,
        }

    def save(self, milestone: bool = False) -> Path:
        path = self.checkpointer.save(self.step, self.model, self.optimizer, self.state(), milestone)
        self.last_saved_step, self._last_save_time = self.step, time.time()
        self.monitor.event("checkpoint", step=self.step, tokens=self.tokens, path=path.name, milestone=milestone)
        return path

    def load(self, path: Path) -> dict:
        """Weights, optimizer, RNG, counters and batch position from a checkpoint; returns its trainer state."""
        state = self.checkpointer.load(path, self.model, self.optimizer)
        self.step, self.tokens = state["step"], state["tokens"]
        self.batches.load_state_dict(state["loader"])
        self.spike = state["spike"]
        self.last_saved_step = self.step
        return state

    def latest(self) -> tuple[Path, int] | None:
        return ckpt.latest_complete(self.checkpointer.root, self.cfg.checkpoint.checksum, warn=self.warn_torn)

    def resume(self) -> Path | None:
        """Load the newest complete checkpoint of this phase, if any (else log the start of a fresh run)."""
        found = self.latest()
        if found is None:
            params = sum(p.numel() for p in self.model.parameters())
            self.monitor.event("start", step=0, pid=os.getpid(), world=self.info.world, params=params)
            return None
        self.load(found[0])
        self.monitor.truncate(self.step)
        self.monitor.event("resume", step=self.step, tokens=self.tokens, checkpoint=str(found[0]), pid=os.getpid())
        return found[0]

    def warn_torn(self, message: str) -> None:
        log.warning(message)
        self.monitor.event("torn_checkpoint", step=self.step, message=message)

    def _save_due(self) -> bool:
        c = self.cfg.checkpoint
        if c.every_steps and self.step % c.every_steps == 0:
            return True
        return bool(c.every_seconds) and time.time() - self._last_save_time >= c.every_seconds

    def _milestone_due(self) -> bool:
        every = self.cfg.checkpoint.milestone_every
        return bool(every) and self.step % every == 0

    # ---- one step ----
    def train_step(self) -> dict:
        start = time.perf_counter()
        batch = self.batches.next_batch(self.step, self.tokens)
        self.model.train()
        dev = self.info.device
        sums = torch.zeros(2, dtype=torch.float64, device=dev)  # loss, count: on the device, no sync per micro-batch
        for i, mb in enumerate(batch.micro):
            with (
                D.no_sync(self.objective, self.model, sync=i == len(batch.micro) - 1),
                D.autocast(self.info, self.parallel),
            ):
                s, count = self.objective(mb)
                s.backward()
            sums[0] += s.detach().double()
            sums[1] += count.detach().double() if torch.is_tensor(count) else float(count)
        loss_sum, n = (float(x) for x in self.info.sum(sums))  # the step's one host sync for the loss
        scale = self.info.world / max(n, 1.0)
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        loss = loss_sum / max(n, 1.0)
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        lr = self.lr_at(self.step)
        record = {
            "step": self.step,
            "tokens": self.tokens + batch.tokens,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            **batch.fields,
            "batch_tokens": batch.tokens,
            "targets": int(n),
        }
        if self._is_spike(loss):
            self.optimizer.zero_grad(set_to_none=True)
            self._handle_spike(loss, record)
            return record
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        m = self.spike["mean"]
        self.spike["mean"] = loss if m is None else self.cfg.spike.ema * m + (1 - self.cfg.spike.ema) * loss
        self.spike["run"] = 0
        self.step += 1
        self.tokens += batch.tokens
        record["step"] = self.step  # steps done, as in checkpoint names (the first step logs 1)
        seconds = time.perf_counter() - start
        tps = batch.tokens / seconds
        record.update(tokens_per_s=tps, seconds=seconds)
        if self.flops_per_token and self.peak:
            record["mfu"] = tps * self.flops_per_token(batch) / (self.info.world * self.peak)
        record["mem_gb"] = memory_gb(dev)
        return record

    def _is_spike(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        s = self.cfg.spike
        mean = self.spike["mean"]
        return s.factor > 0 and self.step >= s.warmup_steps and mean is not None and loss > s.factor * mean

    def _handle_spike(self, loss: float, record: dict) -> None:
        self.spike["run"] += 1
        self.spike["events"] += 1
        action = self.cfg.spike.action
        info = {"step": self.step, "loss": loss, "mean": self.spike["mean"], "in_a_row": self.spike["run"]}
        if self.spike["run"] > self.cfg.spike.max_events:
            self.monitor.event("spike_abort", **info)
            raise SpikeError(
                f"{self.phase}: {self.spike['run']} loss spikes in a row at step {self.step} "
                f"(loss {loss:.4f}, running mean {self.spike['mean']})"
            )
        found = None
        if action == "rollback":
            found = self.latest()
        elif action != "skip":
            raise ValueError(f"spike.action must be skip or rollback, got '{action}'")
        if found is None:
            # Skip: the batch is consumed, the update dropped; the step counts (the schedule moves on).
            self.step += 1
            self.tokens += record["batch_tokens"]
            self.monitor.event("spike", action="skip", **info)
            return
        # Roll back weights, optimizer, step and tokens; keep the data position (the batches in between
        # are skipped) and the spike counters.
        position, spike = self.batches.state_dict(), dict(self.spike)
        self.load(found[0])
        self.batches.load_state_dict(position)
        self.spike.update(run=spike["run"], events=spike["events"])
        self.monitor.truncate(self.step)
        self.monitor.event("rollback", to_step=self.step, checkpoint=found[0].name, **info)

    # ---- the loop ----
    def fit(self, target: int, final_save: bool = True) -> dict:
        """Train until `target` tokens; save a milestone checkpoint at the end (unless `final_save` is False,
        which leaves saving to the caller)."""
        if target <= 0:
            raise ValueError(f"{self.phase}: tokens to train must be positive (set {self.phase} tokens)")
        self._last_save_time = time.time()
        self.preemption.install()
        self.monitor.start_progress(target, self.tokens, self.phase)
        started, start_tokens = time.time(), self.tokens
        last_loss, mfu = None, []  # over steps that trained (not skipped as spikes)
        try:
            while self.tokens < target:
                record = self.train_step()
                trained = "tokens_per_s" in record
                if trained:
                    last_loss = record["loss"]
                    mfu += [record["mfu"]] if "mfu" in record else []
                self.monitor.advance(record["batch_tokens"])
                if self.step % self.log_every == 0 and trained:
                    self.monitor.step(record)
                if self.validate and self.cfg.valid_every and self.step % self.cfg.valid_every == 0:
                    self.validate()
                if self._save_due() and self.step != self.last_saved_step:
                    self.save(self._milestone_due())
                signum = self.preemption.requested(self.info)
                if signum:  # save first: the loggers may already be gone (Slurm signals the whole job step)
                    if self.step != self.last_saved_step:
                        self.save()
                    self.monitor.event("preempted", step=self.step, signal=signum, name=describe(signum),
                                       pid=os.getpid())  # fmt: skip
                    self.monitor.close(timeout=PREEMPTED_CLOSE_S)
                    self.preemption.finish(signum)
        finally:
            self.preemption.uninstall()
            self.monitor.stop_progress()
        if not final_save:
            path = None
        elif self.step != self.last_saved_step:
            path = self.save(milestone=True)
        else:
            path = self.checkpointer.path(self.step)
            self.checkpointer.mark_milestone(path)
        seconds = time.time() - started
        return {
            "phase": self.phase,
            "steps": self.step,
            "tokens": self.tokens,
            "loss": last_loss,
            "tokens_per_s": (self.tokens - start_tokens) / seconds if seconds > 0 else None,
            "mfu": sum(mfu) / len(mfu) if mfu else None,
            "seconds": seconds,
            "checkpoint": str(path) if path else None,
            "spikes": self.spike["events"],
        }
