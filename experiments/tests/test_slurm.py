"""The spine on a real single-node Slurm (tools/slurm/start.sh; .ci/run starts it, and so does this test
when it runs as root and no controller answers)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from experiments import dag
from experiments.tests.helpers import executions, launch
from tools import testing


@pytest.fixture(scope="module", autouse=True)
def slurm():
    testing.single_node_slurm()


def test_stages_run_as_slurm_jobs(checkout):
    out = launch(checkout, "run_id=s", "executor=slurm", "count=9", "slurm.timeout_min=5", "slurm.mem_gb=1")
    assert out.returncode == 0, out.stdout + out.stderr
    run = checkout / "runs/toy/s"
    assert json.loads((run / "stages/report/report.json").read_text())["ok"] is True
    # Each stage ran in its own Slurm job, whose log sits under logs/<stage>/.
    for stage in ("numbers", "slow_sum", "report"):
        logs = list((run / "logs" / stage).glob("*_log.out"))
        assert logs, f"no Slurm log for {stage}"
    assert out.stdout.count("    job ") == 3


def test_a_failed_slurm_job_names_its_log(checkout):
    out = launch(checkout, "run_id=f", "executor=slurm", "fail_in=numbers", "slurm.timeout_min=5", "slurm.mem_gb=1")
    assert out.returncode == 1
    assert "stage 'numbers' failed" in out.stderr and "planted failure in numbers" in out.stderr
    log = out.stderr.split("log: ", 1)[1].split()[0]
    assert "planted failure in numbers" in Path(log).read_text()


def test_killed_launcher_reattaches_to_the_running_job(checkout):
    run = checkout / "runs/toy/r"
    args = ("run_id=r", "executor=slurm", "count=80", "sleep=0.1", "slurm.timeout_min=5", "slurm.mem_gb=1")
    proc = launch(checkout, *args, wait=False)
    state = run / "stages/slow_sum.partial/state.json"
    deadline = time.time() + 120
    while not (state.exists() and json.loads(state.read_text())["i"] >= 5):
        assert time.time() < deadline, "slow_sum never started on Slurm"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The Slurm job outlives its launcher; the resumed launcher waits for it instead of resubmitting.
    out = launch(checkout, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "re-attached to Slurm job" in out.stdout
    log = executions(run)
    assert [line for line in log if line.startswith("slow_sum")] == ["slow_sum start at 0"]
    assert dag.completed(run, "report")
