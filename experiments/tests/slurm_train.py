"""A one-stage training experiment for the Slurm tests: `pretrain` trains the micro model of training's tests
(2 layers, dim 32, byte tokenizer) on a given shard set in the stage's workdir, so a requeued or resumed job
continues from the checkpoints there. With several tasks the job's ranks train data-parallel on gloo."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from experiments.config import ExperimentConfig
from experiments.dag import Stage, StageContext
from training import pretrain as pretrain_phase
from training.config import Recipe
from training.tests.helpers import micro_recipe

STEP_TOKENS = 256  # the micro recipe's batch: 8 rows of 32 tokens


@dataclass
class Config(ExperimentConfig):
    shards: str = ""  # a data.shards set with its tokenizer (training.tests.helpers.text_shards)
    steps: int = 96
    data_parallel: str = "fsdp"  # fsdp | ddp, when the job has several tasks


def recipe(cfg: Config) -> Recipe:
    """The micro recipe for `cfg.steps` steps; checkpoints only on preemption and at the end."""
    return micro_recipe(
        f"pretrain.tokens={cfg.steps * STEP_TOKENS}",
        "pretrain.checkpoint.every_steps=100000",
        f"parallel.data_parallel={cfg.data_parallel}",
    )


def pretrain(ctx: StageContext) -> dict:
    summary = pretrain_phase.run(recipe(ctx.config), ctx.workdir, Path(ctx.config.shards))
    # WORLD_SIZE is exported by training.distributed from submitit's environment in a job of several tasks.
    keep = ("steps", "tokens", "loss", "valid_loss", "resumed_from")
    return {"world": int(os.environ.get("WORLD_SIZE", "1")), **{k: summary[k] for k in keep}}


def stages(cfg: Config) -> list[Stage]:
    return [Stage("pretrain", pretrain)]
