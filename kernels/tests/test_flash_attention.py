"""Flash attention against the dense-mask SDPA reference (kernels.reference.attention): several documents
per row including length-1 documents, GQA, lengths not a multiple of the tile, uneven tiles, forward and the
gradients of q, k and v.

Tolerances: fp32 atol = rtol = 2e-5 (observed ~2e-6). bf16 (inputs rounded to bf16, compared with the fp32
reference on the same inputs): within 2x the error of PyTorch's own bf16 attention + 2e-3, and atol 3e-2.
"""

import pytest
import torch
import torch.nn.functional as F

from kernels import flash_attention, flash_attention_varlen, reference
from kernels._flash_attention import document_bounds

FP32 = dict(atol=2e-5, rtol=2e-5)


def inputs(B, T, H, HKV, D, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    make = lambda h: torch.randn(B, T, h, D, generator=gen).to(dtype).requires_grad_()  # noqa: E731
    return make(H), make(HKV), make(HKV), torch.randn(B, T, H, D, generator=gen).to(dtype)


def forward_backward(fn, q, k, v, g):
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), g))


def runs(*lengths):
    return torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])


CASES = [
    # B, T, H, H_kv, D, doc_ids (None: plain causal), blocks
    (2, 37, 4, 2, 24, torch.stack([runs(5, 1, 20, 11), runs(1, 1, 1, 34)]), (16, 16)),
    (1, 45, 2, 2, 32, runs(3, 17, 1, 1, 23)[None], (16, 32)),
    (2, 21, 3, 1, 16, None, (32, 16)),
]


@pytest.mark.parametrize("B, T, H, HKV, D, doc_ids, blocks", CASES)
def test_fp32_matches_dense_mask_sdpa(B, T, H, HKV, D, doc_ids, blocks):
    q, k, v, g = inputs(B, T, H, HKV, D, torch.float32)
    got = forward_backward(lambda q, k, v: flash_attention(q, k, v, doc_ids, blocks=blocks), q, k, v, g)
    want = forward_backward(lambda q, k, v: reference.attention(q, k, v, doc_ids), q, k, v, g)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(a, b, **FP32, msg=lambda m, name=name: f"{name}: {m}")


def test_bf16_error_is_within_twice_pytorch_bf16_error():
    doc_ids = torch.stack([runs(6, 1, 25, 1), runs(33)])
    q, k, v, g = inputs(2, 33, 4, 1, 32, torch.bfloat16, seed=1)
    got = forward_backward(lambda q, k, v: flash_attention(q, k, v, doc_ids), q, k, v, g)
    torch_bf16 = forward_backward(lambda q, k, v: reference.attention(q, k, v, doc_ids), q, k, v, g)
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    exact = forward_backward(lambda q, k, v: reference.attention(q, k, v, doc_ids), q32, k32, v32, g.float())
    for name, a, b, e in zip(("out", "dq", "dk", "dv"), got, torch_bf16, exact):
        err, torch_err = (a.float() - e).abs().max().item(), (b.float() - e).abs().max().item()
        assert err <= 2 * torch_err + 2e-3, f"{name}: kernel error {err} vs PyTorch bf16 error {torch_err}"
        torch.testing.assert_close(a.float(), e, atol=3e-2, rtol=2e-2)


def test_varlen_packed_layout_equals_attention_per_document():
    # Documents of lengths 7, 0 (empty), 1, 12 and 3 packed back to back: each must see only itself.
    lengths = [7, 0, 1, 12, 3]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    N, H, HKV, D = sum(lengths), 4, 2, 16
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(N, h, D, generator=gen).requires_grad_() for h in (H, HKV, HKV))
    out = flash_attention_varlen(q, k, v, cu)
    dq, dk, dv = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected = []
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if e > s:  # plain causal SDPA on the document alone, [1, H, len, D]
            qd, kd, vd = (x[s:e].transpose(0, 1)[None] for x in (q, k, v))
            expected.append(
                F.scaled_dot_product_attention(qd, kd, vd, is_causal=True, enable_gqa=True)[0].transpose(0, 1)
            )
    expected = torch.cat(expected)
    torch.testing.assert_close(out, expected, **FP32)
    for got, want in zip((dq, dk, dv), torch.autograd.grad(expected.square().sum(), (q, k, v))):
        torch.testing.assert_close(got, want, **FP32)


def test_documents_are_runs_of_equal_ids():
    # ids 0,0,1,1,0,0: the second run of 0 is a new document (it may not see the first).
    doc_ids = torch.tensor([[0, 0, 1, 1, 0, 0]])
    start, end = document_bounds(doc_ids)
    assert start.tolist() == [[0, 0, 2, 2, 4, 4]] and end.tolist() == [[1, 1, 3, 3, 5, 5]]
    q, k, v, _ = inputs(1, 6, 2, 2, 8, torch.float32)
    relabelled = torch.tensor([[0, 0, 1, 1, 2, 2]])
    with torch.no_grad():
        torch.testing.assert_close(flash_attention(q, k, v, doc_ids), reference.attention(q, k, v, relabelled), **FP32)


def test_bad_input_is_named():
    q, k, v, _ = inputs(1, 8, 3, 2, 8, torch.float32)
    with pytest.raises(ValueError, match="not a multiple"):
        flash_attention(q, k, v)
    q, k, v, _ = inputs(1, 8, 4, 2, 8, torch.float32)
    with pytest.raises(ValueError, match="doc_ids"):
        flash_attention(q, k, v, torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="cu_seqlens"):
        flash_attention_varlen(q[0], k[0], v[0], torch.tensor([0, 5, 3, 8]))
