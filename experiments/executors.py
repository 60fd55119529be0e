"""Stage executors on top of submitit: local processes, Slurm jobs, or in-process for debugging.

`executor=auto` picks Slurm when `srun` is on PATH and a controller answers `sinfo`, and local processes
otherwise. Slurm parameters come from the experiment config (`slurm`, overridden per stage by
`stage_slurm.<stage>`). Job states come from `squeue`, so no accounting database (sacct) is needed.

Every stage runs as a `tools.cluster.Requeueable` job (submitit's checkpoint protocol): a Slurm time-limit or
preemption signal requeues the job, and the rerun calls the stage again in the same workdir, where it finds
its checkpoints. A job of several tasks (`tasks_per_node`, `nodes`) calls the stage once per task (rank).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import submitit

from experiments import dag
from experiments.config import ExperimentConfig
from experiments.dag import Stage, StageContext, StageFailed, run_stage_job
from tools import atomic, cluster
from tools.cluster import SlurmConfig

KINDS = ("auto", "local", "slurm", "debug")
# How long a job may look ended without its result file before the stage fails: the file can show up late on
# a network filesystem, and a job being requeued passes through states quickly.
ENDED_GRACE_S = 10.0
SQUEUE_EVERY_S = 2.0  # result files are looked for every 0.5 s; squeue is asked less often


def resolve_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"executor must be one of {KINDS}, got '{kind}'")
    if kind == "auto":
        return "slurm" if shutil.which("srun") and cluster.answers() else "local"
    return kind


def task_rank() -> int:
    """This task's global rank inside a submitit job (0 outside one)."""
    try:
        return submitit.JobEnvironment().global_rank
    except RuntimeError:
        return 0


def run_stage_task(fn, ctx: StageContext, launcher_pid: int | None) -> Any:
    """One task of a stage's job. Rank 0 runs the stage under the spine (workdir lock, result); in a job of
    several tasks (`tasks_per_node`, `nodes`) the other ranks call the stage directly: they are its ranks."""
    if task_rank() == 0:
        return run_stage_job(fn, ctx, launcher_pid)
    if launcher_pid is not None:
        threading.Thread(target=dag._exit_when_gone, args=(launcher_pid,), daemon=True).start()
    return fn(ctx)


def stage_resources(cfg: ExperimentConfig, stage: str) -> SlurmConfig:
    return cluster.with_overrides(cfg.slurm, dict(cfg.stage_slurm.get(stage, {})), f"stage_slurm.{stage}")


def make_executor(kind: str, folder: Path, res: SlurmConfig) -> submitit.Executor:
    """A submitit executor of the given kind whose logs go to `folder`."""
    if kind == "debug":
        return submitit.DebugExecutor(folder=folder)
    if kind == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(
            timeout_min=res.timeout_min, tasks_per_node=res.tasks_per_node, nodes=1, gpus_per_node=res.gpus_per_node
        )
        return ex
    return cluster.executor(folder, res)


