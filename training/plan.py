"""The planner: parallel layout, per-GPU memory, tokens per step and training time of a recipe on a cluster.

    ./bazelw run //training:plan -- experiment=llama3_405b [plan.gpus=8192] [plan.tflops=430] [json=out.json]

Layout (paper section 3.3.2): TP x CP x PP x DP = GPUs; DP = GPUs / (TP * CP * PP).
FLOPs per token: 6 x non-embedding parameters + 12 x layers x dim x seq (monitor.flops_per_token).
MFU = achieved TFLOPs per GPU / the GPU's dense bf16 peak; tokens/s = GPUs x achieved FLOP/s / FLOPs per token.
Memory per GPU of the heaviest pipeline stage (ceil(layers / PP) blocks plus the embedding or the output head):
  weights bf16 and gradients bf16, 2 bytes each per parameter / TP (not sharded over DP, as in the paper's FSDP
  use); optimizer state fp32 master + Adam m, v, 12 bytes per parameter / (TP x DP);
  activations per token per block in bf16 with sequence parallelism, flash attention (no T x T scores):
  (12 dim + 4 kv_dim + 8 ffn_dim) / TP bytes: norm inputs/outputs, q, k, v, attention output, w1/w3 outputs,
  silu output and the product; with 1F1B the first stage holds PP micro-batches of its blocks in flight.
  Full checkpointing keeps only each block's input (2 dim / TP bytes per token) plus one block recomputed;
  selective checkpoints every other block. The last stage adds fp32 logits and their gradient (8 V / TP bytes).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from model import accounting
from model.llama import ModelArgs
from model.presets import preset
from tools import config as tools_config
from training.config import Recipe, load_recipe
from training.monitor import PEAK_FLOPS, flops_per_token

GIB = 2**30
TOKENS_PER_GPU_CP = 8192  # CP auto: keep this many tokens of a sequence per GPU (Table 4: 131,072 / 16)


def activation_bytes_per_token(args: ModelArgs, tp: int) -> float:
    """bf16 activations one block keeps for its backward, per token, with TP + sequence parallelism."""
    kv_dim = args.kv_heads * args.head_dim
    return (12 * args.dim + 4 * kv_dim + 8 * args.ffn_hidden) / tp


def memory(args: ModelArgs, tp: int, pp: int, dp: int, cp: int, seq: int, mb: int, ac: str) -> dict:
    """Bytes per GPU of the heaviest pipeline stage (see the module docstring)."""
    blocks = math.ceil(args.n_layers / pp)
    # The first stage holds the embedding, the last the head and final norm; without PP one GPU holds all.
    ends = (2 * args.vocab_size * args.dim + args.dim) if pp == 1 else args.vocab_size * args.dim
    params = blocks * accounting.block_params(args) + ends
    tokens = mb * seq / cp  # tokens of one micro-batch on one GPU
    full = activation_bytes_per_token(args, tp) * tokens  # one block, one micro-batch
    kept = 2 * args.dim / tp * tokens  # a checkpointed block keeps its input only
    in_flight = pp * blocks if pp > 1 else blocks  # 1F1B: PP micro-batches of this stage's blocks
    acts = {
        "none": in_flight * full,
        "selective": in_flight * (full + kept) / 2 + full,
        "full": in_flight * kept + full,
    }
    if ac not in acts:
        raise ValueError(f"plan.activation_checkpointing must be one of {sorted(acts)}, got '{ac}'")
    out = {
        "weights": 2 * params / tp,
        "gradients": 2 * params / tp,
        "optimizer": 12 * params / (tp * dp),
        "logits": 8 * tokens * args.vocab_size / tp if pp == 1 else 0.0,
        "activations": acts[ac],
    }
    out["total"] = sum(out.values())
    out["activations_by_mode"] = acts
    out["params_per_gpu"] = params / tp
    out["blocks_per_stage"] = blocks
    return out


@dataclass
class Layout:
    tp: int
    cp: int
    pp: int
    dp: int


def layout(gpus: int, tp: int, cp: int, pp: int, seq: int) -> Layout:
    cp = cp or max(1, seq // TOKENS_PER_GPU_CP)
    if gpus % (tp * cp * pp):
        raise ValueError(f"{gpus} GPUs are not divisible by TP {tp} x CP {cp} x PP {pp}")
    return Layout(tp, cp, pp, gpus // (tp * cp * pp))


def plan(recipe: Recipe) -> dict:
    p = recipe.plan
    args = preset(recipe.model.preset, **recipe.model.overrides)
    last = recipe.pretrain.batch[-1]
    seq, batch_tokens = p.seq_len or last.seq_len, p.batch_tokens or last.batch_tokens
    lay = layout(p.gpus, p.tp, p.cp, p.pp, seq)
    if p.gpu not in PEAK_FLOPS:
        raise ValueError(f"plan.gpu '{p.gpu}' is not in the peak table ({', '.join(PEAK_FLOPS)})")
    peak = PEAK_FLOPS[p.gpu]
    if p.tflops > 0:
        achieved = p.tflops * 1e12
    elif p.mfu > 0:
        achieved = p.mfu * peak
    else:
        raise ValueError("set plan.tflops or plan.mfu")
    fpt = flops_per_token(args, seq)
    tokens_per_s = p.gpus * achieved / fpt
    sequences = batch_tokens / seq
    per_dp = sequences / lay.dp
    micro = per_dp / p.micro_batch_size
    mem = memory(args, lay.tp, lay.pp, lay.dp, lay.cp, seq, p.micro_batch_size, p.activation_checkpointing)
    return {
        "model": recipe.model.preset,
        "params": accounting.param_count(args),
        "gpus": p.gpus,
        "gpu": p.gpu,
        "layout": {"tp": lay.tp, "cp": lay.cp, "pp": lay.pp, "dp": lay.dp},
        "seq_len": seq,
        "tokens_per_step": batch_tokens,
        "sequences_per_step": sequences,
        "sequences_per_dp_rank": per_dp,
        "micro_batches": micro,
        "pipeline_bubble": (lay.pp - 1) / (micro + lay.pp - 1) if lay.pp > 1 else 0.0,
        "flops_per_token": fpt,
        "tflops_per_gpu": achieved / 1e12,
        "mfu": achieved / peak,
        "tokens_per_s": tokens_per_s,
        "step_seconds": batch_tokens / tokens_per_s,
        "days": p.total_tokens / tokens_per_s / 86400,
        "total_tokens": p.total_tokens,
        "memory_gib": {
            k: (v / GIB if not isinstance(v, dict) else {m: b / GIB for m, b in v.items()})
            for k, v in mem.items()
            if k not in ("params_per_gpu", "blocks_per_stage")
        },
        "params_per_gpu": mem["params_per_gpu"],
        "blocks_per_stage": mem["blocks_per_stage"],
        "activation_checkpointing": p.activation_checkpointing,
        "fits": mem["total"] <= p.memory_gb * 1e9,
        "memory_limit_gb": p.memory_gb,
    }


def render(r: dict) -> str:
    lay, m = r["layout"], r["memory_gib"]
    lines = [
        f"{r['model']}: {r['params'] / 1e9:.1f}B parameters on {r['gpus']:,} {r['gpu'].upper()}",
        f"layout        TP {lay['tp']} x CP {lay['cp']} x PP {lay['pp']} x DP {lay['dp']}",
        f"step          {r['tokens_per_step']:,} tokens = {r['sequences_per_step']:,.0f} x {r['seq_len']:,}; "
        f"{r['sequences_per_dp_rank']:g} sequences per DP rank, {r['micro_batches']:g} micro-batches, "
        f"pipeline bubble {r['pipeline_bubble']:.1%}",
        f"compute       {r['flops_per_token']:.3e} FLOPs/token; {r['tflops_per_gpu']:.0f} TFLOPs/GPU = "
        f"{r['mfu']:.1%} MFU",
        f"speed         {r['tokens_per_s']:,.0f} tokens/s, {r['step_seconds']:.2f} s/step, "
        f"{r['days']:.1f} days for {r['total_tokens']:.3g} tokens",
        f"memory/GPU    (stage of {r['blocks_per_stage']} blocks, {r['params_per_gpu'] / 1e9:.2f}B params per GPU)",
        f"  weights     {m['weights']:7.2f} GiB (bf16)",
        f"  gradients   {m['gradients']:7.2f} GiB (bf16)",
        f"  optimizer   {m['optimizer']:7.2f} GiB (fp32 master + Adam, sharded over DP)",
        f"  logits      {m['logits']:7.2f} GiB",
    ]
    for mode, gib in m["activations_by_mode"].items():
        mark = "  <- used" if mode == r["activation_checkpointing"] else ""
        lines.append(f"  activations {gib:7.2f} GiB (checkpointing: {mode}){mark}")
    verdict = "fits" if r["fits"] else "does NOT fit"
    lines.append(f"  total       {m['total']:7.2f} GiB: {verdict} in {r['memory_limit_gb']:g} GB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    name, out, overrides = "llama3_405b", "", []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "experiment":
            name = value
        elif key == "json":
            out = value
        else:
            overrides.append(arg)
    try:
        result = plan(load_recipe(name, overrides))
    except (tools_config.ConfigError, ValueError) as e:
        print(f"plan: {e}", file=sys.stderr)
        return 2
    print(render(result))
    if out:
        from tools import atomic
        from tools.paths import user_path

        atomic.write_json(user_path(out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
