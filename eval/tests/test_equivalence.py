"""Answer equivalence rules (eval.equivalence): hedged answers are wrong, lists still match, and the decimal rule."""

from fractions import Fraction

import pytest

from eval.equivalence import Judge, candidates, decimal_agrees


@pytest.fixture(scope="module")
def judge():
    with Judge(timeout=3.0, workers=2) as j:
        yield j


# (gold, prediction): the prediction names more distinct values than the gold has, so it is wrong even where one
# of them (the first, the last, or the one Minerva's normalisation would keep) is the gold.
HEDGES = [
    ("3", "3 or 5"),
    ("5", "3 or 5"),
    ("3", "either 3 or 5"),
    ("3", "x = 2, x = 3"),  # Minerva keeps what follows the last "=": "3"
    ("2", "x = 2, x = 3"),
    ("3", "$3$ or $5$"),  # Minerva keeps the first $...$: "3"
    ("3", "$x=3$ or $x=5$"),
    ("3", "x=5 \\text{ or } x=3"),
    ("3", "3 \\text{ and } 5"),
    ("3", "3; 5"),
    ("3", "x=2 \\quad x=3"),
    ("3", "$3$, $5$"),
    ("3", "\\text{3 or 5}"),
    ("\\frac{1}{2}", "\\frac{1}{2} \\text{ or } \\frac{1}{3}"),
    ("\\text{(A)}", "(A) or (B)"),
    ("(1,2)", "(1,2) \\text{ or } (2,1)"),
    ("[2,5)", "[2,5) or (2,5]"),
    ("2, 3", "$2, 3$ or $4, 5$"),  # a list gold allows two parts, not four
    ("1,-2", "1, -2, 3"),
    ("(1,2)", "$(1,2)$ or $(2,1)$"),  # two tuples for one
    ("(1,2)", "(1,2) or 5"),
    ("(2,1)", "x = (1,2), x = (2,1)"),
    ("\\{1,2\\}", "1, 2, 3"),
]

# (gold, prediction): a gold that is itself a list, tuple, interval or set still matches an equal one.
LISTS = [
    ("2, 3", "x = 2, x = 3"),
    ("2, 3", "3, 2"),
    ("1,-2", "x=1 \\text{ or } x=-2"),
    ("7, -2, \\text{ and } -5", "-5, -2, 7"),
    ("19 \\text{ and }43", "19, 43"),
    ("(1,2)", "(1, 2)"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})"),
    ("\\{1, 2\\}", "\\{2,1\\}"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("(0,9) \\cup (9,36)", "(0, 9) \\cup (9, 36)"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("1,000", "1000"),  # thousands groups are one number
    ("10,\\!080", "10,080"),
    ("3", "x = 3"),
    ("3", "3, 3"),  # one distinct value, written twice
    # A bare list may spell out a tuple or set gold, as Math-Verify accepts ("\\pm" stands for two values).
    ("(1,2)", "1, 2"),
    ("(6,31,-1)", "6, 31, -1"),
    ("(3,4)", "x=3, y=4"),
    ("\\{1,2,3\\}", "1,2,3"),
    ("\\{1\\pm\\sqrt{5},-2\\}", "1+\\sqrt{5}, 1-\\sqrt{5}, -2"),
    ("(-\\infty,-3]\\cup[3,\\infty)", "(-\\infty, -3] \\cup [3, \\infty)"),
]


def test_hedged_predictions_are_wrong(judge):
    verdicts = judge.judge_many(HEDGES)
    assert [(g, p) for (g, p), v in zip(HEDGES, verdicts) if (v.correct, v.method) != (False, "multiple")] == []


def test_list_tuple_interval_and_set_golds_still_match(judge):
    verdicts = judge.judge_many(LISTS)
    assert [(g, p, v) for (g, p), v in zip(LISTS, verdicts) if not v.correct] == []


@pytest.mark.parametrize(
    "answer, parts",
    [
        ("3", 1),
        ("3 or 5", 2),
        ("\\text{Monday or Tuesday}", 2),
        ("\\text{ordered}", 1),  # "or" inside a word
        ("\\lor", 1),
        ("(1, 2)", 1),
        ("[2,5)", 1),
        ("\\{1,2\\}", 1),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", 1),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", 1),
        ("1,-2", 2),
        ("0,1", 2),  # a pair, not a thousands group
        ("1,000", 1),
        ("11,\\! 111,\\! 111", 1),
        ("0.25\\,\\text{ cm}", 1),  # a thin space
        ("x=2 \\quad x=3", 2),
        ("7, -2, \\text{ and } -5", 3),
    ],
)
def test_candidates_split_at_top_level_separators_only(answer, parts):
    assert len(candidates(answer)) == parts


