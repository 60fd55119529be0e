"""One rank of the 2-process CPU test (run under torchrun): the same recipe with FSDP2, then with DDP."""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist

from training.config import load_recipe
from training.distributed import DistInfo
from training.trainer import Trainer


def main(recipe_path: str, shards: str, out: str) -> None:
    dist.init_process_group("gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size())
    for mode in ("fsdp", "ddp"):
        recipe = load_recipe(recipe_path, [f"parallel.data_parallel={mode}", "pretrain.micro_batch_rows=2"])
        trainer = Trainer(recipe, recipe.pretrain, Path(out) / mode, shards, phase="pretrain", info=info)
        trainer.fit()
        trainer.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
