"""The post-training part of the report (experiments/report.py): metrics, claims, the DPO plot, stage times.

Claims (each with its numbers in report.md):
    SFT curation drops every planted malformed line by its reason, strips the planted emojis and cuts apologetic
    replies to the target share
    SFT raises held-out exact match from the pre-trained model's level (the last round's SFT model)
    the reward model's held-out pairwise accuracy is well above 0.5 (every round)
    best-of-K chosen by the reward model beats a random pick from the same K samples (every round)
    DPO (averaged runs) does not lower held-out exact match and raises the held-out chosen-rejected margin
The PNG shows the held-out chosen log-probability during round 1's DPO with and without the NLL term.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

from data.synthetic_chat import read_problems
from experiments.dag import COMPLETE, StageContext
from experiments.records import (
    AverageRecord,
    ChatDataRecord,
    DPORecord,
    RejectionSamplingRecord,
    RewardModelRecord,
    SFTRecord,
)
from tools.tables import cell, markdown_table


def rounds(ctx: StageContext) -> int:
    return sum(1 for name in ctx.inputs if name.endswith("/average"))


def metrics(ctx: StageContext) -> dict:
    """posttrain.* metrics (deterministic numbers only: no times)."""
    m = {}
    sft0 = ctx.record("round0/sft", SFTRecord)
    held_out = read_problems(ctx.record("chat_data", ChatDataRecord).files["problems_held_out"])
    answers = Counter(p.answer for p in held_out)
    m["posttrain.constant_answer_exact_match"] = answers.most_common(1)[0][1] / sum(answers.values())
    data = ctx.record("chat_data", ChatDataRecord)
    malformed = {k: v for k, v in data.planted.items() if k not in ("apologetic", "emoji spam")}
    m |= {
        "posttrain.curation.in": data.curation_in,
        "posttrain.curation.kept": data.sft_dialogs,
        "posttrain.curation.malformed_planted": sum(malformed.values()),
        "posttrain.curation.malformed_dropped": sum(
            min(data.curation_dropped.get(k, 0), n) for k, n in malformed.items()
        ),
        "posttrain.curation.emoji_replies_kept": data.emoji_replies_kept,
        "posttrain.curation.apologetic_planted": data.planted["apologetic"],
        "posttrain.curation.apologetic_kept": data.apologetic_kept,
        "posttrain.curation.apology_target_share": ctx.config.posttrain.curation.apologies.target_share,
        "posttrain.curation.bad_preferences_planted": sum(data.preferences_planted.values()),
        "posttrain.curation.bad_preferences_dropped": sum(
            min(data.preferences_dropped.get(k, 0), n) for k, n in data.preferences_planted.items()
        ),
    }
    m["posttrain.base_exact_match"] = sft0.base_exact_match
    m["posttrain.round0.sft_exact_match"] = sft0.exact_match
    for r in range(1, rounds(ctx) + 1):
        p = f"posttrain.round{r}"
        rm = ctx.record(f"round{r}/reward_model", RewardModelRecord)
        rs = ctx.record(f"round{r}/rejection_sampling", RejectionSamplingRecord)
        sft = ctx.record(f"round{r}/sft", SFTRecord)
        dpo = ctx.record(f"round{r}/dpo", DPORecord)
        avg = ctx.record(f"round{r}/average", AverageRecord)
        m.update({
            f"{p}.rm_accuracy": rm.held_out_accuracy,
            f"{p}.rm_preferences": rm.preferences,
            f"{p}.best_of_k": rs.best_of_k,
            f"{p}.random_pick": rs.random_pick,
            f"{p}.any_correct": rs.any_correct,
            f"{p}.rs_sft_dialogs": rs.sft_dialogs,
            f"{p}.rs_preferences": rs.preferences,
            f"{p}.sft_exact_match": sft.exact_match,
            f"{p}.dpo_pairs": dpo.pairs,
            f"{p}.dpo_exact_match": avg.exact_match,
            f"{p}.margin_sft": avg.sft_margin,
            f"{p}.margin_dpo": avg.margin,
        })  # fmt: skip
        for i, run in enumerate(dpo.runs):
            m[f"{p}.dpo_run{i}.chosen_logp_end"] = run.chosen_logp[-1]
        if dpo.probe is not None:
            m[f"{p}.dpo_no_nll.chosen_logp_end"] = dpo.probe.chosen_logp[-1]
    return m


def checks(m: dict, cfg, n_rounds: int) -> list[tuple[str, bool, str]]:
    last = f"posttrain.round{n_rounds}"
    base, sft = m["posttrain.base_exact_match"], m[f"{last}.sft_exact_match"]
    dpo_em, tol = m[f"{last}.dpo_exact_match"], cfg.dpo_exact_match_tolerance
    c = "posttrain.curation"
    kept, sorry, target = m[f"{c}.kept"], m[f"{c}.apologetic_kept"], m[f"{c}.apology_target_share"]
    out = [
        ("SFT curation drops every planted malformed line, strips the emojis, rebalances apologies; every planted "
         "malformed preference record is dropped",
         m[f"{c}.malformed_dropped"] == m[f"{c}.malformed_planted"] and m[f"{c}.emoji_replies_kept"] == 0
         and sorry <= target * kept and (target == 0 or sorry > 0)
         and m[f"{c}.bad_preferences_dropped"] == m[f"{c}.bad_preferences_planted"],
         f"malformed dropped by their reason {m[f'{c}.malformed_dropped']} of {m[f'{c}.malformed_planted']}, "
         f"preference records {m[f'{c}.bad_preferences_dropped']} of {m[f'{c}.bad_preferences_planted']}; "
         f"replies with emojis kept {m[f'{c}.emoji_replies_kept']}; apologetic {sorry} of {kept} kept "
         f"(planted {m[f'{c}.apologetic_planted']}, target share {target:g})"),
        ("SFT raises held-out exact match from the base model's level", sft > base,
         f"{base:.3f} pre-trained -> {sft:.3f} after round {n_rounds}'s SFT"),
    ]  # fmt: skip
    for r in range(1, n_rounds + 1):
        p = f"posttrain.round{r}"
        acc, best, rand = m[f"{p}.rm_accuracy"], m[f"{p}.best_of_k"], m[f"{p}.random_pick"]
        out += [
            (f"round {r}: the reward model's held-out pairwise accuracy is well above 0.5",
             acc >= cfg.min_rm_accuracy, f"{acc:.3f} (need >= {cfg.min_rm_accuracy})"),
            (f"round {r}: best-of-K by the reward model beats a random pick of the same K", best > rand,
             f"{best:.3f} of prompts correct vs {rand:.3f} expected at random"),
        ]  # fmt: skip
    out += [
        ("DPO does not lower held-out exact match", dpo_em >= sft - tol,
         f"{sft:.3f} SFT -> {dpo_em:.3f} DPO (averaged runs; allowed drop {tol})"),
        ("DPO raises the held-out chosen-rejected margin", m[f"{last}.margin_dpo"] > m[f"{last}.margin_sft"],
         f"log p(chosen) - log p(rejected): {m[f'{last}.margin_sft']:.2f} SFT -> {m[f'{last}.margin_dpo']:.2f} DPO"),
    ]  # fmt: skip
    return out


def dpo_plot(dpo: DPORecord, png: Path) -> None:
    """Held-out chosen (solid) and rejected (dashed) log-probability during DPO: each run, and the no-NLL probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    runs = [(f"run {i}, NLL {x.nll_coef:g}", x) for i, x in enumerate(dpo.runs)]
    runs += [("no NLL term", dpo.probe)] if dpo.probe is not None else []
    colors = itertools.cycle(["C0", "C2", "C4", "C6"])
    for label, run in runs:
        color = "C3" if run is dpo.probe else next(colors)
        ax.plot(run.steps, run.chosen_logp, color=color, label=f"{label}: chosen")
        ax.plot(run.steps, run.rejected_logp, color=color, ls="--", lw=1, label=f"{label}: rejected")
    ax.set_xlabel(f"DPO step (round {dpo.round})")
    ax.set_ylabel("held-out log-probability (mean)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def stage_times(ctx: StageContext) -> list[list]:
    """[stage, seconds] of the post-training stages, from their COMPLETE.json."""
    rows = []
    for name in ctx.inputs:
        if name == "chat_data" or name.startswith("round"):
            rows.append([name, json.loads((ctx.input(name) / COMPLETE).read_text())["seconds"]])
    return rows


def section(ctx: StageContext, m: dict) -> str:
    """The post-training section of report.md (writes dpo_logp.png into the report's workdir)."""
    n = rounds(ctx)
    dpo_plot(ctx.record("round1/dpo", DPORecord), ctx.workdir / "dpo_logp.png")
    per_round = []
    for r in range(1, n + 1):
        p = f"posttrain.round{r}"
        per_round.append([r, m[f"{p}.rm_preferences"], m[f"{p}.rm_accuracy"], m[f"{p}.best_of_k"],
                          m[f"{p}.random_pick"], m[f"{p}.rs_sft_dialogs"], m[f"{p}.sft_exact_match"],
                          m[f"{p}.dpo_pairs"], m[f"{p}.dpo_exact_match"]])  # fmt: skip
    header = ["round", "RM pairs", "RM accuracy", "best-of-K", "random of K", "RS dialogs", "SFT EM", "DPO pairs",
              "DPO EM"]  # fmt: skip
    times = stage_times(ctx)
    total = sum(t for _, t in times)
    data = ctx.record("chat_data", ChatDataRecord)
    funnel = [[k, data.planted.get(k, "-"), n] for k, n in sorted(data.curation_dropped.items())]
    funnel += [[k, n, "-"] for k, n in sorted(data.planted.items()) if k not in data.curation_dropped]
    bad_prefs = ", ".join(
        f"{k} {data.preferences_dropped.get(k, 0)} of {n}" for k, n in data.preferences_planted.items()
    )
    return (
        "## Post-training (synthetic arithmetic chat task)\n\n"
        f"SFT curation (data/posttrain/sft_curation.py, steps {', '.join(ctx.config.posttrain.curation.steps)}) of "
        f"the annotated dialogs with planted faults: {data.curation_in:,} lines in, {data.sft_dialogs:,} kept, "
        f"{sum(data.curation_dropped.values()):,} dropped.\n\n"
        f"{markdown_table(['reason or fault', 'planted', 'dropped'], funnel)}\n\n"
        f"Preference pairs: {sum(data.preferences.values()):,} kept; malformed records planted and dropped by the "
        f"reader (on_error=skip): {bad_prefs}.\n\n"
        f"Held-out exact match (greedy, {ctx.record('chat_data', ChatDataRecord).held_out} problems): pre-trained "
        f"{cell(m['posttrain.base_exact_match'])}, after SFT on the annotated dialogs (round 0) "
        f"{cell(m['posttrain.round0.sft_exact_match'])}; always giving the most common answer would score "
        f"{cell(m['posttrain.constant_answer_exact_match'])}. Best-of-K and random-of-K are on held-out prompts.\n\n"
        f"{markdown_table(header, per_round)}\n\nThe claims are in the table at the top.\n\n"
        "![DPO log-probabilities](dpo_logp.png)\n\n"
        f"Stage times (wall seconds, {total:.0f} s in all):\n\n{markdown_table(['stage', 'seconds'], times)}"
    )
