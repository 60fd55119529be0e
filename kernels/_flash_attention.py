"""Flash attention (FlashAttention-2 schedule) with causal document masking and GQA, forward and backward.

Query i attends to key j iff doc_start(i) <= j <= i: causal, and never across a document boundary, where a
document is a contiguous run of equal ids in `doc_ids` [B, T] (so 0,0,1,1,0,0 is three documents) or a segment
of `cu_seqlens` in the packed varlen layout. Tiles wholly outside [doc_start, i] are skipped, so a pack of short
documents costs what its documents cost, not T^2. GQA: query head h reads KV head h // (H / H_kv); the dK/dV
kernel sums over the H / H_kv query heads of its KV head, so no atomics are needed.

Scores are kept in base 2: s = (q . k) * scale * log2(e), p = exp2(s - lse2). Forward stores lse2 per row for
the backward, which recomputes p tile by tile:
    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - delta)  with delta = rowsum(dO * O),   dQ = dS K * scale,
    dK = dS^T Q * scale.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels import _triton

LOG2E = 1.4426950408889634


@triton.jit
def _fwd(
    Q, K, V, O, LSE, DOC_START, sm_scale,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh, stride_ob, stride_ot, stride_oh,
    T, H, G, D,
    HAS_DOCS: tl.constexpr, F32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    hk = h // G
    rows = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dmask = dims[None, :] < D
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qt + dims[None, :],
        mask=(rows[:, None] < T) & dmask, other=0.0,
    )  # fmt: skip
    K_base = K + b * stride_kb + hk * stride_kh
    V_base = V + b * stride_vb + hk * stride_vh
    qk_scale = sm_scale * 1.4426950408889634
    hi = tl.minimum(start_m + BLOCK_M, T)
    if HAS_DOCS:
        row_start = tl.load(DOC_START + b * T + rows, mask=rows < T, other=0)
        lo = tl.load(DOC_START + b * T + start_m)  # the block's smallest document start (starts never decrease)
        lo = lo - lo % BLOCK_N
        full_from = tl.load(DOC_START + b * T + hi - 1)  # keys from here on are in every row's document
    else:
        lo = 0
        full_from = 0
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        kv_mask = (cols[:, None] < T) & dmask
        k = tl.load(K_base + cols[:, None] * stride_kt + dims[None, :], mask=kv_mask, other=0.0)
        s = _triton.dot(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), F32) * qk_scale
        # Only tiles crossing the diagonal or a document start need the mask.
        if (start_n + BLOCK_N > start_m + 1) | (start_n < full_from):
            visible = cols[None, :] <= rows[:, None]
            if HAS_DOCS:
                visible = visible & (cols[None, :] >= row_start[:, None])
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V_base + cols[:, None] * stride_vt + dims[None, :], mask=kv_mask, other=0.0)
        acc = _triton.dot(_triton.cast(p, V.dtype.element_ty), v, acc * alpha[:, None], F32)
        m_i = m_new
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(
        O + b * stride_ob + h * stride_oh + rows[:, None] * stride_ot + dims[None, :],
        _triton.cast(out, O.dtype.element_ty), mask=(rows[:, None] < T) & dmask,
    )  # fmt: skip
    tl.store(LSE + bh * T + rows, m_i + tl.log2(l_safe), mask=rows < T)


@triton.jit
def _bwd_delta(
    O, DO, DELTA, stride_ob, stride_ot, stride_oh, stride_db, stride_dt, stride_dh, T, H, D,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    dims = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < T) & (dims[None, :] < D)
    o = tl.load(O + b * stride_ob + h * stride_oh + rows[:, None] * stride_ot + dims[None, :], mask=mask, other=0.0)
    do = tl.load(DO + b * stride_db + h * stride_dh + rows[:, None] * stride_dt + dims[None, :], mask=mask, other=0.0)
    tl.store(DELTA + bh * T + rows, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=rows < T)


@triton.jit
def _bwd_dkdv(
    Q, K, V, DO, DK, DV, LSE, DELTA, DOC_END, sm_scale,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_db, stride_dt, stride_dh, stride_dkb, stride_dkt, stride_dkh, stride_dvb, stride_dvt, stride_dvh,
    T, H, G, D,
    HAS_DOCS: tl.constexpr, F32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    # One program per (KV tile, batch, KV head); loops over the G query heads sharing the KV head.
    start_n = tl.program_id(0) * BLOCK_N
    bhk = tl.program_id(1).to(tl.int64)
    HKV = H // G
    b, hk = bhk // HKV, bhk % HKV
    cols = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    dmask = dims[None, :] < D
    kv_mask = (cols[:, None] < T) & dmask
    k = tl.load(K + b * stride_kb + hk * stride_kh + cols[:, None] * stride_kt + dims[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + b * stride_vb + hk * stride_vh + cols[:, None] * stride_vt + dims[None, :], mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    lo = start_n - start_n % BLOCK_M
    if HAS_DOCS:
        col_end = tl.load(DOC_END + b * T + cols, mask=cols < T, other=0)  # the last row that sees each key
        hi = tl.load(DOC_END + b * T + tl.minimum(start_n + BLOCK_N, T) - 1) + 1
        full_to = tl.load(DOC_END + b * T + start_n)  # rows up to here are in every key's document
    else:
        hi = T
        full_to = T
    for g in range(G):
        h = hk * G + g
        Q_base = Q + b * stride_qb + h * stride_qh
        DO_base = DO + b * stride_db + h * stride_dh
        for start_m in range(lo, hi, BLOCK_M):
            rows = start_m + offs_m
            q_mask = (rows[:, None] < T) & dmask
            q = tl.load(Q_base + rows[:, None] * stride_qt + dims[None, :], mask=q_mask, other=0.0)
            do = tl.load(DO_base + rows[:, None] * stride_dt + dims[None, :], mask=q_mask, other=0.0)
            lse = tl.load(LSE + (b * H + h) * T + rows, mask=rows < T, other=0.0)
            delta = tl.load(DELTA + (b * H + h) * T + rows, mask=rows < T, other=0.0)
            # Transposed tile [keys, queries], so dK and dV accumulate without transposing P.
            sT = _triton.dot(k, tl.trans(q), tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32), F32) * qk_scale
            pT = tl.exp2(sT - lse[None, :])
            if (start_m < start_n + BLOCK_N - 1) | (start_m + BLOCK_M - 1 > full_to) | (start_m + BLOCK_M > T):
                visible = (rows[None, :] >= cols[:, None]) & (rows[None, :] < T)
                if HAS_DOCS:
                    visible = visible & (rows[None, :] <= col_end[:, None])
                pT = tl.where(visible, pT, 0.0)
            dv = _triton.dot(_triton.cast(pT, DO.dtype.element_ty), do, dv, F32)
            dpT = _triton.dot(v, tl.trans(do), tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32), F32)
            dsT = pT * (dpT - delta[None, :])
            dk = _triton.dot(_triton.cast(dsT, Q.dtype.element_ty), q, dk, F32)
    tl.store(
        DK + b * stride_dkb + hk * stride_dkh + cols[:, None] * stride_dkt + dims[None, :],
        _triton.cast(dk * sm_scale, DK.dtype.element_ty), mask=kv_mask,
    )  # fmt: skip
    tl.store(
        DV + b * stride_dvb + hk * stride_dvh + cols[:, None] * stride_dvt + dims[None, :],
        _triton.cast(dv, DV.dtype.element_ty), mask=kv_mask,
    )  # fmt: skip


@triton.jit
def _bwd_dq(
    Q, K, V, DO, DQ, LSE, DELTA, DOC_START, sm_scale,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_db, stride_dt, stride_dh, stride_dqb, stride_dqt, stride_dqh,
    T, H, G, D,
    HAS_DOCS: tl.constexpr, F32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    hk = h // G
    rows = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dmask = dims[None, :] < D
    q_mask = (rows[:, None] < T) & dmask
    q = tl.load(Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qt + dims[None, :], mask=q_mask, other=0.0)
    do = tl.load(DO + b * stride_db + h * stride_dh + rows[:, None] * stride_dt + dims[None, :], mask=q_mask, other=0.0)
    lse = tl.load(LSE + bh * T + rows, mask=rows < T, other=0.0)
    delta = tl.load(DELTA + bh * T + rows, mask=rows < T, other=0.0)
    K_base = K + b * stride_kb + hk * stride_kh
    V_base = V + b * stride_vb + hk * stride_vh
    qk_scale = sm_scale * 1.4426950408889634
    hi = tl.minimum(start_m + BLOCK_M, T)
    if HAS_DOCS:
        row_start = tl.load(DOC_START + b * T + rows, mask=rows < T, other=0)
        lo = tl.load(DOC_START + b * T + start_m)
        lo = lo - lo % BLOCK_N
        full_from = tl.load(DOC_START + b * T + hi - 1)
    else:
        lo = 0
        full_from = 0
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        kv_mask = (cols[:, None] < T) & dmask
        k = tl.load(K_base + cols[:, None] * stride_kt + dims[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V_base + cols[:, None] * stride_vt + dims[None, :], mask=kv_mask, other=0.0)
        s = _triton.dot(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), F32) * qk_scale
        p = tl.exp2(s - lse[:, None])
        if (start_n + BLOCK_N > start_m + 1) | (start_n < full_from):
            visible = cols[None, :] <= rows[:, None]
            if HAS_DOCS:
                visible = visible & (cols[None, :] >= row_start[:, None])
            p = tl.where(visible, p, 0.0)
        dp = _triton.dot(do, tl.trans(v), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), F32)
        ds = p * (dp - delta[:, None])
        dq = _triton.dot(_triton.cast(ds, K.dtype.element_ty), k, dq, F32)
    tl.store(
        DQ + b * stride_dqb + h * stride_dqh + rows[:, None] * stride_dqt + dims[None, :],
        _triton.cast(dq * sm_scale, DQ.dtype.element_ty), mask=q_mask,
    )  # fmt: skip


def _configs(pairs: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in pairs]


# GPU tile shapes (BLOCK_M query rows x BLOCK_N keys, warps, pipeline stages), autotuned per (T, D, G, masking).
# `//kernels:test_compile` compiles every one of them for sm_90 and checks its shared memory fits an H100.
FWD_CONFIGS = _configs([(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 4), (128, 32, 4, 4)])
DKDV_CONFIGS = _configs([(32, 128, 4, 3), (64, 64, 4, 3), (64, 128, 8, 3)])
DQ_CONFIGS = _configs([(128, 32, 4, 3), (64, 64, 4, 3), (128, 64, 8, 3)])
_KEY = ["T", "D", "G", "HAS_DOCS"]
# The interpreter (CPU) runs one fixed tile (its cost is per operation, not per element, so not too small);
# tests pass other `blocks` to cover uneven tilings.
INTERPRETER_BLOCKS = (32, 32)

_TUNED = (
    {}
    if _triton.INTERPRET
    else {
        "fwd": triton.autotune(FWD_CONFIGS, key=_KEY)(_fwd),
        "dkdv": triton.autotune(DKDV_CONFIGS, key=_KEY)(_bwd_dkdv),
        "dq": triton.autotune(DQ_CONFIGS, key=_KEY)(_bwd_dq),
    }
)


def _launch(name: str, kernel, tiled: str, rows: int, programs: int, args: tuple, blocks, **constexprs) -> None:
    """Grid (row tiles, programs), where the first axis walks `rows` in tiles of `tiled` ("BLOCK_M" or
    "BLOCK_N"). Explicit tiles in the interpreter or when `blocks` is given, else the GPU autotuner."""
    if blocks is None and name in _TUNED:
        _TUNED[name][lambda meta: (triton.cdiv(rows, meta[tiled]), programs)](*args, **constexprs)
        return
    block_m, block_n = blocks or INTERPRETER_BLOCKS
    tiles = {"BLOCK_M": block_m, "BLOCK_N": block_n}
    kernel[(triton.cdiv(rows, tiles[tiled]), programs)](*args, **tiles, **constexprs)


def document_bounds(doc_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index of each token's document, int32 [B, T] each (documents = runs of equal ids)."""
    B, T = doc_ids.shape
    idx = torch.arange(T, device=doc_ids.device).expand(B, T)
    is_first = torch.ones_like(doc_ids, dtype=torch.bool)
    is_first[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    is_last = torch.ones_like(is_first)
    is_last[:, :-1] = is_first[:, 1:]
    # the nearest document start at or before each token (a running maximum), and the nearest end at or after
    # it (a reversed running minimum)
    start = torch.where(is_first, idx, 0).cummax(1).values
    end = torch.where(is_last, idx, T).flip(1).cummin(1).values.flip(1)
    return start.to(torch.int32).contiguous(), end.to(torch.int32).contiguous()


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(
            f"flash_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} must be [B, T, heads, D]"
        )
    B, T, H, D = q.shape
    if k.shape[:2] != (B, T) or k.shape[3] != D:
        raise ValueError(f"flash_attention: k/v {tuple(k.shape)} do not match q {tuple(q.shape)} in B, T or D")
    if H % k.shape[2]:
        raise ValueError(f"flash_attention: {H} query heads are not a multiple of {k.shape[2]} KV heads")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"flash_attention: q/k/v dtypes {q.dtype}, {k.dtype}, {v.dtype} must match (fp32/bf16/fp16)")
    if D > 256:
        raise ValueError(f"flash_attention: head_dim {D} > 256 is not supported")


