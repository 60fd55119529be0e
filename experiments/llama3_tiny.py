"""llama3_tiny: the whole Llama 3 recipe (pre-training, then post-training) at toy scale, on 2 CPU cores,
through the same code as the paper-scale experiments.

    curate -> tokenizer -> shards -> pretrain -> long_context -> anneal -> evaluate
           -> chat_data -> round0/sft -> round<r>/{reward_model, rejection_sampling, sft, dpo, average} -> report

Data curation runs on the data package's synthetic web corpus (plus any real sources in `data.sources`), a
small BPE is trained in the Llama 3 format, the curated documents are mixed and tokenized into shards, the
model is pre-trained with a batch/sequence ramp and warm-up + cosine LR, extended to longer contexts in
stages with gates, annealed with checkpoint averaging, and evaluated (validation loss per category,
needle-in-a-haystack at the trained lengths before and after the long-context stages, GSM8K and MATH-500
subsets). Post-training (experiments/posttrain.py) then runs its rounds on a synthetic chat task of short
arithmetic problems (data/synthetic_chat.py). The report stage writes report.md, PNGs and metrics.json into
the run directory, with a check of each stage's claim (see experiments/report.py).

The training recipe is training/configs/llama3_tiny.yaml, embedded as `train` (override any key, e.g.
`train.pretrain.tokens=200000`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from experiments import posttrain
from experiments import report as tiny_report
from experiments import stages as data_stages
from experiments.config import ExperimentConfig
from experiments.dag import Stage, StageContext
from experiments.records import (
    AnnealRecord,
    EvalRecord,
    EvaluateRecord,
    LongContextRecord,
    LongLoss,
    ShardsRecord,
    TrainRecord,
)
from training.config import Recipe, TrainConfig, load_recipe


@dataclass
class TinyEvalConfig:
    niah_lengths: list[int] = field(default_factory=list)  # empty: every trained length
    niah_depths: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])
    niah_trials: int = 2  # samples per (length, depth) cell
    niah_variants: list[str] = field(default_factory=lambda: ["single"])
    benchmarks: list[str] = field(default_factory=lambda: ["gsm8k", "math500"])  # on the final model
    benchmark_limit: int = 16  # first N problems of each
    n_shot: int = 2  # few-shot exemplars (the standard 8 / 4 do not fit the tiny context)
    max_new_tokens: int = 48
    ppl_max_tokens: int = 0  # per category (0: the whole validation split)
    batch_size: int = 8
    # Long-context loss: windows of the longest trained length cut from held-out long documents (the NIAH
    # essays), their loss binned at the pre-training length.
    long_windows: int = 8


@dataclass
class ChecksConfig:
    """What the report requires of each stage (a failed check fails the report stage after writing it)."""

    strict: bool = True
    min_junk_caught: float = 0.95  # fraction of planted junk dropped by the step meant to catch it
    min_loss_drop: float = 1.0  # nats between the first and last pre-training loss
    # Valid loss (at the pre-training length) after the long-context stages <= before x (1 + this): the
    # paper's "short-context performance recovered", on the whole validation split.
    long_context_loss_tolerance: float = 0.02
    anneal_loss_tolerance: float = 0.02  # valid loss after anneal + averaging <= before x (1 + this)
    min_rm_accuracy: float = 0.65  # reward model's held-out pairwise accuracy, "well above" chance (0.5)
    dpo_exact_match_tolerance: float = 0.0  # DPO may lower held-out exact match by at most this


@dataclass
class Config(ExperimentConfig):
    data: data_stages.CorpusConfig = field(default_factory=data_stages.CorpusConfig)
    tokenizer: data_stages.TokenizerConfig = field(default_factory=data_stages.TokenizerConfig)
    train: Recipe = field(default_factory=lambda: load_recipe("llama3_tiny"))
    eval: TinyEvalConfig = field(default_factory=TinyEvalConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    posttrain: posttrain.PosttrainConfig = field(default_factory=posttrain.PosttrainConfig)


def bind_sources(cfg: TrainConfig, dirs: dict[str, Path], categories: set[str]) -> TrainConfig:
    """Point mix keys named after the shards stage's other sets (anneal, long_context) at their directories."""
    sources = dict(cfg.data.sources)
    for key in cfg.data.mix:
        if key in dirs and key not in sources and key not in categories:
            sources[key] = str(dirs[key])
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=sources))


def recipe(ctx: StageContext) -> tuple[Recipe, Path]:
    """The run's recipe with the experiment's seed and the shard sets bound; and the main shard set."""
    dirs = data_stages.shard_dirs(ctx)
    cats = set(ctx.record("shards", ShardsRecord).by_category)
    r: Recipe = ctx.config.train
    lc = dataclasses.replace(r.long_context, train=bind_sources(r.long_context.train, dirs, cats))
    an = dataclasses.replace(r.anneal, train=bind_sources(r.anneal.train, dirs, cats))
    r = dataclasses.replace(
        r, seed=ctx.config.seed, pretrain=bind_sources(r.pretrain, dirs, cats), long_context=lc, anneal=an
    )
    return r, dirs["shards"]


# The training phases return dicts (training/ knows nothing of records); each stage converts its phase's dict.
def pretrain(ctx: StageContext) -> TrainRecord:
    from training import pretrain as phase

    r, shards = recipe(ctx)
    return TrainRecord.from_summary(phase.run(r, ctx.workdir, shards))


