"""The project's own model directory, and the checks every checkpoint format shares.

    <dir>/params.json         ModelArgs as JSON (Meta's params.json field names, plus attn_backend etc.)
    <dir>/model.safetensors   the state dict with Meta's parameter names
    <dir>/tokenizer/          Tokenizer.save (tokenizer.model + special_tokens.json)

`save_model` writes the directory atomically (temp directory, then one rename). `load_model` checks
params.json field by field and every tensor name and shape before building anything, so a bad file gives an
error naming the field or tensor (expected vs found shape) and nothing is loaded partially.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model import rope
from model.llama import ModelArgs, Transformer
from model.tokenizer import Tokenizer
from tools import atomic

PARAMS_FILE, WEIGHTS_FILE, TOKENIZER_DIR = "params.json", "model.safetensors", "tokenizer"
RUNTIME_FIELDS = ("attn_backend", "restart_positions", "max_seq_len")  # may be overridden at load time
_WRAPPER_PREFIXES = ("_orig_mod.", "_checkpoint_wrapped_module.", "module.", "_fsdp_wrapped_module.")


class CheckpointError(ValueError):
    """A checkpoint does not match what it claims to hold; the message names the file and tensor or field."""


# ---- params.json ----
def args_to_params(args: ModelArgs) -> dict:
    return dataclasses.asdict(args)


def _field_types() -> dict[str, tuple[type, ...]]:
    """Accepted JSON types per ModelArgs field (int for float fields is fine; None only for Optional)."""
    hints = typing.get_type_hints(ModelArgs)
    out = {}
    for name, hint in hints.items():
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        allowed = tuple(type(None) if a is type(None) else a for a in allowed)
        if float in allowed:
            allowed += (int,)
        out[name] = allowed
    return out


def args_from_params(
    params: dict, source: str, required: tuple[str, ...] = ("dim", "n_layers", "n_heads")
) -> ModelArgs:
    """ModelArgs from a params.json mapping; unknown, missing or ill-typed fields are errors naming the field."""
    if not isinstance(params, dict):
        raise CheckpointError(f"{source}: expected a JSON object of model fields, found {type(params).__name__}")
    types_ = _field_types()
    for key, value in params.items():
        if key not in types_:
            close = difflib.get_close_matches(key, list(types_), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise CheckpointError(f"{source}: unknown field '{key}'{hint}")
        ok = isinstance(value, types_[key]) and not (isinstance(value, bool) and bool not in types_[key])
        if not ok:
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types_[key])
            raise CheckpointError(f"{source}: field '{key}' must be {want}, found {value!r}")
    missing = [k for k in required if k not in params]
    if missing:
        raise CheckpointError(f"{source}: missing field(s) {', '.join(missing)}")
    args = ModelArgs(**params)
    for key in ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "max_seq_len"):
        if getattr(args, key) <= 0:
            raise CheckpointError(f"{source}: field '{key}' must be positive, found {getattr(args, key)}")
    try:
        args.validate()
    except ValueError as e:
        raise CheckpointError(f"{source}: inconsistent fields: {e}") from None
    return args


def read_params(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from None


# ---- state dicts ----
def expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every parameter name and shape of a model with these args (built on the meta device, no memory)."""
    with torch.device("meta"):
        model = Transformer(args)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(
    shapes: dict[str, tuple[int, ...]], args: ModelArgs, source: str, rename: dict[str, str] | None = None
) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped tensor (expected names are
    Meta's, or `rename[meta_name]` for files in another naming scheme)."""
    want = {(rename or {}).get(k, k): s for k, s in expected_shapes(args).items()}
    problems = [f"missing tensor '{k}' (expected shape {list(s)})" for k, s in want.items() if k not in shapes]
    problems += [f"unexpected tensor '{k}' (shape {list(s)})" for k, s in shapes.items() if k not in want]
    problems += [
        f"tensor '{k}' has shape {list(shapes[k])}, expected {list(s)}"
        for k, s in want.items()
        if k in shapes and tuple(shapes[k]) != s
    ]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise CheckpointError(f"{source} does not match its model config: " + "; ".join(problems[:8]) + more)


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta names without wrapper prefixes (torch.compile, activation checkpointing, DDP), full contiguous
    tensors (DTensors gathered: call on every rank, or pass a full state dict)."""
    out = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.replace(prefix, "")
        if hasattr(value, "full_tensor"):
            value = value.full_tensor()
        out[key] = value.detach().contiguous()
    return out


def model_from_state_dict(
    args: ModelArgs, state_dict: dict[str, torch.Tensor], device: str | torch.device = "cpu"
) -> Transformer:
    """Build on the meta device and adopt the given tensors as parameters (no random init, no extra copy)."""
    check_state_dict({k: tuple(v.shape) for k, v in state_dict.items()}, args, "state dict")
    with torch.device("meta"):
        model = Transformer(args)
    model.load_state_dict({k: v.to(device) for k, v in state_dict.items()}, strict=True, assign=True)
    cos, sin = rope.table(args, device=device)  # non-persistent buffers: recomputed, never stored
    model.rope_cos, model.rope_sin = cos, sin
    return model


# ---- the project's model directory ----
def save_model(
    model: Transformer,
    tokenizer: Tokenizer | None,
    path: str | os.PathLike,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write params.json, model.safetensors and tokenizer/ atomically. Pass `state_dict` to save a full
    state dict gathered elsewhere (e.g. from an FSDP model; `model` may then live on the meta device); `dtype`
    casts floating tensors (e.g. bfloat16). `tokenizer=None` writes no tokenizer/ (training runs whose shards
    name none); load_model needs one."""
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"save_model needs a model.tokenizer.Tokenizer, got {type(tokenizer).__name__}")
    args = model.args
    if tokenizer is not None and tokenizer.vocab_size > args.vocab_size:
        raise CheckpointError(f"tokenizer vocab_size {tokenizer.vocab_size} exceeds the model's {args.vocab_size}")
    sd = clean_state_dict(state_dict if state_dict is not None else model.state_dict())
    check_state_dict({k: tuple(v.shape) for k, v in sd.items()}, args, "model state dict")
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).cpu() for k, v in sd.items()}
    with atomic.directory(path) as tmp:
        (tmp / PARAMS_FILE).write_text(json.dumps(args_to_params(args), indent=2) + "\n", encoding="utf-8")
        save_file(sd, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "herd": "model/1"})
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER_DIR)
    return Path(path)


