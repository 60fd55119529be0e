"""Peak memory of a DPO training step against an SFT step on the same model (CPU).

    ./bazelw run //training:bench_dpo_memory -- [preset=tiny] [pairs=2] [seq_len=256] [tokenizer=llama3]

Each step is the forward and backward pass of a post-training loss on the same model, from the same weights:
- DPO: training.posttrain.dpo.DPOLoss on `pairs` preference pairs (a chosen and a rejected row each), with the
  reference log-probs computed before (reference_logps), so no reference model is resident;
- SFT: training.posttrain.sft.SFTLoss on the pairs' chosen dialogs (as many examples as DPO has pairs), and on the
  chosen and the rejected dialogs (the same rows and tokens as the DPO step: the ratio to this one is what the DPO
  loss itself adds). Every dialog has a row of its own.

Peak: the most bytes torch's CPU allocator holds during the step beyond what it held before it (weights, optimizer
state, the batch), read from the profiler's allocation events (torch.profiler with profile_memory=True records every
tensor allocation and free in order). Gradients are freed before each step, so they are part of its peak.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from model.bpe import tokenizer_from_spec
from model.dialog import encode_dialog
from model.llama import build
from model.presets import preset
from tools import config as tools_config
from training.posttrain.dpo import DPOLoss, collate_pairs, encode_pair, reference_logps
from training.posttrain.sft import SFTLoss, collate_rows, pack_dialogs


@dataclass
class DPOMemoryConfig:
    preset: str = "tiny"
    tokenizer: str = "llama3"  # its vocabulary sets the model's: the logits are a large part of a step's memory
    pairs: int = 2
    seq_len: int = 256  # longest row: a prompt takes a quarter of it, a response half
    threads: int = 1
    seed: int = 0


def peak_bytes(step: Callable[[], None]) -> int:
    """The most bytes allocated by torch on the CPU during `step` beyond what was allocated before it."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):  # + allocation, - free
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def words(tok, rng: np.random.Generator, n_tokens: int) -> str:
    """Random lower-case words, as many as fit in `n_tokens` tokens."""
    out: list[str] = []
    while True:
        word = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9)))
        if len(tok.encode(" ".join([*out, word]))) > n_tokens:
            return " ".join(out)
        out.append(word)


def run(cfg: DPOMemoryConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    tok = tokenizer_from_spec(cfg.tokenizer)
    args = preset(cfg.preset, vocab_size=tok.vocab_size, max_seq_len=cfg.seq_len)
    model = build(args, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = []
    for _ in range(cfg.pairs):
        prompt = [{"role": "user", "content": words(tok, rng, cfg.seq_len // 4 - 16)}]  # 16: formatting tokens
        data.append((prompt, words(tok, rng, cfg.seq_len // 2), words(tok, rng, cfg.seq_len // 2)))
    pairs = reference_logps(model, [encode_pair(tok, *d) for d in data], pad_id=tok.eos_id)  # before training
    dpo_batch = collate_pairs(pairs, tok.eos_id)
    T = dpo_batch.tokens.shape[1]

    def sft_batch(dialogs):
        encoded = [encode_dialog(tok, [*p, {"role": "assistant", "content": r}]) for p, r in dialogs]
        packed = pack_dialogs(encoded, T, tok.eos_id)
        assert len(packed.rows) == len(dialogs) and not packed.dropped  # one dialog a row, as in the DPO batch
        return collate_rows(packed.rows)

    batches = {
        "sft_examples": (SFTLoss(), sft_batch([(p, c) for p, c, _ in data])),
        "sft_tokens": (SFTLoss(), sft_batch([(p, c) for p, c, _ in data] + [(p, r) for p, _, r in data])),
        "dpo": (DPOLoss(), dpo_batch),
    }

    def step(loss_fn, batch):
        model.zero_grad(set_to_none=True)
        total, units = loss_fn(model, batch)
        (total / units).backward()

    peaks = {}
    for name, (loss_fn, batch) in batches.items():
        step(loss_fn, batch)  # warm-up: first-call allocations are not the step's
        model.zero_grad(set_to_none=True)
        peaks[name] = peak_bytes(lambda loss_fn=loss_fn, batch=batch: step(loss_fn, batch))
    return {
        "config": dataclasses.asdict(cfg),
        "params": sum(p.numel() for p in model.parameters()),
        "rows": {"sft_examples": cfg.pairs, "sft_tokens": 2 * cfg.pairs, "dpo": 2 * cfg.pairs},
        "row_len": T,
        "peak_mib": {k: v / 2**20 for k, v in peaks.items()},
        "dpo_over_sft_examples": peaks["dpo"] / peaks["sft_examples"],
        "dpo_over_sft_tokens": peaks["dpo"] / peaks["sft_tokens"],
    }


def main(argv: list[str] | None = None) -> dict:
    r = run(tools_config.parse(DPOMemoryConfig, argv))
    c, p = r["config"], r["peak_mib"]
    print(f"preset {c['preset']}, vocabulary {c['tokenizer']}, {r['params']:,} parameters, rows of {r['row_len']}")
    print(f"SFT step, {c['pairs']} dialogs:                 peak {p['sft_examples']:9.1f} MiB")
    print(f"SFT step, {2 * c['pairs']} dialogs (DPO's tokens): peak {p['sft_tokens']:9.1f} MiB")
    print(f"DPO step, {c['pairs']} pairs:                   peak {p['dpo']:9.1f} MiB")
    print(f"DPO / SFT: {r['dpo_over_sft_examples']:.2f}x per example, {r['dpo_over_sft_tokens']:.2f}x per token")
    print(json.dumps(r), file=sys.stderr)
    return r


if __name__ == "__main__":
    main()
