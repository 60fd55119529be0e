"""A small real experiment for the spine's tests: numbers -> a slow, checkpointed sum -> a report."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

from experiments.config import ExperimentConfig
from experiments.dag import Stage, StageContext
from tools import atomic


@dataclass
class Config(ExperimentConfig):
    count: int = 40
    sleep: float = 0.0  # seconds per step of slow_sum, so tests can kill it mid-stage
    fail_in: str = ""  # name of a stage that raises, to test failure reporting


def _note(ctx: StageContext, what: str) -> None:
    """Append to an execution log outside the stage dirs, so tests can count what ran."""
    with open(ctx.run_dir / "executions.log", "a") as f:
        f.write(f"{ctx.name} {what}\n")


def numbers(ctx: StageContext) -> dict:
    _note(ctx, "start")
    if ctx.config.fail_in == ctx.name:
        raise ValueError(f"planted failure in {ctx.name}")
    rng = random.Random(ctx.config.seed)
    values = [rng.randint(0, 1000) for _ in range(ctx.config.count)]
    atomic.write_json(ctx.workdir / "numbers.json", values)
    return {"count": len(values)}


def slow_sum(ctx: StageContext) -> dict:
    values = json.loads((ctx.input("numbers") / "numbers.json").read_text())
    state_file = ctx.workdir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"i": 0, "total": 0}
    _note(ctx, f"start at {state['i']}")
    if ctx.config.fail_in == ctx.name:
        raise ValueError(f"planted failure in {ctx.name}")
    while state["i"] < len(values):
        time.sleep(ctx.config.sleep)
        state = {"i": state["i"] + 1, "total": state["total"] + values[state["i"]]}
        atomic.write_json(state_file, state)  # a checkpoint per step
    atomic.write_json(ctx.workdir / "sum.json", state["total"])
    return {"total": state["total"]}


def report(ctx: StageContext) -> dict:
    _note(ctx, "start")
    values = json.loads((ctx.input("numbers") / "numbers.json").read_text())
    total = json.loads((ctx.input("slow_sum") / "sum.json").read_text())
    atomic.write_json(ctx.workdir / "report.json", {"ok": total == sum(values), "total": total})
    return {"ok": total == sum(values)}


def stages(cfg: Config) -> list[Stage]:
    return [
        Stage("numbers", numbers),
        Stage("slow_sum", slow_sum, inputs=("numbers",)),
        Stage("report", report, inputs=("numbers", "slow_sum")),
    ]
