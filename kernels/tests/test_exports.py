"""Every name `kernels` exports is the function on every access: called on first access, again, and again after
every kernels submodule has been imported (importing a submodule named like an export used to replace the
function by the module: `kernels.swiglu(a, b)` -> TypeError: 'module' object is not callable); each call is
checked against kernels.reference (fp32, atol = rtol = 1e-5)."""

import importlib
import inspect
from pathlib import Path

import pytest
import torch

import kernels
from kernels import reference

ROOT = Path(kernels.__file__).parent


def calls():
    """name -> (a call of kernels.<name> on small CPU inputs, what the reference gives)."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 16, generator=gen), torch.rand(16, generator=gen) + 0.5
    a, b = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    q, k, v = (torch.randn(1, 12, h, 8, generator=gen) for h in (2, 1, 1))
    doc_ids = torch.tensor([[0] * 5 + [1] * 7])
    cos, sin = reference.rope_angles(torch.arange(12), 8)
    hidden, weight, targets = torch.randn(6, 16, generator=gen), torch.randn(20, 16, generator=gen), torch.arange(6)
    cu = torch.tensor([0, 5, 12])

    def varlen_reference():
        return reference.attention(q, k, v, doc_ids)[0]

    return {
        "rms_norm": (lambda: kernels.rms_norm(x, w, 1e-5), lambda: reference.rms_norm(x, w, 1e-5)),
        "swiglu": (lambda: kernels.swiglu(a, b), lambda: reference.swiglu(a, b)),
        "rope_": (
            lambda: kernels.rope_(q.clone(), k.clone(), cos, sin),
            lambda: (reference.rope(q, cos, sin), reference.rope(k, cos, sin)),
        ),
        "flash_attention": (
            lambda: kernels.flash_attention(q, k, v, doc_ids),
            lambda: reference.attention(q, k, v, doc_ids),
        ),
        "flash_attention_varlen": (lambda: kernels.flash_attention_varlen(q[0], k[0], v[0], cu), varlen_reference),
        "fused_linear_cross_entropy": (
            lambda: kernels.fused_linear_cross_entropy(hidden, weight, targets),
            lambda: torch.nn.functional.cross_entropy(hidden @ weight.t(), targets),
        ),
        "check_runnable": (lambda: kernels.check_runnable("cpu"), lambda: None),  # the interpreter is on here
    }


def test_every_export_is_the_function_on_every_access():
    table = calls()
    assert set(table) == set(kernels.__all__)
    submodules = sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "__init__")
    assert not set(submodules) & set(kernels.__all__)  # no module can shadow an export
    for round_ in ("first access", "second access", "after importing every submodule"):
        if round_.startswith("after"):
            for name in submodules:
                importlib.import_module(f"kernels.{name}")
        for name, (call, want) in table.items():
            assert inspect.isfunction(getattr(kernels, name)), (round_, name, getattr(kernels, name))
            torch.testing.assert_close(call(), want(), atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_check_runnable_names_the_device():
    with pytest.raises(RuntimeError, match="not on meta"):
        kernels.check_runnable("meta")

