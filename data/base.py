"""Steps: small classes with one job each, composed into a pipeline (datatrove-style).

- `Step.process(docs, task)` turns a stream of documents into another. `Step.__call__` wraps it to count
  documents and characters in and out; a step removes a document only through `task.drop(doc, step, reason)`,
  which writes a `dropped because <reason>` record, so for every step
      documents in = documents out + sum of documents dropped by reason
  and a step that loses documents silently fails that check (`check_funnel`).
- `Filter` steps decide per document (`keep(doc) -> None | reason | (reason, detail)`), optionally only for some
  languages or categories (the rest pass untouched).
- `GlobalStep`s need the whole dataset before deciding (URL dedup, MinHash, line counts, KL percentiles, mix):
  each task `collect`s compact hashes of its documents to disk, one `resolve` reads them all and writes
  per-shard decisions, and `process` then applies those decisions shard by shard.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

from data.document import Document


@dataclass(frozen=True)
class InputShard:
    path: str  # absolute path of a file (or a Hugging Face dataset directory)
    name: str  # its name relative to the inputs' common folder (document ids are built from it)
    part: int = 0  # records part::parts of the file belong to this shard
    parts: int = 1


@dataclass
class Env:
    """What every step may need besides its own config; pickled to worker processes."""

    output: Path
    work: Path
    tasks: list[list[InputShard]]  # the input shards of each task
    cfg: Any  # the whole pipeline config
    tokenizer: Any = None  # an object with the model.tokenizer.Tokenizer API, when given in Python
    extra: dict = field(default_factory=dict)

    def global_dir(self, step: str) -> Path:
        """Where global step `step` keeps its collected records and resolutions."""
        return self.work / f"global-{step}"

    def path(self, p: str) -> Path:
        """A path from the config: `assets:<rel>` is the project's vendored data (checked against its sha256),
        `data:<rel>` in this package, anything else absolute or relative to where the pipeline was started."""
        from tools import assets
        from tools.paths import PACKAGE_ROOT

        if p.startswith(assets.PREFIX):
            return assets.resolve(p)
        if p.startswith("data:"):
            return PACKAGE_ROOT / "data" / p[len("data:") :]
        path = Path(p).expanduser()
        return path if path.is_absolute() else Path(self.extra.get("cwd", os.getcwd())) / path


def shard_name(shard: int) -> str:
    """The name of a task's files (documents, collected records, decisions): shard-00007."""
    return f"shard-{shard:05d}"


def cut_segments(items: list, is_global) -> list[list]:
    """Cut a step list before each global step (the global step opens the next segment): the pipeline runs one
    segment at a time, with a global resolution between segments. Works on steps or step classes."""
    out, current = [], []
    for item in items:
        if is_global(item) and current:
            out.append(current)
            current = []
        current.append(item)
    return [*out, current]


@dataclass
class StepStats:
    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> documents
    counters: Counter = field(default_factory=Counter)  # step-specific counts (pii.email, lines_removed, ...)

    def merge(self, other: StepStats) -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.chars_in += other.chars_in
        self.chars_out += other.chars_out
        self.dropped.update(other.dropped)
        self.counters.update(other.counters)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dropped"], d["counters"] = dict(sorted(self.dropped.items())), dict(sorted(self.counters.items()))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StepStats:
        return cls(
            d["docs_in"], d["docs_out"], d["chars_in"], d["chars_out"], Counter(d["dropped"]), Counter(d["counters"])
        )


class Task:
    """One shard's run of one pipeline segment: its stats per step and its dropped-document records."""

    def __init__(self, shard: int, dropped_file=None, excerpt_chars: int = 160):
        self.shard = shard
        self.stats: dict[str, StepStats] = {}
        self.dropped_file = dropped_file  # a text file object, or None to keep no records
        self.excerpt_chars = excerpt_chars
        self.results: dict[str, Any] = {}  # JSON-able outputs of steps (e.g. shard entries)
        self.seconds: Counter = Counter()  # time in each step's own code (run-dependent: kept apart from stats)

    def step_stats(self, name: str) -> StepStats:
        if name not in self.stats:
            self.stats[name] = StepStats()
        return self.stats[name]

    def drop(self, doc: Document, step: str, reason: str, detail: str = "") -> None:
        self.step_stats(step).dropped[reason] += 1
        if self.dropped_file is not None:
            record = {"id": doc.id, "url": doc.url, "step": step, "reason": reason}
            if detail:
                record["detail"] = detail
            if self.excerpt_chars and doc.text:
                record["excerpt"] = doc.text[: self.excerpt_chars]
            self.dropped_file.write(json.dumps(record, ensure_ascii=False) + "\n")


