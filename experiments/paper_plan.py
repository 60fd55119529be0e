"""The plan of a paper-scale experiment (experiments/paper_scale.py), as data (`plan`) and as the text `--dry-run`
prints (`render`): Slurm jobs, the data pipeline's job arrays, the recipe's hyper-parameters, and per training phase
the planner's parallel layout, memory per GPU, tokens, FLOPs and days; then every sbatch script.

Everything comes from the recipe (training/configs/<recipe>.yaml) and training/plan.py, sized for the GPUs of the
pretrain stage's Slurm job (stage_slurm.pretrain: nodes x gpus_per_node).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from experiments import posttrain, slurm_plan
from experiments.paper_scale import (
    STAGES,
    TRAINING,
    PaperConfig,
    array_jobs,
    eval_fits,
    model_args,
    pipeline_config,
    recipe_of,
    resources,
)
from tools.paths import repo_root

OFFICIAL = " (the official one: 128,000 ranks + 256 special tokens)"
TOKENS_PER_CP_RANK = 8192  # the planner's CP auto: 8,192 tokens of a sequence per GPU (Table 4: 131,072 / 16)


def context_parallel(gpus: int, tp: int, pp: int, seq: int, cp: int) -> int:
    """CP for a sequence length: the recipe's, else 8,192 tokens per GPU, rounded up to a CP that divides both the
    GPUs (with TP x PP) and the sequence (lengths such as 48K would otherwise give CP 6, which 16,384 GPUs at TP 8
    x PP 16 cannot be split into)."""
    if cp:
        return cp
    c = max(1, seq // TOKENS_PER_CP_RANK)
    while (gpus % (tp * c * pp) or seq % c) and c < seq:
        c += 1
    return c


def phase_rows(recipe, gpus: int, mfu: float) -> list[dict]:
    """One row per constant-shape part of training: the batch stages of pre-training, each long-context stage, the
    anneal; each with its tokens, steps, and the planner's layout, memory per GPU, speed and days."""
    from training.plan import plan

    pre, rows = recipe.pretrain.batch, []
    for i, b in enumerate(pre):
        end = pre[i + 1].tokens if i + 1 < len(pre) else recipe.pretrain.tokens
        rows.append(dict(phase="pretrain", seq=b.seq_len, batch=b.batch_tokens, tokens=end - b.tokens))
    for i, s in enumerate(recipe.long_context.stages):
        batch = s.batch_tokens or pre[-1].batch_tokens
        rows.append(dict(phase=f"long_context {i + 1}", seq=s.seq_len, batch=batch, tokens=s.tokens))
    last = recipe.anneal.train.batch[-1]
    rows.append(dict(phase="anneal", seq=last.seq_len, batch=last.batch_tokens, tokens=recipe.anneal.train.tokens))
    for row in rows:
        p = recipe.plan
        speed = dict(tflops=0.0, mfu=mfu) if mfu > 0 else {}
        sized = dataclasses.replace(p, gpus=gpus, cp=context_parallel(gpus, p.tp, p.pp, row["seq"], p.cp),
                                    seq_len=row["seq"], batch_tokens=row["batch"], total_tokens=float(row["tokens"]),
                                    **speed)  # fmt: skip
        r = plan(dataclasses.replace(recipe, plan=sized))
        row.update(steps=math.ceil(row["tokens"] / row["batch"]), layout=r["layout"],
                   memory_gib=r["memory_gib"]["total"], fits=r["fits"], days=r["days"], mfu=r["mfu"],
                   tflops=r["tflops_per_gpu"], tokens_per_s=r["tokens_per_s"],
                   flops=r["flops_per_token"] * row["tokens"], planner=r)  # fmt: skip
    return rows


def array_tasks(cfg: PaperConfig) -> int | None:
    """Tasks of each job array: data.tasks, else the input files when they can be listed here."""
    if cfg.data.tasks:
        return cfg.data.tasks
    if not cfg.data.input:
        return None
    from data.runner import expand_inputs, plan_tasks

    try:
        return len(plan_tasks(expand_inputs(pipeline_config(cfg, Path("curated"), shards_pass=False).input), 0))
    except (OSError, ValueError):
        return None


