"""Runs a pipeline: shard-parallel tasks (in-process, local processes, or a submitit Slurm job array) with
atomic per-shard outputs, global steps in between, and resume.

The steps are cut into segments at every global step. Segment k runs one task per input shard: it reads the
shard (the reader in segment 0, else segment k-1's output), applies its steps, writes its documents
(`_work/seg-k/shard-NNNNN.parquet`), the next global step's round-0 hashes, its dropped-document records, and
last a marker `shard-NNNNN.json` with its stats. Then the global step resolves (an atomically published
directory). A task or resolution whose marker exists is never redone, so a killed run started again with the
same arguments redoes only what was unfinished; every output is a deterministic function of the inputs and
config, so the final result is byte-identical.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data.base import Env, GlobalStep, InputShard, Step, StepStats, Task, cut_segments, shard_name
from data.document import Document, DocumentWriter, read_documents
from data.steps import make_steps
from tools import atomic, cluster


def expand_inputs(spec: str, read_format: str = "auto") -> list[tuple[Path | str, str]]:
    """`spec`: comma-separated files, folders (every file in them, recursively), globs, or hf://<name>.
    Returns (path, name) pairs; a name (the stem of document ids) is the path relative to the folder given,
    or the file's own name, so ids do not depend on where the data sits. With `read_format` auto, each file's
    reader is chosen by extension and content (data.readers.sniff): a file none fits (empty, unknown, corrupt)
    is named on stderr and stays in the list, for the read step to count by name in the report; an input
    where no file fits at all is an error."""
    from data.readers import sniff

    found: list[tuple[Path | str, str]] = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        p = Path(item)
        if item.startswith("hf://"):
            found.append((item, item[len("hf://") :]))  # kept a string: Path() would fold the //
        elif any(ch in item for ch in "*?["):
            matched = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matched:
                raise FileNotFoundError(f"input pattern {item} matches no file")
            found.extend((m.absolute(), m.name) for m in matched if m.is_file())
        elif p.is_dir():
            if any((p / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
                found.append((p.absolute(), p.name))  # a Hugging Face dataset saved with save_to_disk
                continue
            files = sorted(f for f in p.rglob("*") if f.is_file())
            if not files:
                raise FileNotFoundError(f"input folder {p} holds no file")
            found.extend((f.absolute(), str(f.relative_to(p))) for f in files)
        elif p.exists():
            found.append((p.absolute(), p.name))
        else:
            raise FileNotFoundError(f"input {item} does not exist")
    if not found:
        raise FileNotFoundError(f"input '{spec}' names no file")
    if read_format == "auto":
        skipped = [(name, why) for path, name in found for fmt, why in [sniff(str(path))] if not fmt]
        for name, why in skipped:
            print(f"input: skipping {name}: {why}", file=sys.stderr)
        if len(skipped) == len(found):
            listed = "; ".join(f"{name}: {why}" for name, why in skipped[:10])
            raise FileNotFoundError(f"input '{spec}' holds no file a reader fits ({listed})")
    return found


def plan_tasks(inputs: list[tuple[Path | str, str]], tasks: int) -> list[list[InputShard]]:
    """One task per input file by default; `tasks` > files splits files into record-interleaved parts,
    `tasks` < files groups files."""
    shards = [InputShard(str(p), name) for p, name in inputs]
    if tasks <= 0 or tasks == len(shards):
        return [[s] for s in shards]
    if tasks < len(shards):
        return [shards[i::tasks] for i in range(tasks)]
    parts = -(-tasks // len(shards))
    return [[InputShard(s.path, s.name, k, parts)] for s in shards for k in range(parts)]


@dataclass
class Segment:
    index: int
    steps: list[Step]
    after: GlobalStep | None  # the global step whose collection this segment feeds (its first step applies it)


def segments(steps: list[Step]) -> list[Segment]:
    """The step list cut before each global step (base.cut_segments); a global step opens the next segment."""
    parts = cut_segments(steps, lambda s: isinstance(s, GlobalStep))
    return [Segment(i, part, parts[i + 1][0] if i + 1 < len(parts) else None) for i, part in enumerate(parts)]


def seg_dir(env: Env, k: int) -> Path:
    return env.work / f"seg-{k:02d}"


def marker(env: Env, k: int, shard: int) -> Path:
    return seg_dir(env, k) / f"{shard_name(shard)}.json"


# ---------------------------------------------------------------- tasks (run in workers)


def build_steps(env: Env) -> list[Step]:
    return make_steps(env.cfg, env)


def run_segment_task(env: Env, k: int, shard: int) -> None:
    segs = segments(build_steps(env))
    seg = segs[k]
    for step in seg.steps:
        step.setup()
    last = k == len(segs) - 1
    dropped_path = env.output / "dropped" / f"seg-{k:02d}-{shard_name(shard)}.jsonl"
    dropped_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dropped = dropped_path.with_name(f".{dropped_path.name}.{os.getpid()}.tmp")
    with open(tmp_dropped, "w", encoding="utf-8") as dropped:
        task = Task(shard, dropped, env.cfg.report.dropped_excerpt_chars)
        docs: Iterator[Document]
        if k == 0:
            docs = iter(())
        else:
            docs = read_documents(seg_dir(env, k - 1) / f"{shard_name(shard)}.parquet")
        for step in seg.steps:
            docs = step(docs, task)
        if last:
            out = env.output / "documents" / f"{shard_name(shard)}.parquet" if env.cfg.write_documents else None
            collector = None
        else:
            out = seg_dir(env, k) / f"{shard_name(shard)}.parquet"
            collector = seg.after.collector(0, env.global_dir(seg.after.name), shard)
        writer = DocumentWriter(out) if out is not None else None
        if env.cfg.progress and env.cfg.executor == "inline":  # in worker processes the driver shows task progress
            docs = tqdm(docs, desc=f"segment {k} shard {shard}", unit="doc", leave=False)
        final: dict[tuple[str, str], list[int]] = {}
        collect_seconds = 0.0
        try:
            for doc in docs:
                if writer is not None:
                    writer.add(doc)
                if collector is not None:
                    t0 = time.perf_counter()
                    collector.add(doc)
                    collect_seconds += time.perf_counter() - t0
                if last:
                    row = final.setdefault((doc.lang, doc.category), [0, 0, 0])
                    row[0] += 1
                    row[1] += len(doc.text)
                    row[2] += 0 if doc.tokens is None else len(doc.tokens)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            writer.close()
        if collector is not None:
            t0 = time.perf_counter()
            collector.save(env.global_dir(seg.after.name) / "round-0" / shard_name(shard))
            task.seconds[f"{seg.after.name} (collect)"] += collect_seconds + time.perf_counter() - t0
    os.replace(tmp_dropped, dropped_path)
    if last:
        task.results["final"] = [
            {"lang": lang, "category": cat, "docs": d, "chars": c, "tokens": t}
            for (lang, cat), (d, c, t) in sorted(final.items())
        ]
    stats = {name: st.to_dict() for name, st in task.stats.items()}
    atomic.write_json(
        marker(env, k, shard), {"shard": shard, "stats": stats, "results": task.results, "seconds": dict(task.seconds)}
    )


def run_collect_task(env: Env, k: int, round: int, shard: int) -> None:
    """A later round of a global step's collection: re-read segment k's output for this shard."""
    step = segments(build_steps(env))[k].after
    gdir = env.global_dir(step.name)
    collector = step.collector(round, gdir, shard)
    for doc in read_documents(seg_dir(env, k) / f"{shard_name(shard)}.parquet"):
        collector.add(doc)
    collector.save(gdir / f"round-{round}" / shard_name(shard))
    atomic.write_json(gdir / f"round-{round}" / f"{shard_name(shard)}.done.json", {"shard": shard})


def _call(fn: Callable, args: tuple) -> None:
    try:
        fn(*args)
    except Exception as e:
        if isinstance(e, OSError) and e.errno:  # a full or read-only disk: what and where is the whole story
            where = e.filename or args[0].output
            raise OSError(e.errno, f"{fn.__name__}{args[1:]} failed: {e.strerror}", str(where)) from None
        raise RuntimeError(
            f"{fn.__name__}{args[1:]} failed: {type(e).__name__}: {e}\n{traceback.format_exc()}"
        ) from None


# ---------------------------------------------------------------- executors (in the driver)


def check_executor(cfg: Any) -> None:
    if cfg.executor not in ("inline", "local", "slurm"):
        raise ValueError(f"executor must be inline, local or slurm, got '{cfg.executor}'")


def make_pool(env: Env) -> ProcessPoolExecutor | None:
    """The local worker processes, started once per run (spawned: safe with the threads of polars/pyarrow).
    Each dies with the driver, so a killed run leaves no idle worker, nor the resource tracker they keep open."""
    cfg = env.cfg
    check_executor(cfg)
    if cfg.executor == "local" and cfg.workers > 1:
        spawn = get_context("spawn")
        return ProcessPoolExecutor(cfg.workers, spawn, initializer=die_with_parent, initargs=(os.getpid(),))
    return None


def die_with_parent(parent: int) -> None:
    """In a worker process, first thing: have the kernel SIGKILL it when its parent dies, even by kill -9
    (Linux's parent-death signal)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def execute(env: Env, fn: Callable, arglist: list[tuple], desc: str, pool: ProcessPoolExecutor | None) -> None:
    """Run fn(*args) for every args: in this process, in local worker processes, or as a Slurm job array."""
    if not arglist:
        return
    cfg = env.cfg
    if cfg.executor == "slurm":
        _execute_slurm(env, fn, arglist, desc)
    elif pool is None:
        for args in tqdm(arglist, desc=desc, unit="task", disable=not cfg.progress, leave=False):
            _call(fn, args)
    else:
        futures = [pool.submit(_call, fn, args) for args in arglist]
        bar = tqdm(total=len(futures), desc=desc, unit="task", disable=not cfg.progress, leave=False)
        try:
            for fut in as_completed(futures):
                fut.result()
                bar.update()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            bar.close()


def _execute_slurm(env: Env, fn: Callable, arglist: list[tuple], desc: str) -> None:
    folder = env.output / "logs" / "slurm" / "_".join(desc.split(" (")[0].split())
    jobs = cluster.executor(folder, env.cfg.slurm).map_array(_call, [fn] * len(arglist), arglist)
    bar = tqdm(total=len(jobs), desc=desc, unit="task", disable=not env.cfg.progress, leave=False)
    pending = list(jobs)
    while pending:
        still = []
        for job in pending:
            # Only the result file is trusted: job.done() asks sacct, which needs Slurm accounting.
            if job.paths.result_pickle.exists():
                bar.update()
            elif cluster.has_ended(job.job_id) and not job.paths.result_pickle.exists():
                time.sleep(1.0)  # the result file may land just after the job leaves the queue
                if not job.paths.result_pickle.exists():
                    bar.close()
                    raise RuntimeError(f"Slurm job {job.job_id} ended without a result; log: {job.paths.stderr}")
                bar.update()
            else:
                still.append(job)
        pending = still
        if pending:
            time.sleep(0.5)
    bar.close()
    for job in jobs:
        job.result()  # raises the task's error, naming it


# ---------------------------------------------------------------- the driver


def run_pipeline(env: Env) -> dict:
    """Run (or resume) every segment and global resolution; returns {"stats": merged per-step stats, ...}."""
    steps = build_steps(env)
    segs = segments(steps)
    shards = list(range(len(env.tasks)))
    timings: dict = {}
    pool = make_pool(env)
    try:
        _run_segments(env, segs, shards, timings, pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return collect_results(env, steps, segs, shards, timings)


def _run_segments(env: Env, segs: list[Segment], shards: list[int], timings: dict, pool) -> None:
    for seg in segs:
        k = seg.index
        todo = [(env, k, s) for s in shards if not marker(env, k, s).exists()]
        t0 = time.time()
        names = "+".join(s.name for s in seg.steps)
        execute(env, run_segment_task, todo, f"segment {k} ({names})", pool)
        timings[f"segment {k}"] = time.time() - t0
        if seg.after is not None:
            step, gdir = seg.after, env.global_dir(seg.after.name)
            for r in range(step.rounds):
                if r > 0:
                    todo = [
                        (env, k, r, s)
                        for s in shards
                        if not (gdir / f"round-{r}" / f"{shard_name(s)}.done.json").exists()
                    ]
                    execute(env, run_collect_task, todo, f"{step.name} collect round {r}", pool)
                done = gdir / f"resolved-{r}" / "summary.json"
                if not done.exists():
                    t0 = time.time()
                    summary = step.resolve(r, gdir, shards)
                    atomic.write_json(done, summary)
                    timings[f"{step.name} resolve {r}"] = time.time() - t0


def collect_results(env: Env, steps: list[Step], segs: list[Segment], shards: list[int], timings: dict) -> dict:
    """Merge every task's marker: per-step stats (in pipeline order), step results, global summaries."""
    merged: dict[str, StepStats] = {s.name: StepStats() for s in steps}
    results: dict[str, list] = {}
    step_seconds: dict[str, float] = {s.name: 0.0 for s in steps}
    for seg in segs:
        for s in shards:
            m = json.loads(marker(env, seg.index, s).read_text())
            for name, d in m["stats"].items():
                merged[name].merge(StepStats.from_dict(d))
            for key, value in m["results"].items():
                results.setdefault(key, []).append(value)
            for name, sec in m.get("seconds", {}).items():
                step_seconds[name] = step_seconds.get(name, 0.0) + sec
    timings["steps (seconds in each step, summed over tasks)"] = step_seconds
    summaries = {}
    for seg in segs:
        if seg.after is not None:
            gdir = env.global_dir(seg.after.name)
            summaries[seg.after.name] = [
                json.loads((gdir / f"resolved-{r}" / "summary.json").read_text()) for r in range(seg.after.rounds)
            ]
    return {
        "steps": [(s.name, merged[s.name]) for s in steps],
        "results": results,
        "global": summaries,
        "timings": timings,
    }


def prepare_output(env: Env, identity: dict, overwrite: bool) -> None:
    """Create the output folder, or check that an existing one was started with the same arguments."""
    check_executor(env.cfg)  # a bad value must not leave an output folder behind
    run_file = env.output / "run.json"
    if run_file.exists():
        old = json.loads(run_file.read_text())
        if old != identity:
            if not overwrite:
                changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
                raise ValueError(
                    f"{env.output} holds a run with other arguments (differs in {changed}); "
                    "pass overwrite=true to start over, or choose another output"
                )
            shutil.rmtree(env.output)
    elif overwrite and env.output.exists():
        shutil.rmtree(env.output)
    env.output.mkdir(parents=True, exist_ok=True)
    remove_leftovers(env.output)
    atomic.write_json(run_file, identity)


def remove_leftovers(root: Path) -> None:
    """Temporary files and folders of an interrupted run (every output is written as .<name>...tmp first)."""
    for p in sorted(root.rglob(".*"), reverse=True):
        if ".tmp" in p.name:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def identity_of(cfg: Any, tasks: list[list[InputShard]], tokenizer_info: dict | None) -> dict:
    """What determines a run's result: a rerun into the same output must match it (how the run is executed,
    its output folder and progress display do not count)."""
    from tools.config import to_dict

    d = to_dict(cfg)
    for key in ("output", "overwrite", "workers", "executor", "progress", "slurm"):
        d.pop(key, None)
    return {"config": d, "tasks": [[dataclasses.asdict(s) for s in t] for t in tasks], "tokenizer": tokenizer_info}
