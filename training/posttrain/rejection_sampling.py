"""Rejection sampling (paper section 4.2.2): K responses per prompt from the latest chat policy, scored, the best kept.

For each prompt the policy samples K responses (the paper uses K = 10-30; temperature 0.7, top-p 0.9 here) and a
scorer ranks them: the reward model (`reward_scorer`), or for prompts with a checkable answer a verifier
(`verifier_scorer`, 1.0 if correct else 0.0; training never imports eval, so the caller passes the check in). The
best response becomes SFT data (`to_sft`); the best and the worst can also make a preference pair
(`to_preferences`). In later rounds the paper adds a system prompt to steer tone, style or formatting
(`system_prompt`; a prompt that has its own system message keeps it).

The K samples of a prompt share one prefill: model.generate(samples=K) runs the prompt once, copies its KV cache to
K rows and decodes them together (training/benchmarks/rejection_sampling.py measures the gain).

Only finished responses are candidates: a sample that hits max_new_tokens without <|eot_id|> is cut mid-answer,
and one that is empty or contains another special token cannot be written back as a chat turn. These are dropped
and counted by reason in the stats; a prompt left without any candidate is dropped too ("no response").
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from data.dialogs import Dialog, Preference
from model.dialog import check_dialog, encode_dialog
from model.generate import generate
from training.posttrain.reward import Ranked, RewardModel, collate_ranked

# score(prompt messages, responses) -> one score per response, higher is better
Score = Callable[[list[dict], list[str]], list[float]]


@dataclass
class RejectionSamplingConfig:
    k: int = 10  # samples per prompt (paper: 10-30)
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 1024
    batch_prompts: int = 8  # prompts per generate call: batch_prompts * k rows decode together
    system_prompt: str | None = None  # prepended to prompts without a system message (later rounds)
    seed: int = 0


@dataclass(frozen=True)
class Scored:
    """One prompt's candidates: the messages generated from (system prompt included, ending with the user turn),
    the finished responses (up to k), their scores and the index of the best (the first of equal maxima)."""

    prompt: list[dict]
    responses: list[str]
    scores: list[float]
    best: int

    @property
    def worst(self) -> int:
        return min(range(len(self.scores)), key=self.scores.__getitem__)


def with_system(messages: Sequence[dict], system_prompt: str | None) -> list[dict]:
    """The prompt as generated from: checked to end with a user turn, the system prompt added if it has none."""
    messages = list(messages)
    check_dialog([*messages, {"role": "assistant", "content": "."}])  # roles, contents, system first
    if messages[-1]["role"] != "user":
        raise ValueError(f"a prompt must end with a user turn, not {messages[-1]['role']!r}")
    if system_prompt is None or messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def _candidate(tok, ids: list[int], max_new_tokens: int) -> tuple[str | None, str]:
    """(response text, "") or (None, why it is dropped) for one sample's tokens (stop token already cut)."""
    if len(ids) == max_new_tokens:  # generate cuts before the stop token, so a finished sample is shorter
        return None, "unfinished"
    if any(tok.is_special(t) for t in ids):
        return None, "special token"
    text = tok.decode(ids)
    return (text, "") if text.strip() else (None, "empty")


