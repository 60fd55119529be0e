"""llama3_tiny end to end on a smoke-sized recipe over the synthetic corpus plus the real web samples: every
stage runs through the launcher, the report has its files and numbers, the metrics match the committed
goldens (experiments/goldens/llama3_tiny_smoke.json), a second run at the same commit and seed gives identical
metrics, and resuming a finished run recomputes nothing."""

from __future__ import annotations

import json

from experiments import goldens
from experiments.tests.helpers import launch
from tools.paths import PACKAGE_ROOT

SMOKE = PACKAGE_ROOT / "experiments" / "tests" / "llama3_tiny_smoke.yaml"
GOLDENS = PACKAGE_ROOT / "experiments" / "goldens" / "llama3_tiny_smoke.json"
POSTTRAIN = ("chat_data", "round0/sft", "round1/reward_model", "round1/rejection_sampling", "round1/sft",
             "round1/dpo", "round1/average")  # fmt: skip
STAGES = ("curate", "tokenizer", "shards", "pretrain", "long_context", "anneal", "evaluate", *POSTTRAIN, "report")


def run(checkout, run_id: str):
    out = launch(checkout, f"config={SMOKE}", f"run_id={run_id}", "executor=local", experiment="llama3_tiny",
                 timeout=1200)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout, json.loads((checkout / "runs/llama3_tiny" / run_id / "stages/report/metrics.json").read_text())


def test_every_stage_runs_matches_the_goldens_reproduces_and_resumes_to_nothing(checkout):
    _, metrics = run(checkout, "a")
    report = checkout / "runs/llama3_tiny/a/stages/report"
    for name in ("report.md", "metrics.json", "funnel.png", "training.png", "niah_pretrain.png", "niah_anneal.png",
                 "dpo_logp.png"):  # fmt: skip
        assert (report / name).is_file(), name
    text = (report / "report.md").read_text()
    for claim in ("curation removes the planted junk", "pre-training loss falls",
                  "long-context training keeps short-context validation loss", "annealing + averaging"):  # fmt: skip
        assert claim in text
    # The data funnel holds over synthetic and real documents, and every planted piece of junk meets its step.
    assert metrics["data.documents_in"] == metrics["data.documents_kept"] + metrics["data.documents_dropped"]
    assert metrics["data.junk_caught_fraction"] == 1.0
    assert (metrics["long_loss.short_length"], metrics["long_loss.long_length"]) == (256, 1024)
    assert {"niah.pretrain.1024", "long_loss.anneal.late", "valid_loss.anneal.all", "eval.gsm8k_strict"} <= set(metrics)
    # Post-training: every stage of the round ran; two DPO runs were averaged, and the no-NLL probe ran.
    assert {
        "posttrain.round1.rm_accuracy",
        "posttrain.round1.dpo_exact_match",
        "posttrain.round1.dpo_run1.chosen_logp_end",
        "posttrain.round1.dpo_no_nll.chosen_logp_end",
    } <= set(metrics)
    assert "SFT raises held-out exact match" in text and "best-of-K by the reward model" in text

    rows = goldens.compare(metrics, goldens.load_goldens(GOLDENS)["metrics"])
    drift = [r for r in rows if not r.ok or r.golden is None]
    assert not drift, (
        "llama3_tiny_smoke drifted from its goldens (or has new metrics); if the change is intended, rewrite them:\n"
        "  ./bazelw run //experiments:goldens -- experiment=llama3_tiny_smoke run=runs/llama3_tiny/<id> "
        "rewrite=true reason='...'\n" + goldens.table(drift)
    )

    _, second = run(checkout, "b")
    assert second == metrics

    stdout, again = run(checkout, "a")
    assert stdout.count("already complete, skipped") == len(STAGES)
    assert again == metrics
