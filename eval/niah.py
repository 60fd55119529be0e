"""Needle in a haystack, RULER-style: retrieve "special magic" values hidden at a chosen depth of a long text.

A sample is a haystack (Paul Graham's essays by default, whitespace collapsed, cut into sentences) filled up to a
context length in tokens, with needles "One of the special magic numbers for KEY is: VALUE." inserted between
sentences, and a question whose answer the model completes. Variants (RULER, Hsieh et al. 2024):
- single: one needle, placed at `depth` percent of the haystack;
- multikey: the queried needle at `depth`, plus `n_distractors` needles with other keys at random boundaries;
- multivalue: `n_values` needles with the same key (the first at `depth`), and all values must be returned.
Values are 7-digit numbers or UUIDs. Scoring is exact match on the values found in the completion: the first value
for single/multikey, the set of the first n values for multivalue (partial recall is kept too).

The context length counts the whole prompt plus the tokens allowed for the answer, so a model with
max_seq_len = L can be tested at L. `gate(model, tokenizer, seq_len, n=, seed=)` is the long-context gate used by
training: n single-needle samples at seq_len, depths spread evenly over 0..100%, greedy, accuracy in [0, 1].
"""

from __future__ import annotations

import random
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval import generation
from tools import assets, atomic

VARIANTS = ("single", "multikey", "multivalue")
VALUE_KINDS = ("number", "uuid")
_VALUE_RE = {
    "number": re.compile(r"(?<!\d)\d{7}(?!\d)"),
    "uuid": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
}
_ADJECTIVES = (
    "amber", "brisk", "cobalt", "dusty", "eager", "fuzzy", "gentle", "hollow", "icy", "jolly", "lunar", "misty",
    "noble", "olive", "proud", "quiet", "rapid", "silent", "tidy", "vivid", "woolly", "young", "zesty", "crimson",
)  # fmt: skip
_NOUNS = (
    "falcon", "harbor", "lantern", "meadow", "orchard", "pebble", "quarry", "ribbon", "saddle", "thistle", "violin",
    "walnut", "anchor", "beacon", "canyon", "dolphin", "ember", "fjord", "glacier", "heron", "island", "juniper",
)  # fmt: skip


@dataclass
class NiahConfig:
    haystack: str = ""  # a folder of .txt files or one file; "" = the vendored Paul Graham essays
    context_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096])
    depths: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])  # percent of the haystack
    variants: list[str] = field(default_factory=lambda: ["single", "multikey", "multivalue"])
    value: str = "number"  # number | uuid
    trials: int = 1  # samples per (variant, context length, depth) cell
    n_distractors: int = 3  # multikey: needles with other keys
    n_values: int = 4  # multivalue: values of the queried key
    batch_size: int = 4
    seed: int = 0


@dataclass(frozen=True)
class Sample:
    id: str
    variant: str
    value_kind: str
    context_length: int
    depth: float
    key: str
    answers: tuple[str, ...]
    prompt: list[int]
    max_new_tokens: int


class Haystack:
    """The haystack's sentences and their token counts (counted once, with the leading space they get)."""

    def __init__(self, tokenizer, path: str | Path | None = None):
        path = assets.resolve(str(path)) if path else assets.path("niah/paul_graham_essays")
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"haystack {path}: no text files")
        text = " ".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
        text = re.sub(r"\s+", " ", text)
        text = re.sub(r"([a-z][.!?])([A-Z])", r"\1 \2", text)  # paragraphs glued by the line-joining above
        self.sentences = [s for s in re.split(r"(?<=[.!?]) (?=[A-Z\"'(])", text) if s.strip()]
        if len(self.sentences) < 2:
            raise ValueError(f"haystack {path}: fewer than 2 sentences")
        self.tokenizer = tokenizer
        self.counts = np.array([len(ids) for ids in tokenizer.encode_batch([" " + s for s in self.sentences])])

    def take(self, n_tokens: int, start: int) -> list[str]:
        """Consecutive sentences (wrapping around) from `start` holding at most `n_tokens` tokens."""
        out, total, i = [], 0, start
        while True:
            c = int(self.counts[i % len(self.sentences)])
            if total + c > n_tokens:
                return out
            out.append(self.sentences[i % len(self.sentences)])
            total, i = total + c, i + 1


def _value(kind: str, rng: random.Random) -> str:
    if kind == "number":
        return str(rng.randint(1_000_000, 9_999_999))
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _keys(rng: random.Random, n: int) -> list[str]:
    pairs = rng.sample([f"{a}-{b}" for a in _ADJECTIVES for b in _NOUNS], n)
    return pairs


def needle(kind: str, key: str, value: str) -> str:
    return f"One of the special magic {kind}s for {key} is: {value}."


