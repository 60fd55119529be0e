"""Evaluation throughput: batched KV-cache generation vs one prompt at a time, on GSM8K 8-shot prompts.

A randomly initialised model of the given shape with the Llama 3 tokenizer (so prompt lengths are real). Equal work
is checked, not assumed: every run's greedy completions must be identical in both modes (left padding and batch
shapes must not change a token), or no figure is reported. Runs alternate which mode goes first, `repeats` times;
the median and range of the speed-up are reported.

    ./bazelw run //eval:throughput -- problems=16 batch_size=8 max_new_tokens=64
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

import torch

from eval import generation, gsm8k
from model.llama import build
from model.presets import preset
from model.tokenizer import Tokenizer
from tools import config


@dataclass
class ThroughputConfig:
    preset: str = "tiny"
    dim: int = 256
    n_layers: int = 4
    problems: int = 16
    batch_size: int = 8
    max_new_tokens: int = 64
    threads: int = 0  # torch threads; 0 = torch's default
    device: str = "cpu"
    repeats: int = 3


def timed(stream, tok, prompts, batch_size, max_new_tokens) -> tuple[float, list[str]]:
    start = time.perf_counter()
    texts = generation.generate_texts(
        stream,
        tok,
        prompts,
        max_new_tokens=max_new_tokens,
        stop_strings=gsm8k.STOP_STRINGS,
        stop_tokens=(),
        batch_size=batch_size,
        desc=f"batch {batch_size}",
    )
    return time.perf_counter() - start, texts


def main(argv=None) -> None:
    cfg = config.parse(ThroughputConfig, argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok = Tokenizer.llama3()
    args = preset(cfg.preset, dim=cfg.dim, n_layers=cfg.n_layers, vocab_size=tok.vocab_size, max_seq_len=2048)
    model = build(args, device=cfg.device, seed=0).eval()
    items = gsm8k.load()[: cfg.problems]
    prompts = [tok.encode(gsm8k.prompt(it.question), bos=True) for it in items]
    stream = generation.model_stream(model)
    timed(stream, tok, prompts[:2], 2, 4)  # warm-up
    seconds: dict[int, list[float]] = {1: [], cfg.batch_size: []}
    outputs: dict[int, list[str]] = {}
    for r in range(cfg.repeats):
        for bs in (1, cfg.batch_size) if r % 2 == 0 else (cfg.batch_size, 1):
            t, texts = timed(stream, tok, prompts, bs, cfg.max_new_tokens)
            seconds[bs].append(t)
            if outputs.setdefault(bs, texts) != texts:
                sys.exit(f"batch size {bs}: greedy outputs differ between repeats")
        differ = [i for i, (a, b) in enumerate(zip(outputs[1], outputs[cfg.batch_size])) if a != b]
        if differ:  # checked after the first repeat already
            sys.exit(f"not equal work: {len(differ)} of {len(prompts)} greedy outputs differ between batch 1 and "
                     f"batch {cfg.batch_size} (first: problem {differ[0]})")  # fmt: skip
    n = len(prompts)
    print(
        f"model {cfg.preset} dim {cfg.dim} x {cfg.n_layers} layers, {n} GSM8K prompts "
        f"(mean {sum(map(len, prompts)) / n:.0f} tokens), {cfg.max_new_tokens} new tokens each, "
        f"{torch.get_num_threads()} threads, device {cfg.device}, {cfg.repeats} alternating repeats"
    )
    print(f"greedy outputs identical at batch 1 and batch {cfg.batch_size}: {n} of {n} problems, every repeat")
    for bs, ts in seconds.items():
        name = "one at a time" if bs == 1 else f"batch {bs}"
        print(f"{name + ':':14s} {n / statistics.median(ts):.3f} problems/s (median {statistics.median(ts):.1f} s, "
              f"min {min(ts):.1f}, max {max(ts):.1f})")  # fmt: skip
    ratios = [a / b for a, b in zip(seconds[1], seconds[cfg.batch_size])]
    print(
        f"batched / one-at-a-time throughput: median {statistics.median(ratios):.2f}x "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
