"""The one parser of dtype names in configs ("bfloat16", "float16", "float32")."""

from __future__ import annotations

import torch

from tools.config import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str, key: str = "dtype", *, empty: bool = False) -> torch.dtype | None:
    """The torch dtype called `name`; `empty` allows "" (meaning: keep the stored dtype), which gives None. A wrong
    name is a ConfigError naming `key` and the choices."""
    if empty and name == "":
        return None
    if name not in DTYPES:
        choices = ", ".join(([repr("")] if empty else []) + sorted(DTYPES))
        raise ConfigError(f"{key} must be one of {choices}, got {name!r}")
    return DTYPES[name]
