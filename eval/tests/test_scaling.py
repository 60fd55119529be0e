import math

import numpy as np
import pytest

from eval import scaling

SMALL_GRID = dict(a=[5, 15], b=[5, 15], e=[-1, 1], alpha=[0.2, 0.8], beta=[0.2, 0.8])


def isoflop_points(params, budgets, per_budget=9, spread=0.8, noise=0.0, seed=0):
    """Models spread around each budget's Chinchilla-rule size, losses from L(N, D) with log-normal noise."""
    rng = np.random.default_rng(seed)
    recs = []
    for C in budgets:
        center = math.log10(math.sqrt(C / 120))  # 20 tokens per parameter
        for logn in np.linspace(center - spread, center + spread, per_budget):
            N = 10**logn
            D = C / (6 * N)
            L = float(scaling.chinchilla_loss(params, N, D) * math.exp(rng.normal(0, noise)))
            recs.append({"budget": C, "params": N, "tokens": D, "loss": L})
    return recs


@pytest.mark.parametrize("truth", [scaling.CHINCHILLA, scaling.EPOCH_AI], ids=["chinchilla", "epoch_ai"])
def test_approach_3_recovers_known_parameters(truth):
    recs = isoflop_points(truth, np.logspace(18, 22, 5), noise=0.003, seed=1)
    N, D, L = ([r[k] for r in recs] for k in ("params", "tokens", "loss"))
    fit = scaling.fit_chinchilla(N, D, L, grid=SMALL_GRID, n_boot=40, seed=0)
    E, A, B, alpha, beta = truth
    assert fit.alpha == pytest.approx(alpha, abs=0.05) and fit.beta == pytest.approx(beta, abs=0.05)
    assert pytest.approx(E, abs=0.06) == fit.E
    for name, value in (("E", E), ("alpha", alpha), ("beta", beta)):
        low, high = fit.ci[name]
        assert low <= value <= high, (name, value, fit.ci[name])
    # Out of sample: a 10x larger budget than any fitted point.
    n_opt, d_opt = fit.optimal_allocation(1e23)
    assert fit.loss(n_opt, d_opt) == pytest.approx(scaling.chinchilla_loss(truth, n_opt, d_opt), rel=0.01)


def test_noise_free_points_are_fitted_exactly():
    recs = isoflop_points(scaling.CHINCHILLA, np.logspace(18, 22, 5))
    N, D, L = ([r[k] for r in recs] for k in ("params", "tokens", "loss"))
    fit = scaling.fit_chinchilla(N, D, L, grid=SMALL_GRID, n_boot=0)
    got = (fit.E, fit.A, fit.B, fit.alpha, fit.beta)
    assert got == pytest.approx(scaling.CHINCHILLA, rel=0.02)


def test_isoflop_minima_and_power_law():
    truth = scaling.EPOCH_AI
    budgets = np.logspace(18, 22, 5)
    recs = isoflop_points(truth, budgets, per_budget=11, spread=1.0)
    iso = scaling.fit_isoflop(recs)
    E, A, B, alpha, beta = truth
    exact = scaling.ChinchillaFit(E, A, B, alpha, beta, 0.0, {})
    for p in iso:
        _, d_opt = exact.optimal_allocation(p["budget"])
        assert p["tokens_opt"] == pytest.approx(float(d_opt), rel=0.15) and p["inside_sweep"]
    law = scaling.fit_power_law([p["budget"] for p in iso], [p["tokens_opt"] for p in iso])
    assert law.alpha == pytest.approx(alpha / (alpha + beta), abs=0.02)  # D* grows as C^(alpha/(alpha+beta))
    # Pure power law with noise: the paper's constants come back.
    rng = np.random.default_rng(0)
    cs = np.logspace(18, 22, 8)
    law = scaling.fit_power_law(cs, 0.29 * cs**0.53 * np.exp(rng.normal(0, 0.02, 8)))
    assert law.alpha == pytest.approx(0.53, abs=4 * law.se_alpha) and law.alpha == pytest.approx(0.53, abs=0.02)
    with pytest.raises(ValueError, match="at least 3"):
        scaling.fit_isoflop(recs[:2])