def plan(cfg: PaperConfig) -> dict:
    """The plan as data (JSON-able apart from `rows[*]["planner"]`, the planner's full result)."""
    from model.accounting import param_count

    recipe = recipe_of(cfg)
    jobs = {s: slurm_plan.stage_job(cfg, s) for s in STAGES}
    gpus = jobs["pretrain"].gpus
    if gpus < 1:
        raise ValueError("stage_slurm.pretrain must give the job GPUs (nodes x gpus_per_node >= 1)")
    for s in TRAINING:
        if jobs[s].gpus != gpus:
            raise ValueError(f"stage_slurm.{s} gives {jobs[s].gpus} GPUs and pretrain {gpus}; the plan needs one size")
    rows = phase_rows(recipe, gpus, cfg.mfu)
    params = param_count(model_args(recipe))
    tokens = sum(r["tokens"] for r in rows)
    fits, weights_gb = eval_fits(cfg)
    post = [s.name for s in posttrain.stages(cfg.posttrain)]
    return {
        "experiment": cfg.name,
        "recipe": recipe,
        "model": dataclasses.asdict(model_args(recipe)),
        "params": params,
        "gpus": gpus,
        "jobs": jobs,
        "rows": rows,
        "tokens": tokens,
        "flops_6nd": 6.0 * params * tokens,  # the paper's accounting (3.8e25 for 405B on 15.6T tokens)
        "flops": sum(r["flops"] for r in rows),  # with attention, per phase's sequence length
        "days": sum(r["days"] for r in rows),
        "array_tasks": array_tasks(cfg),
        "eval_fits": fits,
        "eval_weights_gb": weights_gb,
        "posttrain_jobs": {s: slurm_plan.stage_job(cfg, s, resources(cfg, s)) for s in post},
    }


def _hyper(recipe) -> list[str]:
    o, lr = recipe.pretrain.optim, recipe.pretrain.lr
    ramp = " -> ".join(f"{b.batch_tokens:,} at {b.seq_len:,}" + (f" after {b.tokens:.3g}" if b.tokens else "")
                       for b in recipe.pretrain.batch)  # fmt: skip
    lc, gate, an = recipe.long_context, recipe.long_context.gate, recipe.anneal
    return [
        f"pretrain      AdamW peak {o.lr:g}, betas {tuple(o.betas)}, weight decay {o.weight_decay:g}, "
        f"clip {o.grad_clip:g}; warm-up {lr.warmup_steps:,} steps, {lr.schedule} to {lr.final_lr:g} "
        f"by step {lr.decay_steps:,}",
        f"              batch tokens at sequence: {ramp} tokens; mix {recipe.pretrain.data.mix or 'the paper'}",
        f"long_context  LR {lc.train.optim.lr:g} {lc.train.lr.schedule}; {len(lc.stages)} stages "
        f"{' -> '.join(f'{s.seq_len:,}' for s in lc.stages)}, {sum(s.tokens for s in lc.stages):.3g} tokens; gate "
        f"{gate.fn} >= {gate.threshold:g} and short-context loss within {gate.loss_tolerance:.0%}",
        f"anneal        LR {an.train.optim.lr:g} {an.train.lr.schedule} to {an.train.lr.final_lr:g} over "
        f"{an.train.tokens:,} tokens at {an.train.batch[-1].seq_len:,}; average of {an.average} checkpoints; "
        f"mix {an.train.data.mix}",
    ]


