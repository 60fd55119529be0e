"""scaling_sweep: the planned isoFLOP points (--dry-run), the fits on records drawn from a known law, and a
smoke-sized sweep (2 budgets x 3 models of a few thousand parameters) end to end through the launcher."""

from __future__ import annotations

import json
import math
import re

import pytest

from experiments import scaling_sweep
from experiments.tests.helpers import launch
from tools.config import load
from tools.paths import PACKAGE_ROOT

SMOKE = ("data.scale=0.25", "tokenizer.vocab_size=768", "sweep.budgets=[4e9,1.6e10]", "sweep.seq_len=128",
         "sweep.batch_tokens=256", "benchmark.items=8", "sweep.n_boot=5")  # fmt: skip


def config(*overrides):
    path = PACKAGE_ROOT / "experiments/configs/scaling_sweep.yaml"
    return load(scaling_sweep.Config, [path], ["name=scaling_sweep", *overrides])


def test_dry_run_spends_each_budget_around_the_target_ratio(checkout):
    out = launch(checkout, "--dry-run", experiment="scaling_sweep")
    assert out.returncode == 0, out.stderr
    assert "train_1e10 -> train_2e10 -> train_4e10 -> train_8e10 -> fit" in out.stdout
    rows = re.findall(r"^C(\S+)_d(\d+)\s+(\d+)\s+(\d+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)\s+(\S+)$",
                      out.stdout, re.M)  # fmt: skip
    assert len(rows) == 12
    by_budget = {}
    for budget, _, dim, _, params, tokens, _, ratio, flops in rows:
        params, tokens = int(params.replace(",", "")), int(tokens.replace(",", ""))
        assert float(flops) == pytest.approx(float(budget), rel=0.01)  # each run spends its budget
        assert float(ratio) == pytest.approx(tokens / params, abs=0.01)
        by_budget.setdefault(float(budget), []).append((int(dim), params, tokens))
    assert sorted(by_budget) == [1e10, 2e10, 4e10, 8e10]
    for runs in by_budget.values():
        assert len(runs) == 3
        # Wider models see fewer tokens, and the three straddle the configured 2.5 tokens per parameter.
        assert [t for _, _, t in sorted(runs)] == sorted((t for _, _, t in runs), reverse=True)
        assert min(t / p for _, p, t in runs) < 2.5 < max(t / p for _, p, t in runs)
    total = sum(int(t.replace(",", "")) for *_, t, _, _, _ in rows)
    assert f"total: {total:,} training tokens" in out.stdout
    assert not (checkout / "runs").exists()
    assert scaling_sweep.budget_name(1.25e10) == "1p25e10"
    with pytest.raises(ValueError, match="at least 2 distinct budgets"):
        scaling_sweep.planned(config("sweep.budgets=[1e10,1e10]"), 1024)


def law_records(budgets, *, concave=(), flat=()):
    """Three runs per budget on loss = L(C) + 0.5 (log10 D - log10 D*)^2 with D*(C) = 0.3 C^0.5 (upside down for
    the budgets in `concave`; for those in `flat`, falling almost linearly across the runs, its vertex 1,000x past
    them); the NLL follows the loss, and the accuracy is a sigmoid of the NLL."""
    out = []
    for c in budgets:
        best = 0.3 * c**0.5
        for shift in (-0.4, 0.1, 0.5):
            tokens = best * 10**shift
            loss = 6 - 0.3 * math.log10(c) + (-1 if c in concave else 1) * 0.5 * shift**2
            if c in flat:
                loss = 6 - 0.3 * math.log10(c) + 0.01 * (shift - 3) ** 2
            nll = loss / 2
            out.append(dict(name=f"C{c:.0e}_{shift}", budget=c, params=round(c / (6 * tokens)), tokens=tokens,
                            loss=loss, nll=nll, accuracy=0.25 + 0.75 / (1 + math.exp(8 * (nll - 2.2)))))  # fmt: skip
    return out


