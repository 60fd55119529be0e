"""The kernel backend of a training run (`parallel.kernels`), applied to model.llama from outside (torchtitan-style).

- reference: model.llama's own PyTorch modules (nothing is swapped).
- triton: the Triton ops of `kernels` (RMSNorm, RoPE, SwiGLU, flash attention with document masking).

Each matching submodule's class is swapped in place for a subclass whose forward calls the kernels; parameters,
buffers, names, state dicts and init_weights are untouched, so checkpoints, FSDP and optimizers see the same
model. `parallelize` applies it first, before activation checkpointing, compile and FSDP (a wrapped module is
refused). model/ knows nothing of kernels and kernels nothing of model/: this file is where they meet. The fused
loss stays the loss's own switch (`loss=fused`, training/losses.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

import kernels
from model import attention, llama
from model import rope as model_rope

BACKENDS = ("reference", "triton")
OPS = ("rmsnorm", "rope", "swiglu", "attention")


class KernelRMSNorm(llama.RMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


class KernelFeedForward(llama.FeedForward):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(kernels.swiglu(self.w1(x), self.w3(x)))


class KernelAttention(llama.Attention):
    """model.llama.Attention with Triton RoPE (in place, on the projections) and/or flash attention."""

    kernel_ops: frozenset[str] = frozenset()

    def forward(self, x, cos, sin, mask: attention.DocMask, **inference):
        if inference:  # e.g. a KV cache during generation: the PyTorch path (the kernels are for training)
            return super().forward(x, cos, sin, mask, **inference)
        B, T, _ = x.shape
        q, k, v = self.wq(x), self.wk(x), self.wv(x)  # [B, T, heads * head_dim]
        if "rope" in self.kernel_ops:
            q, k = kernels.rope_(q, k, cos, sin)
        q = q.view(B, T, self.n_heads, self.head_dim)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)
        v = v.view(B, T, self.n_kv_heads, self.head_dim)
        if "rope" not in self.kernel_ops:
            q, k = model_rope.apply(q, cos, sin), model_rope.apply(k, cos, sin)
        if "attention" in self.kernel_ops:
            out = kernels.flash_attention(q, k, v, mask.doc_ids)  # [B, T, H, D], no transposes needed
        else:
            out = attention.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2)
        return self.wo(out.reshape(B, T, -1))


_SWAPS = ((llama.RMSNorm, KernelRMSNorm, "rmsnorm"), (llama.FeedForward, KernelFeedForward, "swiglu"))


def _swap(module: nn.Module, base: type, kernel_cls: type, wanted: bool) -> None:
    if type(module) not in (base, kernel_cls):
        raise TypeError(
            f"kernel swap: {type(module).__name__} is a wrapped {base.__name__}; swap kernels in before wrapping "
            "modules (fully_shard, checkpointing, compile)"
        )
    module.__class__ = kernel_cls if wanted else base


def swap(model: nn.Module, ops: Iterable[str] = OPS) -> nn.Module:
    """Put the chosen ops of every block of `model` (a model.llama.Transformer or any module holding its layers)
    on the Triton kernels; ops not named go back to PyTorch. Returns the model, changed in place."""
    ops = frozenset(ops)
    unknown = ops - set(OPS)
    if unknown:
        raise ValueError(f"kernel swap: unknown ops {sorted(unknown)} (known: {', '.join(OPS)})")
    for module in model.modules():
        for base, kernel_cls, op in _SWAPS:
            if isinstance(module, base):
                _swap(module, base, kernel_cls, op in ops)
        if isinstance(module, llama.Attention):
            attn_ops = ops & {"rope", "attention"}
            _swap(module, llama.Attention, KernelAttention, bool(attn_ops))
            if attn_ops:
                module.kernel_ops = attn_ops
    return model


def apply_kernels(model: nn.Module, backend: str, device: torch.device) -> nn.Module:
    """`parallel.kernels`: every op on the Triton kernels (triton) or none (reference), for a model that will
    run on `device` (it may still be on the meta device). Fails clearly where the kernels cannot run there."""
    if backend not in BACKENDS:
        raise ValueError(f"parallel.kernels must be one of {', '.join(BACKENDS)}, got '{backend}'")
    if backend == "triton":
        try:
            kernels.check_runnable(device)
        except (ImportError, RuntimeError) as e:
            raise RuntimeError(f"parallel.kernels=triton on {device}: {e}") from e
    return swap(model, OPS if backend == "triton" else ())
