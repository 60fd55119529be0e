"""RoPE applied in place to q and k in one launch, Meta's adjacent-pair layout, forward and backward.

Pairs (x[2i], x[2i+1]) rotate by angle theta_i(position):
    forward:  (x0 cos - x1 sin, x0 sin + x1 cos)
    backward: the transpose, a rotation by -theta:  (g0 cos + g1 sin, -g0 sin + g1 cos)
cos/sin [B, T, D/2] (or [T, D/2], shared by the batch) are the model's tables gathered at each token's
position, so per-document positions (restarting at each document start) come for free. Rotation is done in
fp32 and rounded once to the input dtype, as model.rope.apply does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _triton


@_triton.device_function
def _rotate(X, tokens, T, n_tokens, stride_b, stride_t, stride_h, n_heads, cos, sin, HALF,
            BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):  # fmt: skip
    # Tile rows are (token, head) pairs: row r is head r % BLOCK_H of token tokens[r // BLOCK_H].
    token = tokens[:, None] + tl.zeros([BLOCK_T, BLOCK_H], dtype=tl.int64)  # [BLOCK_T, BLOCK_H]
    head = tl.arange(0, BLOCK_H)[None, :] + tl.zeros([BLOCK_T, BLOCK_H], dtype=tl.int32)
    token = tl.reshape(token, [BLOCK_T * BLOCK_H])
    head = tl.reshape(head, [BLOCK_T * BLOCK_H])
    pairs = tl.arange(0, BLOCK_HALF)
    row_off = (token // T) * stride_b + (token % T) * stride_t + head * stride_h
    offs = row_off[:, None] + 2 * pairs[None, :]  # the even element of each pair
    mask = ((token < n_tokens) & (head < n_heads))[:, None] & (pairs[None, :] < HALF)
    c = tl.reshape(tl.broadcast_to(cos[:, None, :], [BLOCK_T, BLOCK_H, BLOCK_HALF]), [BLOCK_T * BLOCK_H, BLOCK_HALF])
    s = tl.reshape(tl.broadcast_to(sin[:, None, :], [BLOCK_T, BLOCK_H, BLOCK_HALF]), [BLOCK_T * BLOCK_H, BLOCK_HALF])
    x0 = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    x1 = tl.load(X + offs + 1, mask=mask, other=0.0).to(tl.float32)
    tl.store(X + offs, _triton.cast(x0 * c - x1 * s, X.dtype.element_ty), mask=mask)
    tl.store(X + offs + 1, _triton.cast(x0 * s + x1 * c, X.dtype.element_ty), mask=mask)


@triton.jit
def _rope(
    Q, K, COS, SIN, T, n_tokens, H, HKV, HALF,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_cb, stride_ct,
    BACKWARD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HKV: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):  # fmt: skip
    # One program per BLOCK_T tokens: every head of q and of k of a token shares one cos/sin row.
    tokens = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    pairs = tl.arange(0, BLOCK_HALF)
    cs = ((tokens // T) * stride_cb + (tokens % T) * stride_ct)[:, None] + pairs[None, :]
    cs_mask = (tokens[:, None] < n_tokens) & (pairs[None, :] < HALF)
    cos = tl.load(COS + cs, mask=cs_mask, other=0.0).to(tl.float32)  # [BLOCK_T, BLOCK_HALF]
    sin = tl.load(SIN + cs, mask=cs_mask, other=0.0).to(tl.float32)
    if BACKWARD:
        sin = -sin
    _rotate(Q, tokens, T, n_tokens, stride_qb, stride_qt, stride_qh, H, cos, sin, HALF, BLOCK_T, BLOCK_H, BLOCK_HALF)
    _rotate(
        K, tokens, T, n_tokens, stride_kb, stride_kt, stride_kh, HKV, cos, sin, HALF, BLOCK_T, BLOCK_HKV, BLOCK_HALF
    )


def _heads(x: torch.Tensor, D: int, name: str) -> tuple[int, int]:
    """(number of heads, head stride) of x [B, T, H, D] or [B, T, H * D]."""
    if x.dim() == 4 and x.shape[3] == D:
        return x.shape[2], x.stride(2)
    if x.dim() == 3 and x.shape[2] % D == 0:
        return x.shape[2] // D, D
    raise ValueError(f"rope: {name} {tuple(x.shape)} must be [B, T, heads, {D}] or [B, T, heads * {D}]")


def _launch(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> None:
    if cos.shape != sin.shape or cos.dim() not in (2, 3):
        raise ValueError(
            f"rope: cos {tuple(cos.shape)} and sin {tuple(sin.shape)} must both be [B, T, D/2] or [T, D/2]"
        )
    D = 2 * cos.shape[-1]
    B, T = q.shape[:2]
    (H, stride_qh), (HKV, stride_kh) = _heads(q, D, "q"), _heads(k, D, "k")
    if k.shape[:2] != (B, T) or cos.shape[-2] != T or (cos.dim() == 3 and cos.shape[0] != B):
        raise ValueError(f"rope: q {tuple(q.shape)}, k {tuple(k.shape)}, cos {tuple(cos.shape)} disagree on B, T")
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError("rope: q and k must be contiguous in the head dimension (rotation is in place)")
    if cos.stride(-1) != 1 or cos.stride() != sin.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    stride_cb = cos.stride(0) if cos.dim() == 3 else 0
    if B * T == 0:
        return
    block_h, block_half = triton.next_power_of_2(H), triton.next_power_of_2(D // 2)
    # ~8K elements of q per program on a GPU (8B: 2 tokens x 32 heads x 64 pairs x 2); bigger in the interpreter.
    block_t = max(
        1, min((1 << 16 if _triton.INTERPRET else 1 << 12) // (block_h * block_half), triton.next_power_of_2(B * T))
    )
    _rope[(triton.cdiv(B * T, block_t),)](
        q, k, cos, sin, T, B * T, H, HKV, D // 2,
        q.stride(0), q.stride(1), stride_qh, k.stride(0), k.stride(1), stride_kh, stride_cb, cos.stride(-2),
        BACKWARD=backward, BLOCK_T=block_t, BLOCK_H=block_h, BLOCK_HKV=triton.next_power_of_2(HKV),
        BLOCK_HALF=block_half, num_warps=8,
    )  # fmt: skip


class RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin):
        _triton.check_device(q, k, cos, sin)
        _launch(q, k, cos, sin, backward=False)
        ctx.mark_dirty(q, k)
        ctx.save_for_backward(cos, sin)
        return q, k

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        # The incoming gradients may be shared with other consumers: rotate copies.
        dq = dq.clone(memory_format=torch.contiguous_format)
        dk = dk.clone(memory_format=torch.contiguous_format)
        _launch(dq, dk, cos, sin, backward=True)
        return dq, dk, None, None


def rope_(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k in place by cos/sin [B, T, D/2] (or [T, D/2], D = head_dim); returns (q, k).

    q is [B, T, H, D] or [B, T, H * D], k likewise with H_kv heads. Under autograd, pass tensors that are
    not views (the projection outputs before `.view(B, T, H, D)`): PyTorch's autograd cannot modify two
    views in place from one Function.
    """
    for name, x in (("q", q), ("k", k)):
        if x._base is not None and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
            raise ValueError(f"rope_: {name} is a view; pass the projection output [B, T, heads * head_dim]")
    return RoPEFunction.apply(q, k, cos, sin)
