"""What every Triton kernel module shares: the interpreter switch, launch checks, a portable dot.

Triton decides at decoration time (`@triton.jit`) whether a kernel compiles for the GPU or runs in its
interpreter, from TRITON_INTERPRET. On a machine without a GPU, set TRITON_INTERPRET=1 before the kernel
modules are imported (the kernels package imports them lazily, so `import kernels` alone is harmless).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Read once, at the same moment the kernel modules (which import this one first) are decorated; a constexpr so
# kernels can branch on it.
INTERPRET = tl.constexpr(bool(triton.knobs.runtime.interpret))


def check_runnable(device: torch.device | str) -> None:
    """Fail clearly unless the kernels can run on `device`: CUDA, or CPU in Triton's interpreter (which must have
    been on when the kernel modules were imported)."""
    device = torch.device(device)
    if device.type == "cuda" or (device.type == "cpu" and INTERPRET):
        return
    if device.type == "cpu":
        raise RuntimeError(
            "kernels: Triton kernels need CUDA tensors; to run them on CPU set TRITON_INTERPRET=1 in the "
            "environment before any kernels submodule is imported (Triton's interpreter, slow: tests only)"
        )
    raise RuntimeError(f"kernels: Triton kernels run on CUDA (or CPU in Triton's interpreter), not on {device}")


def check_device(*tensors: torch.Tensor | None) -> None:
    """Fail clearly where a kernel would be launched on tensors it cannot run on (or on mixed devices)."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) > 1:
        raise ValueError(f"kernels: tensors on different devices {sorted(map(str, devices))}")
    check_runnable(next(iter(devices)))


def device_function(fn):
    """triton.jit for helpers called from kernels. The interpreter re-patches triton.language on every call of
    a jit function (milliseconds each), so there helpers stay plain Python, run inside the calling kernel."""
    return fn if INTERPRET else triton.jit(fn)


@device_function
def dot(a, b, acc, F32: tl.constexpr):
    """acc + a @ b, accumulated in fp32. F32 (for fp32 inputs): IEEE products, not TF32, so fp32 results match
    PyTorch's. The interpreter always multiplies in fp32: its tl.dot multiplies the raw bits of bf16 operands."""
    if F32 or INTERPRET:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@device_function
def cast(x, dtype: tl.constexpr):
    """x.to(dtype), rounding to nearest even as GPUs do (the interpreter truncates fp32 -> bf16)."""
    if INTERPRET and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round the low 16 bits away, ties to even
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


def num_programs(device: torch.device, per_sm: int = 1) -> int:
    """A persistent-style grid size: a few programs per SM on a GPU, a handful in the interpreter."""
    if device.type == "cuda":
        return per_sm * torch.cuda.get_device_properties(device).multi_processor_count
    return 4
