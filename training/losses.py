"""The training loss, chosen by config: a summed next-token cross-entropy over the valid targets.

The training loop (training/loop.py) divides the sum by the global number of target tokens of the step, so
gradient accumulation and data parallelism give the same gradient as one big batch.

- cross_entropy: the model's fp32 logits [B, T, V], then F.cross_entropy.
- chunked: from the final hidden states, the output projection and cross-entropy chunk by chunk of tokens,
  each chunk recomputed in the backward pass, so the [N, V] logits never exist at once.
- fused: kernels.fused_linear_cross_entropy (Triton; the kernels package).
- module:function: any fn(hidden [N, D], weight [V, D], targets [N], ignore_index=-100) -> mean loss.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from training.data import IGNORE

CHUNK = 4096  # tokens per chunk of the chunked loss


def import_function(spec: str) -> Callable:
    """'package.module:function' -> the function, with an error naming what is missing."""
    module_name, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"'{spec}' is not of the form module:function")
    module = importlib.import_module(module_name)
    if not hasattr(module, name):
        raise ValueError(f"module {module_name} has no function '{name}'")
    return getattr(module, name)


def _chunk_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = CHUNK
) -> torch.Tensor:
    """Summed cross-entropy of hidden [N, D] @ weight[V, D].T against targets [N], chunk by chunk."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        total = total + checkpoint(_chunk_sum, h, weight, t, use_reentrant=False)
    return total


def _fused() -> Callable:
    try:
        from kernels import fused_linear_cross_entropy
    except ImportError as e:
        raise RuntimeError(f"loss=fused needs kernels.fused_linear_cross_entropy, which is not available: {e}") from e
    return fused_linear_cross_entropy


class NextTokenLoss:
    """The language-modelling loss of the training loop: loss_fn(model, batch) -> (summed cross-entropy, number of
    target tokens), for a training.data.Batch (tokens, doc_ids, targets [B, T]) moved to `device`."""

    def __init__(self, kind: str = "cross_entropy", device: torch.device | str = "cpu"):
        self.kind, self.device = kind, torch.device(device)
        self.mean_fn = None
        if kind == "fused":
            self.mean_fn = _fused()
        elif ":" in kind:
            self.mean_fn = import_function(kind)
        elif kind not in ("cross_entropy", "chunked"):
            raise ValueError(f"loss must be cross_entropy, chunked, fused or module:function, got '{kind}'")

    def __call__(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, doc_ids = batch.tokens.to(self.device), batch.doc_ids.to(self.device)
        targets = batch.targets.to(self.device).reshape(-1)
        n = (targets != IGNORE).sum()
        if self.kind == "cross_entropy":
            logits = model(tokens, doc_ids)
            return F.cross_entropy(logits.flatten(0, 1), targets, ignore_index=IGNORE, reduction="sum"), n
        hidden = model.hidden(tokens, doc_ids).flatten(0, 1)
        weight = model.output.weight
        if self.kind == "chunked":
            return chunked_cross_entropy(hidden, weight, targets), n
        if int(n) == 0:
            return hidden.sum() * 0.0, n  # keeps the graph (and DDP's hooks) alive
        return self.mean_fn(hidden, weight, targets, ignore_index=IGNORE).float() * n, n
