"""MATH (Hendrycks et al. 2021): 4-shot Minerva prompt, answer extraction and Minerva answer normalisation; and
the 0-shot chain-of-thought chat prompt for post-trained models (`chat_messages`: the problem and an instruction
to reason step by step and end with the answer in \\boxed{}, which the extraction reads).

Prompt (Lewkowycz et al. 2022, "Minerva"): "Problem:\\n<problem>\\n\\nSolution: <solution>" shots joined by blank
lines; each exemplar ends "Final Answer: The final answer is X. I hope it is correct.". The answer is the text of
that sentence, or, when the model never writes it, the last \\boxed{...} (that is also how a dataset solution
states its answer). Both the prediction and the gold answer are normalised with `normalize_final_answer`
(Minerva appendix D) and then compared by `eval.equivalence` (string, number, sympy, Math-Verify).

Deviations from appendix D, each because the original corrupts LaTeX commands (both sides the same way, so
exact matches survive, but sympy can then no longer read the answer): unit words and "a "/"an " are removed only
outside command names (the original turns "\\left" into "\\le" and "\\tan x" into "\\tx"); the \\sqrt shorthand
rule leaves "\\sqrt[3]{x}" alone; commas are dropped only from real thousands groups ("1,000" -> "1000", but the
pair "0,1" stays), where the original also merged "1,2" into "12".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.dataset import DatasetConfig, DatasetError, load_rows

# The vendored copies (third_party/data) of each subset, by split.
VENDORED = {
    "math500": {"test": "math/math500_test.jsonl.gz"},
    "math": {"test": "math/math_test.jsonl.gz", "train": "math/math_train.jsonl.gz"},
}

# The four Minerva prompt problems (Lewkowycz et al. 2022, appendix), as (problem, solution).
EXEMPLARS: list[tuple[str, str]] = [
    (
        r"Find the domain of the expression  $\frac{\sqrt{x-2}}{\sqrt{5-x}}$.",
        r"The expressions inside each square root must be non-negative. Therefore, $x-2 \ge 0$, so $x\ge2$, and "
        r"$5 - x \ge 0$, so $x \le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives "
        r"$x<5$. Therefore, the domain of the expression is $\boxed{[2,5)}$."
        "\nFinal Answer: The final answer is $[2,5)$. I hope it is correct.",
    ),
    (
        r"If $\det \mathbf{A} = 2$ and $\det \mathbf{B} = 12,$ then find $\det (\mathbf{A} \mathbf{B}).$",
        r"We have that $\det (\mathbf{A} \mathbf{B}) = (\det \mathbf{A})(\det \mathbf{B}) = (2)(12) = \boxed{24}.$"
        "\nFinal Answer: The final answer is $24$. I hope it is correct.",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many "
        "times must Terrell lift them in order to lift the same total weight?",
        r"If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\cdot 12\cdot20=480$ pounds of "
        r"weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of "
        r"$2\cdot15\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:"
        "\n\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}"
        "\nFinal Answer: The final answer is $16$. I hope it is correct.",
    ),
    (
        "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a solution "
        "$(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
        r"If we multiply the first equation by $-\frac{3}{2}$, we obtain"
        "\n\n$$6y-9x=-\\frac{3}{2}a.$$"
        r"Since we also know that $6y-9x=b$, we have"
        "\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$"
        "\nFinal Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.",
    ),
]

STOP_STRINGS = ("Problem:",)
CHAT_INSTRUCTION = (
    "Solve this step by step. Then end your reply with the sentence "
    '"The final answer is $\\boxed{X}$." where X is the final answer alone, simplified, in LaTeX.'
)
INVALID = "[invalidanswer]"
_END = "I hope it is correct."
_FINAL = "Final Answer: The final answer is"
_HOPE = " I hope it is correct"

# Appendix D's tables.
SUBSTITUTIONS = [
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
]
UNIT_WORDS = [
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "sue", "points",
    "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges", "students",
    "childrentickets", "multiples",
]  # fmt: skip
REMOVED_EXPRESSIONS = [
    "\\ldots", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
    r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots",
]  # fmt: skip
_COMMAND = re.compile(r"(\\[a-zA-Z]+)")
_ARTICLE = re.compile(r"(?<![A-Za-z\\])an? ")
_THOUSANDS = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d+)?")
_CHUNK = 1 << 16  # characters per numpy pass of the brace matcher


@dataclass(frozen=True)
class Item:
    id: str
    problem: str
    solution: str
    answer: str  # the gold final answer (MATH-500's `answer`, else the solution's last \boxed{})
    subject: str
    level: str


def load(source: DatasetConfig | str | Path | None = None, subset: str = "math500") -> list[Item]:
    """MATH items from a DatasetConfig, a local file or folder, or by default the vendored copy of `subset`:
    "math500" (PRM800K's 500 test problems) or "math" (the full split: test 5,000, train 7,500). Records are
    MATH-500's (problem, solution, answer, subject, level) or MATH's (problem, solution, type, level)."""
    if subset not in VENDORED:
        raise ValueError(f"unknown MATH subset '{subset}' (known: {', '.join(VENDORED)})")
    cfg = source if isinstance(source, DatasetConfig) else DatasetConfig(path=str(source or ""))
    rows, where, split = load_rows(cfg, VENDORED[subset], ("problem", "solution"))
    items = []
    for i, row in enumerate(rows):
        problem, solution = row["problem"], row["solution"]
        answer = row.get("answer") or last_boxed(solution)
        if answer is None:
            raise DatasetError(f"{where}: record {i + 1} has no field 'answer' and no \\boxed{{}} in its solution")
        level = row.get("level")
        level = f"Level {level}" if isinstance(level, int) else str(level)
        subject = row.get("subject") or row.get("type") or "unknown"
        items.append(Item(row.get("unique_id") or f"{subset}/{split}/{i}", problem, solution, answer, subject, level))
    return items


def prompt(problem: str, n_shot: int = 4) -> str:
    shots = [f"Problem:\n{p}\n\nSolution: {s}" for p, s in EXEMPLARS[:n_shot]]
    return "\n\n".join([*shots, f"Problem:\n{problem}\n\nSolution:"])


def chat_messages(problem: str) -> list[dict]:
    """The 0-shot chain-of-thought chat prompt: the problem and the instruction in one user turn."""
    return [{"role": "user", "content": f"{problem}\n\n{CHAT_INSTRUCTION}"}]


def _closing_brace(text: str, start: int) -> int:
    """Index of the "}" that closes the "{" at `start`, -1 if none: the first zero of the running brace depth,
    computed with numpy chunk by chunk (linear at C speed however the braces nest; a Python loop over 5 MB of
    braces takes seconds)."""
    depth = 0
    for lo in range(start, len(text), _CHUNK):
        codes = np.frombuffer(text[lo : lo + _CHUNK].encode("utf-32-le"), dtype=np.uint32)
        running = depth + np.cumsum((codes == ord("{")).astype(np.int64) - (codes == ord("}")))
        zeros = np.flatnonzero(running == 0)
        if zeros.size:
            return lo + int(zeros[0])
        depth = int(running[-1])
    return -1


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}, or "\\boxed x"), braces matched; None if absent.
    Linear in the length of the text."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    start = idx + (len("\\boxed") if text.startswith("\\boxed", idx) else len("\\fbox"))
    if text.startswith(" ", start):  # "\boxed 5$": up to the end of the math span
        return text[start + 1 :].partition("$")[0].strip()
    if not text.startswith("{", start):
        return None
    end = _closing_brace(text, start)
    return text[start + 1 : end] if end >= 0 else None  # None: unbalanced


def final_answer(output: str) -> str | None:
    """X of the first "Final Answer: The final answer is X. I hope it is correct." (None if absent).

    The same match as Minerva's regex `Final Answer: The final answer is(.*?). I hope it is correct.` on
    `output + " I hope it is correct."` (the appended end lets a sentence cut off by the token limit match), found
    in one pass: the regex retries its lazy group from every "Final Answer" to the end of its line, quadratic in
    the length of a line that repeats the phrase. Its `.` never matches a newline, so a match lies within one line,
    and only the first "Final Answer" of a line can match (any later one would end at the same place or fail).
    """
    text = output + " " + _END
    pos = 0
    while (p := text.find(_FINAL, pos)) >= 0:
        i = p + len(_FINAL)
        eol = text.find("\n", i)
        eol = len(text) if eol < 0 else eol
        # The lazy group then one character, then " I hope it is correct", then one more character, all before eol.
        j = text.find(_HOPE, i + 1, eol - 1)
        if j >= 0:
            return text[i : j - 1]
        pos = eol
    return None


def extract_answer(output: str) -> str:
    """Minerva's "Final Answer: The final answer is X. I hope it is correct." X, else the last \\boxed{}.
    Linear in the length of the output (a model's output is untrusted input)."""
    final = final_answer(output)
    if final is not None:
        return final.strip()
    boxed = last_boxed(output)
    return boxed.strip() if boxed is not None else INVALID


def _outside_commands(s: str, fn) -> str:
    """Apply fn to the text between LaTeX command names only (even-indexed parts of the split)."""
    parts = _COMMAND.split(s)
    return "".join(fn(p) if i % 2 == 0 else p for i, p in enumerate(parts))


def normalize_final_answer(answer: str) -> str:
    """Minerva appendix D normalisation (with the deviations in the module docstring)."""
    s = answer.split("=")[-1]
    s = _outside_commands(s, lambda p: _ARTICLE.sub("", p))
    for word in UNIT_WORDS:  # while spaces still delimit them
        s = _outside_commands(s, lambda p, w=word: re.sub(rf"\b{w}\b", "", p))
    for before, after in SUBSTITUTIONS:
        s = s.replace(before, after)
    for word in UNIT_WORDS:  # glued to a number once spaces are gone ("5cm")
        s = _outside_commands(s, lambda p, w=word: p.replace(w, ""))
    for expr in REMOVED_EXPRESSIONS:
        s = s.replace(expr, "")
    # Keep what is inside math delimiters, \text{}, \textbf{}, \overline{}, \boxed{}.
    s = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", s)
    s = re.sub(r"(\\text\{)(.*?)(\})", "\\2", s)
    s = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", s)
    s = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", s)
    s = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", s)
    # Shorthand TeX: \fracab -> \frac{a}{b}, \sqrta -> \sqrt{a} (\sqrt[n]{x} untouched).
    s = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", s)
    s = re.sub(r"(sqrt)([^{\[])", "sqrt{\\2}", s)
    s = s.replace("$", "")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s


def gold_as_output(item: Item) -> str:
    """The dataset solution followed by Minerva's closing sentence with its \\boxed answer (for grader checks)."""
    boxed = last_boxed(item.solution)
    return f" {item.solution}\nFinal Answer: The final answer is ${boxed}$. {_END}\n\n"
