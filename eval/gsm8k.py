"""GSM8K: 8-shot chain-of-thought prompt (Wei et al. 2022 exemplars), answer extraction and grading; and the
0-shot chain-of-thought chat prompt for post-trained models.

Prompt and grading follow lm-evaluation-harness `gsm8k-cot.yaml`, the setup Meta reports for base models:
"Q: <question>\\nA: <chain of thought> The answer is N." shots joined by blank lines, greedy decoding, generation
cut at "Q:". Two extractions:
- strict: the first match of `The answer is (\\-?[0-9\\.\\,]+).` (the answer in the exemplars' format);
- flexible: the last number in the output, `(-?[$0-9.,]{2,})|(-?[0-9]+)`.
Both are compared with the gold number by exact match after lower-casing and deleting ",", "$", a leading
"... #### " and one trailing "." (the harness's `regexes_to_ignore`).

Chat format (`chat_messages`, as Llama 3's instruct models are evaluated: 0-shot CoT): one user turn with the
question and an instruction to reason step by step and end with "The answer is N.", the sentence the strict
extraction reads; generation ends at <|eot_id|>, and the same graders score the reply.

A model's output is untrusted input: extraction and clean-up are linear in its length. The harness's
`(?s).*#### ` retries its greedy `.*` from every position (quadratic on a long run of digits), so the same
deletion is done with one rfind; the flexible regex tries two alternatives at every character (about a second
for 5 MB), so its last match is found from the end instead (`extract_flexible`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.dataset import DatasetConfig, DatasetError, load_rows
from eval.generation import cut

VENDORED = {"test": "gsm8k/test.jsonl.gz", "train": "gsm8k/train.jsonl.gz"}  # third_party/data

# Wei et al. (2022), "Chain-of-Thought Prompting Elicits Reasoning in Large Language Models", the eight
# math word problem exemplars (their Table 20), as (question, chain of thought ending "The answer is N.").
EXEMPLARS: list[tuple[str, str]] = [
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
        "there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. "
        "So there must have been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. "
        "After eating 35, they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. "
        "How many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. "
        "So he gave Denny 20 - 12 = 8. The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. "
        "How many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
        "5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from monday "
        "to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. "
        "So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. "
        "How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
        "After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. "
        "So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.",
    ),
]

STOP_STRINGS = ("Q:",)  # generation is cut where the model starts the next question
CHAT_INSTRUCTION = (
    'Solve this step by step. Then end your reply with the sentence "The answer is N." where N is the final '
    "number alone, without units."
)
INVALID = "[invalid]"
STRICT_RE = re.compile(r"The answer is (\-?[0-9\.\,]+).")
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# Where FLEXIBLE_RE can match: a digit, or two of [$0-9.,] in a row (the same read backwards; charset first: fast).
_HIT = re.compile(r"[$.,0-9](?:(?<=[0-9])|[$.,0-9])")
_SEGMENT = re.compile(r"[$0-9.,]*")
_MARK = "#### "  # the harness deletes everything up to and including the last one: `(?s).*#### `
_CALCULATOR = re.compile(r"<<[^>]*>>")


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    solution: str  # the dataset's worked answer, ending "#### N"
    answer: str  # N


def load(source: DatasetConfig | str | Path | None = None, split: str = "test") -> list[Item]:
    """GSM8K items (`question`, and `answer` ending "#### N") from a DatasetConfig, a local file or folder, or by
    default the vendored copy of `split`."""
    cfg = source if isinstance(source, DatasetConfig) else DatasetConfig(path=str(source or ""), split=split)
    rows, where, split = load_rows(cfg, VENDORED, ("question", "answer"))
    items = []
    for i, row in enumerate(rows):
        solution = row["answer"]
        if "####" not in solution:
            raise DatasetError(f"{where}: record {i + 1} field 'answer' has no '#### <answer>'")
        answer = solution.split("####")[-1].strip()
        items.append(Item(f"gsm8k/{split}/{i}", row["question"], solution, answer))
    return items


def prompt(question: str, n_shot: int = 8) -> str:
    """The harness's 8-shot CoT prompt: shots "Q: ...\\nA: ..." joined by blank lines, then the open question."""
    shots = [f"Q: {q}\nA: {a}" for q, a in EXEMPLARS[:n_shot]]
    return "\n\n".join([*shots, f"Q: {question}\nA:"])


def chat_messages(question: str) -> list[dict]:
    """The 0-shot chain-of-thought chat prompt: the question and the instruction in one user turn."""
    return [{"role": "user", "content": f"{question}\n\n{CHAT_INSTRUCTION}"}]


def extract_strict(output: str) -> str:
    m = STRICT_RE.search(output)
    return m.group(1).strip() if m else INVALID


def extract_flexible(output: str) -> str:
    """The harness's last match of FLEXIBLE_RE, found from the end in one pass.

    Its matches are whole segments of [$0-9.,] (alternative 1 is greedy and alternative 2 only takes a single
    digit), each with the "-" just before it: every segment of two or more characters, or of one digit, is
    matched. So the last match is the last such segment: the first _HIT in the reversed text lies in it."""
    n, rev = len(output), output[::-1]
    hit = _HIT.search(rev)
    if hit is None:
        return INVALID
    lo = n - _SEGMENT.match(rev, hit.start()).end()
    hi = _SEGMENT.match(output, n - 1 - hit.start()).end()
    return ("-" if output[lo - 1 : lo] == "-" else "") + output[lo:hi]


def _clean(s: str) -> str:
    """The harness's `regexes_to_ignore` in its order: ",", "$", "(?s).*#### ", "\\.$"; then lower-case."""
    s = s.replace(",", "").replace("$", "")
    s = s[s.rfind(_MARK) + len(_MARK) :] if _MARK in s else s
    s = re.sub(r"\.$", "", s)  # `$` also matches before a final newline, as in the harness
    return s.lower().strip()


def is_correct(extracted: str, answer: str) -> bool:
    return extracted != INVALID and _clean(extracted) == _clean(answer)


def grade(output: str, answer: str, stop_strings: Sequence[str] = STOP_STRINGS) -> dict:
    """Both extractions of one model output and whether each matches the gold answer. The output is cut at
    `stop_strings` first (the few-shot prompt's "Q:"; a chat reply ends at <|eot_id|>: pass ())."""
    output = cut(output, stop_strings)
    strict, flexible = extract_strict(output), extract_flexible(output)
    return {
        "strict": strict,
        "flexible": flexible,
        "strict_match": float(is_correct(strict, answer)),
        "flexible_match": float(is_correct(flexible, answer)),
    }


def gold_as_output(item: Item) -> str:
    """The dataset's solution rewritten as a model would answer in the prompt's format (for grader checks):
    calculator annotations <<...>> dropped, lines joined, and "#### N" turned into "The answer is N."."""
    body, _, final = item.solution.rpartition("####")
    steps = " ".join(line.strip() for line in _CALCULATOR.sub("", body).splitlines() if line.strip())
    return f" {steps} The answer is {final.strip()}.\n\n"
