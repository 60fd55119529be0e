"""The trainer core: one training phase in a work directory, resumable at any step.

A step takes the batch of its token-triggered stage, splits this rank's rows into micro-batches, and
accumulates gradients of the summed loss scaled by world_size / (target tokens of the whole step, all ranks):
DDP and FSDP2 average gradients over ranks, so the update equals that of one big batch whatever the
micro-batch and rank counts. Then clipping, a loss-spike check (skip the update, or roll back to the last
checkpoint and move on past the data), and AdamW with the schedule's LR.

Everything the next step depends on (weights, optimizer, step, tokens, data position, spike statistics,
RNG) is in the checkpoint, so a resumed run repeats the uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch

from data.shards import ShardSet
from model.llama import ModelArgs, build
from model.presets import preset
from training import checkpoint as ckpt
from training import distributed as D
from training.config import DataConfig, Recipe, TrainConfig
from training.data import IGNORE, PackedLoader
from training.losses import LossModule
from training.monitor import Monitor, flops_per_token, memory_gb, peak_flops
from training.preemption import Preemption, describe
from training.schedule import check_stages, lr_at, stage_at, steps_for

log = logging.getLogger(__name__)
PREEMPTED_CLOSE_S = 10.0  # wandb's finish after a preemption save (Slurm's KillWait, 30 s by default, follows)
FULL_INIT_MAX_PARAMS = 2e9  # below this the whole model is initialised before sharding (same init at any world size)


class SpikeError(RuntimeError):
    """Too many loss spikes in a row."""


def model_args(recipe: Recipe, shards_dir: str | Path, **changes) -> ModelArgs:
    """The recipe's preset with its overrides; vocab_size from the shards' tokenizer unless overridden."""
    over = dict(recipe.model.overrides)
    if "vocab_size" not in over:
        vocab = ShardSet(shards_dir).tokenizer.get("vocab_size")
        if vocab:
            over["vocab_size"] = int(vocab)
    return dataclasses.replace(preset(recipe.model.preset, **over), **changes)


def optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norms and embeddings exempt unless configured)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exempt = p.ndim < 2 or "tok_embeddings" in name
        (no_decay if exempt and not cfg.decay_norms_and_embeddings else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # torch picks the multi-tensor (foreach) implementation by itself on GPU only; on CPU it is faster too.
    on_cpu = all(p.device.type == "cpu" for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, foreach=True if on_cpu else None)


def find_checkpoint(path: Path, warn=log.warning) -> Path | None:
    """A complete checkpoint at `path`: itself, or the newest under path/ or path/checkpoints/."""
    path = Path(path)
    if (path / ckpt.MARKER).is_file():
        ckpt.verify(path)
        return path
    for root in (path / "checkpoints", path):
        found = ckpt.latest_complete(root, warn=warn)
        if found:
            return found[0]
    return None


def checkpoint_args(path: str | Path) -> ModelArgs:
    """The model arguments a phase was trained with: from its newest checkpoint, or an exported params.json."""
    path = Path(path)
    if (path / "params.json").is_file():
        from model.checkpoint import args_from_params, read_params

        return args_from_params(read_params(path / "params.json"), str(path / "params.json"))
    found = find_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path}: no complete checkpoint and no params.json")
    return ModelArgs(**json.loads((found / "trainer.json").read_text())["args"])


class Trainer:
    """One phase: `Trainer(recipe, cfg, workdir, shards_dir, phase=...)` then `fit()`.

    Resumes from the newest complete checkpoint in workdir/checkpoints; otherwise starts from `init_from`
    (a checkpoint or a phase's workdir: weights, optimizer state and data cursors; or an exported model
    directory: weights only), otherwise from a fresh initialisation.
    """

    def __init__(
        self,
        recipe: Recipe,
        cfg: TrainConfig,
        workdir: str | Path,
        shards_dir: str | Path,
        *,
        phase: str,
        init_from: str | Path | None = None,
        args: ModelArgs | None = None,
        info: D.DistInfo | None = None,
        monitor: Monitor | None = None,
    ):
        self.recipe, self.cfg, self.phase = recipe, cfg, phase
        self.workdir, self.shards_dir = Path(workdir), Path(shards_dir)
        check_stages(cfg.batch, f"{phase}.batch")
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        self.info = info or D.init(recipe.device, recipe.parallel.backend)
        if self.info.main:
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.info.barrier()
        max_seq = max(s.seq_len for s in cfg.batch)
        self.args = args or model_args(recipe, shards_dir)
        if self.args.max_seq_len < max_seq:
            self.args = dataclasses.replace(self.args, max_seq_len=max_seq)
        self.model = self._build()
        self.loss_module = LossModule(self.model, cfg.loss)
        self.module = D.wrap_ddp(self.loss_module, recipe.parallel, self.info)
        self.optimizer = optimizer(self.model, cfg.optim)
        self.loader = PackedLoader(shards_dir, cfg.data)
        self.checkpointer = ckpt.Checkpointer(
            self.workdir / "checkpoints", self.info, cfg.checkpoint.keep_last, cfg.checkpoint.checksum
        )
        self.monitor = monitor or Monitor(self.workdir, recipe.monitor, self.info.main, phase)
        self.preemption = Preemption()
        self.step, self.tokens = 0, 0
        self.spike = {"mean": None, "run": 0, "events": 0}
        self.last_step = steps_for(cfg.batch, cfg.tokens) if cfg.tokens else 0
        self.last_saved_step = -1
        self.peak = peak_flops(self.info.device, recipe.monitor.peak_flops)
        self._flops: dict[int, float] = {}
        self._valid: dict[str, tuple | None] = {}
        self.resumed_from = self._resume(init_from)
        for name in self.loader.skipped:
            self.monitor.event("skipped_category", step=self.step, category=name, reason="no shards for the split")

    # ---- construction ----
    def _build(self) -> torch.nn.Module:
        pcfg, info = self.recipe.parallel, self.info
        init = pcfg.init
        if init == "auto":
            from model.accounting import param_count

            init = "full" if param_count(self.args) < FULL_INIT_MAX_PARAMS else "meta"
        if init == "full":
            model = build(self.args, device=info.device, seed=self.recipe.seed)
            return D.parallelize(model, pcfg, info)
        if init != "meta":
            raise ValueError(f"parallel.init must be auto, full or meta, got '{init}'")
        model = D.parallelize(build(self.args, device="meta"), pcfg, info)
        model.to_empty(device=info.device)
        torch.manual_seed(self.recipe.seed)
        with torch.no_grad():
            model.init_weights()
        return model

    def _resume(self, init_from) -> str | None:
        warn = self._warn_torn
        found = ckpt.latest_complete(self.checkpointer.root, self.cfg.checkpoint.checksum, warn=warn)
        if found:
            path, _ = found
            self._load(path)
            self.monitor.truncate(self.step)
            self.monitor.event("resume", step=self.step, tokens=self.tokens, checkpoint=str(path), pid=_pid())
            return str(path)
        self.monitor.event("start", step=0, pid=_pid(), world=self.info.world, params=_count(self.model))
        if init_from is None:
            return None
        init_from = Path(init_from)
        if (init_from / "params.json").is_file() and (init_from / "model.safetensors").is_file():
            self._load_exported(init_from)
        else:
            path = find_checkpoint(init_from, warn=warn)
            if path is None:
                raise FileNotFoundError(f"init_from {init_from}: no complete checkpoint and no exported model there")
            state = self.checkpointer.load(path, self.model, self.optimizer, rng=False)
            self.loader.load_state_dict(state["loader"], reset_mix=True)
        self.monitor.event("init_from", step=0, source=str(init_from))
        return str(init_from)

    def _load_exported(self, path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        from model.checkpoint import WEIGHTS_FILE, read_safetensors

        sd = read_safetensors([path / WEIGHTS_FILE], self.args)  # names and shapes checked against this model
        set_model_state_dict(self.model, sd, options=StateDictOptions(full_state_dict=True))

    def _load(self, path: Path) -> None:
        state = self.checkpointer.load(path, self.model, self.optimizer)
        self.step, self.tokens = state["step"], state["tokens"]
        self.loader.load_state_dict(state["loader"])
        self.spike = state["spike"]
        self.last_saved_step = self.step

    def _warn_torn(self, message: str) -> None:
        log.warning(message)
        self.monitor.event("torn_checkpoint", step=self.step, message=message)

    # ---- checkpoints ----
    def state(self) -> dict:
        return {
            "phase": self.phase,
            "step": self.step,
            "tokens": self.tokens,
            "loader": self.loader.state_dict(),
            "spike": self.spike,
            "args": dataclasses.asdict(self.args),
        }

    def save(self, milestone: bool = False) -> Path:
        path = self.checkpointer.save(self.step, self.model, self.optimizer, self.state(), milestone)
        self.last_saved_step, self._last_save_time = self.step, time.time()
        self.monitor.event("checkpoint", step=self.step, tokens=self.tokens, path=path.name, milestone=milestone)
        return path

    def _save_due(self) -> bool:
        c = self.cfg.checkpoint
        if c.every_steps and self.step % c.every_steps == 0:
            return True
        return bool(c.every_seconds) and time.time() - self._last_save_time >= c.every_seconds

    # ---- one step ----
    def train_step(self) -> dict:
        stage = stage_at(self.cfg.batch, self.tokens)
        rows, seq_len = stage.batch_tokens // stage.seq_len, stage.seq_len
        start = time.perf_counter()
        batch = self.loader.next_batch(rows, seq_len, self.info.rank, self.info.world)
        local = rows // self.info.world
        micro = self.cfg.micro_batch_rows or local
        if local % micro:
            raise ValueError(f"{self.phase}: {local} rows per rank are not a multiple of micro_batch_rows {micro}")
        n_targets = float(self.info.sum(batch.n_targets))
        scale = self.info.world / max(n_targets, 1.0)
        self.model.train()
        dev = self.info.device
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)  # on the device: no sync per micro-batch
        for i in range(0, local, micro):
            mb = batch.rows(i, i + micro)
            with (
                D.no_sync(self.module, self.model, sync=i + micro >= local),
                D.autocast(self.info, self.recipe.parallel),
            ):
                s = self.module(mb.tokens.to(dev), mb.doc_ids.to(dev), mb.targets.to(dev))
                (s * scale).backward()
            loss_sum += s.detach().double()
        loss = float(self.info.sum(loss_sum)) / max(n_targets, 1.0)  # the step's one host sync for the loss
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        lr = lr_at(self.step, self.cfg.optim.lr, self.cfg.lr, self.last_step)
        record = {
            "step": self.step,
            "tokens": self.tokens + stage.batch_tokens,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "seq_len": seq_len,
            "batch_tokens": stage.batch_tokens,
            "targets": int(n_targets),
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
        self.tokens += stage.batch_tokens
        record["step"] = self.step  # steps done, as in checkpoint names (the first step logs 1)
        seconds = time.perf_counter() - start
        tps = stage.batch_tokens / seconds
        record.update(
            tokens_per_s=tps,
            mfu=tps * self._flops_per_token(seq_len) / (self.info.world * self.peak),
            mem_gb=memory_gb(self.info.device),
            seconds=seconds,
        )
        return record

    def _flops_per_token(self, seq_len: int) -> float:
        if seq_len not in self._flops:
            self._flops[seq_len] = flops_per_token(self.args, seq_len)
        return self._flops[seq_len]

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
            found = ckpt.latest_complete(self.checkpointer.root, self.cfg.checkpoint.checksum, warn=self._warn_torn)
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
        loader_state, spike = self.loader.state_dict(), dict(self.spike)
        self._load(found[0])
        self.loader.load_state_dict(loader_state)
        self.spike.update(run=spike["run"], events=spike["events"])
        self.monitor.truncate(self.step)
        self.monitor.event("rollback", to_step=self.step, checkpoint=found[0].name, **info)

    # ---- validation ----
    def _valid_loader(self, data: DataConfig) -> PackedLoader | None:
        """A loader at the start of the validation split (opened once per data config, then rewound)."""
        key = repr(data)
        if key not in self._valid:
            try:
                loader = PackedLoader(self.shards_dir, dataclasses.replace(data, strict=False),
                                      split=data.valid_split, seed=data.seed + 1)  # fmt: skip
                self._valid[key] = (loader, loader.state_dict())
            except ValueError:
                self._valid[key] = None
        if self._valid[key] is None:
            return None
        loader, start = self._valid[key]
        loader.load_state_dict(start)
        return loader

    @torch.no_grad()
    def validate(self, seq_len: int | None = None, event: bool = True, data: DataConfig | None = None) -> float | None:
        """Mean loss per target token over the first `valid_batches` batches of the validation split (of the
        phase's mix, or of `data`); None when the shards have no validation split."""
        seq_len = seq_len or stage_at(self.cfg.batch, self.tokens).seq_len
        loader = self._valid_loader(data or self.cfg.data)
        if loader is None:
            return None
        rows = max(self.cfg.valid_rows // self.info.world, 1) * self.info.world
        self.model.eval()
        total, count = 0.0, 0.0
        for _ in range(self.cfg.valid_batches):
            b = loader.next_batch(rows, seq_len, self.info.rank, self.info.world)
            dev = self.info.device
            with D.autocast(self.info, self.recipe.parallel):
                total += float(self.loss_module(b.tokens.to(dev), b.doc_ids.to(dev), b.targets.to(dev)))
            count += int((b.targets != IGNORE).sum())
        self.model.train()
        loss = float(self.info.sum(total)) / max(float(self.info.sum(count)), 1.0)
        if event:
            self.monitor.event("valid", step=self.step, tokens=self.tokens, seq_len=seq_len, loss=loss)
        return loss

    # ---- the loop ----
    def fit(self, until_tokens: int | None = None, final_save: bool = True) -> dict:
        """Train until `until_tokens` (default: the phase's cfg.tokens); save a milestone checkpoint at the end
        (unless `final_save` is False, which leaves saving to the caller)."""
        target = until_tokens or self.cfg.tokens
        if target <= 0:
            raise ValueError(f"{self.phase}: tokens to train must be positive (set {self.phase} tokens)")
        self._last_save_time = time.time()
        self.preemption.install()
        self.monitor.start_progress(target, self.tokens, self.phase)
        started, start_tokens = time.time(), self.tokens
        last_loss, mfu_sum, n_trained = None, 0.0, 0  # over steps that trained (not skipped as spikes)
        try:
            while self.tokens < target:
                record = self.train_step()
                if "tokens_per_s" in record:
                    last_loss, mfu_sum, n_trained = record["loss"], mfu_sum + record["mfu"], n_trained + 1
                self.monitor.advance(record["batch_tokens"])
                if self.step % self.recipe.monitor.log_every == 0 and "tokens_per_s" in record:
                    self.monitor.step(record)
                if self.cfg.valid_every and self.step % self.cfg.valid_every == 0:
                    self.validate()
                if self._save_due() and self.step != self.last_saved_step:
                    self.save(self._milestone_due())
                signum = self.preemption.requested(self.info)
                if signum:  # save first: the loggers may already be gone (Slurm signals the whole job step)
                    if self.step != self.last_saved_step:
                        self.save()
                    self.monitor.event("preempted", step=self.step, signal=signum, name=describe(signum), pid=_pid())
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
            "mfu": mfu_sum / n_trained if n_trained else None,
            "seconds": seconds,
            "checkpoint": str(path) if path else None,
            "spikes": self.spike["events"],
            "skipped_categories": self.loader.skipped,
            "resumed_from": self.resumed_from,
        }

    def _milestone_due(self) -> bool:
        every = self.cfg.checkpoint.milestone_every
        return bool(every) and self.step % every == 0

    def close(self) -> None:
        self.monitor.close()


def _pid() -> int:
    import os

    return os.getpid()


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())