@torch.no_grad()
def rejection_sample(
    policy: nn.Module, tok, prompts: Sequence[Sequence[dict]], score: Score, cfg: RejectionSamplingConfig
) -> tuple[list[Scored], dict]:
    """Sample cfg.k responses per prompt, score the finished ones, keep every prompt's candidates and best.

    Stats: prompts, samples (generated), seconds (all), generate_seconds, score_seconds, samples_per_s (samples /
    seconds), mean_score (over candidates), mean_best_score (over kept prompts), dropped (count by reason)."""
    if cfg.k < 1 or cfg.batch_prompts < 1:
        raise ValueError(f"k and batch_prompts must be >= 1, got {cfg.k} and {cfg.batch_prompts}")
    messages = [with_system(p, cfg.system_prompt) for p in prompts]
    start = time.perf_counter()
    gen_s = score_s = 0.0
    out: list[Scored] = []
    dropped: Counter = Counter()
    for first in range(0, len(messages), cfg.batch_prompts):
        chunk = messages[first : first + cfg.batch_prompts]
        t0 = time.perf_counter()
        samples = generate(
            policy,
            [tok.encode_chat(m) for m in chunk],
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            stop_tokens=[tok.eot_id],
            seed=cfg.seed + first,  # each chunk its own stream: results do not depend on earlier chunks' lengths
            samples=cfg.k,
        )
        gen_s += time.perf_counter() - t0
        for i, msgs in enumerate(chunk):
            responses = []
            for ids in samples[i * cfg.k : (i + 1) * cfg.k]:  # prompt-major: prompt i's k samples
                text, why = _candidate(tok, ids, cfg.max_new_tokens)
                if text is None:
                    dropped[why] += 1
                else:
                    responses.append(text)
            if not responses:
                dropped["no response"] += 1
                continue
            t0 = time.perf_counter()
            scores = [float(s) for s in score(msgs, responses)]
            score_s += time.perf_counter() - t0
            if len(scores) != len(responses):
                raise ValueError(f"the scorer gave {len(scores)} scores for {len(responses)} responses")
            out.append(Scored(msgs, responses, scores, max(range(len(scores)), key=scores.__getitem__)))
    seconds = time.perf_counter() - start
    n_samples = len(messages) * cfg.k
    all_scores = [x for s in out for x in s.scores]
    stats = {
        "prompts": len(messages),
        "samples": n_samples,
        "seconds": seconds,
        "generate_seconds": gen_s,
        "score_seconds": score_s,
        "samples_per_s": n_samples / seconds if seconds > 0 else 0.0,
        "mean_score": sum(all_scores) / len(all_scores) if all_scores else math.nan,
        "mean_best_score": sum(s.scores[s.best] for s in out) / len(out) if out else math.nan,
        "dropped": dict(dropped),
    }
    return out, stats


def reward_scorer(rm: RewardModel, tok, batch: int = 32) -> Score:
    """Score with the reward model: each prompt + response encoded as a chat dialog ending at the response's
    <|eot_id|>, a prompt's responses scored together, `batch` sequences per forward pass."""
    pad_id = tok.pad_id if tok.pad_id is not None else 0
    device = next(rm.parameters()).device

    @torch.no_grad()
    def score(prompt: list[dict], responses: list[str]) -> list[float]:
        seqs = [encode_dialog(tok, [*prompt, {"role": "assistant", "content": r}])[0] for r in responses]
        rewards: list[float] = []
        for i in range(0, len(seqs), batch):
            b = collate_ranked([Ranked(seqs[i : i + batch])], pad_id)
            rewards += rm(b.tokens.to(device), b.doc_ids.to(device), b.last_index.to(device)).tolist()
        return rewards

    return score


def verifier_scorer(check: Callable[[list[dict], str], bool]) -> Score:
    """1.0 for each response `check(prompt, response)` accepts (e.g. a correct final answer), else 0.0."""
    return lambda prompt, responses: [1.0 if check(prompt, r) else 0.0 for r in responses]


def to_sft(scored: Sequence[Scored], round: int, source: str = "rejection_sampling") -> list[Dialog]:
    """Each prompt with its best response: SFT dialogs (data.dialogs records)."""
    return [Dialog([*s.prompt, {"role": "assistant", "content": s.responses[s.best]}], source, round) for s in scored]


def to_preferences(
    scored: Sequence[Scored], round: int, min_gap: float = 0.0, significant_gap: float = 1.0
) -> tuple[list[Preference], dict[str, int]]:
    """Best response as chosen, worst as rejected, and the prompts skipped by reason.

    Skipped: a single candidate, equal best and worst scores ("tie"), the same text on both sides, or a score gap
    below min_gap. Strength from the gap: >= significant_gap is "significantly_better", else "better". A gap of 1.0
    is a verifier's correct vs wrong, or for a reward model (Bradley-Terry logits) P(best preferred) =
    sigmoid(1) = 0.73; both levels are the ones the reward model trains on (data.dialogs.USED_STRENGTHS)."""
    prefs, skipped = [], Counter()
    for s in scored:
        best, worst = s.best, s.worst
        gap = s.scores[best] - s.scores[worst]
        if len(s.responses) < 2:
            skipped["one response"] += 1
        elif gap <= 0:
            skipped["tie"] += 1
        elif s.responses[best] == s.responses[worst]:
            skipped["same text"] += 1
        elif gap < min_gap:
            skipped["gap below min_gap"] += 1
        else:
            strength = "significantly_better" if gap >= significant_gap else "better"
            prefs.append(Preference(s.prompt, s.responses[best], s.responses[worst], None, strength, round))
    return prefs, dict(skipped)
