"""Causal attention with document masking, behind interchangeable backends with equal outputs.

- sdpa: a dense boolean mask [B, 1, T, T] through scaled_dot_product_attention (the reference path).
- flex: flex_attention with a BlockMask, which skips blocks that are fully masked (block-sparse).

A token attends to itself and to earlier tokens of the same document; documents are contiguous runs of
equal ids in `doc_ids` [B, T]. Without doc_ids the mask is plain causal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKENDS = {"sdpa", "flex"}


def doc_ids_from_eos(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Document ids for a packed batch where each document ends with `eos_id`: the token after an EOS
    starts a new document."""
    starts = torch.zeros_like(tokens, dtype=torch.long)
    starts[:, 1:] = (tokens[:, :-1] == eos_id).long()
    return starts.cumsum(dim=1)


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its document, restarting at 0 where the document id changes."""
    B, T = doc_ids.shape
    idx = torch.arange(T, device=doc_ids.device).expand(B, T)
    is_start = torch.ones_like(doc_ids, dtype=torch.bool)
    is_start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    # index of the most recent document start at or before each token
    start_idx = torch.where(is_start, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start_idx


@dataclass
class DocMask:
    """The mask for one forward pass, in the form its backend wants (doc_ids kept for kernels)."""

    backend: str
    doc_ids: torch.Tensor | None = None
    dense: torch.Tensor | None = None  # [B, 1, T, T] bool (sdpa); None means plain causal
    block: object | None = None  # flex_attention BlockMask

    @classmethod
    def build(
        cls, doc_ids: torch.Tensor | None, backend: str, seq_len: int | None = None, device: torch.device | None = None
    ) -> DocMask:
        if backend == "sdpa":
            if doc_ids is None:
                return cls(backend)
            T = doc_ids.shape[1]
            causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
            same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # [B, T(query), T(key)]
            return cls(backend, doc_ids, dense=(same_doc & causal).unsqueeze(1))
        if backend == "flex":
            from torch.nn.attention.flex_attention import create_block_mask

            if doc_ids is None:

                def mask_mod(b, h, q, kv):
                    return q >= kv

                return cls(backend, block=create_block_mask(mask_mod, None, None, seq_len, seq_len, device=device))
            B, T = doc_ids.shape

            def mask_mod(b, h, q, kv):
                return (q >= kv) & (doc_ids[b, q] == doc_ids[b, kv])

            return cls(backend, doc_ids, block=create_block_mask(mask_mod, B, None, T, T, device=doc_ids.device))
        raise ValueError(f"unknown attention backend '{backend}' (known: {sorted(BACKENDS)})")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: DocMask) -> torch.Tensor:
    """q [B, H, T, D], k/v [B, H_kv, T, D] -> [B, H, T, D]. H must be a multiple of H_kv (GQA)."""
    if mask.backend == "sdpa":
        if mask.dense is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense, enable_gqa=True)
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=mask.block, enable_gqa=True)
