"""Is a predicted MATH answer equivalent to the gold one? Cheap checks here, symbolic ones in killable workers.

Order of checks, stopping at the first that decides:
1. `invalid`: nothing was extracted; `exact`: the Minerva-normalised strings are equal;
2. `number`: both are plain numbers (integer, decimal, a/b, \\frac{a}{b}) compared exactly as fractions;
3. `too_long`: a prediction longer than `max_chars` is wrong unread (a 100 KB "answer" never is one, and the
   normalisation regexes are quadratic in the length);
4. `math_verify`: Math-Verify's verify(parse(gold), parse(pred)) on the raw extracted answers: sympy-based
   (simplify(a - b) == 0 among other tests) and it also knows sets, intervals, tuples, percentages and units;
   `sympy`: only where Math-Verify cannot read one side, Minerva's own check: both normalised answers parsed from
   LaTeX (latex2sympy2_extended, since sympy's parse_latex needs an older ANTLR than the lock pins) and
   sympy.simplify(a - b) == 0;
   `timeout`: step 4 did not finish within `timeout` seconds of wall clock: the worker process is killed
   (sympy can spin in C code where no signal reaches it) and a fresh one takes the next comparison.

Workers are fresh interpreters (`serve()`, JSON lines over pipes) with sympy and Math-Verify imported once; the
evaluating process (which may hold a model and threads) is never forked. Replacing a killed worker costs about a
second, which only timeouts pay.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import wait

from eval.hendrycks_math import INVALID, normalize_final_answer

_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")
_SLASH = re.compile(r"([-+]?\d+)/(\d+)")
_FRAC = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}")


@dataclass(frozen=True)
class Verdict:
    correct: bool
    method: str  # which check decided: invalid, exact, number, too_long, sympy, math_verify, none, timeout, error


def as_number(s: str) -> Fraction | None:
    """An exact value for plain numeric answers ("12", "-0.5", "3/4", "\\frac{3}{4}", "-\\dfrac{1}{2}")."""
    s = s.strip()
    try:
        if _DECIMAL.fullmatch(s):
            return Fraction(s)
        if m := _SLASH.fullmatch(s):
            return Fraction(int(m.group(1)), int(m.group(2)))
        if m := _FRAC.fullmatch(s):
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def quick_verdict(gold_norm: str, pred_norm: str) -> Verdict | None:
    """Steps 1-2 (no parsing); None when a symbolic comparison is needed."""
    if pred_norm == INVALID or not pred_norm:
        return Verdict(False, "invalid")
    if gold_norm == pred_norm:
        return Verdict(True, "exact")
    g, p = as_number(gold_norm), as_number(pred_norm)
    if g is not None and p is not None:
        return Verdict(g == p, "number")
    return None


def _math(s: str) -> str:
    return s if "$" in s else f"${s}$"


def symbolic_equal(gold_raw: str, pred_raw: str, gold_norm: str, pred_norm: str) -> str:
    """Step 4, run inside a worker: 'math_verify', 'sympy' or 'none'."""
    import sympy
    from latex2sympy2_extended import latex2sympy
    from math_verify import parse, verify

    try:
        gold, pred = parse(_math(gold_raw), parsing_timeout=None), parse(_math(pred_raw), parsing_timeout=None)
    except Exception:  # noqa: BLE001 (any parse failure means "not shown equal this way")
        gold = pred = []
    if gold and pred:
        try:
            return "math_verify" if verify(gold, pred, timeout_seconds=None) else "none"
        except Exception:  # noqa: BLE001
            pass
    # Math-Verify could not read one side: Minerva's own check on the normalised strings.
    try:
        if sympy.simplify(latex2sympy(gold_norm) - latex2sympy(pred_norm)) == 0:
            return "sympy"
    except Exception:  # noqa: BLE001
        pass
    return "none"


def serve() -> None:
    """The worker process: one JSON request per stdin line, one JSON reply per stdout line."""
    # Replies go to a private copy of stdout; anything a library prints lands on stderr instead.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.disable(logging.WARNING)  # Math-Verify warns once that its own (signal) timeouts are off
    symbolic_equal("1", "1", "x", "x")  # import and warm up sympy/Math-Verify before the first timed request
    replies.write("ready\n")
    for line in sys.stdin:
        key, args = json.loads(line)
        try:
            method = symbolic_equal(*args)
        except Exception:  # noqa: BLE001
            method = "error"
        replies.write(json.dumps([key, method]) + "\n")


class _Worker:
    """A `serve()` subprocess. A fresh interpreter (not a fork of the caller, which may hold a model and threads)."""

    def __init__(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from eval.equivalence import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the equivalence worker failed to start (exit code {self.proc.poll()})")
        self.job: tuple[int, float] | None = None  # (item index, deadline)

    def send(self, key: int, args: tuple) -> None:
        self.proc.stdin.write(json.dumps([key, list(args)]) + "\n")
        self.proc.stdin.flush()

    def recv(self) -> tuple[int, str]:
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError("the equivalence worker exited")
        key, method = json.loads(line)
        return key, method

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class Judge:
    """Grades (gold, prediction) answer pairs; at most `timeout` seconds of wall clock per symbolic comparison.

    Use as a context manager (or call close()) so the workers exit.
    """

    def __init__(self, timeout: float = 5.0, workers: int = 2, max_chars: int = 1000):
        self.timeout, self.n_workers, self.max_chars = timeout, max(1, workers), max_chars
        self._workers: list[_Worker] = []

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers = []

    def judge(self, gold: str, pred: str) -> Verdict:
        return self.judge_many([(gold, pred)])[0]

    def judge_many(self, pairs: list[tuple[str, str]]) -> list[Verdict]:
        """Verdicts for (gold answer, predicted answer) pairs, both as extracted (not yet normalised)."""
        verdicts: list[Verdict | None] = []
        jobs = deque()
        for i, (gold, pred) in enumerate(pairs):
            if len(pred) > self.max_chars:  # before normalising: its regexes are quadratic on long strings
                verdicts.append(Verdict(False, "too_long"))
                continue
            pred_norm = INVALID if pred == INVALID else normalize_final_answer(pred)
            gold_norm = normalize_final_answer(gold)
            v = quick_verdict(gold_norm, pred_norm)
            verdicts.append(v)
            if v is None:
                jobs.append((i, (gold, pred, gold_norm, pred_norm)))
        if jobs:
            for i, method in self._run(jobs).items():
                verdicts[i] = Verdict(method in ("sympy", "math_verify"), method)
        return verdicts  # type: ignore[return-value]

    def _run(self, jobs: deque) -> dict[int, str]:
        while len(self._workers) < min(self.n_workers, len(jobs)):
            self._workers.append(_Worker())
        results: dict[int, str] = {}
        while jobs or any(w.job for w in self._workers):
            for w in self._workers:
                if w.job is None and jobs:
                    i, args = jobs.popleft()
                    w.send(i, args)
                    w.job = (i, time.monotonic() + self.timeout)
            busy = [w for w in self._workers if w.job]
            next_deadline = min(w.job[1] for w in busy)
            ready = wait([w.proc.stdout for w in busy], timeout=max(0.0, next_deadline - time.monotonic()))
            for w in busy:
                if w.proc.stdout in ready:
                    try:
                        i, method = w.recv()
                    except (EOFError, OSError):  # the worker died (e.g. out of memory): count it, replace it
                        i, method = w.job[0], "error"
                        self._replace(w)
                    results[i] = method
                    w.job = None
                elif time.monotonic() >= w.job[1]:
                    results[w.job[0]] = "timeout"
                    self._replace(w)
        return results

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._workers[self._workers.index(w)] = _Worker()