def _posttrain(cfg: PaperConfig, jobs: dict) -> list[str]:
    """The post-training rounds: hyper-parameters, and one job per stage (each kind once: the rounds repeat it)."""
    pt = cfg.posttrain
    sft, rm, dpo, rs = pt.sft, pt.reward_model, pt.dpo, pt.sampling
    return [
        f"rounds        {pt.rounds} (stages: chat_data -> round0/sft -> round<r>/"
        "{reward_model, rejection_sampling, sft, dpo, average}, r = 1.." + f"{pt.rounds})",
        f"curation      the SFT dialogs through data/posttrain/sft_curation.py: {', '.join(pt.curation.steps)}",
        f"reward_model  from the round's policy, LR {rm.lr:g}, {rm.steps:,} steps x {rm.per_step} prompts; all "
        "preferences so far, strengths significantly better / better only",
        f"rejection     K {rs.k} samples per prompt (the paper: 10-30), temperature {rs.temperature:g}, top-p "
        f"{rs.top_p:g}, up to {rs.max_new_tokens:,} new tokens; RM score, plus the verifier where checkable",
        f"sft           LR {sft.lr:g}, {sft.steps:,} steps x {sft.per_step} rows of {pt.seq_len:,} tokens "
        f"({sft.steps * sft.per_step * pt.seq_len:.3g} tokens), {sft.schedule}",
        f"dpo           LR {dpo.train.lr:g}, beta {dpo.beta:g}, NLL {dpo.nll_coef:g}, {dpo.train.steps:,} steps x "
        f"{dpo.train.per_step} pairs on the latest round's preferences; reference log-probs precomputed",
        f"average       of {pt.runs.dpo} DPO runs per round; the reward model and SFT stages average "
        f"{pt.runs.reward_model} and {pt.runs.sft} runs (different data orders) into their models",
        "Planned only: the stage functions train in one process (llama3_tiny runs them); their jobs here refuse.",
        slurm_plan.jobs_table([jobs[s] for s in _first_round(jobs)]) + "\n(rounds 2.. repeat round 1's jobs)",
    ]


def _first_round(names) -> list[str]:
    """The post-training stages up to round 1's (later rounds repeat round 1's jobs)."""
    return [s for s in names if not s.startswith("round") or s.startswith(("round0/", "round1/"))]


def _data_section(cfg: PaperConfig, n: int | None) -> list[str]:
    a = cfg.data.array
    tasks = f"{n:,} tasks each" if n else "one task per input file"
    lines = [f"pipeline      {cfg.data.pipeline} over {cfg.data.input or '(data.input is not set)'}",
             f"arrays        {tasks}, at most {a.array_parallelism} running; per task {a.cpus_per_task} CPUs, "
             f"{a.mem_gb:g} GB, {a.timeout_min / 60:g} h; global steps resolve in the stage's driver job"]  # fmt: skip
    for stage, shards_pass in (("curate", False), ("shards", True)):
        steps = pipeline_config(cfg, Path("x"), shards_pass=shards_pass, input="x").steps
        for job in array_jobs(steps):
            lines.append(f"  {stage:<12}{job}")
    return lines


