"""The model's accounting, in one place: parameters counted from the shapes, and training FLOPs per token.

Parameters (no model is built, so 405B counts instantly): the embedding and the untied output head are
vocab x dim each; a block has wq and wo (dim x dim), wk and wv (dim x kv_heads * head_dim), the three SwiGLU
matrices (dim x ffn_hidden) and two RMSNorm weights (dim); one final norm (dim).

FLOPs per trained token (forward + backward = 3 x forward, a multiply-add = 2 FLOPs):
- matmuls: 6 x the parameters that take part in a matmul, i.e. all but the input embedding (a lookup);
- attention scores and values: QK^T and AV each cost 2 x seq_len x dim per layer forward, so 12 x layers x
  dim x seq_len per token over forward + backward when every query sees all seq_len keys (PaLM's convention,
  appendix B, which the MFU figures of PaLM, Llama 3 and torchtitan use). A causal mask halves the work a
  kernel must do; `causal=True` counts that (6 x layers x dim x seq_len).
The conventions the callers use, and why:
- MFU (training/monitor.py, training/plan.py): `flops_per_token(args, T)`, PaLM's, so MFU is comparable with
  published figures;
- the scaling-law sweep (eval/scaling_plan.py): the same, so its compute budgets are in MFU's units;
- the paper's headline compute (3.8e25 for 405B on 15.6T tokens) is 6 x N x D: `six_nd(args, tokens)`.
"""

from __future__ import annotations

from model.llama import ModelArgs


def block_params(args: ModelArgs) -> int:
    """Parameters of one transformer block."""
    d, kv = args.dim, args.kv_heads * args.head_dim
    return 2 * d * d + 2 * d * kv + 3 * d * args.ffn_hidden + 2 * d


def param_count(args: ModelArgs) -> int:
    """Every parameter of model.llama.Transformer(args) (equals summing the built model's numel)."""
    return 2 * args.vocab_size * args.dim + args.n_layers * block_params(args) + args.dim


def matmul_params(args: ModelArgs) -> int:
    """Parameters used in a matmul: all but the input embedding."""
    return param_count(args) - args.vocab_size * args.dim


def flops_per_token(args: ModelArgs, seq_len: int, *, causal: bool = False) -> float:
    """Training FLOPs per token at `seq_len` (see the module docstring for the convention)."""
    attention = (6.0 if causal else 12.0) * args.n_layers * args.dim * seq_len
    return 6.0 * matmul_params(args) + attention


def six_nd(args: ModelArgs, tokens: float) -> float:
    """The paper's compute accounting: 6 x parameters x tokens (no attention term)."""
    return 6.0 * param_count(args) * tokens
