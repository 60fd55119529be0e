"""anneal_probe: the --dry-run plan, and a smoke-sized probe end to end (a 40K-token pre-training of a 2-layer
model at a high LR, two anneals of 20K tokens from it), then the same probe of the given checkpoint and shards at
50%."""

from __future__ import annotations

import ast
import json
import re

import pytest
import yaml

from experiments import anneal_probe
from experiments.tests.helpers import launch
from tools.config import load
from tools.paths import PACKAGE_ROOT

SMOKE = {
    "data": {"scale": 0.25},
    "tokenizer": {"vocab_size": 768},
    "recipe_overrides": [
        "threads=1", "monitor.wandb=false", "monitor.progress=false",
        "model.overrides={dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2}",
        "pretrain.tokens=40960", "pretrain.batch=[{tokens: 0, batch_tokens: 1024, seq_len: 128}]",
        "pretrain.optim.lr=1.0e-2", "pretrain.lr.final_lr=1.0e-3", "pretrain.lr.warmup_steps=4",
        "anneal.train.tokens=20480", "anneal.train.batch=[{tokens: 0, batch_tokens: 1024, seq_len: 128}]",
        "anneal.train.optim.lr=1.0e-2",
        "anneal.train.checkpoint.every_steps=5", "anneal.average=2",
        "anneal.train.valid_batches=2", "anneal.train.valid_rows=16",
    ],
}  # fmt: skip


def config(*overrides):
    path = PACKAGE_ROOT / "experiments/configs/anneal_probe.yaml"
    return load(anneal_probe.Config, [path], ["name=anneal_probe", *overrides])


def test_dry_run_plans_both_anneals(checkout):
    out = launch(checkout, "--dry-run", "probe.fraction=0.4", experiment="anneal_probe")
    assert out.returncode == 0, out.stderr
    assert "stages: curate -> tokenizer -> shards -> pretrain -> probe" in out.stdout
    assert "anneal: 40,960 tokens, LR 0.001 linear to 0, twice:" in out.stdout
    # The enriched mix keeps the default mix's proportions in the remaining 60%.
    enriched = ast.literal_eval(re.search(r"enriched\s+(\{.*?\})", out.stdout).group(1))
    assert enriched == pytest.approx({"general": 0.3, "math": 0.15, "code": 0.102, "multilingual": 0.048})
    assert "+ candidate 0.4 (math of this run)" in out.stdout and not (checkout / "runs").exists()
    given = config("init_from=/ckpt", "shards=/shards", "probe.candidate_shards=/other", "probe.candidate=''")
    assert [s.name for s in anneal_probe.stages(given)] == ["probe"]
    text = anneal_probe.dry_run(given)
    assert "start: /ckpt" in text and "(all categories of /other)" in text
    assert anneal_probe.recipe_of(given, "/other").probe.candidate_shards == "/other"


def probe_json(checkout, run_id):
    return json.loads((checkout / "runs/anneal_probe" / run_id / "stages/probe/probe.json").read_text())


def test_smoke_probe_end_to_end_and_on_a_given_checkpoint(checkout, tmp_path):
    smoke = tmp_path / "smoke.yaml"
    smoke.write_text(yaml.safe_dump(SMOKE))
    out = launch(checkout, f"config={smoke}", "run_id=a", "executor=local", experiment="anneal_probe", timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = probe_json(checkout, "a")
    assert result["fraction"] == 0.3 and result["candidate"].endswith("#math")
    keys = {"valid_loss/general", "valid_loss/math", "valid_loss/code", "valid_loss/multilingual"}
    assert keys | {"valid_loss/candidate"} <= set(result["delta"])
    for key, delta in result["delta"].items():
        assert delta == pytest.approx(result["enriched"][key] - result["default"][key])
        assert 0 < result["default"][key] < 10
    # Annealing on 30% more math lowers the loss on math (the candidate's valid split; about -0.09 nats from
    # about 4.3), and costs some on code.
    assert result["delta"]["valid_loss/candidate"] < -0.02 and result["delta"]["valid_loss/math"] < -0.02
    assert result["delta"]["valid_loss/code"] > result["delta"]["valid_loss/math"]
    report = (checkout / "runs/anneal_probe/a/stages/probe/report.md").read_text()
    assert f"| valid_loss/candidate | {result['default']['valid_loss/candidate']:.4f} |" in report

    # The same probe of the first run's checkpoint and shards, at 50%: no data stages, no pre-training.
    stages = checkout / "runs/anneal_probe/a/stages"
    out = launch(checkout, f"config={smoke}", "run_id=b", "executor=local", f"init_from={stages / 'pretrain'}",
                 f"shards={stages / 'shards/out/shards'}", "probe.fraction=0.5", experiment="anneal_probe",
                 timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert sorted(p.name for p in (checkout / "runs/anneal_probe/b/stages").iterdir()) == ["probe"]
    half = probe_json(checkout, "b")
    assert half["default"] == pytest.approx(result["default"])  # the same start, the same default anneal
    assert half["delta"]["valid_loss/candidate"] < result["delta"]["valid_loss/candidate"] < 0
