"""Training step (forward + backward) tokens/s: this model vs transformers' LlamaForCausalLM with identical
dimensions and weights, side by side in one run.

    ./bazelw run //model:bench_train_step -- preset=small batch=2 seq_len=256

Both compute the same loss (cross-entropy over fp32 logits) and gradients; the check at the start asserts it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.benchmarks.common import hf_twin, interleaved, machine, rates
from model.llama import build
from model.presets import preset
from tools import config as config_lib


@dataclass
class TrainStepConfig:
    preset: str = "small"
    batch: int = 2
    seq_len: int = 256
    repeats: int = 5
    compile: bool = True  # also time torch.compile'd versions of both (the way training/ runs the model)
    threads: int = 1  # torch threads; 1 keeps a shared machine's scheduling noise out of small ops
    seed: int = 0


def main(argv: list[str] | None = None) -> dict:
    cfg = config_lib.parse(TrainStepConfig, argv)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ours = build(preset(cfg.preset, max_seq_len=cfg.seq_len), seed=cfg.seed)
    hf = hf_twin(ours)
    V = ours.args.vocab_size
    tokens = torch.randint(0, V, (cfg.batch, cfg.seq_len + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]

    def step_fn(forward):
        def step():
            loss = F.cross_entropy(forward(x).float().flatten(0, 1), y.flatten())
            loss.backward()
            return loss

        return step

    runs = {"ours": (ours, step_fn(ours)), "transformers": (hf, step_fn(lambda t: hf(t).logits))}
    if cfg.compile:
        runs["ours+compile"] = (ours, step_fn(torch.compile(ours)))
        runs["transformers+compile"] = (hf, step_fn(torch.compile(lambda t: hf(t).logits)))
    # Same loss and gradients (within fp32 noise) before timing anything; this also compiles.
    losses, grads = {}, {}
    for name, (module, step) in runs.items():
        module.zero_grad(set_to_none=True)
        losses[name] = float(step().detach())
        first = module.layers["0"].feed_forward.w2 if module is ours else module.model.layers[0].mlp.down_proj
        grads[name] = first.weight.grad.clone()
    for name in runs:
        assert abs(losses[name] - losses["ours"]) < 1e-3, losses
        assert torch.allclose(grads[name], grads["ours"], atol=1e-6, rtol=1e-3), name

    def timed(module, step):
        def fn():
            module.zero_grad(set_to_none=True)
            step()

        return fn

    seconds = interleaved({n: timed(m, s) for n, (m, s) in runs.items()}, cfg.repeats)
    tps = rates(cfg.batch * cfg.seq_len, seconds)
    result = {
        "benchmark": "train_step",
        "config": config_lib.to_dict(cfg),
        "machine": machine(),
        "tokens_per_s": tps,
    }
    pairs = {"ours / transformers": ("ours", "transformers")}
    if cfg.compile:
        pairs["compiled ours / compiled transformers"] = ("ours+compile", "transformers+compile")
        pairs["compiled ours / transformers"] = ("ours+compile", "transformers")
    result["ratios"] = {k: {c: tps[a][c] / tps[b][c] for c in ("cpu", "wall")} for k, (a, b) in pairs.items()}
    print(f"machine: {result['machine']}")
    print(f"preset {cfg.preset}, batch {cfg.batch} x seq {cfg.seq_len}, forward+backward, median of {cfg.repeats}; "
          "tokens/s by process CPU time (by wall time)")  # fmt: skip
    for name, v in tps.items():
        print(f"  {name:<22}{v['cpu']:>9.1f} ({v['wall']:.1f}) tokens/s")
    for k, r in result["ratios"].items():
        print(f"  ratio {k}: {r['cpu']:.2f}x ({r['wall']:.2f}x wall)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
