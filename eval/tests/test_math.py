import time

import pytest

from eval import grading
from eval import hendrycks_math as hm
from eval.equivalence import Judge


@pytest.fixture(scope="module")
def judge():
    with Judge(timeout=3.0, workers=2) as j:
        yield j


def test_math500_gold_solutions_grade_100_percent(judge):
    items = hm.load()
    assert len(items) == 500 and {it.level for it in items} == {f"Level {i}" for i in range(1, 6)}
    # As the dataset writes it (answer in the last \boxed{}), and as a model prompted Minerva-style writes it.
    for outputs in ([it.solution for it in items], [hm.gold_as_output(it) for it in items]):
        records = grading.grade_math(items, outputs, judge)
        summary = grading.summarize_math(records)
        assert summary["accuracy"]["accuracy"] == 1.0, [r for r in records if not r["correct"]][:3]
        assert summary["by_subject"]["Algebra"]["n"] == 124 and summary["by_level"]["Level 5"]["n"] == 134
    # The answer of the next problem is (almost always) wrong: the grader is not trivially lenient.
    some = items[:100]
    shifted = [hm.gold_as_output(it) for it in some[1:] + some[:1]]
    assert grading.summarize_math(grading.grade_math(some, shifted, judge))["accuracy"]["accuracy"] < 0.05


def test_full_math_test_gold_solutions_grade_100_percent(judge):
    items = hm.load(subset="math")
    assert len(items) == 5000
    records = grading.grade_math(items, [hm.gold_as_output(it) for it in items], judge)
    assert sum(r["correct"] for r in records) == 5000


def test_prompt_is_minerva_four_shot():
    p = hm.prompt("What is $1+1$?")
    assert p.count("Problem:\n") == 5 and p.count("I hope it is correct.") == 4
    assert p.endswith("Problem:\nWhat is $1+1$?\n\nSolution:")
    assert "Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct." in p


def test_extraction():
    assert hm.extract_answer("so x=3.\nFinal Answer: The final answer is $3$. I hope it is correct.") == "$3$"
    assert hm.extract_answer("Final Answer: The final answer is $\\frac{1}{2}$") == "$\\frac{1}{2}"  # cut off
    assert hm.extract_answer("thus $\\boxed{\\frac{1}{\\sqrt{2}}}$ and") == "\\frac{1}{\\sqrt{2}}"
    assert hm.extract_answer("first \\boxed{1} then \\boxed{2}") == "2"
    assert hm.extract_answer("$\\boxed 5$") == "5"
    assert hm.extract_answer("\\boxed{unbalanced") == hm.INVALID
    assert hm.extract_answer("no answer here") == hm.INVALID


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("x = 5", "5"),
        ("\\text{(B)}", "(B)"),
        ("10\\text{ inches}", "10"),
        ("5 \\text{ cm}^2", "5"),
        ("\\$1,\\!000", "1000"),
        ("1,234,567", "1234567"),
        ("0,1", "0,1"),  # a pair, not a thousands group
        ("\\frac12", "\\frac{1}{2}"),
        ("\\sqrt3", "\\sqrt{3}"),
        ("\\sqrt[3]{2}", "\\sqrt[3]{2}"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left(3,\\frac{\\pi}{2}\\right)"),  # "\left" keeps its "ft"
        ("\\tan x", "\\tanx"),
        ("45^\\circ", "45"),
        ("\\boxed{7}", "7"),
    ],
)
def test_minerva_normalization(raw, normalized):
    assert hm.normalize_final_answer(raw) == normalized


