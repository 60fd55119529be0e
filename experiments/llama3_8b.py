"""The Llama 3 8B pre-training recipe as Slurm jobs (training/configs/llama3_8b.yaml; experiments/paper_scale.py).

Print the plan: ./bazelw run //experiments:llama3_8b -- --dry-run
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.paper_plan import render as dry_run
from experiments.paper_scale import PaperConfig, preflight, stages

__all__ = ["Config", "dry_run", "preflight", "stages"]


@dataclass
class Config(PaperConfig):
    recipe: str = "llama3_8b"
