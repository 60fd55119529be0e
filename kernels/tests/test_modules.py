"""kernels.apply on model.llama.Transformer: the swap itself, and the model with every kernel (plus the fused
loss) against the PyTorch path: one forward/backward, then a short training run on real text.

Tolerances (fp32): hidden states and gradients atol = rtol = 1e-5; training losses atol 1e-4 per step.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.modules import KernelAttention, KernelFeedForward, KernelRMSNorm
from model.attention import doc_ids_from_eos
from model.llama import Attention, RMSNorm, build
from model.presets import preset
from tools import assets

EOS = 256  # byte-level tokens 0..255, then the end-of-document token


def tiny_model():
    args = preset("tiny", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=260, multiple_of=32)
    return build(args, seed=0)


def test_apply_swaps_classes_and_keeps_the_state():
    model = tiny_model()
    state = copy.deepcopy(model.state_dict())
    kernels.apply(model, ops=["rmsnorm", "attention"])
    assert type(model.norm) is KernelRMSNorm and type(model.layers["0"].attention) is KernelAttention
    assert type(model.layers["1"].feed_forward).__name__ == "FeedForward"  # swiglu not asked for
    assert model.layers["0"].attention.kernel_ops == {"attention"}
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    kernels.apply(model, kernels.KernelsConfig(ops=list(kernels.OPS)).ops)  # all ops, as a training config names them
    assert type(model.layers["1"].feed_forward) is KernelFeedForward
    kernels.apply(model, ops=[])  # back to PyTorch
    assert type(model.norm) is RMSNorm and type(model.layers["0"].attention) is Attention
    with pytest.raises(ValueError, match="unknown ops"):
        kernels.apply(model, ops=["rms_norm"])

    class Wrapped(RMSNorm):
        pass

    model.norm.__class__ = Wrapped
    with pytest.raises(TypeError, match="before wrapping"):
        kernels.apply(model)


def essays(n_bytes):
    """The first n_bytes of four Paul Graham essays, each ended by EOS, packed into one stream."""
    folder = assets.path("niah/paul_graham_essays")
    names = ("addiction.txt", "apple.txt", "avg.txt", "before.txt")
    return torch.tensor(sum((list((folder / name).read_bytes()[:n_bytes]) + [EOS] for name in names), []))


def batch(stream, step, B, T):
    """B rows of T + 1 tokens from the stream; doc_ids from the EOS tokens (several documents per row)."""
    rows = torch.stack([stream[(step * B + b) * T % (len(stream) - T - 1) :][: T + 1] for b in range(B)])
    tokens, targets = rows[:, :-1], rows[:, 1:]
    return tokens, targets, doc_ids_from_eos(tokens, EOS)


def reference_loss(model, tokens, targets, doc_ids):
    return F.cross_entropy(model(tokens, doc_ids).flatten(0, 1), targets.flatten())


def kernel_loss(model, tokens, targets, doc_ids):
    hidden = model.hidden(tokens, doc_ids)
    return kernels.fused_linear_cross_entropy(hidden.flatten(0, 1), model.output.weight, targets.flatten())


def test_forward_backward_equal_reference():
    ref = tiny_model()
    ker = kernels.apply(copy.deepcopy(ref))
    tokens = torch.randint(0, 256, (2, 29))
    doc_ids = torch.tensor([[0] * 9 + [1] + [2] * 19, [0] * 29])  # a length-1 document
    targets = torch.randint(0, 256, (2, 29))
    targets[0, :4] = -100
    with torch.no_grad():
        torch.testing.assert_close(ker.hidden(tokens, doc_ids), ref.hidden(tokens, doc_ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ker(tokens), ref(tokens), atol=1e-5, rtol=1e-5)  # no doc_ids: plain causal
    ref_loss, ker_loss = reference_loss(ref, tokens, targets, doc_ids), kernel_loss(ker, tokens, targets, doc_ids)
    torch.testing.assert_close(ker_loss, ref_loss, atol=1e-5, rtol=1e-5)
    ref_loss.backward()
    ker_loss.backward()
    for (name, p), q in zip(ref.named_parameters(), ker.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_training_losses_match_reference():
    stream = essays(40)
    losses = {}
    for name, loss_fn in (("reference", reference_loss), ("kernels", kernel_loss)):
        model = tiny_model()
        if name == "kernels":
            kernels.apply(model)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
        losses[name] = []
        for step in range(4):
            loss = loss_fn(model, *batch(stream, step, B=2, T=32))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    ref, ker = torch.tensor(losses["reference"]), torch.tensor(losses["kernels"])
    torch.testing.assert_close(ker, ref, atol=1e-4, rtol=0)
    assert ref[-1] < ref[0] - 0.2, ref  # it trains (5.74 -> 5.37 over 4 steps)