def _texts(kind: str, key: str, variant: str) -> tuple[str, str]:
    head = (
        f"A long text follows. Hidden in it are special magic {kind}s; remember them, because a question about "
        f"them comes after the text.\n"
    )
    if variant == "multivalue":
        question = (
            f"\n\nQuestion: What are all the special magic {kind}s for {key} mentioned in the text above?\n"
            f"Answer: The special magic {kind}s for {key} mentioned in the text above are"
        )
    else:
        question = (
            f"\n\nQuestion: What is the special magic {kind} for {key} mentioned in the text above?\n"
            f"Answer: The special magic {kind} for {key} mentioned in the text above is"
        )
    return head, question


def answer_budget(kind: str, variant: str, n_values: int) -> int:
    """Tokens allowed for the answer: a value is ~3 tokens (number) or ~25 (UUID), plus separators."""
    per = 6 if kind == "number" else 30
    return per * (n_values if variant == "multivalue" else 1) + 4


def make_sample(
    hay: Haystack,
    *,
    variant: str,
    kind: str,
    context_length: int,
    depth: float,
    rng: random.Random,
    n_distractors: int = 3,
    n_values: int = 4,
    sample_id: str = "",
) -> Sample:
    if variant not in VARIANTS:
        raise ValueError(f"unknown NIAH variant '{variant}' (known: {', '.join(VARIANTS)})")
    if kind not in VALUE_KINDS:
        raise ValueError(f"unknown NIAH value kind '{kind}' (known: {', '.join(VALUE_KINDS)})")
    if not 0.0 <= depth <= 100.0:
        raise ValueError(f"NIAH depth must be a percent in [0, 100], got {depth}")
    tok = hay.tokenizer
    keys = _keys(rng, 1 + (n_distractors if variant == "multikey" else 0))
    key = keys[0]
    count = n_values if variant == "multivalue" else 1
    values = []
    while len(values) < count:  # distinct values
        v = _value(kind, rng)
        if v not in values:
            values.append(v)
    # (key, value) needles: the queried one first (it goes at `depth`), then extra values or distractors.
    needles = [(key, values[0])] + [(key, v) for v in values[1:]] + [(k, _value(kind, rng)) for k in keys[1:]]
    head, question = _texts(kind, key, variant)
    max_new = answer_budget(kind, variant, n_values)
    fixed = len(tok.encode(head + question, bos=True)) + sum(len(tok.encode(" " + needle(kind, *n))) for n in needles)
    budget = context_length - max_new - fixed
    if budget < 16:
        raise ValueError(f"context length {context_length} is too short for a {variant} NIAH prompt ({fixed} tokens)")
    start = rng.randrange(len(hay.sentences))
    while True:
        sentences = hay.take(budget, start)
        cum = np.concatenate([[0], np.cumsum(hay.counts[(start + np.arange(len(sentences))) % len(hay.sentences)])])
        # The queried needle goes at the sentence boundary nearest to depth% of the haystack's tokens.
        slots = [int(np.abs(cum - depth / 100.0 * cum[-1]).argmin())]
        slots += [rng.randint(0, len(sentences)) for _ in needles[1:]]
        parts = list(sentences)
        for (k, v), slot in sorted(zip(needles, slots), key=lambda x: -x[1]):  # from the back: indices stay valid
            parts.insert(slot, needle(kind, k, v))
        prompt = tok.encode(head + "".join(" " + p for p in parts) + question, bos=True)
        if len(prompt) + max_new <= context_length:
            break
        budget -= len(prompt) + max_new - context_length  # sentences joined count a few tokens differently
    return Sample(sample_id, variant, kind, context_length, float(depth), key, tuple(values), prompt, max_new)


def samples(cfg: NiahConfig, tokenizer, hay: Haystack | None = None) -> list[Sample]:
    """The grid: variants x context lengths x depths x trials, deterministic given cfg.seed."""
    hay = hay or Haystack(tokenizer, cfg.haystack or None)
    out = []
    for variant in cfg.variants:
        for length in cfg.context_lengths:
            for depth in cfg.depths:
                for t in range(cfg.trials):
                    sid = f"niah/{variant}/{cfg.value}/{length}/{depth:g}/{t}"
                    rng = random.Random(f"{cfg.seed}/{sid}")
                    out.append(
                        make_sample(
                            hay,
                            variant=variant,
                            kind=cfg.value,
                            context_length=length,
                            depth=depth,
                            rng=rng,
                            n_distractors=cfg.n_distractors,
                            n_values=cfg.n_values,
                            sample_id=sid,
                        )
                    )
    return out


def score(sample: Sample, output: str) -> dict:
    """Exact match of the values in `output`: first value (single, multikey) or first n as a set (multivalue)."""
    found = _VALUE_RE[sample.value_kind].findall(output)
    want = list(sample.answers)
    if sample.variant == "multivalue":
        got = found[: len(want)]
        correct = sorted(got) == sorted(want)
        recall = len(set(got) & set(want)) / len(want)
    else:
        got = found[:1]
        correct = recall = float(got == want)
    return {"extracted": got, "correct": float(correct), "recall": float(recall)}


