"""Convert checkpoints between the project's model directory (herd), Meta's consolidated format and Hugging Face.

    ./bazelw run //model:convert -- src=Meta-Llama-3.1-8B src_format=meta dst=llama8b dst_format=herd
    ./bazelw run //model:convert -- src=llama8b src_format=herd dst=llama8b-hf dst_format=hf dtype=bfloat16

Tensors are copied bit for bit (HF's wq/wk rows are permuted, which is exact); `dtype` casts on the way.
The tokenizer travels along: herd `tokenizer/`, Meta `tokenizer.model`, HF `tokenizer.json`; a source without one
takes `tokenizer=llama3` or `tokenizer=PATH` (a tokenizer directory, tokenizer.model or tokenizer.json).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from model import bpe, checkpoint, interop
from model.dtypes import parse_dtype
from model.llama import ModelArgs
from model.tokenizer import Tokenizer
from tools import config as config_lib
from tools.paths import user_path

FORMATS = ("herd", "meta", "hf")


@dataclass
class ConvertConfig:
    src: str = "???"
    src_format: str = "hf"  # herd | meta | hf
    dst: str = "???"
    dst_format: str = "herd"  # herd | meta | hf
    dtype: str = ""  # cast floating weights: float32 | bfloat16 | float16 ("" keeps the source dtype)
    tokenizer: str = ""  # for sources without one: llama3, or a path
    shards: int = 1  # meta: number of model-parallel files to write
    max_shard_gb: float = 5.0  # hf: largest safetensors file before splitting (with an index)


def read_checkpoint(path: str | os.PathLike, fmt: str, device: str | torch.device = "cpu"):
    """(args, state dict with Meta names, tokenizer or None) from a checkpoint in `fmt`."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r} (known: {', '.join(FORMATS)})")
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    if fmt == "herd":
        model, tok = checkpoint.load_model(path, device)
        return model.args, dict(model.state_dict()), tok
    if fmt == "meta":
        args, sd = interop.read_meta(path, device)
        tok = Tokenizer.load(path) if (path / "tokenizer.model").is_file() else None
        return args, sd, tok
    args, sd = interop.read_hf(path, device)
    tok = bpe.from_hf_json(path / "tokenizer.json") if (path / "tokenizer.json").is_file() else None
    return args, sd, tok


def write_checkpoint(
    args: ModelArgs,
    sd: dict[str, torch.Tensor],
    tokenizer: Tokenizer | None,
    path: str | os.PathLike,
    fmt: str,
    *,
    shards: int = 1,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "herd":
        if tokenizer is None:
            raise ValueError("a herd model directory needs a tokenizer: pass tokenizer=llama3 or tokenizer=PATH")
        model = checkpoint.model_from_state_dict(args, sd)
        return checkpoint.save_model(model, tokenizer, path)
    if fmt == "meta":
        # Meta ships tokenizer.model beside params.json.
        return interop.write_meta(args, sd, path, shards=shards, extra_files=tokenizer.files() if tokenizer else None)
    extra = {}
    bos = eos = None
    if tokenizer is not None:
        extra = interop.hf_tokenizer_files(tokenizer, args.max_seq_len)  # with the chat template
        bos, eos = tokenizer.bos_id, list(tokenizer.stop_tokens)
    return interop.write_hf(args, sd, path, max_shard_bytes=max_shard_bytes, bos_id=bos, eos_id=eos, extra_files=extra)


def convert(cfg: ConvertConfig) -> Path:
    for key in ("src_format", "dst_format"):
        if getattr(cfg, key) not in FORMATS:
            raise config_lib.ConfigError(f"{key} must be one of {', '.join(FORMATS)}, got {getattr(cfg, key)!r}")
    dtype = parse_dtype(cfg.dtype, empty=True)
    src, dst = user_path(cfg.src), user_path(cfg.dst)
    args, sd, tok = read_checkpoint(src, cfg.src_format)
    if cfg.tokenizer:
        tok = bpe.tokenizer_from_spec(user_path(cfg.tokenizer) if cfg.tokenizer != "llama3" else "llama3")
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    out = write_checkpoint(
        args, sd, tok, dst, cfg.dst_format, shards=cfg.shards, max_shard_bytes=int(cfg.max_shard_gb * 2**30)
    )
    n = sum(v.numel() for v in sd.values())
    print(f"converted {src} ({cfg.src_format}) -> {out} ({cfg.dst_format}): {n:,} parameters, {len(sd)} tensors")
    return out


def main(argv: list[str] | None = None) -> None:
    convert(config_lib.parse(ConvertConfig, argv))


if __name__ == "__main__":
    main()