def _last_error_line(message: str) -> str:
    """submitit's FailedJobError holds the job's traceback between dashed lines: keep its last line."""
    parts = message.split("----------------------")
    trace = parts[1] if len(parts) >= 3 else message
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class StageExecutor:
    """Runs one stage as one submitit job and waits for it, turning failures into StageFailed."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, log=print):
        self.cfg, self.run_dir, self.log = cfg, Path(run_dir), log
        self.kind = resolve_kind(cfg.executor)
        # submitit asks sacct for states and warns on every poll when accounting is off; squeue is used
        # instead. Only the launcher is quietened: the jobs keep submitit's log of signals and requeues.
        logging.getLogger("submitit").setLevel(logging.ERROR)

    def run(self, stage: Stage, ctx: StageContext) -> Any:
        folder = self.run_dir / "logs" / stage.name
        job = self._reattach(ctx) or self._submit(stage, ctx, folder)
        return self._wait(stage.name, job)

    def _submit(self, stage: Stage, ctx: StageContext, folder: Path):
        res = stage_resources(self.cfg, stage.name)
        ex = make_executor(self.kind, folder, res)
        # Local jobs watch the launcher's pid and end themselves if it is killed.
        watch = os.getpid() if self.kind == "local" else None
        job = ex.submit(cluster.Requeueable(run_stage_task, stage.fn, ctx, watch))
        tasks = res.nodes * res.tasks_per_node if self.kind == "slurm" else res.tasks_per_node
        if self.kind == "slurm":
            record = {"job_id": job.job_id, "folder": str(folder), "tasks": tasks}
            atomic.write_json(ctx.workdir / ".slurm_job.json", record)
        if self.kind != "debug":
            self.log(f"    job {job.job_id}, log {job.paths.stdout}" + (f" ({tasks} tasks)" if tasks > 1 else ""))
        return job

    def _reattach(self, ctx: StageContext):
        """On resume under Slurm, wait for the stage's job if it is still queued or running."""
        record = ctx.workdir / ".slurm_job.json"
        if self.kind != "slurm" or not record.exists():
            return None

        info = json.loads(record.read_text())
        job = submitit.SlurmJob(folder=info["folder"], job_id=info["job_id"], tasks=range(info.get("tasks", 1)))
        state = cluster.job_state(job.job_id)
        if state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"):
            self.log(f"    re-attached to Slurm job {job.job_id} ({state})")
            return job
        return None

    def _finished(self, job) -> bool:
        # For Slurm, look for the result files only: job.done() would also ask sacct (no accounting here).
        if self.kind == "slurm":
            return all(t.paths.result_pickle.exists() for t in _tasks(job))
        return job.done()

    def _wait(self, stage: str, job) -> Any:
        bound = self.cfg.wait_timeout_min * 60 if self.cfg.wait_timeout_min > 0 else None
        start = time.time()
        next_check, ended_since = start, None
        if not isinstance(job, submitit.DebugJob):
            while not self._finished(job):
                now = time.time()
                if bound is not None and now - start > bound:
                    job.cancel(check=False)
                    raise StageFailed(
                        stage, f"no result after {self.cfg.wait_timeout_min} min; job cancelled", Path(job.paths.stderr)
                    )
                if self.kind == "slurm" and now >= next_check:
                    # A job that ended (or that the controller forgot) without its result files: collect what
                    # there is, which names the failing task or the missing result.
                    next_check = now + SQUEUE_EVERY_S
                    ended = cluster.has_ended(job.job_id)
                    ended_since = (ended_since or now) if ended else None
                    if ended_since is not None and now - ended_since > ENDED_GRACE_S:
                        break
                time.sleep(0.5)
        return self._collect(stage, job)

    def _collect(self, stage: str, job) -> Any:
        """The stage's value (rank 0's result), or StageFailed naming the first failing task's log."""
        tasks = _tasks(job)
        logs = [None if isinstance(t, submitit.DebugJob) else Path(t.paths.stderr) for t in tasks]
        present = [self.kind != "slurm" or t.paths.result_pickle.exists() for t in tasks]
        values = []
        for task, log, there in zip(tasks, logs, present):
            if not there:
                continue
            try:
                values.append(task.result())
            except Exception as e:
                raise StageFailed(stage, _last_error_line(str(e)) or type(e).__name__, log) from e
        if not all(present):
            missing = present.index(False)
            state = cluster.job_state(job.job_id) or "no longer known to squeue"
            cause = f"Slurm job {job.job_id} ended ({state}) without a result from task {missing}"
            raise StageFailed(stage, cause, logs[missing])
        return values[0]


def _tasks(job) -> list:
    """The job's tasks (ranks), each with its own log and result file."""
    if isinstance(job, submitit.DebugJob):
        return [job]
    return [job.task(i) for i in range(job.num_tasks)]
