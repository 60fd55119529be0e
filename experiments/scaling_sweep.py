"""The isoFLOP scaling-law sweep (paper section 3.2.1) and its fits, at CPU scale by default.

    ./bazelw run //experiments:scaling_sweep                       # 4 budgets of tiny models, a few CPU minutes
    ./bazelw run //experiments:scaling_sweep -- --dry-run          # the planned (model, tokens) points
    ./bazelw run //experiments:scaling_sweep -- sweep.budgets=[6e18,1e19,3e19,1e20] stage_slurm...  # a cluster

Stages: curate -> tokenizer -> shards (experiments/stages.py: the synthetic web corpus, a BPE, shards), then
one `train_<budget>` stage per compute budget, then `fit`.

- Planning: eval.scaling_plan.plan_isoflop picks, per budget, `models_per_budget` consecutive members of a Llama 3
  width/depth family around `tokens_per_param`, each trained for the steps that spend the budget.
- Each point is pre-trained with training.pretrain.run (warm-up, cosine to 0.1 x peak as in the paper) in
  `stages/train_<budget>/<run>/`, resuming from its checkpoints after a kill; its record holds the final
  validation loss (the pre-training mix's valid split) and, as the downstream signal, the NLL per byte of GSM8K's
  correct solutions with a multiple-choice accuracy (experiments/answer_nll.py).
- `fit` calls eval.scaling.fit_sweep on all records: isoFLOP parabolas, the power laws D*(C), N*(C) and their
  extrapolation, Chinchilla approach 3 and the two-step downstream fit, and writes `fits.json`, `records.jsonl`,
  `report.md` and the PNGs. A budget whose parabola is not convex (noise at tiny scale) is left out of the fits
  with its reason in `fits.json["skipped"]`; so is the downstream fit when its NLL parabolas are not convex.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from experiments.config import ExperimentConfig
from experiments.dag import Stage, StageContext
from experiments.stages import CorpusConfig, TokenizerConfig, curate, shard_dirs, shards, tokenizer
from tools import atomic
from tools.tables import markdown_table

ARCH_KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of", "ffn_dim_multiplier", "max_seq_len")


@dataclass
class SweepConfig:
    budgets: list[float] = field(default_factory=lambda: [1e10, 2e10, 4e10, 8e10])  # training FLOPs per run
    models_per_budget: int = 3  # a parabola needs 3
    tokens_per_param: float = 20.0  # where plan_isoflop centres each budget's models
    dims: list[int] = field(default_factory=list)  # widths of the model family (empty: plan_isoflop's)
    seq_len: int = 256
    batch_tokens: int = 512
    min_steps: int = 20  # a model that would train fewer steps at a budget is not used there
    recipe: str = "llama3_tiny"  # the training recipe the runs start from (optimizer, device, threads, mix)
    recipe_overrides: list[str] = field(default_factory=list)  # dotted key=value changes of it
    lr: float = 3e-3  # peak; linear warm-up, then cosine to final_lr_ratio x peak (paper: 0.1)
    warmup: float = 0.1  # fraction of each run's steps
    final_lr_ratio: float = 0.1
    valid_batches: int = 4  # the validation loss: valid_batches x valid_rows rows of seq_len
    valid_rows: int = 8
    extrapolate_to: float = 3.8e25  # the fits' extrapolation (the paper's flagship budget)
    n_boot: int = 50  # bootstrap refits of approach 3
    # Starting points of approach 3's L-BFGS: full = eval.scaling.FULL_GRID (4,500 starts, Chinchilla's grid; about
    # 30 s on 2 busy cores), coarse = every other value of each of its axes (243 starts).
    chinchilla_grid: str = "full"


@dataclass
class BenchmarkConfig:
    items: int = 40  # GSM8K test questions (multiple choice among their solutions)
    choices: int = 4
    seed: int = 0


@dataclass
class Config(ExperimentConfig):
    data: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)


def budget_name(budget: float) -> str:
    """A stage-name-safe budget: 1.25e10 -> 1p25e10 (no dots: stage_slurm keys are dotted paths)."""
    return f"{budget:.3g}".replace("e+", "e").replace(".", "p")


def planned(cfg: Config, vocab_size: int):
    from eval.scaling_plan import FAMILY_DIMS, plan_isoflop

    s = cfg.sweep
    if len(set(s.budgets)) < 2:
        raise ValueError("sweep.budgets: the power laws need at least 2 distinct budgets (the paper's sweep has 9)")
    return plan_isoflop(sorted(set(s.budgets)), vocab_size=vocab_size, seq_len=s.seq_len, batch_tokens=s.batch_tokens,
                        models_per_budget=s.models_per_budget, tokens_per_param=s.tokens_per_param,
                        min_steps=s.min_steps, dims=s.dims or FAMILY_DIMS)  # fmt: skip


def recipe_for(cfg: Config, run):
    """The training recipe of one planned point: the base recipe, the point's shape and tokens, the sweep's LR."""
    from training.config import load_recipe

    s = cfg.sweep
    warmup = max(1, round(s.warmup * run.steps))
    overrides = [
        "monitor.wandb=false", "monitor.progress=false", f"pretrain.tokens={run.tokens}",
        f"pretrain.batch=[{{tokens: 0, batch_tokens: {run.batch_tokens}, seq_len: {s.seq_len}}}]",
        f"pretrain.optim.lr={s.lr}", "pretrain.lr.schedule=cosine", f"pretrain.lr.warmup_steps={warmup}",
        "pretrain.lr.decay_steps=0", f"pretrain.lr.final_lr={s.lr * s.final_lr_ratio}", "pretrain.valid_every=0",
        f"pretrain.valid_batches={s.valid_batches}", f"pretrain.valid_rows={s.valid_rows}",
        "pretrain.checkpoint.every_steps=1000000", "pretrain.checkpoint.every_seconds=60", f"seed={cfg.seed}",
        *s.recipe_overrides,
    ]  # fmt: skip
    recipe = load_recipe(s.recipe, overrides)
    shape = {**recipe.model.overrides, **{k: run.model[k] for k in ARCH_KEYS}}
    return dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, overrides=shape))


def train_budget(ctx: StageContext, budget: float) -> dict:
    """Train every planned point of one budget (resuming), recording loss, NLL and accuracy per point."""
    from data.shards import ShardSet
    from eval.scaling_plan import sweep_record
    from experiments import answer_nll
    from model.checkpoint import load_model
    from training import pretrain

    cfg: Config = ctx.config
    shard_dir = shard_dirs(ctx)["shards"]
    vocab = int(ShardSet(shard_dir).tokenizer["vocab_size"])
    runs = [r for r in planned(cfg, vocab) if r.budget == budget]
    b = cfg.benchmark
    qs = answer_nll.questions(b.items, b.choices, b.seed)
    records = []
    for run in runs:
        out = ctx.workdir / run.name
        done = out / "record.json"
        if not done.is_file():
            summary = pretrain.run(recipe_for(cfg, run), out, shard_dir)
            model, tok = load_model(out / "model")
            bench = answer_nll.score(model, tok, qs, max_len=cfg.sweep.seq_len)
            rec = sweep_record(run, summary["valid_loss"], nll=bench["nll"], accuracy=bench["accuracy"])
            rec.update(dim=run.model["dim"], n_layers=run.model["n_layers"], steps=run.steps,
                       flops=run.flops, seconds=summary.get("seconds"))  # fmt: skip
            atomic.write_json(done, rec)
            print(f"{run.name}: {run.params:,} params, {run.tokens:,} tokens, valid loss {rec['loss']:.4f}, "
                  f"GSM8K NLL/byte {rec['nll']:.4f}, choice accuracy {rec['accuracy']:.3f}", flush=True)  # fmt: skip
        records.append(json.loads(done.read_text()))
    atomic.write_text(ctx.workdir / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    best = min(records, key=lambda r: r["loss"])
    return {"budget": budget, "runs": len(records), "best": best["name"], "best_loss": best["loss"]}


def bracketed(parabola: dict, group: list[dict]) -> None:
    """Raise unless the parabola's minimum lies within the runs' log10-token span widened by that span on each
    side. A nearly flat parabola (loss falling steadily across the runs) puts its vertex orders of magnitude away,
    and a power law through such a vertex is meaningless (it can overflow a float when extrapolated)."""
    import math

    x = [math.log10(r["tokens"]) for r in group]
    lo, hi, width = min(x), max(x), max(x) - min(x)
    if not lo - width <= math.log10(parabola["tokens_opt"]) <= hi + width:
        raise ValueError(f"budget {parabola['budget']:.3g}: the fitted minimum ({parabola['tokens_opt']:.3g} tokens) "
                         f"lies far outside the runs ({10**lo:.3g} to {10**hi:.3g} tokens); recentre the sweep "
                         "(sweep.tokens_per_param) or widen it")  # fmt: skip


def fits(records: list[dict], cfg: SweepConfig, out_dir: Path | None) -> dict:
    """eval.scaling.fit_sweep on the records, leaving out (with the reason) budgets whose loss parabola is not
    convex or has its minimum far outside the budget's runs, and the downstream fit when it cannot be made."""
    import numpy as np

    from eval.scaling import FULL_GRID, fit_isoflop, fit_sweep, paper_arithmetic

    grids = {"full": FULL_GRID, "coarse": {k: v[::2] for k, v in FULL_GRID.items()}}
    if cfg.chinchilla_grid not in grids:
        raise ValueError(f"sweep.chinchilla_grid must be one of {sorted(grids)}, got '{cfg.chinchilla_grid}'")
    skipped, kept = {}, []
    for budget in sorted({r["budget"] for r in records}):
        group = [r for r in records if r["budget"] == budget]
        try:
            bracketed(fit_isoflop(group)[0], group)
            kept.extend(group)
        except ValueError as e:
            skipped[f"{budget:.3g}"] = str(e)
    if not kept:
        raise ValueError(f"no budget has a usable isoFLOP parabola: {skipped}")
    run = functools.partial(fit_sweep, extrapolate_to=cfg.extrapolate_to, out_dir=out_dir, n_boot=cfg.n_boot,
                            grid=grids[cfg.chinchilla_grid])  # fmt: skip
    downstream_skipped = None
    if len({r["budget"] for r in kept}) < 2:  # step 1 is a power law of NLL against FLOPs
        downstream_skipped = "the downstream fit needs at least 2 fitted budgets"
    elif all("nll" in r and "accuracy" in r for r in kept):
        try:
            fit_isoflop(kept, key="nll")  # fit_sweep's downstream step 1 needs a convex NLL parabola per budget
        except ValueError as e:
            downstream_skipped = str(e)
    plain = [{k: v for k, v in r.items() if k not in ("nll", "accuracy")} for r in kept]
    with np.errstate(over="ignore", invalid="ignore"):  # bootstrap refits of approach 3 may overflow; kept as is
        try:
            result = run(plain if downstream_skipped else kept)
        except RuntimeError as e:  # the downstream sigmoid did not converge
            downstream_skipped = f"{type(e).__name__}: {e}"
            result = run(plain)
    result["skipped"] = skipped
    result["downstream_skipped"] = downstream_skipped
    result["paper"] = paper_arithmetic()
    return result


