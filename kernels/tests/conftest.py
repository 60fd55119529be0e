"""Kernel tests run Triton's interpreter on CPU tensors: TRITON_INTERPRET must be set before any kernel module
is decorated, i.e. before the test modules import them (the kernels package itself imports them lazily)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
