"""Helpers for tests that drive the real single-node Slurm (tools/slurm/start.sh): bringing it up, a git
checkout to launch from, bounded waits that speed up requeued jobs and name the Slurm logs when they fail."""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REQUEUE_SETTLE_S = 3.0


def stage_dir(run: Path, stage: str) -> Path:
    """The stage's directory: its workdir while in flight, the published one once complete."""
    done = run / "stages" / stage
    return done if done.is_dir() else run / "stages" / f"{stage}.partial"


def job_id(run: Path, stage: str) -> str | None:
    """The Slurm job of a stage, as the executor recorded it."""
    record = stage_dir(run, stage) / ".slurm_job.json"
    return json.loads(record.read_text())["job_id"] if record.is_file() else None


def state_and_reason(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T %r"], capture_output=True, text=True)
    return out.stdout.strip()


def release_requeued(job: str | None) -> None:
    """Start a requeued job soon. Slurm holds a requeued batch job until its old credential has expired
    (AuthInfo cred_expire, 120 s by default; squeue shows reason BeginTime); the tests start it early, as an
    admin can. Not at once: a job started in the second its old credential was revoked is killed ("Job
    credential revoked"), so only once it has been pending a few seconds (squeue's submit time is the
    requeue's)."""
    if not job:
        return
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r|%V"], capture_output=True, text=True)
    fields = out.stdout.strip().split("|")
    if len(fields) != 3 or fields[:2] != ["PENDING", "BeginTime"]:
        return
    requeued = datetime.datetime.strptime(fields[2], "%Y-%m-%dT%H:%M:%S").timestamp()
    if time.time() - requeued >= REQUEUE_SETTLE_S:
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)


def logs_report(run: Path, stage: str, lines: int = 15) -> str:
    """The stage's Slurm log files, with the tail of each."""
    folder = run / "logs" / stage
    files = sorted(folder.glob("*_log.*")) if folder.is_dir() else []
    if not files:
        return f"no Slurm logs under {folder}"
    parts = []
    for f in files:
        tail = f.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {f}\n" + "\n".join(tail))
    return "\n".join(parts)


def wait_for(check: Callable[[], object], what: str, run: Path, stage: str, timeout: float = 180.0, proc=None):
    """Poll `check` until it returns something truthy (returned), releasing the stage's job from a requeue's
    BeginTime hold meanwhile; fail after `timeout` seconds, or when the launcher `proc` exits, naming the job's
    state and its log files."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        job = job_id(run, stage)
        release_requeued(job)
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(
                f"the launcher exited ({proc.returncode}) before {what}:\n{out}\n{logs_report(run, stage)}"
            )
        time.sleep(0.1)
    job = job_id(run, stage)
    state = state_and_reason(job) if job else "not submitted"
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; Slurm job {job}: {state}\n"
                         + logs_report(run, stage))  # fmt: skip


def job_pids(run: Path, stage: str) -> list[int]:
    """The processes running the stage's job: submitit's runner, given the stage's log folder."""
    folder = str(run / "logs" / stage)
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        runner = b"submitit.core._submit" in args and folder.encode() in args
        if runner and Path(args[0].decode(errors="replace")).name != "srun":  # not srun, which names it too
            pids.append(int(cmdline.parent.name))
    return pids


def cancel(run: Path, stage: str) -> None:
    """Cancel the stage's job if it is still around (cleanup after a failed test)."""
    job = job_id(run, stage)
    if job:
        subprocess.run(["scancel", job], capture_output=True)
