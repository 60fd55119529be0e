"""The tokenizer a recipe trains with, and exporting trained weights as a model.checkpoint directory
(params.json, model.safetensors, tokenizer/), the format eval/ loads."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from data.shards import ShardSet
from tools.paths import user_path
from training.checkpoint import full_model_state

log = logging.getLogger(__name__)


def load_tokenizer(spec: str, shards_dir: str | Path):
    """recipe.tokenizer: "llama3", a tokenizer directory, or "" (a tokenizer/ folder beside the shards, else
    the official Llama 3 tokenizer when the manifest's fingerprint is its). Checked against the manifest's
    sha256 when it has one. None when nothing matches (then exports carry no tokenizer)."""
    from model.bpe import tokenizer_from_spec

    info = ShardSet(shards_dir).tokenizer
    if spec:
        tok = tokenizer_from_spec(spec if spec == "llama3" else user_path(spec))
    elif (Path(shards_dir) / "tokenizer").is_dir():
        tok = tokenizer_from_spec(Path(shards_dir) / "tokenizer")
    elif info.get("sha256") and info.get("n_ranks") == 128000:
        tok = tokenizer_from_spec("llama3")
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


def export_model(model: torch.nn.Module, args, tokenizer, path: str | Path, main: bool) -> dict:
    """Write the model directory at `path` in float32 with model.checkpoint.save_model (call on every rank:
    the state dict is gathered from all of them; rank 0 writes). Without a tokenizer, tokenizer/ is left out."""
    from model.checkpoint import save_model
    from model.llama import Transformer

    sd = full_model_state(model)
    if not main:
        return {}
    with torch.device("meta"):
        shell = Transformer(args)  # carries args; the weights come from `sd`
    save_model(shell, tokenizer, path, state_dict=sd, dtype=torch.float32)
    return {"path": str(path), "tokenizer": tokenizer is not None}
