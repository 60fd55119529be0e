"""Exact parameter counts, a per-component breakdown and training FLOPs per token of a model preset.

    ./bazelw run //model:describe -- preset=405b seq_len=8192

The breakdown comes from the model itself, built on the meta device (no memory); training FLOPs per token come
from model/accounting.py (6 N for the weight matmuls, N excluding the input embedding, plus 12 * n_layers *
seq_len * dim for attention: the PaLM convention MFU uses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from model import accounting
from model.llama import ModelArgs, build
from model.presets import PRESETS, preset
from tools import config as config_lib


@dataclass
class DescribeConfig:
    preset: str = "8b"
    seq_len: int = 8192  # sequence length for the attention FLOPs term
    json: bool = False  # print the numbers as one JSON object instead of a table


def describe(args: ModelArgs, seq_len: int) -> dict:
    model = build(args, device="meta")
    layer = model.layers["0"]
    attn = {name: getattr(layer.attention, name).weight.numel() for name in ("wq", "wk", "wv", "wo")}
    ffn = {name: getattr(layer.feed_forward, name).weight.numel() for name in ("w1", "w2", "w3")}
    norms = layer.attention_norm.weight.numel() + layer.ffn_norm.weight.numel()
    per_layer = sum(attn.values()) + sum(ffn.values()) + norms
    embedding = model.tok_embeddings.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    six_n = 6 * accounting.matmul_params(args)
    return {
        "args": {
            k: getattr(args, k)
            for k in (
                "dim",
                "n_layers",
                "n_heads",
                "kv_heads",
                "head_dim",
                "ffn_hidden",
                "vocab_size",
                "rope_theta",
                "use_scaled_rope",
            )
        },  # fmt: skip
        "total": total,
        "embedding": embedding,
        "output": model.output.weight.numel(),
        "final_norm": model.norm.weight.numel(),
        "per_layer": per_layer,
        "per_layer_attention": attn,
        "per_layer_ffn": ffn,
        "per_layer_norms": norms,
        "layers": per_layer * args.n_layers,
        "non_embedding": total - embedding,
        "seq_len": seq_len,
        "flops_per_token": {
            "6N": six_n,
            "attention": accounting.flops_per_token(args, seq_len) - six_n,
            "total": accounting.flops_per_token(args, seq_len),
        },
        "bf16_weights_gib": total * 2 / 2**30,
    }


def format_table(name: str, d: dict) -> str:
    total = d["total"]

    def row(label, n):
        return f"  {label:<34}{n:>20,}  {100 * n / total:6.2f}%"

    a = d["args"]
    lines = [
        f"preset {name}: dim {a['dim']}, {a['n_layers']} layers, {a['n_heads']} heads / {a['kv_heads']} KV heads "
        f"(head_dim {a['head_dim']}), FFN {a['ffn_hidden']}, vocab {a['vocab_size']}, "
        f"RoPE theta {a['rope_theta']:g}{' (3.1 scaling)' if a['use_scaled_rope'] else ''}",
        f"parameters: {total:,} ({d['bf16_weights_gib']:.1f} GiB in bf16)",
        row("token embedding", d["embedding"]),
        row(f"{a['n_layers']} transformer layers", d["layers"]),
    ]
    for k, v in d["per_layer_attention"].items():
        lines.append(row(f"    attention.{k} (x{a['n_layers']})", v * a["n_layers"]))
    for k, v in d["per_layer_ffn"].items():
        lines.append(row(f"    feed_forward.{k} (x{a['n_layers']})", v * a["n_layers"]))
    lines += [
        row(f"    norms (x{a['n_layers']})", d["per_layer_norms"] * a["n_layers"]),
        row("final norm", d["final_norm"]),
        row("output head", d["output"]),
        f"  per layer: {d['per_layer']:,}; non-embedding: {d['non_embedding']:,}",
        f"training FLOPs per token at seq_len {d['seq_len']:,}:",
        f"  6N (N = {d['non_embedding']:,} matmul parameters)  {d['flops_per_token']['6N']:.4e}",
        f"  attention 12 * n_layers * seq_len * dim      {d['flops_per_token']['attention']:.4e}",
        f"  total                                        {d['flops_per_token']['total']:.4e}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cfg = config_lib.parse(DescribeConfig, argv)
    if cfg.preset not in PRESETS:
        raise config_lib.ConfigError(f"unknown preset '{cfg.preset}' (known: {', '.join(PRESETS)})")
    d = describe(preset(cfg.preset), cfg.seq_len)
    print(json.dumps(d, indent=2) if cfg.json else format_table(cfg.preset, d))


if __name__ == "__main__":
    main()
