"""Training stages on the real single-node Slurm, through the experiment spine (tools/slurm/start.sh; .ci/run
starts it, and so does this module when it runs as root and no controller answers).

- A 2-task job (two ranks found through submitit's environment, FSDP2 on gloo) trains the micro model with
  the loss curve of one process on the same global batch.
- Preemption mid-training, as Slurm does it: USR2 (the time-limit warning submitit asks for with
  --signal=USR2@90; the job requeues itself) and then `scontrol requeue` (Slurm requeues the job itself and
  sends SIGTERM, as in preemption with PreemptMode=REQUEUE). Each time both ranks checkpoint at the same
  step, the same job is requeued and resumes; it finishes with every step exactly once and the losses of
  the uninterrupted run.
- A stage that knows nothing of preemption (the toy's checkpointed sum) is requeued on USR2 too and resumes
  from its own checkpoint.
- A job killed without writing a result fails its stage with the job's state and log (no endless wait).

Slurm has no accounting here: job states come from squeue/scontrol, everything else from the jobs' files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments.tests import slurm_train
from experiments.tests.helpers import executions, git_checkout, launch
from experiments.tests.slurm_helpers import (
    cancel,
    job_id,
    job_pids,
    logs_report,
    stage_dir,
    wait_for,
)
from tools import testing
from training import pretrain
from training.monitor import read_metrics, step_records
from training.tests.helpers import text_shards

TRAIN = "experiments.tests.slurm_train"
STEPS = 96


@pytest.fixture(scope="module", autouse=True)
def slurm():
    testing.single_node_slurm()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm_training")
    return SimpleNamespace(root=root, shards=text_shards(root / "shards", chars=40_000),
                           repo=git_checkout(root / "repo"))  # fmt: skip


def train_args(env, run_id: str) -> tuple[str, ...]:
    # Two tasks of one CPU each fill this 2-CPU node. timeout_min=20 makes submitit count a signal in the first
    # 10 minutes as a preemption, not a time-out (either way it requeues).
    return (f"run_id={run_id}", "executor=slurm", f"shards={env.shards}", f"steps={STEPS}",
            "stage_slurm={pretrain: {tasks_per_node: 2, cpus_per_task: 1}}", "slurm.timeout_min=20",
            "slurm.mem_gb=2", "wait_timeout_min=5")  # fmt: skip


def events(workdir, kind: str) -> list[dict]:
    return [r for r in read_metrics(workdir / "metrics.jsonl") if r.get("event") == kind]


def last_step(workdir) -> int:
    records = step_records(workdir / "metrics.jsonl")
    return records[-1]["step"] if records else 0


@pytest.fixture(scope="module")
def uninterrupted(env):
    """A 2-task Slurm run of the training stage, and a one-process run of the same recipe (in this process,
    while the job runs)."""
    run = env.repo / "runs/slurm_train/whole"
    proc = launch(env.repo, *train_args(env, "whole"), experiment=TRAIN, wait=False)
    try:
        single = env.root / "single"
        pretrain.run(slurm_train.recipe(slurm_train.Config(steps=STEPS)), single, env.shards)
        out = proc.communicate(timeout=420)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            cancel(run, "pretrain")
    assert proc.returncode == 0, out + logs_report(run, "pretrain")
    return SimpleNamespace(run=run, work=run / "stages/pretrain", single=single, out=out)


def test_two_task_job_trains_like_one_process(uninterrupted):
    work, single = uninterrupted.work, uninterrupted.single
    assert "(2 tasks)" in uninterrupted.out
    result = json.loads((work / "COMPLETE.json").read_text())["result"]
    assert result["world"] == 2 and result["steps"] == STEPS
    assert [e["world"] for e in events(work, "start")] == [2]
    # Both ranks ran as the two tasks of one Slurm job, and each wrote its shard of the final checkpoint.
    job = json.loads((work / ".slurm_job.json").read_text())["job_id"]
    logs = uninterrupted.run / "logs/pretrain"
    for rank in (0, 1):
        log = (logs / f"{job}_{rank}_log.out").read_text()
        assert f"global_rank={rank}(2)" in log and "Job completed successfully" in log, log
    assert len(list((work / f"checkpoints/step_{STEPS:08d}").glob("*.distcp"))) == 2
    # The same global batch split over two ranks gives the one-process update (training's own 2-process test).
    got, ref = step_records(work / "metrics.jsonl"), step_records(single / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in ref] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in ref], abs=1e-5)
    assert [r["grad_norm"] for r in got] == pytest.approx([r["grad_norm"] for r in ref], rel=1e-4)
    assert ref[-1]["loss"] < ref[0]["loss"] - 1.0


def test_preempted_job_is_requeued_and_loses_or_repeats_no_step(env, uninterrupted):
    run = env.repo / "runs/slurm_train/preempted"
    proc = launch(env.repo, *train_args(env, "preempted"), experiment=TRAIN, wait=False)

    def now():  # the stage's directory: its workdir, renamed once the stage completes
        return stage_dir(run, "pretrain")

    try:
        job = wait_for(lambda: job_id(run, "pretrain"), "the stage's job", run, "pretrain", proc=proc)
        wait_for(lambda: last_step(now()) >= 3, "step 3", run, "pretrain", proc=proc)
        # The time-limit warning: the trainer saves at the next step, then submitit requeues the job.
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        first = wait_for(lambda: events(now(), "resume"), "the first resume", run, "pretrain", proc=proc)[0]
        wait_for(lambda: last_step(now()) >= first["step"] + 3, "steps after it", run, "pretrain", proc=proc)
        # Slurm's own requeue (preemption): SIGTERM, the trainer saves, Slurm starts the job again.
        subprocess.run(["scontrol", "requeue", job], check=True)
        wait_for(lambda: len(events(now(), "resume")) == 2, "the second resume", run, "pretrain", proc=proc)
        out = proc.communicate(timeout=300)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            cancel(run, "pretrain")
    assert proc.returncode == 0, out + logs_report(run, "pretrain")
    work = run / "stages/pretrain"
    assert out.count("    job ") == 1  # submitted once: Slurm restarted the same job
    assert json.loads((work / "COMPLETE.json").read_text())["attempts"] == 1

    preempted, resumed = events(work, "preempted"), events(work, "resume")
    assert [p["signal"] for p in preempted] == [signal.SIGUSR2, signal.SIGTERM]
    assert [r["step"] for r in resumed] == [p["step"] for p in preempted]  # each run resumes where the last saved
    assert 3 <= preempted[0]["step"] < preempted[1]["step"] < STEPS
    # Checkpoints only at the preemptions (every_steps is out of reach) and at the end, by both ranks.
    assert [c["step"] for c in events(work, "checkpoint")] == [p["step"] for p in preempted] + [STEPS]
    for step in [p["step"] for p in preempted]:
        assert len(list((work / f"checkpoints/step_{step:08d}").glob("*.distcp"))) == 2
    # Every step exactly once, with the losses of the uninterrupted run (resume is exact).
    got, ref = step_records(work / "metrics.jsonl"), step_records(uninterrupted.work / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in got] == [r["loss"] for r in ref]

    # Slurm's side, from the job's own logs: one job id, started three times; rank 0 requeued it after USR2
    # (submitit), Slurm requeued it after SIGTERM (submitit's second requeue refused, no result written).
    log0 = (run / f"logs/pretrain/{job}_0_log.out").read_text()
    assert log0.count(f"Starting with JobEnvironment(job_id={job},") == 3, log0
    assert log0.count(f"Requeued job {job}") == 1, log0
    err0 = (run / f"logs/pretrain/{job}_0_log.err").read_text()
    assert "Slurm refused the requeue" in err0 and err0.count("DUE TO JOB REQUEUE") >= 2, err0
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=2" in shown, shown  # squeue/scontrol keep an ended job for MinJobAge (300 s)


def test_usr2_requeues_any_stage_which_resumes_from_its_workdir(env):
    """The toy's slow_sum checkpoints after every number and installs no signal handler: submitit's own
    handler requeues it at once, and the rerun starts from the saved position."""
    run = env.repo / "runs/toy/usr2"
    args = ("run_id=usr2", "executor=slurm", "count=60", "sleep=0.1", "slurm.timeout_min=20", "slurm.mem_gb=1",
            "wait_timeout_min=3")  # fmt: skip
    proc = launch(env.repo, *args, wait=False)
    state = run / "stages/slow_sum.partial/state.json"
    try:
        wait_for(lambda: state.is_file() and json.loads(state.read_text())["i"] >= 5, "slow_sum at 5", run,
                 "slow_sum", proc=proc)  # fmt: skip
        subprocess.run(["scancel", "--signal=USR2", job_id(run, "slow_sum")], check=True)
        wait_for(lambda: len([e for e in executions(run) if e.startswith("slow_sum")]) == 2, "the requeued run",
                 run, "slow_sum", proc=proc)  # fmt: skip
        out = proc.communicate(timeout=180)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            cancel(run, "slow_sum")
    assert proc.returncode == 0, out + logs_report(run, "slow_sum")
    starts = [e for e in executions(run) if e.startswith("slow_sum")]
    assert starts[0] == "slow_sum start at 0" and int(starts[1].rsplit(" ", 1)[1]) >= 5, starts
    assert json.loads((run / "stages/report/report.json").read_text())["ok"] is True
    assert json.loads((run / "stages/slow_sum/COMPLETE.json").read_text())["attempts"] == 1
    assert out.count("    job ") == 3  # one job per stage; slow_sum's ran twice


def test_a_job_that_ends_without_a_result_fails_its_stage(env):
    """A job killed mid-stage writes no result file: the launcher stops waiting, naming the state and log."""
    run = env.repo / "runs/toy/cancelled"
    args = ("run_id=cancelled", "executor=slurm", "count=80", "sleep=0.1", "slurm.timeout_min=20",
            "slurm.mem_gb=1", "wait_timeout_min=3")  # fmt: skip
    proc = launch(env.repo, *args, wait=False)
    state = run / "stages/slow_sum.partial/state.json"
    try:
        wait_for(lambda: state.is_file() and json.loads(state.read_text())["i"] >= 3, "slow_sum at 3", run,
                 "slow_sum", proc=proc)  # fmt: skip
        job = job_id(run, "slow_sum")
        # As the OOM killer would. (scancel sends SIGTERM, which submitit ignores, and kills only after
        # KillWait, 30 s: long enough for this stage to finish.)
        pids = job_pids(run, "slow_sum")
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)
        out = proc.communicate(timeout=120)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            cancel(run, "slow_sum")
    assert proc.returncode == 1, out
    assert f"stage 'slow_sum' failed: Slurm job {job} ended (FAILED) without a result from task 0" in out, out
    log = out.split("log: ", 1)[1].split()[0]
    assert log == str(run / f"logs/slow_sum/{job}_0_log.err") and "task 0: Killed" in Path(log).read_text()