def test_fits_recover_the_law_and_leave_out_a_concave_budget(tmp_path):
    cfg = config("sweep.n_boot=2").sweep
    records = law_records([1e10, 1e11, 1e12, 1e13, 1e14], concave=(1e11,), flat=(1e14,))
    result = scaling_sweep.fits(records, cfg, tmp_path)
    assert list(result["skipped"]) == ["1e+11", "1e+14"] and "not convex" in result["skipped"]["1e+11"]
    assert "the fitted minimum (3e+09 tokens) lies far outside the runs" in result["skipped"]["1e+14"]
    assert [p["budget"] for p in result["isoflop"]] == [1e10, 1e12, 1e13]
    for p in result["isoflop"]:
        assert p["tokens_opt"] == pytest.approx(0.3 * p["budget"] ** 0.5, rel=1e-6) and p["inside_sweep"]
    law = result["tokens_law"]
    assert (law["A"], law["alpha"]) == (pytest.approx(0.3, rel=1e-6), pytest.approx(0.5, rel=1e-6))
    assert result["downstream_skipped"] is None and "downstream" in result
    assert {"isoflop", "power_law"} <= {p.rsplit("/", 1)[-1].split(".")[0] for p in result["plots"].values()}
    text = scaling_sweep.report(records, result)
    assert "alpha = 0.500" in text and "1e+11 (budget 1e+11: loss vs log tokens is not convex" in text
    alone = scaling_sweep.fits(law_records([1e10, 1e11], flat=(1e11,)), cfg, None)
    assert [p["budget"] for p in alone["isoflop"]] == [1e10] and "tokens_law" not in alone
    assert alone["downstream_skipped"] == "the downstream fit needs at least 2 fitted budgets"
    with pytest.raises(ValueError, match="no budget has a usable isoFLOP parabola"):
        scaling_sweep.fits(law_records([1e10, 1e11], concave=(1e10, 1e11)), cfg, None)


def test_smoke_sweep_end_to_end(checkout):
    out = launch(checkout, *SMOKE, "run_id=s", "executor=local", experiment="scaling_sweep", timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    fit = checkout / "runs/scaling_sweep/s/stages/fit"
    records = [json.loads(line) for line in (fit / "records.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["budget"] for r in records} == {4e9, 1.6e10}
    for r in records:
        assert r["flops"] == pytest.approx(r["budget"], rel=0.01) and 0 <= r["accuracy"] <= 1 and r["nll"] > 0
    # More compute, lower loss: every run at 4x the budget beats every run at the small one, on both signals.
    small, large = ([r for r in records if r["budget"] == b] for b in (4e9, 1.6e10))
    assert max(r["loss"] for r in large) < min(r["loss"] for r in small)
    assert max(r["nll"] for r in large) < min(r["nll"] for r in small)
    result = json.loads((fit / "fits.json").read_text())
    # Each budget is either fitted (its minimum among its runs' tokens or near them) or left out with its reason.
    fitted = [p["budget"] for p in result["isoflop"]] + [float(b) for b in result["skipped"]]
    assert sorted(fitted) == [4e9, 1.6e10] and result["paper"]["tokens_from_constants"] > 1e13
    report = (fit / "report.md").read_text()
    assert report.startswith("# isoFLOP sweep") and all(f"{b} (budget {b}: " in report for b in result["skipped"])
    assert (fit / "plots" / "isoflop.png").stat().st_size > 1000


def test_the_sweeps_compute_is_in_the_units_mfu_uses():
    """The sweep's budgets and the MFU monitor count FLOPs per token the same way (model/accounting.py)."""
    from eval import scaling_plan
    from model.presets import preset
    from training.monitor import flops_per_token

    runs = scaling_plan.plan_isoflop([1e15], vocab_size=4096, seq_len=512, batch_tokens=4096, models_per_budget=3)
    for r in runs:
        args = scaling_plan.family_member(r.model["dim"], 4096, 512)
        assert r.flops_per_token == flops_per_token(args, 512)
    args = preset("8b")
    assert flops_per_token(args, 8192) == 6 * (8_030_261_248 - 128256 * 4096) + 12 * 32 * 4096 * 8192
