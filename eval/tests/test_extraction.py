"""Answer extraction: the same answers as the reference patterns it replaces, in time linear in the output."""

import random
import re
import time

import pytest

from eval import grading, gsm8k
from eval import hendrycks_math as hm
from eval.equivalence import Judge

MINERVA_FINAL = re.compile(r"Final Answer: The final answer is(.*?). I hope it is correct.")
HARNESS_IGNORE = [re.compile(p) for p in (r",", r"\$", r"(?s).*#### ", r"\.$")]


def random_texts(tokens: list[str], n: int, max_tokens: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(tokens) for _ in range(rng.randint(0, max_tokens))) for _ in range(n)]


def test_final_answer_is_minervas_match():
    tokens = ["Final Answer: The final answer is", " I hope it is correct", "I hope it is correct.", ".", " "]
    tokens += ["\n", "$3$", "x", "Final Answer:"]
    for text in random_texts(tokens, 40_000, 8, seed=0):
        m = MINERVA_FINAL.search(text + " I hope it is correct.")
        assert hm.final_answer(text) == (m.group(1) if m else None), text


def brace_by_brace(text: str) -> str | None:
    """The previous last_boxed: a Python loop over every character after the last \\boxed."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    after = text[idx + (6 if text.startswith("\\boxed", idx) else 5) :]
    if after.startswith(" "):
        return after[1:].split("$")[0].strip()
    if not after.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(after):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "}" and depth == 0:
            return after[1:i]
    return None


@pytest.mark.parametrize("chunk", [3, hm._CHUNK])  # also braces that close in a later chunk
def test_last_boxed_is_the_brace_by_brace_scan(monkeypatch, chunk):
    monkeypatch.setattr(hm, "_CHUNK", chunk)
    for text in random_texts(["\\boxed", "\\fbox", "{", "}", "x", " ", "$", "\u00e9"], 30_000, 12, seed=1):
        assert hm.last_boxed(text) == brace_by_brace(text), text


def test_gsm8k_flexible_and_clean_are_the_harness_regexes():
    for text in random_texts(["-", "$", ".", ",", "1", "23", "x", " ", "\n", "#### ", "#"], 40_000, 10, seed=2):
        matches = gsm8k.FLEXIBLE_RE.findall(text)
        assert gsm8k.extract_flexible(text) == (next(g for g in matches[-1] if g) if matches else gsm8k.INVALID)
        cleaned = text
        for pattern in HARNESS_IGNORE:
            cleaned = pattern.sub("", cleaned)
        assert gsm8k._clean(text) == cleaned.lower().strip(), text


MB = 5_000_000
PHRASE = "Final Answer: The final answer is "
# name: (a ~5 MB output, the MATH verdict's method for gold "7"); the GSM8K gold is "7" too, so all are wrong.
ADVERSARIAL = {
    "phrase repeated on one line": (PHRASE * (MB // len(PHRASE)) + "\n", "invalid"),
    "phrase repeated, 100 a line": ((PHRASE * 100 + "\n") * (MB // (100 * len(PHRASE))), "invalid"),
    "phrase then a 5 MB hedge": (PHRASE + "3 or " * (MB // 5) + ". I hope it is correct.", "too_long"),
    "digits": ("1" * MB, "invalid"),
    "the answer is, then digits": ("The answer is " + "1" * MB, "invalid"),
    "nested braces": ("\\boxed" + "{" * (MB // 2) + "}" * (MB // 2), "too_long"),
    "unclosed boxes": ("\\boxed{" * (MB // 7), "invalid"),
    "alternating braces": ("\\boxed{" + "{}" * (MB // 2), "invalid"),
    "many ####": ("#### 1" * (MB // 6), "invalid"),
    "many negative numbers": ("-1" * (MB // 2), "invalid"),
    "many numbers": ("1 " * (MB // 2), "invalid"),
}


def test_multi_megabyte_adversarial_outputs_grade_in_linear_time():
    # The quadratic patterns this replaces took 1.5 s at 66 KB (MATH) and 4.5 s at 80 KB (GSM8K) and ran for
    # minutes at 5 MB; linear extraction grades each 5 MB output in well under a second. The bound is loose
    # (a shared, loaded machine), a guard against quadratic time, not a benchmark.
    outputs = [out for out, _ in ADVERSARIAL.values()]
    math_items = [hm.Item(f"adv/{i}", "p", "s", "7", "Algebra", "Level 1") for i in range(len(outputs))]
    gsm_items = [gsm8k.Item(f"adv/{i}", "q", "s #### 7", "7") for i in range(len(outputs))]
    with Judge(timeout=3.0, workers=1) as judge:
        for (name, (out, method)), math_item, gsm_item in zip(ADVERSARIAL.items(), math_items, gsm_items):
            start = time.perf_counter()
            [m] = grading.grade_math([math_item], [out], judge)
            [g] = grading.grade_gsm8k([gsm_item], [out])
            elapsed = time.perf_counter() - start
            assert (m["correct"], m["method"]) == (0.0, method), name
            assert g["strict_match"] == g["flexible_match"] == 0.0, name
            assert elapsed < 5.0, (name, elapsed)
    # What was extracted (the harness's answers, found in linear time).
    assert gsm8k.grade(ADVERSARIAL["the answer is, then digits"][0], "7")["strict"] == "1" * (MB - 1)
    assert gsm8k.grade(ADVERSARIAL["many negative numbers"][0], "7")["flexible"] == "-1"
    assert hm.extract_answer(ADVERSARIAL["nested braces"][0]) == "{" * (MB // 2 - 1) + "}" * (MB // 2 - 1)
