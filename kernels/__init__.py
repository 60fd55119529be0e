"""Triton kernels for the Llama 3 hot paths and CUDA built by Bazel.

Names are imported lazily, so `import kernels` does not decorate any Triton kernel: on a machine without a
GPU, TRITON_INTERPRET=1 can still be set afterwards, before the first kernel is used.
"""

from importlib import import_module

_EXPORTS = {
    "apply": "kernels.modules",
    "OPS": "kernels.modules",
    "KernelsConfig": "kernels.modules",
    "fused_linear_cross_entropy": "kernels.cross_entropy",
    "rms_norm": "kernels.rmsnorm",
    "rope_": "kernels.rope",
    "swiglu": "kernels.swiglu",
    "flash_attention": "kernels.flash_attention",
    "flash_attention_varlen": "kernels.flash_attention",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kernels' has no attribute '{name}'")
