"""Rotary position embeddings in Meta's layout: adjacent pairs (x[2i], x[2i+1]) rotate together.

Hugging Face checkpoints use the rotate-half layout instead; model/ converts wq/wk rows at load time.
"""

from __future__ import annotations

import math

import torch


def frequencies(head_dim: int, theta: float, use_scaled_rope: bool = False) -> torch.Tensor:
    """The head_dim/2 rotation frequencies, theta^(-2i/head_dim), optionally with Llama 3.1 scaling."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    return scale_frequencies(freqs) if use_scaled_rope else freqs


def scale_frequencies(
    freqs: torch.Tensor,
    factor: float = 8.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_context: int = 8192,
) -> torch.Tensor:
    """Llama 3.1: slow down long wavelengths by `factor`, keep short ones, blend smoothly in between."""
    low_freq_wavelen = original_context / low_freq_factor  # wavelengths above this are divided by factor
    high_freq_wavelen = original_context / high_freq_factor  # wavelengths below this are kept
    wavelen = 2 * math.pi / freqs
    smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * freqs / factor + smooth * freqs
    out = torch.where(wavelen > low_freq_wavelen, freqs / factor, blended)
    return torch.where(wavelen < high_freq_wavelen, freqs, out)


def table(args, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency, each [max_seq_len, head_dim/2] in fp32."""
    freqs = frequencies(args.head_dim, args.rope_theta, args.use_scaled_rope).to(device)
    angles = torch.outer(torch.arange(args.max_seq_len, device=device, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, H, D] by the angles of cos/sin [B, T, D/2] (broadcast over heads), in fp32."""
    xf = x.float().unflatten(-1, (-1, 2))  # [B, T, H, D/2, 2]: the adjacent pairs
    x0, x1 = xf[..., 0], xf[..., 1]
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # broadcast over the head axis
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).type_as(x)
