"""Preemption through submitit's checkpoint protocol (local executor, 2 tasks = 2 FSDP ranks found through
submitit's environment): USR2 (time limit) and SIGTERM (preemption) to rank 0 make both ranks save a checkpoint at
the same step boundary, then the job is requeued and resumes from it."""

from __future__ import annotations

import os
import signal
import time

import submitit

from tools.cluster import Requeueable
from tools.paths import PACKAGE_ROOT
from training import pretrain
from training.monitor import read_metrics, step_records
from training.tests.helpers import micro_recipe, text_shards

STEPS = 40


def events(workdir, kind):
    return [r for r in read_metrics(workdir / "metrics.jsonl") if r.get("event") == kind]


def wait(predicate, job, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        assert not job.done(), job.stderr()
        time.sleep(0.05)
    raise TimeoutError("the job did not get there in time")


def test_usr2_and_sigterm_checkpoint_and_requeue_through_submitit(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])))
    shards = text_shards(tmp_path / "shards", chars=40_000)
    recipe = micro_recipe(f"pretrain.tokens={STEPS * 256}", "pretrain.checkpoint.every_steps=100",
                          "parallel.data_parallel=fsdp")  # fmt: skip
    workdir = tmp_path / "work"
    executor = submitit.LocalExecutor(folder=tmp_path / "logs")
    executor.update_parameters(timeout_min=10, tasks_per_node=2)
    job = executor.submit(Requeueable(pretrain.run, recipe, workdir, shards))

    def step_at_least(n):
        return lambda: (r := step_records(workdir / "metrics.jsonl")) and r[-1]["step"] >= n

    first_pid = wait(lambda: events(workdir, "start") and events(workdir, "start")[0]["pid"], job)
    wait(step_at_least(5), job)
    os.kill(first_pid, signal.SIGUSR2)  # what Slurm sends ahead of the time limit
    second = wait(lambda: events(workdir, "resume"), job)[0]
    assert second["pid"] != first_pid
    wait(step_at_least(second["step"] + 5), job)
    os.kill(second["pid"], signal.SIGTERM)  # what Slurm sends on preemption
    summaries = job.results()

    assert [s["steps"] for s in summaries] == [STEPS, STEPS] and summaries[0]["resumed_from"]
    assert events(workdir, "start")[0]["world"] == 2
    preempted, resumed = events(workdir, "preempted"), events(workdir, "resume")
    assert [p["signal"] for p in preempted] == [signal.SIGUSR2, signal.SIGTERM]
    assert [r["step"] for r in resumed] == [p["step"] for p in preempted]  # each run resumes where the last saved
    assert [r["step"] for r in step_records(workdir / "metrics.jsonl")] == list(range(1, STEPS + 1))
    # Checkpoints were only written by the preemptions (every_steps=100) and at the end, by both ranks.
    saved = [e["step"] for e in events(workdir, "checkpoint")]
    assert saved == [p["step"] for p in preempted] + [STEPS]
    assert all(len(list((workdir / "checkpoints" / f"step_{s:08d}").glob("*.distcp"))) == 2 for s in saved[-1:])
