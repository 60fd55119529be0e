"""Faults on CPU: kill -9 at an arbitrary step, then resume, repeats the uninterrupted loss curve bit for bit;
SIGTERM saves a checkpoint at the next step boundary and exits, and the rerun continues from it."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

from tools import config as tools_config
from training import pretrain
from training.monitor import read_metrics, step_records
from training.tests.helpers import micro_recipe, python, text_shards

STEPS = 48
OVERRIDES = ("pretrain.tokens=12288", "pretrain.checkpoint.every_steps=5", "pretrain.checkpoint.keep_last=1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    shards = text_shards(root / "shards", chars=60_000)
    recipe = micro_recipe(*OVERRIDES)
    tools_config.save(recipe, root / "recipe.yaml")
    pretrain.run(recipe, root / "reference", shards)
    reference = step_records(root / "reference/metrics.jsonl")
    assert [r["step"] for r in reference] == list(range(1, STEPS + 1))
    return root, shards, reference


def start(root, shards, workdir):
    return python("-m", "training.train", f"recipe={root / 'recipe.yaml'}", "phase=pretrain", f"workdir={workdir}",
                  f"shards={shards}", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def wait_for_step(workdir, step: int, proc, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = step_records(workdir / "metrics.jsonl")
        if done and done[-1]["step"] >= step:
            return done[-1]["step"]
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    raise TimeoutError(f"no step {step} within {timeout}s")


def assert_same_curve(workdir, reference):
    got = step_records(workdir / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))  # every step once: the redone ones replaced
    assert [r["loss"] for r in got] == [r["loss"] for r in reference]  # bit for bit
    assert [r["grad_norm"] for r in got] == [r["grad_norm"] for r in reference]


def test_sigterm_then_kill_9_then_resume_repeats_the_uninterrupted_curve_bit_for_bit(setup):
    root, shards, reference = setup
    workdir = root / "run"
    # 1. SIGTERM: a checkpoint of the step it stopped at, then exit 128 + 15.
    proc = start(root, shards, workdir)
    wait_for_step(workdir, 6, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.stderr.read().decode()[-2000:]
    events = [r for r in read_metrics(workdir / "metrics.jsonl") if "event" in r]
    preempted = [e for e in events if e["event"] == "preempted"]
    assert len(preempted) == 1 and preempted[0]["signal"] == signal.SIGTERM
    saved = [e for e in events if e["event"] == "checkpoint"][-1]
    assert saved["step"] == preempted[0]["step"]
    # 2. The rerun resumes from that step; kill -9 it at an arbitrary later step.
    proc = start(root, shards, workdir)
    kill_at = random.Random(0).randint(preempted[0]["step"] + 8, 40)
    reached = wait_for_step(workdir, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached < STEPS
    resumed = [r for r in read_metrics(workdir / "metrics.jsonl") if r.get("event") == "resume"]
    assert [r["step"] for r in resumed] == [preempted[0]["step"]]
    # 3. The third run resumes from the last complete checkpoint (every 5 steps) and finishes.
    proc = start(root, shards, workdir)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    resumed = [r for r in read_metrics(workdir / "metrics.jsonl") if r.get("event") == "resume"]
    assert len(resumed) == 2 and resumed[1]["step"] % 5 == 0 and resumed[1]["step"] <= reached
    assert_same_curve(workdir, reference)
