"""How long grading takes: all 1,319 GSM8K answers and all 500 MATH-500 answers, through the harness's grading path.

Two sets of outputs per benchmark: the gold solutions (every answer right: mostly string matches) and the next
problem's gold solution (almost every answer wrong, the costly case: symbolic checks run for non-numeric answers).
Side by side, the peer: Math-Verify on the whole output text, verify(parse(gold solution), parse(output)), which is
how lm-evaluation-harness's `math_verify` metric grades MATH.

    ./bazelw run //eval:grading_speed
"""

from __future__ import annotations

import logging
import time

from eval import grading, gsm8k, hendrycks_math
from eval.equivalence import Judge


def peer_math_verify(items, outputs) -> float:
    from math_verify import parse, verify

    logging.disable(logging.WARNING)
    return sum(float(verify(parse(it.solution), parse(out))) for it, out in zip(items, outputs)) / len(items)


def main() -> None:
    g_items, m_items = gsm8k.load(), hendrycks_math.load(subset="math500")
    g_gold = [gsm8k.gold_as_output(it) for it in g_items]
    m_gold = [hendrycks_math.gold_as_output(it) for it in m_items]
    g_wrong, m_wrong = g_gold[1:] + g_gold[:1], m_gold[1:] + m_gold[:1]
    with Judge() as judge:
        judge.judge("1", "x")  # start the workers outside the timings
        for name, g_out, m_out in (("gold", g_gold, m_gold), ("next problem's answer", g_wrong, m_wrong)):
            t0 = time.perf_counter()
            g = grading.summarize_gsm8k(grading.grade_gsm8k(g_items, g_out))
            t1 = time.perf_counter()
            m_records = grading.grade_math(m_items, m_out, judge)
            m = grading.summarize_math(m_records)
            t2 = time.perf_counter()
            peer = peer_math_verify(m_items, m_out)
            t3 = time.perf_counter()
            print(f"outputs = {name}")
            print(f"  GSM8K {len(g_items)} answers: {t1 - t0:.2f} s (strict {g['strict_match']['accuracy']:.3f})")
            print(
                f"  MATH-500 {len(m_items)} answers: {t2 - t1:.2f} s (accuracy {m['accuracy']['accuracy']:.3f}, "
                f"decided by {m['decided_by']})"
            )
            print(
                f"  peer Math-Verify on whole texts, MATH-500: {t3 - t2:.2f} s (accuracy {peer:.3f}); "
                f"ours / peer time = {(t2 - t1) / (t3 - t2):.2f}"
            )
            print(f"  total GSM8K + MATH-500: {t2 - t0:.2f} s")


if __name__ == "__main__":
    main()
