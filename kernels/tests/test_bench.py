"""The GPU benchmark script, run as its CPU mode does (tiny shapes, Triton's interpreter): every op is timed
against its peers and its output checked against eager, and every figure lands in the JSON."""

import json

from kernels.benchmarks import bench


def test_bench_tiny_runs_every_op_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    results = bench.main(["tiny=true", f"out={out}"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    ops = results["ops"]
    assert set(ops) == {"rmsnorm", "rope", "swiglu", "attention.causal", "attention.documents", "cross_entropy"}
    assert ops["attention.documents"]["documents"] > 3  # several packed documents, some of length 1
    for name, row in ops.items():
        peer = "sdpa_dense_mask" if name.startswith("attention") else "eager"
        assert row["ms"]["triton"] > 0 and row["ms"][peer] > 0, (name, row)
        assert row["speedup"][peer] > 0
        assert row["max_abs_diff"][peer] < 1e-4, (name, row["max_abs_diff"])  # fp32 in the interpreter
        assert row["skipped"]["compile" if peer == "eager" else "flash_attn"]  # no compile / no CUDA: a reason
    assert ops["cross_entropy"]["peak_mib"] == {"triton": None, "eager": None}  # memory is measured on GPUs only
