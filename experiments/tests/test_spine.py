"""The experiment spine: DAG order, atomic stage outputs, resume after kill -9, failures, provenance."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time

import psutil
import pytest

from experiments import dag, executors, provenance
from experiments.tests import toy
from experiments.tests.helpers import executions, launch
from tools import atomic
from tools.paths import PACKAGE_ROOT

TOY = "experiments.tests.toy"


def noop(ctx):
    return None


def test_order_is_topological_and_stable():
    stages = [dag.Stage("c", noop, ("b",)), dag.Stage("a", noop), dag.Stage("b", noop, ("a",)), dag.Stage("d", noop)]
    assert [s.name for s in dag.order(stages)] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "stages, message",
    [
        ([dag.Stage("a", noop), dag.Stage("a", noop)], "two stages are named 'a'"),
        ([dag.Stage("a", noop, ("x",))], "takes input 'x', which is not a stage"),
        ([dag.Stage("a", noop, ("b",)), dag.Stage("b", noop, ("a",))], "cycle"),
    ],
)
def test_bad_graphs_are_rejected(stages, message):
    with pytest.raises(dag.DagError, match=message):
        dag.order(stages)


def test_debug_run_completes_then_skips_everything(tmp_path):
    cfg = toy.Config(executor="debug", count=10)
    ex = executors.StageExecutor(cfg, tmp_path, log=lambda *_: None)
    first = dag.run(toy.stages(cfg), tmp_path, cfg, ex, log=lambda *_: None)
    assert first.ran == ["numbers", "slow_sum", "report"]
    assert json.loads((tmp_path / "stages/report/report.json").read_text())["ok"] is True
    done = json.loads((tmp_path / "stages/slow_sum/COMPLETE.json").read_text())
    assert done["result"]["total"] == sum(json.loads((tmp_path / "stages/numbers/numbers.json").read_text()))
    again = dag.run(toy.stages(cfg), tmp_path, cfg, ex, log=lambda *_: None)
    assert again.ran == [] and again.skipped == ["numbers", "slow_sum", "report"]
    assert executions(tmp_path) == ["numbers start", "slow_sum start at 0", "report start"]
    assert not list((tmp_path / "stages").glob("*.partial"))


def test_a_failed_stage_reports_its_log_and_stops_the_run(tmp_path):
    cfg = toy.Config(executor="local", count=5, fail_in="slow_sum")
    ex = executors.StageExecutor(cfg, tmp_path, log=lambda *_: None)
    with pytest.raises(dag.StageFailed) as e:
        dag.run(toy.stages(cfg), tmp_path, cfg, ex, log=lambda *_: None)
    assert e.value.stage == "slow_sum" and "planted failure in slow_sum" in str(e.value)
    assert e.value.log is not None and e.value.log.is_file() and "planted failure" in e.value.log.read_text()
    assert str(e.value.log) in str(e.value)
    assert dag.completed(tmp_path, "numbers") and not dag.completed(tmp_path, "slow_sum")
    assert not (tmp_path / "stages/report").exists() and not (tmp_path / "stages/report.partial").exists()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["event"]) for e in events][-1] == ("slow_sum", "fail")


def test_auto_executor_needs_srun_and_an_answering_controller(tmp_path, monkeypatch):
    def fake(name, code):
        (tmp_path / name).write_text(f"#!/bin/sh\nexit {code}\n")
        (tmp_path / name).chmod(0o755)

    monkeypatch.setenv("PATH", str(tmp_path))
    assert executors.resolve_kind("auto") == "local"
    fake("srun", 0)
    fake("sinfo", 1)  # installed, but no controller answers
    assert executors.resolve_kind("auto") == "local"
    fake("sinfo", 0)
    assert executors.resolve_kind("auto") == "slurm"
    assert executors.resolve_kind("local") == "local"
    with pytest.raises(ValueError, match="executor must be one of"):
        executors.resolve_kind("kubernetes")


def test_stage_resources_merge_overrides():
    cfg = toy.Config(stage_slurm={"slow_sum": {"nodes": 2, "gpus_per_node": 8}})
    res = executors.stage_resources(cfg, "slow_sum")
    assert (res.nodes, res.gpus_per_node, res.timeout_min) == (2, 8, cfg.slurm.timeout_min)
    assert executors.stage_resources(cfg, "numbers") == cfg.slurm
    with pytest.raises(ValueError, match="unknown keys"):
        executors.stage_resources(toy.Config(stage_slurm={"x": {"gpus": 1}}), "x")


def test_venv_mismatch_is_detected(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("pytest==0.0.1 \\\n    --hash=sha256:00\nnot-a-real-package-xyz==1.0 \\\n")
    problems = provenance.venv_mismatches(lock)
    assert any(p.startswith("pytest: lock has 0.0.1, installed") for p in problems)
    assert "not-a-real-package-xyz==1.0 is not installed" in problems
    real = PACKAGE_ROOT / provenance.CPU_LOCK
    assert provenance.venv_mismatches(real) == []


def test_run_writes_config_and_provenance(checkout):
    out = launch(checkout, "run_id=r1", "executor=debug", "count=7")
    assert out.returncode == 0, out.stdout + out.stderr
    run = checkout / "runs/toy/r1"
    prov = json.loads((run / "provenance.json").read_text())
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert prov["git"]["commit"] == head.stdout.strip() and prov["git"]["dirty"] is False
    assert prov["allow_dirty"] is False and prov["argv"][-1] == "count=7"
    assert prov["lock_file"] == provenance.CPU_LOCK and len(prov["lock_sha256"]) == 64
    assert prov["python"].startswith("3.11") and prov["torch"].startswith("2.13.0") and prov["host"]
    assert "count: 7" in (run / "config.yaml").read_text()
    assert json.loads((run / "stages/report/report.json").read_text())["ok"] is True


def test_dirty_tree_is_refused_unless_allowed(checkout):
    (checkout / "notes.txt").write_text("uncommitted")
    out = launch(checkout, "run_id=d", "executor=debug")
    assert out.returncode == 2 and "uncommitted changes" in out.stderr and "notes.txt" in out.stderr
    assert not (checkout / "runs/toy/d").exists()
    out = launch(checkout, "--allow-dirty", "run_id=d", "executor=debug")
    assert out.returncode == 0, out.stderr
    prov = json.loads((checkout / "runs/toy/d/provenance.json").read_text())
    assert prov["allow_dirty"] is True and prov["git"]["dirty"] is True and prov["git"]["diff_sha256"]


def test_unknown_key_is_reported_with_suggestion(checkout):
    out = launch(checkout, "run_id=u", "cont=3")
    assert out.returncode == 2 and "unknown key 'cont'" in out.stderr and "did you mean 'count'" in out.stderr


def test_resume_refuses_a_different_config(checkout):
    assert launch(checkout, "run_id=c", "executor=debug", "count=5").returncode == 0
    out = launch(checkout, "run_id=c", "executor=debug", "count=6")
    assert out.returncode != 0 and "different config" in out.stderr and "count" in out.stderr


def test_kill_9_mid_stage_then_resume(checkout):
    run = checkout / "runs/toy/k"
    proc = launch(checkout, "run_id=k", "executor=local", "count=60", "sleep=0.05", wait=False)
    state = run / "stages/slow_sum.partial/state.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.exists() and json.loads(state.read_text())["i"] >= 10:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("slow_sum never got going: " + proc.stdout.read().decode())
    children = psutil.Process(proc.pid).children(recursive=True)  # submitit's controller and the stage's job
    assert len(children) >= 2, children
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children) and time.time() < deadline:
        time.sleep(0.1)
    left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    for c in left:
        c.kill()
    assert left == []
    assert not dag.completed(run, "slow_sum") and dag.completed(run, "numbers")

    out = launch(checkout, "run_id=k", "executor=local", "count=60", "sleep=0.05")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "numbers: already complete, skipped" in out.stdout and "slow_sum: resuming (attempt 2)" in out.stdout
    log = executions(run)
    assert log.count("numbers start") == 1 and log.count("report start") == 1
    starts = [int(line.rsplit(" ", 1)[1]) for line in log if line.startswith("slow_sum start at")]
    assert starts[0] == 0 and starts[1] >= 10, log
    assert json.loads((run / "stages/report/report.json").read_text())["ok"] is True
    prov = json.loads((run / "provenance.json").read_text())
    assert len(prov["resumes"]) == 1


@pytest.mark.parametrize("args, message", [
    (["executor=locl"], "error: executor must be one of ('auto', 'local', 'slurm', 'debug'), got 'locl'"),
    (["stage_slurm.slow_summ.nodes=2"], "error: stage_slurm names no stage of this experiment: ['slow_summ']"),
    (["stage_slurm.slow_sum.gpuz=1"], "error: stage_slurm.slow_sum has unknown keys ['gpuz']"),
])  # fmt: skip
def test_a_bad_config_is_one_line_and_creates_nothing(checkout, args, message):
    out = launch(checkout, "run_id=bad", *args)
    assert out.returncode == 2 and out.stderr.startswith(message) and "Traceback" not in out.stderr, out.stderr
    assert not (checkout / "runs").exists()  # so run_id=latest cannot pick up a run that never started


def test_a_refused_launcher_writes_no_record(checkout):
    assert launch(checkout, "run_id=c", "executor=debug", "count=3").returncode == 0
    run = checkout / "runs/toy/c"
    before = (run / "provenance.json").read_text()
    with dag.run_lock(run):  # another launcher holds the run
        out = launch(checkout, "run_id=c", "executor=debug", "count=3")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"error: run directory {run} is in use by the launcher with pid {os.getpid()}" in out.stderr
    assert (run / "provenance.json").read_text() == before  # no resume record for a run that did not resume
    assert launch(checkout, "run_id=c", "executor=debug", "count=3").returncode == 0
    assert len(json.loads((run / "provenance.json").read_text())["resumes"]) == 1


def test_a_run_fixed_in_its_config_resumes_with_the_change_recorded(checkout):
    out = launch(checkout, "run_id=f", "executor=local", "count=5", "fail_in=slow_sum")
    assert out.returncode == 1 and "run the same command with run_id=f" in out.stderr
    assert "--allow-config-change" in out.stderr
    out = launch(checkout, "run_id=f", "executor=local", "count=5")  # the fix is to the config
    assert out.returncode != 0 and "keys differ: fail_in ('slow_sum' -> '')" in out.stderr
    assert "--allow-config-change to resume with the change recorded" in out.stderr
    out = launch(checkout, "run_id=f", "executor=local", "count=5", "--allow-config-change")
    assert out.returncode == 0, out.stdout + out.stderr
    run = checkout / "runs/toy/f"
    resumes = json.loads((run / "provenance.json").read_text())["resumes"]
    assert [r.get("config_changes") for r in resumes] == [{"fail_in": {"before": "slow_sum", "after": ""}}]
    assert "fail_in: ''" in (run / "config.yaml").read_text()
    assert executions(run).count("numbers start") == 1  # the completed stage was kept
    assert launch(checkout, "run_id=f", "executor=local", "count=5").returncode == 0  # the config it goes on with


def records_paths(ctx):
    """A stage that names files of its workdir in what it returns and in its JSON records, as training does."""
    (ctx.workdir / "model").mkdir(exist_ok=True)
    record = {"model": str(ctx.workdir / "model"), "dir": str(ctx.workdir), "other": "/elsewhere/x",
              "list": [1, str(ctx.workdir / "plots/a.png")]}  # fmt: skip
    atomic.write_json(ctx.workdir / "summary.json", record)
    atomic.write_json(ctx.workdir / "stage1" / "DONE.json", record)
    return record


def test_published_records_point_at_the_published_stage(tmp_path):
    cfg = toy.Config(executor="debug")
    ex = executors.StageExecutor(cfg, tmp_path, log=lambda *_: None)
    stages = [dag.Stage("paths", records_paths)]
    dag.run(stages, tmp_path, cfg, ex, log=lambda *_: None)
    final = tmp_path / "stages/paths"
    want = {"model": str(final / "model"), "dir": str(final), "other": "/elsewhere/x",
            "list": [1, str(final / "plots/a.png")]}  # fmt: skip
    assert json.loads((final / dag.COMPLETE).read_text())["result"] == want
    for name in ("summary.json", "stage1/DONE.json"):
        assert json.loads((final / name).read_text()) == want, name
    assert (final / "model").is_dir()
    # Killed between the rename and the rewrite: the next launch finishes the rewrite.
    atomic.write_json(final / "summary.json", {"model": str(tmp_path / "stages/paths.partial/model")})
    assert dag.run(stages, tmp_path, cfg, ex, log=lambda *_: None).skipped == ["paths"]
    assert json.loads((final / "summary.json").read_text()) == {"model": str(final / "model")}


def test_a_run_directory_is_readable_by_others_as_the_umask_allows(checkout):
    old = os.umask(0o022)
    try:
        assert launch(checkout, "run_id=m", "executor=debug", "count=3").returncode == 0
    finally:
        os.umask(old)
    run = checkout / "runs/toy/m"
    modes = {str(p.relative_to(run)): stat.S_IMODE(p.stat().st_mode) for p in [run, *run.rglob("*")]}
    assert {"config.yaml", "provenance.json", "stages/report/COMPLETE.json", "stages/report/report.json"} <= set(modes)
    assert {k: m for k, m in modes.items() if m != (0o755 if (run / k).is_dir() else 0o644)} == {}
