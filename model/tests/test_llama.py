import pytest
import torch

from model.accounting import param_count
from model.attention import doc_ids_from_eos, document_positions
from model.llama import build
from model.presets import preset


@pytest.mark.parametrize("name, count", [("8b", 8_030_261_248), ("70b", 70_553_706_496), ("405b", 405_853_388_800)])
def test_paper_parameter_counts_on_meta_device(name, count):
    model = build(preset(name), device="meta")
    assert sum(p.numel() for p in model.parameters()) == param_count(preset(name)) == count
    assert all(p.is_meta for p in model.parameters())


def test_ffn_width_rounding():
    assert (preset("8b").ffn_hidden, preset("70b").ffn_hidden, preset("405b").ffn_hidden) == (14336, 28672, 53248)


def tiny(**kw):
    return build(preset("tiny", n_layers=2, vocab_size=512, **kw), seed=0)


def test_document_two_is_unaffected_by_document_one():
    model = tiny()
    torch.manual_seed(1)
    tokens = torch.randint(0, 512, (2, 48))
    doc_ids = torch.tensor([[0] * 20 + [1] * 28, [0] * 5 + [1] * 40 + [2] * 3])
    with torch.no_grad():
        base = model(tokens, doc_ids)
        changed = tokens.clone()
        changed[0, :20] = torch.randint(0, 512, (20,))
        changed[1, :5] = torch.randint(0, 512, (5,))
        out = model(changed, doc_ids)
    assert torch.equal(base[0, 20:], out[0, 20:]) and torch.equal(base[1, 5:], out[1, 5:])
    assert (base[0, :20] - out[0, :20]).abs().max() > 1e-3
    # With restarting positions, document 2 alone gives the same logits as inside the pack.
    with torch.no_grad():
        alone = model(tokens[:1, 20:])
    torch.testing.assert_close(alone[0], base[0, 20:], atol=1e-5, rtol=1e-5)


def test_flex_backend_equals_dense_mask_backend():
    dense, flex = tiny(), tiny(attn_backend="flex")
    flex.load_state_dict(dense.state_dict())
    tokens = torch.randint(0, 512, (2, 40))
    doc_ids = torch.tensor([[0] * 7 + [1] * 1 + [2] * 32, [0] * 40])
    with torch.no_grad():
        torch.testing.assert_close(flex(tokens, doc_ids), dense(tokens, doc_ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(flex(tokens), dense(tokens), atol=1e-5, rtol=1e-5)


def test_document_helpers():
    tokens = torch.tensor([[5, 9, 6, 7, 9, 9, 4]])
    doc_ids = doc_ids_from_eos(tokens, eos_id=9)
    assert doc_ids.tolist() == [[0, 0, 1, 1, 1, 2, 3]]
    assert document_positions(doc_ids).tolist() == [[0, 1, 0, 1, 2, 0, 0]]


def test_init_is_depth_scaled_and_deterministic():
    a, b = tiny(), tiny()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    wo0, wo1 = a.layers["0"].attention.wo.weight.std(), a.layers["1"].attention.wo.weight.std()
    assert abs(wo0 / wo1 - (4 / 2) ** 0.5) < 0.1  # 0.02/sqrt(2) vs 0.02/sqrt(4)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="n_kv_heads"):
        build(preset("tiny", n_heads=8, n_kv_heads=3), device="meta")
    with pytest.raises(ValueError, match="max_seq_len"):
        tiny()(torch.zeros(1, 4096, dtype=torch.long))
