"""Evaluation throughput: batched KV-cache generation vs one prompt at a time, on GSM8K 8-shot prompts.

A randomly initialised model of the given shape with the Llama 3 tokenizer (so prompt lengths are real); it never
writes a stop string, so every prompt decodes max_new_tokens tokens, the same work in both modes.

    ./bazelw run //eval:throughput -- problems=16 batch_size=8 max_new_tokens=64
"""

from __future__ import annotations

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


def timed(stream, tok, prompts, batch_size, max_new_tokens) -> float:
    start = time.perf_counter()
    generation.generate_texts(
        stream,
        tok,
        prompts,
        max_new_tokens=max_new_tokens,
        stop_strings=gsm8k.STOP_STRINGS,
        stop_tokens=(),
        batch_size=batch_size,
        desc=f"batch {batch_size}",
    )
    return time.perf_counter() - start


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
    t_one = timed(stream, tok, prompts, 1, cfg.max_new_tokens)
    t_batch = timed(stream, tok, prompts, cfg.batch_size, cfg.max_new_tokens)
    n = len(prompts)
    print(
        f"model {cfg.preset} dim {cfg.dim} x {cfg.n_layers} layers, {n} GSM8K prompts "
        f"(mean {sum(map(len, prompts)) / n:.0f} tokens), {cfg.max_new_tokens} new tokens each, "
        f"{torch.get_num_threads()} threads, device {cfg.device}"
    )
    print(f"one at a time: {n / t_one:.3f} problems/s ({t_one:.1f} s)")
    print(f"batch {cfg.batch_size}:       {n / t_batch:.3f} problems/s ({t_batch:.1f} s)")
    print(f"batched / one-at-a-time throughput: {t_one / t_batch:.2f}x")


if __name__ == "__main__":
    main()
