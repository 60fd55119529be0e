"""The Llama 3 transformer (paper section 3.2, Table 3), as a plain nn.Module.

Pre-norm blocks: h = x + attn(norm(x)); out = h + ffn(norm(h)). RMSNorm, RoPE (theta 500,000, optional
Llama 3.1 frequency scaling), grouped-query attention, SwiGLU, no biases, untied output head.

Packed sequences carry document boundaries as `doc_ids` [B, T] (equal ids = same document): attention
is causal inside a document and never crosses documents, and RoPE positions can restart per document.
Parallelism, compile and activation checkpointing are applied from outside (training/), torchtitan-style.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model import attention, rope


@dataclass
class ModelArgs:
    """Field names follow Meta's params.json, so a checkpoint's params load directly."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = 8
    vocab_size: int = 128256
    multiple_of: int = 1024  # SwiGLU hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = 1.3
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    use_scaled_rope: bool = False  # Llama 3.1 RoPE frequency scaling (factor 8, low 1, high 4, original 8192)
    max_seq_len: int = 8192  # length of the precomputed RoPE table
    attn_backend: str = "sdpa"  # sdpa: dense boolean mask | flex: block-sparse flex_attention
    restart_positions: bool = True  # RoPE positions restart at 0 at each document start

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        """SwiGLU width: 2/3 of 4*dim, times ffn_dim_multiplier, rounded up to multiple_of."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def validate(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.attn_backend not in attention.BACKENDS:
            raise ValueError(f"attn_backend must be one of {sorted(attention.BACKENDS)}, got '{self.attn_backend}'")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 (as Meta does), scale in the input dtype.
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.kv_heads, args.head_dim
        self.backend = args.attn_backend
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: attention.DocMask, kv_cache=None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
        # [B, T, H, D] -> [B, H, T, D] for attention; GQA: each KV head serves n_heads / n_kv_heads queries.
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if kv_cache is not None:  # inference: append this step's keys/values, attend over everything cached
            k, v = kv_cache.update(k, v)
        out = attention.attend(q, k, v, mask)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x, cos, sin, mask, kv_cache=None):
        normed = self.attention_norm(x)
        if kv_cache is None:  # (training path: swapped-in attention modules need not know about caches)
            h = x + self.attention(normed, cos, sin, mask)
        else:
            h = x + self.attention(normed, cos, sin, mask, kv_cache=kv_cache)
        return h + self.feed_forward(self.ffn_norm(h))

    def init_weights(self, std: float = 0.02) -> None:
        # Output projections get a depth-scaled std (torchtitan's scheme, see the facts sheet).
        depth_std = std / math.sqrt(2 * (self.layer_id + 1))
        for lin in (self.attention.wq, self.attention.wk, self.attention.wv, self.feed_forward.w1):
            nn.init.trunc_normal_(lin.weight, mean=0.0, std=std)
        for lin in (self.attention.wo, self.feed_forward.w2, self.feed_forward.w3):
            nn.init.trunc_normal_(lin.weight, mean=0.0, std=depth_std)
        self.attention_norm.reset_parameters()
        self.ffn_norm.reset_parameters()


class Transformer(nn.Module):
    """tokens [B, T] (+ doc_ids [B, T], positions [B, T]) -> logits [B, T, vocab] in fp32."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        args.validate()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        # A ModuleDict keyed "0".."n-1" keeps Meta's parameter names (layers.{i}...) and lets
        # pipeline parallelism drop layers without renumbering.
        self.layers = nn.ModuleDict({str(i): TransformerBlock(i, args) for i in range(args.n_layers)})
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        cos, sin = rope.table(args)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def init_weights(self) -> None:
        """Initialise every parameter and buffer in place: call after to_empty() on a meta-built model."""
        cos, sin = rope.table(self.args, device=self.rope_cos.device)
        with torch.no_grad():
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)
        nn.init.normal_(self.tok_embeddings.weight)
        for layer in self.layers.values():
            layer.init_weights()
        self.norm.reset_parameters()
        cutoff = 3 * self.args.dim**-0.5
        nn.init.trunc_normal_(self.output.weight, std=self.args.dim**-0.5, a=-cutoff, b=cutoff)

    def hidden(
        self,
        tokens: torch.Tensor,
        doc_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        *,
        cache=None,
    ) -> torch.Tensor:
        """Final-norm hidden states [B, T, dim], the input of the output head (used by fused losses).

        With `cache` (a model.generate.KVCache), `tokens` are the next T tokens of each cached sequence: their
        keys/values are appended to the cache, and positions and mask come from it (doc_ids must be None)."""
        B, T = tokens.shape
        if cache is not None:
            if doc_ids is not None:
                raise ValueError("doc_ids cannot be combined with a KV cache (one sequence per batch row)")
            positions = cache.positions(T) if positions is None else positions
            mask = cache.mask(T)
        else:
            if self.args.max_seq_len < T:
                raise ValueError(f"sequence length {T} exceeds max_seq_len {self.args.max_seq_len}")
            if positions is None:
                if doc_ids is not None and self.args.restart_positions:
                    positions = attention.document_positions(doc_ids)
                else:
                    positions = torch.arange(T, device=tokens.device).expand(B, T)
            mask = attention.DocMask.build(doc_ids, self.args.attn_backend, T, tokens.device)
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # [B, T, head_dim/2]
        h = self.tok_embeddings(tokens)
        for key, layer in self.layers.items():
            h = layer(h, cos, sin, mask) if cache is None else layer(h, cos, sin, mask, kv_cache=cache.layer(key))
        if cache is not None:
            cache.advance(T)
        return self.norm(h)

    def forward(
        self,
        tokens: torch.Tensor,
        doc_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        *,
        cache=None,
    ) -> torch.Tensor:
        return self.output(self.hidden(tokens, doc_ids, positions, cache=cache)).float()


def build(args: ModelArgs, device: str | torch.device = "cpu", seed: int | None = 0) -> Transformer:
    """Build on the meta device, materialise on `device`, then initialise (as training does after sharding)."""
    with torch.device("meta"):
        model = Transformer(args)
    if torch.device(device).type == "meta":
        return model
    model.to_empty(device=device)
    if seed is not None:
        torch.manual_seed(seed)
    model.init_weights()
    return model
