"""The config schema every experiment shares: where runs go, how stages are executed, Slurm resources
(tools.cluster.SlurmConfig)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tools.cluster import SlurmConfig


@dataclass
class ExperimentConfig:
    """Base of every experiment's config schema: extend it with the experiment's component configs."""

    name: str = ""  # empty: the experiment module's name
    run_id: str = ""  # empty: a new id from the start time; `latest`: resume the newest run
    runs_dir: str = "runs"  # relative paths are taken from the repository root
    executor: str = "auto"  # auto | local | slurm | debug
    seed: int = 0
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    # Per-stage overrides of `slurm`, e.g. stage_slurm: {pretrain: {nodes: 2, gpus_per_node: 8}}.
    stage_slurm: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Upper bound on waiting for one stage's job, in minutes (0: no bound beyond the job's own timeout).
    wait_timeout_min: float = 0.0