def _last_contiguous(*xs: torch.Tensor) -> list[torch.Tensor]:
    return [x if x.stride(-1) == 1 else x.contiguous() for x in xs]


class FlashAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, doc_start, doc_end, scale, blocks):
        _triton.check_device(q, k, v, doc_start)
        _check(q, k, v)
        q, k, v = _last_contiguous(q, k, v)
        B, T, H, D = q.shape
        G = H // k.shape[2]
        o = torch.empty_like(q)
        lse = torch.empty((B, H, T), dtype=torch.float32, device=q.device)
        if B * T:
            has_docs = doc_start is not None
            args = (
                q, k, v, o, lse, doc_start if has_docs else lse, scale,
                *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], T, H, G, D,
            )  # fmt: skip
            _launch(
                "fwd", _fwd, "BLOCK_M", T, B * H, args, blocks,
                HAS_DOCS=has_docs, F32=q.dtype == torch.float32, BLOCK_D=max(triton.next_power_of_2(D), 16),
            )  # fmt: skip
        ctx.save_for_backward(q, k, v, o, lse, doc_start, doc_end)
        ctx.scale, ctx.blocks = scale, blocks
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, doc_start, doc_end = ctx.saved_tensors
        (do,) = _last_contiguous(do)
        B, T, H, D = q.shape
        HKV = k.shape[2]
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        if B * T == 0:
            return dq, dk, dv, None, None, None, None
        block_d = max(triton.next_power_of_2(D), 16)
        delta = torch.empty_like(lse)
        _bwd_delta[(triton.cdiv(T, 64), B * H)](
            o, do, delta, *o.stride()[:3], *do.stride()[:3], T, H, D, BLOCK_M=64, BLOCK_D=block_d
        )
        has_docs = doc_start is not None
        common = dict(HAS_DOCS=has_docs, F32=q.dtype == torch.float32, BLOCK_D=block_d)
        strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
        dkdv_args = (
            q, k, v, do, dk, dv, lse, delta, doc_end if has_docs else lse, ctx.scale,
            *strides, *dk.stride()[:3], *dv.stride()[:3], T, H, H // HKV, D,
        )  # fmt: skip
        _launch("dkdv", _bwd_dkdv, "BLOCK_N", T, B * HKV, dkdv_args, ctx.blocks, **common)
        dq_args = (
            q, k, v, do, dq, lse, delta, doc_start if has_docs else lse, ctx.scale,
            *strides, *dq.stride()[:3], T, H, H // HKV, D,
        )  # fmt: skip
        _launch("dq", _bwd_dq, "BLOCK_M", T, B * H, dq_args, ctx.blocks, **common)
        return dq, dk, dv, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    doc_ids: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    blocks: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Causal attention within documents. q [B, T, H, D], k/v [B, T, H_kv, D], doc_ids [B, T] or None (plain
    causal) -> [B, T, H, D]. scale defaults to 1/sqrt(D); blocks = (BLOCK_M, BLOCK_N) fixes the tiles
    (default: autotuned on GPU, 32x32 in the interpreter)."""
    bounds = (None, None)
    if doc_ids is not None:
        if doc_ids.shape != q.shape[:2]:
            raise ValueError(f"flash_attention: doc_ids {tuple(doc_ids.shape)} must be [B, T] = {tuple(q.shape[:2])}")
        bounds = document_bounds(doc_ids)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return FlashAttentionFunction.apply(q, k, v, *bounds, scale, blocks)


def flash_attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    scale: float | None = None,
    blocks: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The packed layout: q [N, H, D], k/v [N, H_kv, D] hold the documents back to back, document i being
    rows cu_seqlens[i]:cu_seqlens[i+1] (cu_seqlens int, [n_docs + 1], from 0 to N). Returns [N, H, D]."""
    N = q.shape[0]
    cu = cu_seqlens.to(device=q.device, dtype=torch.int64)
    if cu.dim() != 1 or cu.numel() < 2 or int(cu[0]) != 0 or int(cu[-1]) != N or bool((cu[1:] < cu[:-1]).any()):
        raise ValueError(f"flash_attention_varlen: cu_seqlens must rise from 0 to N={N}, got {cu_seqlens.tolist()}")
    lengths = cu[1:] - cu[:-1]
    doc_ids = torch.repeat_interleave(torch.arange(lengths.numel(), device=q.device), lengths)[None]
    out = flash_attention(q[None], k[None], v[None], doc_ids, scale=scale, blocks=blocks)
    return out[0]
