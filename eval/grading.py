"""Grading model outputs for GSM8K and MATH: the one path that gold solutions and model outputs both take."""

from __future__ import annotations

from collections.abc import Sequence

from eval import gsm8k, hendrycks_math, stats
from eval.equivalence import Judge
from eval.generation import cut


def grade_gsm8k(
    items: Sequence[gsm8k.Item], outputs: Sequence[str], stop_strings: Sequence[str] = gsm8k.STOP_STRINGS
) -> list[dict]:
    """Per item: id, gold answer, both extractions and their 0/1 scores (outputs cut at `stop_strings` first)."""
    if len(items) != len(outputs):
        raise ValueError(f"{len(items)} GSM8K items but {len(outputs)} outputs")
    return [
        {"id": it.id, "gold": it.answer, **gsm8k.grade(out, it.answer, stop_strings)} for it, out in zip(items, outputs)
    ]


def grade_math(
    items: Sequence[hendrycks_math.Item],
    outputs: Sequence[str],
    judge: Judge | None = None,
    timeout: float = 5.0,
    stop_strings: Sequence[str] = hendrycks_math.STOP_STRINGS,
) -> list[dict]:
    """Per item: id, subject, level, gold and extracted answers, score and the check that decided it. Outputs are
    cut at `stop_strings` first (the few-shot prompt's "Problem:"; a chat reply ends at <|eot_id|>: pass ())."""
    if len(items) != len(outputs):
        raise ValueError(f"{len(items)} MATH items but {len(outputs)} outputs")
    extracted = [hendrycks_math.extract_answer(cut(out, stop_strings)) for out in outputs]
    own = judge is None
    judge = judge or Judge(timeout=timeout)
    try:
        verdicts = judge.judge_many([(it.answer, pred) for it, pred in zip(items, extracted)])
    finally:
        if own:
            judge.close()
    return [
        {
            "id": it.id,
            "subject": it.subject,
            "level": it.level,
            "gold": it.answer,
            "extracted": pred,
            "correct": float(v.correct),
            "method": v.method,
        }
        for it, pred, v in zip(items, extracted, verdicts)
    ]


def summarize_gsm8k(records: Sequence[dict], seed: int = 0) -> dict:
    return {
        "strict_match": stats.accuracy([r["strict_match"] for r in records], seed=seed),
        "flexible_match": stats.accuracy([r["flexible_match"] for r in records], seed=seed),
    }


def summarize_math(records: Sequence[dict], seed: int = 0) -> dict:
    scores = [r["correct"] for r in records]
    methods: dict[str, int] = {}
    for r in records:
        methods[r["method"]] = methods.get(r["method"], 0) + 1
    return {
        "accuracy": stats.accuracy(scores, seed=seed),
        "by_subject": stats.grouped_accuracy(scores, [r["subject"] for r in records], seed=seed),
        "by_level": stats.grouped_accuracy(scores, [r["level"] for r in records], seed=seed),
        "decided_by": dict(sorted(methods.items())),
    }
