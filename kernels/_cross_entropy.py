"""Fused linear + cross-entropy: mean over valid tokens of CE(hidden @ weight^T, targets), without ever
holding the [N, V] logits (N tokens x 128,256 vocabulary is 4 GB in fp32 at 8K tokens).

Tokens are processed in chunks of C rows. For each chunk: logits = h_c W^T ([C, V], the input dtype, as
the eager head computes them), then Triton programs (one per row on a GPU) compute each row's log-sum-exp (online, over
vocabulary blocks) and loss, and overwrite the row with d loss / d logits = (softmax - onehot) / n_valid.
The same pass then accumulates dH_c = G_c W and dW += G_c^T h_c, so backward only scales the stored
gradients by the incoming grad_output. Peak extra memory: one [C, V] chunk plus dW and dH.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _triton


@triton.jit
def _loss_and_grad(
    LOGITS, TARGETS, LOSS, stride_row, n_rows, V, ignore_index, inv_n_valid,
    BLOCK_ROWS: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    in_range = rows < n_rows
    row_ptr = LOGITS + rows * stride_row
    base = row_ptr[:, None]
    target = tl.load(TARGETS + rows, mask=in_range, other=ignore_index)
    valid = (target != ignore_index) & in_range
    cols = tl.arange(0, BLOCK_V)
    # Pass 1: running max and sum of exp over the vocabulary blocks.
    m = tl.full([BLOCK_ROWS], float("-inf"), dtype=tl.float32)
    d = tl.zeros([BLOCK_ROWS], dtype=tl.float32)
    for start in range(0, V, BLOCK_V):
        mask = in_range[:, None] & (start + cols[None, :] < V)
        x = tl.load(base + start + cols[None, :], mask=mask, other=float("-inf")).to(tl.float32)
        x = tl.where(in_range[:, None], x, 0.0)  # rows past the end stay finite
        m_new = tl.maximum(m, tl.max(x, 1))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new[:, None]), 1)
        m = m_new
    lse = m + tl.log(d)
    target_logit = tl.load(row_ptr + target, mask=valid, other=0.0).to(tl.float32)
    tl.store(LOSS + rows, tl.where(valid, lse - target_logit, 0.0), mask=in_range)
    # Pass 2: each row becomes its gradient (zero for ignored rows).
    scale = tl.where(valid, inv_n_valid, 0.0)[:, None]
    for start in range(0, V, BLOCK_V):
        mask = in_range[:, None] & (start + cols[None, :] < V)
        x = tl.load(base + start + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        g = tl.exp(x - lse[:, None]) - tl.where(start + cols[None, :] == target[:, None], 1.0, 0.0)
        tl.store(base + start + cols[None, :], _triton.cast(g * scale, LOGITS.dtype.element_ty), mask=mask)


def default_chunk_size(n_tokens: int, vocab: int, dim: int) -> int:
    """Chunks whose logits are about the size of the hidden states (N x D), Liger-Kernel's rule of thumb."""
    return min(triton.next_power_of_2(triton.cdiv(n_tokens, triton.cdiv(vocab, dim))), max(n_tokens, 1))


def _tiles(vocab: int) -> tuple[int, int]:
    """(BLOCK_ROWS, BLOCK_V): one row per program on a GPU (32K-wide vocabulary blocks, 32 warps); several
    rows and narrower blocks in the interpreter, whose cost is per operation."""
    if _triton.INTERPRET:
        return 16, min(triton.next_power_of_2(vocab), 256)
    return 1, min(triton.next_power_of_2(vocab), 32768)


class FusedLinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_size):
        _triton.check_device(hidden, weight, targets)
        if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
            raise ValueError(
                f"fused_linear_cross_entropy: hidden {tuple(hidden.shape)} must be [N, D] and weight "
                f"{tuple(weight.shape)} [V, D]"
            )
        if targets.shape != hidden.shape[:1]:
            raise ValueError(
                f"fused_linear_cross_entropy: targets {tuple(targets.shape)} must be [N={hidden.shape[0]}]"
            )
        if hidden.dtype != weight.dtype:
            raise ValueError(f"fused_linear_cross_entropy: hidden {hidden.dtype} and weight {weight.dtype} differ")
        N, D = hidden.shape
        V = weight.shape[0]
        valid = targets != ignore_index
        bad = valid & ((targets < 0) | (targets >= V))
        if bool(bad.any()):
            raise ValueError(
                f"fused_linear_cross_entropy: target {int(targets[bad][0])} at row {int(bad.nonzero()[0, 0])} is "
                f"outside [0, {V}) and is not ignore_index {ignore_index}"
            )
        n_valid = int(valid.sum())
        hidden = hidden.contiguous()
        targets = targets.contiguous()
        chunk = chunk_size or default_chunk_size(N, V, D)
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        losses = torch.empty(N, dtype=torch.float32, device=hidden.device)
        block_rows, block_v = _tiles(V)
        for start in range(0, N, chunk):
            h = hidden[start : start + chunk]
            logits = h @ weight.t()  # [C, V]: the only vocabulary-sized buffer
            _loss_and_grad[(triton.cdiv(h.shape[0], block_rows),)](
                logits, targets[start : start + chunk], losses[start : start + chunk], logits.stride(0), h.shape[0],
                V, ignore_index, 1.0 / max(n_valid, 1),
                BLOCK_ROWS=block_rows, BLOCK_V=block_v, num_warps=32 if block_v >= 8192 else 4,
            )  # fmt: skip
            if grad_h is not None:
                torch.mm(logits, weight, out=grad_h[start : start + chunk])
            if grad_w is not None:
                grad_w.addmm_(logits.t(), h)  # accumulated in the weight's dtype, one rounding per chunk
        ctx.grads = (grad_h, grad_w)
        return losses.sum() / max(n_valid, 1)

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.grads is None:
            raise RuntimeError("fused_linear_cross_entropy: backward can run only once (the gradients are consumed)")
        grad_h, grad_w = ctx.grads
        ctx.grads = None
        # Scaled in place: these buffers were made for this backward alone.
        if grad_h is not None:
            grad_h.mul_(grad_loss.to(grad_h.dtype))
        if grad_w is not None:
            grad_w.mul_(grad_loss.to(grad_w.dtype))
        return grad_h, grad_w, None, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of logits hidden [N, D] @ weight [V, D]^T against targets [N] (long), over the tokens
    whose target is not ignore_index (0 with zero gradients when there are none; PyTorch gives nan). Both
    gradients are computed during the forward, chunk by chunk (chunk_size tokens; default ~N*D/V)."""
    return FusedLinearCrossEntropyFunction.apply(hidden, weight, targets, ignore_index, chunk_size)
