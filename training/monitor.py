"""Monitoring: a local metrics JSONL, wandb (offline unless WANDB_MODE says otherwise), a progress bar with
ETA, MFU from the model's FLOPs per token and a device peak table, and a loss/LR PNG per stage.

metrics.jsonl holds one line per logged step (step, tokens, loss, lr, grad_norm, seq_len, batch_tokens,
tokens_per_s, mfu, mem_gb, phase) and one line per event ({"event": kind, "step": ..., ...}: resume,
checkpoint, spike, rollback, preempted, torn_checkpoint, valid, gate, ...). On resume the lines after the
checkpoint's step are dropped, so the file always tells the story of the run that produced the weights.

wandb, the progress bar and the event lines on stderr are loggers: monitoring never stops training, so a logger
call that fails (wandb's service killed by the job's SIGTERM, a closed stderr) is logged once and that logger is
off for the rest of the phase; wandb's finish is waited for at most WANDB_TIMEOUT_S (less on preemption).
metrics.jsonl is the run's record, not a logger: failing to write it (a full disk) stops the run like a failing
checkpoint would.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from model import accounting
from model.llama import ModelArgs
from tools import atomic
from training.config import MonitorConfig

log = logging.getLogger(__name__)
WANDB_TIMEOUT_S = 30.0  # the longest wandb's finish may hold up the end of a phase

# Dense bf16 peak FLOP/s per device (vendor datasheets, without sparsity).
PEAK_FLOPS = {
    "h100": 989e12,  # H100 SXM
    "h100 pcie": 756e12,
    "h200": 989e12,
    "gh200": 989e12,
    "a100": 312e12,
    "l40s": 362e12,
    "l4": 121e12,
    "a10": 125e12,
    "mi300x": 1307e12,
}


def flops_per_token(args: ModelArgs, seq_len: int) -> float:
    """Training FLOPs per token for MFU: model/accounting.py's PaLM convention (no causal discount)."""
    return accounting.flops_per_token(args, seq_len)


def device_key(name: str) -> str | None:
    low = name.lower()
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if all(part in low for part in key.split()):
            return key
    return None


