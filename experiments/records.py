"""Typed stage results: one frozen dataclass per stage's result, written and read by one helper pair.

    records.write(path, record)       # {"type": "CurateRecord", "version": 1, "fields": {...}}, atomically
    record = records.read(path, CurateRecord)

`read` checks the type name, the schema version and every field (missing or unexpected keys, wrong value
types, nested records included) and raises RecordError naming the file and the key. `write` runs the same
check first, so a record that could not be read back is never written. The dag stores a stage's returned
record as stages/<name>/result.json (dag.RESULT); a later stage reads it with `ctx.record(name, cls)`.

Field types the check understands: int, float (an int is accepted, as JSON writes 2.0 as 2.0 but a count
as 2), str, bool, Any, `X | None`, tuple[X, ...] and list[X] (JSON lists), dict[str, X] and nested
dataclasses. Bump a record's VERSION when its fields change so old files are refused, not misread.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from tools import atomic


class Record:
    """Base of the stage records (frozen dataclasses)."""

    VERSION: ClassVar[int] = 1


R = TypeVar("R", bound=Record)


class RecordError(ValueError):
    """A record file that is missing, of another type or version, or whose fields do not match."""


class _Mismatch(Exception):
    """A value that does not fit its field's type; the message names the key (without the file)."""


# ------------------------------------------------------------------------------------------ the helper pair


def is_record(value: Any) -> bool:
    return isinstance(value, Record) and dataclasses.is_dataclass(value)


def write(path: str | Path, record: Record) -> Path:
    """Store `record` at `path` (atomically) with its type name and schema version."""
    if not is_record(record):
        raise TypeError(f"records.write: {type(record).__name__} is not a record dataclass (subclass Record)")
    fields = dataclasses.asdict(record)
    try:
        _build(type(record), fields, "")
    except _Mismatch as e:
        raise RecordError(f"{path}: refusing to write a {type(record).__name__} record: {e}") from None
    return atomic.write_json(path, {"type": type(record).__name__, "version": record.VERSION, "fields": fields})


def read(path: str | Path, cls: type[R]) -> R:
    """The `cls` record stored at `path`; RecordError naming the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: no such record file (expected a {cls.__name__})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: not a JSON record file ({e})") from None
    if not isinstance(data, dict) or set(data) != {"type", "version", "fields"}:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise RecordError(f"{path}: not a record file (want the keys fields, type, version; got {got})")
    if data["type"] != cls.__name__:
        raise RecordError(f"{path}: holds a {data['type']} record, expected {cls.__name__}")
    if data["version"] != cls.VERSION:
        raise RecordError(
            f"{path}: {cls.__name__} record of version {data['version']}, this code reads version {cls.VERSION}"
        )
    try:
        return _build(cls, data["fields"], "")
    except _Mismatch as e:
        raise RecordError(f"{path}: {cls.__name__} record: {e}") from None


def _build(tp: Any, value: Any, where: str) -> Any:
    """`value` (JSON data, or dataclasses.asdict output) as an instance of `tp`; _Mismatch names the key."""
    here = where or "the record"
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch(f"{here}: expected an object of {tp.__name__}'s fields, got {type(value).__name__}")
        names = [f.name for f in dataclasses.fields(tp)]
        missing = [n for n in names if n not in value]
        unexpected = sorted(k for k in value if k not in names)
        if missing or unexpected:
            prefix = f"{where}." if where else ""
            parts = [f"missing key {prefix}{n}" for n in missing] + [f"unexpected key {prefix}{k}" for k in unexpected]
            raise _Mismatch("; ".join(parts))
        hints = typing.get_type_hints(tp)
        kwargs = {n: _build(hints[n], value[n], f"{where}.{n}" if where else n) for n in names}
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as e:  # a record's own check (__post_init__)
            raise _Mismatch(f"{here}: {e}") from None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        for arm in arms[:-1]:
            try:
                return _build(arm, value, where)
            except _Mismatch:
                pass
        return _build(arms[-1], value, where)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise _Mismatch(f"{here}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any  # tuple[X, ...] and list[X]
        return origin(_build(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(f"{here}: expected an object, got {type(value).__name__}")
        item = args[1] if args else Any
        for k in value:
            if not isinstance(k, str):
                raise _Mismatch(f"{here}: keys must be strings, got {k!r}")
        return {k: _build(item, v, f"{where}[{k!r}]") for k, v in value.items()}
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:
        raise TypeError(f"records: field type {tp!r} at {here} is not supported")
    if not ok:
        raise _Mismatch(f"{here}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


# ------------------------------------------------------------------------------------------ data stages


@dataclass(frozen=True)
class PlantedFates:
    """What curation did to the synthetic corpus's ground truth (experiments.stages.planted_fates)."""

    junk_planted: dict[str, int]  # per kind of planted junk
    junk_caught: dict[str, int]  # of those, dropped by the step meant to catch them
    junk_caught_fraction: float
    duplicate_groups: int
    duplicate_groups_with_one_survivor: int
    keep_documents: int  # documents meant to stay
    keep_kept_fraction: float


