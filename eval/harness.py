"""The eval harness: run tasks on a model, write per-item predictions and summaries, resume after a kill.

Tasks: gsm8k (8-shot CoT), math500 / math (4-shot Minerva; MATH-500 or all 5,000 test problems), niah (needle in a
haystack grid + heatmap), ppl (validation loss per category from held-out shards). `format=chat` evaluates a
post-trained model instead: GSM8K and MATH as 0-shot chain of thought in the chat format (the question and an
instruction in a user turn, then the open assistant header, encoded as ids by Tokenizer.encode_chat), generation
ending at <|eot_id|>, graded by the same graders. Output directory:

    results.json             everything: config, per task its summary and per-item predictions, throughput
    summary.csv              one row per (task, metric) (also printed as a polars table)
    <task>/generations.jsonl one line per finished item, appended after every batch (the resume log)
    <task>/summary.json      written when the task is complete
    niah/heatmap.png, contamination.json (when contamination.shards is set)

Each generation line carries a key hashing the prompt and the decoding settings, so a rerun reuses exactly the
outputs that are still valid (a killed run continues with the first unfinished batch; a changed prompt or limit
regenerates what changed) and a torn last line from a kill is dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from eval import contamination, generation, grading, gsm8k, hendrycks_math, niah, perplexity
from eval.dataset import DatasetConfig
from eval.equivalence import Judge
from model.dtypes import parse_dtype
from tools import atomic
from tools import config as tconfig

TASKS = ("gsm8k", "math500", "math", "niah", "ppl")
FORMATS = ("base", "chat")


@dataclass
class GenerationTaskConfig(DatasetConfig):
    # Where the items come from (eval/dataset.py: the vendored copy by default, a local path, or a hub dataset).
    n_shot: int = -1  # -1 = the standard count (8 for GSM8K, 4 for MATH); base format only


@dataclass
class MathGradingConfig:
    timeout: float = 5.0  # seconds of wall clock per symbolic comparison
    workers: int = 2


@dataclass
class EvalConfig:
    checkpoint: str = ""  # a model.checkpoint directory
    tasks: list[str] = field(default_factory=lambda: ["gsm8k", "math500", "niah", "ppl"])
    format: str = "base"  # GSM8K and MATH prompts: base (few-shot, pre-trained) | chat (0-shot CoT, post-trained)
    limit: int = 0  # first N items per task (ppl: N windows per category); 0 = all
    out: str = ""  # results directory; default <checkpoint>/eval
    device: str = "cpu"
    dtype: str = "float32"  # float32 | bfloat16 | float16
    batch_size: int = 8
    max_new_tokens: int = 512  # GSM8K and MATH (Meta: up to 512 for GSM8K)
    check_every: int = 8  # decoding steps between stop-string checks
    seed: int = 0  # bootstrap resampling
    progress: bool = True
    gsm8k: GenerationTaskConfig = field(default_factory=GenerationTaskConfig)
    math: GenerationTaskConfig = field(default_factory=GenerationTaskConfig)
    grading: MathGradingConfig = field(default_factory=MathGradingConfig)
    niah: niah.NiahConfig = field(default_factory=niah.NiahConfig)
    ppl: perplexity.PerplexityConfig = field(default_factory=perplexity.PerplexityConfig)
    contamination: contamination.ContaminationConfig = field(default_factory=contamination.ContaminationConfig)


def check_format(cfg: EvalConfig) -> None:
    if cfg.format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    if cfg.format == "chat" and max(cfg.gsm8k.n_shot, cfg.math.n_shot) > 0:
        raise ValueError("format=chat is 0-shot: leave gsm8k.n_shot and math.n_shot unset")


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class GenerationLog:
    """Append-only JSONL of finished items keyed by id; rewritten without any torn line when reopened."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, dict] = {}
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            for line in lines:
                try:
                    row = json.loads(line)
                    self.done[row["id"]] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line torn by a kill
            atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in self.done.values()))
        path.parent.mkdir(parents=True, exist_ok=True)

    def get(self, item_id: str, key: str) -> dict | None:
        row = self.done.get(item_id)
        return row if row is not None and row.get("key") == key else None

    def append(self, rows: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
                self.done[r["id"]] = r
            f.flush()
            os.fsync(f.fileno())


class Harness:
    """Runs tasks for one model. `model` is a Transformer or a generate-like callable (tests);
    `max_seq_len` bounds prompt + generation (taken from model.args when there is one)."""

    def __init__(self, model, tokenizer, cfg: EvalConfig, out_dir: str | Path, max_seq_len: int | None = None):
        check_format(cfg)
        self.model, self.tokenizer, self.cfg, self.out = model, tokenizer, cfg, Path(out_dir)
        args = getattr(model, "args", None)
        self.max_seq_len = max_seq_len or (args.max_seq_len if args is not None else 1 << 30)
        self.stream = generation.as_stream(model)

    # ---- generation with the resume log ----
    def _generate(self, task: str, ids: list[str], prompts: list[list[int]], stops: tuple[str, ...]) -> tuple:
        log = GenerationLog(self.out / task / "generations.jsonl")
        settings = (self.cfg.max_new_tokens, stops, self.max_seq_len)
        keys = [_key(p, settings) for p in prompts]
        outputs: dict[str, str] = {}
        todo, skipped = [], {}
        for i, (item_id, prompt, key) in enumerate(zip(ids, prompts, keys)):
            row = log.get(item_id, key)
            if row is not None:
                outputs[item_id] = row["output"]
            elif len(prompt) + 16 > self.max_seq_len:
                skipped[item_id] = f"prompt of {len(prompt)} tokens leaves < 16 of max_seq_len {self.max_seq_len}"
            else:
                todo.append(i)
        start, new_tokens = time.perf_counter(), 0

        def on_batch(batch_idx, texts):
            nonlocal new_tokens
            rows = [{"id": ids[todo[j]], "key": keys[todo[j]], "output": t} for j, t in zip(batch_idx, texts)]
            new_tokens += sum(len(self.tokenizer.encode(t)) for t in texts)
            log.append(rows)
            for r in rows:
                outputs[r["id"]] = r["output"]

        # Batches never exceed max_seq_len: the budget shrinks for the longest prompts.
        by_budget: dict[int, list[int]] = {}
        for j, i in enumerate(todo):
            budget = min(self.cfg.max_new_tokens, self.max_seq_len - len(prompts[i]))
            by_budget.setdefault(budget, []).append(j)
        for budget, js in sorted(by_budget.items(), reverse=True):
            generation.generate_texts(
                self.stream,
                self.tokenizer,
                [prompts[todo[j]] for j in js],
                max_new_tokens=budget,
                stop_strings=stops,
                batch_size=self.cfg.batch_size,
                check_every=self.cfg.check_every,
                on_batch=lambda b, t, js=js: on_batch([js[k] for k in b], t),
                desc=task,
                progress=self.cfg.progress,
            )
        elapsed = time.perf_counter() - start
        throughput = {
            "generated_items": len(todo),
            "reused_items": len(ids) - len(todo) - len(skipped),
            "seconds": elapsed,
            "items_per_second": len(todo) / elapsed if todo and elapsed > 0 else None,
            "new_tokens_per_second": new_tokens / elapsed if todo and elapsed > 0 else None,
        }
        return outputs, skipped, throughput

    def _prompts(self, texts: list[str], module, n_shot: int) -> tuple[list[list[int]], tuple[str, ...]]:
        """Prompt ids and stop strings: the few-shot text prompts (base), or the chat dialogs encoded as ids with an
        open assistant header (chat: generation ends at <|eot_id|>, a stop token; no stop strings)."""
        if self.cfg.format == "chat":
            return [self.tokenizer.encode_chat(module.chat_messages(t)) for t in texts], ()
        return [self.tokenizer.encode(module.prompt(t, n_shot), bos=True) for t in texts], module.STOP_STRINGS

    def _limit(self, items: list) -> list:
        return items[: self.cfg.limit] if self.cfg.limit > 0 else items

    # ---- tasks ----
    def gsm8k(self) -> dict:
        items = self._limit(gsm8k.load(self.cfg.gsm8k))
        n_shot = self.cfg.gsm8k.n_shot if self.cfg.gsm8k.n_shot >= 0 else 8
        prompts, stops = self._prompts([it.question for it in items], gsm8k, n_shot)
        outputs, skipped, tp = self._generate("gsm8k", [it.id for it in items], prompts, stops)
        kept = [it for it in items if it.id in outputs]
        t0 = time.perf_counter()
        records = grading.grade_gsm8k(kept, [outputs[it.id] for it in kept], stops)
        tp["grading_seconds"] = time.perf_counter() - t0
        for r in records:
            r["output"] = outputs[r["id"]]
        summary = grading.summarize_gsm8k(records, seed=self.cfg.seed)
        return {"summary": summary, "skipped": skipped, "throughput": tp, "predictions": records}

    def math(self, subset: str) -> dict:
        task = "math500" if subset == "math500" else "math"
        items = self._limit(hendrycks_math.load(self.cfg.math, subset=task))
        n_shot = self.cfg.math.n_shot if self.cfg.math.n_shot >= 0 else 4
        prompts, stops = self._prompts([it.problem for it in items], hendrycks_math, n_shot)
        outputs, skipped, tp = self._generate(task, [it.id for it in items], prompts, stops)
        kept = [it for it in items if it.id in outputs]
        t0 = time.perf_counter()
        with Judge(timeout=self.cfg.grading.timeout, workers=self.cfg.grading.workers) as judge:
            records = grading.grade_math(kept, [outputs[it.id] for it in kept], judge, stop_strings=stops)
        tp["grading_seconds"] = time.perf_counter() - t0
        for r in records:
            r["output"] = outputs[r["id"]]
        summary = grading.summarize_math(records, seed=self.cfg.seed)
        return {"summary": summary, "skipped": skipped, "throughput": tp, "predictions": records}

    def niah(self) -> dict:
        items = self._limit(niah.samples(self.cfg.niah, self.tokenizer))
        too_long = [s for s in items if s.context_length > self.max_seq_len]
        if too_long:
            raise ValueError(
                f"niah context length {too_long[0].context_length} exceeds the model's max_seq_len "
                f"{self.max_seq_len}; set niah.context_lengths"
            )
        log = GenerationLog(self.out / "niah" / "generations.jsonl")
        keys = {s.id: _key(s.prompt, s.max_new_tokens) for s in items}
        records = {s.id: log.get(s.id, keys[s.id]) for s in items}
        todo = [s for s in items if records[s.id] is None]
        start = time.perf_counter()

        def on_batch(recs):
            rows = [{**r, "key": keys[r["id"]]} for r in recs]
            log.append(rows)
            records.update({r["id"]: r for r in rows})

        if todo:
            niah.run(
                self.model,
                self.tokenizer,
                todo,
                batch_size=self.cfg.niah.batch_size,
                on_batch=on_batch,
                progress=self.cfg.progress,
            )
        elapsed = time.perf_counter() - start
        preds = [records[s.id] for s in items]
        for r in preds:
            r.pop("key", None)
        heat = niah.heatmap(preds, self.out / "niah" / "heatmap.png")
        tp = {
            "generated_items": len(todo),
            "seconds": elapsed,
            "items_per_second": len(todo) / elapsed if todo and elapsed > 0 else None,
        }
        return {"summary": niah.summarize(preds), "heatmap": str(heat), "throughput": tp, "predictions": preds}

    def ppl(self) -> dict:
        cfg = self.cfg.ppl
        if not cfg.shards:
            raise ValueError("the ppl task needs ppl.shards=<shard set directory> (held-out 'valid' shards)")
        if self.cfg.limit > 0 and not cfg.max_tokens:
            cfg = dataclasses.replace(cfg, max_tokens=self.cfg.limit * cfg.seq_len)
        cfg = dataclasses.replace(cfg, seq_len=min(cfg.seq_len, self.max_seq_len))
        partial = self.out / "ppl" / "categories.json"
        done = json.loads(partial.read_text()) if partial.is_file() else {}
        key = _key(dataclasses.asdict(cfg))
        done = done if done.get("key") == key else {"key": key, "results": {}}
        shards = perplexity.ShardSet(cfg.shards)
        cats = cfg.categories or [c for c in shards.categories if shards.select(category=c, split=cfg.split)]
        start = time.perf_counter()
        for cat in cats:  # one category at a time, so a killed run keeps the finished ones
            if cat not in done["results"]:
                res = perplexity.evaluate(
                    self.model, dataclasses.replace(cfg, categories=[cat]), shards, progress=self.cfg.progress
                )
                done["results"][cat] = res[cat]
                atomic.write_json(partial, done)
        res = {c: done["results"][c] for c in cats}
        n = sum(r["tokens"] for r in res.values())
        loss = sum(r["loss"] * r["tokens"] for r in res.values()) / n if n else float("nan")
        res["all"] = {"loss": loss, "perplexity": math.exp(loss), "tokens": n}
        return {"summary": res, "throughput": {"seconds": time.perf_counter() - start}}

    def run_task(self, task: str) -> dict:
        if task not in TASKS:
            raise ValueError(f"unknown task '{task}' (known: {', '.join(TASKS)})")
        done = self.out / task / "summary.json"
        # Settings that cannot change a task's results are left out, so adding a task or changing the batch
        # size does not redo finished ones.
        settings = {
            k: v for k, v in tconfig.to_dict(self.cfg).items() if k not in ("tasks", "progress", "out", "batch_size")
        }
        fingerprint = _key(task, settings, self.max_seq_len)
        if done.is_file():
            saved = json.loads(done.read_text())
            if saved.get("fingerprint") == fingerprint:
                return saved["result"]
        if task == "gsm8k":
            result = self.gsm8k()
        elif task in ("math500", "math"):
            result = self.math("math500" if task == "math500" else "test")
        elif task == "niah":
            result = self.niah()
        else:
            result = self.ppl()
        atomic.write_json(done, {"fingerprint": fingerprint, "result": result})
        return result

    def contamination_report(self, results: dict) -> dict:
        cfg = self.cfg.contamination
        loaders = {
            "gsm8k": lambda: self._limit(gsm8k.load(self.cfg.gsm8k)),
            "math500": lambda: self._limit(hendrycks_math.load(self.cfg.math, subset="math500")),
            "math": lambda: self._limit(hendrycks_math.load(self.cfg.math, subset="math")),
        }
        tasks = [t for t in results if t in loaders]
        benches = {t: contamination.item_texts(t, loaders[t]()) for t in tasks}
        rep = contamination.report(
            benches, self.tokenizer.encode, contamination.ShardSet(cfg.shards), cfg, progress=self.cfg.progress
        )
        for t in tasks:
            key = "strict_match" if t == "gsm8k" else "correct"
            rep[t]["score"] = contamination.clean_subset_score(
                results[t]["predictions"], rep[t]["contaminated_ids"], key, seed=self.cfg.seed
            )
        atomic.write_json(self.out / "contamination.json", rep)
        return {t: {k: v for k, v in r.items() if k != "scores"} for t, r in rep.items()}


def summary_rows(results: dict) -> list[dict]:
    """One row per (task, metric): value, bootstrap interval where there is one, item count."""
    rows = []

    def add(task, metric, acc):
        rows.append(
            {
                "task": task,
                "metric": metric,
                "value": acc["accuracy"],
                "ci_low": acc.get("ci_low"),
                "ci_high": acc.get("ci_high"),
                "n": acc.get("n"),
            }
        )

    for task, res in results.get("tasks", {}).items():
        s = res["summary"]
        if task == "gsm8k":
            add(task, "strict_match", s["strict_match"])
            add(task, "flexible_match", s["flexible_match"])
        elif task in ("math500", "math"):
            add(task, "accuracy", s["accuracy"])
            for level, acc in s["by_level"].items():
                add(task, f"accuracy/{level}", acc)
            for subject, acc in s["by_subject"].items():
                add(task, f"accuracy/{subject}", acc)
        elif task == "niah":
            add(task, "exact_match", s["accuracy"])
            for variant, acc in s["by_variant"].items():
                add(task, f"exact_match/{variant}", acc)
        elif task == "ppl":
            for cat, r in s.items():
                rows.append(
                    {
                        "task": task,
                        "metric": f"loss/{cat}",
                        "value": r["loss"],
                        "ci_low": None,
                        "ci_high": None,
                        "n": r["tokens"],
                    }
                )
    for task, rep in results.get("contamination", {}).items():
        rows.append(
            {
                "task": task,
                "metric": "contaminated_fraction",
                "value": rep["fraction"],
                "ci_low": None,
                "ci_high": None,
                "n": rep["n"],
            }
        )
        key = "clean"
        add(task, f"score/{key}", rep["score"][key])
    return rows


def summary_table(results: dict):
    import polars as pl

    return pl.DataFrame(
        summary_rows(results),
        schema={
            "task": pl.Utf8,
            "metric": pl.Utf8,
            "value": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
            "n": pl.Int64,
        },
    )


def evaluate(
    model, tokenizer, cfg: EvalConfig, out_dir: str | Path, *, max_seq_len: int | None = None, meta: dict | None = None
) -> dict:
    """Run cfg.tasks on an in-memory model (what an experiment stage calls). Completed tasks found in out_dir
    with the same settings are reused; a task interrupted earlier continues from its generation log.
    Returns the results dict that is also written to out_dir/results.json."""
    out = Path(out_dir)
    harness = Harness(model, tokenizer, cfg, out, max_seq_len=max_seq_len)
    results: dict = {"config": tconfig.to_dict(cfg), **(meta or {}), "tasks": {}}
    for task in cfg.tasks:
        results["tasks"][task] = harness.run_task(task)
        atomic.write_json(out / "results.json", results)  # partial results after every task
    if cfg.contamination.shards:
        results["contamination"] = harness.contamination_report(results["tasks"])
    atomic.write_json(out / "results.json", results)
    table = summary_table(results)
    atomic.write_text(out / "summary.csv", table.write_csv())
    return results


def with_user_paths(cfg: EvalConfig) -> EvalConfig:
    """The config's data paths resolved like every command-line path (tools.paths.user_path: relative to where
    ./bazelw was run), so the tasks never open them relative to Bazel's runfiles."""
    from tools.paths import user_path

    def resolved(path: str) -> str:
        return str(user_path(path)) if path else path

    r = dataclasses.replace
    return r(
        cfg,
        gsm8k=r(cfg.gsm8k, path=resolved(cfg.gsm8k.path)),
        math=r(cfg.math, path=resolved(cfg.math.path)),
        niah=r(cfg.niah, haystack=resolved(cfg.niah.haystack)),
        ppl=r(cfg.ppl, shards=resolved(cfg.ppl.shards)),
        contamination=r(cfg.contamination, shards=resolved(cfg.contamination.shards)),
    )


def run(cfg: EvalConfig) -> dict:
    """Load cfg.checkpoint (a model.checkpoint directory) and evaluate it; results in cfg.out."""

    from model.checkpoint import load_model
    from tools.paths import user_path

    if not cfg.checkpoint:
        raise ValueError("checkpoint=<model directory> is required (written by model.checkpoint.save_model)")
    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} (known: {', '.join(TASKS)})")
    check_format(cfg)
    dtype = parse_dtype(cfg.dtype)
    ckpt = user_path(cfg.checkpoint)
    cfg = with_user_paths(cfg)
    model, tokenizer = load_model(ckpt, cfg.device, dtype=dtype)
    model.eval()
    out = user_path(cfg.out) if cfg.out else ckpt / "eval"
    return evaluate(model, tokenizer, cfg, out, meta={"checkpoint": str(ckpt)})