def long_context(ctx: StageContext) -> LongContextRecord:
    from training import long_context as phase

    r, shards = recipe(ctx)
    return LongContextRecord.from_summary(phase.run(r, ctx.workdir, shards, init_from=ctx.input("pretrain")))


def anneal(ctx: StageContext) -> AnnealRecord:
    from training import anneal as phase

    r, shards = recipe(ctx)
    return AnnealRecord.from_summary(phase.run(r, ctx.workdir, shards, init_from=ctx.input("long_context")))


def trained_lengths(r: Recipe) -> list[int]:
    return sorted({r.pretrain.batch[-1].seq_len, *(s.seq_len for s in r.long_context.stages)})


def models(ctx: StageContext) -> dict[str, Path]:
    """The exported model of every phase, in recipe order: before and after each long-context stage."""
    out = {"pretrain": ctx.input("pretrain") / "model"}
    for stage in ctx.record("long_context", LongContextRecord).stages:
        out[f"long_context_{stage.gate.seq_len}"] = ctx.input("long_context") / stage.name / "model"
    out["anneal"] = ctx.input("anneal") / "model"
    return out


def long_documents(tok, n: int, length: int, seed: int):
    """[n, length + 1] tokens, each row one run of consecutive sentences of the NIAH essays (never trained on)."""
    import random

    import torch

    from eval.niah import Haystack

    hay, rng, rows = Haystack(tok), random.Random(seed), []
    for _ in range(n):
        start = rng.randrange(len(hay.sentences))
        ids = tok.encode(" ".join(hay.take(2 * length + 64, start)), bos=True)  # 2x: plenty past `length`
        if len(ids) < length + 1:
            raise ValueError(f"the NIAH essays give only {len(ids)} tokens from sentence {start}; need {length + 1}")
        rows.append(ids[: length + 1])
    return torch.tensor(rows)


def evaluate(ctx: StageContext) -> EvaluateRecord:
    import torch

    from eval.harness import EvalConfig, GenerationTaskConfig
    from eval.harness import evaluate as run_eval
    from eval.niah import NiahConfig
    from eval.perplexity import PerplexityConfig, loss_by_position
    from model.checkpoint import load_model

    cfg: Config = ctx.config
    e = cfg.eval
    torch.set_num_threads(max(1, cfg.train.threads))
    lengths = e.niah_lengths or trained_lengths(cfg.train)
    shards = data_stages.shard_dirs(ctx)["shards"]
    base = EvalConfig(
        tasks=["ppl", "niah"],
        batch_size=e.batch_size,
        max_new_tokens=e.max_new_tokens,
        progress=False,
        gsm8k=GenerationTaskConfig(n_shot=e.n_shot),
        math=GenerationTaskConfig(n_shot=e.n_shot),
        niah=NiahConfig(
            context_lengths=lengths,
            depths=e.niah_depths,
            variants=e.niah_variants,
            trials=e.niah_trials,
            batch_size=e.batch_size,
            seed=cfg.seed,
        ),
        ppl=PerplexityConfig(
            shards=str(shards), seq_len=cfg.train.pretrain.batch[-1].seq_len, max_tokens=e.ppl_max_tokens
        ),
    )
    # The benchmarks run on the final model only, on their first N problems (`limit` would also cut the
    # NIAH grid, so they get a run of their own).
    bench = list(e.benchmarks) if e.benchmark_limit else []
    short, longest = cfg.train.pretrain.batch[-1].seq_len, max(trained_lengths(cfg.train))
    results, long_docs = {}, None
    for name, path in models(ctx).items():
        model, tok = load_model(path, "cpu", max_seq_len=max(lengths) + e.max_new_tokens)
        model.eval()
        meta = {"checkpoint": str(path)}
        res = run_eval(model, tok, base, ctx.workdir / name, meta=meta)
        if name == "anneal" and bench:
            on_bench = dataclasses.replace(base, tasks=bench, limit=e.benchmark_limit)
            res["tasks"].update(run_eval(model, tok, on_bench, ctx.workdir / f"{name}_benchmarks", meta=meta)["tasks"])
        if long_docs is None:
            long_docs = long_documents(tok, e.long_windows, longest, cfg.seed)
        early, late = loss_by_position(model, long_docs, [0, short, longest], e.batch_size)
        long_loss = LongLoss(early=early, late=late, short_len=short, long_len=longest)
        results[name] = EvalRecord.from_harness(res, long_loss)
    return EvaluateRecord(models=tuple(results), results=results)  # `models` keeps the order (JSON keys get sorted)


REPORTED = ("curate", "tokenizer", "shards", "pretrain", "long_context", "anneal", "evaluate")


def stages(cfg: Config) -> list[Stage]:
    post = posttrain.stages(cfg.posttrain)
    return [
        Stage("curate", data_stages.curate),
        Stage("tokenizer", data_stages.tokenizer, inputs=("curate",)),
        Stage("shards", data_stages.shards, inputs=("curate", "tokenizer")),
        Stage("pretrain", pretrain, inputs=("shards",)),
        Stage("long_context", long_context, inputs=("shards", "pretrain")),
        Stage("anneal", anneal, inputs=("shards", "long_context")),
        Stage("evaluate", evaluate, inputs=("shards", "pretrain", "long_context", "anneal")),
        *post,
        Stage("report", tiny_report.write, inputs=(*REPORTED, *(s.name for s in post))),
    ]