@dataclass(frozen=True)
class CurateRecord(Record):
    documents_in: int
    documents_kept: int
    documents_dropped: int
    planted: PlantedFates


@dataclass(frozen=True)
class TokenizerRecord(Record):
    vocab_size: int
    training_chars: int
    bytes_per_token: float  # on a sample of the curated text


@dataclass(frozen=True)
class CategoryTotals:
    documents: int
    tokens: int


@dataclass(frozen=True)
class ShardsRecord(Record):
    documents: int
    tokens: int  # of the pre-training shard set
    by_category: dict[str, CategoryTotals]


# ------------------------------------------------------------------------------------------ training phases


@dataclass(frozen=True)
class ModelExport:
    """Where a phase exported its model (training.export.export_model)."""

    path: str
    tokenizer: bool  # whether the tokenizer was saved beside it

    @classmethod
    def from_export(cls, d: dict | None) -> ModelExport | None:
        return cls(path=d["path"], tokenizer=d["tokenizer"]) if d else None  # {}: not the main rank


@dataclass(frozen=True)
class TrainRecord(Record):
    """A training phase's result: Trainer.fit's summary plus what training.pretrain.finish adds."""

    phase: str
    steps: int
    tokens: int
    loss: float | None  # of the last trained step
    tokens_per_s: float | None
    mfu: float | None
    seconds: float
    checkpoint: str | None
    spikes: int  # loss-spike events (steps skipped)
    skipped_categories: tuple[str, ...]
    resumed_from: str | None
    valid_loss: float | None
    plot: str | None
    model: ModelExport | None

    @classmethod
    def from_summary(cls, s: dict) -> TrainRecord:
        """From the dict training.{pretrain,long_context,anneal}.run returns (keys the record lacks are left)."""
        try:
            return cls(
                phase=s["phase"],
                steps=s["steps"],
                tokens=s["tokens"],
                loss=s["loss"],
                tokens_per_s=s["tokens_per_s"],
                mfu=s["mfu"],
                seconds=s["seconds"],
                checkpoint=s["checkpoint"],
                spikes=s["spikes"],
                skipped_categories=tuple(s["skipped_categories"]),
                resumed_from=s["resumed_from"],
                valid_loss=s["valid_loss"],
                plot=s["plot"],
                model=ModelExport.from_export(s["model"]),
            )
        except KeyError as e:
            raise KeyError(f"a training phase's summary lacks {e} (has {sorted(s)})") from None


@dataclass(frozen=True)
class Gate:
    """One long-context gate check (training.long_context.check_gate)."""

    tokens: int
    seq_len: int
    loss: float | None  # short-context validation loss
    accuracy: float  # retrieval at seq_len
    pre_loss: float | None  # before the stage
    loss_limit: float | None
    loss_ok: bool
    accuracy_ok: bool
    passed: bool

    @classmethod
    def from_dict(cls, d: dict) -> Gate:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class LongContextStage:
    name: str  # stage<i>_<seq_len>, its directory in the long_context workdir
    train: TrainRecord
    gate: Gate  # the last (deciding) check
    gates: tuple[Gate, ...]  # every check, extensions included
    extensions: int


