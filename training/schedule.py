"""Learning-rate schedules and token-triggered batch/sequence stages (paper section 3.4.1).

405B: linear warm-up over 8,000 steps to 8e-5, then cosine decay to 8e-7 by step 1,200,000; batches of
4M tokens at sequence 4,096, 8M at 8,192 after 252M tokens, 16M after 2.87T tokens.
"""

from __future__ import annotations

import math

from training.config import BatchStage, LRConfig


def lr_at(step: int, peak: float, cfg: LRConfig, last_step: int) -> float:
    """LR of `step` (0-based): linear warm-up to `peak` (step 0 gets peak/warmup), then the decay.

    The decay runs from the end of the warm-up to `cfg.decay_steps` (or `last_step`), where it reaches
    `cfg.final_lr`, and stays there.
    """
    warmup = cfg.warmup_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg.schedule == "constant":
        return peak
    end = cfg.decay_steps or last_step
    progress = min(1.0, (step - warmup) / max(1, end - warmup))
    if cfg.schedule == "cosine":
        return cfg.final_lr + 0.5 * (peak - cfg.final_lr) * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "linear":
        return peak + (cfg.final_lr - peak) * progress
    raise ValueError(f"lr.schedule must be cosine, linear or constant, got '{cfg.schedule}'")


def check_stages(stages: list[BatchStage], where: str = "batch") -> None:
    if not stages:
        raise ValueError(f"{where}: at least one batch stage is needed")
    for i, s in enumerate(stages):
        if s.seq_len <= 0 or s.batch_tokens <= 0:
            raise ValueError(f"{where}[{i}]: seq_len and batch_tokens must be positive")
        if s.batch_tokens % s.seq_len:
            raise ValueError(f"{where}[{i}]: batch_tokens {s.batch_tokens} is not a multiple of seq_len {s.seq_len}")
        if i and s.tokens <= stages[i - 1].tokens:
            raise ValueError(f"{where}[{i}]: stages must start at increasing token counts")
    if stages[0].tokens != 0:
        raise ValueError(f"{where}[0]: the first stage must start at 0 tokens")


def stage_at(stages: list[BatchStage], tokens: int) -> BatchStage:
    """The batch stage in force once `tokens` tokens have been trained on."""
    current = stages[0]
    for s in stages:
        if tokens >= s.tokens:
            current = s
    return current


def steps_for(stages: list[BatchStage], total_tokens: int, start_tokens: int = 0) -> int:
    """How many steps a phase of `total_tokens` takes (each step takes its stage's batch)."""
    steps, tokens = 0, start_tokens
    while tokens < total_tokens:
        s = stage_at(stages, tokens)
        # Jump over whole runs of steps inside one stage instead of looping step by step.
        nxt = min([t.tokens for t in stages if t.tokens > tokens] + [total_tokens])
        n = max(1, math.ceil((nxt - tokens) / s.batch_tokens))
        steps, tokens = steps + n, tokens + n * s.batch_tokens
    return steps


def tokens_after(stages: list[BatchStage], steps: int) -> int:
    """Tokens trained after `steps` steps."""
    tokens = 0
    for _ in range(steps):
        tokens += stage_at(stages, tokens).batch_tokens
    return tokens
