"""The pipeline framework: funnel invariant and report, config errors, the CLI's one-line errors, shard- and
worker-count independence, resume after kill -9 with byte-identical output, no worker outliving a killed run."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import polars as pl
import psutil
import pytest

from data import runner
from data.base import StepStats, check_funnel
from data.pipeline import PipelineConfig, main
from data.steps import check_steps
from data.tests.helpers import corpus, dropped, final_documents, run_pipeline, tree_bytes
from tools.config import ConfigError, parse
from tools.paths import PACKAGE_ROOT

DEDUP = "steps=[read,url_dedup,minhash,line_dedup]"


@pytest.fixture(scope="module")
def jsonl_corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    return {n: corpus(root / f"s{n}", scale=0.15, shards=n, format="jsonl") for n in (1, 5)}


def test_funnel_report_and_dropped_records(tmp_path, jsonl_corpora):
    out = tmp_path / "out"
    steps = "steps=[read,langid,url_dedup,minhash,line_dedup,gopher_repetition,gopher_quality,kl]"
    summary = run_pipeline(out, [f"input={jsonl_corpora[5] / 'jsonl'}", steps, "executor=inline"])
    assert summary["funnel_ok"] and summary["documents_in"] > 150
    funnel = pl.read_parquet(out / "report" / "funnel.parquet")
    assert funnel["step"].to_list() == [
        "read",
        "langid",
        "url_dedup",
        "minhash",
        "line_dedup",
        "gopher_repetition",
        "gopher_quality",
        "kl",
    ]
    assert (funnel["docs_in"] == funnel["docs_out"] + funnel["dropped"]).all()
    assert funnel["docs_in"].to_list()[1:] == funnel["docs_out"].to_list()[:-1]
    total = summary["documents_dropped"]
    assert total == summary["documents_in"] - summary["documents_kept"] > 0
    drops = pl.read_parquet(out / "report" / "drops.parquet")
    assert drops["docs"].sum() == total and set(drops["step"]) >= {"url_dedup", "minhash", "langid"}
    records = dropped(out)
    assert len(records) == total and all(r["reason"] for r in records.values())
    assert len(final_documents(out)) == summary["documents_kept"]
    md = (out / "report" / "report.md").read_text()
    assert "Funnel invariant holds" in md and "older crawl of the same URL" in md
    png = (out / "report" / "funnel.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_check_funnel_reports_lost_documents():
    ok = StepStats(docs_in=10, docs_out=7)
    ok.dropped["x"] = 3
    leaky = StepStats(docs_in=7, docs_out=5)
    leaky.dropped["y"] = 1
    errors = check_funnel([("a", ok), ("b", leaky)])
    assert errors == ["b: 7 in != 5 out + 1 dropped"]
    assert check_funnel([("a", ok), ("c", StepStats(docs_in=6, docs_out=6))]) == ["a gave 7 documents but c received 6"]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="did you mean 'minhash.bands'"):
        parse(PipelineConfig, ["input=x", "output=y", "minhash.bandz=3"])
    with pytest.raises(ConfigError, match="required keys have no value: input"):
        parse(PipelineConfig, ["output=y"])
    with pytest.raises(ValueError, match="did you mean 'minhash'"):
        check_steps(["read", "minhsh"])
    with pytest.raises(ValueError, match="must begin with 'read'"):
        check_steps(["extract", "read"])
    with pytest.raises(ValueError, match="'mix' needs 'tokenize'"):
        check_steps(["read", "mix"])
    cfg = parse(PipelineConfig, [f"config={PACKAGE_ROOT / 'data/configs/tiny.yaml'}", "input=x", "output=y"])
    assert cfg.steps[-1] == "shards" and cfg.gopher_repetition.categories == ["general", "math"]


def test_output_folder_refuses_other_arguments(tmp_path, jsonl_corpora):
    out = tmp_path / "out"
    run_pipeline(out, [f"input={jsonl_corpora[1] / 'jsonl'}", "steps=[read,minhash]", "executor=inline"])
    with pytest.raises(ValueError, match="differs in \\['config'\\]"):
        run_pipeline(out, [f"input={jsonl_corpora[1] / 'jsonl'}", "steps=[read,url_dedup]", "executor=inline"])
    summary = run_pipeline(
        out, [f"input={jsonl_corpora[1] / 'jsonl'}", "steps=[read,url_dedup]", "executor=inline", "overwrite=true"]
    )
    assert list(summary["steps"]) == ["read", "url_dedup"]


def test_dedup_is_independent_of_shards_and_workers(tmp_path, jsonl_corpora):
    kept = {}
    for name, shards, extra in (
        ("one", 1, ["executor=inline"]),
        ("five", 5, ["executor=inline"]),
        ("workers", 5, ["executor=local", "workers=2"]),
    ):
        out = tmp_path / name
        run_pipeline(out, [f"input={jsonl_corpora[shards] / 'jsonl'}", DEDUP, *extra])
        kept[name] = {i: d.text for i, d in final_documents(out).items()}
        reasons = {r["step"] for r in dropped(out).values()}
        assert {"url_dedup", "minhash"} <= reasons
    assert kept["one"] == kept["five"] == kept["workers"]


def _pipeline_cmd(input_dir, out):
    steps = "steps=[read,extract,langid,url_dedup,minhash,line_dedup,gopher_repetition,kl]"
    return [
        sys.executable,
        "-m",
        "data.pipeline",
        f"input={input_dir}",
        f"output={out}",
        steps,
        "executor=inline",
        "progress=false",
    ]


def test_resume_after_kill9_gives_identical_output(tmp_path):
    src = corpus(tmp_path / "corpus", scale=0.12, shards=6)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = tmp_path / "out"
    subprocess.run(_pipeline_cmd(src / "warc", out), check=True, env=env, capture_output=True)
    reference = tree_bytes(out)
    shutil.move(out, tmp_path / "reference")
    # Start again and kill -9 once the second segment is under way.
    proc = subprocess.Popen(
        _pipeline_cmd(src / "warc", out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not (out / "_work" / "seg-01" / "shard-00001.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "report").exists()
    done_before = {p: p.stat().st_mtime_ns for p in (out / "_work" / "seg-00").glob("shard-*.json")}
    assert len(done_before) == 6
    subprocess.run(_pipeline_cmd(src / "warc", out), check=True, env=env, capture_output=True)
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before  # finished tasks were not redone
    resumed = tree_bytes(out)
    assert sorted(resumed) == sorted(reference)
    assert [k for k in reference if reference[k] != resumed[k]] == []



@pytest.mark.parametrize("args, message", [
    (["minhash.bandz=3"], "unknown key 'minhash.bandz' in the command line (did you mean 'minhash.bands'?)"),
    (["workers=abc"], "bad value for key 'workers' in the command line: Value 'abc' of type 'str' could not be "
                      "converted to Integer"),
    (["input={tmp}/missing"], "input {tmp}/missing does not exist"),
    (["config={tmp}/missing.yaml"], "config file {tmp}/missing.yaml does not exist"),
    (["executor=locl"], "executor must be inline, local or slurm, got 'locl'"),
])  # fmt: skip
def test_cli_errors_are_one_line_exit_2_and_create_nothing(tmp_path, jsonl_corpora, capsys, args, message):
    base = [f"input={jsonl_corpora[1] / 'jsonl'}", f"output={tmp_path / 'out'}", "progress=false"]
    assert main(base + [a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message.format(tmp=tmp_path)}\n"
    assert not (tmp_path / "out").exists()


def test_the_cli_module_prints_the_message_not_a_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "data.pipeline", f"input={tmp_path}/missing", f"output={tmp_path}/out"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr == f"error: input {tmp_path}/missing does not exist\n"


def test_a_filter_run_imports_neither_pandas_nor_scipy(tmp_path, jsonl_corpora):
    """Their imports cost 0.2 s and 0.25 s of CPU, a sixth of a short run (data/benchmarks/bench_pipeline.py):
    the Parquet writer, MinHash's components and the default steps do without them."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    args = [f"config={PACKAGE_ROOT / 'data/configs/filter.yaml'}", f"input={jsonl_corpora[1] / 'jsonl'}"]
    args += [f"output={tmp_path / 'out'}", "executor=inline", "progress=false", "report.chart=false"]
    code = "import json, sys; from data import pipeline; pipeline.main(sys.argv[1:]); "
    code += "print(json.dumps(list(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "minhash resolve 0" in (tmp_path / "out" / "logs" / "timings.json").read_text()
    assert not [m for m in modules if m.split(".")[0] in ("pandas", "scipy")]