def render(cfg: PaperConfig) -> str:
    p = plan(cfg)
    recipe, rows, m = p["recipe"], p["rows"], p["model"]
    run = slurm_plan.run_dir(cfg, repo_root())
    first = rows[0]
    speed = f"{recipe.plan.gpu.upper()} at {first['tflops']:.0f} TFLOPs/GPU = {first['mfu']:.1%} MFU (bf16 dense peak)"
    out = [
        f"{cfg.name}: the Llama 3 recipe for {recipe.model.preset} (training recipe {cfg.recipe}) as Slurm jobs",
        f"model         {p['params']:,} parameters: {m['n_layers']} layers, dim {m['dim']:,}, "
        f"{m['n_heads']} heads / {m['n_kv_heads']} KV heads, vocab {m['vocab_size']:,}, "
        f"RoPE theta {m['rope_theta']:,g}",
        f"tokenizer     {cfg.tokenizer}{OFFICIAL if cfg.tokenizer == 'llama3' else ''}",
        "stages        " + " -> ".join(STAGES),
        "",
        f"== Slurm jobs (stage_slurm.<stage> over slurm; runs in {run}) ==",
        slurm_plan.jobs_table(list(p["jobs"].values())),
        "Training jobs run every task as one rank (training.distributed takes the ranks from submitit). USR2 90 s "
        "before the time limit, or SIGTERM on preemption, makes the trainer save a checkpoint at the next step "
        "boundary; then submitit requeues the job (scontrol requeue) and the requeued job resumes from it.",
        "",
        "== Data curation: one Slurm job array per pipeline segment ==",
        *_data_section(cfg, p["array_tasks"]),
        "",
        f"== Hyper-parameters (training/configs/{cfg.recipe}.yaml) ==",
        *_hyper(recipe),
        "",
        f"== Training plan on {p['gpus']:,} GPUs (training/plan.py; {speed}) ==",
        f"{'phase':<16}{'seq':>9}{'batch tokens':>14}{'steps':>11}{'tokens':>11}   TP x CP x PP x DP  "
        f"{'GiB/GPU':>8}{'FLOPs':>10}{'days':>8}",
    ]
    for r in rows:
        lay = r["layout"]
        layout = f"{lay['tp']} x {lay['cp']} x {lay['pp']} x {lay['dp']}"
        out.append(f"{r['phase']:<16}{r['seq']:>9,}{r['batch']:>14,}{r['steps']:>11,}{r['tokens']:>11.3g}   "
                   f"{layout:<18}{r['memory_gib']:>8.1f}{r['flops']:>10.3g}{r['days']:>8.1f}"
                   + ("" if r["fits"] else "  (does NOT fit)"))  # fmt: skip
    out += [
        f"{'total':<50}{p['tokens']:>11.4g}{'':<29}{p['flops']:>10.3g}{p['days']:>8.1f}",
        f"FLOPs, 6ND (the paper's accounting): 6 x {p['params'] / 1e9:.1f}B parameters x {p['tokens'] / 1e12:.2f}T "
        f"tokens = {p['flops_6nd']:.3g}; the table adds attention (12 x layers x dim x sequence per token).",
        f"The trainer runs FSDP2 data parallelism ({recipe.parallel.data_parallel}, activation checkpointing "
        f"{recipe.parallel.activation_checkpointing}, compile {recipe.parallel.compile}) over every GPU; TP, CP "
        "and PP are the planner's model of the paper's layout (Table 4), not implemented by training/.",
        "",
        f"Memory per GPU at {rows[len(recipe.pretrain.batch) - 1]['seq']:,} (the planner's breakdown):",
    ]
    from training.plan import render as render_plan

    out.append(render_plan(rows[len(recipe.pretrain.batch) - 1]["planner"]))
    fits = "fit" if p["eval_fits"] else "do NOT fit: the eval stage refuses (eval.harness runs one device)"
    out += ["", "== Post-training (paper section 4) ==", *_posttrain(cfg, p["posttrain_jobs"])]
    out += ["", f"== eval ==\neval.harness {cfg.eval.tasks} on one {cfg.eval.gpu_memory_gb:g} GB GPU: the bf16 "
            f"weights ({p['eval_weights_gb']:,.0f} GB) {fits}", "", "== sbatch scripts =="]  # fmt: skip
    for stage in STAGES:
        out += [f"--- {stage}: {run / 'logs' / stage}/ ---", slurm_plan.stage_sbatch(cfg, stage, run).rstrip()]
    for stage in _first_round(p["posttrain_jobs"]):
        res = resources(cfg, stage)
        out += [f"--- {stage}: {run / 'logs' / stage}/ ---", slurm_plan.stage_sbatch(cfg, stage, run, res).rstrip()]
    if p["array_tasks"]:
        folder = run / "stages" / "curate.partial" / "curated" / "logs" / "slurm" / "segment_0"
        out += ["--- curate: the job array of segment 0 (the other segments' arrays differ only in their folder) ---",
                slurm_plan.array_sbatch(cfg.data.array, folder, p["array_tasks"]).rstrip()]  # fmt: skip
    return "\n".join(out) + "\n"
