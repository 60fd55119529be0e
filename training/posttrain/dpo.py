"""Direct preference optimisation (paper section 4.1.4): the sigmoid DPO loss plus 0.2 x NLL on the chosen response.

For a prompt x with chosen response y_w and rejected y_l, policy pi and frozen reference pi_ref (the SFT model):

    loss = -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )
           + nll_coef * ( -log pi(y_w|x) / |y_w| )

with beta = 0.1 and nll_coef = 0.2 (the paper's values). The sequence log-probs sum over the response's content
tokens only: the formatting tokens (header, <|eot_id|>; model.dialog.format_token_mask) are masked out of both
responses, since they are shared and pushing them up and down at once destabilises training. The NLL term keeps
the end of turn (it is the SFT loss of the chosen response) and is averaged over that response's tokens.

The reference log-probs are computed once, before training, with the starting weights (`reference_logps`) and
travel in the batches, so no second model sits in memory during training. The loss is summed over pairs and the
loop divides by the step's pair count: accumulation and data parallelism average over pairs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.dialog import encode_dialog, format_token_mask


@dataclass(frozen=True)
class Pair:
    """One preference pair, both sides encoded as prompt + response; masks over the tokens of each side."""

    chosen: list[int]
    rejected: list[int]
    chosen_logp_mask: list[bool]  # response content: what the DPO term sums
    rejected_logp_mask: list[bool]
    chosen_nll_mask: list[bool]  # response content and its <|eot_id|>: what the NLL term averages
    ref_chosen: float | None = None  # reference sequence log-probs, from reference_logps
    ref_rejected: float | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.chosen) + len(self.rejected)


@dataclass
class PairBatch:
    """P pairs as 2P right-padded rows: the chosen responses first, then the rejected ones in the same order."""

    tokens: torch.Tensor  # [2P, T]
    doc_ids: torch.Tensor  # [2P, T]: 0 on the sequence, 1 on its padding
    logp_mask: torch.Tensor  # [2P, T] bool
    nll_mask: torch.Tensor  # [P, T] bool, chosen rows
    ref: torch.Tensor | None  # [2P] float64, or None before reference_logps

    @property
    def pairs(self) -> int:
        return self.nll_mask.shape[0]


def encode_pair(tok, prompt: Sequence[dict], chosen: str, rejected: str) -> Pair:
    sides = []
    for response in (chosen, rejected):
        ids, mask = encode_dialog(tok, [*prompt, {"role": "assistant", "content": response}], "last_assistant")
        fmt = format_token_mask(ids, tok)
        sides.append((ids, [m and not f for m, f in zip(mask, fmt)], mask))
    (c, c_logp, c_nll), (r, r_logp, _) = sides
    return Pair(c, r, c_logp, r_logp, c_nll)


def collate_pairs(pairs: Sequence[Pair], pad_id: int = 0) -> PairBatch:
    seqs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    masks = [p.chosen_logp_mask for p in pairs] + [p.rejected_logp_mask for p in pairs]
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    doc_ids = torch.ones((len(seqs), T), dtype=torch.long)
    logp_mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    nll_mask = torch.zeros((len(pairs), T), dtype=torch.bool)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        tokens[i, : len(s)], doc_ids[i, : len(s)], logp_mask[i, : len(s)] = torch.tensor(s), 0, torch.tensor(m)
    for i, p in enumerate(pairs):
        nll_mask[i, : len(p.chosen)] = torch.tensor(p.chosen_nll_mask)
    have_ref = all(p.ref_chosen is not None for p in pairs)
    ref = [p.ref_chosen for p in pairs] + [p.ref_rejected for p in pairs]
    return PairBatch(tokens, doc_ids, logp_mask, nll_mask, torch.tensor(ref, dtype=torch.float64) if have_ref else None)


def token_logps(model: nn.Module, tokens: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
    """log p(tokens[:, t] | tokens[:, :t]) for t = 1..T-1: [B, T-1] (the first token has no prediction)."""
    logits = model(tokens, doc_ids)[:, :-1]  # [B, T-1, V], position t-1 predicts token t
    return -F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view_as(tokens[:, 1:])


def sequence_logps(model: nn.Module, tokens: torch.Tensor, doc_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probs of the tokens where `mask` [B, T] is True, per row: [B]."""
    return (token_logps(model, tokens, doc_ids) * mask[:, 1:]).sum(-1)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """The sigmoid DPO loss of each pair, [P]: -log sigmoid(beta * (chosen log-ratio - rejected log-ratio))."""
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * margin)


class DPOLoss:
    """loss_fn(model, PairBatch) -> (sum over pairs of DPO + nll_coef x token-averaged chosen NLL, pairs)."""

    def __init__(self, beta: float = 0.1, nll_coef: float = 0.2, device: torch.device | str = "cpu"):
        self.beta, self.nll_coef, self.device = beta, nll_coef, torch.device(device)

    def __call__(self, model: nn.Module, batch: PairBatch) -> tuple[torch.Tensor, int]:
        if batch.ref is None:
            raise ValueError("DPO batch without reference log-probs: run reference_logps on the pairs first")
        dev = self.device
        P = batch.pairs
        lp = token_logps(model, batch.tokens.to(dev), batch.doc_ids.to(dev))  # [2P, T-1]
        seq = (lp * batch.logp_mask[:, 1:].to(dev)).sum(-1)
        ref = batch.ref.to(dev, lp.dtype)
        loss = dpo_loss(seq[:P], seq[P:], ref[:P], ref[P:], self.beta)
        nll_mask = batch.nll_mask[:, 1:].to(dev)
        nll = -(lp[:P] * nll_mask).sum(-1) / nll_mask.sum(-1)  # per chosen response, averaged over its tokens
        return (loss + self.nll_coef * nll).sum(), P


@torch.no_grad()
def reference_logps(model: nn.Module, pairs: Sequence[Pair], batch_pairs: int = 8, pad_id: int = 0) -> list[Pair]:
    """The pairs with the reference model's (`model` as it is now) sequence log-probs filled in; run once, before
    training, under the same precision as training."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(pairs), batch_pairs):
        chunk = pairs[start : start + batch_pairs]
        b = collate_pairs(chunk, pad_id)
        seq = sequence_logps(model, b.tokens.to(device), b.doc_ids.to(device), b.logp_mask.to(device)).double().cpu()
        n = len(chunk)
        out += [
            dataclasses.replace(p, ref_chosen=float(seq[i]), ref_rejected=float(seq[n + i]))
            for i, p in enumerate(chunk)
        ]
    model.train(was_training)
    return out
