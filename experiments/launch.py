"""Launch an experiment: resolve its config, create or resume its run directory, run its stages.

    python -m experiments.launch EXPERIMENT [--allow-dirty] [--dry-run] [config=FILE.yaml] [key=value ...]

Under Bazel every experiment is a py_binary that calls this with its own name
(`./bazelw run //experiments:llama3_tiny -- key=value`). EXPERIMENT names a module `experiments.<name>`
(or any dotted module path) that defines:

    Config                  a dataclass schema extending experiments.config.ExperimentConfig
    stages(cfg)             the list of dag.Stage objects of the experiment
    dry_run(cfg) (optional) a text plan printed by --dry-run instead of running
    preflight(cfg) (optional) called before the run directory is created; raises SystemExit to refuse

Its defaults come from experiments/configs/<name>.yaml when that file exists, then from config=
files and key=value overrides. Runs go to <repo>/runs/<name>/<run-id>/.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from experiments import dag, provenance
from experiments.executors import StageExecutor
from tools import atomic, config
from tools.paths import PACKAGE_ROOT, repo_root

FLAGS = {
    "--allow-dirty": "run even if the working tree has uncommitted changes (recorded)",
    "--dry-run": "print the plan (stages, resources) and exit without running",
}
# Keys that may change when a run is resumed: they do not affect what the stages compute.
RESUMABLE_KEYS = {"run_id", "executor", "wait_timeout_min", "slurm", "stage_slurm"}


def load_experiment(name: str):
    module_name = name if "." in name else f"experiments.{name}"
    module = importlib.import_module(module_name)
    for attr in ("Config", "stages"):
        if not hasattr(module, attr):
            raise SystemExit(f"experiment module {module_name} defines no `{attr}`")
    return module


def default_config_file(name: str) -> Path | None:
    path = PACKAGE_ROOT / "experiments" / "configs" / f"{name.rsplit('.', 1)[-1]}.yaml"
    return path if path.is_file() else None


def pick_run_dir(base: Path, run_id: str) -> Path:
    if run_id == "latest":
        runs = sorted((p for p in base.glob("*") if (p / "config.yaml").is_file()), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise SystemExit(f"run_id=latest: no runs under {base}")
        return runs[-1]
    if run_id:
        return base / run_id
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = base / stamp, 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{n}"
    return path


def comparable(cfg: Any) -> dict:
    return {k: v for k, v in config.to_dict(cfg).items() if k not in RESUMABLE_KEYS}


def check_resume(run_dir: Path, schema: type, cfg: Any) -> None:
    """Refuse to resume a run under a config that computes something else."""
    old = config.load(schema, [run_dir / "config.yaml"])
    before, now = comparable(old), comparable(cfg)
    if before != now:
        keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise SystemExit(
            f"run {run_dir} was started with a different config (keys differ: {', '.join(keys)}); "
            "use a new run_id or the same config"
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        print(__doc__)
        return 2
    if argv[0] in ("-h", "--help"):
        print(__doc__ + "\nflags:\n" + "\n".join(f"  {k}  {v}" for k, v in FLAGS.items()))
        return 0
    name, rest = argv[0], argv[1:]
    flags = {a for a in rest if a.startswith("--")}
    unknown = flags - set(FLAGS) - {"--help"}
    if unknown:
        raise SystemExit(f"unknown flag(s) {sorted(unknown)}; known: {sorted(FLAGS)}")
    module = load_experiment(name)
    if "--help" in flags:
        config.parse(module.Config, ["--help"])
    files, overrides = config.split_args([a for a in rest if not a.startswith("--")])
    default = default_config_file(name)
    cfg = config.load(module.Config, ([default] if default else []) + files, overrides)
    if not cfg.name:
        cfg = dataclasses.replace(cfg, name=name.rsplit(".", 1)[-1])
    stages = dag.order(module.stages(cfg))

    if "--dry-run" in flags:
        plan = module.dry_run(cfg) if hasattr(module, "dry_run") else None
        print(plan or "stages: " + " -> ".join(s.name for s in stages))
        return 0
    if hasattr(module, "preflight"):
        module.preflight(cfg)  # may refuse (SystemExit) before a run directory exists

    repo = repo_root()
    base = Path(cfg.runs_dir) if Path(cfg.runs_dir).is_absolute() else repo / cfg.runs_dir
    run_dir = pick_run_dir(base / cfg.name, cfg.run_id)
    cfg = dataclasses.replace(cfg, run_id=run_dir.name)
    prov = provenance.collect(repo, config.config_hash(comparable(cfg)), [name, *rest], "--allow-dirty" in flags)
    if (run_dir / "config.yaml").is_file():
        check_resume(run_dir, module.Config, cfg)
        record = provenance_record(run_dir)
        record.setdefault("resumes", []).append(prov)
        print(f"resuming run {run_dir}")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(cfg, run_dir / "config.yaml")
        record = prov
        print(f"new run {run_dir}")
    atomic.write_json(run_dir / "provenance.json", record)
    try:
        dag.run(stages, run_dir, cfg, StageExecutor(cfg, run_dir))
    except dag.StageFailed as e:
        print(f"error: {e}\nrerun with run_id={run_dir.name} to resume after fixing it", file=sys.stderr)
        return 1
    print(f"run complete: {run_dir}")
    return 0


def provenance_record(run_dir: Path) -> dict:
    path = run_dir / "provenance.json"
    return json.loads(path.read_text()) if path.is_file() else {}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (config.ConfigError, provenance.ProvenanceError, dag.DagError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
