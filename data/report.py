"""The funnel report of a run: a polars table (Parquet + markdown) of documents and characters (and tokens,
estimated from the tokenize step's measured tokens per character, exact from tokenize on) in and out of every
step, drop reasons, step counters, per-language and per-category counts, and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from data.base import StepStats, check_funnel
from tools import atomic, tables


def markdown_table(df: pl.DataFrame) -> str:
    return tables.markdown_table(df.columns, df.iter_rows())


def funnel_frames(steps: list[tuple[str, StepStats]], tokens_per_char: float | None) -> dict[str, pl.DataFrame]:
    rows, drops, counters = [], [], []
    for name, st in steps:
        row = {
            "step": name,
            "docs_in": st.docs_in,
            "docs_out": st.docs_out,
            "dropped": sum(st.dropped.values()),
            "kept_frac": st.docs_out / st.docs_in if st.docs_in else 0.0,
            "chars_in": st.chars_in,
            "chars_out": st.chars_out,
        }
        if tokens_per_char is not None:
            row["tokens_in_est"] = round(st.chars_in * tokens_per_char)
            row["tokens_out_est"] = round(st.chars_out * tokens_per_char)
        rows.append(row)
        drops += [{"step": name, "reason": r, "docs": n} for r, n in sorted(st.dropped.items())]
        counters += [{"step": name, "counter": c, "value": v} for c, v in sorted(st.counters.items())]
    schema_d = {"step": pl.String, "reason": pl.String, "docs": pl.Int64}
    schema_c = {"step": pl.String, "counter": pl.String, "value": pl.Int64}
    return {
        "funnel": pl.DataFrame(rows),
        "drops": pl.DataFrame(drops, schema=schema_d),
        "counters": pl.DataFrame(counters, schema=schema_c),
    }


def breakdown(final: list[dict]) -> pl.DataFrame:
    """Merge the per-task (language, category) counts of the final documents."""
    rows = [r for part in final for r in part]
    schema = {"lang": pl.String, "category": pl.String, "docs": pl.Int64, "chars": pl.Int64, "tokens": pl.Int64}
    if not rows:
        return pl.DataFrame(schema=schema)
    df = pl.DataFrame(rows, schema=schema)
    return df.group_by("lang", "category").agg(pl.col("docs", "chars", "tokens").sum()).sort("lang", "category")


def draw_chart(funnel: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = funnel["step"].to_list()
    kept, dropped = funnel["docs_out"].to_list(), funnel["dropped"].to_list()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    y = list(range(len(names)))[::-1]
    ax.barh(y, kept, color="#4c72b0", label="kept")
    ax.barh(y, dropped, left=kept, color="#dd8452", label="dropped")
    for yi, k, d in zip(y, kept, dropped):
        ax.text(k + d, yi, f" {k:,} kept, {d:,} dropped", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.set_xlabel("documents")
    ax.set_title("funnel: documents in per step, kept and dropped")
    ax.set_xlim(0, max([k + d for k, d in zip(kept, dropped)] + [1]) * 1.45)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic.replacing(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_report(out: Path, result: dict, sections: dict[str, str], chart: bool = True) -> dict:
    """Write report/{funnel,drops,counters,breakdown}.parquet, report.md, funnel.png (if `chart`); return a JSON
    summary."""
    steps = result["steps"]
    tokens_per_char = None
    for _, st in steps:
        if st.counters.get("tokens") and st.counters.get("tokenized chars"):
            tokens_per_char = st.counters["tokens"] / st.counters["tokenized chars"]
    frames = funnel_frames(steps, tokens_per_char)
    frames["breakdown"] = breakdown(result["results"].get("final", []))
    rdir = out / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    for key, df in frames.items():
        with atomic.replacing(rdir / f"{key}.parquet") as tmp:
            df.write_parquet(tmp)
    errors = check_funnel(steps)
    first, last = steps[0][1], steps[-1][1]
    total_dropped = sum(sum(st.dropped.values()) for _, st in steps)
    md = ["# Pipeline report", "", "## Funnel", "", markdown_table(frames["funnel"]), ""]
    md += [
        f"Documents in: {first.docs_in:,}; kept: {last.docs_out:,}; dropped: {total_dropped:,}. "
        + (
            "Funnel invariant holds (in = kept + dropped, per step and overall)."
            if not errors
            else "FUNNEL INVARIANT VIOLATED: " + "; ".join(errors)
        ),
        "",
    ]
    if tokens_per_char is not None:
        md += [f"Token columns are estimates from the tokenize step's {tokens_per_char:.4f} tokens per character.", ""]
    md += ["## Drop reasons", "", markdown_table(frames["drops"]), ""]
    md += ["## Counters", "", markdown_table(frames["counters"]), ""]
    md += ["## Final documents by language and category", "", markdown_table(frames["breakdown"]), ""]
    for title, text in sections.items():
        md += [f"## {title}", "", text, ""]
    md += ["![funnel](funnel.png)", ""] if chart else []
    atomic.write_text(rdir / "report.md", "\n".join(md))
    if chart:
        draw_chart(frames["funnel"], rdir / "funnel.png")
    summary = {
        "documents_in": first.docs_in,
        "documents_kept": last.docs_out,
        "documents_dropped": total_dropped,
        "funnel_ok": not errors,
        "funnel_errors": errors,
        "steps": {name: st.to_dict() for name, st in steps},
    }
    atomic.write_json(rdir / "summary.json", summary)
    return summary


def _json_block(obj) -> str:
    return "```json\n" + json.dumps(obj, indent=1, sort_keys=True) + "\n```"


def report_sections(env, steps: list, result: dict, shard_totals: dict | None = None) -> dict[str, str]:
    """Extra report sections: global-step summaries, classifier held-out metrics, the mix, the shard sets."""
    sections: dict[str, str] = {}
    if result["global"]:
        sections["Global steps"] = "\n\n".join(
            f"**{name}**\n\n" + _json_block(rounds[-1] if len(rounds) == 1 else rounds)
            for name, rounds in result["global"].items()
        )
    metrics = {s.name: s.metrics() for s in steps if hasattr(s, "metrics")}
    rows = []
    for name, m in metrics.items():
        if not m:
            continue
        for label, v in sorted(m.get("heldout_metrics", {}).items()):
            if isinstance(v, dict):
                rows.append(
                    {
                        "classifier": name,
                        "label": label,
                        "precision": v["precision"],
                        "recall": v["recall"],
                        "heldout support": v["support"],
                    }
                )
    if rows:
        sections["Classifiers (held-out precision and recall)"] = markdown_table(pl.DataFrame(rows))
    mix = result["global"].get("mix")
    if mix:
        cats = mix[0]["categories"]
        df = pl.DataFrame(
            [
                {
                    "category": k,
                    **{
                        f: v.get(f)
                        for f in (
                            "target_share",
                            "actual_share",
                            "train_tokens",
                            "target_tokens",
                            "max_copies",
                            "valid_documents",
                            "valid_tokens",
                        )
                    },
                }
                for k, v in cats.items()
            ]
        )
        text = markdown_table(df)
        if mix[0].get("anneal"):
            text += "\n\nAnnealing mix:\n\n" + markdown_table(
                pl.DataFrame([{"category": k, **v} for k, v in mix[0]["anneal"].items()])
            )
        sections["Data mix (tokens)"] = text
    if shard_totals:
        sections["Shard sets"] = markdown_table(pl.DataFrame([{"set": k, **v} for k, v in shard_totals.items()]))
    return sections
