"""Eager PyTorch statements of what each kernel computes: the tests compare the kernels with these, and the
benchmark times them as the eager peers. Plain torch, no Triton (importing this decorates no kernel).

Numerics follow Meta's Llama 3 model (and model/, which kernels does not import): RMSNorm normalises in fp32 and
rounds to x's dtype before the weight; RoPE rotates adjacent pairs (x[2i], x[2i+1]) in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.silu(a) * b


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 500000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * theta^(-2i/head_dim), fp32 [..., head_dim/2], for integer `positions`."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[..., None] * freqs
    return angles.cos(), angles.sin()


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D] rotated by cos/sin [B, T, D/2] or [T, D/2] (broadcast over heads)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Each token's position inside its document (a run of equal ids in doc_ids [B, T]), from 0."""
    T = doc_ids.shape[1]
    idx = torch.arange(T, device=doc_ids.device).expand_as(doc_ids)
    first = torch.ones_like(doc_ids, dtype=torch.bool)
    first[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    return idx - torch.where(first, idx, 0).cummax(1).values


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, doc_ids: torch.Tensor | None) -> torch.Tensor:
    """Causal attention within documents through a dense [B, 1, T, T] mask and SDPA. q [B, T, H, D], k/v
    [B, T, H_kv, D] -> [B, T, H, D]. Query i sees key j iff j <= i and both carry the same id (so ids must
    not repeat across documents of a row; the kernel's runs of equal ids allow it)."""
    T = q.shape[1]
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if doc_ids is not None:
        mask = (mask & (doc_ids[:, :, None] == doc_ids[:, None, :])).unsqueeze(1)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, enable_gqa=True
    )
    return out.transpose(1, 2)