class Step:
    """A pipeline step. Subclasses set `name` (the key used in the YAML `steps` list) and implement process()."""

    name = ""

    def __init__(self, cfg: Any, env: Any):
        self.cfg, self.env = cfg, env

    def prepare_run(self) -> None:
        """One-off work in the driver before any task runs (e.g. train a classifier into the output folder)."""

    def setup(self) -> None:
        """Load models or files; runs once per task in the worker process."""

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        raise NotImplementedError

    def __call__(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        st = task.step_stats(self.name)
        upstream = 0.0  # time spent producing this step's input, subtracted from its own time

        def counted(it):
            nonlocal upstream
            while True:
                t0 = perf_counter()
                d = next(it, None)
                upstream += perf_counter() - t0
                if d is None:
                    return
                st.docs_in += 1
                st.chars_in += len(d.text)
                yield d

        gen = self.process(counted(docs), task)
        total = 0.0
        while True:
            t0 = perf_counter()
            d = next(gen, None)
            total += perf_counter() - t0
            if d is None:
                break
            st.docs_out += 1
            st.chars_out += len(d.text)
            yield d
        task.seconds[self.name] += total - upstream


def batched(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    """Consecutive non-empty lists of up to `size` documents (for steps that work a batch at a time)."""
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def applies(cfg: Any, doc: Document) -> bool:
    """A filter's `languages` / `categories` lists restrict it to those documents (empty list: all)."""
    langs = getattr(cfg, "languages", None)
    cats = getattr(cfg, "categories", None)
    return (not langs or doc.lang in langs) and (not cats or doc.category in cats)


class Filter(Step):
    """Keeps or drops each document; `keep` returns None to keep, or a reason (optionally with a detail)."""

    def keep(self, doc: Document) -> None | str | tuple[str, str]:
        raise NotImplementedError

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        for doc in docs:
            verdict = self.keep(doc) if applies(self.cfg, doc) else None
            if verdict is None:
                yield doc
            elif isinstance(verdict, tuple):
                task.drop(doc, self.name, verdict[0], verdict[1])
            else:
                task.drop(doc, self.name, verdict)


class Collector:
    """Per-task accumulator of a global step's compact records (hashes, counts); `save` writes them."""

    def add(self, doc: Document) -> None:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError


class GlobalStep(Step):
    """A step that decides over the whole dataset: collect (per shard) -> resolve (once) -> process (per shard).

    Round r's collectors may read round r-1's resolution (e.g. KL: corpus distribution, then per-document
    divergences). `gdir` is the step's work directory; `shards` lists the task numbers."""

    rounds = 1

    def collector(self, rnd: int, gdir: Path, shard: int) -> Collector:
        raise NotImplementedError

    def resolve(self, rnd: int, gdir: Path, shards: list[int]) -> dict:
        """Read every shard's collected files for round `rnd`, write decisions under gdir; return summary counts."""
        raise NotImplementedError


def check_funnel(steps: list[tuple[str, StepStats]]) -> list[str]:
    """The funnel invariant: per step in = out + dropped, and each step's out is the next step's in.
    Returns the violations (empty when it holds)."""
    errors = []
    for i, (name, st) in enumerate(steps):
        dropped = sum(st.dropped.values())
        if st.docs_in != st.docs_out + dropped:
            errors.append(f"{name}: {st.docs_in} in != {st.docs_out} out + {dropped} dropped")
        if i + 1 < len(steps) and st.docs_out != steps[i + 1][1].docs_in:
            errors.append(
                f"{name} gave {st.docs_out} documents but {steps[i + 1][0]} received {steps[i + 1][1].docs_in}"
            )
    return errors


def save_arrays(path: Path, **arrays) -> None:
    """Write arrays as one .npz, atomically (tools.atomic.replacing)."""
    import numpy as np

    from tools import atomic

    with atomic.replacing(path, ".npz") as tmp:
        np.savez(tmp, **arrays)


def load_arrays(path: Path, keys: list[str] | None = None) -> dict:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in (keys if keys is not None else z.files)}
