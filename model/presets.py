"""Model presets: the paper's Table 3 sizes and small ones for CPU work."""

from __future__ import annotations

import dataclasses

from model.llama import ModelArgs

PRESETS: dict[str, ModelArgs] = {
    "8b": ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, multiple_of=1024, ffn_dim_multiplier=1.3),
    "70b": ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096, ffn_dim_multiplier=1.3),
    "405b": ModelArgs(dim=16384, n_layers=126, n_heads=128, n_kv_heads=8, multiple_of=4096, ffn_dim_multiplier=1.2),
    # CPU-sized: small vocabularies (a BPE trained in the Llama 3 format), same architecture.
    "tiny": ModelArgs(
        dim=256,
        n_layers=4,
        n_heads=8,
        n_kv_heads=4,
        vocab_size=8192,
        multiple_of=256,
        ffn_dim_multiplier=None,
        max_seq_len=2048,
    ),
    "small": ModelArgs(
        dim=512,
        n_layers=8,
        n_heads=8,
        n_kv_heads=4,
        vocab_size=32768,
        multiple_of=256,
        ffn_dim_multiplier=None,
        max_seq_len=4096,
    ),
}


def preset(name: str, **overrides) -> ModelArgs:
    """A copy of preset `name` with field overrides (e.g. vocab_size=4096, use_scaled_rope=True)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset '{name}' (known: {', '.join(PRESETS)})")
    return dataclasses.replace(PRESETS[name], **overrides)
