"""The benchmark scripts run end to end (tiny shapes, CPU); their figures come from running them, see README."""

from __future__ import annotations

import pytest

from training.benchmarks import mfu, overhead, rejection_sampling


def test_overhead_benchmark_reports_both_sides():
    r = overhead.run(overhead.OverheadConfig(steps=2, rounds=3, rows=4, seq_len=32, threads=1))
    assert r["weights_identical"] and r["trainer_tokens_per_s"] > 0 and r["bare_tokens_per_s"] > 0
    ratios = sorted(t / b for t, b in zip(r["seconds"]["trainer"], r["seconds"]["bare"]))
    assert r["time_ratio"] == pytest.approx(ratios[1]) and r["overhead"] == pytest.approx(ratios[1] - 1)
    assert r["time_ratio_min"] == ratios[0] and r["time_ratio_max"] == ratios[2]


def test_mfu_benchmark_runs_on_cpu_with_tiny_shapes():
    r = mfu.run(mfu.MfuConfig(device="cpu", tiny=True))
    assert r["device"] == "cpu" and r["loss"] == "chunked" and r["steps"] == 2
    assert 0 < r["mfu"] < 1 and r["tokens_per_s"] > 0
    assert r["flops_per_token"] > 6 * (r["params"] - 512 * 64)  # 6N plus attention


def test_mfu_benchmark_refuses_a_missing_gpu():
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        mfu.run(mfu.MfuConfig(device="cuda", tiny=True))


def test_rejection_sampling_benchmark_checks_equal_outputs():
    cfg = rejection_sampling.RejectionBenchConfig(prompts=2, prompt_len=32, k=3, new_tokens=4, rounds=3)
    r = rejection_sampling.run(cfg)
    assert r["outputs_identical"] and r["samples"] == 6 and r["shared_samples_per_s"] > 0
    speedups = sorted(rep / sh for rep, sh in zip(r["seconds"]["repeated"], r["seconds"]["shared"]))
    assert r["speedup"] == pytest.approx(speedups[1])
    assert (r["speedup_min"], r["speedup_max"]) == (speedups[0], speedups[2])
