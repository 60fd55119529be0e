import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import CheckpointError, load_model, save_model
from model.llama import build
from model.presets import preset
from model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer({bytes([i]): i for i in range(256)})  # 256 byte ranks + 256 specials = 512


@pytest.fixture(scope="module")
def model():
    return build(preset("tiny", n_layers=2, vocab_size=512, use_scaled_rope=True), seed=5)


def test_save_load_round_trip(model, tok, tmp_path):
    save_model(model, tok, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.safetensors", "params.json", "tokenizer"]
    params = json.loads((tmp_path / "ckpt" / "params.json").read_text())
    assert params["dim"] == 256 and params["use_scaled_rope"] is True and params["n_kv_heads"] == 4
    back, back_tok = load_model(tmp_path / "ckpt")
    assert back.args == model.args and back_tok.ranks == tok.ranks
    for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    tokens = torch.tensor([tok.encode("round trip", bos=True)])
    with torch.no_grad():
        assert torch.equal(model(tokens), back(tokens))
        assert torch.equal(back.rope_cos, model.rope_cos)
    # Runtime overrides and dtype at load time.
    flex, _ = load_model(tmp_path / "ckpt", attn_backend="flex", dtype=torch.bfloat16)
    assert flex.args.attn_backend == "flex" and flex.output.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="can only override"):
        load_model(tmp_path / "ckpt", dim=128)


def test_save_strips_wrapper_prefixes_and_is_atomic(model, tok, tmp_path):
    compiled_names = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    save_model(model, tok, tmp_path / "c", state_dict=compiled_names, dtype=torch.bfloat16)
    sd = load_file(tmp_path / "c" / "model.safetensors")
    assert "layers.0.attention.wq.weight" in sd and sd["norm.weight"].dtype == torch.bfloat16
    # A failing save leaves the previous directory untouched and no temp directory behind.
    broken = dict(model.state_dict())
    broken.pop("norm.weight")
    with pytest.raises(CheckpointError, match="missing tensor 'norm.weight'"):
        save_model(model, tok, tmp_path / "c", state_dict=broken)
    assert load_file(tmp_path / "c" / "model.safetensors")["norm.weight"].dtype == torch.bfloat16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def _write(tmp_path, model, tok, params=None, tensors=None):
    path = tmp_path / "ckpt"
    save_model(model, tok, path)
    if params is not None:
        (path / "params.json").write_text(json.dumps(params))
    if tensors is not None:
        save_file(tensors, str(path / "model.safetensors"))
    return path


def test_bad_tensors_are_named_with_shapes(model, tok, tmp_path):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["layers.1.feed_forward.w2.weight"] = torch.zeros(256, 100)
    del sd["layers.0.attention.wk.weight"]
    sd["layers.7.attention.wq.weight"] = torch.zeros(2, 2)
    path = _write(tmp_path, model, tok, tensors=sd)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert "missing tensor 'layers.0.attention.wk.weight' (expected shape [128, 256])" in msg
    assert "unexpected tensor 'layers.7.attention.wq.weight' (shape [2, 2])" in msg
    assert "tensor 'layers.1.feed_forward.w2.weight' has shape [256, 100], expected [256, 768]" in msg


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"n_kv_heads": 3}, "inconsistent fields: n_heads 8 is not a multiple of n_kv_heads 3"),
        ({"dims": 256}, "unknown field 'dims' \\(did you mean 'dim'\\?\\)"),
        ({"n_layers": "2"}, "field 'n_layers' must be int, found '2'"),
        ({"use_scaled_rope": 1}, "field 'use_scaled_rope' must be bool"),
        ({"vocab_size": -1}, "field 'vocab_size' must be positive"),
        ({"attn_backend": "xformers"}, "attn_backend must be one of"),
    ],
)
def test_bad_params_are_named(model, tok, tmp_path, change, pattern):
    params = json.loads(json.dumps(model.args.__dict__)) | change
    path = _write(tmp_path, model, tok, params=params)
    with pytest.raises(CheckpointError, match=pattern):
        load_model(path)


def test_missing_fields_and_files(model, tok, tmp_path):
    path = _write(tmp_path, model, tok, params={"dim": 256, "n_layers": 2})
    with pytest.raises(CheckpointError, match="missing field\\(s\\) n_heads, vocab_size"):
        load_model(path)
    (path / "params.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="params.json: not valid JSON"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (path / "params.json").write_text(json.dumps(model.args.__dict__))
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(path)
    with pytest.raises(CheckpointError, match="tokenizer vocab_size 512 exceeds the model's 300"):
        save_model(build(preset("tiny", n_layers=1, vocab_size=300), device="meta"), tok, tmp_path / "x")
