"""MFU of the trainer on one GPU: a ~1B Llama 3 config (Llama 3.2 1B's shape, untied head) in bf16 with
torch.compile per block and flex attention with document masking.

    ./bazelw run //training:bench_mfu                       # on a GPU machine (about 2-3 minutes)
    ./bazelw run //training:bench_mfu -- tiny=true device=cpu   # CPU smoke run with tiny shapes

Trains `warmup` steps (compilation), then times `steps` steps of `rows` x `seq_len` tokens through Trainer.fit
on synthetic shards, and reports tokens/s, MFU = tokens/s x FLOPs per token / the device's dense bf16 peak
(training.monitor.PEAK_FLOPS), and peak memory. Target on one H100: >= 45% MFU.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tools import config as tools_config
from training.benchmarks.common import random_shards
from training.config import Recipe
from training.monitor import flops_per_token
from training.trainer import Trainer


@dataclass
class MfuConfig:
    device: str = "cuda"
    tiny: bool = False  # CPU-sized shapes for a smoke test
    dim: int = 2048
    n_layers: int = 16
    n_heads: int = 32
    n_kv_heads: int = 8
    vocab_size: int = 128256
    ffn_dim_multiplier: float = 1.5
    multiple_of: int = 256
    seq_len: int = 8192
    rows: int = 4  # sequences per step
    micro_batch_rows: int = 1
    steps: int = 20
    warmup: int = 5
    compile: bool = True
    attn_backend: str = "flex"
    loss: str = "auto"  # auto: fused (kernels) when importable, else chunked
    activation_checkpointing: str = "none"
    out: str = ""


TINY = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32, seq_len=64, rows=2,
            micro_batch_rows=1, steps=2, warmup=1, compile=False, attn_backend="sdpa")  # fmt: skip


def pick_loss(name: str, device: str) -> str:
    if name != "auto":
        return name
    if device != "cuda":  # the Triton kernels run on GPU only
        return "chunked"
    try:
        from kernels import fused_linear_cross_entropy  # noqa: F401
    except ImportError:
        return "chunked"
    return "fused"


def recipe_for(cfg: MfuConfig) -> Recipe:
    model = (
        f"{{dim: {cfg.dim}, n_layers: {cfg.n_layers}, n_heads: {cfg.n_heads}, n_kv_heads: {cfg.n_kv_heads}, "
        f"vocab_size: {cfg.vocab_size}, ffn_dim_multiplier: {cfg.ffn_dim_multiplier}, "
        f"multiple_of: {cfg.multiple_of}, max_seq_len: {cfg.seq_len}, attn_backend: {cfg.attn_backend}}}"
    )
    tokens = cfg.rows * cfg.seq_len
    return tools_config.load(Recipe, [], [
        "model.preset=tiny", f"model.overrides={model}", f"device={cfg.device}", "monitor.wandb=false",
        "monitor.progress=false", f"parallel.compile={str(cfg.compile).lower()}",
        f"parallel.activation_checkpointing={cfg.activation_checkpointing}",
        f"pretrain.batch=[{{tokens: 0, batch_tokens: {tokens}, seq_len: {cfg.seq_len}}}]",
        f"pretrain.tokens={tokens * (cfg.steps + cfg.warmup)}", f"pretrain.micro_batch_rows={cfg.micro_batch_rows}",
        f"pretrain.loss={pick_loss(cfg.loss, cfg.device)}", "pretrain.checkpoint.every_steps=0",
        "pretrain.lr.warmup_steps=2", "pretrain.data.mix={general: 1.0}",
    ])  # fmt: skip


def run(cfg: MfuConfig) -> dict:
    if cfg.tiny:
        cfg = MfuConfig(**{**cfg.__dict__, **TINY})
    recipe = recipe_for(cfg)
    tokens = cfg.rows * cfg.seq_len
    with tempfile.TemporaryDirectory() as tmp:
        shards = random_shards(Path(tmp) / "shards", cfg.vocab_size, tokens * (cfg.steps + cfg.warmup + 2),
                               mean_doc=max(cfg.seq_len // 4, 16))  # fmt: skip
        trainer = Trainer(recipe, recipe.pretrain, Path(tmp) / "run", shards, phase="pretrain")
        device = trainer.info.device
        start = time.perf_counter()
        trainer.fit(until_tokens=tokens * cfg.warmup, final_save=False)
        warmup_s = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        trainer.fit(until_tokens=tokens * (cfg.warmup + cfg.steps), final_save=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        tps = tokens * cfg.steps / seconds
        fpt = flops_per_token(trainer.args, cfg.seq_len)
        result = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "params": sum(p.numel() for p in trainer.model.parameters()),
            "seq_len": cfg.seq_len, "rows": cfg.rows, "steps": cfg.steps, "loss": recipe.pretrain.loss,
            "compile": cfg.compile, "attn_backend": cfg.attn_backend,
            "warmup_seconds": warmup_s, "step_seconds": seconds / cfg.steps, "tokens_per_s": tps,
            "flops_per_token": fpt, "peak_flops": trainer.loop.peak, "mfu": tps * fpt / trainer.loop.peak,
            "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "final_loss": trainer.validate(event=False),
        }  # fmt: skip
        trainer.close()
    return result


def main(argv: list[str] | None = None) -> int:
    cfg = tools_config.parse(MfuConfig, argv)
    result = run(cfg)
    print(json.dumps(result, indent=2))
    print(f"MFU {result['mfu']:.1%} at {result['tokens_per_s']:,.0f} tokens/s on {result['device']}", file=sys.stderr)
    if cfg.out:
        from tools import atomic
        from tools.paths import user_path

        atomic.write_json(user_path(cfg.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
