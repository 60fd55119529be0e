"""Data parallelism on CPU: 2 processes on gloo (FSDP2 and DDP) train the same loss curve as one process
with the same global batch, within 1e-5; their sharded checkpoint loads into one process."""

from __future__ import annotations

import subprocess

import pytest
import torch

from model.llama import build
from tools import config as tools_config
from training import checkpoint as ckpt
from training.distributed import DistInfo
from training.monitor import step_records
from training.tests.helpers import micro_recipe, python, text_shards
from training.trainer import Trainer

OVERRIDES = ("pretrain.tokens=3072", "pretrain.checkpoint.every_steps=6")


def test_two_gloo_processes_match_one_process(tmp_path):
    shards = text_shards(tmp_path / "shards", chars=40_000)
    recipe = micro_recipe(*OVERRIDES)
    tools_config.save(recipe, tmp_path / "recipe.yaml")
    proc = python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                  "training.tests.dist_worker", str(tmp_path / "recipe.yaml"), str(shards), str(tmp_path),
                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    # The single-process reference runs meanwhile (8 rows at once, no accumulation).
    single = Trainer(recipe, recipe.pretrain, tmp_path / "single", shards, phase="pretrain")
    single.fit()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]
    ref = [r["loss"] for r in step_records(tmp_path / "single/metrics.jsonl")]
    assert len(ref) == 12 and ref[-1] < ref[0] - 1.0
    for mode in ("fsdp", "ddp"):
        records = step_records(tmp_path / mode / "metrics.jsonl")
        assert [r["loss"] for r in records] == pytest.approx(ref, abs=1e-5), mode
        assert [r["grad_norm"] for r in records] == pytest.approx(
            [r["grad_norm"] for r in step_records(tmp_path / "single/metrics.jsonl")], rel=1e-4
        )
    # The FSDP run's checkpoint (two ranks' shards) loads into one process (DCP reshards).
    path = ckpt.latest_complete(tmp_path / "fsdp/checkpoints")[0]
    assert ckpt.verify(path)["world"] == 2 and len(list(path.glob("*.distcp"))) == 2
    model = build(single.args, seed=99)
    ckpt.Checkpointer(path.parent, DistInfo()).load(path, model, None, rng=False)
    for (k, v), w in zip(single.model.state_dict().items(), model.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-4), k
