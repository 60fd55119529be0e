"""Planning an isoFLOP sweep: for each compute budget, a handful of small Llama 3 shapes and their token counts.

Compute per training token is model/accounting.py's (the units MFU uses): 6 x the parameters that do matmuls
(all but the input embedding) plus attention scores, 12 x n_layers x seq_len x dim (QK^T and AV, forward and
backward, PaLM's convention without a causal discount). A budget C
gives each model D = C / flops_per_token tokens. The models of a budget are consecutive members of a width/depth
family, centred on the one whose D/N is closest to `tokens_per_param` (Chinchilla's ~20), so the sweep brackets the
optimum on both sides and the isoFLOP parabola has its vertex inside.

The sweep itself (training each run with training/, then `eval.scaling.fit_sweep` on the records) is wired by the
experiment `//experiments:scaling_sweep`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from model import accounting
from model.llama import ModelArgs

FAMILY_DIMS = (
    64,
    96,
    128,
    192,
    256,
    320,
    384,
    448,
    512,
    640,
    768,
    896,
    1024,
    1280,
    1536,
    1792,
    2048,
    2560,
    3072,
    3584,
    4096,
    5120,
    6144,
    8192,
)


def family_member(dim: int, vocab_size: int, seq_len: int) -> ModelArgs:
    """A Llama 3 shape of width `dim`: head_dim 64 (32 below dim 128), GQA, depth growing with width
    (dim 256 -> 4 layers and 512 -> 8 like the tiny/small presets, 4096 -> 40)."""
    head_dim = 64 if dim >= 128 else 32
    n_heads = max(2, dim // head_dim)
    n_kv = max(1, n_heads // 4) if n_heads >= 8 else max(1, n_heads // 2)
    while n_heads % n_kv:  # GQA needs n_kv_heads to divide n_heads
        n_kv -= 1
    n_layers = max(2, min(dim // 64, 8 + dim // 128))
    return ModelArgs(
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        vocab_size=vocab_size,
        multiple_of=64,
        ffn_dim_multiplier=None,
        max_seq_len=seq_len,
    )


@dataclass(frozen=True)
class PlannedRun:
    name: str
    budget: float
    model: dict  # ModelArgs fields (model.llama.ModelArgs(**model))
    params: int
    flops_per_token: float
    tokens: int  # steps x batch_tokens
    steps: int
    batch_tokens: int

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens


def plan_isoflop(
    budgets: Sequence[float],
    *,
    vocab_size: int,
    seq_len: int,
    batch_tokens: int,
    models_per_budget: int = 5,
    tokens_per_param: float = 20.0,
    min_steps: int = 20,
    dims: Sequence[int] = FAMILY_DIMS,
) -> list[PlannedRun]:
    """Runs for every budget (FLOPs): `models_per_budget` shapes bracketing the expected optimum, each trained for
    the whole number of steps of `batch_tokens` that spends the budget (rounded to the nearest step)."""
    family = [family_member(d, vocab_size, seq_len) for d in dims]
    fpt = [accounting.flops_per_token(a, seq_len) for a in family]
    params = [accounting.param_count(a) for a in family]
    runs = []
    for budget in budgets:
        # Members that get at least min_steps steps of training.
        usable = [i for i in range(len(family)) if budget / fpt[i] >= min_steps * batch_tokens]
        if len(usable) < models_per_budget:
            raise ValueError(
                f"budget {budget:.3g} FLOPs is too small for {models_per_budget} models of at least {min_steps} "
                f"steps of {batch_tokens} tokens (only {len(usable)} fit); raise the budget or lower batch_tokens"
            )
        ratio = [abs(math.log(budget / fpt[i] / params[i] / tokens_per_param)) for i in usable]
        centre = usable.index(usable[min(range(len(usable)), key=ratio.__getitem__)])
        lo = min(max(0, centre - models_per_budget // 2), len(usable) - models_per_budget)
        for i in usable[lo : lo + models_per_budget]:
            steps = max(1, round(budget / fpt[i] / batch_tokens))
            runs.append(
                PlannedRun(
                    name=f"C{budget:.2g}_d{family[i].dim}",
                    budget=float(budget),
                    model=dataclasses.asdict(family[i]),
                    params=params[i],
                    flops_per_token=fpt[i],
                    tokens=steps * batch_tokens,
                    steps=steps,
                    batch_tokens=batch_tokens,
                )
            )
    return runs


def sweep_record(run: PlannedRun, loss: float, nll: float | None = None, accuracy: float | None = None) -> dict:
    """The record `eval.scaling.fit_sweep` takes, from a planned run and its measured results."""
    rec = {"budget": run.budget, "params": run.params, "tokens": run.tokens, "loss": float(loss), "name": run.name}
    if nll is not None:
        rec["nll"] = float(nll)
    if accuracy is not None:
        rec["accuracy"] = float(accuracy)
    return rec
