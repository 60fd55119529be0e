"""Annealing (paper section 3.4.3) and the annealing data-quality probe (section 3.1.3).

    summary = training.anneal.run(recipe, workdir, shards_dir, init_from=<long-context workdir or stage>)
    report = training.anneal.probe(recipe, workdir, shards_dir, init_from=<checkpoint or workdir>)

The anneal trains its own data mix (high-quality sources upsampled) with the LR going linearly to 0, saves
`average` milestone checkpoints evenly along the way (the last at the end), and the final model is their
average (Polyak averaging), exported to workdir/model. The probe anneals the same start twice, on the
default mix and on `fraction` candidate data + (1 - fraction) default mix, and reports the evaluation delta.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

from tools import atomic
from training import distributed as D
from training.checkpoint import single_process_ok
from training.config import DataConfig, Recipe
from training.data import mix_of
from training.export import load_tokenizer
from training.losses import import_function
from training.pretrain import finish
from training.schedule import steps_for, tokens_after
from training.trainer import Trainer, checkpoint_args


def average_points(total_steps: int, k: int) -> list[int]:
    """k steps spread evenly over the anneal, the last one at its end."""
    if k < 1:
        raise ValueError(f"anneal.average must be at least 1, got {k}")
    return sorted({max(1, round(total_steps * j / k)) for j in range(1, k + 1)})


@torch.no_grad()
def mean_state_dict(states: Iterable[tuple[str, Mapping[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """The elementwise mean of state dicts given one at a time as (source name, state dict), so only one is held
    next to the running sum. Sums are float64 (the mean of k fp32 or bf16 weights is then rounded once, at the
    end); the result keeps the first state's dtypes. Every state must have the first's keys and shapes: an error
    names the source and the key. Works on DTensor shards (shapes are global)."""
    total: dict[str, torch.Tensor] = {}
    dtypes, first, n = {}, "", 0
    for source, state in states:
        if n == 0:
            first = source
            dtypes = {k: v.dtype for k, v in state.items()}
            total = {k: v.to(torch.float64, copy=True) for k, v in state.items()}
        else:
            missing, extra = sorted(total.keys() - state.keys()), sorted(state.keys() - total.keys())
            if missing or extra:
                key, what = (missing[0], "lacks") if missing else (extra[0], "has an extra")
                raise ValueError(f"{source}: {what} tensor '{key}' compared with {first} (cannot average)")
            for k, v in state.items():
                if v.shape != total[k].shape:
                    raise ValueError(f"{source}: '{k}' has shape {list(v.shape)}, {first} has {list(total[k].shape)}")
                total[k] += v.double()
        n += 1
    if n == 0:
        raise ValueError("no models to average")
    return {k: (v / n).to(dtypes[k]) for k, v in total.items()}


@torch.no_grad()
def average_checkpoints(model: torch.nn.Module, paths: list[Path]) -> None:
    """Set `model`'s weights to the mean of the training checkpoints' weights (works on shards)."""
    live = get_model_state_dict(model)

    def states():
        for path in paths:
            state = {"model": {k: torch.empty_like(v) for k, v in live.items()}}
            with single_process_ok():
                dcp.load(state, checkpoint_id=path, no_dist=not dist.is_initialized())
            yield str(path), state["model"]

    set_model_state_dict(model, mean_state_dict(states()))


def run(
    recipe: Recipe,
    workdir: str | Path,
    shards_dir: str | Path,
    *,
    init_from: str | Path,
    data: DataConfig | None = None,
    evaluate: Callable[[Trainer], dict] | None = None,
    info: D.DistInfo | None = None,
) -> dict:
    """Anneal from `init_from`; `data` replaces the anneal's data mix; `evaluate(trainer)` runs on the averaged
    model and its result is the summary's "eval". A given process group (`info`) is left open."""
    workdir = Path(workdir)
    cfg = recipe.anneal.train
    if data is not None:
        cfg = dataclasses.replace(cfg, data=data)
    init_from = Path(init_from)
    final = init_from / "summary.json"  # a long-context workdir: start from its last stage
    if final.is_file() and not (init_from / "checkpoints").is_dir():
        init_from = init_from / json.loads(final.read_text())["final_stage"]
    args = checkpoint_args(init_from)
    args = dataclasses.replace(args, max_seq_len=max(args.max_seq_len, max(s.seq_len for s in cfg.batch)))
    owns = info is None
    trainer = Trainer(recipe, cfg, workdir, shards_dir, phase="anneal", init_from=init_from, args=args, info=info)
    try:
        points = average_points(steps_for(cfg.batch, cfg.tokens), recipe.anneal.average)
        for step in points:
            summary = trainer.fit(until_tokens=tokens_after(cfg.batch, step))
        summary["last_valid_loss"] = trainer.validate(event=False)
        paths = [trainer.checkpointer.path(s) for s in points]
        average_checkpoints(trainer.model, paths)
        summary["averaged"] = [p.name for p in paths]
        if evaluate is not None:
            summary["eval"] = evaluate(trainer)
        return finish(trainer, summary, workdir, shards_dir, recipe, "anneal")
    finally:
        trainer.close()
        if owns:
            trainer.info.close()


