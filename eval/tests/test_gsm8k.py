import numpy as np

from eval import grading, gsm8k, stats


def test_every_gold_solution_grades_correct_through_the_model_output_path():
    items = gsm8k.load()
    assert len(items) == 1319
    outputs = [gsm8k.gold_as_output(it) for it in items]
    summary = grading.summarize_gsm8k(grading.grade_gsm8k(items, outputs))
    assert summary["strict_match"]["accuracy"] == 1.0
    assert summary["flexible_match"]["accuracy"] == 1.0
    # An off-by-one answer in the same format is wrong under both extractions.
    wrong = [o.replace(f"The answer is {it.answer}.", f"The answer is {it.answer}1.") for it, o in zip(items, outputs)]
    summary = grading.summarize_gsm8k(grading.grade_gsm8k(items, wrong))
    assert summary["strict_match"]["accuracy"] == 0.0


def test_prompt_is_the_eight_shot_cot_format():
    p = gsm8k.prompt("How many legs do 3 cats have?")
    assert p.count("Q: ") == 9 and p.count("The answer is") == 8
    assert p.startswith("Q: There are 15 trees in the grove.")
    assert p.endswith("\n\nQ: How many legs do 3 cats have?\nA:")
    assert "A: Olivia had 23 dollars." in p


def test_strict_and_flexible_extraction_follow_the_harness():
    cases = [
        # output, strict, flexible
        ("5 + 4 = 9. The answer is 9.", "9", "9."),
        ("The answer is 1,000. Then 7 more.", "1,000.", "7"),  # greedy class takes the "."
        ("It costs $12.50 total", gsm8k.INVALID, "$12.50"),
        ("The answer is -3.\n\nQ: next question 42", "-3", "-3."),  # cut at "Q:" first
        ("no digits at all", gsm8k.INVALID, gsm8k.INVALID),
        ("The answer is 18", "1", "18"),  # the final "." of the strict regex eats the last digit (as in the harness)
    ]
    for output, strict, flexible in cases:
        g = gsm8k.grade(output, "0")
        assert (g["strict"], g["flexible"]) == (strict, flexible), output
    assert gsm8k.is_correct("1,000.", "1000") and gsm8k.is_correct("$12", "12")
    assert not gsm8k.is_correct("12.5", "125") and not gsm8k.is_correct(gsm8k.INVALID, "0")


def test_adversarial_outputs_are_graded_fast_and_deterministically():
    rng = np.random.default_rng(0)
    many_numbers = " ".join(str(x) for x in rng.integers(0, 10**6, 20_000))
    outputs = [
        "",
        "I don't know.",
        many_numbers,
        "The answer is " * 8000,  # ~100 KB, never followed by a number
        "x" * 100_000 + " The answer is 7.",
        "The answer is \u0667\u0662.",  # Arabic-Indic digits are not [0-9]
        "The answer is \uff17\uff12.",  # full-width digits
        r"$\frac{\boxed{72}}{1}$ \\\\ {{{{ " * 2000,
    ]
    first = [gsm8k.grade(o, "72") for o in outputs]
    assert first == [gsm8k.grade(o, "72") for o in outputs]
    assert [g["strict_match"] for g in first] == [0, 0, 0, 0, 0, 0, 0, 0]
    assert first[4]["strict"] == "7" and first[2]["flexible"] == many_numbers.rsplit(" ", 1)[1]
    assert first[7]["flexible"] == "1"  # the last number, from "{1}"


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    x = (rng.random(2000) < 0.3).astype(float)
    mean, low, high = stats.bootstrap_ci(x, n_boot=2000, seed=0)
    se = np.sqrt(mean * (1 - mean) / len(x))
    assert low < mean < high
    assert abs((high - low) - 2 * 1.96 * se) < 0.2 * 2 * 1.96 * se
    assert stats.bootstrap_ci(x, seed=3) == stats.bootstrap_ci(x, seed=3)
    groups = stats.grouped_accuracy([1, 0, 1, 1], ["a", "b", "a", "b"])
    assert groups["a"]["accuracy"] == 1.0 and groups["b"]["accuracy"] == 0.5 and groups["b"]["n"] == 2
