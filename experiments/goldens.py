"""Golden metrics: a run's numbers compared against committed values, for CI regression checks.

experiments/goldens/<experiment>.json holds, per metric, the golden value and its tolerance (0 for exact
counts such as the data funnel), plus the reason and provenance of the last rewrite:

    {"reason": "...", "updated": "...", "commit": "...", "run": "...",
     "metrics": {"data.kept_documents": {"value": 1873, "tol": 0},
                 "pretrain.final_loss": {"value": 4.91, "tol": 0.05}}}

    ./bazelw run //experiments:goldens -- experiment=llama3_tiny run=runs/llama3_tiny/<id>            # check
    ./bazelw run //experiments:goldens -- experiment=llama3_tiny run=... rewrite=true reason="why"   # rewrite

A run's metrics are read from `<run>/stages/report/metrics.json` (a flat {name: number} map written by the
experiment's report stage), or from `<run>/metrics.json`. A rewrite keeps each metric's tolerance (new metrics
get `default_tol` relative to the value, 0 for integers) and refuses to run without a reason.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from experiments import provenance
from tools import atomic, config
from tools.paths import PACKAGE_ROOT, repo_root, user_path
from tools.tables import markdown_table


@dataclass
class GoldensConfig:
    experiment: str = "llama3_tiny"
    run: str = "???"  # the run directory holding metrics.json
    rewrite: bool = False
    reason: str = ""
    default_tol: float = 0.02  # relative tolerance for new float metrics on rewrite
    goldens_dir: str = ""  # default: experiments/goldens in the checkout


@dataclass
class Row:
    metric: str
    golden: float | None
    got: float | None
    tol: float
    ok: bool


def compare(metrics: dict[str, float], goldens: dict[str, dict]) -> list[Row]:
    """One row per golden metric (missing ones fail), then rows for metrics that have no golden yet."""
    rows = []
    for name, spec in sorted(goldens.items()):
        got = metrics.get(name)
        ok = got is not None and abs(got - spec["value"]) <= spec["tol"]
        rows.append(Row(name, spec["value"], got, spec["tol"], ok))
    rows += [Row(name, None, value, 0.0, True) for name, value in sorted(metrics.items()) if name not in goldens]
    return rows


def table(rows: list[Row]) -> str:
    def fmt(x):
        return "-" if x is None else (f"{x:d}" if isinstance(x, int) else f"{x:.6g}")

    def status(r: Row) -> str:
        return "new" if r.golden is None else ("ok" if r.ok else "DRIFT")

    body = [[r.metric, fmt(r.golden), fmt(r.got), f"{r.tol:g}", status(r)] for r in rows]
    return markdown_table(["metric", "golden", "got", "tolerance", "status"], body)


def rewritten(metrics: dict[str, float], old: dict[str, dict], default_tol: float) -> dict[str, dict]:
    out = {}
    for name, value in sorted(metrics.items()):
        if name in old:
            tol = old[name]["tol"]
        else:
            tol = 0.0 if isinstance(value, int) else abs(value) * default_tol
        out[name] = {"value": value, "tol": tol}
    return out


def golden_path(cfg: GoldensConfig) -> Path:
    base = user_path(cfg.goldens_dir) if cfg.goldens_dir else repo_root() / "experiments" / "goldens"
    return base / f"{cfg.experiment}.json"


def load_goldens(path: Path) -> dict:
    if not path.is_file():
        return {"metrics": {}}
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    cfg = config.parse(GoldensConfig, argv)
    run = user_path(cfg.run)
    # A run directory (its report stage wrote the metrics) or the folder holding metrics.json itself.
    metrics_file = next((p for p in (run / "stages/report/metrics.json", run / "metrics.json") if p.is_file()), None)
    if metrics_file is None:
        raise SystemExit(f"no metrics.json in {run} or its stages/report: is it a finished run of {cfg.experiment}?")
    metrics = json.loads(metrics_file.read_text())
    path = golden_path(cfg)
    goldens = load_goldens(path)
    rows = compare(metrics, goldens["metrics"])
    print(table(rows))
    if cfg.rewrite:
        if not cfg.reason.strip():
            raise SystemExit("rewrite=true needs reason='why the goldens change' (it is stored beside them)")
        git = provenance.git_state(repo_root() if (repo_root() / ".git").exists() else PACKAGE_ROOT)
        atomic.write_json(
            path,
            {
                "reason": cfg.reason,
                "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "commit": git["commit"],
                "run": str(run),
                "metrics": rewritten(metrics, goldens["metrics"], cfg.default_tol),
            },
        )
        print(f"goldens rewritten: {path}")
        return 0
    drift = [r for r in rows if not r.ok]
    if drift:
        print(f"\n{len(drift)} metric(s) drifted from {path}", file=sys.stderr)
        return 1
    print(f"\nall {sum(r.golden is not None for r in rows)} golden metrics within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
