"""A chat task a tiny model can learn on a CPU and a program can check: short arithmetic problems in dialogs.

Each problem is a plain sum or difference of small numbers ("What is 7 + 5?") or a short word problem over the
same facts ("Maya has 7 apples and gets 5 more. How many apples does Maya have now?"). The reference answer
is a short worked solution in the style of the pre-training corpus's solutions (data/synthetic_text.py), ending
in a checkable final number: "7 + 5 = 12. The answer is 12."

    train, held_out = problems(ChatTaskConfig())   # disjoint by question text (asserted)
    sft_dialogs(train)                             # the annotated dialogs of SFT (paper section 4.2.2's analogue)
    preferences(train, rng)                        # chosen (correct) vs rejected responses, with strengths
    is_correct(problem, response)                  # the verifier: the final number equals the answer

The rejected responses of the preference pairs have graded faults, which set the annotator's strength
(data.dialogs.STRENGTHS): no final answer or an off-task reply ("significantly_better"), a wrong final number
("better"), and a correct but unworked answer ("slightly_better" / "marginally_better", which the reward model's
strength filter leaves out). `write` stores everything as JSONL records that data.dialogs.read_* read back.

`plant_faults` writes the annotated dialogs as a raw file for SFT curation (data/posttrain/sft_curation.py), with
faults of known kinds mixed in: malformed lines of every kind the reader counts, apologetic replies, and replies
spammed with emojis and exclamation marks. `plant_preference_faults` does the same for the preference pairs, with
malformed records that data.dialogs.read_preferences(on_error="skip") counts and drops.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from data.dialogs import STRENGTHS, Dialog, Preference, write_jsonl
from data.synthetic_text import ITEMS, NAMES
from tools import atomic

ANSWER = re.compile(r"[Tt]he answer is (-?\d+)")
SOURCE = "synthetic_chat"


@dataclass
class ChatTaskConfig:
    seed: int = 0
    train: int = 600  # problems
    held_out: int = 64  # problems never trained on (their questions differ from every training question)
    max_operand: int = 9  # operands of the facts: 0..max_operand (differences stay >= 0)
    word_share: float = 0.5  # share of word problems (the rest are plain "What is a + b?")


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int
    solution: str  # the worked reference answer, ending in "The answer is <answer>."
    kind: str  # add | sub | word_add | word_sub


def make_problem(rng: random.Random, cfg: ChatTaskConfig) -> Problem:
    a, b = rng.randint(0, cfg.max_operand), rng.randint(0, cfg.max_operand)
    sub = rng.random() < 0.5
    if sub:
        a, b = max(a, b), min(a, b)
    op, c = ("-", a - b) if sub else ("+", a + b)
    work = f"{a} {op} {b} = {c}. The answer is {c}."
    if rng.random() >= cfg.word_share:
        return Problem(f"What is {a} {op} {b}?", c, work, "sub" if sub else "add")
    name, (plural, _) = rng.choice(NAMES), rng.choice(ITEMS)
    if sub:
        q = f"{name} has {a} {plural} and gives away {b}. How many {plural} are left?"
        s = f"Giving away {b} of {a} leaves {work}"
    else:
        q = f"{name} has {a} {plural} and gets {b} more. How many {plural} does {name} have now?"
        s = f"{name} starts with {a} and gets {b} more, so {work}"
    return Problem(q, c, s, "word_sub" if sub else "word_add")


def problems(cfg: ChatTaskConfig) -> tuple[list[Problem], list[Problem]]:
    """(train, held_out): distinct questions drawn with the seed; the held-out questions appear nowhere in
    train. The facts (a op b) recur across questions, so a held-out question is new wording over known facts
    (and, for plain sums, possibly a fact never trained on)."""
    rng = random.Random(cfg.seed)
    want, seen, out = cfg.train + cfg.held_out, set(), []
    for _ in range(100 * want):
        p = make_problem(rng, cfg)
        if p.question not in seen:
            seen.add(p.question)
            out.append(p)
        if len(out) == want:
            break
    else:
        raise ValueError(f"only {len(out)} distinct problems for {want} wanted; raise max_operand")
    held_out, train = out[: cfg.held_out], out[cfg.held_out :]
    assert not {p.question for p in train} & {p.question for p in held_out}, "train and held-out questions overlap"
    return train, held_out


def prompt(p: Problem) -> list[dict]:
    return [{"role": "user", "content": p.question}]


def final_answer(response: str) -> int | None:
    """The last "The answer is N" of a response, or None."""
    found = ANSWER.findall(response)
    return int(found[-1]) if found else None


def is_correct(problem: Problem, response: str) -> bool:
    return final_answer(response) == problem.answer


def sft_dialogs(ps: list[Problem]) -> list[Dialog]:
    return [Dialog([*prompt(p), {"role": "assistant", "content": p.solution}], SOURCE) for p in ps]


def rejected(p: Problem, rng: random.Random) -> tuple[str, str]:
    """A faulty response to `p` and the strength by which the reference answer beats it."""
    wrong = p.answer + rng.choice([-3, -2, -1, 1, 2, 3])
    fault = rng.randrange(5)
    if fault == 0:  # off-task, no final number
        return rng.choice(["I am not sure.", "Let me think about it.", "That is a good question."]), STRENGTHS[0]
    if fault == 1:  # the work, stopped before the answer
        return p.solution.rsplit(" The answer is", 1)[0], STRENGTHS[0]
    if fault == 2:  # a wrong final number after the right work
        return p.solution.rsplit("The answer is", 1)[0] + f"The answer is {wrong}.", STRENGTHS[1]
    if fault == 3:  # a wrong result throughout
        return p.solution.replace(str(p.answer), str(wrong)), STRENGTHS[1]
    return f"The answer is {p.answer}.", rng.choice(STRENGTHS[2:])  # right, but unworked


def preferences(ps: list[Problem], rng: random.Random, round: int = 0) -> list[Preference]:
    out = []
    for p in ps:
        text, strength = rejected(p, rng)
        out.append(Preference(prompt(p), p.solution, text, strength=strength, round=round))
    return out


def write(cfg: ChatTaskConfig, out: str | Path) -> dict[str, Path]:
    """problems_{train,held_out}.jsonl, sft.jsonl (train), preferences_{train,held_out}.jsonl under `out`."""
    out = Path(out)
    train, held_out = problems(cfg)
    rng = random.Random(cfg.seed + 1)
    files = {
        "problems_train": write_jsonl(out / "problems_train.jsonl", [asdict(p) for p in train]),
        "problems_held_out": write_jsonl(out / "problems_held_out.jsonl", [asdict(p) for p in held_out]),
        "sft": write_jsonl(out / "sft.jsonl", sft_dialogs(train)),
        "preferences_train": write_jsonl(out / "preferences_train.jsonl", preferences(train, rng)),
        "preferences_held_out": write_jsonl(out / "preferences_held_out.jsonl", preferences(held_out, rng)),
    }
    return files


# Malformed lines, each dropped by SFT curation's `read` step with the reason of its key.
MALFORMED = {
    "missing field": b'{"source": "planted"}',
    "unknown role": b'{"messages": [{"role": "robot", "content": "What is 1 + 1?"}]}',
    "wrong role order": b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi"}, '
    b'{"role": "assistant", "content": "Hello."}]}',
    "empty content": b'{"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "2"}]}',
    "not UTF-8": b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # a Latin-1 byte
    "not JSON": b'{"messages": [',
}
EMOJI_SPAM = " \U0001f600\U0001f389\U0001f525\U0001f4af Great!!!!"


def plant_faults(
    dialogs: list[Dialog], out: str | Path, seed: int, apologetic: int = 20, spammed: int = 10, long_line: int = 0
) -> tuple[Path, dict[str, int]]:
    """`dialogs` plus planted faults at seeded positions, as one raw JSONL file; and the count of each fault.
    Two lines of each MALFORMED kind; `apologetic` dialogs answering a dialog's question with an apology;
    `spammed` copies of dialogs whose reply ends in emojis and "!!!!"; one line of `long_line` bytes (0: none)."""
    rng = random.Random(seed)
    lines = [json.dumps(asdict(d)).encode() for d in dialogs]
    planted: list[bytes] = [bad for bad in MALFORMED.values() for _ in range(2)]
    for d in rng.sample(dialogs, apologetic):
        reply = "I'm sorry, but I can't help with that."
        planted.append(json.dumps(asdict(Dialog([d.messages[0], {"role": "assistant", "content": reply}]))).encode())
    for d in rng.sample(dialogs, spammed):
        spam = {"role": "assistant", "content": d.messages[-1]["content"] + EMOJI_SPAM}
        planted.append(json.dumps(asdict(Dialog([*d.messages[:-1], spam], source=SOURCE)), ensure_ascii=False).encode())
    if long_line:
        planted.append(json.dumps({"messages": [{"role": "user", "content": "x" * long_line}]}).encode())
    counts = {
        **{k: 2 for k in MALFORMED},
        "apologetic": apologetic,
        "emoji spam": spammed,
        "line too long": int(bool(long_line)),
    }
    return _write_mixed(lines, planted, rng, out), counts


# Malformed preference records, each dropped by data.dialogs.read_preferences(on_error="skip") with its key's reason.
BAD_PREFERENCES = {
    "missing field": b'{"prompt": [{"role": "user", "content": "What is 1 + 1?"}], "chosen": "2", '
    b'"strength": "better"}',
    "unknown strength": b'{"prompt": [{"role": "user", "content": "What is 1 + 1?"}], "chosen": "1 + 1 = 2. The '
    b'answer is 2.", "rejected": "3", "strength": "much_better"}',
    "empty response": b'{"prompt": [{"role": "user", "content": "What is 1 + 1?"}], "chosen": "", "rejected": "3", '
    b'"strength": "better"}',
    "bad last role": b'{"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hi"}], '
    b'"chosen": "2", "rejected": "3", "strength": "better"}',
    "not UTF-8": b'{"prompt": [{"role": "user", "content": "caf\xe9"}], "chosen": "a", "rejected": "b", "strength": '
    b'"better"}',
    "not JSON": b'{"prompt": ',
}


def plant_preference_faults(prefs: list[Preference], out: str | Path, seed: int) -> tuple[Path, dict[str, int]]:
    """`prefs` plus two lines of each BAD_PREFERENCES kind at seeded positions, as one raw JSONL file; and the
    count of each fault."""
    lines = [json.dumps(asdict(p)).encode() for p in prefs]
    planted = [bad for bad in BAD_PREFERENCES.values() for _ in range(2)]
    return _write_mixed(lines, planted, random.Random(seed), out), {k: 2 for k in BAD_PREFERENCES}


def _write_mixed(lines: list[bytes], planted: list[bytes], rng: random.Random, out: str | Path) -> Path:
    """`lines` with each planted line inserted at a seeded position, written as one JSONL file."""
    for line in planted:
        lines.insert(rng.randrange(len(lines) + 1), line)
    return atomic.write_bytes(Path(out), b"\n".join(lines) + b"\n")


def read_problems(path: str | Path) -> list[Problem]:
    return [Problem(**json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]
