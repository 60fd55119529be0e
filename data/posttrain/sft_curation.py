"""SFT data curation (paper section 4.2.3): cleaning, topic, quality and difficulty scoring, semantic dedup.

    python -m data.posttrain.sft_curation config=data/posttrain/configs/sft.yaml input=dialogs.jsonl output=kept.jsonl

`steps` lists the steps in order (`read` first); each has its own config key. Dialogs (data/dialogs.py
records) are held in memory: SFT sets are small next to web data (the paper's is millions of dialogs, a few GB).
Every step counts dialogs and characters in and out and removes a dialog only through `drop` with a reason, so
per step and for the run

    dialogs in = dialogs kept + sum of dialogs dropped by reason

(`check_funnel` from data/base.py; the stats JSON says whether it holds). The steps (drop reasons in quotes):

- `read`: JSONL lines parsed by data.dialogs, plus turn order and emptiness: "line too long" (never held in
  memory), "not UTF-8", "not JSON", data.dialogs' reasons ("missing field", "unknown role", "bad last role",
  "empty response", ...), "wrong role order", "empty content";
- `clean`: a response with more than `max_emojis` emojis loses them all; "!!!" -> "!", and "!" beyond
  `max_exclamations` -> ".": "empty after cleaning";
- `apologies`: dialogs whose responses apologise ("I'm sorry", "I apologize", ...) are cut to `target_share`
  of the set, not removed outright (a content hash picks which): "apologetic over target share";
- `topic`: the topic scorer's "coarse/fine" label; `keep` lists coarse topics to keep: "topic not kept";
- `quality`: high quality = reward in the top quartile (`rm_quantile`) OR judge score = `judge_max`:
  "low quality" (only with `drop_low`);
- `difficulty`: intents (Instag) + the 3-point rating;
- `semantic_dedup`: data/posttrain/semantic_dedup.py, ranked by quality x difficulty: "semantic near-duplicate".
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from omegaconf import MISSING

from data.base import StepStats, check_funnel
from data.dialogs import Dialog, RecordError, parse_dialog, write_jsonl
from data.posttrain.scorers import APOLOGY, EMOJI, ScorerConfig, make_scorer, run_scorer
from data.posttrain.semantic_dedup import SemanticDedupConfig, dedup, embed_dialogs, make_embedder
from tools import atomic
from tools.config import parse, save
from tools.paths import user_path


@dataclass
class ReadConfig:
    max_line_bytes: int = 1_000_000  # a longer line is dropped unread (`line too long`), never held in memory


@dataclass
class CleanConfig:
    max_emojis: int = 2  # per response; above it every emoji of the response is removed
    max_exclamations: int = 1  # per response; runs of "!" become one "!", and those beyond this become "."


@dataclass
class ApologiesConfig:
    # The paper rebalances these phrases without giving a share; 5% keeps apologies possible, not a habit.
    target_share: float = 0.05


@dataclass
class TopicConfig:
    scorer: ScorerConfig = field(default_factory=lambda: ScorerConfig(name="keyword_topic"))
    keep: list[str] = field(default_factory=list)  # coarse topics to keep; empty: all


@dataclass
class QualityConfig:
    reward: ScorerConfig = field(default_factory=ScorerConfig)  # the RM: a registered callable ("" = none)
    judge: ScorerConfig = field(default_factory=lambda: ScorerConfig(name="rules_judge"))
    judge_max: float = 5.0  # the judge's maximum score
    rm_quantile: float = 0.75  # reward at or above this quantile of the set is high quality (top quartile)
    drop_low: bool = False  # drop dialogs that are not high quality (else the score only ranks the dedup)


@dataclass
class DifficultyConfig:
    intents: ScorerConfig = field(default_factory=lambda: ScorerConfig(name="rules_intents"))
    rating: ScorerConfig = field(default_factory=lambda: ScorerConfig(name="rules_difficulty"))  # 1..3


@dataclass
class SFTCurationConfig:
    input: str = MISSING  # a dialogs JSONL file
    output: str = MISSING  # the kept dialogs, JSONL
    stats: str = ""  # the stats JSON ("": <output>.stats.json)
    dropped: str = ""  # the dropped dialogs' records, JSONL ("": <output>.dropped.jsonl)
    annotations: str = ""  # id and scores (topic, quality, ...) of each kept dialog ("": <output>.annotations.jsonl)
    steps: list[str] = field(
        default_factory=lambda: ["read", "clean", "apologies", "topic", "quality", "difficulty", "semantic_dedup"]
    )
    read: ReadConfig = field(default_factory=ReadConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    apologies: ApologiesConfig = field(default_factory=ApologiesConfig)
    topic: TopicConfig = field(default_factory=TopicConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    semantic_dedup: SemanticDedupConfig = field(default_factory=SemanticDedupConfig)


@dataclass
class Item:
    id: str  # <file name>:<line>
    dialog: Dialog
    meta: dict = field(default_factory=dict)  # scores: topic, quality, high_quality, intents, rating, difficulty


def chars(item: Item) -> int:
    return sum(len(m["content"]) for m in item.dialog.messages)


class Run:
    """Stats per step and the dropped records of one curation run."""

    def __init__(self):
        self.stats: dict[str, StepStats] = {}
        self.dropped: list[dict] = []

    def drop(self, item: Item, step: str, reason: str, detail: str = "") -> None:
        self.stats[step].dropped[reason] += 1
        self.dropped.append({"id": item.id, "step": step, "reason": reason} | ({"detail": detail} if detail else {}))


# ---- read ----


def check_turns(d: Dialog) -> None:
    """What data.dialogs lets through but SFT cannot use: user and assistant must alternate after an optional
    system message, and no message may be empty."""
    for i, m in enumerate(d.messages):
        if not m["content"].strip():
            raise RecordError(f"messages[{i}].content", "empty content", "the text is empty")
    turns = [m["role"] for m in d.messages if m["role"] != "system"]
    for i, role in enumerate(turns):
        if role != ("user", "assistant")[i % 2]:
            raise RecordError("messages", "wrong role order", f"turn {i} is {role}: user and assistant must alternate")


def read(path: Path, cfg: ReadConfig, run: Run) -> list[Item]:
    """Non-blank lines in = dialogs read + dropped by reason; a bad line is counted, never fatal."""
    st = run.stats["read"] = StepStats()
    items = []
    with open(path, "rb") as f:
        lineno = 0
        while True:
            raw = f.readline(cfg.max_line_bytes + 1)
            if not raw:
                break
            lineno += 1
            item = Item(f"{path.name}:{lineno}", Dialog([]))
            if len(raw) > cfg.max_line_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line a chunk at a time
                    raw = f.readline(1 << 20)
                st.docs_in += 1
                run.drop(item, "read", "line too long", f"over {cfg.max_line_bytes} bytes")
                continue
            if not raw.strip():
                continue
            st.docs_in += 1
            st.chars_in += len(raw)  # bytes of the line: its text is not known yet
            try:
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise RecordError("<line>", "not UTF-8", str(e)) from None
                except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError; deep nesting recurses
                    raise RecordError("<line>", "not JSON", f"{e}"[:200]) from None
                item.dialog = parse_dialog(obj)
                check_turns(item.dialog)
            except RecordError as e:
                run.drop(item, "read", e.reason, str(e))
                continue
            items.append(item)
            st.docs_out += 1
            st.chars_out += chars(item)
    return items


# ---- the steps: (items, cfg, run) -> items; the runner counts what goes in and out ----


BANG = re.compile(r"!+(?=[\s\"')\]*_]|$)")  # sentence-ending runs of "!" (not code's "!=", "!x", "![img]")


def _exclamations(text: str, keep: int) -> str:
    """Each run of "!" becomes one "!"; those after the first `keep` become "."."""
    seen = 0

    def one(_):
        nonlocal seen
        seen += 1
        return "!" if seen <= keep else "."

    return BANG.sub(one, text)


def clean(items: list[Item], cfg: CleanConfig, run: Run) -> list[Item]:
    counters, out = run.stats["clean"].counters, []
    for item in items:
        messages = []
        for m in item.dialog.messages:
            text = m["content"]
            if m["role"] == "assistant":
                if len(EMOJI.findall(text)) > cfg.max_emojis:
                    counters["emojis removed"] += len(EMOJI.findall(text))
                    text = re.sub(r"[ \t]{2,}", " ", EMOJI.sub("", text)).strip()
                n = text.count("!")
                text = _exclamations(text, cfg.max_exclamations)
                counters["exclamation marks removed or replaced"] += n - text.count("!")
                counters["responses changed"] += text != m["content"]
            messages.append({"role": m["role"], "content": text})
        if any(m["role"] == "assistant" and not m["content"].strip() for m in messages):
            run.drop(item, "clean", "empty after cleaning")
            continue
        item.dialog = replace(item.dialog, messages=messages)
        out.append(item)
    return out


def _hash(item: Item) -> str:
    return hashlib.sha256(json.dumps(item.dialog.messages, sort_keys=True).encode()).hexdigest()


def apologies(items: list[Item], cfg: ApologiesConfig, run: Run) -> list[Item]:
    """Rebalance: keep all non-apologetic dialogs and at most target_share / (1 - target_share) of that many
    apologetic ones (so they make target_share of the result), the ones kept chosen by content hash."""
    sorry = {i for i, it in enumerate(items) if any(APOLOGY.search(r["content"]) for r in _responses(it))}
    share = cfg.target_share * (len(items) - len(sorry)) / max(1e-9, 1 - cfg.target_share)
    allowed = int(share + 1e-9)  # 0.05 * 95 / 0.95 is 4.999... in floating point
    cut = set(sorted(sorry, key=lambda i: _hash(items[i]))[allowed:])
    counters = run.stats["apologies"].counters
    counters["apologetic in"], counters["apologetic kept"] = len(sorry), len(sorry) - len(cut)
    for i in sorted(cut):
        run.drop(items[i], "apologies", "apologetic over target share")
    return [it for i, it in enumerate(items) if i not in cut]


def _responses(item: Item) -> list[dict]:
    return [m for m in item.dialog.messages if m["role"] == "assistant"]


def _scores(scorer_cfg: ScorerConfig, items: list[Item], kind: type) -> list:
    return run_scorer(make_scorer(scorer_cfg), [it.dialog for it in items], scorer_cfg.name, kind)


def topic(items: list[Item], cfg: TopicConfig, run: Run) -> list[Item]:
    counters, out = run.stats["topic"].counters, []
    for item, label in zip(items, _scores(cfg.scorer, items, str), strict=True):
        item.meta["topic"] = label
        coarse = label.split("/")[0]
        counters[f"coarse: {coarse}"] += 1
        counters[f"fine: {label}"] += 1
        if cfg.keep and coarse not in cfg.keep:
            run.drop(item, "topic", "topic not kept", label)
        else:
            out.append(item)
    return out


def quality(items: list[Item], cfg: QualityConfig, run: Run) -> list[Item]:
    """quality = max(reward percentile, judge / judge_max); high = reward in the top quartile or judge maximum."""
    n = len(items)
    judge = np.array(_scores(cfg.judge, items, float)) if cfg.judge.name else np.zeros(n)
    pct = np.zeros(n)
    if cfg.reward.name and n:
        reward = np.array(_scores(cfg.reward, items, float))
        # The rank as a fraction in [0, 1]; tied rewards share the highest rank of the tie.
        pct = (np.searchsorted(np.sort(reward), reward, side="right") - 1) / max(1, n - 1)
    by_rm, by_judge = pct >= cfg.rm_quantile if cfg.reward.name else np.zeros(n, bool), judge >= cfg.judge_max
    counters, out = run.stats["quality"].counters, []
    counters["high by reward"], counters["high by judge"] = int(by_rm.sum()), int(by_judge.sum())
    for i, item in enumerate(items):
        item.meta["quality"] = float(max(pct[i], judge[i] / cfg.judge_max))
        item.meta["high_quality"] = high = bool(by_rm[i] or by_judge[i])
        counters["high quality"] += high
        if cfg.drop_low and not high:
            run.drop(item, "quality", "low quality", f"quality {item.meta['quality']:.3f}")
        else:
            out.append(item)
    return out


def difficulty(items: list[Item], cfg: DifficultyConfig, run: Run) -> list[Item]:
    """difficulty = intents + rating (both grow with difficulty; the dedup ranks by quality x difficulty)."""
    intents = _scores(cfg.intents, items, float)
    ratings = _scores(cfg.rating, items, float)
    counters = run.stats["difficulty"].counters
    for item, n, r in zip(items, intents, ratings, strict=True):
        item.meta.update(intents=n, rating=r, difficulty=n + r)
        counters[f"rating {r:g}"] += 1
    return items


def semantic_dedup(items: list[Item], cfg: SemanticDedupConfig, run: Run) -> list[Item]:
    e = embed_dialogs([it.dialog for it in items], make_embedder(cfg), cfg.batch_size)
    scores = np.array([it.meta.get("quality", 1.0) * it.meta.get("difficulty", 1.0) for it in items])
    result = dedup(e, scores, cfg)
    counters = run.stats["semantic_dedup"].counters
    counters["clusters"], counters["pairs over threshold"] = result.clusters, result.pairs
    for i in np.flatnonzero(~result.kept):
        j = result.removed_by[i]
        run.drop(items[i], "semantic_dedup", "semantic near-duplicate", f"{items[j].id} cos {result.similarity[i]:.4f}")
    return [it for it, k in zip(items, result.kept, strict=True) if k]


STEPS = {
    "clean": clean,
    "apologies": apologies,
    "topic": topic,
    "quality": quality,
    "difficulty": difficulty,
    "semantic_dedup": semantic_dedup,
}


def check_steps(steps: list[str]) -> None:
    if not steps or steps[0] != "read":
        raise ValueError(f"steps must start with read, got {steps}")
    unknown = [s for s in steps[1:] if s not in STEPS]
    if unknown or len(set(steps)) != len(steps):
        raise ValueError(f"steps: unknown or repeated {unknown or steps} (known: read, {', '.join(STEPS)})")


def curate(cfg: SFTCurationConfig) -> tuple[list[Item], dict]:
    """Run the steps of `cfg` over cfg.input; returns the kept items and the stats (per step, the funnel)."""
    check_steps(list(cfg.steps))
    path = user_path(cfg.input)
    if not path.is_file():
        raise FileNotFoundError(f"input {path} does not exist")
    run = Run()
    items = read(path, cfg.read, run)
    for name in cfg.steps[1:]:
        st = run.stats[name] = StepStats(docs_in=len(items), chars_in=sum(map(chars, items)))
        items = STEPS[name](items, getattr(cfg, name), run)
        st.docs_out, st.chars_out = len(items), sum(map(chars, items))
    order = [(name, run.stats[name]) for name in cfg.steps]
    errors = check_funnel(order)
    stats = {
        "dialogs_in": run.stats["read"].docs_in,
        "dialogs_kept": len(items),
        "dropped_by_reason": dict(sorted(sum((st.dropped for _, st in order), Counter()).items())),
        "step_order": list(cfg.steps),  # the JSON file sorts the keys of "steps"
        "steps": {name: st.to_dict() for name, st in order},
        "funnel_ok": not errors,
        "funnel_errors": errors,
        "dropped": run.dropped,
    }
    return items, stats


def write_outputs(cfg: SFTCurationConfig, items: list[Item], stats: dict) -> None:
    """The kept dialogs (JSONL), the stats (JSON), the dropped records, the kept dialogs' annotations and the
    config, each written atomically."""
    output = user_path(cfg.output)
    stats = dict(stats)
    dropped = stats.pop("dropped")
    write_jsonl(output, [it.dialog for it in items])
    atomic.write_json(user_path(cfg.stats) if cfg.stats else output.with_suffix(".stats.json"), stats)
    write_jsonl(user_path(cfg.dropped) if cfg.dropped else output.with_suffix(".dropped.jsonl"), dropped)
    annotations = [{"id": it.id} | it.meta for it in items]  # line i describes line i of the output
    write_jsonl(
        user_path(cfg.annotations) if cfg.annotations else output.with_suffix(".annotations.jsonl"), annotations
    )
    save(cfg, output.with_suffix(".config.yaml"))


def main(argv: list[str] | None = None) -> int:
    """The CLI. A bad key, value or step, a missing input, a scorer that cannot load: one line on stderr, exit 2;
    a disk error: one line naming the path, exit 1."""
    try:
        cfg = parse(SFTCurationConfig, sys.argv[1:] if argv is None else argv)
        items, stats = curate(cfg)
        write_outputs(cfg, items, stats)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{stats['dialogs_in']:,} dialogs in, {stats['dialogs_kept']:,} kept: {user_path(cfg.output)}")
    if not stats["funnel_ok"]:
        print("funnel invariant violated: " + "; ".join(stats["funnel_errors"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