@dataclass(frozen=True)
class LongContextRecord(Record):
    stages: tuple[LongContextStage, ...]
    model: ModelExport | None
    final_stage: str  # the last stage's directory, relative to the workdir

    @classmethod
    def from_summary(cls, s: dict) -> LongContextRecord:
        """From the dict training.long_context.run returns."""
        stages = tuple(
            LongContextStage(
                name=st["stage"],
                train=TrainRecord.from_summary(st),
                gate=Gate.from_dict(st["gate"]),
                gates=tuple(Gate.from_dict(g) for g in st["gates"]),
                extensions=st["extensions"],
            )
            for st in s["stages"]
        )
        return cls(stages=stages, model=ModelExport.from_export(s["model"]), final_stage=s["final_stage"])


@dataclass(frozen=True)
class AnnealRecord(Record):
    train: TrainRecord  # its valid_loss is the averaged model's
    last_valid_loss: float | None  # of the last checkpoint, before averaging
    averaged: tuple[str, ...]  # the checkpoints averaged

    @classmethod
    def from_summary(cls, s: dict) -> AnnealRecord:
        """From the dict training.anneal.run returns."""
        return cls(TrainRecord.from_summary(s), last_valid_loss=s["last_valid_loss"], averaged=tuple(s["averaged"]))


# ------------------------------------------------------------------------------------------ evaluation, report


@dataclass(frozen=True)
class Gsm8kScore:
    strict: float
    flexible: float
    n: int


@dataclass(frozen=True)
class Math500Score:
    accuracy: float
    n: int


@dataclass(frozen=True)
class LongLoss:
    """Loss by position on held-out long documents: within the pre-training length and past it."""

    early: float  # positions 0 .. short_len
    late: float  # positions short_len .. long_len
    short_len: int
    long_len: int

    @property
    def gap(self) -> float:
        """Negative: the extra context helps."""
        return self.late - self.early


@dataclass(frozen=True)
class EvalRecord(Record):
    """The numbers the report needs from one model's evaluation."""

    valid_loss: dict[str, float]  # per shard category, and "all"
    niah: dict[str, float]  # exact-match accuracy by context length (the length as a string)
    gsm8k: Gsm8kScore | None
    math500: Math500Score | None
    long_loss: LongLoss | None

    @classmethod
    def from_harness(cls, results: dict, long_loss: LongLoss | None = None) -> EvalRecord:
        """From eval/harness.py's results (its results.json): the one place that reads that format."""
        tasks = results["tasks"]
        valid_loss, niah, gsm8k, math500 = {}, {}, None, None
        if "ppl" in tasks:
            valid_loss = {cat: r["loss"] for cat, r in tasks["ppl"]["summary"].items()}
        if "niah" in tasks:
            by_len: dict[int, list[float]] = {}
            for r in tasks["niah"]["predictions"]:
                by_len.setdefault(r["context_length"], []).append(float(r["correct"]))
            niah = {str(n): sum(v) / len(v) for n, v in sorted(by_len.items())}
        if "gsm8k" in tasks:
            s = tasks["gsm8k"]["summary"]
            gsm8k = Gsm8kScore(s["strict_match"]["accuracy"], s["flexible_match"]["accuracy"], s["strict_match"]["n"])
        if "math500" in tasks:
            s = tasks["math500"]["summary"]["accuracy"]
            math500 = Math500Score(s["accuracy"], s["n"])
        return cls(valid_loss=valid_loss, niah=niah, gsm8k=gsm8k, math500=math500, long_loss=long_loss)


@dataclass(frozen=True)
class EvaluateRecord(Record):
    """The evaluate stage: every phase's model, in recipe order (pretrain, long-context stages, anneal)."""

    models: tuple[str, ...]
    results: dict[str, EvalRecord]

    def __post_init__(self):
        if sorted(self.models) != sorted(self.results):
            raise ValueError(f"EvaluateRecord: models {list(self.models)} but results for {sorted(self.results)}")

    def ordered(self) -> dict[str, EvalRecord]:
        """The results in model order (a JSON object's keys are stored sorted)."""
        return {name: self.results[name] for name in self.models}