def valid_losses(trainer: Trainer, data: DataConfig) -> dict[str, float]:
    """Validation loss of each mix key on its own (the probe's default evaluation)."""
    out = {}
    for name in mix_of(data):
        single = dataclasses.replace(data, mix={name: 1.0}, strict=False)
        loss = trainer.validate(data=single, event=False)
        if loss is not None:  # None: no validation split for this key
            out[f"valid_loss/{name}"] = loss
    return out


def probe(recipe: Recipe, workdir: str | Path, shards_dir: str | Path, *, init_from: str | Path) -> dict:
    """Anneal on the default mix and on the candidate-enriched mix; report metric deltas (candidate - default)."""
    p, workdir = recipe.probe, Path(workdir)
    if not p.candidate_shards:
        raise ValueError("probe.candidate_shards is not set")
    if not 0 < p.fraction < 1:
        raise ValueError(f"probe.fraction must be in (0, 1), got {p.fraction}")
    default = recipe.anneal.train.data
    base_mix = mix_of(default)
    mix = {k: v * (1 - p.fraction) / sum(base_mix.values()) for k, v in base_mix.items()}
    mix["candidate"] = p.fraction
    source = p.candidate_shards + (f"#{p.candidate_category}" if p.candidate_category else "")
    enriched = dataclasses.replace(default, mix=mix, sources={**default.sources, "candidate": source}, strict=True)
    report_data = enriched  # both runs are scored on the same keys, candidate included
    if p.eval:
        fn = import_function(p.eval)
        tokenizer = load_tokenizer(recipe.tokenizer, shards_dir)

        def evaluate(trainer: Trainer) -> dict:
            return dict(fn(trainer.model, tokenizer))
    else:

        def evaluate(trainer: Trainer) -> dict:
            return valid_losses(trainer, report_data)

    runs, info = {}, D.init(recipe.device, recipe.parallel.backend)
    try:
        for name, data in (("default", default), ("candidate", enriched)):
            runs[name] = run(recipe, workdir / name, shards_dir, init_from=init_from, data=data, evaluate=evaluate,
                             info=info)  # fmt: skip
    finally:
        info.close()
    base, cand = runs["default"]["eval"], runs["candidate"]["eval"]
    report = {
        "fraction": p.fraction,
        "candidate": source,
        "default": base,
        "enriched": cand,
        "delta": {k: cand[k] - base[k] for k in base if k in cand},
        "runs": {k: {"model": v["model"], "valid_loss": v["valid_loss"]} for k, v in runs.items()},
    }
    if info.main:
        atomic.write_json(workdir / "probe.json", report)
    return report
