"""The reward model (paper section 4.1.2): the pre-trained Transformer with a scalar head, trained on ranked responses.

Each preference ranks two or three responses to one prompt, best first (data.dialogs.ranked_responses: edited >
chosen > rejected). The loss is Bradley-Terry over every ranked pair, without the Llama 2 margin term (the paper
drops it, seeing no gain after data scaling):

    loss(prompt) = sum over i < j of  -log sigmoid(r_i - r_j)        (r_i: reward of the i-th best response)

Only preferences rated "significantly better" or "better" are used (data.dialogs.USED_STRENGTHS).

Layout: the paper puts a prompt and its shuffled responses in one row so one pass scores them all (sharing the
prompt's computation; each response attending to the prompt and not to the others). Here each prompt + response is
its own right-padded sequence: the prompt is recomputed once per response (up to 3x its compute), in exchange for
plain causal attention and rewards that do not depend on the packing. The reward is read at an explicit index (the
response's last token, its <|eot_id|>), never found by searching for an end or pad token: the prompt has its own
<|eot_id|>s and a pad id may equal the end id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from data.dialogs import USED_STRENGTHS, Preference, ranked_responses
from model.dialog import encode_dialog


class RewardModel(nn.Module):
    """backbone.hidden -> Linear(dim, 1) at each sequence's last real token. The backbone's LM head is unused (and
    frozen, so data parallelism sees no parameter without a gradient)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        backbone.output.requires_grad_(False)
        # No bias: Bradley-Terry only sees differences of rewards, where a bias cancels.
        self.head = nn.Linear(backbone.args.dim, 1, bias=False)

    def forward(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None, last_index: torch.Tensor) -> torch.Tensor:
        """tokens [B, T], last_index [B] -> rewards [B] (fp32)."""
        h = self.backbone.hidden(tokens, doc_ids)  # [B, T, dim]
        last = h[torch.arange(tokens.shape[0], device=h.device), last_index]  # [B, dim]
        return self.head(last).squeeze(-1).float()


def ranking_loss(rewards: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry loss of one prompt's responses, rewards [k] best first: sum_{i<j} -log sigmoid(r_i - r_j)."""
    i, j = torch.triu_indices(len(rewards), len(rewards), offset=1, device=rewards.device)
    return -F.logsigmoid(rewards[i] - rewards[j]).sum()


def filter_strength(prefs: Iterable[Preference]) -> tuple[list[Preference], dict[str, int]]:
    """The preferences the reward model trains on, and how many of each other strength were left out."""
    kept, dropped = [], Counter()
    for p in prefs:
        if p.strength in USED_STRENGTHS:
            kept.append(p)
        else:
            dropped[p.strength] += 1
    return kept, dict(dropped)


@dataclass(frozen=True)
class Ranked:
    """One prompt's responses, each encoded as prompt + response, best first."""

    seqs: list[list[int]]

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.seqs)


def encode_ranked(tok, pref: Preference) -> Ranked:
    responses = ranked_responses(pref)
    return Ranked([encode_dialog(tok, [*pref.prompt, {"role": "assistant", "content": r}])[0] for r in responses])


@dataclass
class RewardBatch:
    tokens: torch.Tensor  # [N, T] every response of every prompt, right-padded
    doc_ids: torch.Tensor  # [N, T]: 0 on the sequence, 1 on its padding
    last_index: torch.Tensor  # [N] index of each sequence's last real token
    better: torch.Tensor  # [M] row of the better response of each ranked pair
    worse: torch.Tensor  # [M] row of the worse one


def collate_ranked(groups: Sequence[Ranked], pad_id: int = 0) -> RewardBatch:
    seqs = [s for g in groups for s in g.seqs]
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    doc_ids = torch.ones((len(seqs), T), dtype=torch.long)
    for r, s in enumerate(seqs):
        tokens[r, : len(s)], doc_ids[r, : len(s)] = torch.tensor(s), 0
    better, worse, row = [], [], 0
    for g in groups:
        k = len(g.seqs)
        better += [row + i for i in range(k) for _ in range(i + 1, k)]
        worse += [row + j for i in range(k) for j in range(i + 1, k)]
        row += k
    last = torch.tensor([len(s) - 1 for s in seqs])
    return RewardBatch(tokens, doc_ids, last, torch.tensor(better), torch.tensor(worse))


class RewardLoss:
    """loss_fn(RewardModel, RewardBatch) -> (Bradley-Terry loss summed over ranked pairs, pairs): the loop averages
    over the step's pairs (a three-response prompt has three pairs)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def __call__(self, model: nn.Module, batch: RewardBatch) -> tuple[torch.Tensor, int]:
        dev = self.device
        r = model(batch.tokens.to(dev), batch.doc_ids.to(dev), batch.last_index.to(dev))
        return -F.logsigmoid(r[batch.better.to(dev)] - r[batch.worse.to(dev)]).sum(), len(batch.better)


@torch.no_grad()
def pairwise_accuracy(model: nn.Module, batches: Iterable[RewardBatch]) -> float:
    """Share of held-out ranked pairs whose better response gets the strictly higher reward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    right = total = 0
    for b in batches:
        r = model(b.tokens.to(device), b.doc_ids.to(device), b.last_index.to(device)).cpu()
        right += int((r[b.better] > r[b.worse]).sum())
        total += len(b.better)
    model.train(was_training)
    return right / max(total, 1)
