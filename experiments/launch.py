"""Launch an experiment: resolve its config, create or resume its run directory, run its stages.

    python -m experiments.launch EXPERIMENT [--allow-dirty] [--allow-config-change] [--dry-run]
                                 [config=FILE.yaml] [key=value ...]

Under Bazel every experiment is a py_binary that calls this with its own name
(`./bazelw run //experiments:llama3_tiny -- key=value`). EXPERIMENT names a module `experiments.<name>`
(or any dotted module path) that defines:

    Config                  a dataclass schema extending experiments.config.ExperimentConfig
    stages(cfg)             the list of dag.Stage objects of the experiment
    dry_run(cfg) (optional) a text plan printed by --dry-run instead of running
    preflight(cfg) (optional) called before the run directory is created; raises SystemExit to refuse

Its defaults come from experiments/configs/<name>.yaml when that file exists, then from config=
files and key=value overrides. Runs go to <repo>/runs/<name>/<run-id>/.

Everything is checked before anything is written (config, executor, stage resources, provenance); then the run
directory's lock is taken, and only then are config.yaml and provenance.json written. A resumed run must have
the config it was started with, except for keys that do not change results (RESUMABLE_KEYS); with
--allow-config-change it resumes anyway, completed stages kept, and the changed keys (before and after) are
recorded in its provenance.json resume record. Errors are one line on stderr: exit 2 for a bad command line or
config, 1 for a failed stage, a run directory in use, or a disk that is full or read-only.
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
from experiments.executors import StageExecutor, resolve_kind, stage_resources
from tools import atomic, cluster, config
from tools.paths import PACKAGE_ROOT, repo_root

FLAGS = {
    "--allow-dirty": "run even if the working tree has uncommitted changes (recorded)",
    "--allow-config-change": "resume a run under a config that changes results (the change is recorded)",
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


def changes(before: Any, now: Any, prefix: str = "") -> dict[str, dict]:
    """The dotted keys whose values differ: {key: {"before": ..., "after": ...}}."""
    if isinstance(before, dict) and isinstance(now, dict):
        out = {}
        for k in sorted(set(before) | set(now), key=str):
            out.update(changes(before.get(k), now.get(k), f"{prefix}{k}."))
        return out
    return {} if before == now else {prefix.rstrip("."): {"before": before, "after": now}}


def check_resume(run_dir: Path, schema: type, cfg: Any, allow_change: bool = False) -> dict[str, dict]:
    """Refuse to resume a run under a config that computes something else, unless `allow_change`; returns the
    changes (to record)."""
    old = config.load(schema, [run_dir / "config.yaml"])
    diff = changes(comparable(old), comparable(cfg))
    if diff and not allow_change:
        shown = ", ".join(f"{k} ({v['before']!r} -> {v['after']!r})" for k, v in list(diff.items())[:8])
        raise SystemExit(
            f"run {run_dir} was started with a different config (keys differ: {shown}); use the same config, a new "
            "run_id, or --allow-config-change to resume with the change recorded (completed stages are kept)"
        )
    return diff


def check_before_writing(cfg: Any, stages: list[dag.Stage]) -> None:
    """What can be wrong in the config beyond its schema, checked before the run directory exists."""
    try:
        if resolve_kind(cfg.executor) == "slurm" and not cluster.answers():
            raise ValueError("executor=slurm, but no Slurm controller answers `sinfo` here")
        names = {s.name for s in stages}
        unknown = sorted(set(cfg.stage_slurm) - names)
        if unknown:
            raise ValueError(f"stage_slurm names no stage of this experiment: {unknown}; stages: {sorted(names)}")
        for stage in names:
            stage_resources(cfg, stage)
    except ValueError as e:
        raise config.ConfigError(str(e)) from None


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
    check_before_writing(cfg, stages)
    if hasattr(module, "preflight"):
        module.preflight(cfg)  # may refuse (SystemExit) before a run directory exists

    repo = repo_root()
    base = Path(cfg.runs_dir) if Path(cfg.runs_dir).is_absolute() else repo / cfg.runs_dir
    run_dir = pick_run_dir(base / cfg.name, cfg.run_id)
    cfg = dataclasses.replace(cfg, run_id=run_dir.name)
    prov = provenance.collect(repo, config.config_hash(comparable(cfg)), [name, *rest], "--allow-dirty" in flags)
    with dag.run_lock(run_dir):  # before anything is written: a refused launcher leaves no record
        if (run_dir / "config.yaml").is_file():
            diff = check_resume(run_dir, module.Config, cfg, "--allow-config-change" in flags)
            record = provenance_record(run_dir)
            if diff:
                prov["config_changes"] = diff
                config.save(cfg, run_dir / "config.yaml")  # the config the run goes on with
            record.setdefault("resumes", []).append(prov)
            print(f"resuming run {run_dir}" + (f" with config changes in {', '.join(diff)}" if diff else ""))
        else:
            config.save(cfg, run_dir / "config.yaml")
            record = prov
            print(f"new run {run_dir}")
        atomic.write_json(run_dir / "provenance.json", record)
        try:
            dag.run(stages, run_dir, cfg, StageExecutor(cfg, run_dir), locked=True)
        except dag.StageFailed as e:
            print(f"error: {e}\nto resume after fixing it, run the same command with run_id={run_dir.name} (a fix to "
                  "the config also needs --allow-config-change)", file=sys.stderr)  # fmt: skip
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
    except (dag.RunInUse, OSError) as e:  # another launcher; a read-only or full disk (the message names the path)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
