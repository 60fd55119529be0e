"""Checkpoint interop against independent implementations: transformers' LlamaForCausalLM for Hugging Face
checkpoints, and Meta's own model-parallel resharding (llama_models.checkpoint.reshard_mp) for Meta shards."""

import json
import sys
import types

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from model import convert, interop
from model.checkpoint import CheckpointError, load_model, model_from_state_dict, save_model
from model.llama import build
from model.presets import preset
from model.tokenizer import Tokenizer

ROPE_LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}  # fmt: skip


def meta_reshard():
    """Meta's reshard_mp; llama_models.checkpoint imports fairscale (not installed) only for two MP-rank
    getters that reshard_mp does not use."""
    if "llama_models.checkpoint" not in sys.modules:
        stub = types.ModuleType("fairscale.nn.model_parallel.initialize")
        stub.get_model_parallel_rank = stub.get_model_parallel_world_size = lambda: 0
        for name in ("fairscale", "fairscale.nn", "fairscale.nn.model_parallel"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules.setdefault("fairscale.nn.model_parallel.initialize", stub)
    from llama_models.checkpoint import reshard_mp

    return reshard_mp


def hf_model(seed, **kw):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        max_position_embeddings=8192, rms_norm_eps=1e-5, initializer_range=0.2, attn_implementation="eager", **kw
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises norms to 1; make them random too so the mapping is really tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


HF_CONFIGS = [
    dict(hidden_size=64, intermediate_size=192, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
         vocab_size=300, rope_theta=500000.0, rope_scaling=ROPE_LLAMA3),
    dict(hidden_size=96, intermediate_size=256, num_attention_heads=6, num_key_value_heads=3, num_hidden_layers=3,
         vocab_size=211, rope_theta=10000.0, tie_word_embeddings=True),
    dict(hidden_size=128, intermediate_size=352, num_attention_heads=8, num_key_value_heads=1, num_hidden_layers=1,
         vocab_size=128, rope_theta=500000.0, rope_scaling=ROPE_LLAMA3),
]  # fmt: skip


@pytest.mark.parametrize("i", range(len(HF_CONFIGS)))
def test_hf_to_ours_logits_match_transformers(tmp_path, i):
    hf = hf_model(i, **HF_CONFIGS[i])
    hf.save_pretrained(tmp_path / "hf")
    args, sd = interop.read_hf(tmp_path / "hf")
    ours = model_from_state_dict(args, sd).eval()
    assert args.use_scaled_rope == ("rope_scaling" in HF_CONFIGS[i]) and args.ffn_hidden == hf.config.intermediate_size
    tokens = torch.randint(0, hf.config.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)
    # And back: our HF writer reproduces every tensor of the original bit for bit.
    interop.write_hf(args, sd, tmp_path / "back")
    original = load_file(tmp_path / "hf" / "model.safetensors")
    back = load_file(tmp_path / "back" / "model.safetensors")
    if HF_CONFIGS[i].get("tie_word_embeddings"):
        original["lm_head.weight"] = original["model.embed_tokens.weight"]
    assert original.keys() == back.keys() and all(torch.equal(original[k], back[k]) for k in original)


def test_ours_to_hf_logits_match_transformers(tmp_path):
    ours = build(preset("tiny", n_layers=3, vocab_size=320, use_scaled_rope=True, max_seq_len=512), seed=1).eval()
    with torch.no_grad():  # peaky attention, so that positions (and the RoPE scaling) matter to the logits
        for layer in ours.layers.values():
            layer.attention.wq.weight.mul_(6.0)
            layer.attention.wk.weight.mul_(6.0)
    sd = ours.state_dict()
    # Tiny shards force the multi-file layout with an index.
    interop.write_hf(ours.args, sd, tmp_path / "hf", max_shard_bytes=600_000)
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3 and len(index["weight_map"]) == len(sd)
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    assert hf.config.num_key_value_heads == 4 and hf.config.rope_parameters["rope_type"] == "llama3"
    tokens = torch.randint(0, 320, (2, 300))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)
    # Round trip ours -> HF -> ours is bit-exact.
    args, back = interop.read_hf(tmp_path / "hf")
    assert args.ffn_hidden == ours.args.ffn_hidden and args.max_seq_len == 512
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_rope_permutation_is_an_exact_inverse():
    w = torch.randn(8 * 16, 32)
    hf = interop.meta_to_hf_rows(w, 8)
    assert torch.equal(interop.hf_to_meta_rows(hf, 8), w)
    # Within head 0, Meta rows (0, 1) = pair 0 become HF rows (0, 8): dim i pairs with dim i + D/2.
    assert torch.equal(hf[0], w[0]) and torch.equal(hf[8], w[1]) and torch.equal(hf[1], w[2])


def test_meta_shards_merge_like_meta(tmp_path):
    """Shards made by Meta's own resharding code merge back to the original; ours split like Meta's."""
    reshard_mp = meta_reshard()
    args = preset("tiny", n_layers=2, vocab_size=512)
    sd = build(args, seed=2).state_dict()
    for n in (2, 4):  # n_kv_heads = 4: up to 4 ranks each hold whole KV heads
        meta_shards = [reshard_mp([sd], size=n, rank=r) for r in range(n)]
        ours = interop.split_meta_shards(sd, args, n)
        assert all(torch.equal(a[k], b[k]) for a, b in zip(meta_shards, ours) for k in sd)
        merged = interop.merge_meta_shards(meta_shards, args, "test")
        assert all(torch.equal(merged[k], sd[k]) for k in sd)
        # Meta's merge of our shards is the original too.
        assert all(torch.equal(v, sd[k]) for k, v in reshard_mp(ours, size=1, rank=0).items())


