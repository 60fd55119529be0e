"""KV-cache decoding tokens/s: model.generate vs transformers' generate, same weights, greedy, side by side.

    ./bazelw run //model:bench_decode -- preset=small batch=1 prompt_len=64 new_tokens=64

Both produce exactly `new_tokens` tokens per prompt (no stop tokens); the greedy outputs are compared first.
Time covers the whole call (prefill + decode), as a user of either API sees it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from model.benchmarks.common import hf_twin, interleaved, machine, rates
from model.generate import generate
from model.llama import build
from model.presets import preset
from tools import config as config_lib


@dataclass
class DecodeConfig:
    preset: str = "small"
    batch: int = 1
    prompt_len: int = 64
    new_tokens: int = 64
    repeats: int = 3
    threads: int = 1  # torch threads; 1 keeps a shared machine's scheduling noise out of small ops
    compile: bool = True  # also time generate(..., compile=True) (compiled once before timing)
    seed: int = 0


def main(argv: list[str] | None = None) -> dict:
    cfg = config_lib.parse(DecodeConfig, argv)
    torch.set_num_threads(cfg.threads)
    ours = build(preset(cfg.preset, max_seq_len=cfg.prompt_len + cfg.new_tokens), seed=cfg.seed).eval()
    hf = hf_twin(ours).eval()
    hf.generation_config.pad_token_id = 0
    torch.manual_seed(cfg.seed)
    prompts = torch.randint(0, ours.args.vocab_size, (cfg.batch, cfg.prompt_len))

    def run_ours(compile=False):
        return generate(ours, prompts.tolist(), max_new_tokens=cfg.new_tokens, compile=compile)

    def run_hf():
        with torch.inference_mode():
            out = hf.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                max_new_tokens=cfg.new_tokens,
                min_new_tokens=cfg.new_tokens,
                do_sample=False,
                eos_token_id=None,
            )
        return out[:, cfg.prompt_len :].tolist()

    a, b = run_ours(), run_hf()
    agree = sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb)) / (cfg.batch * cfg.new_tokens)
    assert all(len(r) == cfg.new_tokens for r in a + b)
    assert all(ra[:4] == rb[:4] for ra, rb in zip(a, b)), "greedy outputs differ from the first tokens on"
    runs = {"ours": run_ours, "transformers": run_hf}
    if cfg.compile:
        assert run_ours(compile=True) == a, "compiled decoding changed the greedy tokens"
        runs["ours+compile"] = lambda: run_ours(compile=True)
    seconds = interleaved(runs, cfg.repeats, warmup=0)
    tps = rates(cfg.batch * cfg.new_tokens, seconds)
    result = {
        "benchmark": "decode",
        "config": config_lib.to_dict(cfg),
        "machine": machine(),
        "tokens_per_s": tps,
        "greedy_agreement": agree,
        "ratio": {clock: tps["ours"][clock] / tps["transformers"][clock] for clock in ("cpu", "wall")},
    }
    if cfg.compile:
        result["ratio_compiled"] = {c: tps["ours+compile"][c] / tps["transformers"][c] for c in ("cpu", "wall")}
    print(f"machine: {result['machine']}")
    print(f"preset {cfg.preset}, batch {cfg.batch}, prompt {cfg.prompt_len}, {cfg.new_tokens} new tokens, greedy, "
          f"median of {cfg.repeats}; tokens/s by process CPU time (by wall time)")  # fmt: skip
    for name, v in tps.items():
        print(f"  {name:<14}{v['cpu']:>9.1f} ({v['wall']:.1f}) tokens/s")
    print(f"  greedy tokens identical: {100 * agree:.1f}%")
    print(f"  ratio ours / transformers: {result['ratio']['cpu']:.2f}x ({result['ratio']['wall']:.2f}x wall)")
    if cfg.compile:
        r = result["ratio_compiled"]
        print(f"  ratio ours compiled / transformers: {r['cpu']:.2f}x ({r['wall']:.2f}x wall)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
