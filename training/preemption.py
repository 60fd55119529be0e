"""Preemption and time limits: SIGTERM / SIGUSR2 save a checkpoint at the next step boundary, then requeue
through submitit's checkpoint protocol.

Slurm sends USR2 ahead of a time limit (submitit asks for it with --signal) and SIGTERM on preemption.
submitit's own USR2 handler calls the job's `checkpoint()` and requeues at once, in the middle of whatever
the process was doing. `Preemption` takes both signals over while training runs: the handler only notes the
signal; the trainer, between two steps, saves a consistent checkpoint on every rank and then hands over to
submitit's handler (rank 0 requeues; the resubmitted job resumes from the checkpoint). Outside submitit the
process exits with 128 + the signal number after the save.

Slurm signals every process of the job step, not only the trainer: wandb's service gets the same SIGTERM and
may die first. The save therefore never depends on a logger (training/monitor.py turns off a logger that fails).

Submit a phase as `tools.cluster.Requeueable(fn, *args)` with any submitit executor: its `checkpoint()`
resubmits the same call, which finds the checkpoint in its workdir.
"""

from __future__ import annotations

import contextlib
import signal
import sys

import submitit

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
MEANING = {signal.SIGTERM: "preempted or cancelled", signal.SIGUSR2: "the time limit is near"}


def describe(signum: int) -> str:
    """'SIGTERM (preempted or cancelled)', for the logs of a stopped run."""
    sig = signal.Signals(signum)
    return f"{sig.name} ({MEANING[sig]})" if sig in MEANING else sig.name


class Preemption:
    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in SIGNALS:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        self.signum = signum

    def uninstall(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def requested(self, info) -> int | None:
        """The signal to act on, agreed by all ranks (any rank's signal stops everyone at the same step)."""
        signum = info.max(self.signum or 0) if info.active else (self.signum or 0)
        return int(signum) or None

    def finish(self, signum: int) -> None:
        """After the checkpoint: requeue through submitit when it runs this job, else exit."""
        submitit_handler = self.previous.get(signal.SIGUSR2)
        self.uninstall()
        if callable(submitit_handler) and _under_submitit():
            # submitit: checkpoint() + requeue + exit on rank 0; other ranks return here.
            _say(f"{describe(signum)}: checkpoint saved, requeueing through submitit")
            submitit_handler(signal.SIGUSR2, None)
        _say(f"{describe(signum)}: checkpoint saved, exiting with {128 + signum}")
        sys.exit(128 + signum)


def _say(line: str) -> None:
    with contextlib.suppress(OSError):  # a closed stderr must not change how the job ends
        print(line, file=sys.stderr, flush=True)


def _under_submitit() -> bool:
    try:
        submitit.JobEnvironment()
    except RuntimeError:
        return False
    return True
