"""The paper-scale experiments (llama3_8b, llama3_70b, llama3_405b): the Llama 3 pre-training recipe as Slurm jobs.

    ./bazelw run //experiments:llama3_405b -- --dry-run [mfu=0.38] [stage_slurm.pretrain.nodes=1024]
    ./bazelw run //experiments:llama3_405b -- data.input=/crawl/CC-MAIN-2023-50/ slurm.partition=gpu ...

Stages (each a Slurm job; `stage_slurm.<stage>` sizes it):

    curate        a small driver job running data/configs/web.yaml over the web shards with executor=slurm:
                  one job array per pipeline segment (data.array sizes the array tasks)
    tokenizer     the official Llama 3 tokenizer (128,000 ranks + 256 specials), saved for the shards
    shards        the curated documents tokenized, mixed and written as data.shards sets (job arrays again)
    pretrain      training.pretrain.run: warm-up + cosine, the batch/sequence ramp (multi-node, every task a rank)
    long_context  training.long_context.run: six stages to 128K, each ending in its gate
    anneal        training.anneal.run: the last 40M tokens, LR to 0, checkpoint averaging
    eval          eval.harness on the annealed model (one GPU; refuses a model whose bf16 weights do not fit)

Then post-training (paper section 4; experiments/posttrain.py), planned only: the annotated data, an SFT of it,
and six rounds of reward model -> rejection sampling -> SFT -> DPO -> averaging, with the paper's
hyper-parameters (`posttrain`) and per-kind Slurm resources (`posttrain_slurm`). Those stage functions run in one
process (llama3_tiny runs them for real); at paper scale their jobs refuse, naming what is missing.

The hyper-parameters are the training recipe's (training/configs/<recipe>.yaml, loaded with
training.config.load_recipe; `recipe_overrides` are dotted key=value changes of it), not copies. Training
stages run under submitit with every task a rank (training.distributed reads submitit's environment); on
USR2 (time limit) or SIGTERM (preemption) the trainer checkpoints at the next step boundary and submitit
requeues the job, which resumes from the checkpoint.

Without a Slurm cluster the experiments refuse to run (executor=local and debug too): only `--dry-run`
works anywhere. It prints the plan: stages, resources, the parallel layout, memory per GPU, tokens and FLOPs
from the planner (training/plan.py), days at a given MFU, and the sbatch scripts (experiments/slurm_plan.py).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.pipeline import PipelineConfig
from data.steps import STEPS, segment_names
from experiments import posttrain
from experiments.config import ExperimentConfig
from experiments.dag import Stage, StageContext
from experiments.executors import resolve_kind, stage_resources
from experiments.stages import MIX_STEPS, source_path
from tools import cluster
from tools.config import load
from tools.paths import PACKAGE_ROOT, user_path

STAGES = ("curate", "tokenizer", "shards", "pretrain", "long_context", "anneal", "eval")
TRAINING = ("pretrain", "long_context", "anneal")


@dataclass
class WebDataConfig:
    # The web shards to curate: WARC/WET/JSONL/Parquet files, folders or globs, comma-separated (required to run;
    # "assets:<path>" is the project's vendored data).
    input: str = ""
    pipeline: str = "data/configs/web.yaml"  # the curation config (relative paths: from the repository root)
    overrides: list[str] = field(default_factory=list)  # its key=value changes (classifier models, block lists)
    shard_overrides: list[str] = field(default_factory=list)  # key=value for the tokenize/mix/shards pass
    tasks: int = 0  # array tasks per segment, input files grouped (0: one task per input file)
    array: cluster.SlurmConfig = field(default_factory=lambda: cluster.SlurmConfig(cpus_per_task=1))  # per array task


@dataclass
class EvalStageConfig:
    tasks: list[str] = field(default_factory=lambda: ["gsm8k", "math500", "niah", "ppl"])
    limit: int = 0  # first N items per task (0: all)
    dtype: str = "bfloat16"
    batch_size: int = 16
    gpu_memory_gb: float = 80.0  # the eval GPU's memory: the bf16 weights must fit in it
    overrides: list[str] = field(default_factory=list)  # eval.harness.EvalConfig key=value


@dataclass
class PaperConfig(ExperimentConfig):
    recipe: str = ""  # training/configs/<recipe>.yaml, or a YAML path
    recipe_overrides: list[str] = field(default_factory=list)  # dotted key=value changes of the recipe
    tokenizer: str = "llama3"  # llama3 (the official one) | a tokenizer directory (model.tokenizer format)
    data: WebDataConfig = field(default_factory=WebDataConfig)
    eval: EvalStageConfig = field(default_factory=EvalStageConfig)
    mfu: float = 0.0  # the plan's speed at this bf16 MFU (0: the recipe's plan.tflops)
    posttrain: posttrain.PosttrainConfig = field(default_factory=posttrain.PosttrainConfig)
    # Slurm resources of the post-training stages by kind (chat_data, sft, reward_model, rejection_sampling, dpo,
    # average), the same for every round; over `slurm`, like stage_slurm.
    posttrain_slurm: dict[str, dict[str, Any]] = field(default_factory=dict)


# ---------------------------------------------------------------- refusing to run without a cluster


def refusal(cfg: PaperConfig) -> str | None:
    """Why `cfg` cannot run here (None: it can). These stages only make sense as Slurm jobs."""
    name = cfg.name or "this experiment"
    why = None
    if cfg.executor in ("local", "debug"):
        why = f"executor={cfg.executor} would run them on this machine"
    elif cfg.executor in ("auto", "slurm") and not (shutil.which("srun") and cluster.answers()):
        why = "no Slurm cluster answers here (srun is not on PATH or `sinfo` fails)"
    elif cfg.executor not in ("auto", "slurm"):
        resolve_kind(cfg.executor)  # raises, naming the valid kinds
    if why:
        return (f"{name} runs its stages only as Slurm jobs (up to thousands of GPUs), and {why}. "
                f"Use --dry-run to print the plan, or run it on a cluster with executor=slurm (or auto).")  # fmt: skip
    if not cfg.data.input:
        return f"{name}: data.input is empty; give the web shards to curate (data.input=/path/to/crawl/)"
    return None


def preflight(cfg: PaperConfig) -> None:
    """Refuse before anything is created (for a launcher that calls it after --dry-run)."""
    reason = refusal(cfg)
    if reason:
        raise SystemExit(f"error: {reason}")


def _require_slurm_job(ctx: StageContext) -> None:
    """Every stage checks that it runs as a submitit Slurm job, whatever executor launched it."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        cfg = ctx.config
        raise RuntimeError(refusal(cfg) or f"{cfg.name}: stage '{ctx.name}' runs only as a Slurm job")


