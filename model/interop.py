"""Checkpoint interop: Meta's consolidated format and Hugging Face Llama safetensors, both directions.

Meta: params.json + consolidated.NN.pth, one file per model-parallel rank (fairscale). Column-parallel weights
(wq, wk, wv, w1, w3, output, and the Llama 3 VocabParallelEmbedding) are split along dim 0, row-parallel ones
(wo, w2) along dim 1, norms are replicated. When there are more ranks than KV heads (405B at MP16), each rank
holds a copy of its KV head: rank r has KV head r // (ranks / n_kv_heads).

Hugging Face: config.json + model.safetensors (or model-0000i-of-0000N.safetensors + index). HF applies RoPE
with rotate_half (dim i pairs with i + D/2) where Meta rotates adjacent pairs (2i, 2i+1), so wq/wk rows are
permuted per head: HF row j*(D/2) + i = Meta row 2i + j. The tokenizer travels as tokenizer.json and
tokenizer_config.json, whose Jinja `chat_template` renders the Llama 3 chat format of model.dialog, so
`AutoTokenizer.apply_chat_template` gives herd's chat ids (limits in CHAT_TEMPLATE's comment).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from model.bpe import hf_tokenizer
from model.checkpoint import (
    CheckpointError,
    args_from_params,
    check_state_dict,
    load_safetensors,
    read_params,
    safetensors_shapes,
)
from model.llama import ModelArgs
from model.tokenizer import Tokenizer
from tools import atomic

# Llama 3.1 RoPE scaling as written in HF configs (the only scaling model/rope.py implements).
LLAMA3_ROPE_SCALING = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}
META_PARAMS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "ffn_dim_multiplier",
               "norm_eps", "rope_theta", "use_scaled_rope")  # fmt: skip
_COLUMN = re.compile(r"(attention\.w[qkv]|feed_forward\.w[13])\.weight$|^output\.weight$")
_ROW = re.compile(r"(attention\.wo|feed_forward\.w2)\.weight$")
_IGNORED_META = {"rope.freqs"}  # Llama 2 checkpoints store the RoPE table; it is recomputed
# Tokenizer.encode_chat / model.dialog.encode_dialog as Jinja: <|begin_of_text|>, then per message
# <|start_header_id|>role<|end_header_id|>\n\n content <|eot_id|> ("tool" is the ipython role); with
# add_generation_prompt an open assistant header. The content is not trimmed (herd encodes it as given). HF
# tokenises the rendered text, so its ids equal herd's unless a content (1) starts with whitespace holding a line
# break (HF reads it together with the header's "\n\n", herd encodes the two apart) or (2) holds special-token
# text such as "<|eot_id|>" (HF reads the special token; herd, and HF's sanitize_control_tokens=True, read text,
# but the latter encodes it apart from its neighbours).
CHAT_TEMPLATE = (
    "{{- '<|begin_of_text|>' }}"
    "{%- for message in messages %}"
    "{%- set role = 'ipython' if message['role'] == 'tool' else message['role'] %}"
    "{{- '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


# ---- RoPE layout ----
def meta_to_hf_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute wq/wk rows from adjacent-pair RoPE (Meta) to rotate_half RoPE (HF), per head."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def hf_to_meta_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


# ---- Meta consolidated ----
def meta_shard_files(path: Path) -> list[Path]:
    files = sorted(path.glob("consolidated.*.pth"))
    if not files:
        raise FileNotFoundError(f"{path} holds no consolidated.NN.pth files")
    numbers = [int(f.name.split(".")[1]) for f in files]
    if numbers != list(range(len(files))):
        raise CheckpointError(f"{path}: shard files must be consolidated.00 .. {len(files) - 1:02d}, found {numbers}")
    return files


def merge_meta_shards(shards: list[dict[str, torch.Tensor]], args: ModelArgs, source: str) -> dict[str, torch.Tensor]:
    """Concatenate model-parallel shards along each weight's parallel dimension (see the module docstring)."""
    n = len(shards)
    for i, shard in enumerate(shards[1:], 1):
        if shard.keys() != shards[0].keys():
            diff = sorted(shard.keys() ^ shards[0].keys())[:5]
            raise CheckpointError(f"{source}: shard {i} holds different tensors than shard 0: {diff}")
    kv_rows = args.kv_heads * args.head_dim
    out = {}
    for key, first in shards[0].items():
        if key in _IGNORED_META:
            continue
        parts = [s[key] for s in shards]
        if n == 1:
            out[key] = first
        elif key == "tok_embeddings.weight":
            # Llama 3: VocabParallelEmbedding (vocab split, dim 0); Llama 2: ParallelEmbedding (dim split, dim 1).
            out[key] = torch.cat(parts, dim=0 if first.shape[1] == args.dim else 1)
        elif _COLUMN.search(key):
            out[key] = torch.cat(parts, dim=0)
        elif _ROW.search(key):
            out[key] = torch.cat(parts, dim=1)
        else:
            out[key] = first  # norms: replicated on every rank
        if re.search(r"attention\.w[kv]\.weight$", key) and out[key].shape[0] > kv_rows and n > args.kv_heads:
            out[key] = _dedupe_kv(out[key], args, n, key, source)
    return out


