"""Asking the Slurm controller, for every package that submits jobs (the data pipeline's job arrays, the experiment
spine's stages) and for the tests that need a cluster. Job states come from `squeue`, never `sacct`, so no
accounting database is needed. `Requeueable` is submitit's checkpoint protocol, for every job that must survive a
time limit or preemption (training phases, the spine's stages)."""

from __future__ import annotations

import subprocess
import sys

import submitit

from tools.paths import PACKAGE_ROOT

# squeue states of a job that has ended: without a result file by then, it will never write one.
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


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


def ensure_single_node() -> None:
    """For tests: start the single-node Slurm of tools/slurm/start.sh when no controller answers (as root;
    .ci/run starts it before the tests)."""
    if not answers():
        out = subprocess.run([str(PACKAGE_ROOT / "tools/slurm/start.sh")], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"no Slurm controller and tools/slurm/start.sh failed:\n{out.stderr}")
    if not answers():
        raise RuntimeError("tools/slurm/start.sh ran but no Slurm controller answers sinfo")


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
