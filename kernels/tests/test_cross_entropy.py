"""Fused linear cross-entropy against F.cross_entropy(hidden @ weight.T): loss, d hidden, d weight.

Tolerances: fp32 atol = rtol = 1e-5. bf16: the logits are rounded to bf16 as the eager head rounds them, so
the loss agrees to rtol 1e-3; d hidden to 2 bf16 ulps; d weight (accumulated in bf16 across chunks, one
rounding per chunk) to atol 2e-3 with rtol 2^-6.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from kernels import fused_linear_cross_entropy


def problem(N, D, V, dtype, seed=0, ignore_index=-100):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(V, D, generator=gen) * D**-0.5).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=gen)
    targets[::4] = ignore_index  # a quarter of the tokens are ignored (e.g. prompt or padding)
    return hidden, weight, targets


def loss_and_grads(loss_fn, hidden, weight, scale=3.0):
    loss = loss_fn()
    return (loss, *torch.autograd.grad(loss * scale, (hidden, weight)))  # grad_output != 1 is applied


@pytest.mark.parametrize("chunk_size", [None, 5, 1000])
def test_fp32_matches_cross_entropy(chunk_size):
    hidden, weight, targets = problem(37, 48, 300, torch.float32)  # V = 300: two vocabulary blocks, one ragged
    got = loss_and_grads(
        lambda: fused_linear_cross_entropy(hidden, weight, targets, chunk_size=chunk_size), hidden, weight
    )
    want = loss_and_grads(lambda: F.cross_entropy(hidden @ weight.t(), targets), hidden, weight)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bf16_matches_eager_bf16_head():
    hidden, weight, targets = problem(45, 64, 517, torch.bfloat16, seed=1)
    got = loss_and_grads(lambda: fused_linear_cross_entropy(hidden, weight, targets, chunk_size=8), hidden, weight)
    # The model's eager path: bf16 logits from the head, then .float() and cross-entropy.
    want = loss_and_grads(lambda: F.cross_entropy((hidden @ weight.t()).float(), targets), hidden, weight)
    torch.testing.assert_close(got[0], want[0], atol=0, rtol=1e-3)
    torch.testing.assert_close(got[1], want[1], atol=1e-3, rtol=2**-7)
    torch.testing.assert_close(got[2], want[2], atol=2e-3, rtol=2**-6)


def test_custom_ignore_index_and_all_ignored():
    hidden, weight, targets = problem(20, 16, 50, torch.float32, ignore_index=-1)
    got = fused_linear_cross_entropy(hidden, weight, targets, ignore_index=-1)
    torch.testing.assert_close(got, F.cross_entropy(hidden @ weight.t(), targets, ignore_index=-1))
    none_valid = torch.full((20,), -1)
    loss = fused_linear_cross_entropy(hidden, weight, none_valid, ignore_index=-1)
    dh, dw = torch.autograd.grad(loss, (hidden, weight))
    assert loss.item() == 0.0 and not dh.any() and not dw.any()  # PyTorch's mean would be nan here


class LargestTensor(TorchDispatchMode):
    """Records the size in bytes of the largest tensor any aten op produces (the interpreter's own copies of
    kernel arguments are byte tensors)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def test_never_materialises_the_logits():
    N, D, V = 96, 16, 600
    hidden, weight, targets = problem(N, D, V, torch.float32)
    with LargestTensor() as mode:
        loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=8)
        loss.backward()
    # The largest tensors are dW [V, D] and one chunk of logits [8, V]; [N, V] would be 57,600 floats.
    assert mode.largest == 4 * max(V * D, 8 * V) < 4 * N * V / 4


def test_bad_input_is_named():
    hidden, weight, targets = problem(6, 8, 10, torch.float32)
    targets[3] = 10
    with pytest.raises(ValueError, match="target 10 at row 3"):
        fused_linear_cross_entropy(hidden, weight, targets)
    with pytest.raises(ValueError, match="differ"):
        fused_linear_cross_entropy(hidden.double(), weight, targets.clamp(max=9))
    loss = fused_linear_cross_entropy(hidden, weight, targets.clamp(max=9))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        loss.backward()