def record(sample: Sample, output: str) -> dict:
    return {
        "id": sample.id,
        "variant": sample.variant,
        "value_kind": sample.value_kind,
        "context_length": sample.context_length,
        "depth": sample.depth,
        "prompt_tokens": len(sample.prompt),
        "answers": list(sample.answers),
        "output": output,
        **score(sample, output),
    }


def run(model, tokenizer, items: list[Sample], *, batch_size: int = 4, on_batch=None, progress=True) -> list[dict]:
    """Generate greedily for every sample and score it; `model` is a model or a generate-like callable."""
    stream = generation.as_stream(model)
    records: list[dict | None] = [None] * len(items)
    # One generate_texts call per answer budget (variants differ), so every batch shares max_new_tokens.
    by_budget: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(items):
        by_budget[s.max_new_tokens].append(i)
    for max_new, idx in sorted(by_budget.items()):

        def done(batch_idx, texts, idx=idx):
            recs = [record(items[idx[j]], t) for j, t in zip(batch_idx, texts)]
            for j, r in zip(batch_idx, recs):
                records[idx[j]] = r
            if on_batch is not None:
                on_batch(recs)

        generation.generate_texts(
            stream,
            tokenizer,
            [items[i].prompt for i in idx],
            max_new_tokens=max_new,
            stop_strings=("\n",),
            batch_size=batch_size,
            on_batch=done,
            desc="niah",
            progress=progress,
        )
    return records  # type: ignore[return-value]


def grid(records: list[dict]) -> dict:
    """{variant: {"context_lengths", "depths", "accuracy": [[depth x length]]}} (NaN where a cell is empty)."""
    out = {}
    for variant in sorted({r["variant"] for r in records}):
        rs = [r for r in records if r["variant"] == variant]
        lengths, depths = sorted({r["context_length"] for r in rs}), sorted({r["depth"] for r in rs})
        acc = np.full((len(depths), len(lengths)), np.nan)
        for i, d in enumerate(depths):
            for j, n in enumerate(lengths):
                cell = [r["correct"] for r in rs if r["depth"] == d and r["context_length"] == n]
                if cell:
                    acc[i, j] = float(np.mean(cell))
        out[variant] = {"context_lengths": lengths, "depths": depths, "accuracy": acc.tolist()}
    return out


def summarize(records: list[dict]) -> dict:
    from eval import stats

    by_variant = {
        v: stats.accuracy([r["correct"] for r in records if r["variant"] == v])
        for v in sorted({r["variant"] for r in records})
    }
    return {
        "accuracy": stats.accuracy([r["correct"] for r in records]),
        "by_variant": by_variant,
        "grid": grid(records),
    }


def heatmap(records: list[dict], path: str | Path, title: str = "Needle in a haystack") -> Path:
    """One panel per variant: depth (rows) x context length (columns), colour = exact-match accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = grid(records)
    fig, axes = plt.subplots(1, len(g), figsize=(4.5 * len(g), 4), squeeze=False)
    for ax, (variant, cell) in zip(axes[0], g.items()):
        acc = np.array(cell["accuracy"], dtype=float)
        im = ax.imshow(acc, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(cell["context_lengths"])), [str(n) for n in cell["context_lengths"]])
        ax.set_yticks(range(len(cell["depths"])), [f"{d:g}%" for d in cell["depths"]])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title(variant)
        for (i, j), v in np.ndenumerate(acc):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), label="accuracy")
    fig.suptitle(title)
    path = Path(path)
    with atomic.replacing(path, ".png") as tmp:  # a reader never sees half a PNG
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def gate(model, tokenizer, seq_len: int, *, n: int, seed: int, batch_size: int = 1, haystack: str = "") -> float:
    """Long-context gate: accuracy of n single-needle (7-digit number) retrievals at context length seq_len,
    needle depths evenly spread over 0..100%. `model` is a Transformer (greedy KV-cache decoding) or a
    generate-like callable."""
    if n < 1:
        raise ValueError(f"gate needs n >= 1 samples, got {n}")
    hay = Haystack(tokenizer, haystack or None)
    depths = [50.0] if n == 1 else list(np.linspace(0.0, 100.0, n))
    items = [
        make_sample(
            hay,
            variant="single",
            kind="number",
            context_length=seq_len,
            depth=float(d),
            rng=random.Random(f"gate/{seed}/{seq_len}/{i}"),
            sample_id=f"gate/{seq_len}/{i}",
        )
        for i, d in enumerate(depths)
    ]
    records = run(model, tokenizer, items, batch_size=batch_size, progress=False)
    return float(np.mean([r["correct"] for r in records]))
