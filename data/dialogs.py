"""Post-training records: the on-disk contract between data/ (which writes them) and training/ and eval/.

Two JSONL formats, one record per line, UTF-8, written by hand or by a pipeline (paper section 4.2):

    dialog      {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...],
                 "source": str (optional), "round": int (optional)}
    preference  {"prompt": [messages ending with a user turn], "chosen": str, "rejected": str,
                 "edited": str or null (optional), "strength": one of STRENGTHS, "round": int (optional)}

A preference's `edited` is the annotator's improvement of the chosen response, so a record ranks up to three
responses: edited > chosen > rejected (section 4.2.1). `strength` is the annotator's four-level rating of how
much better the chosen one is; the reward model uses only the two strongest levels (USED_STRENGTHS).

The readers check every field. A bad record is a ValueError naming the file, the 1-based line and the field;
with on_error="skip" it is dropped and counted by reason instead, so lines in = records kept + dropped.
This module imports only tools and the standard library: training and eval read it without seeing data/.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tools import atomic

ROLES = ("system", "user", "assistant")
STRENGTHS = ("significantly_better", "better", "slightly_better", "marginally_better")
USED_STRENGTHS = STRENGTHS[:2]  # the paper trains the reward model on these only


@dataclass(frozen=True)
class Dialog:
    messages: list[dict]
    source: str = ""
    round: int = 0


@dataclass(frozen=True)
class Preference:
    prompt: list[dict]
    chosen: str
    rejected: str
    edited: str | None = None
    strength: str = "better"
    round: int = 0


@dataclass
class ReadResult:
    """What a reader kept, and what it dropped by reason (only with on_error="skip")."""

    path: Path
    records: list
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def lines(self) -> int:
        """Non-blank lines read: records kept + dropped."""
        return len(self.records) + sum(self.dropped.values())


def ranked_responses(pref: Preference) -> list[str]:
    """The responses best first: edited > chosen > rejected (edited only when present)."""
    return ([pref.edited] if pref.edited is not None else []) + [pref.chosen, pref.rejected]


class RecordError(ValueError):
    """One bad field of one record; `reason` is the counting key of skip mode."""

    def __init__(self, field_name: str, reason: str, detail: str):
        super().__init__(f"field '{field_name}': {reason}: {detail}")
        self.field, self.reason = field_name, reason


def _fields(obj: Any, required: tuple[str, ...], optional: tuple[str, ...], where: str = "") -> dict:
    """`obj` as a dict with every required field and no unknown one; `where` prefixes field names (messages[2].)."""
    if not isinstance(obj, dict):
        raise RecordError(where.rstrip(".") or "<record>", "not an object", f"got {type(obj).__name__}")
    for name in required:
        if name not in obj:
            raise RecordError(where + name, "missing field", "required")
    for name in obj:
        if name not in required + optional:
            raise RecordError(where + name, "unknown field", f"known fields: {', '.join(required + optional)}")
    return obj


def _text(value: Any, name: str, empty_ok: bool = True) -> str:
    if not isinstance(value, str):
        raise RecordError(name, "bad type", f"expected a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise RecordError(name, "empty response", "the text is empty")
    return value


def _round(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RecordError("round", "bad type", f"expected an integer >= 0, got {value!r:.40}")
    return value


def _messages(value: Any, name: str, last_role: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RecordError(name, "bad type", "expected a non-empty list of messages")
    for i, m in enumerate(value):
        where = f"{name}[{i}]"
        _fields(m, ("role", "content"), (), f"{where}.")
        if m["role"] not in ROLES:
            raise RecordError(f"{where}.role", "unknown role", f"{m['role']!r:.40} (known: {', '.join(ROLES)})")
        if m["role"] == "system" and i:
            raise RecordError(f"{where}.role", "misplaced system", "a system message must come first")
        _text(m["content"], f"{where}.content", empty_ok=m["role"] != "assistant")
    if value[0]["role"] not in ("system", "user"):
        raise RecordError(f"{name}[0].role", "bad first role", f"must be system or user, got {value[0]['role']!r}")
    if value[-1]["role"] != last_role:
        i = len(value) - 1
        raise RecordError(f"{name}[{i}].role", "bad last role", f"must be {last_role}, got {value[-1]['role']!r}")
    return value


def parse_dialog(obj: Any) -> Dialog:
    obj = _fields(obj, ("messages",), ("source", "round"))
    return Dialog(
        _messages(obj["messages"], "messages", last_role="assistant"),
        _text(obj.get("source", ""), "source"),
        _round(obj.get("round", 0)),
    )


def parse_preference(obj: Any) -> Preference:
    obj = _fields(obj, ("prompt", "chosen", "rejected", "strength"), ("edited", "round"))
    strength = obj["strength"]
    if strength not in STRENGTHS:
        raise RecordError("strength", "unknown strength", f"{strength!r:.40} (known: {', '.join(STRENGTHS)})")
    edited = obj.get("edited")
    return Preference(
        _messages(obj["prompt"], "prompt", last_role="user"),
        _text(obj["chosen"], "chosen", empty_ok=False),
        _text(obj["rejected"], "rejected", empty_ok=False),
        None if edited is None else _text(edited, "edited", empty_ok=False),
        strength,
        _round(obj.get("round", 0)),
    )


def _read(path: str | os.PathLike, parse, on_error: str) -> ReadResult:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    records, dropped = [], Counter()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise RecordError("<line>", "not UTF-8", str(e)) from None
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecordError("<line>", "not JSON", str(e)) from None
                records.append(parse(obj))
            except RecordError as e:
                if on_error == "raise":
                    raise ValueError(f"{path}:{lineno}: {e}") from None
                dropped[e.reason] += 1
    return ReadResult(path, records, dict(dropped))


def read_dialogs(path: str | os.PathLike, on_error: str = "raise") -> ReadResult:
    return _read(path, parse_dialog, on_error)


def read_preferences(path: str | os.PathLike, on_error: str = "raise") -> ReadResult:
    return _read(path, parse_preference, on_error)


def write_jsonl(path: str | os.PathLike, records) -> Path:
    """Dialogs, preferences (or plain dicts) as JSONL, atomically: a reader sees the old file or the whole new one."""
    lines = [json.dumps(asdict(r) if not isinstance(r, dict) else r, ensure_ascii=False) + "\n" for r in records]
    return atomic.write_text(path, "".join(lines))