@dataclass(frozen=True)
class ReportRecord(Record):
    checks: dict[str, bool]  # claim -> holds
    metrics: int  # how many metrics metrics.json holds


# ------------------------------------------------------------------------------------------ post-training


@dataclass(frozen=True)
class ChatDataRecord(Record):
    """The synthetic chat task (data/synthetic_chat.py): the annotated dialogs and preferences of round 0."""

    train: int  # problems
    held_out: int
    sft_dialogs: int  # kept by SFT curation
    preferences: dict[str, int]  # training pairs by strength
    files: dict[str, str]  # name -> JSONL path ("sft": the curated dialogs)
    planted: dict[str, int]  # faults planted in the raw SFT file, by kind
    curation_in: int  # lines of the raw SFT file
    curation_dropped: dict[str, int]  # by reason
    emoji_replies_kept: int  # kept replies that still hold an emoji
    apologetic_kept: int  # kept replies that apologise
    preferences_planted: dict[str, int]  # malformed records planted among the training pairs, by reason
    preferences_dropped: dict[str, int]  # dropped by the reader, by reason


@dataclass(frozen=True)
class PhaseRun:
    """One training run of a post-training stage (training.posttrain.phase.fit) and its exported model."""

    steps: int
    loss: float | None  # of the last step
    seconds: float
    model: str  # model directory (model.checkpoint format)


@dataclass(frozen=True)
class SFTRecord(Record):
    round: int  # 0: the annotated dialogs only (the first chat policy)
    runs: tuple[PhaseRun, ...]  # averaged into `model`
    model: str  # the stage's model directory: the runs' mean (one run: its model)
    dialogs: int  # trained on, all sources
    by_source: dict[str, int]
    dropped: int  # longer than the packed row
    exact_match: float  # held-out problems, greedy
    base_exact_match: float  # the pre-trained (annealed) model's, same prompts


@dataclass(frozen=True)
class RewardModelRecord(Record):
    round: int
    runs: tuple[PhaseRun, ...]  # each run's model: its backbone's directory; the head beside it (head.safetensors)
    model: str  # the stage's reward model: a directory with model/ (backbone) and head.safetensors; the runs' mean
    preferences: int  # used (strong strengths only), all rounds so far
    dropped: dict[str, int]  # left out, by strength
    held_out_accuracy: float  # pairwise, on held-out problems' pairs of the used strengths
    held_out_pairs: int


@dataclass(frozen=True)
class RejectionSamplingRecord(Record):
    round: int
    prompts: int
    k: int
    sft_dialogs: int  # kept: the best response was verified correct
    preferences: int
    # On held-out prompts (evaluation only):
    best_of_k: float  # share of prompts whose RM-best response is correct
    random_pick: float  # expected share for a response picked at random from the same K
    any_correct: float  # share of prompts with at least one correct response
    seconds_sampling: float  # the training prompts'
    sft_file: str
    preferences_file: str
    held_out_preferences_file: str  # best vs worst of held-out prompts: DPO's held-out margin


@dataclass(frozen=True)
class DPORun:
    run: PhaseRun
    nll_coef: float
    seed: int
    steps: tuple[int, ...]  # where chosen_logp was measured
    chosen_logp: tuple[float, ...]  # mean log-prob of the held-out chosen responses
    rejected_logp: tuple[float, ...]


@dataclass(frozen=True)
class DPORecord(Record):
    round: int
    pairs: int  # the round's preference pairs trained on
    runs: tuple[DPORun, ...]  # averaged by the average stage
    probe: DPORun | None  # the same run without the NLL term (not averaged)


@dataclass(frozen=True)
class AverageRecord(Record):
    round: int
    averaged: tuple[str, ...]  # model directories
    model: str
    exact_match: float  # held-out, greedy
    sft_exact_match: float  # the round's SFT model (DPO's start)
    margin: float  # held-out mean log p(chosen) - log p(rejected), averaged model
    sft_margin: float  # the same for the SFT model