def test_two_step_downstream_prediction():
    rng = np.random.default_rng(0)
    flops = np.logspace(18, 22, 6)
    nll = 3.0 * flops**-0.03  # step 1 truth
    more_nll = np.linspace(0.6, 1.8, 40)  # step 2 uses more models (the paper adds Llama 2)
    acc = scaling.sigmoid(more_nll, 9.0, 1.1) + rng.normal(0, 0.01, 40)
    fit = scaling.fit_downstream(flops, nll, more_nll, acc)
    assert fit.nll_law.alpha == pytest.approx(-0.03, abs=1e-6)
    assert fit.slope == pytest.approx(9.0, rel=0.1) and fit.mid == pytest.approx(1.1, abs=0.02)
    c = 1e24  # extrapolated compute
    assert fit.accuracy(c) == pytest.approx(float(scaling.sigmoid(3.0 * c**-0.03, 9.0, 1.1)), abs=0.02)


def test_paper_arithmetic_does_not_give_the_stated_tokens():
    p = scaling.paper_arithmetic()
    assert p["tokens_from_constants"] == pytest.approx(1.05e13, rel=0.01)  # 0.29 * (3.8e25)^0.53
    assert p["ratio_stated_to_computed"] == pytest.approx(16.55e12 / 1.05e13, rel=0.01)  # ~1.58x, not 1
    assert p["flops_of_stated_model"] == pytest.approx(3.99e25, rel=0.01)  # 6 * 402e9 * 16.55e12
    assert 0.29 * 3.8e25 ** p["alpha_needed_at_A_0.29"] == pytest.approx(16.55e12, rel=1e-9)


def test_fit_sweep_end_to_end(tmp_path):
    recs = isoflop_points(scaling.CHINCHILLA, np.logspace(18, 21, 4), per_budget=5, noise=0.002)
    for r in recs:
        r["nll"] = 0.5 + r["loss"] / 4
        r["accuracy"] = float(scaling.sigmoid(r["nll"], 20.0, 1.05))
    out = scaling.fit_sweep(recs, out_dir=tmp_path, grid=SMALL_GRID, n_boot=10)
    assert len(out["isoflop"]) == 4 and 0.4 < out["tokens_law"]["alpha"] < 0.6
    assert set(out["chinchilla"]) == {"E", "A", "B", "alpha", "beta", "ci"}
    assert "downstream" in out
    for name in ("isoflop", "power_law", "downstream"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="lacks loss"):
        scaling.fit_sweep([{"budget": 1, "params": 1, "tokens": 1}])


def test_isoflop_plan_brackets_the_chinchilla_optimum():
    from eval import scaling_plan
    from model import accounting
    from model.llama import build

    budgets = [1e15, 3e15, 1e16, 3e16]
    for dim in (64, 96, 320, 512):  # the shape count agrees with the model's own
        args = scaling_plan.family_member(dim, 8192, 256)
        assert accounting.param_count(args) == sum(p.numel() for p in build(args, device="meta").parameters())
    runs = scaling_plan.plan_isoflop(budgets, vocab_size=8192, seq_len=256, batch_tokens=4096, models_per_budget=5)
    assert len(runs) == 20
    for budget in budgets:
        rs = [r for r in runs if r.budget == budget]
        assert len({r.model["dim"] for r in rs}) == 5
        for r in rs:
            assert r.flops == pytest.approx(budget, rel=max(0.02, 1 / r.steps))  # whole steps spend the budget
            member = scaling_plan.family_member(r.model["dim"], 8192, 256)
            assert r.params == accounting.param_count(member)
            assert r.flops_per_token == accounting.flops_per_token(member, 256)
        per_param = [r.tokens / r.params for r in rs]
        assert per_param == sorted(per_param, reverse=True)  # larger models see fewer tokens
        assert per_param[0] > 20 > per_param[-1]  # the 20 tokens/parameter point lies inside
    record = scaling_plan.sweep_record(runs[0], loss=3.5, nll=1.2)
    assert record["budget"] == 1e15 and record["nll"] == 1.2 and "accuracy" not in record
    with pytest.raises(ValueError, match="too small"):
        scaling_plan.plan_isoflop([1e9], vocab_size=8192, seq_len=256, batch_tokens=4096)
