"""The report stage of the CPU-scale recipe: report.md, PNGs and metrics.json in the run directory.

report.md holds the data funnel, the tokenizer, the loss/LR curves across every training phase, the
needle-in-a-haystack grids before and after long-context training, the evaluation table, and one check per
stage claim (planted junk removed, loss falls, long-context training keeps short-context validation loss,
annealing + averaging do not hurt validation loss; the post-training claims of experiments/posttrain_report.py
when the run has post-training stages). metrics.json is the flat {name: number} map the
golden-metrics regression check compares (experiments/goldens.py). Every stage's result is read as its typed
record (experiments/records.py) with `ctx.record`.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

from experiments import posttrain_report
from experiments.dag import StageContext
from experiments.records import (
    AnnealRecord,
    CurateRecord,
    EvalRecord,
    EvaluateRecord,
    LongContextRecord,
    LongLoss,
    ReportRecord,
    ShardsRecord,
    TokenizerRecord,
)
from tools import atomic
from tools.tables import cell, markdown_table


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_curves(phases: list[tuple[str, Path]], png: Path) -> dict:
    """Loss and LR against cumulative tokens over all phases (one colour per phase) -> png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    offset, firsts = 0, {}
    for name, metrics in phases:
        steps = [r for r in _records(metrics) if "event" not in r and "loss" in r]
        by_phase = defaultdict(list)
        for r in steps:
            by_phase[r.get("phase", name)].append(r)
        for phase, rs in by_phase.items():
            start = rs[0]["tokens"]
            x = [offset + r["tokens"] - start for r in rs]
            ax1.plot(x, [r["loss"] for r in rs], label=phase, lw=1)
            ax2.plot(x, [r["lr"] for r in rs], lw=1)
            firsts[phase] = {"first_loss": rs[0]["loss"], "last_loss": rs[-1]["loss"], "steps": len(rs)}
            offset = x[-1]
    ax1.set_ylabel("training loss")
    ax1.legend(fontsize=7)
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("tokens (cumulative over phases)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return firsts


def checks(m: dict, cfg, after_lc: str) -> list[tuple[str, bool, str]]:
    """(claim, holds, the numbers) for each stage's claim; `after_lc` names the last long-context model."""
    short = m["long_loss.short_length"]
    pre, lc_after, annealed = (m[f"valid_loss.{n}.all"] for n in ("pretrain", after_lc, "anneal"))
    return [
        (
            "curation removes the planted junk",
            m["data.junk_caught_fraction"] >= cfg.min_junk_caught,
            f"{m['data.junk_caught_fraction']:.1%} of planted junk dropped by its step "
            f"(need >= {cfg.min_junk_caught:.0%})",
        ),
        (
            "pre-training loss falls",
            m["pretrain.first_loss"] - m["pretrain.last_loss"] >= cfg.min_loss_drop,
            f"{m['pretrain.first_loss']:.3f} -> {m['pretrain.last_loss']:.3f} (need a drop >= {cfg.min_loss_drop})",
        ),
        (
            "long-context training keeps short-context validation loss",
            lc_after <= pre * (1 + cfg.long_context_loss_tolerance),
            f"{pre:.4f} before -> {lc_after:.4f} after, at {short} tokens (allowed up to "
            f"+{cfg.long_context_loss_tolerance:.0%})",
        ),
        (
            "annealing + averaging do not hurt validation loss",
            annealed <= lc_after * (1 + cfg.anneal_loss_tolerance),
            f"{lc_after:.4f} before -> {annealed:.4f} after (allowed up to +{cfg.anneal_loss_tolerance:.0%})",
        ),
    ]


def write(ctx: StageContext) -> ReportRecord:
    cfg = ctx.config
    out = ctx.workdir
    curate = ctx.record("curate", CurateRecord)
    tok, shards = ctx.record("tokenizer", TokenizerRecord), ctx.record("shards", ShardsRecord)
    evals = ctx.record("evaluate", EvaluateRecord).ordered()  # recipe order: pretrain, long-context stages, anneal
    names = list(evals)
    lc = ctx.record("long_context", LongContextRecord)
    anneal = ctx.record("anneal", AnnealRecord)

    funnel_png = ctx.input("curate") / "curated" / "report" / "funnel.png"
    if funnel_png.is_file():
        shutil.copy(funnel_png, out / "funnel.png")
    phases = [
        ("pretrain", ctx.input("pretrain") / "metrics.jsonl"),
        ("long_context", ctx.input("long_context") / "metrics.jsonl"),
        ("anneal", ctx.input("anneal") / "metrics.jsonl"),
    ]
    curves = training_curves(phases, out / "training.png")
    for name in names:
        heat = ctx.input("evaluate") / name / "niah" / "heatmap.png"
        if heat.is_file():
            shutil.copy(heat, out / f"niah_{name}.png")

    lengths = sorted(evals["pretrain"].niah, key=int)
    before_lc, after_lc = "pretrain", [n for n in names if n.startswith("long_context_")][-1]
    long_loss = {name: _long_loss(name, e) for name, e in evals.items()}
    planted = curate.planted
    m = {
        "data.documents_in": curate.documents_in,
        "data.documents_kept": curate.documents_kept,
        "data.documents_dropped": curate.documents_dropped,
        "data.junk_caught_fraction": planted.junk_caught_fraction,
        "data.duplicate_groups_with_one_survivor": planted.duplicate_groups_with_one_survivor,
        "data.keep_kept_fraction": planted.keep_kept_fraction,
        "tokenizer.vocab_size": tok.vocab_size,
        "tokenizer.bytes_per_token": tok.bytes_per_token,
        "shards.documents": shards.documents,
        "shards.tokens": shards.tokens,
        "pretrain.first_loss": curves["pretrain"]["first_loss"],
        "pretrain.last_loss": curves["pretrain"]["last_loss"],
        "long_loss.short_length": long_loss[before_lc].short_len,
        "long_loss.long_length": long_loss[before_lc].long_len,
        "long_loss.gap_before": long_loss[before_lc].gap,
        "long_loss.gap_after": long_loss[after_lc].gap,
    }
    for name in names:
        for length, acc in evals[name].niah.items():
            m[f"niah.{name}.{length}"] = acc
        for cat, loss in evals[name].valid_loss.items():
            m[f"valid_loss.{name}.{cat}"] = loss
        m[f"long_loss.{name}.early"] = long_loss[name].early
        m[f"long_loss.{name}.late"] = long_loss[name].late
    final = evals["anneal"]
    if final.gsm8k is not None:
        m["eval.gsm8k_strict"], m["eval.gsm8k_flexible"] = final.gsm8k.strict, final.gsm8k.flexible
    if final.math500 is not None:
        m["eval.math500"] = final.math500.accuracy
    results = checks(m, cfg.checks, after_lc)
    post = ""
    if "round0/sft" in ctx.inputs:
        m.update(posttrain_report.metrics(ctx))
        post_results = posttrain_report.checks(m, cfg.checks, posttrain_report.rounds(ctx))
        post = posttrain_report.section(ctx, m)
        results += post_results
    atomic.write_json(out / "metrics.json", m)
    text = _markdown(cfg, curate, tok, shards, evals, lc, anneal, lengths, results)
    atomic.write_text(out / "report.md", text + (f"\n{post}\n" if post else ""))
    failed = [claim for claim, ok, _ in results if not ok]
    if failed and cfg.checks.strict:
        raise RuntimeError(f"report written to {out / 'report.md'}, but these claims do not hold: {failed}")
    return ReportRecord(checks={claim: ok for claim, ok, _ in results}, metrics=len(m))


def _long_loss(name: str, e: EvalRecord) -> LongLoss:
    if e.long_loss is None:
        raise ValueError(f"the evaluate stage recorded no loss by position for the model '{name}'")
    return e.long_loss


def _data_section(curate: CurateRecord) -> str:
    planted = curate.planted
    junk = markdown_table(
        ["planted junk", "documents", "dropped by its step"],
        [[k, v, planted.junk_caught[k]] for k, v in planted.junk_planted.items()],
    )
    return (
        f"## Data\n\n{curate.documents_in:,} documents in, {curate.documents_kept:,} kept, "
        f"{curate.documents_dropped:,} dropped (funnel invariant checked). Duplicate groups left with "
        f"exactly one survivor: {planted.duplicate_groups_with_one_survivor} of {planted.duplicate_groups}; "
        f"documents meant to stay that were kept: {planted.keep_kept_fraction:.1%}.\n\n"
        f"![funnel](funnel.png)\n\n{junk}"
    )


def _training_section(tok: TokenizerRecord, shards: ShardsRecord, lc: LongContextRecord, anneal: AnnealRecord) -> str:
    cats = markdown_table(
        ["category", "documents", "tokens"],
        [[c, v.documents, v.tokens] for c, v in shards.by_category.items()],
    )
    gates = [
        [s.name, s.gate.seq_len, s.gate.accuracy, s.gate.loss, s.gate.pre_loss,
         "passed" if s.gate.passed else "FAILED", s.extensions]
        for s in lc.stages
    ]  # fmt: skip
    header = ["stage", "length", "retrieval", "short-context loss", "pre-stage loss", "gate", "extensions"]
    return (
        f"## Tokenizer and shards\n\nBPE in the Llama 3 format, {tok.vocab_size:,} ids, "
        f"{tok.bytes_per_token:.2f} bytes per token on curated text; {shards.tokens:,} tokens of shards."
        f"\n\n{cats}\n\n## Training\n\n![training](training.png)\n\nLong-context gates:\n\n"
        # list(): the checkpoint names print as they did when this was a JSON list
        f"{markdown_table(header, gates)}\n\nAnneal: averaged checkpoints {list(anneal.averaged)}; validation loss "
        f"of the last checkpoint {cell(anneal.last_valid_loss)}, of the average {cell(anneal.train.valid_loss)}."
    )


def _eval_section(evals: dict[str, EvalRecord], lengths: list[str]) -> str:
    niah_rows = [[name, *[evals[name].niah[n] for n in lengths]] for name in evals]
    loss_cats = list(evals["anneal"].valid_loss)
    loss_rows = [[name, *[evals[name].valid_loss.get(c) for c in loss_cats]] for name in evals]
    final, bench = evals["anneal"], []
    if final.gsm8k is not None:
        scores = f"{final.gsm8k.strict:.3f} / {final.gsm8k.flexible:.3f}"
        bench.append(["GSM8K (strict / flexible)", scores, final.gsm8k.n])
    if final.math500 is not None:
        bench.append(["MATH-500", f"{final.math500.accuracy:.3f}", final.math500.n])
    heatmaps = " ".join(f"![niah {n}](niah_{n}.png)" for n in evals)
    long_loss = {n: _long_loss(n, e) for n, e in evals.items()}
    short, long_len = long_loss["pretrain"].short_len, long_loss["pretrain"].long_len
    long_rows = [[n, ll.early, ll.late, ll.gap] for n, ll in long_loss.items()]
    long_header = ["model", f"loss at 0-{short}", f"loss at {short}-{long_len}", "gap"]
    return (
        f"## Needle in a haystack (exact match, by context length)\n\n{markdown_table(['model', *lengths], niah_rows)}"
        f"\n\n{heatmaps}\n\n## Loss by position on held-out long documents (the NIAH essays)\n\n"
        f"{markdown_table(long_header, long_rows)}\n\n## Validation loss by category\n\n"
        f"{markdown_table(['model', *loss_cats], loss_rows)}"
        "\n\n## Benchmarks (final model)\n\n"
        + (markdown_table(["benchmark", "accuracy", "problems"], bench) if bench else "-")
    )


def _markdown(cfg, curate, tok, shards, evals, lc, anneal, lengths, results) -> str:
    claims = [[claim, "holds" if ok else "DOES NOT HOLD", numbers] for claim, ok, numbers in results]
    sections = [
        f"# {cfg.name} run {cfg.run_id}",
        "## Stage claims\n\n" + markdown_table(["claim", "verdict", "numbers"], claims),
        _data_section(curate),
        _training_section(tok, shards, lc, anneal),
        _eval_section(evals, lengths),
    ]
    return "\n\n".join(sections) + "\n"
