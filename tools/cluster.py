"""Slurm, for every package that submits jobs (the data pipeline's job arrays, the experiment spine's stages, the
dry-run plans): the one resource schema `SlurmConfig`, the submitit executor built from it, the sbatch script it
would submit (rendered without a cluster), and asking the controller. Job states come from `squeue`, never
`sacct`, so no accounting database is needed. `Requeueable` is submitit's checkpoint protocol, for every job that
must survive a time limit or preemption (training phases, the spine's stages). submitit's private helpers are used
here and nowhere else."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import submitit
from submitit.slurm.slurm import _make_sbatch_string

# squeue states of a job that has ended: without a result file by then, it will never write one.
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@dataclass
class SlurmConfig:
    """One job's resources (a stage's job, or each task of a data job array)."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    cpus_per_task: int = 2
    mem_gb: float = 4.0
    timeout_min: int = 60
    array_parallelism: int = 64  # job arrays: tasks running at once


class _Planner(submitit.SlurmExecutor):
    """submitit's SlurmExecutor refuses to exist where `srun` is missing; plans are rendered anywhere."""

    @classmethod
    def affinity(cls) -> int:
        return 1


def executor(folder: str | Path, cfg: SlurmConfig, plan: bool = False) -> submitit.SlurmExecutor:
    """A submitit Slurm executor whose jobs get `cfg`'s resources and log to `folder` (`plan`: no cluster needed,
    for rendering only)."""
    ex = (_Planner if plan else submitit.SlurmExecutor)(folder=folder)
    generic = dict(timeout_min=cfg.timeout_min, nodes=cfg.nodes, tasks_per_node=cfg.tasks_per_node,
                   cpus_per_task=cfg.cpus_per_task, mem_gb=cfg.mem_gb)  # fmt: skip
    if cfg.gpus_per_node:
        generic["gpus_per_node"] = cfg.gpus_per_node
    params = ex._convert_parameters(generic)  # submitit's names (time, mem="4GB", ...)
    params["array_parallelism"] = cfg.array_parallelism
    params.update({k: v for k, v in dict(partition=cfg.partition, account=cfg.account, qos=cfg.qos).items() if v})
    ex.update_parameters(**params)
    return ex


def sbatch_script(folder: str | Path, cfg: SlurmConfig, array_tasks: int | None = None) -> str:
    """The sbatch script a job (or a job array of `array_tasks` tasks) with `cfg` would be submitted with, rendered
    by submitit itself, so it is the script sbatch would receive apart from the job ids Slurm fills in."""
    ex = executor(folder, cfg, plan=True)
    return _make_sbatch_string(command=ex._submitit_command_str, folder=ex.folder, map_count=array_tasks,
                               **ex.parameters)  # fmt: skip


def with_overrides(cfg: SlurmConfig, overrides: dict, where: str) -> SlurmConfig:
    """`cfg` with some fields replaced (e.g. a stage's own resources); an unknown key is an error naming `where`."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SlurmConfig)}
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)} (known: "
                         f"{', '.join(f.name for f in dataclasses.fields(SlurmConfig))})")  # fmt: skip
    return dataclasses.replace(cfg, **overrides)


def answers() -> bool:
    """Whether a Slurm controller answers `sinfo`."""
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def job_state(job_id: str) -> str | None:
    """The job's state as squeue reports it, ended jobs included: '' once the controller has forgotten the job,
    None when squeue cannot say (e.g. the controller does not answer for a while)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True)
    if out.returncode == 0:
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    return "" if "Invalid job id" in out.stderr else None


def has_ended(job_id: str) -> bool:
    """True once squeue says the job ended or has forgotten it (False while it cannot say)."""
    state = job_state(job_id)
    return state is not None and (state == "" or state in ENDED)


class Requeueable:
    """fn(*args, **kwargs) as a submitit job that is requeued, not failed, on a time limit or preemption.

    submitit submits with --signal=USR2@90; on USR2 it calls `checkpoint()`, which resubmits the same call, and
    requeues the job: the rerun finds what fn saved in its workdir (a training phase takes the signal over to
    save at a step boundary first, see training/preemption.py). When Slurm requeues the job itself (preemption
    with PreemptMode=REQUEUE, `scontrol requeue`) it sends SIGTERM and refuses submitit's second requeue ("Job
    is pending execution"): the job then exits without a result instead of failing, and the requeued run goes on.
    """

    def __init__(self, fn, *args, **kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self):
        try:
            return self.fn(*self.args, **self.kwargs)
        except subprocess.CalledProcessError as e:
            if list(e.cmd[:2]) != ["scontrol", "requeue"]:
                raise
            name = getattr(self.fn, "__name__", repr(self.fn))
            print(f"{name}: Slurm refused the requeue (it is requeueing or ending the job itself); exiting "
                  "without a result", file=sys.stderr, flush=True)  # fmt: skip
            raise SystemExit(1) from None

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self)
