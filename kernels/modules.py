"""`apply(model, ops)`: run a model.llama.Transformer on the Triton kernels, applied from outside (torchtitan-style).

Each matching submodule's class is swapped in place for a subclass whose forward calls the kernels; parameters,
buffers, names, state dicts and init_weights are untouched, so checkpoints, FSDP and optimizers see the same
model. Apply before wrapping modules (fully_shard, activation checkpointing, compile).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from kernels import _triton
from kernels.flash_attention import flash_attention
from kernels.rmsnorm import rms_norm
from kernels.rope import rope_
from kernels.swiglu import swiglu
from model import attention, llama
from model import rope as model_rope

OPS = ("rmsnorm", "rope", "swiglu", "attention")


@dataclass
class KernelsConfig:
    """The backend switch for a training config: which ops run on Triton kernels (empty: the PyTorch path),
    passed as `apply(model, cfg.ops)`. The fused loss is the caller's switch (it replaces `model.output` +
    cross-entropy with `fused_linear_cross_entropy`; training's `loss=fused`)."""

    ops: list[str] = field(default_factory=list)


class KernelRMSNorm(llama.RMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class KernelFeedForward(llama.FeedForward):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(swiglu(self.w1(x), self.w3(x)))


class KernelAttention(llama.Attention):
    """model.llama.Attention with Triton RoPE (in place, on the projections) and/or flash attention."""

    kernel_ops: frozenset[str] = frozenset()

    def forward(self, x, cos, sin, mask: attention.DocMask, **inference):
        if inference:  # e.g. a KV cache during generation: the PyTorch path (the kernels are for training)
            return super().forward(x, cos, sin, mask, **inference)
        B, T, _ = x.shape
        q, k, v = self.wq(x), self.wk(x), self.wv(x)  # [B, T, heads * head_dim]
        if "rope" in self.kernel_ops:
            q, k = rope_(q, k, cos, sin)
        q = q.view(B, T, self.n_heads, self.head_dim)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)
        v = v.view(B, T, self.n_kv_heads, self.head_dim)
        if "rope" not in self.kernel_ops:
            q, k = model_rope.apply(q, cos, sin), model_rope.apply(k, cos, sin)
        if "attention" in self.kernel_ops:
            out = flash_attention(q, k, v, mask.doc_ids)  # [B, T, H, D], no transposes needed
        else:
            out = attention.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2)
        return self.wo(out.reshape(B, T, -1))


_SWAPS = ((llama.RMSNorm, KernelRMSNorm, "rmsnorm"), (llama.FeedForward, KernelFeedForward, "swiglu"))


def _swap(module: nn.Module, base: type, kernel_cls: type, wanted: bool) -> None:
    if type(module) not in (base, kernel_cls):
        raise TypeError(
            f"kernels.apply: {type(module).__name__} is a wrapped {base.__name__}; apply kernels before wrapping "
            "modules (fully_shard, checkpointing, compile)"
        )
    module.__class__ = kernel_cls if wanted else base


def apply(model: nn.Module, ops: Iterable[str] = OPS) -> nn.Module:
    """Swap the chosen ops of every block of `model` (a model.llama.Transformer or any module holding its
    layers) to Triton kernels; ops not named go back to PyTorch. Returns the model, changed in place."""
    ops = frozenset(ops)
    unknown = ops - set(OPS)
    if unknown:
        raise ValueError(f"kernels.apply: unknown ops {sorted(unknown)} (known: {', '.join(OPS)})")
    param = next(model.parameters(), None)
    if ops and param is not None:
        _triton.check_device(param)
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
