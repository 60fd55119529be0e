"""Preemption and time limits with the default monitor (wandb on, offline; the progress bar), the signal sent to
every process of the job as Slurm does (wandb's service included, which dies of it):

- through submitit's checkpoint protocol (local executor, 2 tasks = 2 FSDP ranks found through submitit's
  environment): USR2 (time limit) and SIGTERM (preemption) make both ranks save a checkpoint at the same step
  boundary, then the job is requeued and resumes from it;
- `python -m training.train` in a session of its own: SIGTERM to its process group saves, exits 143 and leaves no
  process behind; the rerun resumes from that checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil
import submitit

from tools.cluster import Requeueable
from tools.paths import PACKAGE_ROOT
from training import checkpoint as ckpt
from training import pretrain
from training.monitor import read_metrics, step_records
from training.tests.helpers import micro_recipe, python, text_shards

STEPS = 40
DEFAULT_MONITOR = ["monitor.wandb=true", "monitor.progress=true"]  # micro_recipe turns both off


def signal_all(processes: list[psutil.Process], sig: int) -> None:
    """What Slurm does on scancel, preemption or ahead of a time limit: signal every process of the job step."""
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def gone(processes: list[psutil.Process], timeout: float = 15.0) -> list[psutil.Process]:
    """The processes still alive after `timeout` seconds (zombies count as gone), killed then."""
    deadline = time.time() + timeout
    while True:
        alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.time() > deadline:
            names = [p.name() for p in alive]
            signal_all(alive, signal.SIGKILL)  # a failing run of the test must not leave them behind
            return names
        time.sleep(0.1)


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
    monkeypatch.delenv("WANDB_MODE", raising=False)
    shards = text_shards(tmp_path / "shards", chars=40_000)
    recipe = micro_recipe(f"pretrain.tokens={STEPS * 256}", "pretrain.checkpoint.every_steps=100",
                          "parallel.data_parallel=fsdp", *DEFAULT_MONITOR)  # fmt: skip
    workdir = tmp_path / "work"
    executor = submitit.LocalExecutor(folder=tmp_path / "logs")
    executor.update_parameters(timeout_min=10, tasks_per_node=2)
    job = executor.submit(Requeueable(pretrain.run, recipe, workdir, shards))

    def step_at_least(n):
        return lambda: (r := step_records(workdir / "metrics.jsonl")) and r[-1]["step"] >= n

    def job_processes(rank0_pid):  # the controller's children (the ranks) and theirs (wandb's service)
        procs = psutil.Process(rank0_pid).parent().children(recursive=True)
        assert any(p.name() == "wandb-core" for p in procs), [p.name() for p in procs]
        return procs

    first_pid = wait(lambda: events(workdir, "start") and events(workdir, "start")[0]["pid"], job)
    wait(step_at_least(5), job)
    signal_all(job_processes(first_pid), signal.SIGUSR2)  # what Slurm sends ahead of the time limit
    second = wait(lambda: events(workdir, "resume"), job)[0]
    assert second["pid"] != first_pid
    wait(step_at_least(second["step"] + 5), job)
    signal_all(job_processes(second["pid"]), signal.SIGTERM)  # what Slurm sends on preemption
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
    log = job.stderr()
    assert "SIGUSR2 (the time limit is near): checkpoint saved, requeueing" in log
    assert "SIGTERM (preempted or cancelled): checkpoint saved, requeueing" in log


def test_sigterm_to_the_process_group_checkpoints_exits_143_and_the_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    shards = text_shards(tmp_path / "shards", chars=40_000)
    work = tmp_path / "work"
    steps = 120
    cmd = [
        "-m",
        "training.train",
        "recipe=llama3_tiny",
        "phase=pretrain",
        f"workdir={work}",
        f"shards={shards}",
        "model.overrides={dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, multiple_of: 32}",
        "threads=1",
        "pretrain.batch=[{tokens: 0, batch_tokens: 256, seq_len: 32}]",
        f"pretrain.tokens={steps * 256}",
        "pretrain.data.mix={general: 0.6, math: 0.25, multilingual: 0.15}",
        "pretrain.checkpoint={every_steps: 1000, every_seconds: 0}",
    ]  # the recipe's monitor: wandb, progress bar
    proc = python(*cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = work / "metrics.jsonl"
    deadline = time.time() + 240
    while not (len(step_records(metrics)) >= 5 or proc.poll() is not None or time.time() > deadline):
        time.sleep(0.05)
    processes = psutil.Process(proc.pid).children(recursive=True)
    assert any(p.name() == "wandb-core" for p in processes), [p.name() for p in processes]
    # wandb's service runs in a session of its own: Slurm reaches it through the job's cgroup, here by pid.
    signal_all([p for p in processes if os.getpgid(p.pid) != proc.pid], signal.SIGTERM)
    os.killpg(proc.pid, signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]

    assert proc.returncode == 143, err
    assert "SIGTERM (preempted or cancelled): checkpoint saved, exiting with 143" in err and "Traceback" not in err
    preempted = events(work, "preempted")
    assert [p["signal"] for p in preempted] == [signal.SIGTERM]
    path, marker = ckpt.latest_complete(work / "checkpoints")
    assert marker["step"] == preempted[0]["step"] >= 5
    assert gone(processes) == []  # wandb's service did not outlive the trainer

    rerun = python(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = rerun.communicate(timeout=240)[1]
    assert rerun.returncode == 0, err
    assert [r["step"] for r in events(work, "resume")] == [preempted[0]["step"]]
    assert [r["step"] for r in step_records(metrics)] == list(range(1, steps + 1))