@pytest.mark.parametrize(
    "text, value, agrees",
    [
        ("0.3333333333", Fraction(1, 3), True),
        ("0.333333", Fraction(1, 3), True),  # 6 significant digits
        ("0.33333", Fraction(1, 3), False),  # 5
        ("0.33", Fraction(1, 3), False),
        ("0.6666666667", Fraction(2, 3), True),  # rounded
        ("0.6666666666", Fraction(2, 3), True),  # truncated
        ("0.6666666668", Fraction(2, 3), False),  # neither
        ("0.3333334", Fraction(1, 3), False),  # within one unit of the last place, but neither
        ("-0.142857", Fraction(-1, 7), True),
        ("-0.142858", Fraction(-1, 7), False),
        ("1.234565", Fraction(2469131, 2000000), True),  # 1.2345655: a tie, either neighbour
        ("1.234566", Fraction(2469131, 2000000), True),
        ("333.333", Fraction(1000, 3), True),
        ("0.000033", Fraction(1, 30000), False),  # 2 significant digits
        ("0.0000333333", Fraction(1, 30000), True),
        ("2.0000001", Fraction(2), False),  # 7 places hold 2 exactly: only 2.0000000 is 2
        ("0.1250001", Fraction(1, 8), False),
        ("3", Fraction(3), False),  # not a decimal: equality is checked elsewhere
    ],
)
def test_decimal_rule(text, value, agrees):
    assert decimal_agrees(text, value) is agrees


# (gold, prediction, correct, method): the decimal rule decides every decimal against a single number, exact
# fraction or irrational, in either direction; only an exact equality is "number".
DECIMALS = [
    ("\\frac{1}{3}", "0.3333333333", True, "rounded"),
    ("\\frac{1}{3}", "0.33", False, "number"),
    ("\\frac{1}{3}", "0.333", False, "number"),
    ("\\frac12", "0.5", True, "number"),
    ("0.5", "\\frac{1}{2}", True, "number"),
    ("0.3333333333", "\\frac{1}{3}", True, "rounded"),
    ("\\frac{2}{3}", "0.666667", True, "rounded"),
    ("\\frac{2}{3}", "0.666666", True, "rounded"),
    ("-\\frac{1}{7}", "-0.142857", True, "rounded"),
    ("2", "2.0000001", False, "number"),
    ("\\pi", "3.14159", True, "rounded"),
    ("\\pi", "3.1416", False, "none"),
    ("\\sqrt{2}", "1.41421356", True, "rounded"),
    ("\\frac{\\sqrt{2}}{2}", "0.7071068", True, "rounded"),
    ("\\frac{\\pi}{1000}", "0.003142", False, "none"),  # 4 significant digits; Math-Verify's 6 places would accept
    ("2\\sqrt{3}", "3.464102", True, "rounded"),
    ("3.464102", "2\\sqrt{3}", True, "rounded"),
    ("\\sin(\\pi/6)", "0.5", True, "number"),
]


def test_decimal_rule_through_the_judge(judge):
    verdicts = judge.judge_many([(g, p) for g, p, _, _ in DECIMALS])
    got = [(g, p, v.correct, v.method) for (g, p, _, _), v in zip(DECIMALS, verdicts)]
    assert got == DECIMALS