# ---------------------------------------------------------------- configs of the components


def recipe_of(cfg: PaperConfig):
    from training.config import load_recipe

    return load_recipe(cfg.recipe, cfg.recipe_overrides)


def _repo_path(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else PACKAGE_ROOT / path


def pipeline_config(cfg: PaperConfig, output: Path, *, shards_pass: bool, input: str = "") -> PipelineConfig:
    """The data pipeline of the curate stage (`shards_pass` False: every step before tokenize) or of the shards
    stage (True: read the curated documents, tokenize, mix, write shards), run as Slurm job arrays."""
    d = cfg.data
    if shards_pass:
        own = [f"input={input}", "read.format=documents", *d.shard_overrides]
    else:
        own = [f"input={','.join(source_path(s.strip()) for s in d.input.split(','))}", *d.overrides]
    pcfg = load(PipelineConfig, [_repo_path(d.pipeline)], [f"output={output}", "progress=false", *own])
    steps = ["read", *MIX_STEPS] if shards_pass else [s for s in pcfg.steps if s not in MIX_STEPS]
    return dataclasses.replace(pcfg, steps=steps, executor="slurm", slurm=d.array, tasks=d.tasks)


def array_jobs(steps: list[str]) -> list[str]:
    """The job arrays one pipeline run submits, in order: each segment, and the extra collection rounds of a
    global step with several rounds (KL)."""
    jobs, segs = [], segment_names(steps)
    for k, seg in enumerate(segs):
        jobs.append(f"segment {k} ({'+'.join(seg)})")
        nxt = segs[k + 1][0] if k + 1 < len(segs) else None
        for r in range(1, STEPS[nxt].rounds if nxt else 1):
            jobs.append(f"{nxt} collect round {r}")
    return jobs


# ---------------------------------------------------------------- the stages (run as Slurm jobs)


def curate(ctx: StageContext) -> dict:
    _require_slurm_job(ctx)
    from data.pipeline import run

    summary = run(pipeline_config(ctx.config, ctx.workdir / "curated", shards_pass=False))
    if not summary["funnel_ok"]:
        raise RuntimeError("data funnel invariant violated: " + "; ".join(summary["funnel_errors"]))
    return {k: summary[k] for k in ("documents_in", "documents_kept", "documents_dropped")}


def tokenizer(ctx: StageContext) -> dict:
    _require_slurm_job(ctx)
    from model.bpe import tokenizer_from_spec

    spec = ctx.config.tokenizer
    tok = tokenizer_from_spec(spec if spec == "llama3" else user_path(spec))
    tok.save(ctx.workdir / "tokenizer")
    return tok.describe()


def shards(ctx: StageContext) -> dict:
    _require_slurm_job(ctx)
    from data.pipeline import run
    from model.tokenizer import Tokenizer

    tok_dir = ctx.input("tokenizer") / "tokenizer"
    out = ctx.workdir / "out"
    docs = ctx.input("curate") / "curated" / "documents"
    pcfg = pipeline_config(ctx.config, out, shards_pass=True, input=str(docs))
    summary = run(pcfg, tokenizer=Tokenizer.load(tok_dir))
    for name in ("shards", "anneal", "long_context"):  # training finds the tokenizer beside the shards
        if (out / name / "manifest.json").is_file() and not (out / name / "tokenizer").exists():
            shutil.copytree(tok_dir, out / name / "tokenizer")
    return {"documents": summary["documents_kept"]}


def _shards(ctx: StageContext, name: str = "shards") -> Path:
    out = ctx.input("shards") / "out"
    return out / name if (out / name / "manifest.json").is_file() else out / "shards"


def pretrain(ctx: StageContext) -> dict:
    _require_slurm_job(ctx)
    from training import pretrain as phase

    return phase.run(recipe_of(ctx.config), ctx.workdir, _shards(ctx))


def long_context(ctx: StageContext) -> dict:
    _require_slurm_job(ctx)
    from training import long_context as phase

    return phase.run(recipe_of(ctx.config), ctx.workdir, _shards(ctx), init_from=ctx.input("pretrain"))


def anneal(ctx: StageContext) -> dict:
    _require_slurm_job(ctx)
    from training import anneal as phase

    # The annealing mix of the data pipeline (high-quality documents) when it wrote one.
    return phase.run(recipe_of(ctx.config), ctx.workdir, _shards(ctx, "anneal"), init_from=ctx.input("long_context"))


def model_args(recipe):
    from model.presets import preset

    return preset(recipe.model.preset, **recipe.model.overrides)


def eval_fits(cfg: PaperConfig) -> tuple[bool, float]:
    """Whether the model's bf16 weights fit the eval GPU (eval.harness runs one device), and their size in GB."""
    from model.accounting import param_count

    gb = 2 * param_count(model_args(recipe_of(cfg))) / 1e9
    return gb <= cfg.eval.gpu_memory_gb * 0.9, gb


def evaluate(ctx: StageContext) -> dict:
    _require_slurm_job(ctx)
    cfg: PaperConfig = ctx.config
    fits, gb = eval_fits(cfg)
    if not fits:
        raise RuntimeError(
            f"eval: the model's bf16 weights take {gb:,.0f} GB, more than one {cfg.eval.gpu_memory_gb:g} GB GPU; "
            "eval.harness runs on one device (multi-GPU inference is not implemented)"
        )
    from eval.harness import EvalConfig, run

    e = cfg.eval
    overrides = [f"checkpoint={ctx.input('anneal') / 'model'}", f"out={ctx.workdir / 'eval'}", "device=cuda",
                 f"dtype={e.dtype}", f"batch_size={e.batch_size}", f"limit={e.limit}", f"tasks=[{','.join(e.tasks)}]",
                 f"ppl.shards={_shards(ctx)}", "progress=false", *e.overrides]  # fmt: skip
    results = run(load(EvalConfig, [], overrides))
    return {"tasks": sorted(results["tasks"])}


def kind(stage: str) -> str:
    """A post-training stage's kind: round3/dpo -> dpo."""
    return stage.rsplit("/", 1)[-1]


def resources(cfg: PaperConfig, stage: str) -> cluster.SlurmConfig:
    """A stage's Slurm resources: stage_slurm for the pre-training stages, posttrain_slurm.<kind> for the others."""
    if stage in STAGES:
        return stage_resources(cfg, stage)
    return cluster.with_overrides(cfg.slurm, dict(cfg.posttrain_slurm.get(kind(stage), {})),
                                  f"posttrain_slurm.{kind(stage)}")  # fmt: skip


def posttrain_stage(ctx: StageContext) -> dict:
    _require_slurm_job(ctx)
    raise RuntimeError(
        f"{ctx.config.name}: stage '{ctx.name}' is planned only: experiments/posttrain.py trains in one process "
        "(llama3_tiny runs it); sharded post-training over the planned nodes is not built"
    )


def stages(cfg: PaperConfig) -> list[Stage]:
    post = [dataclasses.replace(s, fn=posttrain_stage) for s in posttrain.stages(cfg.posttrain)]
    return [
        Stage("curate", curate),
        Stage("tokenizer", tokenizer),
        Stage("shards", shards, inputs=("curate", "tokenizer")),
        Stage("pretrain", pretrain, inputs=("shards",)),
        Stage("long_context", long_context, inputs=("shards", "pretrain")),
        Stage("anneal", anneal, inputs=("shards", "long_context")),
        Stage("eval", evaluate, inputs=("shards", "anneal")),
        *post,
    ]