def _dedupe_kv(w: torch.Tensor, args: ModelArgs, n: int, key: str, source: str) -> torch.Tensor:
    """More ranks than KV heads: rank r holds a copy of KV head r // rep; keep one copy of each."""
    rep = n // args.kv_heads
    if w.shape[0] != args.kv_heads * rep * args.head_dim:
        return w  # let the shape check report it
    copies = w.view(args.kv_heads, rep, args.head_dim, -1)
    if not all(torch.equal(copies[:, 0], copies[:, r]) for r in range(1, rep)):
        raise CheckpointError(f"{source}: '{key}' has {rep} KV-head copies across ranks that differ")
    return copies[:, 0].reshape(args.kv_heads * args.head_dim, -1).clone()


def split_meta_shards(sd: dict[str, torch.Tensor], args: ModelArgs, n: int) -> list[dict[str, torch.Tensor]]:
    """The inverse of merge_meta_shards: the state dict of each of `n` model-parallel ranks."""
    if args.n_heads % n or (args.kv_heads % n and n % args.kv_heads) or args.vocab_size % n:
        raise ValueError(f"cannot split heads {args.n_heads}/{args.kv_heads}, vocab {args.vocab_size} over {n} ranks")
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for key, w in sd.items():
        if re.search(r"attention\.w[kv]\.weight$", key) and n > args.kv_heads:
            heads = w.view(args.kv_heads, args.head_dim, -1)
            parts = [heads[r // (n // args.kv_heads)].clone() for r in range(n)]
        elif key == "tok_embeddings.weight" or _COLUMN.search(key):
            parts = [p.clone() for p in w.chunk(n, dim=0)]
        elif _ROW.search(key):
            parts = [p.clone() for p in w.chunk(n, dim=1)]
        else:
            parts = [w.clone() for _ in range(n)]
        for shard, part in zip(shards, parts):
            shard[key] = part
    return shards


def read_meta(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ModelArgs, dict[str, torch.Tensor]]:
    """(args, merged state dict) from a Meta checkpoint directory. Safe loading: torch.load(weights_only=True)."""
    path = Path(path)
    params_path = path / "params.json"
    args = args_from_params(read_params(params_path), str(params_path), required=("dim", "n_layers", "n_heads"))
    if args.vocab_size <= 0:
        raise CheckpointError(f"{params_path}: vocab_size must be set, found {args.vocab_size}")
    files = meta_shard_files(path)
    shards = []
    for f in files:
        try:
            shards.append(torch.load(f, map_location=device, weights_only=True, mmap=True))
        except Exception as e:
            raise CheckpointError(f"{f}: cannot be loaded safely (weights_only=True): {e}") from None
    sd = merge_meta_shards(shards, args, str(path))
    check_state_dict({k: tuple(v.shape) for k, v in sd.items()}, args, f"{path} ({len(files)} shard(s))")
    return args, sd


def write_meta(
    args: ModelArgs,
    sd: dict[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    shards: int = 1,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """params.json (Meta's fields only) + consolidated.NN.pth for `shards` model-parallel ranks, atomically."""
    check_state_dict({k: tuple(v.shape) for k, v in sd.items()}, args, "state dict")
    params = {k: getattr(args, k) for k in META_PARAMS}
    with atomic.directory(path) as tmp:
        (tmp / "params.json").write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
        for i, shard in enumerate(split_meta_shards(sd, args, shards) if shards > 1 else [sd]):
            torch.save({k: v.contiguous().cpu() for k, v in shard.items()}, tmp / f"consolidated.{i:02d}.pth")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return Path(path)


# ---- Hugging Face ----
def _hf_names(args: ModelArgs) -> dict[str, str]:
    """HF tensor name -> Meta tensor name."""
    names = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
             "lm_head.weight": "output.weight"}  # fmt: skip
    per_layer = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
                 "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
                 "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
                 "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
                 "post_attention_layernorm": "ffn_norm"}  # fmt: skip
    for i in range(args.n_layers):
        for hf, meta in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"layers.{i}.{meta}.weight"
    return names


def ffn_rounding(dim: int, hidden: int) -> tuple[int, float | None]:
    """(multiple_of, ffn_dim_multiplier) that reproduce an FFN width, preferring Meta's released values."""
    for multiple_of in (1024, 4096, 256, 512, 2048, 128, 64, 32, 16, 8):
        for mult in (None, 1.3, 1.2, 1.5, 1.0, 1.4, 2.0):
            if ModelArgs(dim=dim, multiple_of=multiple_of, ffn_dim_multiplier=mult).ffn_hidden == hidden:
                return multiple_of, mult
    base = int(2 * 4 * dim / 3)
    return 1, (hidden + 0.5) / base  # int(mult * base) == hidden exactly, rounding to a multiple of 1


def args_from_hf_config(config: dict, source: str) -> ModelArgs:
    """ModelArgs from a Hugging Face LlamaConfig dict; anything this architecture cannot express is an error."""

    def get(key, default=None, required=False):
        if required and key not in config:
            raise CheckpointError(f"{source}: missing field '{key}'")
        return config.get(key, default)

    if get("model_type", "llama") != "llama":
        raise CheckpointError(f"{source}: model_type must be 'llama', found {config['model_type']!r}")
    for key, want in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if get(key, want) != want:
            raise CheckpointError(f"{source}: field '{key}' must be {want!r} for Llama 3, found {config[key]!r}")
    dim, n_heads = get("hidden_size", required=True), get("num_attention_heads", required=True)
    if get("head_dim") not in (None, dim // n_heads):
        raise CheckpointError(f"{source}: head_dim {config['head_dim']} != hidden_size / num_attention_heads")
    rope = dict(get("rope_parameters") or {})
    scaling = get("rope_scaling") or ({k: v for k, v in rope.items() if k != "rope_theta"} if rope else None)
    theta = get("rope_theta", rope.get("rope_theta", 500000.0))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind not in ("default", "llama3"):
        raise CheckpointError(f"{source}: rope_type {kind!r} is not supported (only default and llama3)")
    if kind == "llama3":
        for key, want in LLAMA3_ROPE_SCALING.items():
            if key != "rope_type" and float(scaling.get(key, -1)) != float(want):
                raise CheckpointError(f"{source}: rope scaling '{key}' must be {want} (Llama 3.1), found {scaling}")
    multiple_of, mult = ffn_rounding(dim, get("intermediate_size", required=True))
    params = {
        "dim": dim,
        "n_layers": get("num_hidden_layers", required=True),
        "n_heads": n_heads,
        "n_kv_heads": get("num_key_value_heads", n_heads),
        "vocab_size": get("vocab_size", required=True),
        "multiple_of": multiple_of,
        "ffn_dim_multiplier": mult,
        "norm_eps": float(get("rms_norm_eps", 1e-5)),
        "rope_theta": float(theta),
        "use_scaled_rope": kind == "llama3",
        "max_seq_len": get("max_position_embeddings", 8192),
    }
    return args_from_params(params, source)


def hf_config(args: ModelArgs, dtype: torch.dtype = torch.float32, bos_id: int | None = None, eos_id=None) -> dict:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.ffn_hidden,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "vocab_size": args.vocab_size,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "rope_scaling": dict(LLAMA3_ROPE_SCALING) if args.use_scaled_rope else None,
        "max_position_embeddings": args.max_seq_len,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    if bos_id is not None:
        config["bos_token_id"] = bos_id
    if eos_id is not None:
        config["eos_token_id"] = eos_id
    return config


def hf_tokenizer_files(tok: Tokenizer, model_max_length: int) -> dict[str, bytes]:
    """tokenizer.json and tokenizer_config.json (with the chat template) for a Hugging Face directory. The end of
    a chat turn, <|eot_id|>, is a stop token in config.json's eos_token_id (hf_config)."""
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
              "eos_token": "<|end_of_text|>", "model_max_length": model_max_length,
              "chat_template": CHAT_TEMPLATE}  # fmt: skip
    return {
        "tokenizer.json": hf_tokenizer(tok).to_str().encode(),
        "tokenizer_config.json": (json.dumps(config, indent=2) + "\n").encode(),
    }


def hf_weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: expected {{'weight_map': {{tensor: file}}}}: {e}") from None
        return [path / name for name in sorted(set(weight_map.values()))]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    raise FileNotFoundError(f"{path} holds neither model.safetensors nor model.safetensors.index.json")


def read_hf(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ModelArgs, dict[str, torch.Tensor]]:
    """(args, state dict with Meta names and Meta RoPE layout) from a Hugging Face Llama directory."""
    path = Path(path)
    config_path = path / "config.json"
    config = read_params(config_path)
    args = args_from_hf_config(config, str(config_path))
    files = hf_weight_files(path)
    names = _hf_names(args)
    # Names and shapes are checked from the file headers before any tensor is read.
    shapes = {k: s for k, s in safetensors_shapes(files).items() if not k.endswith("rotary_emb.inv_freq")}
    untie = config.get("tie_word_embeddings") and "lm_head.weight" not in shapes
    if untie and "model.embed_tokens.weight" in shapes:
        shapes["lm_head.weight"] = shapes["model.embed_tokens.weight"]  # ours has its own output head
    check_state_dict(shapes, args, f"{path} (Hugging Face)", rename={m: h for h, m in names.items()})
    raw = load_safetensors(files, device)
    if untie:
        raw["lm_head.weight"] = raw["model.embed_tokens.weight"].clone()
    return args, from_hf_state_dict(args, raw)


def from_hf_state_dict(args: ModelArgs, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF names and rotate_half rows -> Meta names and adjacent-pair rows (unknown names are dropped)."""
    names = _hf_names(args)
    sd = {names[k]: v for k, v in raw.items() if k in names}
    for i in range(args.n_layers):
        sd[f"layers.{i}.attention.wq.weight"] = hf_to_meta_rows(sd[f"layers.{i}.attention.wq.weight"], args.n_heads)
        sd[f"layers.{i}.attention.wk.weight"] = hf_to_meta_rows(sd[f"layers.{i}.attention.wk.weight"], args.kv_heads)
    return {k: v.contiguous() for k, v in sd.items()}


def to_hf_state_dict(args: ModelArgs, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta names and rows -> a LlamaForCausalLM state dict."""
    to_hf = {meta: hf for hf, meta in _hf_names(args).items()}
    out = {}
    for key, w in sd.items():
        if key.endswith("attention.wq.weight"):
            w = meta_to_hf_rows(w, args.n_heads)
        elif key.endswith("attention.wk.weight"):
            w = meta_to_hf_rows(w, args.kv_heads)
        out[to_hf[key]] = w.contiguous()
    return out


def write_hf(
    args: ModelArgs,
    sd: dict[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    max_shard_bytes: int = 5 * 2**30,
    bos_id: int | None = None,
    eos_id: int | list[int] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """config.json + safetensors (sharded with an index above max_shard_bytes), atomically."""
    check_state_dict({k: tuple(v.shape) for k, v in sd.items()}, args, "state dict")
    out = {k: v.cpu() for k, v in to_hf_state_dict(args, sd).items()}
    dtype = next(iter(out.values())).dtype
    # Greedy sharding in name order: a new file whenever the next tensor would overflow the current one.
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(out, key=_hf_sort_key):
        nbytes = out[key].numel() * out[key].element_size()
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][key] = out[key]
        size += nbytes
    with atomic.directory(path) as tmp:
        config = hf_config(args, dtype, bos_id, eos_id)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if len(groups) == 1:
            save_file(groups[0], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, group in enumerate(groups, 1):
                name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
                save_file(group, str(tmp / name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(group, name))
            total = sum(t.numel() * t.element_size() for t in out.values())
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return Path(path)


def _hf_sort_key(name: str):
    m = re.match(r"model\.layers\.(\d+)\.", name)
    return (0, 0, name) if name.startswith("model.embed") else (1, int(m.group(1)), name) if m else (2, math.inf, name)
