"""The LR schedule and token-triggered batch stages, with the 405B values read back from its YAML config."""

from __future__ import annotations

import pytest

from training.config import BatchStage, LRConfig, load_recipe
from training.schedule import check_stages, lr_at, stage_at, steps_for, tokens_after


def test_405b_learning_rate_schedule_matches_the_paper():
    r = load_recipe("llama3_405b")
    p = r.pretrain

    def lr(step):
        return lr_at(step, p.optim.lr, p.lr, last_step=10**9)

    assert p.optim.lr == 8e-5 and p.lr.warmup_steps == 8000 and p.lr.decay_steps == 1_200_000
    assert lr(0) == pytest.approx(8e-5 / 8000)  # linear warm-up from the first step
    assert lr(4000) == pytest.approx(4e-5, rel=1e-3)  # half-way up
    assert lr(8000) == pytest.approx(8e-5, rel=1e-12)  # the peak
    # Cosine from 8e-5 at step 8,000 to 8e-7 at 1,200,000: at 600,000 just past the midpoint
    # (progress 592,000 / 1,192,000), the LR is (peak + final) / 2 less a little.
    expected_mid = 8e-7 + 0.5 * (8e-5 - 8e-7) * (1 + __import__("math").cos(__import__("math").pi * 592 / 1192))
    assert lr(600_000) == pytest.approx(expected_mid, rel=1e-9)
    assert 4.0e-5 < lr(600_000) < 4.1e-5
    assert lr(1_200_000) == pytest.approx(8e-7, rel=1e-12)
    assert lr(1_500_000) == pytest.approx(8e-7, rel=1e-12)  # stays at the floor
    assert all(lr(s) >= lr(s + 50_000) for s in range(8000, 1_200_000, 50_000))  # monotone decay


def test_405b_batch_and_sequence_stages_match_the_paper():
    stages = load_recipe("llama3_405b").pretrain.batch
    check_stages(stages)
    at = {
        t: (stage_at(stages, t).batch_tokens, stage_at(stages, t).seq_len) for t in (0, 252_000_000, 2_870_000_000_000)
    }
    assert at[0] == (4 * 2**20, 4096)  # 4M tokens per batch at sequence 4,096
    assert at[252_000_000] == (8 * 2**20, 8192)  # 8M at 8,192 after 252M tokens
    assert at[2_870_000_000_000] == (16 * 2**20, 8192)  # 16M after 2.87T tokens
    assert stage_at(stages, 251_999_999).seq_len == 4096
    assert stage_at(stages, 2_869_999_999_999).batch_tokens == 8 * 2**20


def test_anneal_and_long_context_values_of_the_405b_recipe():
    r = load_recipe("llama3_405b")
    assert r.anneal.train.tokens == 40_000_000 and r.anneal.train.lr.schedule == "linear"
    assert r.anneal.train.lr.final_lr == 0.0 and r.anneal.train.batch[0].seq_len == 131072
    seqs = [s.seq_len for s in r.long_context.stages]
    assert len(seqs) == 6 and seqs[-1] == 131072 and seqs == sorted(seqs)
    assert sum(s.tokens for s in r.long_context.stages) == pytest.approx(800e9, rel=0.01)


def test_linear_and_constant_schedules_and_step_counting():
    lin = LRConfig(schedule="linear", warmup_steps=0, final_lr=0.0)
    assert [lr_at(s, 1.0, lin, last_step=4) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    const = LRConfig(schedule="constant", warmup_steps=2)
    assert [lr_at(s, 2.0, const, last_step=10) for s in range(4)] == [1.0, 2.0, 2.0, 2.0]
    stages = [BatchStage(0, 100, 10), BatchStage(250, 200, 20)]
    # 100, 200 (< 250), 300 -> switch; then 500, 700: five steps to reach 650.
    assert steps_for(stages, 650) == 5
    assert tokens_after(stages, 5) == 700
    assert steps_for(load_recipe("llama3_405b").anneal.train.batch, 40_000_000) == 3


@pytest.mark.parametrize(
    "stages, message",
    [
        ([BatchStage(0, 100, 30)], "not a multiple of seq_len"),
        ([BatchStage(5, 100, 10)], "must start at 0"),
        ([BatchStage(0, 100, 10), BatchStage(0, 200, 10)], "increasing token counts"),
    ],
)
def test_bad_stages_are_rejected(stages, message):
    with pytest.raises(ValueError, match=message):
        check_stages(stages)