# (gold, prediction, equivalent)
EQUIVALENCE_CASES = [
    # fractions and decimals
    ("\\frac{1}{2}", "0.5", True),
    ("1.5", "\\frac{3}{2}", True),
    ("-\\frac{2}{3}", "-2/3", True),
    ("\\frac{2}{3}", "\\frac{3}{2}", False),
    ("\\frac{1}{3}", "0.333", False),
    ("\\$18.90", "18.9", True),
    # \boxed, \dfrac
    ("\\boxed{5}", "5", True),
    ("\\dfrac{3}{4}", "\\frac34", True),
    ("\\dfrac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", True),
    # units and degrees
    ("30^\\circ", "30", True),
    ("30", "30 degrees", True),
    ("5\\text{ cm}", "5", True),
    ("3 \\text{ dollars}", "3", True),
    ("90^{\\circ}", "\\frac{\\pi}{2}", False),
    ("10\\%", "10", True),
    # intervals
    ("[2,5)", "[2, 5)", True),
    ("(-\\infty, 3]", "(-\\infty,3]", True),
    ("[2,5)", "(2,5]", False),
    ("x \\in [1, 2]", "[1,2]", True),
    ("(1,2)\\cup(3,4)", "(1, 2) \\cup (3, 4)", True),
    # sqrt
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("6\\sqrt{3}", "\\sqrt{108}", True),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", True),
    ("2", "\\sqrt{4}", True),
    ("\\sqrt{2}", "\\sqrt{3}", False),
    # pi
    ("2\\pi", "\\pi \\cdot 2", True),
    ("\\pi", "3.14159", True),  # pi cut off at 5 places, 6 significant digits (the decimal rule)
    ("\\pi", "3.1416", False),  # 5 significant digits: too few to stand for pi
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{3}", False),
    # sets and tuples
    ("\\{1,2,3\\}", "\\{3,2,1\\}", True),
    ("\\{1,2\\}", "\\{1,3\\}", False),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("(1,2)", "(2,1)", False),
    # thousands separators
    ("1,000", "1000", True),
    ("100{,}000", "100000", True),
    ("\\$1,\\!000", "1000", True),
    ("1,000", "100", False),
    # algebra
    ("x^2+2x+1", "(x+1)^2", True),
    ("y = 2x + 3", "2x+3", True),
    ("2^{10}", "1024", True),
    ("3", "4", False),
    ("\\text{(C)}", "C", True),
]


def test_equivalence_table(judge):
    verdicts = judge.judge_many([(g, p) for g, p, _ in EQUIVALENCE_CASES])
    wrong = [(g, p, want, v) for (g, p, want), v in zip(EQUIVALENCE_CASES, verdicts) if v.correct != want]
    assert not wrong


def test_adversarial_outputs_are_fast_and_deterministic(judge):
    items = [hm.Item(f"adv/{i}", "p", "s", "\\frac{1}{2}", "Algebra", "Level 1") for i in range(7)]
    outputs = [
        "",  # no answer
        " ".join(str(i) for i in range(20000)),  # many numbers, no answer sentence
        "Final Answer: The final answer is " + "9" * 100_000 + ". I hope it is correct.",  # 100 KB answer
        "\\boxed{" * 30_000,  # 100+ KB of unbalanced LaTeX
        "Final Answer: The final answer is $\\frac{\u0661}{\u0662}$. I hope it is correct.",  # Arabic-Indic 1/2
        "\\left\\{\\begin{matrix}\\frac{\\frac{\\frac{1}{2}}{}}{}\\end{matrix}\\right. $$ \\boxed{\\frac{1}{2}}",
        "Final Answer: The final answer is $0.5$. I hope it is correct. Final Answer: The final answer is $7$.",
    ]
    start = time.perf_counter()
    first = grading.grade_math(items, outputs, judge)
    elapsed = time.perf_counter() - start
    assert first == grading.grade_math(items, outputs, judge)
    assert [r["correct"] for r in first] == [0, 0, 0, 0, 1, 1, 1]  # Python reads Arabic-Indic digits as numbers
    assert [r["method"] for r in first][:4] == ["invalid", "invalid", "too_long", "invalid"]
    assert elapsed < 3 * judge.timeout


def test_a_hanging_comparison_is_killed_and_the_judge_goes_on():
    with Judge(timeout=1.0, workers=1) as j:
        start = time.perf_counter()
        hang = j.judge("2", "9^{9^{9^{9}}}")  # sympy would try to build this integer
        assert hang.method == "timeout" and not hang.correct
        # Left alone it would never finish; killed, it costs the 1 s limit plus starting a worker twice (about
        # a second each, more on a loaded machine).
        assert time.perf_counter() - start < 60
        assert j.judge("2\\sqrt{2}", "\\sqrt{8}").correct
