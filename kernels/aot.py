"""Compile every Triton kernel for a GPU architecture without a GPU (Triton's own ptxas), as the GPU would.

The interpreter runs kernels on CPU but is more permissive than the compiler (types of loop-carried values,
shape rules of tl.dot, shared-memory limits), so this compiles each kernel with its GPU tile configurations for
sm_90 (H100) and checks the shared memory each needs against the device limit.

    ./bazelw run //kernels:aot                   # every kernel x every autotune config (a few minutes)
    ./bazelw run //kernels:aot -- quick=true     # the first config of each kernel (the tests run this)

Must run without TRITON_INTERPRET (the kernels must be decorated for the compiler).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels import _cross_entropy, _flash_attention, _rmsnorm, _rope, _swiglu, _triton

H100_SHARED_BYTES = 232448  # cudaDevAttrMaxSharedMemoryPerBlockOptin on sm_90 (227 KB)


@dataclass
class Config:
    arch: int = 90  # compute capability, e.g. 90 for H100/H200, 80 for A100
    quick: bool = False  # only the first autotune config of each kernel
    dtype: str = "bf16"  # element type of the activations: bf16 | fp32


def _signature(kernel, pointers: dict[str, str], floats: tuple[str, ...]) -> dict[str, str]:
    sig = {}
    for p in kernel.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name in pointers:
            sig[p.name] = pointers[p.name]
        else:
            sig[p.name] = "fp32" if p.name in floats else "i32"
    return sig


def _jobs(cfg: Config) -> list[tuple[str, object, dict, dict, dict]]:
    """(name, kernel, pointer types, constexprs, options) for every kernel and tile configuration."""
    act = "*" + cfg.dtype
    f32 = cfg.dtype == "fp32"
    norm = {"X": act, "W": act, "RSTD": "*fp32"}
    jobs = [
        ("rmsnorm.fwd", _rmsnorm._fwd, {**norm, "Y": act}, {"BLOCK_ROWS": 1, "BLOCK": 4096}, {"num_warps": 16}),
        (
            "rmsnorm.bwd", _rmsnorm._bwd, {**norm, "DY": act, "DX": act, "DW_PART": "*fp32"},
            {"BLOCK_ROWS": 1, "BLOCK": 4096}, {"num_warps": 16},
        ),
        (
            "rope", _rope._rope, {"Q": act, "K": act, "COS": "*fp32", "SIN": "*fp32"},
            {"BACKWARD": False, "BLOCK_T": 2, "BLOCK_H": 32, "BLOCK_HKV": 8, "BLOCK_HALF": 64}, {"num_warps": 8},
        ),
        ("swiglu.fwd", _swiglu._fwd, {"A": act, "B": act, "OUT": act}, {"BLOCK": 1024}, {"num_warps": 4}),
        (
            "swiglu.bwd", _swiglu._bwd, {"DOUT": act, "A": act, "B": act, "DA": act, "DB": act},
            {"BLOCK": 1024}, {"num_warps": 4},
        ),
        (
            "cross_entropy", _cross_entropy._loss_and_grad, {"LOGITS": act, "TARGETS": "*i64", "LOSS": "*fp32"},
            {"BLOCK_ROWS": 1, "BLOCK_V": 32768}, {"num_warps": 32},
        ),
        (
            "attention.delta", _flash_attention._bwd_delta, {"O": act, "DO": act, "DELTA": "*fp32"},
            {"BLOCK_M": 64, "BLOCK_D": 128}, {},
        ),
    ]  # fmt: skip
    attn = {
        "attention.fwd": (_flash_attention._fwd, _flash_attention.FWD_CONFIGS, {"O": act, "DOC_START": "*i32"}),
        "attention.dkdv": (
            _flash_attention._bwd_dkdv, _flash_attention.DKDV_CONFIGS,
            {"DO": act, "DK": act, "DV": act, "DELTA": "*fp32", "DOC_END": "*i32"},
        ),
        "attention.dq": (
            _flash_attention._bwd_dq, _flash_attention.DQ_CONFIGS,
            {"DO": act, "DQ": act, "DELTA": "*fp32", "DOC_START": "*i32"},
        ),
    }  # fmt: skip
    for name, (kernel, configs, pointers) in attn.items():
        for c in configs[:1] if cfg.quick else configs:
            for has_docs in (True,) if cfg.quick else (True, False):
                constexprs = {**c.kwargs, "HAS_DOCS": has_docs, "F32": f32, "BLOCK_D": 128}
                options = {"num_warps": c.num_warps, "num_stages": c.num_stages}
                jobs.append(
                    (name, kernel, {"Q": act, "K": act, "V": act, "LSE": "*fp32", **pointers}, constexprs, options)
                )
    return jobs


def compile_all(cfg: Config) -> list[dict]:
    if _triton.INTERPRET:
        raise RuntimeError("kernels.aot: unset TRITON_INTERPRET (kernels must be decorated for the compiler)")
    target = GPUTarget("cuda", cfg.arch, 32)
    results = []
    for name, kernel, pointers, constexprs, options in _jobs(cfg):
        sig = _signature(kernel, pointers, floats=("sm_scale", "eps", "inv_n_valid"))
        start = time.perf_counter()
        compiled = triton.compile(ASTSource(kernel, sig, constexprs), target=target, options=options)
        tiles = {k: v for k, v in constexprs.items() if k.startswith("BLOCK")}
        results.append(
            {
                "kernel": name,
                "tiles": tiles,
                "has_docs": constexprs.get("HAS_DOCS"),
                **options,
                "shared_bytes": compiled.metadata.shared,
                "fits": compiled.metadata.shared <= H100_SHARED_BYTES,
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
    return results


def main(argv: list[str] | None = None) -> None:
    from tools.config import parse

    cfg = parse(Config, sys.argv[1:] if argv is None else argv)
    results = compile_all(cfg)
    for r in results:
        print(json.dumps(r))
    too_big = [r for r in results if not r["fits"]]
    if too_big:
        raise SystemExit(f"{len(too_big)} configurations exceed {H100_SHARED_BYTES} bytes of shared memory")
    print(f"all {len(results)} kernel configurations compile for sm_{cfg.arch} and fit in shared memory")


if __name__ == "__main__":
    main()
