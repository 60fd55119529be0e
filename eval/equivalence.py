"""Is a predicted MATH answer equivalent to the gold one? Cheap checks here, symbolic ones in killable workers.

Order of checks, stopping at the first that decides:
1. `too_long`: a prediction longer than `max_chars` is wrong unread (a 100 KB "answer" never is one, and the
   normalisation regexes are quadratic in the length); `invalid`: nothing was extracted;
2. `multiple`: the prediction lists more distinct values than the gold allows (a hedge such as "3 or 5",
   "x = 2, x = 3", "$3$ or $5$", where Minerva's normalisation would keep one of them) and is wrong.
   `candidates` splits an answer at top level (outside (), [], {}, \\{\\} and \\begin..\\end) at ",", ";", "\\quad",
   "\\\\" and the words "or"/"and" (also inside \\text{}); thousands groups ("1,000", "1,\\!000") and "\\," do not
   split. Parts are counted after Minerva normalisation, equal numbers once. The gold allows as many values as it
   has parts: a list gold ("1,-2": all solutions) several, a tuple, interval or set one, except that a prediction
   of bare values may spell out the elements of a one-group gold ("1, 2" for "(1,2)" or "\\{1,2\\}", which
   Math-Verify accepts; "a \\pm b" counts two) while a list of groups ("(1,2) or (2,1)") may not. Parts that are
   inequalities ("x < -3 or x > 3") describe one set, not a hedge, and are left to step 4;
3. `exact`: the Minerva-normalised strings are equal;
   `number`: both are plain numbers (integer, decimal, a/b, \\frac{a}{b}) and equal as fractions;
   `rounded`: the decimal rule (`decimal_agrees`): a number written as a decimal with d places and at least
   SIGNIFICANT_DIGITS significant digits equals an exact value it is a rounding (either way at a tie) or a
   truncation of at d places: 0.3333333333 and 0.333333 equal 1/3, 0.6666666667 and 0.666667 equal 2/3, but
   0.33 and 0.33333 (too few digits) and 0.3333334 (neither) do not; a value that d places can hold exactly
   (integers, 1/8 = 0.125) is only ever equal to itself. The rule is symmetric (a decimal gold against an exact
   prediction) and is the only one for a decimal against a single real number: against a closed form (\\pi,
   \\sqrt{2}) step 4's worker first checks exact equality, then evaluates it to enough digits and applies the same
   rule (`decimal_vs_real`: "3.14159" is \\pi cut at 5 places; "3.1416" has too few digits), before and instead of
   Math-Verify, whose own rounding (both sides to 6 places) only still acts on decimals inside tuples, sets and
   expressions;
4. `math_verify`: Math-Verify's verify(parse(gold), parse(pred)) on the raw extracted answers: sympy-based
   (simplify(a - b) == 0 among other tests) and it also knows sets, intervals, tuples, percentages and units;
   `sympy`: only where Math-Verify cannot read one side, Minerva's own check: both normalised answers parsed from
   LaTeX (latex2sympy2_extended, since sympy's parse_latex needs an older ANTLR than the lock pins) and
   sympy.simplify(a - b) == 0;
   `timeout`: step 4 did not finish within `timeout` seconds of wall clock: the worker process is killed
   (sympy can spin in C code where no signal reaches it) and a fresh one takes the next comparison.

Extraction (eval.hendrycks_math.extract_answer, eval.gsm8k) is linear in the length of a model's output, so it
needs no wall-clock limit; only what is costly per character (normalisation, parsing) is bounded by `max_chars`.

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
_POINT_DECIMAL = re.compile(r"[-+]?(\d*)\.(\d+)")
SIGNIFICANT_DIGITS = 6  # the least a decimal needs to stand for a value it only approximates

# Hedge detection (step 2). Text commands are unwrapped so their words count; the split scans brackets,
# environments and separators in one regex pass (tokens that look like separators but are not come first).
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textrm|textit|mbox|mathrm)\s*\{([^{}]*)\}")
_WORD_SEP = re.compile(r"(?<![\\A-Za-z])(?:or|and)(?![A-Za-z])")
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?!\d)")
_TOKEN = re.compile(
    r"\\[,;!]|,\\!"  # thin spaces and the ",\!" of "1,\!000": not separators
    r"|(\\begin\{[a-zA-Z*]*\}|[(\[{])|(\\end\{[a-zA-Z*]*\}|[)\]}])"  # openers, closers
    r"|([,;]|\\q?quad(?![a-zA-Z])|\\\\)"  # separators
)
_INEQUALITY = re.compile(r"[<>]|\\(?:[lg]eq?|[lg]t|neq?)(?![a-zA-Z])")
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])")
_PLUS_MINUS = re.compile(r"\\(?:pm|mp)(?![a-zA-Z])")


@dataclass(frozen=True)
class Verdict:
    correct: bool
    # which check decided: too_long, invalid, multiple, exact, number, rounded, math_verify, sympy, none, timeout,
    # error
    method: str


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


def decimal_agrees(text: str, value: Fraction) -> bool:
    """The decimal rule: `text`, a decimal with d places and >= SIGNIFICANT_DIGITS significant digits, is `value`
    rounded to d places (either neighbour at a tie) or truncated to d places (toward zero)."""
    m = _POINT_DECIMAL.fullmatch(text.strip())
    if m is None or len((m.group(1) + m.group(2)).lstrip("0")) < SIGNIFICANT_DIGITS:
        return False
    scale = 10 ** len(m.group(2))
    written, exact = Fraction(text.strip()) * scale, value * scale  # `written` is an integer
    return written == int(exact) or abs(exact - written) <= Fraction(1, 2)


def numbers_equal(gold_norm: str, pred_norm: str, g: Fraction, p: Fraction) -> Verdict:
    """Two plain numbers: equal as fractions, else the decimal rule either way round."""
    if g == p:
        return Verdict(True, "number")
    if decimal_agrees(pred_norm, g) or decimal_agrees(gold_norm, p):
        return Verdict(True, "rounded")
    return Verdict(False, "number")


def candidates(answer: str) -> list[str]:
    """The top-level parts of an answer (see step 2 in the module docstring). One regex pass: linear."""
    s = _TEXT_CMD.sub(lambda m: f" {m.group(1)} ", answer)
    s = _WORD_SEP.sub(";", s)
    s = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), s)
    parts, depth, start = [], 0, 0
    for m in _TOKEN.finditer(s):
        opener, closer, sep = m.groups()
        if opener:
            depth += 1
        elif closer:
            depth -= 1
        elif sep and depth == 0:
            parts.append(s[start : m.start()])
            start = m.end()
    parts.append(s[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _group_inner(part: str) -> str | None:
    """The inside of an answer part that is one bracketed group ("(1,2)", "[2,5)", "\\{1,2\\}"), else None."""
    s = _SIZING.sub("", part).strip()
    depth, start = 0, 0
    for m in _TOKEN.finditer(s):
        opener, closer, _ = m.groups()
        if depth == 0:
            if not opener or s[: m.start()] not in ("", "\\"):
                return None
            start = m.end()
        depth += 1 if opener else -1 if closer else 0
        if depth == 0:
            return s[start : m.start()].removesuffix("\\") if m.end() == len(s) else None  # "\\}" closes
    return None


def _values(answer: str) -> list[str]:
    """The Minerva-normalised top-level parts of an answer."""
    return [p for p in map(normalize_final_answer, candidates(answer)) if p]


def _count(parts: list[str]) -> int:
    """Distinct values among normalised parts (equal numbers once: "0.5" and "\\frac{1}{2}")."""
    return len({p if (v := as_number(p)) is None else v for p in parts})


def hedged(gold: str, pred: str) -> bool:
    """Step 2: does the prediction list more distinct values than the gold allows?"""
    parts = _values(pred)
    if len(parts) < 2 or any(_INEQUALITY.search(p) for p in parts):
        return False
    gold_parts = _values(gold)
    allowed = _count(gold_parts)
    inner = _group_inner(gold_parts[0]) if len(gold_parts) == 1 else None
    if inner is not None and not any(_group_inner(p) is not None for p in parts):
        # A bare list may spell out the elements of a one-group gold ("1, 2" for "(1,2)" or "\\{1,2\\}", as
        # Math-Verify accepts; "a \\pm b" is two); a list of groups ("(1,2) or (2,1)") may not.
        allowed = max(allowed, _count(_values(inner)) + len(_PLUS_MINUS.findall(inner)))
    return _count(parts) > max(1, allowed)


def quick_verdict(gold_norm: str, pred_norm: str) -> Verdict | None:
    """Step 3 and the invalid check (no parsing); None when a symbolic comparison is needed."""
    if pred_norm == INVALID or not pred_norm:
        return Verdict(False, "invalid")
    if gold_norm == pred_norm:
        return Verdict(True, "exact")
    g, p = as_number(gold_norm), as_number(pred_norm)
    if g is not None and p is not None:
        return numbers_equal(gold_norm, pred_norm, g, p)
    return None


def _math(s: str) -> str:
    return s if "$" in s else f"${s}$"


def decimal_vs_real(decimal: str, expr, other_norm: str) -> str | None:
    """The decimal rule for a decimal against a closed-form real number (\\pi, \\sqrt{2}, \\sin(\\pi/6)), in a worker:
    'number' (equal), 'rounded' or 'none'; None when `expr` is not a single real number."""
    import sympy

    if not (_POINT_DECIMAL.fullmatch(decimal) and isinstance(expr, sympy.Expr) and expr.is_number):
        return None
    if "%" in other_norm:  # Math-Verify reads "10\\%" as 10/100 but also lets it equal 10
        return None
    written = Fraction(decimal)
    if sympy.simplify(expr - sympy.Rational(written.numerator, written.denominator)) == 0:
        return "number"
    approx = sympy.N(expr, len(decimal) + 30)  # digits to spare beyond every place written
    if not isinstance(approx, sympy.Float):  # complex, or not evaluable
        return None
    exact = sympy.Rational(approx)
    return "rounded" if decimal_agrees(decimal, Fraction(int(exact.p), int(exact.q))) else "none"


def symbolic_equal(gold_raw: str, pred_raw: str, gold_norm: str, pred_norm: str) -> str:
    """Step 4, run inside a worker: 'number', 'rounded', 'math_verify', 'sympy' or 'none'."""
    import sympy
    from latex2sympy2_extended import latex2sympy
    from math_verify import parse, verify

    try:
        gold, pred = parse(_math(gold_raw), parsing_timeout=None), parse(_math(pred_raw), parsing_timeout=None)
    except Exception:  # noqa: BLE001 (any parse failure means "not shown equal this way")
        gold = pred = []
    if gold and pred:
        # A decimal against a real number: the decimal rule decides, either way round.
        for decimal, expr, other in ((pred_norm, gold[0], gold_norm), (gold_norm, pred[0], pred_norm)):
            try:
                if (method := decimal_vs_real(decimal, expr, other)) is not None:
                    return method
            except Exception:  # noqa: BLE001
                pass
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
            if pred != INVALID and hedged(gold, pred):
                verdicts.append(Verdict(False, "multiple"))
                continue
            pred_norm = INVALID if pred == INVALID else normalize_final_answer(pred)
            gold_norm = normalize_final_answer(gold)
            v = quick_verdict(gold_norm, pred_norm)
            verdicts.append(v)
            if v is None:
                jobs.append((i, (gold, pred, gold_norm, pred_norm)))
        if jobs:
            for i, method in self._run(jobs).items():
                verdicts[i] = Verdict(method in ("number", "rounded", "sympy", "math_verify"), method)
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
