"""A downstream signal for models far too small to solve a benchmark: the NLL of GSM8K's correct solutions, and
a multiple-choice accuracy built from them.

The paper (section 3.2.1) predicts benchmark accuracy in two steps: the normalised negative log-likelihood of
the correct answer against training FLOPs, then accuracy against that NLL. Here each GSM8K test question,
written as the synthetic corpus writes its math pages ("Question: ...\\nAnswer: ... The answer is N"), is
followed by its own solution and by the solutions of `choices - 1` other test problems. The NLL is in nats per
UTF-8 byte of the solution (so tokenizers compare), summed over the solution's tokens given the question; the
accuracy is how often the correct solution has the lowest NLL per byte (chance: 1 / choices). Deterministic
in `seed`; the items are the same for every model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from eval import gsm8k


@dataclass(frozen=True)
class Question:
    context: str  # "Question: ...\nAnswer:"
    candidates: tuple[str, ...]  # " <solution> The answer is N."
    correct: int  # index of the question's own solution


def _solution(item: gsm8k.Item) -> str:
    body, _, final = item.solution.rpartition("####")
    return f" {body.strip()}\nThe answer is {final.strip()}."


def questions(n: int, choices: int = 4, seed: int = 0, split: str = "test") -> list[Question]:
    """`n` multiple-choice questions from GSM8K `split` (the vendored copy)."""
    items = gsm8k.load(split=split)
    if choices < 2 or n < 1 or n * choices > len(items):
        raise ValueError(f"benchmark: need 1 <= items and 2 <= choices with items x choices <= {len(items)}")
    rng = random.Random(seed)
    picked = rng.sample(items, n * choices)  # each item's distractors are solutions of problems not asked
    out = []
    for i in range(n):
        own, others = picked[i], picked[n + i * (choices - 1) : n + (i + 1) * (choices - 1)]
        cands = [_solution(own), *(_solution(o) for o in others)]
        order = list(range(choices))
        rng.shuffle(order)
        out.append(Question(f"Question: {own.question}\nAnswer:", tuple(cands[j] for j in order), order.index(0)))
    return out


def _encode(tokenizer, q: Question, max_len: int) -> list[tuple[list[int], int, int]]:
    """Per candidate: (tokens, where the candidate starts, its bytes); the context is cut from the left so the
    pair fits `max_len`, the candidate to at most 3/4 of it."""
    ctx = tokenizer.encode(q.context, bos=True)
    out = []
    for cand in q.candidates:
        ids = tokenizer.encode(cand)[: max(1, 3 * max_len // 4)]
        keep = ctx[-(max_len - len(ids)) :]
        out.append((keep + ids, len(keep), len(tokenizer.decode(ids).encode("utf-8"))))
    return out


@torch.no_grad()
def score(model, tokenizer, qs: list[Question], *, max_len: int | None = None, batch_size: int = 16) -> dict:
    """{"nll": mean NLL per byte of the correct solutions, "accuracy": multiple-choice accuracy, "items": n}."""
    max_len = max_len or model.args.max_seq_len
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = [(qi, ci, *enc) for qi, q in enumerate(qs) for ci, enc in enumerate(_encode(tokenizer, q, max_len))]
    per_byte = torch.zeros(len(qs), len(qs[0].candidates), dtype=torch.float64)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r[2]) for r in chunk)
        # Right padding never reaches earlier positions under the causal mask.
        tokens = torch.zeros(len(chunk), width, dtype=torch.long)
        for b, (_, _, ids, _, _) in enumerate(chunk):
            tokens[b, : len(ids)] = torch.tensor(ids)
        logp = torch.log_softmax(model(tokens.to(device)).float(), dim=-1).cpu()
        for b, (qi, ci, ids, begin, nbytes) in enumerate(chunk):
            # The token at position t is predicted by the logits at t - 1.
            target = torch.tensor(ids[begin:])
            nll = -logp[b, begin - 1 : len(ids) - 1].gather(1, target[:, None]).sum()
            per_byte[qi, ci] = float(nll) / max(1, nbytes)
    model.train(was_training)
    correct = torch.tensor([q.correct for q in qs])
    nll = per_byte[torch.arange(len(qs)), correct]
    return {"nll": float(nll.mean()), "accuracy": float((per_byte.argmin(1) == correct).double().mean()),
            "items": len(qs), "choices": per_byte.shape[1]}  # fmt: skip


def probe_metrics(model, tokenizer) -> dict:
    """The annealing probe's evaluation (training.config.ProbeConfig.eval = "experiments.answer_nll:probe_metrics"):
    GSM8K solution NLL and multiple-choice accuracy on 64 fixed test questions."""
    result = score(model, tokenizer, questions(64, seed=0))
    return {"gsm8k/nll_per_byte": result["nll"], "gsm8k/choice_accuracy": result["accuracy"]}
