"""SwiGLU gate: out = silu(a) * b for a = w1 x, b = w3 x, forward and backward, one pass over memory each.

silu(a) = a * sigmoid(a);  d silu / da = sigmoid(a) * (1 + a * (1 - sigmoid(a))).
Rounds silu(a) to the input dtype before the product, as the eager `F.silu(a) * b` does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _triton


@triton.jit
def _fwd(A, B, OUT, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    silu = _triton.cast(a * tl.sigmoid(a), OUT.dtype.element_ty).to(tl.float32)
    tl.store(OUT + offs, _triton.cast(silu * b, OUT.dtype.element_ty), mask=mask)


@triton.jit
def _bwd(DOUT, A, B, DA, DB, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(DOUT + offs, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(a)
    silu = _triton.cast(a * sig, DB.dtype.element_ty).to(tl.float32)
    tl.store(DA + offs, _triton.cast(g * b * sig * (1.0 + a * (1.0 - sig)), DA.dtype.element_ty), mask=mask)
    tl.store(DB + offs, _triton.cast(g * silu, DB.dtype.element_ty), mask=mask)


_BLOCK = 1 << 14 if _triton.INTERPRET else 1024  # the interpreter's cost is per operation, not per element


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _triton.check_device(a, b)
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"swiglu: a {tuple(a.shape)} {a.dtype} and b {tuple(b.shape)} {b.dtype} must match")
        a, b = a.contiguous(), b.contiguous()
        out = torch.empty_like(a)
        n = a.numel()
        if n:
            _fwd[(triton.cdiv(n, _BLOCK),)](a, b, out, n, BLOCK=_BLOCK, num_warps=4)
        ctx.save_for_backward(a, b)
        return out

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        a, b = ctx.saved_tensors
        dout = dout.contiguous()
        da, db = torch.empty_like(a), torch.empty_like(b)
        n = a.numel()
        if n:
            _bwd[(triton.cdiv(n, _BLOCK),)](dout, a, b, da, db, n, BLOCK=_BLOCK, num_warps=4)
        return da, db


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """silu(a) * b elementwise (a = w1 x, b = w3 x of the same shape and dtype)."""
    return SwiGLUFunction.apply(a, b)
