"""The tokenizer a recipe trains with, and exporting trained weights as a model.checkpoint directory
(params.json, model.safetensors, tokenizer/), the format eval/ loads."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from data.shards import ShardSet
from tools import atomic
from tools.paths import user_path
from training.checkpoint import full_model_state

log = logging.getLogger(__name__)


def load_tokenizer(spec: str, shards_dir: str | Path):
    """recipe.tokenizer: "llama3", a tokenizer directory, or "" (a tokenizer/ folder beside the shards, else
    the official Llama 3 tokenizer when the manifest's fingerprint is its). Checked against the manifest's
    sha256 when it has one. None when nothing matches (then exports carry no tokenizer)."""
    from model.tokenizer import Tokenizer

    info = ShardSet(shards_dir).tokenizer
    if spec == "llama3":
        tok = Tokenizer.llama3()
    elif spec:
        tok = Tokenizer.load(user_path(spec))
    elif (Path(shards_dir) / "tokenizer").is_dir():
        tok = Tokenizer.load(Path(shards_dir) / "tokenizer")
    elif info.get("sha256") and info.get("n_ranks") == 128000:
        tok = Tokenizer.llama3()
    else:
        log.warning("no tokenizer for %s: set recipe.tokenizer (exports will carry none)", shards_dir)
        return None
    want = info.get("sha256")
    if want and hasattr(tok, "fingerprint") and tok.fingerprint() != want:
        raise ValueError(
            f"tokenizer {spec or 'found'} has fingerprint {tok.fingerprint()[:12]}..., but the shards in "
            f"{shards_dir} were made with {want[:12]}... (set recipe.tokenizer to the right one)"
        )
    return tok


def clean_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's parameter names, without wrapper prefixes (activation checkpointing, compile, DDP)."""
    out = {}
    for key, value in sd.items():
        for prefix in ("_checkpoint_wrapped_module.", "_orig_mod.", "module."):
            key = key.replace(prefix, "")
        out[key] = value
    return out


def export_model(model: torch.nn.Module, args, tokenizer, path: str | Path, main: bool) -> dict:
    """Write the model directory at `path` (call on every rank; rank 0 writes). Uses model.checkpoint.save_model
    when a tokenizer is known; without one, params.json + model.safetensors in the same layout."""
    sd = full_model_state(model)
    if not main:
        return {}
    sd = {k: v.float().contiguous() for k, v in clean_names(sd).items()}
    path = Path(path)
    if tokenizer is not None:
        from model.checkpoint import save_model
        from model.llama import Transformer

        with torch.device("meta"):
            shell = Transformer(args)
        save_model(shell, tokenizer, path, state_dict=sd)
        return {"path": str(path), "tokenizer": True}
    from safetensors.torch import save_file

    from model.checkpoint import args_to_params

    with atomic.directory(path) as tmp:
        (tmp / "params.json").write_text(json.dumps(args_to_params(args), indent=2) + "\n")
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt", "herd": "model/1"})
    return {"path": str(path), "tokenizer": False}
