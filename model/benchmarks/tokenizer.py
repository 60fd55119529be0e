"""Tokenizer encode throughput: model.tokenizer (tiktoken) vs the Hugging Face `tokenizers` fast tokenizer
built from the same Llama 3 ranks (model.bpe.hf_tokenizer), side by side; then batch encoding across threads
and across processes.

    ./bazelw run //model:bench_tokenizer -- repeats=3 workers=[1,2]

The corpus is real text from the vendored data in third_party/data (C4 web sample, Paul Graham essays, the UDHR
in 27 languages). Both tokenizers must give identical ids on all of it before anything is timed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import time
from dataclasses import dataclass, field

from model.benchmarks.common import interleaved, machine
from model.bpe import hf_tokenizer
from model.tokenizer import Tokenizer
from tools import assets
from tools import config as config_lib


@dataclass
class TokenizerBenchConfig:
    repeats: int = 3
    workers: list[int] = field(default_factory=lambda: [1, 2])  # thread / process counts for batch encoding


def corpus() -> list[str]:
    texts = [r["text"] for r in assets.jsonl("web/c4_sample.jsonl")]
    texts += [p.read_text(encoding="utf-8") for p in sorted(assets.path("niah/paul_graham_essays").glob("*.txt"))]
    texts += [p.read_text(encoding="utf-8") for p in sorted(assets.path("multilingual/udhr").glob("udhr_*.txt"))]
    return texts


_worker_tok: Tokenizer | None = None


def _init_worker(tok: Tokenizer) -> None:
    global _worker_tok
    _worker_tok = tok


def _encode_chunk(texts: list[str]) -> int:
    return sum(len(ids) for ids in _worker_tok.encode_batch(texts, num_threads=1))


def main(argv: list[str] | None = None) -> dict:
    cfg = config_lib.parse(TokenizerBenchConfig, argv)
    texts = corpus()
    n_bytes = sum(len(t.encode()) for t in texts)
    tok = Tokenizer.llama3()
    hf = hf_tokenizer(tok)
    ours_ids = [tok.encode(t) for t in texts]
    assert ours_ids == [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)], "ids differ"
    n_tokens = sum(map(len, ours_ids))

    single = interleaved(
        {
            "ours": lambda: [tok.encode(t) for t in texts],
            "hf": lambda: [hf.encode(t, add_special_tokens=False) for t in texts],
        },
        cfg.repeats,
    )
    result = {
        "benchmark": "tokenizer",
        "machine": machine(),
        "corpus": {"texts": len(texts), "bytes": n_bytes, "tokens": n_tokens},
        "single_thread_MB_per_s": {n: {c: n_bytes / t / 1e6 for c, t in s.items()} for n, s in single.items()},
    }
    r = {c: single["hf"][c] / single["ours"][c] for c in ("cpu", "wall")}
    result["single_thread_ratio"] = r

    # Batch encoding over threads: ours encode_batch vs tokenizers' encode_batch (rayon, RAYON_NUM_THREADS).
    batch = {}
    for n in cfg.workers:
        os.environ["RAYON_NUM_THREADS"] = str(n)
        hf_n = hf_tokenizer(tok)  # a fresh tokenizer; rayon reads the variable when its pool first starts
        s = interleaved(
            {
                "ours": lambda n=n: tok.encode_batch(texts, num_threads=n),
                "hf": lambda h=hf_n: h.encode_batch(texts, add_special_tokens=False),
            },
            cfg.repeats,
        )
        batch[n] = {name: n_bytes / v["wall"] / 1e6 for name, v in s.items()}
    result["batch_threads_MB_per_s_wall"] = batch

    # Batch encoding over processes (each worker holds its own tokenizer).
    procs = {}
    chunks = [texts[i::64] for i in range(64)]
    for n in cfg.workers:
        with mp.get_context("spawn").Pool(n, initializer=_init_worker, initargs=(tok,)) as pool:
            pool.map(_encode_chunk, chunks[:n])  # warm up: every worker has built its tokenizer
            times = []
            for _ in range(cfg.repeats):
                start = time.perf_counter()
                assert sum(pool.map(_encode_chunk, chunks)) == n_tokens
                times.append(time.perf_counter() - start)
        procs[n] = n_bytes / statistics.median(times) / 1e6
    result["batch_processes_MB_per_s_wall"] = procs

    print(f"machine: {result['machine']}")
    print(f"corpus: {len(texts)} texts, {n_bytes / 1e6:.2f} MB, {n_tokens:,} Llama 3 tokens (ids identical)")
    print("single thread, MB/s by process CPU time (by wall time):")
    for name, v in result["single_thread_MB_per_s"].items():
        print(f"  {name:<4}{v['cpu']:>8.2f} ({v['wall']:.2f})")
    print(f"  ratio ours / tokenizers: {r['cpu']:.2f}x ({r['wall']:.2f}x wall)")
    print("batch encoding, MB/s wall:")
    for n in cfg.workers:
        b = batch[n]
        print(f"  {n} thread(s): ours {b['ours']:.2f}, tokenizers {b['hf']:.2f} ({b['ours'] / b['hf']:.2f}x); "
              f"{n} process(es): ours {procs[n]:.2f}")  # fmt: skip
    base = cfg.workers[0]
    for n in cfg.workers[1:]:
        threads, processes = batch[n]["ours"] / batch[base]["ours"], procs[n] / procs[base]
        print(f"  scaling {base} -> {n}: threads {threads:.2f}x, processes {processes:.2f}x ({os.cpu_count()} cores)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
