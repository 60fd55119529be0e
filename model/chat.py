"""Complete a prompt or chat with a model directory (model.checkpoint format), streaming the text as it comes.

    ./bazelw run //model:chat -- ckpt=runs/.../final prompt="The capital of France is" max_new_tokens=32
    ./bazelw run //model:chat -- ckpt=runs/.../final mode=chat system="You are terse." temperature=0.7 seed=0

In chat mode without `prompt`, each line read from stdin is a user turn (an empty line or EOF ends the chat);
the conversation so far is re-encoded in the Llama 3 chat format every turn. `ckpt` may also be a Hugging Face
directory with its tokenizer.json (e.g. a post-trained model exported with `model.convert dst_format=hf`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from model.bpe import from_hf_json
from model.checkpoint import load_model, model_from_state_dict
from model.dtypes import parse_dtype
from model.generate import stream
from model.interop import read_hf
from model.tokenizer import Tokenizer
from tools import config as config_lib
from tools.paths import user_path


@dataclass
class ChatConfig:
    ckpt: str = "???"  # a model directory written by model.checkpoint.save_model, or a Hugging Face directory
    mode: str = "complete"  # complete | chat
    prompt: str = ""  # complete: the text to continue; chat: a single user turn (else read turns from stdin)
    system: str = ""  # chat: an optional system message
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    device: str = "cpu"
    dtype: str = ""  # "" keeps the checkpoint's dtype; bfloat16 | float16 | float32


def load(path: Path, device: str, dtype: torch.dtype | None):
    """(model, tokenizer) from a herd model directory, or from a Hugging Face one (config.json, safetensors,
    tokenizer.json)."""
    if (path / "params.json").is_file() or not (path / "config.json").is_file():
        return load_model(path, device, dtype=dtype)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path}: a Hugging Face directory without tokenizer.json (the chat needs one)")
    args, sd = read_hf(path, device)
    tok = from_hf_json(path / "tokenizer.json")
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    return model_from_state_dict(args, sd, device), tok


def respond(model, tok: Tokenizer, prompt: list[int], cfg: ChatConfig, out: TextIO, stop_tokens) -> list[int]:
    """Generate from `prompt`, writing the decoded text to `out` as it grows; returns the new tokens."""
    new: list[int] = []
    shown = ""
    for step in stream(
        model,
        [prompt],
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        stop_tokens=stop_tokens,
        seed=cfg.seed,
    ):
        if step[0] is None:
            break
        new.append(step[0])
        text = tok.decode(new)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            out.write(text[len(shown) :])
            out.flush()
            shown = text
    out.write(tok.decode(new)[len(shown) :] + "\n")
    return new


def run(cfg: ChatConfig, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> list[list[int]]:
    if cfg.mode not in ("complete", "chat"):
        raise config_lib.ConfigError(f"mode must be 'complete' or 'chat', got {cfg.mode!r}")
    dtype = parse_dtype(cfg.dtype, empty=True)
    model, tok = load(user_path(cfg.ckpt), cfg.device, dtype)
    model.eval()
    if cfg.mode == "complete":
        return [respond(model, tok, tok.encode(cfg.prompt, bos=True), cfg, out, stop_tokens=[tok.eos_id])]
    messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
    turns = [cfg.prompt] if cfg.prompt else (line.rstrip("\n") for line in stdin)
    replies = []
    for user in turns:
        if not user.strip():
            break
        messages.append({"role": "user", "content": user})
        reply = respond(model, tok, tok.encode_chat(messages), cfg, out, stop_tokens=tok.stop_tokens)
        messages.append({"role": "assistant", "content": tok.decode(reply)})
        replies.append(reply)
    return replies


def main(argv: list[str] | None = None) -> None:
    run(config_lib.parse(ChatConfig, argv))


if __name__ == "__main__":
    main()
