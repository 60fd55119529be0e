"""What a Slurm run of an experiment would submit, for `--dry-run`: per-stage resources, the sbatch script of
each stage's job and the job arrays of the data pipeline.

The scripts are rendered by tools.cluster from the same SlurmConfig the run submits with (a stage's job:
`stage_resources(cfg, stage)`; a data segment's job array: the pipeline's `slurm` config), so the printed script
is the one `sbatch` would receive, apart from the run id and the job ids Slurm fills in. No cluster is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from experiments.config import ExperimentConfig
from experiments.executors import stage_resources
from tools import cluster
from tools.cluster import SlurmConfig

RUN_ID = "<run-id>"  # stands for the run directory's name in printed paths


def run_dir(cfg: ExperimentConfig, root: Path) -> Path:
    """Where a new run of `cfg` would live (with RUN_ID for the id the launcher picks)."""
    base = Path(cfg.runs_dir) if Path(cfg.runs_dir).is_absolute() else root / cfg.runs_dir
    return base / cfg.name / (cfg.run_id or RUN_ID)


def stage_sbatch(cfg: ExperimentConfig, stage: str, run: Path, res: SlurmConfig | None = None) -> str:
    """The sbatch script of `stage`'s job (one job; `nodes` x `tasks_per_node` tasks, each running the stage);
    `res`: its resources when they are not stage_resources(cfg, stage)."""
    return cluster.sbatch_script(run / "logs" / stage, res or stage_resources(cfg, stage))


def array_sbatch(res: SlurmConfig, folder: Path, tasks: int) -> str:
    """The sbatch script of one job array of the data pipeline (submitit adds --array=0-(tasks-1)%parallelism)."""
    return cluster.sbatch_script(folder, res, array_tasks=tasks)


@dataclass
class StageJob:
    stage: str
    nodes: int
    gpus_per_node: int
    tasks_per_node: int
    cpus_per_task: int
    mem_gb: float
    timeout_min: int
    partition: str

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def tasks(self) -> int:
        return self.nodes * self.tasks_per_node


def stage_job(cfg: ExperimentConfig, stage: str, res: SlurmConfig | None = None) -> StageJob:
    r: SlurmConfig = res or stage_resources(cfg, stage)
    return StageJob(stage, r.nodes, r.gpus_per_node, r.tasks_per_node, r.cpus_per_task, r.mem_gb, r.timeout_min,
                    r.partition)  # fmt: skip


def jobs_table(jobs: list[StageJob]) -> str:
    """A fixed-width table of the stages' Slurm resources."""
    head = f"{'stage':<28}{'nodes':>7}{'GPUs/node':>11}{'tasks/node':>12}{'GPUs':>8}{'CPUs/task':>11}{'mem GB':>8}"
    head += f"{'time limit':>12}  partition"
    lines = [head]
    for j in jobs:
        hours = f"{j.timeout_min / 60:g} h"
        lines.append(f"{j.stage:<28}{j.nodes:>7,}{j.gpus_per_node:>11}{j.tasks_per_node:>12}{j.gpus:>8,}"
                     f"{j.cpus_per_task:>11}{j.mem_gb:>8g}{hours:>12}  {j.partition or '(default)'}")  # fmt: skip
    return "\n".join(lines)
