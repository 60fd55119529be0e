"""Annealing: LR linearly to 0 on its own mix, checkpoints along the way, the final model their average; and
the annealing data-quality probe."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from model.llama import build
from tools import assets
from training import anneal, pretrain
from training import checkpoint as ckpt
from training.distributed import DistInfo
from training.monitor import step_records
from training.tests.helpers import byte_tokenizer, micro_recipe, text_shards, write_shards

ANNEAL = ("anneal.train.optim.lr=0.004", "anneal.train.lr.schedule=linear", "anneal.train.lr.final_lr=0.0",
          "anneal.train.batch=[{tokens: 0, batch_tokens: 256, seq_len: 32}]", "anneal.train.tokens=2048",
          "anneal.train.data.mix={general: 0.5, math: 0.5}", "anneal.train.checkpoint.every_steps=3",
          "anneal.train.checkpoint.keep_last=1", "anneal.train.valid_rows=4", "anneal.average=4")  # fmt: skip


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("anneal")
    shards = text_shards(root / "shards", chars=60_000)
    pretrain.run(micro_recipe(), root / "pretrain", shards)
    return root, shards


def test_the_final_model_is_the_average_of_the_anneal_checkpoints(pretrained):
    root, shards = pretrained
    recipe = micro_recipe(*ANNEAL)
    summary = anneal.run(recipe, root / "anneal", shards, init_from=root / "pretrain")
    assert summary["averaged"] == ["step_00000002", "step_00000004", "step_00000006", "step_00000008"]
    # Every averaged checkpoint survived keep_last=1 (they are milestones).
    weights = []
    for name in summary["averaged"]:
        model = build(summary_args(root), seed=1)
        ckpt.Checkpointer(root / "anneal/checkpoints", DistInfo()).load(root / "anneal/checkpoints" / name, model, None)
        weights.append(model.state_dict())
    exported = load_file(str(root / "anneal/model/model.safetensors"))
    for key, value in exported.items():
        stack = torch.stack([w[key] for w in weights]).double()
        assert torch.allclose(value.double(), stack.mean(0), rtol=1e-7, atol=1e-12), key  # fp32 rounding
    moved = [k for k in exported if not torch.equal(weights[0][k], weights[-1][k])]
    assert moved and not all(torch.equal(exported[k], weights[-1][k]) for k in moved)  # not just the last one
    # The LR falls linearly from the peak towards 0 over the anneal's 8 steps.
    lrs = [r["lr"] for r in step_records(root / "anneal/metrics.jsonl", "anneal")]
    assert lrs == pytest.approx([0.004 * (1 - s / 8) for s in range(8)], rel=1e-9)
    assert summary["valid_loss"] is not None and summary["last_valid_loss"] is not None
    assert (root / "anneal/model/tokenizer").is_dir()  # a model.checkpoint directory, tokenizer included


def summary_args(root):
    from training.trainer import checkpoint_args

    return checkpoint_args(root / "anneal")


def test_the_data_quality_probe_reports_the_candidates_effect(pretrained, tmp_path):
    root, shards = pretrained
    tok = byte_tokenizer()
    lines = [r["text"] for r in assets.jsonl("multilingual/udhr_lines.jsonl")]
    lines = [t for t in lines if len(t) > 80]
    candidate = write_shards(tmp_path / "candidate", {
        ("udhr", "train"): [tok.encode(t, bos=True, eos=True) for t in lines[100:400]],
        ("udhr", "valid"): [tok.encode(t, bos=True, eos=True) for t in lines[:40]],
    }, tok.vocab_size, tok)  # fmt: skip
    recipe = micro_recipe(
        *ANNEAL, "anneal.train.optim.lr=0.01", f"probe.candidate_shards={candidate}", "probe.fraction=0.5"
    )
    report = anneal.probe(recipe, tmp_path / "probe", shards, init_from=root / "pretrain")
    assert set(report["delta"]) == {"valid_loss/general", "valid_loss/math", "valid_loss/candidate"}
    # Annealing on half multilingual text lowers the loss on held-out multilingual text; the default mix does not.
    assert report["delta"]["valid_loss/candidate"] < -0.05, report
    assert report["delta"]["valid_loss/candidate"] == pytest.approx(
        report["enriched"]["valid_loss/candidate"] - report["default"]["valid_loss/candidate"]
    )
    state = json.loads((tmp_path / "probe/candidate/checkpoints/step_00000008/trainer.json").read_text())
    taken = state["loader"]["taken"]
    total = sum(taken.values())
    assert total == 8 * 256 and abs(taken["candidate"] - 0.5 * total) <= 520  # within one document (<= 500 bytes)
    assert json.loads((tmp_path / "probe/probe.json").read_text())["fraction"] == 0.5
