"""Model averaging across post-training runs (paper section 4: at the reward-model, SFT and DPO stages, the models
of runs with different data or hyperparameters are averaged).

    sd = average_models([run_a / "model", run_b / "model", run_c / "model"])   # a state dict
    average_into(reward_model, paths)                                            # or straight into a model

The mean is the anneal's (training.anneal.mean_state_dict): float64 sums rounded once, one model loaded at a
time, and every model must have the first's tensor names and shapes (the error names the file and the tensor).
A path is a model directory (model.checkpoint's, holding model.safetensors), a .safetensors file, or a torch
file of tensors, read with torch.load(weights_only=True) so no pickled code runs. A RewardModel's state dict
(backbone.* and head.weight) averages like any other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from training.anneal import mean_state_dict


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a model directory, a .safetensors file or a torch file of tensors (safe loading only)."""
    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no weights (a model directory with model.safetensors, or a file)")
    if file.suffix == ".safetensors":
        return load_file(str(file))
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{file}: cannot be loaded safely (weights_only=True): {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file}: expected a dict of tensors, found {type(state).__name__}")
    return state


def average_models(paths: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """The elementwise mean of the models at `paths`, in the first model's dtypes."""
    return mean_state_dict((str(p), load_weights(p)) for p in paths)


def average_into(model: nn.Module, paths: Sequence[str | os.PathLike]) -> nn.Module:
    """Load the average of `paths` into `model` (strict: the model must have exactly their tensors)."""
    model.load_state_dict(average_models(paths))
    return model
