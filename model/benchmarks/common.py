"""Shared by the benchmarks: the transformers twin of one of our models, timing, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from model import interop
from model.llama import Transformer


def hf_twin(model: Transformer, attn_implementation: str = "sdpa"):
    """transformers' LlamaForCausalLM with identical dimensions and weights (converted exactly)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = interop.hf_config(model.args)
    config.pop("architectures")
    config.pop("torch_dtype")
    hf_cfg = LlamaConfig(**config, attn_implementation=attn_implementation)
    with torch.device("meta"):
        hf = LlamaForCausalLM(hf_cfg)
    hf.load_state_dict(interop.to_hf_state_dict(model.args, model.state_dict()), assign=True)
    hf.model.rotary_emb.__init__(hf_cfg)  # non-persistent RoPE buffers: recompute off the meta device
    return hf


def interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Median seconds per call of each function, as wall time and as this process's CPU time, alternating
    between the functions so that load from other processes hits all of them alike. With one torch thread the
    CPU time is the work itself: it does not grow while other processes hold the cores of a shared machine."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    return {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])} for name in fns}


def rates(work: float, seconds: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """work / second per function, for both clocks."""
    return {name: {clock: work / t for clock, t in s.items()} for name, s in seconds.items()}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
