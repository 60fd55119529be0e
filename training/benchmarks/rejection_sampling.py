"""Rejection-sampling throughput: K samples per prompt from one shared prefill, generate(prompts, samples=K), against
generating from each prompt repeated K times (K prefills of the same prompt), side by side.

    ./bazelw run //training:bench_rejection_sampling -- [preset=tiny] [prompts=4] [prompt_len=400] [k=8] \
        [new_tokens=16] [rounds=5]

Equal work: both sides produce prompts * k samples of exactly new_tokens tokens (no stop tokens) with temperature
0.7 and top-p 0.9 from the same seed, and their outputs must be identical token for token (checked every round).
Prompts are random token ids of prompt_len * 3/4 .. prompt_len tokens (ragged, so left padding is exercised). Long
prompts and short generations are where the shared prefill matters: rejection sampling's prompts are whole dialogs.

Rounds alternate which side runs first, so a busy machine slows both alike; the result is the median over rounds of
repeated seconds / shared seconds (the speed-up), with its range.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from model.generate import generate
from model.llama import build
from model.presets import preset
from tools import config as tools_config


@dataclass
class RejectionBenchConfig:
    preset: str = "tiny"
    prompts: int = 4
    prompt_len: int = 400
    k: int = 8
    new_tokens: int = 16
    rounds: int = 5
    threads: int = 1  # one: two threads on a shared 2-core machine wait on each other
    seed: int = 0
    out: str = ""  # also write the result as JSON here


def run(cfg: RejectionBenchConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    model = build(preset(cfg.preset), seed=cfg.seed).eval()
    g = torch.Generator().manual_seed(cfg.seed)
    lengths = torch.randint(cfg.prompt_len * 3 // 4, cfg.prompt_len + 1, (cfg.prompts,), generator=g).tolist()
    prompts = [torch.randint(0, model.args.vocab_size, (n,), generator=g).tolist() for n in lengths]
    repeated = [p for p in prompts for _ in range(cfg.k)]  # prompt-major, the order of samples=k
    kw = dict(max_new_tokens=cfg.new_tokens, temperature=0.7, top_p=0.9, seed=cfg.seed)
    sides = {
        "shared": lambda: generate(model, prompts, samples=cfg.k, **kw),
        "repeated": lambda: generate(model, repeated, **kw),
    }
    for fn in sides.values():  # warm-up, not timed (allocator, first-call costs)
        fn()
    seconds: dict[str, list[float]] = {"shared": [], "repeated": []}
    for r in range(cfg.rounds):
        outs = {}
        for side in ("shared", "repeated") if r % 2 == 0 else ("repeated", "shared"):
            start = time.perf_counter()
            outs[side] = sides[side]()
            seconds[side].append(time.perf_counter() - start)
        if outs["shared"] != outs["repeated"]:
            same = sum(a == b for a, b in zip(outs["shared"], outs["repeated"]))
            raise RuntimeError(f"not equal work: round {r}, {same} of {len(repeated)} samples identical")
        if any(len(s) != cfg.new_tokens for s in outs["shared"]):
            raise RuntimeError("not equal work: a sample is not new_tokens long")
    samples = cfg.prompts * cfg.k
    speedups = [rep / sh for rep, sh in zip(seconds["repeated"], seconds["shared"])]
    return {
        "preset": cfg.preset, "params": sum(p.numel() for p in model.parameters()), "prompts": cfg.prompts,
        "prompt_tokens": sum(lengths), "k": cfg.k, "samples": samples, "new_tokens": cfg.new_tokens,
        "rounds": cfg.rounds, "threads": cfg.threads, "outputs_identical": True,
        "shared_samples_per_s": samples / statistics.median(seconds["shared"]),
        "repeated_samples_per_s": samples / statistics.median(seconds["repeated"]),
        "speedup": statistics.median(speedups), "speedup_min": min(speedups), "speedup_max": max(speedups),
        "seconds": seconds,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    cfg = tools_config.parse(RejectionBenchConfig, argv)
    r = run(cfg)
    print(json.dumps(r, indent=2))
    print(
        f"{r['samples']} samples ({cfg.prompts} prompts x k={cfg.k}, {r['prompt_tokens']} prompt tokens, "
        f"{cfg.new_tokens} new tokens each): shared prefill {r['shared_samples_per_s']:.1f} samples/s, repeated "
        f"prompts {r['repeated_samples_per_s']:.1f} samples/s: speed-up median {r['speedup']:.2f}x "
        f"(min {r['speedup_min']:.2f}, max {r['speedup_max']:.2f}) over {cfg.rounds} alternating rounds",
        file=sys.stderr,
    )
    if cfg.out:
        from tools import atomic
        from tools.paths import user_path

        atomic.write_json(user_path(cfg.out), r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
