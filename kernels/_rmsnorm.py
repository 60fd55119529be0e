"""Fused RMSNorm: y = cast(x * rsqrt(mean(x^2) + eps)) * w over whole rows, forward and backward.

Same numerics as model.llama.RMSNorm: normalise in fp32, round to x's dtype, then scale by the weight.
Backward (n = x * rstd, g_n = dy * w):  dx = rstd * (g_n - n * mean(g_n * n)),  dw = sum_rows dy * cast(n).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _triton


@triton.jit
def _fwd(X, W, Y, RSTD, stride_x, stride_y, N, D, eps, BLOCK_ROWS: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK)
    mask = (rows[:, None] < N) & (cols[None, :] < D)
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
    w = tl.load(W + cols, mask=cols < D, other=0.0).to(tl.float32)
    normed = _triton.cast(x * rstd[:, None], X.dtype.element_ty).to(tl.float32)  # rounded before the weight
    tl.store(
        Y + rows[:, None] * stride_y + cols[None, :], _triton.cast(normed * w[None, :], Y.dtype.element_ty), mask=mask
    )
    tl.store(RSTD + rows, rstd, mask=rows < N)


@triton.jit
def _bwd(
    DY, X, W, RSTD, DX, DW_PART, stride_dy, stride_x, stride_dx, N, D, rows_per_program,
    BLOCK_ROWS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # Each program handles a contiguous run of rows and keeps its share of dw in registers (fp32).
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    w = tl.load(W + cols, mask=cols < D, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    first = pid.to(tl.int64) * rows_per_program  # int64 row offsets: N * D may exceed 2^31
    last = tl.minimum(first + rows_per_program, N)
    for start in range(first, last, BLOCK_ROWS):
        rows = start + tl.arange(0, BLOCK_ROWS)
        mask = (rows[:, None] < last) & (cols[None, :] < D)
        x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=rows < last, other=0.0)[:, None]
        n = x * rstd
        g = dy * w[None, :]
        dx = rstd * (g - n * (tl.sum(g * n, axis=1) / D)[:, None])
        tl.store(DX + rows[:, None] * stride_dx + cols[None, :], _triton.cast(dx, DX.dtype.element_ty), mask=mask)
        dw += tl.sum(dy * _triton.cast(n, X.dtype.element_ty).to(tl.float32), axis=0)
    tl.store(DW_PART + pid * D + cols, dw, mask=cols < D)


def _tiles(D: int) -> tuple[int, int, int]:
    """(BLOCK_ROWS, BLOCK, num_warps): whole rows; several per program when rows are short (and always in the
    interpreter, whose cost is per operation)."""
    block = triton.next_power_of_2(D)
    rows = max(1, (1 << 16 if _triton.INTERPRET else 1 << 12) // block)
    return rows, block, min(max(rows * block // 256, 1), 16)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        _triton.check_device(x, weight)
        D = x.shape[-1]
        if weight.shape != (D,):
            raise ValueError(f"rms_norm: weight shape {tuple(weight.shape)} does not match hidden size {D}")
        x2 = x.reshape(-1, D)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        N = x2.shape[0]
        y = torch.empty((N, D), dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
        rstd = torch.empty(N, dtype=torch.float32, device=x.device)
        block_rows, block, warps = _tiles(D)
        if N:
            _fwd[(triton.cdiv(N, block_rows),)](
                x2, weight, y, rstd, x2.stride(0), y.stride(0), N, D, eps,
                BLOCK_ROWS=block_rows, BLOCK=block, num_warps=warps,
            )  # fmt: skip
        ctx.save_for_backward(x2, weight, rstd)
        return y.view(*x.shape[:-1], D)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, weight, rstd = ctx.saved_tensors
        N, D = x2.shape
        dy2 = dy.reshape(-1, D)
        if dy2.stride(-1) != 1:
            dy2 = dy2.contiguous()
        dx = torch.empty_like(x2)
        programs = max(min(N, _triton.num_programs(x2.device, per_sm=2)), 1)
        rows_per_program = triton.cdiv(N, programs)
        dw_part = torch.empty((programs, D), dtype=torch.float32, device=x2.device)
        block_rows, block, warps = _tiles(D)
        if N:
            _bwd[(programs,)](
                dy2, x2, weight, rstd, dx, dw_part, dy2.stride(0), x2.stride(0), dx.stride(0), N, D,
                rows_per_program, BLOCK_ROWS=block_rows, BLOCK=block, num_warps=warps,
            )  # fmt: skip
        else:
            dw_part.zero_()
        return dx.view(dy.shape), dw_part.sum(0).to(weight.dtype), None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm over the last axis of x [..., D] with weight [D]; output dtype promote(x, weight) as the reference."""
    return RMSNormFunction.apply(x, weight, eps)
