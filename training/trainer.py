"""One pre-training phase (pretrain, a long-context stage, anneal) as a builder over the open loop.

The Trainer builds the model from the recipe (full or meta initialisation, parallelised), AdamW, the packed
mix loader cut into each step's batch-size stage and micro-batches, the next-token loss and the phase's LR
schedule, and hands them to training.loop.TrainLoop, which does the steps, spikes, checkpoints, exact resume,
preemption and monitoring. It adds what is particular to language-model phases: starting from another phase
(`init_from`) or an exported model, and the validation loss per category.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from data.shards import ShardSet
from model.llama import ModelArgs, build
from model.presets import preset
from training import checkpoint as ckpt
from training import distributed as D
from training.config import BatchStage, DataConfig, Recipe, TrainConfig
from training.data import IGNORE, PackedLoader
from training.loop import StepBatch, TrainLoop
from training.losses import NextTokenLoss
from training.monitor import Monitor, flops_per_token, peak_flops
from training.schedule import check_stages, lr_at, stage_at, steps_for

log = logging.getLogger(__name__)
FULL_INIT_MAX_PARAMS = 2e9  # below this the whole model is initialised before sharding (same init at any world size)


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


class PackedBatches:
    """The loop's batch source for a phase: each step's batch-size stage (by tokens trained) from the packed
    loader, this rank's rows cut into micro-batches of `micro_rows` (0: all at once)."""

    def __init__(self, loader: PackedLoader, stages: list[BatchStage], info: D.DistInfo, micro_rows: int, phase: str):
        self.loader, self.stages, self.info, self.micro_rows, self.phase = loader, stages, info, micro_rows, phase

    def next_batch(self, step: int, tokens: int) -> StepBatch:
        stage = stage_at(self.stages, tokens)
        rows, seq_len = stage.batch_tokens // stage.seq_len, stage.seq_len
        batch = self.loader.next_batch(rows, seq_len, self.info.rank, self.info.world)
        local = rows // self.info.world
        micro = self.micro_rows or local
        if local % micro:
            raise ValueError(f"{self.phase}: {local} rows per rank are not a multiple of micro_batch_rows {micro}")
        parts = [batch.rows(i, i + micro) for i in range(0, local, micro)]
        return StepBatch(parts, stage.batch_tokens, {"seq_len": seq_len})

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)


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
        self.loss_fn = NextTokenLoss(cfg.loss, self.info.device)
        self.loader = PackedLoader(shards_dir, cfg.data)
        self.monitor = monitor or Monitor(self.workdir, recipe.monitor, self.info.main, phase)
        self.last_step = steps_for(cfg.batch, cfg.tokens) if cfg.tokens else 0
        self._flops: dict[int, float] = {}
        self._valid: dict[str, tuple | None] = {}
        self.loop = TrainLoop(
            self.model,
            PackedBatches(self.loader, cfg.batch, self.info, cfg.micro_batch_rows, phase),
            self.loss_fn,
            optimizer(self.model, cfg.optim),
            lambda step: lr_at(step, cfg.optim.lr, cfg.lr, self.last_step),
            cfg,
            phase=phase,
            workdir=self.workdir,
            info=self.info,
            parallel=recipe.parallel,
            monitor=self.monitor,
            log_every=recipe.monitor.log_every,
            validate=self.validate,
            flops_per_token=lambda b: self._flops_per_token(b.fields["seq_len"]),
            peak_flops=peak_flops(self.info.device, recipe.monitor.peak_flops),
            extra_state=lambda: {"args": dataclasses.asdict(self.args)},
        )
        self.resumed_from = self._resume(init_from)
        for name in self.loader.skipped:
            self.monitor.event("skipped_category", step=self.step, category=name, reason="no shards for the split")

    # The loop's state, read (and in tests, set) through the trainer.
    step = property(lambda self: self.loop.step, lambda self, v: setattr(self.loop, "step", v))
    tokens = property(lambda self: self.loop.tokens, lambda self, v: setattr(self.loop, "tokens", v))
    spike = property(lambda self: self.loop.spike, lambda self, v: setattr(self.loop, "spike", v))
    optimizer = property(lambda self: self.loop.optimizer)
    checkpointer = property(lambda self: self.loop.checkpointer)
    preemption = property(lambda self: self.loop.preemption)
    last_saved_step = property(lambda self: self.loop.last_saved_step)

    def train_step(self) -> dict:
        return self.loop.train_step()

    def save(self, milestone: bool = False) -> Path:
        return self.loop.save(milestone)

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
        path = self.loop.resume()
        if path is not None:
            return str(path)
        if init_from is None:
            return None
        init_from = Path(init_from)
        if (init_from / "params.json").is_file() and (init_from / "model.safetensors").is_file():
            self._load_exported(init_from)
        else:
            path = find_checkpoint(init_from, warn=self.loop.warn_torn)
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

    def _flops_per_token(self, seq_len: int) -> float:
        if seq_len not in self._flops:
            self._flops[seq_len] = flops_per_token(self.args, seq_len)
        return self._flops[seq_len]

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
            with D.autocast(self.info, self.recipe.parallel):
                total += float(self.loss_fn(self.model, b)[0])
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
        result = self.loop.fit(until_tokens or self.cfg.tokens, final_save)
        return {**result, "skipped_categories": self.loader.skipped, "resumed_from": self.resumed_from}

    def close(self) -> None:
        self.monitor.close()
