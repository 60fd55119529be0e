"""RMSNorm, RoPE and SwiGLU kernels against their eager references (kernels.reference), values and gradients.

Tolerances: fp32 atol = rtol = 1e-5 (observed <= 1e-6); bf16: the kernels round like the references, so
outputs agree to within one bf16 ulp (rtol 2^-7) and gradients within 2 ulps.
"""

import pytest
import torch
import torch.nn.functional as F

from kernels import reference, rms_norm, rope_, swiglu

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=1e-2, rtol=2**-7)}
GRAD_TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2**-6)}


def grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 7, 48), (5, 100)])  # hidden 48 and 100: not powers of two
def test_rmsnorm_matches_the_reference(dtype, shape):
    torch.manual_seed(0)
    weight = torch.empty(shape[-1]).normal_(1.0, 0.5).to(dtype).requires_grad_()
    x = (torch.randn(shape) * 3).to(dtype).requires_grad_()
    g = torch.randn(shape).to(dtype)
    out = rms_norm(x, weight, 1e-5)
    expected = reference.rms_norm(x, weight, 1e-5)
    assert out.dtype == expected.dtype == dtype
    torch.testing.assert_close(out, expected, **TOL[dtype])
    for got, want in zip(grads(out, (x, weight), g), grads(expected, (x, weight), g)):
        torch.testing.assert_close(got, want, **GRAD_TOL[dtype])


def test_rmsnorm_mixed_dtypes_promote_like_the_reference():
    # bf16 activations with an fp32 weight (no FSDP mixed precision): output fp32, as in the reference.
    x = torch.randn(4, 40).bfloat16()
    weight = torch.ones(40)
    out = rms_norm(x, weight, 1e-6)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference.rms_norm(x, weight, 1e-6), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="weight shape"):
        rms_norm(x, torch.ones(41), 1e-6)


def rope_tables(doc_ids, head_dim):
    return reference.rope_angles(reference.document_positions(doc_ids), head_dim)  # restart at each document


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_in_place_matches_the_reference_with_document_positions(dtype):
    torch.manual_seed(0)
    B, T, H, HKV, D = 2, 13, 6, 2, 24  # 12 pairs: not a power of two
    doc_ids = torch.tensor([[0] * 5 + [1] * 8, [0] + [1] + [2] * 11])
    cos, sin = rope_tables(doc_ids, D)
    x = torch.randn(B, T, 16).to(dtype).requires_grad_()
    wq = torch.randn(H * D, 16).to(dtype).requires_grad_()
    wk = torch.randn(HKV * D, 16).to(dtype).requires_grad_()

    def run(kernel):
        q, k = x @ wq.t(), x @ wk.t()  # [B, T, heads * D], as the projections give them
        if kernel:
            q_out, k_out = rope_(q, k, cos, sin)
            assert q_out.data_ptr() == q.data_ptr() and k_out.data_ptr() == k.data_ptr()  # in place
            q, k = q_out.view(B, T, H, D), k_out.view(B, T, HKV, D)
        else:
            q = reference.rope(q.view(B, T, H, D), cos, sin)
            k = reference.rope(k.view(B, T, HKV, D), cos, sin)
        loss = (q.float() * torch.linspace(-1, 1, D)).sum() + (k.float() ** 2).sum()
        return q, k, torch.autograd.grad(loss, (x, wq, wk))

    q1, k1, g1 = run(True)
    q0, k0, g0 = run(False)
    torch.testing.assert_close(q1, q0, **TOL[dtype])
    torch.testing.assert_close(k1, k0, **TOL[dtype])
    for got, want in zip(g1, g0):
        torch.testing.assert_close(got, want, **GRAD_TOL[dtype])


def test_rope_shared_table_and_bad_input():
    torch.manual_seed(0)
    T, D = 9, 8
    cos, sin = rope_tables(torch.zeros(1, T, dtype=torch.long), D)
    q, k = torch.randn(3, T, 2, D), torch.randn(3, T, 1, D)
    want_q = reference.rope(q, cos.expand(3, T, D // 2), sin.expand(3, T, D // 2))
    got_q, _ = rope_(q.clone(), k.clone(), cos[0], sin[0])  # [T, D/2] shared by the batch
    torch.testing.assert_close(got_q, want_q, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="disagree"):
        rope_(q, k[:, :5], cos[0], sin[0])
    view = torch.randn(3, T, 2 * D, requires_grad=True) * 1.0
    with pytest.raises(ValueError, match="is a view"):
        rope_(view.view(3, T, 2, D), k.requires_grad_(), cos[0], sin[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_matches_silu_times_gate(dtype):
    torch.manual_seed(0)
    shape = (3, 5, 1401)  # 21,015 elements: two blocks in the interpreter, the second ragged
    a = (torch.randn(shape) * 4).to(dtype).requires_grad_()
    b = torch.randn(shape).to(dtype).requires_grad_()
    g = torch.randn(shape).to(dtype)
    out, expected = swiglu(a, b), F.silu(a) * b
    torch.testing.assert_close(out, expected, **TOL[dtype])
    for got, want in zip(grads(out, (a, b), g), grads(expected, (a, b), g)):
        torch.testing.assert_close(got, want, **GRAD_TOL[dtype])