def fit(ctx: StageContext) -> dict:
    cfg: Config = ctx.config
    records = []
    for budget in sorted(set(cfg.sweep.budgets)):
        path = ctx.input(f"train_{budget_name(budget)}") / "records.jsonl"
        records.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    result = fits(records, cfg.sweep, ctx.workdir / "plots")
    atomic.write_text(ctx.workdir / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic.write_json(ctx.workdir / "fits.json", result)
    atomic.write_text(ctx.workdir / "report.md", report(records, result))
    law = result.get("tokens_law", {})
    return {"records": len(records), "budgets_fitted": len(result["isoflop"]), "skipped": sorted(result["skipped"]),
            "tokens_alpha": law.get("alpha"), "downstream": "downstream" in result}  # fmt: skip


def report(records: list[dict], result: dict) -> str:
    runs = [[f"{r['budget']:.3g}", r["name"], r["params"], r["tokens"], f"{r['loss']:.4f}",
             f"{r.get('nll', float('nan')):.4f}", f"{r.get('accuracy', float('nan')):.3f}"]
            for r in sorted(records, key=lambda r: (r["budget"], r["tokens"]))]  # fmt: skip
    optima = [[f"{p['budget']:.3g}", f"{p['tokens_opt']:.3g}", f"{p['params_opt']:.3g}", f"{p['loss_opt']:.4f}",
               str(p["inside_sweep"])] for p in result["isoflop"]]  # fmt: skip
    lines = ["# isoFLOP sweep", "",
             markdown_table(["budget", "run", "params", "tokens", "valid loss", "GSM8K NLL/byte", "choice acc"], runs,
                            "rlrrrrr"), "",
             markdown_table(["budget", "D* (tokens)", "N* (params)", "loss at D*", "vertex inside the sweep"], optima,
                            "rrrrl")]  # fmt: skip
    for key, what in (("tokens_law", "D*(C) = A C^alpha"), ("params_law", "N*(C) = A C^alpha")):
        if key in result:
            law = result[key]
            lines.append(f"\n{what}: A = {law['A']:.3g}, alpha = {law['alpha']:.3f} (se {law['se_alpha']:.3f})")
    skipped = ", ".join(f"{k} ({v})" for k, v in result["skipped"].items()) or "none"
    downstream = "made" if "downstream" in result else result["downstream_skipped"]
    lines.append(f"\nThe paper: D*(C) = 0.29 C^0.53 (tokens). Skipped budgets: {skipped}. Downstream: {downstream}.")
    return "\n".join(lines) + "\n"


def stages(cfg: Config) -> list[Stage]:
    trains = [
        Stage(f"train_{budget_name(b)}", functools.partial(train_budget, budget=float(b)), inputs=("shards",))
        for b in sorted(set(cfg.sweep.budgets))
    ]
    return [
        Stage("curate", curate),
        Stage("tokenizer", tokenizer, inputs=("curate",)),
        Stage("shards", shards, inputs=("curate", "tokenizer")),
        *trains,
        Stage("fit", fit, inputs=tuple(s.name for s in trains)),
    ]


def dry_run(cfg: Config) -> str:
    runs = planned(cfg, cfg.tokenizer.vocab_size)
    lines = [f"{cfg.name}: {len(runs)} runs over {len(set(cfg.sweep.budgets))} budgets (vocabulary "
             f"{cfg.tokenizer.vocab_size} as planned; the trained tokenizer's is used when training)",
             "stages: " + " -> ".join(s.name for s in stages(cfg)), "",
             f"{'run':<16}{'dim':>6}{'layers':>8}{'params':>12}{'tokens':>12}{'steps':>8}{'tokens/param':>14}"
             f"{'FLOPs':>11}"]  # fmt: skip
    for r in runs:
        lines.append(f"{r.name:<16}{r.model['dim']:>6}{r.model['n_layers']:>8}{r.params:>12,}{r.tokens:>12,}"
                     f"{r.steps:>8,}{r.tokens / r.params:>14.2f}{r.flops:>11.3g}")  # fmt: skip
    lines.append(f"\ntotal: {sum(r.tokens for r in runs):,} training tokens, {sum(r.flops for r in runs):.3g} FLOPs")
    return "\n".join(lines)
