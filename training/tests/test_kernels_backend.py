"""The kernel backend (`parallel.kernels`, training/kernel_swap.py): the swap itself, the swapped model (plus the
fused loss) against model.llama's PyTorch path, and a pre-training run on the Triton backend against the reference
backend, all in Triton's interpreter on CPU.

Tolerances (fp32): hidden states and gradients atol = rtol = 1e-5; training losses rtol 1e-4 per step.
"""

import copy
import inspect
import os

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import reference
from model.llama import Attention, RMSNorm, build
from model.presets import preset
from training.kernel_swap import KernelAttention, KernelFeedForward, KernelRMSNorm, apply_kernels, swap
from training.monitor import step_records
from training.tests.helpers import micro_recipe, text_shards
from training.trainer import Trainer

# Before the first kernel module is imported (the kernels package imports them lazily, on first use; nothing
# above imports one): without a GPU the kernels run in Triton's interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return text_shards(tmp_path_factory.mktemp("shards"), chars=40_000)


def tiny_model():
    args = preset("tiny", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=260, multiple_of=32)
    return build(args, seed=0)


def test_swap_changes_classes_and_keeps_the_state():
    model = tiny_model()
    state = copy.deepcopy(model.state_dict())
    swap(model, ops=["rmsnorm", "attention"])
    assert type(model.norm) is KernelRMSNorm and type(model.layers["0"].attention) is KernelAttention
    assert type(model.layers["1"].feed_forward).__name__ == "FeedForward"  # swiglu not asked for
    assert model.layers["0"].attention.kernel_ops == {"attention"}
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    apply_kernels(model, "triton", torch.device("cpu"))  # every op, as parallel.kernels=triton asks
    assert type(model.layers["1"].feed_forward) is KernelFeedForward
    assert model.layers["1"].attention.kernel_ops == {"rope", "attention"}
    apply_kernels(model, "reference", torch.device("cpu"))  # back to PyTorch
    assert type(model.norm) is RMSNorm and type(model.layers["0"].attention) is Attention
    with pytest.raises(ValueError, match="unknown ops"):
        swap(model, ops=["rms_norm"])
    with pytest.raises(ValueError, match="parallel.kernels must be one of reference, triton, got 'cuda'"):
        apply_kernels(model, "cuda", torch.device("cpu"))

    class Wrapped(RMSNorm):
        pass

    model.norm.__class__ = Wrapped
    with pytest.raises(TypeError, match="before wrapping"):
        swap(model)


def test_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch):
    from kernels import _triton

    monkeypatch.setattr(_triton, "INTERPRET", False)  # as if TRITON_INTERPRET was unset when kernels were imported
    with pytest.raises(RuntimeError, match="parallel.kernels=triton on cpu: .*set TRITON_INTERPRET=1"):
        apply_kernels(tiny_model(), "triton", torch.device("cpu"))


def test_swapped_model_and_fused_loss_equal_the_pytorch_path():
    ref = tiny_model()
    ker = swap(copy.deepcopy(ref))
    tokens = torch.randint(0, 256, (2, 29))
    doc_ids = torch.tensor([[0] * 9 + [1] + [2] * 19, [0] * 29])  # a length-1 document
    targets = torch.randint(0, 256, (2, 29))
    targets[0, :4] = -100
    with torch.no_grad():
        torch.testing.assert_close(ker.hidden(tokens, doc_ids), ref.hidden(tokens, doc_ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ker(tokens), ref(tokens), atol=1e-5, rtol=1e-5)  # no doc_ids: plain causal
    ref_loss = F.cross_entropy(ref(tokens, doc_ids).flatten(0, 1), targets.flatten())
    hidden = ker.hidden(tokens, doc_ids).flatten(0, 1)
    ker_loss = kernels.fused_linear_cross_entropy(hidden, ker.output.weight, targets.flatten())
    torch.testing.assert_close(ker_loss, ref_loss, atol=1e-5, rtol=1e-5)
    ref_loss.backward()
    ker_loss.backward()
    for (name, p), q in zip(ref.named_parameters(), ker.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_triton_backend_trains_like_the_reference_backend(shards, tmp_path):
    losses, states = {}, {}
    for backend in ("reference", "triton"):
        recipe = micro_recipe(f"parallel.kernels={backend}")
        run = Trainer(recipe, recipe.pretrain, tmp_path / backend, shards, phase="pretrain")
        if backend == "triton":  # parallelize swapped every op
            assert type(run.model.layers["0"].attention) is KernelAttention and type(run.model.norm) is KernelRMSNorm
        run.fit(until_tokens=768)
        losses[backend] = [r["loss"] for r in step_records(tmp_path / backend / "metrics.jsonl")]
        states[backend] = run.model.state_dict()
    assert len(losses["triton"]) == 3
    # Observed: equal fp32 losses (6.7566, 6.7551, 6.4171) and parameters within 1.7e-6 after 3 AdamW steps.
    assert losses["triton"] == pytest.approx(losses["reference"], rel=1e-4)
    assert losses["reference"][-1] < losses["reference"][0]  # it learns
    for name, value in states["reference"].items():
        torch.testing.assert_close(states["triton"][name], value, atol=1e-4, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    # The exports are still the functions after the swap and a run through them.
    for name in kernels.__all__:
        assert inspect.isfunction(getattr(kernels, name)), name
    a, b = torch.randn(4, 9), torch.randn(4, 9)
    torch.testing.assert_close(kernels.swiglu(a, b), reference.swiglu(a, b))