def safetensors_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in `files`, read from the headers only (no tensor data)."""
    shapes, where = {}, {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"weights file {file} does not exist")
        try:
            with safe_open(str(file), framework="pt") as f:
                names = f.keys()
                for key in names:
                    if key in where:
                        raise CheckpointError(f"tensor '{key}' appears in both {where[key]} and {file}")
                    shapes[key], where[key] = tuple(f.get_slice(key).get_shape()), file
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{file}: not a readable safetensors file: {e}") from None
    return shapes


def load_safetensors(
    files: list[Path], device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Every tensor of `files` on `device`; with `dtype`, floating tensors are cast one at a time as they are read
    (so a float32 file loaded as bf16 never holds both copies of the whole model)."""
    out = {}
    for file in files:
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            names = f.keys()
            for key in names:
                t = f.get_tensor(key)
                out[key] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


def read_safetensors(
    files: list[Path],
    args: ModelArgs,
    device: str | torch.device = "cpu",
    source: str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Check names and shapes from the headers of `files` (before reading any data), then load the tensors."""
    check_state_dict(safetensors_shapes(files), args, source or ", ".join(map(str, files)))
    return load_safetensors(files, device, dtype)


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, dtype: torch.dtype | None = None, **overrides
) -> tuple[Transformer, Tokenizer]:
    """(model, tokenizer) from a directory written by `save_model`. `dtype` casts floating weights;
    `overrides` replace runtime fields (attn_backend, restart_positions, max_seq_len)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    bad = sorted(set(overrides) - set(RUNTIME_FIELDS))
    if bad:
        raise ValueError(f"load_model can only override {RUNTIME_FIELDS}, not {bad}")
    params = read_params(path / PARAMS_FILE)
    args = args_from_params(params, str(path / PARAMS_FILE), required=("dim", "n_layers", "n_heads", "vocab_size"))
    args = dataclasses.replace(args, **overrides)
    sd = read_safetensors([path / WEIGHTS_FILE], args, device, dtype=dtype)
    model = model_from_state_dict(args, sd, device)
    tokenizer = Tokenizer.load(path / TOKENIZER_DIR)
    if tokenizer.vocab_size > args.vocab_size:
        raise CheckpointError(
            f"{path / TOKENIZER_DIR}: tokenizer vocab_size {tokenizer.vocab_size} exceeds the model's {args.vocab_size}"
        )
    return model, tokenizer
