"""Stage executors on top of submitit: local processes, Slurm jobs, or in-process for debugging.

`executor=auto` picks Slurm when `srun` is on PATH and a controller answers `sinfo`, and local processes
otherwise. Slurm parameters come from the experiment config (`slurm`, overridden per stage by
`stage_slurm.<stage>`). Job states come from `squeue`, so no accounting database (sacct) is needed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import submitit

from experiments.config import ExperimentConfig, SlurmConfig
from experiments.dag import Stage, StageContext, StageFailed, run_stage_job
from tools import atomic

KINDS = ("auto", "local", "slurm", "debug")
# squeue states after which a job that wrote no result will never write one.
SLURM_FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}

# submitit asks sacct for states and warns on every poll when accounting is off; squeue is used instead.
logging.getLogger("submitit").setLevel(logging.ERROR)


def slurm_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def resolve_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"executor must be one of {KINDS}, got '{kind}'")
    if kind == "auto":
        return "slurm" if shutil.which("srun") and slurm_answers() else "local"
    return kind


def slurm_state(job_id: str) -> str:
    """The job's state as squeue reports it ('' once it has left the queue)."""
    out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def stage_resources(cfg: ExperimentConfig, stage: str) -> SlurmConfig:
    override = dict(cfg.stage_slurm.get(stage, {}))
    unknown = set(override) - {f.name for f in dataclasses.fields(SlurmConfig)}
    if unknown:
        raise ValueError(f"stage_slurm.{stage} has unknown keys {sorted(unknown)}")
    return dataclasses.replace(cfg.slurm, **override)


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
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = dict(
        timeout_min=res.timeout_min,
        nodes=res.nodes,
        tasks_per_node=res.tasks_per_node,
        cpus_per_task=res.cpus_per_task,
        mem_gb=res.mem_gb,
        slurm_array_parallelism=res.array_parallelism,
    )
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.partition:
        params["slurm_partition"] = res.partition
    if res.account:
        params["slurm_account"] = res.account
    if res.qos:
        params["slurm_qos"] = res.qos
    ex.update_parameters(**params)
    return ex


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

    def run(self, stage: Stage, ctx: StageContext) -> Any:
        folder = self.run_dir / "logs" / stage.name
        job = self._reattach(ctx) or self._submit(stage, ctx, folder)
        return self._wait(stage.name, job)

    def _submit(self, stage: Stage, ctx: StageContext, folder: Path):
        ex = make_executor(self.kind, folder, stage_resources(self.cfg, stage.name))
        # Local jobs watch the launcher's pid and end themselves if it is killed.
        watch = os.getpid() if self.kind == "local" else None
        job = ex.submit(run_stage_job, stage.fn, ctx, watch)
        if self.kind == "slurm":
            atomic.write_json(ctx.workdir / ".slurm_job.json", {"job_id": job.job_id, "folder": str(folder)})
        if self.kind != "debug":
            self.log(f"    job {job.job_id}, log {job.paths.stdout}")
        return job

    def _reattach(self, ctx: StageContext):
        """On resume under Slurm, wait for the stage's job if it is still queued or running."""
        record = ctx.workdir / ".slurm_job.json"
        if self.kind != "slurm" or not record.exists():
            return None

        info = json.loads(record.read_text())
        job = submitit.SlurmJob(folder=info["folder"], job_id=info["job_id"])
        state = slurm_state(job.job_id)
        if state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"):
            self.log(f"    re-attached to Slurm job {job.job_id} ({state})")
            return job
        return None

    def _finished(self, job) -> bool:
        # For Slurm, look for the result file only: job.done() would also ask sacct (no accounting here).
        return job.paths.result_pickle.exists() if self.kind == "slurm" else job.done()

    def _wait(self, stage: str, job) -> Any:
        bound = self.cfg.wait_timeout_min * 60 if self.cfg.wait_timeout_min > 0 else None
        start = time.time()
        if not isinstance(job, submitit.DebugJob):
            while not self._finished(job):
                if bound is not None and time.time() - start > bound:
                    job.cancel(check=False)
                    raise StageFailed(
                        stage, f"no result after {self.cfg.wait_timeout_min} min; job cancelled", Path(job.paths.stderr)
                    )
                time.sleep(0.5)
        try:
            return job.result()
        except Exception as e:
            cause = _last_error_line(str(e)) or type(e).__name__
            log = None if isinstance(job, submitit.DebugJob) else Path(job.paths.stderr)
            raise StageFailed(stage, cause, log) from e
