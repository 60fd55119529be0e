"""Triton kernels for the Llama 3 hot paths (pure ops: tensors in, tensors out) and CUDA built by Bazel.

`kernels` imports nothing of this repository but `tools`; the swap that puts these ops into model.llama lives in
training (training.kernel_swap). Every name below is the function on every access: the modules that define
them are private (`_swiglu`, `_flash_attention`, ...), so no submodule shadows an export once imported.

Names are imported lazily, so `import kernels` does not decorate any Triton kernel: on a machine without a
GPU, TRITON_INTERPRET=1 can still be set afterwards, before the first kernel is used.
"""

from importlib import import_module

_EXPORTS = {
    "check_runnable": "kernels._triton",
    "fused_linear_cross_entropy": "kernels._cross_entropy",
    "rms_norm": "kernels._rmsnorm",
    "rope_": "kernels._rope",
    "swiglu": "kernels._swiglu",
    "flash_attention": "kernels._flash_attention",
    "flash_attention_varlen": "kernels._flash_attention",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later accesses skip this hook
        return value
    raise AttributeError(f"module 'kernels' has no attribute '{name}'")
