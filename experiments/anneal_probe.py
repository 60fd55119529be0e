"""The annealing data-quality probe (paper section 3.1.3) as an experiment.

    ./bazelw run //experiments:anneal_probe                                   # math as the candidate, CPU scale
    ./bazelw run //experiments:anneal_probe -- probe.candidate=code probe.fraction=0.5
    ./bazelw run //experiments:anneal_probe -- init_from=DIR shards=DIR       # probe a given checkpoint

The paper judges a candidate data set by annealing a half-trained model on 30% candidate data + 70% of the default
mix with the LR going linearly to 0, and comparing its evaluations with the same anneal on the default mix alone.

Stages: curate -> tokenizer -> shards (experiments/stages.py; skipped when `shards` names a shard set), a short
`pretrain` (skipped when `init_from` names a checkpoint: a training workdir, a checkpoint directory or an exported
model), then `probe`: training.anneal.probe on the recipe's anneal settings, whose default mix is the
pre-training mix (`probe.default_mix=pretrain`, the paper's probe; `anneal` keeps the recipe's annealing mix) and
whose candidate is `probe.candidate`, a category of `probe.candidate_shards` (default: the run's own shards). It
writes `probe.json` (the metrics of both anneals and their delta, enriched - default) and `report.md`. The
evaluation is the validation loss of every mix key (the candidate included), or `probe.eval`
(module:function(model, tokenizer) -> {metric: value}, e.g. experiments.answer_nll:probe_metrics for GSM8K
solution NLL and multiple-choice accuracy).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from data.shards import PAPER_MIX
from experiments.config import ExperimentConfig
from experiments.dag import Stage, StageContext
from experiments.stages import CorpusConfig, TokenizerConfig, curate, shard_dirs, shards, tokenizer
from tools import atomic
from tools.paths import user_path
from tools.tables import markdown_table


@dataclass
class CandidateConfig:
    candidate: str = "math"  # category of the candidate shard set ("": all of its categories)
    candidate_shards: str = ""  # a data.shards set ("": this run's own shards)
    fraction: float = 0.3  # share of the candidate in the probe's anneal (paper: 30%)
    eval: str = ""  # module:function(model, tokenizer) -> {metric: value}; "": validation loss per mix key
    # The probe's default mix: "pretrain" (the paper: the candidate replaces 30% of the pre-training mix) or
    # "anneal" (the recipe's high-quality annealing mix).
    default_mix: str = "pretrain"


@dataclass
class Config(ExperimentConfig):
    data: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    recipe: str = "llama3_tiny"  # training/configs/<recipe>.yaml: the pre-training and the anneal
    recipe_overrides: list[str] = field(default_factory=list)
    shards: str = ""  # an existing shard set to use instead of the data stages (with its tokenizer beside it)
    init_from: str = ""  # a checkpoint to probe instead of pre-training one (made with the shards' tokenizer)
    probe: CandidateConfig = field(default_factory=CandidateConfig)


def recipe_of(cfg: Config, candidate_shards: str = ""):
    """The training recipe with the probe's settings; `recipe_overrides` come last."""
    from training.config import load_recipe

    p = cfg.probe
    probe = [f"seed={cfg.seed}", f"probe.fraction={p.fraction}"]
    for key, value in (("candidate_shards", candidate_shards), ("candidate_category", p.candidate), ("eval", p.eval)):
        if value:
            probe.append(f"probe.{key}={value}")
    recipe = load_recipe(cfg.recipe, [*probe, *cfg.recipe_overrides])
    if p.default_mix not in ("pretrain", "anneal"):
        raise ValueError(f"probe.default_mix must be pretrain or anneal, got '{p.default_mix}'")
    if p.default_mix == "pretrain":
        a = recipe.anneal.train
        mix = dict(recipe.pretrain.data.mix or PAPER_MIX)
        recipe.anneal.train = dataclasses.replace(a, data=dataclasses.replace(a.data, mix=mix))
    return recipe


def shard_set(ctx: StageContext) -> Path:
    cfg: Config = ctx.config
    return user_path(cfg.shards) if cfg.shards else shard_dirs(ctx)["shards"]


def pretrain(ctx: StageContext) -> dict:
    from training import pretrain as phase

    summary = phase.run(recipe_of(ctx.config), ctx.workdir, shard_set(ctx))
    return {"tokens": summary["tokens"], "valid_loss": summary["valid_loss"]}


def probe(ctx: StageContext) -> dict:
    from training import anneal

    cfg: Config = ctx.config
    shards_dir = shard_set(ctx)
    candidate = user_path(cfg.probe.candidate_shards) if cfg.probe.candidate_shards else shards_dir
    start = user_path(cfg.init_from) if cfg.init_from else ctx.input("pretrain")
    result = anneal.probe(recipe_of(cfg, str(candidate)), ctx.workdir, shards_dir, init_from=start)
    atomic.write_text(ctx.workdir / "report.md", report(result, cfg))
    return {"delta": result["delta"], "fraction": result["fraction"], "candidate": result["candidate"]}


def report(result: dict, cfg: Config) -> str:
    lines = [f"# Annealing data-quality probe: {result['candidate']} at {result['fraction']:.0%}", "",
             f"Both anneals start from the same checkpoint and train {cfg.recipe}'s anneal (LR linearly to 0); the "
             f"enriched one draws {result['fraction']:.0%} of its tokens from the candidate and the rest from the "
             "default mix. Negative deltas of a loss mean the candidate helped.", ""]  # fmt: skip
    rows = [[key, f"{result['default'][key]:.4f}", f"{result['enriched'][key]:.4f}", f"{delta:+.4f}"]
            for key, delta in sorted(result["delta"].items())]  # fmt: skip
    lines.append(markdown_table(["metric", "default mix", "enriched", "delta"], rows, "lrrr"))
    return "\n".join(lines) + "\n"


def stages(cfg: Config) -> list[Stage]:
    out = []
    if not cfg.shards:
        out += [Stage("curate", curate), Stage("tokenizer", tokenizer, inputs=("curate",)),
                Stage("shards", shards, inputs=("curate", "tokenizer"))]  # fmt: skip
    data = () if cfg.shards else ("shards",)
    if not cfg.init_from:
        out.append(Stage("pretrain", pretrain, inputs=data))
    out.append(Stage("probe", probe, inputs=data + (() if cfg.init_from else ("pretrain",))))
    return out


def dry_run(cfg: Config) -> str:
    recipe = recipe_of(cfg, cfg.probe.candidate_shards)
    a = recipe.anneal.train
    default = a.data.mix
    enriched = {k: round(v * (1 - cfg.probe.fraction) / sum(default.values()), 4) for k, v in default.items()}
    return "\n".join([
        f"{cfg.name}: the annealing data-quality probe (paper 3.1.3)",
        "stages: " + " -> ".join(s.name for s in stages(cfg)),
        f"start: {cfg.init_from or f'a pre-training of {recipe.pretrain.tokens:,} tokens ({cfg.recipe})'}",
        f"anneal: {a.tokens:,} tokens, LR {a.optim.lr:g} {a.lr.schedule} to {a.lr.final_lr:g}, twice:",
        f"  default mix  {default}",
        f"  enriched     {enriched} + candidate {cfg.probe.fraction} "
        f"({cfg.probe.candidate or 'all categories'} of {cfg.probe.candidate_shards or 'this run'})",
        f"eval: {cfg.probe.eval or 'validation loss of every mix key'}",
    ])  # fmt: skip