def test_meta_more_ranks_than_kv_heads(tmp_path):
    """8 ranks, 4 KV heads (as 405B: MP16, 8 KV heads): Meta goes MP4 -> MP8 by repeating each KV shard."""
    reshard_mp = meta_reshard()
    args = preset("tiny", n_layers=1, vocab_size=512)
    sd = build(args, seed=4).state_dict()
    mp4 = [reshard_mp([sd], size=4, rank=r) for r in range(4)]
    mp8 = [reshard_mp([mp4[r // 2]], size=2, rank=r % 2, repeat_qk_qv=2) for r in range(8)]
    ours = interop.split_meta_shards(sd, args, 8)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(mp8, ours) for k in sd)
    for r, shard in enumerate(mp8):
        torch.save(shard, (tmp_path / f"consolidated.{r:02d}.pth"))
    (tmp_path / "params.json").write_text(json.dumps({k: getattr(args, k) for k in interop.META_PARAMS}))
    back_args, back = interop.read_meta(tmp_path)
    assert back_args.kv_heads == 4 and all(torch.equal(back[k], sd[k]) for k in sd)
    # Copies that disagree are an error, not a silent pick.
    mp8[3]["layers.0.attention.wk.weight"] += 1
    with pytest.raises(CheckpointError, match="KV-head copies across ranks that differ"):
        interop.merge_meta_shards(mp8, args, "test")


def test_meta_round_trip_and_safe_loading(tmp_path):
    args = preset("tiny", n_layers=2, vocab_size=512, use_scaled_rope=True)
    sd = build(args, seed=5).state_dict()
    interop.write_meta(args, sd, tmp_path / "m", shards=2)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["consolidated.00.pth", "consolidated.01.pth",
                                                                   "params.json"]  # fmt: skip
    params = json.loads((tmp_path / "m" / "params.json").read_text())
    assert params["use_scaled_rope"] is True and "attn_backend" not in params
    back_args, back = interop.read_meta(tmp_path / "m")
    assert back_args.ffn_hidden == args.ffn_hidden and all(torch.equal(back[k], sd[k]) for k in sd)
    # A pickle that is not plain tensors is refused by weights_only loading.
    torch.save({"x": types.SimpleNamespace(a=1)}, tmp_path / "m" / "consolidated.01.pth")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        interop.read_meta(tmp_path / "m")


def test_hf_bad_inputs_are_named(tmp_path):
    hf = hf_model(0, **HF_CONFIGS[0])
    hf.save_pretrained(tmp_path / "hf")
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    weights.pop("model.layers.1.mlp.up_proj.weight")
    weights["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(16, 64)
    save_file(weights, str(tmp_path / "hf" / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        interop.read_hf(tmp_path / "hf")
    assert "missing tensor 'model.layers.1.mlp.up_proj.weight' (expected shape [192, 64])" in str(err.value)
    assert "'model.layers.0.self_attn.k_proj.weight' has shape [16, 64], expected [32, 64]" in str(err.value)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="rope_type 'yarn' is not supported"):
        interop.read_hf(tmp_path / "hf")


def test_convert_cli_chain_keeps_model_and_tokenizer(tmp_path):
    tok = Tokenizer({bytes([i]): i for i in range(256)} | {b"ab": 256, b"abc": 257})
    model = build(preset("tiny", n_layers=2, vocab_size=514), seed=6).eval()
    save_model(model, tok, tmp_path / "herd")
    steps = [("herd", "hf"), ("hf", "meta"), ("meta", "herd")]
    src = tmp_path / "herd"
    for a, b in steps:
        dst = tmp_path / f"{a}-{b}"
        convert.main([f"src={src}", f"src_format={a}", f"dst={dst}", f"dst_format={b}", "shards=2"])
        src = dst
    back, back_tok = load_model(src)
    assert back_tok.ranks == tok.ranks and back_tok.special_tokens == tok.special_tokens
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "herd-hf")  # transformers reads our tokenizer.json
    assert hf_tok("abcab xab")["input_ids"] == tok.encode("abcab xab", bos=True) == [tok.bos_id, 257, 256, 32, 120, 256]
    assert json.loads((tmp_path / "herd-hf" / "config.json").read_text())["bos_token_id"] == tok.bos_id
    convert.main([f"src={tmp_path / 'herd'}", "src_format=herd", f"dst={tmp_path / 'bf16'}", "dst_format=hf",
                  "dtype=bfloat16"])  # fmt: skip
    assert load_file(tmp_path / "bf16" / "model.safetensors")["lm_head.weight"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="needs a tokenizer"):
        interop.write_meta(model.args, model.state_dict(), tmp_path / "notok")
        convert.main([f"src={tmp_path / 'notok'}", "src_format=meta", f"dst={tmp_path / 'x'}", "dst_format=herd"])
    with pytest.raises(ValueError, match="src_format must be one of"):
        convert.main([f"src={tmp_path}", "src_format=gguf", f"dst={tmp_path / 'y'}"])