@functools.cache
def measured_cpu_flops() -> float:
    """This CPU's fp32 matmul rate with torch's current threads (about 0.2 s to measure)."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.2:
        a @ b
        n += 1
    return 2 * 512**3 * n / (time.perf_counter() - start)


def peak_flops(device: torch.device, configured: float = 0.0) -> float:
    if configured > 0:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = device_key(name)
        if key is None:
            raise ValueError(f"no peak FLOP/s known for GPU '{name}': set monitor.peak_flops")
        return PEAK_FLOPS[key]
    return measured_cpu_flops()


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl. A last line without its newline is not one: a record being written as
    this reads (a live run), or one a kill cut short (a resume's `truncate` drops it)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]


def step_records(path: Path, phase: str | None = None) -> list[dict]:
    return [r for r in read_metrics(path) if "event" not in r and (phase is None or r.get("phase") == phase)]


class Monitor:
    def __init__(self, workdir: Path, cfg: MonitorConfig, main: bool, phase: str, config: dict | None = None):
        self.workdir, self.cfg, self.main, self.phase = Path(workdir), cfg, main, phase
        self.path = self.workdir / "metrics.jsonl"
        self.bar = None
        self.run = None
        self.echo = main  # the event lines on stderr
        if main and cfg.wandb and os.environ.get("WANDB_MODE") != "disabled":
            self._start_wandb(config or {})

    def _start_wandb(self, config: dict) -> None:
        try:
            import wandb

            run_id = hashlib.sha1(f"{self.workdir.resolve()}:{self.phase}".encode()).hexdigest()[:16]
            self.run = wandb.init(
                project=self.cfg.wandb_project,
                name=f"{self.workdir.name}-{self.phase}",
                id=run_id,
                resume="allow",
                dir=str(self.workdir),
                mode=os.environ.get("WANDB_MODE", "offline"),
                config=config,
                settings=wandb.Settings(silent=True, console="off"),
            )
        except Exception as e:  # monitoring must never stop training
            log.warning("wandb could not start (%s); metrics go to %s only", e, self.path)
            self.run = None

    def _guard(self, logger: str, fn: Callable, *args, **kwargs) -> None:
        """Call a logger; if it fails, say so once and turn that logger off (training goes on)."""
        try:
            fn(*args, **kwargs)
        except Exception as e:  # whatever a logger raises, it must not stop training
            log.warning("%s failed (%s: %s); it is off for the rest of %s, metrics go on to %s",
                        logger, type(e).__name__, e, self.phase, self.path)  # fmt: skip
            if logger == "wandb":
                self.run = None
                _bounded(_wandb_teardown, 5.0)  # drops wandb's exit hook, which would fail the same way
            elif logger == "progress bar":
                self.bar = None
            else:
                self.echo = False

    def _write(self, record: dict) -> None:
        if not self.main:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:  # a full disk: say which file (a failed write names none)
            raise OSError(e.errno, f"{e.strerror} while writing {self.path}", e.filename or str(self.path)) from e

    def truncate(self, step: int) -> None:
        """Drop what was logged after `step` of this phase (the steps a resume will redo)."""
        if not self.main or not self.path.is_file():
            return
        keep = [r for r in read_metrics(self.path) if r.get("phase") != self.phase or r.get("step", 0) <= step]
        atomic.write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def step(self, record: dict) -> None:
        record = {"phase": self.phase, **record}
        self._write(record)
        if self.run is not None:
            values = {f"{self.phase}/{k}": v for k, v in record.items() if isinstance(v, int | float)}
            self._guard("wandb", self.run.log, values)
        if self.bar is not None:
            postfix = {"loss": f"{record['loss']:.4f}", "lr": f"{record['lr']:.2e}"}
            self._guard("progress bar", self.bar.set_postfix, postfix, refresh=False)

    def event(self, kind: str, **fields) -> None:
        record = {"event": kind, "phase": self.phase, "time": time.time(), **fields}
        self._write(record)
        if self.echo:
            text = " ".join(f"{k}={v}" for k, v in fields.items())
            self._guard("stderr", print, f"[{self.phase}] {kind}: {text}", file=sys.stderr, flush=True)
        if self.run is not None:
            values = {f"{self.phase}/{kind}/{k}": v for k, v in fields.items() if isinstance(v, int | float)}
            self._guard("wandb", self.run.log, {f"{self.phase}/event/{kind}": 1, **values})

    def start_progress(self, total_tokens: int, done_tokens: int, desc: str) -> None:
        if not (self.main and self.cfg.progress):
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=total_tokens,
            initial=done_tokens,
            desc=desc,
            unit="tok",
            unit_scale=True,
            dynamic_ncols=True,
            mininterval=1.0,
            file=sys.stderr,
        )

    def advance(self, tokens: int) -> None:
        if self.bar is not None:
            self._guard("progress bar", self.bar.update, tokens)

    def stop_progress(self) -> None:
        if self.bar is not None:
            bar, self.bar = self.bar, None
            self._guard("progress bar", bar.close)

    def plot(self, name: str, phase: str | None = None) -> Path | None:
        """metrics.jsonl -> plots/<name>.png: loss (and validation loss) and LR against tokens."""
        if not self.main:
            return None
        records = step_records(self.path, phase or self.phase)
        if not records:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        tokens = [r["tokens"] for r in records]
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        ax1.plot(tokens, [r["loss"] for r in records], lw=1, label="train")
        valid = [r for r in read_metrics(self.path) if r.get("event") == "valid" and r.get("phase") == self.phase]
        if valid:
            ax1.plot([r["tokens"] for r in valid], [r["loss"] for r in valid], "o-", label="valid")
        ax1.set_ylabel("loss")
        ax1.legend()
        ax1.set_title(f"{self.workdir.name}: {name}")
        ax2.plot(tokens, [r["lr"] for r in records], color="tab:orange", lw=1)
        ax2.set_ylabel("learning rate")
        ax2.set_xlabel("tokens")
        fig.tight_layout()
        out = self.workdir / "plots" / f"{name}.png"
        with atomic.replacing(out, ".png") as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        return out

    def close(self, timeout: float = WANDB_TIMEOUT_S) -> None:
        """Stop the progress bar and finish wandb (waiting at most `timeout` s); never raises for them."""
        self.stop_progress()
        if self.run is not None:
            run, self.run = self.run, None
            error = _bounded(run.finish, timeout)
            if error:
                log.warning("wandb could not finish (%s); its offline files in %s may lack the last steps",
                            error, self.workdir / "wandb")  # fmt: skip
                _bounded(_wandb_teardown, 5.0)


def _wandb_teardown() -> None:
    import wandb

    wandb.teardown()


def _bounded(fn: Callable[[], object], timeout: float) -> str | None:
    """fn() in a daemon thread, waited for at most `timeout` seconds: None if it returned, else what went wrong
    (a hung logger is left behind rather than holding up training or its exit)."""
    outcome: list[str | None] = []

    def target():
        try:
            fn()
            outcome.append(None)
        except BaseException as e:  # reported to the caller (wandb's teardown may sys.exit)
            outcome.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=target, name="monitor-logger", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"
