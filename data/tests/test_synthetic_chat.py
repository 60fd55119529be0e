"""The synthetic chat task: seeded, disjoint train / held-out questions, a verifier that reads the final number,
graded preference pairs, and JSONL files that data.dialogs reads back."""

from __future__ import annotations

import random

from data.dialogs import STRENGTHS, read_dialogs, read_preferences
from data.synthetic_chat import (
    ChatTaskConfig,
    Problem,
    final_answer,
    is_correct,
    preferences,
    problems,
    read_problems,
    write,
)


def test_problems_are_seeded_disjoint_and_solved_by_their_reference():
    cfg = ChatTaskConfig(train=200, held_out=40)
    train, held_out = problems(cfg)
    assert (len(train), len(held_out)) == (200, 40)
    assert not {p.question for p in train} & {p.question for p in held_out}
    assert problems(cfg) == (train, held_out)
    assert problems(ChatTaskConfig(train=200, held_out=40, seed=1)) != (train, held_out)
    assert {p.kind for p in train} == {"add", "sub", "word_add", "word_sub"}
    for p in train + held_out:
        assert is_correct(p, p.solution), p
        assert p.answer >= 0 and p.solution.endswith(f"The answer is {p.answer}.")


def test_the_verifier_reads_the_last_final_number():
    p = Problem("What is 3 + 4?", 7, "3 + 4 = 7. The answer is 7.", "add")
    assert is_correct(p, "The answer is 6. No: the answer is 7.")
    assert not is_correct(p, "3 + 4 = 7. The answer is 8.")
    assert not is_correct(p, "3 + 4 = 7.")  # no final answer
    assert final_answer("the answer is 12.") == 12 and final_answer("seven") is None


def test_preferences_rank_a_correct_response_over_a_faulty_one_with_graded_strengths():
    train, _ = problems(ChatTaskConfig(train=300, held_out=10))
    prefs = preferences(train, random.Random(0))
    assert {p.strength for p in prefs} == set(STRENGTHS)
    for pref, prob in zip(prefs, train):
        assert is_correct(prob, pref.chosen) and pref.chosen != pref.rejected
        # The strong pairs are the ones whose rejected answer is wrong or missing.
        assert is_correct(prob, pref.rejected) == (pref.strength in STRENGTHS[2:])


def test_files_read_back_through_data_dialogs(tmp_path):
    cfg = ChatTaskConfig(train=50, held_out=10)
    files = write(cfg, tmp_path)
    dialogs = read_dialogs(files["sft"]).records
    assert len(dialogs) == 50 and dialogs[0].messages[-1]["role"] == "assistant"
    assert len(read_preferences(files["preferences_train"]).records) == 50
    assert len(read_preferences(files["preferences_held_out"]).records) == 10
    assert read_problems(files["problems_held_out"]) == problems(cfg)[1]
