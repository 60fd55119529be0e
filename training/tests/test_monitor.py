"""Monitoring: FLOPs per token and MFU, the metrics JSONL, wandb offline, the progress bar, the PNG."""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from model.accounting import param_count
from model.presets import preset
from training.config import MonitorConfig
from training.monitor import Monitor, device_key, flops_per_token, read_metrics, step_records
from training.tests.helpers import micro_recipe, text_shards
from training.trainer import Trainer


def test_flops_per_token_and_the_device_table():
    args = preset("8b")
    matmul_params = param_count(args) - args.vocab_size * args.dim
    assert flops_per_token(args, 8192) == 6 * matmul_params + 12 * 32 * 4096 * 8192
    assert flops_per_token(args, 8192) == pytest.approx(5.79e10, rel=1e-3)
    assert device_key("NVIDIA H100 80GB HBM3") == "h100"
    assert device_key("NVIDIA H100 PCIe") == "h100 pcie"
    assert device_key("NVIDIA A100-SXM4-80GB") == "a100"
    assert device_key("NVIDIA H200") == "h200"
    assert device_key("Some Other Accelerator") is None


def test_metrics_events_truncation_progress_and_plot(tmp_path, capsys):
    m = Monitor(tmp_path, MonitorConfig(wandb=False), main=True, phase="pretrain")
    m.start_progress(total_tokens=1000, done_tokens=0, desc="pretrain")
    for step in range(1, 6):
        m.step({"step": step, "tokens": 200 * step, "loss": 5.0 - step / 2, "lr": 1e-3 * step})
        m.advance(200)
    m.event("checkpoint", step=5, path="step_00000005")
    m.stop_progress()
    assert "pretrain: 100%" in capsys.readouterr().err  # tqdm's bar, with elapsed<remaining (ETA) and rate
    assert [r["step"] for r in step_records(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    m.truncate(3)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a record cut short by a kill, or still being written
        f.write('{"phase": "pretrain", "step": 4, "tokens": 800, "loss": 3.0, "grad_norm": 0')
    assert [r["step"] for r in step_records(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    m.truncate(3)  # what a resume does first: the torn line goes, the next record starts a line of its own
    m.step({"step": 4, "tokens": 800, "loss": 3.0, "lr": 4e-3})
    assert [r["step"] for r in step_records(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    png = m.plot("pretrain")
    assert png == tmp_path / "plots/pretrain.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wandb_is_offline_by_default_and_respects_wandb_mode(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    m = Monitor(tmp_path / "a", MonitorConfig(wandb=True), main=True, phase="pretrain", config={"x": 1})
    m.step({"step": 1, "tokens": 10, "loss": 3.0, "lr": 1e-3})
    m.close()
    runs = list((tmp_path / "a/wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    off = Monitor(tmp_path / "b", MonitorConfig(wandb=True), main=True, phase="pretrain")
    assert off.run is None and not (tmp_path / "b/wandb").exists()


def test_step_records_carry_throughput_mfu_and_memory(tmp_path):
    shards = text_shards(tmp_path / "shards", chars=20_000)
    recipe = micro_recipe("monitor.peak_flops=1e9")
    t = Trainer(recipe, recipe.pretrain, tmp_path / "run", shards, phase="pretrain")
    t.fit(until_tokens=512)
    for r in step_records(tmp_path / "run/metrics.jsonl"):
        assert r["tokens_per_s"] > 0 and r["mem_gb"] > 0
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * flops_per_token(t.args, 32) / 1e9)
        assert {"loss", "lr", "grad_norm", "tokens", "seq_len", "batch_tokens"} <= set(r)


def test_wandb_dying_under_the_run_turns_it_off_and_training_goes_on(tmp_path, monkeypatch, caplog):
    """Slurm's SIGTERM reaches wandb's service too: the next wandb call fails, the monitor carries on without it."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    m = Monitor(tmp_path, MonitorConfig(wandb=True, progress=False), main=True, phase="pretrain")
    m.step({"step": 1, "tokens": 10, "loss": 3.0, "lr": 1e-3})
    service = [p for p in psutil.Process().children(recursive=True) if p.name() == "wandb-core"]
    assert len(service) == 1
    service[0].send_signal(signal.SIGTERM)
    service[0].wait(timeout=30)
    for step in (2, 3):
        m.step({"step": step, "tokens": 10 * step, "loss": 3.0, "lr": 1e-3})
    m.event("checkpoint", step=3, path="step_00000003")
    m.close()
    assert m.run is None
    assert [r["step"] for r in step_records(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert [r["event"] for r in read_metrics(tmp_path / "metrics.jsonl") if "event" in r] == ["checkpoint"]
    failed = [r.getMessage() for r in caplog.records if "wandb failed" in r.getMessage()]
    assert len(failed) == 1 and "it is off for the rest of pretrain" in failed[0], failed


def test_loggers_that_raise_or_hang_are_bounded(tmp_path, caplog):
    class Broken:
        def log(self, values):
            raise ConnectionResetError("Connection lost")

    class Hung:
        def log(self, values):
            pass

        def finish(self):
            time.sleep(60)

    class BrokenBar:
        def update(self, n):
            raise OSError(32, "Broken pipe")

        def close(self):
            raise AssertionError("a failed progress bar is not touched again")

    m = Monitor(tmp_path, MonitorConfig(wandb=False, progress=False), main=True, phase="pretrain")
    m.run, m.bar = Broken(), BrokenBar()
    m.event("resume", step=0)
    m.advance(10)
    m.step({"step": 1, "tokens": 10, "loss": 3.0, "lr": 1e-3})
    assert m.run is None and m.bar is None
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "wandb failed (ConnectionResetError: Connection lost)" in messages
    assert "progress bar failed (BrokenPipeError: [Errno 32] Broken pipe)" in messages
    m.run = Hung()
    start = time.perf_counter()
    m.close(timeout=0.5)
    assert time.perf_counter() - start < 10 and "wandb could not finish (no answer within 0.5 s)" in caplog.text
    assert [r["step"] for r in step_records(tmp_path / "metrics.jsonl")] == [1]