def test_a_full_disk_in_a_task_is_one_line_naming_the_output(tmp_path, jsonl_corpora, capsys, monkeypatch):
    class FullDisk:  # what writing a Parquet file raised on a full tmpfs
        def __init__(self, path):
            pass

        def add(self, doc):
            raise OSError(errno.ENOSPC, "No space left on device")

        def abort(self):
            pass

    monkeypatch.setattr(runner, "DocumentWriter", FullDisk)
    out = tmp_path / "out"
    args = [f"input={jsonl_corpora[1] / 'jsonl'}", f"output={out}", "progress=false", "executor=inline"]
    assert main(args + ["steps=[read,url_dedup]"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: [Errno 28] run_segment_task(0, 0) failed: No space left on device: '{out}'\n"


def test_a_killed_run_leaves_no_worker_behind(tmp_path):
    src = corpus(tmp_path / "corpus", scale=0.12, shards=6)
    out = tmp_path / "out"
    cmd = _pipeline_cmd(src / "warc", out)
    cmd[cmd.index("executor=inline")] = "executor=local"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([*cmd, "workers=2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((out / "_work" / "seg-00").glob("shard-*.json")) and time.time() < deadline:
        time.sleep(0.02)
    children = psutil.Process(proc.pid).children(recursive=True)
    names = " ".join(" ".join(c.cmdline()) for c in children)
    assert names.count("--multiprocessing-fork") == 2 and "resource_tracker" in names, names
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    deadline = time.time() + 10
    while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children) and time.time() < deadline:
        time.sleep(0.1)
    left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    names = [" ".join(c.cmdline()) for c in left]
    for c in left:  # a failing run of this test must not leave them behind either
        c.kill()
    assert names == []
