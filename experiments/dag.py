"""An ordered DAG of named stages, run inside a run directory with atomic, resumable stage outputs.

Layout of a run directory:
    config.yaml, provenance.json       written by the launcher
    events.jsonl                       one line per stage event (start, skip, done, fail)
    stages/<name>/                     a completed stage's outputs, COMPLETE.json inside (and result.json when
                                       the stage returned a typed record, see experiments/records.py)
    stages/<name>.partial/             the stage in flight: its scratch space, kept across restarts
    logs/<name>/                       the executor's stdout/stderr for the stage's job

A stage writes only into its `workdir` (the .partial directory). When its function returns, the runner
writes COMPLETE.json there and renames the directory to stages/<name> in one step, so an output that
looks complete is complete. A killed run loses at most the stage in flight; rerunning the same run id
skips completed stages and calls the interrupted stage again with its old workdir, where the stage
finds whatever it checkpointed.

A stage returns either a small JSON-able value, stored in COMPLETE.json, or a typed record
(experiments.records.Record), stored with records.write as result.json and read by later stages with
`ctx.record(name, cls)`. Paths into the .partial directory that a stage returns, or writes into its JSON files
(result.json, summary.json, ..., at most two levels down), are moved to stages/<name> on publication, so
published records point at files that exist. One launcher at a time holds a run directory (`run_lock`,
.run.lock names the holder).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import records
from tools import atomic

COMPLETE = "COMPLETE.json"
RESULT = "result.json"  # a stage's typed record (records.write)


@dataclass(frozen=True)
class Stage:
    """A named step. `fn(ctx)` must be a module-level function (it is pickled to run as a job)."""

    name: str
    fn: Callable[[StageContext], Any]
    inputs: tuple[str, ...] = ()


@dataclass
class StageContext:
    name: str
    run_dir: Path
    workdir: Path
    inputs: dict[str, Path]
    config: Any
    attempt: int = 1  # 1 on the first start of this stage, then 2, 3, ... on resumes

    def input(self, name: str) -> Path:
        if name not in self.inputs:
            raise KeyError(f"stage '{self.name}' did not declare '{name}' among its inputs {sorted(self.inputs)}")
        return self.inputs[name]

    def result(self, name: str) -> Any:
        """What the input stage `name` returned (stored in its COMPLETE.json), for stages returning plain values."""
        done = json.loads((self.input(name) / COMPLETE).read_text())
        if "record" in done:
            kind = done["record"]
            raise TypeError(f"stage '{name}' returned a {kind} record: read it with ctx.record('{name}', {kind})")
        return done["result"]

    def record(self, name: str, cls: type[records.R]) -> records.R:
        """The typed record the input stage `name` returned (its result.json), checked to be a `cls`."""
        return records.read(self.input(name) / RESULT, cls)


class DagError(ValueError):
    """The stage graph itself is wrong (duplicate names, unknown inputs, a cycle)."""


class RunInUse(RuntimeError):
    """Another launcher holds the run directory."""


class StageFailed(RuntimeError):
    def __init__(self, stage: str, cause: str, log: Path | None):
        self.stage, self.cause, self.log = stage, cause, log
        where = f"\n  log: {log}" if log else ""
        super().__init__(f"stage '{stage}' failed: {cause}{where}")


def order(stages: list[Stage]) -> list[Stage]:
    """Topological order; among stages that are ready together, the declaration order wins."""
    by_name: dict[str, Stage] = {}
    for stage in stages:
        if stage.name in by_name:
            raise DagError(f"two stages are named '{stage.name}'")
        by_name[stage.name] = stage
    for stage in stages:
        for dep in stage.inputs:
            if dep not in by_name:
                raise DagError(f"stage '{stage.name}' takes input '{dep}', which is not a stage")
    done: list[Stage] = []
    placed: set[str] = set()
    while len(done) < len(stages):
        ready = [s for s in stages if s.name not in placed and all(d in placed for d in s.inputs)]
        if not ready:
            stuck = sorted(s.name for s in stages if s.name not in placed)
            raise DagError(f"the stages {stuck} depend on each other in a cycle")
        done.append(ready[0])
        placed.add(ready[0].name)
    return done


def _event(run_dir: Path, stage: str, kind: str, **extra: Any) -> None:
    line = json.dumps({"time": time.time(), "stage": stage, "event": kind, **extra}, default=str)
    with open(run_dir / "events.jsonl", "a") as f:
        f.write(line + "\n")


def completed(run_dir: Path, stage: str) -> bool:
    return (run_dir / "stages" / stage / COMPLETE).is_file()


def _exit_when_gone(pid: int) -> None:
    """Runs in a local job: end it soon after the launcher that started it dies (e.g. kill -9)."""
    while True:
        time.sleep(0.5)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            state = "X"
        if state in ("Z", "X"):
            os._exit(137)


def run_stage_job(fn: Callable[[StageContext], Any], ctx: StageContext, launcher_pid: int | None) -> Any:
    """The function each stage's job executes (locally, on Slurm, or in-process for debugging)."""
    if launcher_pid is not None:
        threading.Thread(target=_exit_when_gone, args=(launcher_pid,), daemon=True).start()
    # One job at a time in a workdir: a job orphaned by a killed launcher still holds the lock until
    # its watchdog ends it, and the resumed job waits for that.
    with open(ctx.workdir / ".job.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return fn(ctx)


@dataclass
class RunResult:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory (created if need be) for this launcher; while another holds it, RunInUse. Take it
    before writing anything into the run directory (config, provenance)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".run.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another launcher"
            raise RunInUse(f"run directory {run_dir} is in use by {holder}; wait for it to end") from None
        lock.truncate(0)
        lock.write(f"the launcher with pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        yield


def run(stages: list[Stage], run_dir: Path, config: Any, executor: Any, log=print, locked: bool = False) -> RunResult:
    """Execute the stages in order, skipping completed ones. `executor` is an executors.StageExecutor; `locked`:
    the caller holds run_lock(run_dir) already."""
    run_dir = Path(run_dir)
    if not locked:
        with run_lock(run_dir):
            return run(stages, run_dir, config, executor, log, locked=True)
    (run_dir / "stages").mkdir(parents=True, exist_ok=True)
    result = RunResult()
    ordered = order(stages)
    for i, stage in enumerate(ordered, 1):
        head = f"[{i}/{len(ordered)}] {stage.name}"
        if completed(run_dir, stage.name):
            log(f"{head}: already complete, skipped")
            _relocate_records(run_dir / "stages" / stage.name, _partial(run_dir, stage))  # if killed while moving
            _event(run_dir, stage.name, "skip")
            result.skipped.append(stage.name)
        else:
            _run_one(stage, run_dir, config, executor, lambda msg, h=head: log(f"{h}: {msg}"))
            result.ran.append(stage.name)
    return result


def _partial(run_dir: Path, stage: Stage) -> Path:
    return run_dir / "stages" / f"{stage.name}.partial"


def _moved(value: Any, old: str, new: str) -> Any:
    """`value` (JSON data) with every string that is `old` or a path under it moved to `new`."""
    if isinstance(value, str):
        return new + value[len(old) :] if value == old or value.startswith(old + "/") else value
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    return value


def _relocate_records(final: Path, partial: Path) -> None:
    """Rewrite the published stage's JSON files (two levels down) that still name paths in its .partial dir."""
    for path in [*final.glob("*.json"), *final.glob("*/*.json")]:
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # not JSON data of ours
        moved = _moved(data, str(partial), str(final))
        if moved != data:
            atomic.write_json(path, moved)


def _run_one(stage: Stage, run_dir: Path, config: Any, executor: Any, log) -> None:
    workdir = _partial(run_dir, stage)
    attempt = _next_attempt(workdir)
    ctx = StageContext(
        name=stage.name,
        run_dir=run_dir,
        workdir=workdir,
        inputs={d: run_dir / "stages" / d for d in stage.inputs},
        config=config,
        attempt=attempt,
    )
    log(f"resuming (attempt {attempt})" if attempt > 1 else "running")
    _event(run_dir, stage.name, "start", attempt=attempt)
    start = time.time()
    try:
        value = executor.run(stage, ctx)
    except StageFailed as e:
        _event(run_dir, stage.name, "fail", cause=e.cause, log=e.log)
        raise
    seconds = time.time() - start
    final = run_dir / "stages" / stage.name
    summary = {"stage": stage.name, "seconds": seconds, "attempts": attempt, "finished": time.time()}
    if records.is_record(value):  # its paths into the workdir are moved by _relocate_records below
        records.write(workdir / RESULT, value)
        summary["record"] = type(value).__name__
    else:
        summary["result"] = _moved(json.loads(json.dumps(value, default=str)), str(workdir), str(final))
    atomic.write_json(workdir / COMPLETE, summary)
    (workdir / ".job.lock").unlink(missing_ok=True)
    atomic.publish_directory(workdir, final)
    _relocate_records(final, workdir)
    _event(run_dir, stage.name, "done", seconds=seconds)
    log(f"done in {seconds:.1f}s -> {final}")


def _next_attempt(workdir: Path) -> int:
    """Create the workdir if needed and count how many times the stage has been started in it."""
    workdir.mkdir(parents=True, exist_ok=True)
    counter = workdir / ".attempts"
    attempt = int(counter.read_text()) + 1 if counter.exists() else 1
    atomic.write_text(counter, str(attempt))
    return attempt
