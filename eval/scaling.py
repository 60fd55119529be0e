"""Scaling-law fits (Llama 3 paper section 3.2.1; Hoffmann et al. 2022 "Chinchilla"; Besiroglu et al. 2024).

- `fit_isoflop`: per compute budget, a parabola of loss vs log10(training tokens); its vertex is the
  compute-optimal token count D*(C) (and N*(C) = C / (6 D*)).
- `fit_power_law`: D*(C) = A C^alpha by least squares in log-log space (the paper: alpha 0.53, A 0.29).
- `fit_chinchilla`: approach 3, L(N, D) = E + A/N^alpha + B/D^beta, fitted as in Chinchilla / Epoch AI: the Huber
  loss (delta 1e-3) between log L and LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b, E = e^e,
  minimised by L-BFGS from every point of a grid of starts; percentile-bootstrap intervals from refits on
  resampled points.
- `fit_downstream`: the paper's two steps: (1) the normalised NLL of the correct answer of compute-optimal models
  vs training FLOPs, a power law NLL = k C^s; (2) accuracy vs that NLL, a sigmoid
  acc = lo + (hi - lo) / (1 + exp(slope (nll - mid))). Chained, they predict accuracy from compute.
- `paper_arithmetic`: the paper's printed constants, evaluated.
- `fit_sweep`: all of the above from one list of isoFLOP records {budget, params, tokens, loss[, nll, accuracy]}.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit
from scipy.special import logsumexp

# Published fits of approach 3, as (E, A, B, alpha, beta).
CHINCHILLA = (1.69, 406.4, 410.7, 0.34, 0.28)
EPOCH_AI = (1.8172, 482.01, 2085.43, 0.3478, 0.3658)
# Llama 3 (paper 3.2.1): N*(C) = A C^alpha optimal training tokens, and the extrapolation it states.
LLAMA3_ALPHA, LLAMA3_A = 0.53, 0.29
LLAMA3_FLOPS, LLAMA3_PARAMS, LLAMA3_TOKENS = 3.8e25, 402e9, 16.55e12


# ---- isoFLOP parabolas and the power law ----
def fit_isoflop(records: Sequence[dict], key: str = "loss") -> list[dict]:
    """Per budget (>= 3 runs): loss = a x^2 + b x + c with x = log10(tokens); vertex x* = -b / (2a)."""
    by: dict[float, list[dict]] = defaultdict(list)
    for r in records:
        by[float(r["budget"])].append(r)
    out = []
    for budget in sorted(by):
        rs = by[budget]
        if len(rs) < 3:
            raise ValueError(f"budget {budget:.3g} has {len(rs)} runs; a parabola needs at least 3")
        x = np.log10([r["tokens"] for r in rs])
        y = np.array([r[key] for r in rs], dtype=float)
        a, b, c = np.polyfit(x, y, 2)
        if a <= 0:
            raise ValueError(f"budget {budget:.3g}: {key} vs log tokens is not convex (a = {a:.3g}); widen the sweep")
        x_opt = -b / (2 * a)
        tokens = 10**x_opt
        out.append(
            {
                "budget": budget,
                "coef": [float(a), float(b), float(c)],
                "tokens_opt": float(tokens),
                "params_opt": float(budget / (6 * tokens)),
                f"{key}_opt": float(c - b * b / (4 * a)),
                "inside_sweep": bool(x.min() <= x_opt <= x.max()),
            }
        )
    return out


@dataclass(frozen=True)
class PowerLaw:
    """y = A x^alpha, fitted in log space; `se_log_A`, `se_alpha`: standard errors of the regression."""

    A: float
    alpha: float
    se_log_A: float
    se_alpha: float

    def __call__(self, x):
        return self.A * np.asarray(x, dtype=float) ** self.alpha


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if len(lx) < 2:
        raise ValueError("a power law needs at least 2 points")
    X = np.stack([np.ones_like(lx), lx], axis=1)
    coef, *_ = np.linalg.lstsq(X, ly, rcond=None)
    dof = len(lx) - 2
    if dof > 0:
        sigma2 = float(((ly - X @ coef) ** 2).sum() / dof)
        cov = sigma2 * np.linalg.inv(X.T @ X)
        se = np.sqrt(np.diag(cov))
    else:
        se = np.array([float("nan"), float("nan")])
    return PowerLaw(float(math.exp(coef[0])), float(coef[1]), float(se[0]), float(se[1]))


# ---- Chinchilla approach 3 ----
def chinchilla_loss(params, N, D):
    E, A, B, alpha, beta = params
    return E + A / np.asarray(N, dtype=float) ** alpha + B / np.asarray(D, dtype=float) ** beta


def _objective(theta, lN, lD, y, delta):
    """Per row s: sum over points of Huber_delta(LSE(a - alpha lN, b - beta lD, e) - log L), and its gradient.

    theta [S, 5] = (a, b, e, alpha, beta) per start; lN, lD, y [S, n] (or [n], shared by all rows)."""
    a, b, e, alpha, beta = (theta[:, i : i + 1] for i in range(5))
    lN, lD, y = (
        np.broadcast_to(lN, (len(theta), np.shape(lN)[-1])),
        np.broadcast_to(lD, (len(theta), np.shape(lD)[-1])),
        y,
    )
    z = np.stack([a - alpha * lN, b - beta * lD, np.broadcast_to(e, lN.shape)])  # [3, S, n]
    pred = logsumexp(z, axis=0)
    w = np.exp(z - pred)  # d pred / d term: softmax weights
    r = pred - y
    with np.errstate(over="ignore"):  # far-off starts: r*r may overflow in the branch np.where discards
        huber = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    g = np.clip(r, -delta, delta)  # Huber'
    grad = np.stack(
        [(g * w[0]).sum(1), (g * w[1]).sum(1), (g * w[2]).sum(1), -(g * w[0] * lN).sum(1), -(g * w[1] * lD).sum(1)],
        axis=1,
    )
    return huber.sum(1), grad


def lbfgs(
    fun,
    x0: np.ndarray,
    *,
    memory: int = 10,
    max_iter: int = 1000,
    gtol: float = 1e-14,
    ftol: float = 1e-13,
    xtol: float = 1e-11,
    c1: float = 1e-4,
):
    """Minimise S independent problems at once: L-BFGS (two-loop recursion) with a backtracking Armijo line search,
    vectorised over rows. `fun(x [R, k], rows [R]) -> (f [R], grad [R, k])` evaluates the given rows. A row has
    converged when its gradient, its relative decrease of f (relative to f itself, not to max(|f|, 1): the Huber
    objective is ~1e-4 at the optimum, and an absolute test is what stops such fits early) or its step is tiny.
    Returns (x, f, converged [S])."""
    x = np.array(x0, dtype=float)
    every = np.arange(len(x))
    f, g = fun(x, every)
    hist: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (s, y, rho) pairs, oldest first
    done = np.abs(g).max(1) < gtol
    for _ in range(max_iter):
        if done.all():
            break
        # Two-loop recursion (a row whose pair failed the curvature test has s = y = rho = 0 there: no effect).
        q, alphas = g.copy(), []
        for s_i, y_i, rho_i in reversed(hist):
            a_i = rho_i * (s_i * q).sum(1)
            q -= a_i[:, None] * y_i
            alphas.append(a_i)
        if hist:
            s_i, y_i, _ = hist[-1]
            sy, yy = (s_i * y_i).sum(1), (y_i * y_i).sum(1)
            gamma = np.where(yy > 0, sy / np.where(yy > 0, yy, 1.0), 1.0 / np.maximum(np.abs(g).sum(1), 1e-300))
        else:  # first step: unit length along -g
            gamma = 1.0 / np.maximum(np.linalg.norm(g, axis=1), 1e-300)
        r = gamma[:, None] * q
        for (s_i, y_i, rho_i), a_i in zip(hist, reversed(alphas)):
            r += (a_i - rho_i * (y_i * r).sum(1))[:, None] * s_i
        d = -r
        slope = (d * g).sum(1)
        bad = slope >= 0  # not a descent direction: fall back to steepest descent
        d[bad], slope[bad] = -g[bad], -(g[bad] ** 2).sum(1)
        # Backtracking: halve each row's step until the Armijo condition holds (at most 60 halvings).
        t = np.ones(len(x))
        x_new, f_new, g_new = x.copy(), f.copy(), g.copy()
        pending = ~done
        for _ in range(60):
            rows = np.nonzero(pending)[0]
            if not len(rows):
                break
            xt = x[rows] + t[rows, None] * d[rows]
            ft, gt = fun(xt, rows)
            ok = np.isfinite(ft) & (ft <= f[rows] + c1 * t[rows] * slope[rows])
            x_new[rows[ok]], f_new[rows[ok]], g_new[rows[ok]] = xt[ok], ft[ok], gt[ok]
            pending[rows[ok]] = False
            t[rows[~ok]] *= 0.5
        sk, yk = x_new - x, g_new - g
        sy = (sk * yk).sum(1)
        keep = (sy > 1e-300)[:, None]
        hist.append(
            (
                np.where(keep, sk, 0.0),
                np.where(keep, yk, 0.0),
                np.where(keep[:, 0], 1.0 / np.where(keep[:, 0], sy, 1.0), 0.0),
            )
        )
        if len(hist) > memory:
            hist.pop(0)
        small_step = np.abs(sk).max(1) < xtol
        small_drop = f - f_new <= ftol * np.abs(f)
        x, f, g = x_new, f_new, g_new
        # Converged: no step could decrease f (the floating-point floor), or gradient, decrease or step is tiny.
        done |= pending | small_step | small_drop | (np.abs(g).max(1) < gtol)
    return x, f, done


# The Chinchilla paper's grid of starts (a, b from 0 to 25 by 5, e from -1 to 1 by 0.5, alpha and beta from 0 to 2
# by 0.5): 4,500 L-BFGS runs, batched into one vectorised run (~10-20 s for 50 points on 2 CPU cores).
# COARSE_GRID covers the same ranges with 243 starts.
FULL_GRID = dict(
    a=np.arange(0, 30, 5),
    b=np.arange(0, 30, 5),
    e=np.arange(-1, 1.5, 0.5),
    alpha=np.arange(0, 2.5, 0.5),
    beta=np.arange(0, 2.5, 0.5),
)
COARSE_GRID = dict(a=[0, 10, 20], b=[0, 10, 20], e=[-1, 0, 1], alpha=[0, 0.5, 1.5], beta=[0, 0.5, 1.5])


@dataclass(frozen=True)
class ChinchillaFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    ci: dict  # parameter -> (low, high), percentile bootstrap

    def loss(self, N, D):
        return chinchilla_loss((self.E, self.A, self.B, self.alpha, self.beta), N, D)

    def optimal_allocation(self, C):
        """Compute-optimal (N, D) under C = 6 N D (Chinchilla eq. 4):
        N = G (C/6)^(beta/(alpha+beta)) with G = (alpha A / (beta B))^(1/(alpha+beta))."""
        C = np.asarray(C, dtype=float)
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        N = G * (C / 6) ** (self.beta / (self.alpha + self.beta))
        return N, C / (6 * N)


def fit_chinchilla(
    N: Sequence[float],
    D: Sequence[float],
    L: Sequence[float],
    *,
    delta: float = 1e-3,
    grid: dict | None = None,
    n_boot: int = 100,
    boot_starts: int = 3,
    level: float = 0.95,
    seed: int = 0,
) -> ChinchillaFit:
    """Approach 3 from every start of `grid`; bootstrap refits start from the `boot_starts` best grid optima."""
    lN, lD, y = np.log(np.asarray(N, float)), np.log(np.asarray(D, float)), np.log(np.asarray(L, float))
    if len(y) < 5:
        raise ValueError(f"approach 3 has 5 parameters; got only {len(y)} (N, D, loss) points")
    grid = grid or FULL_GRID
    starts = np.array(list(itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"])), float)
    x, f, _ = lbfgs(lambda t, rows: _objective(t, lN, lD, y, delta), starts)
    order = np.argsort(f)
    best, best_f = x[order[0]], float(f[order[0]])
    boot = []
    if n_boot:
        # Every (resample, start) pair is one row of a single batched L-BFGS run.
        rng = np.random.default_rng(seed)
        idx = np.repeat(rng.integers(0, len(y), (n_boot, len(y))), boot_starts, axis=0)  # [n_boot * k, n]
        x0 = np.tile(x[order[:boot_starts]], (n_boot, 1))
        bx, bf, _ = lbfgs(lambda t, rows: _objective(t, lN[idx[rows]], lD[idx[rows]], y[idx[rows]], delta), x0)
        bf = bf.reshape(n_boot, boot_starts)
        boot = bx.reshape(n_boot, boot_starts, 5)[np.arange(n_boot), bf.argmin(1)]
    a, b, e, alpha, beta = best
    ci = {}
    if len(boot):
        bt = np.array(boot)
        values = {
            "A": np.exp(bt[:, 0]),
            "B": np.exp(bt[:, 1]),
            "E": np.exp(bt[:, 2]),
            "alpha": bt[:, 3],
            "beta": bt[:, 4],
        }
        q = [(1 - level) / 2, 1 - (1 - level) / 2]
        ci = {k: tuple(float(x) for x in np.quantile(v, q)) for k, v in values.items()}
    return ChinchillaFit(
        float(math.exp(e)), float(math.exp(a)), float(math.exp(b)), float(alpha), float(beta), best_f, ci
    )


# ---- two-step downstream prediction ----
def sigmoid(nll, slope, mid, lo=0.0, hi=1.0):
    return lo + (hi - lo) / (1.0 + np.exp(slope * (np.asarray(nll, dtype=float) - mid)))


@dataclass(frozen=True)
class DownstreamFit:
    nll_law: PowerLaw  # step 1: NLL = k C^s
    slope: float  # step 2: accuracy = lo + (hi - lo) / (1 + exp(slope (nll - mid)))
    mid: float
    lo: float
    hi: float

    def nll(self, flops):
        return self.nll_law(flops)

    def accuracy_from_nll(self, nll):
        return sigmoid(nll, self.slope, self.mid, self.lo, self.hi)

    def accuracy(self, flops):
        return self.accuracy_from_nll(self.nll(flops))


def fit_downstream(
    flops: Sequence[float],
    nll: Sequence[float],
    nll_for_acc: Sequence[float],
    accuracy: Sequence[float],
    *,
    lo: float | None = 0.0,
    hi: float | None = 1.0,
) -> DownstreamFit:
    """Step 1 on (flops, nll) of compute-optimal models; step 2 on (nll, accuracy) pairs from any models (the paper
    adds Llama 2 models there). `lo`/`hi` fix the sigmoid's floor (chance) and ceiling; None fits them too."""
    law = fit_power_law(flops, nll)
    x, y = np.asarray(nll_for_acc, float), np.asarray(accuracy, float)
    free = [name for name, v in (("lo", lo), ("hi", hi)) if v is None]

    def f(x, slope, mid, *rest):
        extra = dict(zip(free, rest))
        return sigmoid(x, slope, mid, extra.get("lo", lo), extra.get("hi", hi))

    p0 = [4.0 / max(np.ptp(x), 1e-6), float(np.median(x))] + [0.0 if n == "lo" else 1.0 for n in free]
    popt, _ = curve_fit(f, x, y, p0=p0, maxfev=20000)
    extra = dict(zip(free, popt[2:]))
    return DownstreamFit(law, float(popt[0]), float(popt[1]), float(extra.get("lo", lo)), float(extra.get("hi", hi)))


# ---- the paper's numbers ----
def paper_arithmetic() -> dict:
    """Evaluate the paper's printed constants. N*(C) = 0.29 C^0.53 at C = 3.8e25 gives ~1.05e13 tokens, not the
    16.55T tokens the paper states for its 402B model; and 6 x 402e9 x 16.55e12 = 3.99e25, not 3.8e25."""
    tokens = LLAMA3_A * LLAMA3_FLOPS**LLAMA3_ALPHA
    return {
        "tokens_from_constants": tokens,
        "params_from_constants": LLAMA3_FLOPS / (6 * tokens),
        "tokens_stated": LLAMA3_TOKENS,
        "ratio_stated_to_computed": LLAMA3_TOKENS / tokens,
        "flops_of_stated_model": 6 * LLAMA3_PARAMS * LLAMA3_TOKENS,
        # What would have to change for the formula to give 16.55T at 3.8e25:
        "A_needed_at_alpha_0.53": LLAMA3_TOKENS / LLAMA3_FLOPS**LLAMA3_ALPHA,
        "alpha_needed_at_A_0.29": math.log(LLAMA3_TOKENS / LLAMA3_A) / math.log(LLAMA3_FLOPS),
    }


# ---- everything from a sweep ----
def fit_sweep(
    records: Sequence[dict],
    *,
    extrapolate_to: float = LLAMA3_FLOPS,
    out_dir=None,
    grid: dict | None = None,
    n_boot: int = 100,
    seed: int = 0,
) -> dict:
    """Fits for isoFLOP records {budget, params, tokens, loss[, nll][, accuracy]} (one per trained model).

    Returns JSON-able results: per-budget parabolas, the power laws D*(C) and N*(C) with the extrapolation to
    `extrapolate_to`, approach 3 (with >= 5 records), and the downstream fit when records carry nll and accuracy
    (step 1 uses the NLL parabola's value at each budget's loss-optimal token count). With `out_dir`, also
    writes isoflop.png, power_law.png and (when fitted) downstream.png."""
    for i, r in enumerate(records):
        missing = [k for k in ("budget", "params", "tokens", "loss") if k not in r]
        if missing:
            raise ValueError(f"isoFLOP record {i} lacks {', '.join(missing)}: {r}")
    iso = fit_isoflop(records)
    budgets = [p["budget"] for p in iso]
    out: dict = {"isoflop": iso}
    if len(iso) >= 2:
        tok_law = fit_power_law(budgets, [p["tokens_opt"] for p in iso])
        par_law = fit_power_law(budgets, [p["params_opt"] for p in iso])
        out["tokens_law"] = {
            "A": tok_law.A,
            "alpha": tok_law.alpha,
            "se_alpha": tok_law.se_alpha,
            "tokens_at": {f"{extrapolate_to:.3g}": float(tok_law(extrapolate_to))},
        }
        out["params_law"] = {
            "A": par_law.A,
            "alpha": par_law.alpha,
            "se_alpha": par_law.se_alpha,
            "params_at": {f"{extrapolate_to:.3g}": float(par_law(extrapolate_to))},
        }
    if len(records) >= 5:
        ch = fit_chinchilla(
            [r["params"] for r in records],
            [r["tokens"] for r in records],
            [r["loss"] for r in records],
            grid=grid,
            n_boot=n_boot,
            seed=seed,
        )
        out["chinchilla"] = {"E": ch.E, "A": ch.A, "B": ch.B, "alpha": ch.alpha, "beta": ch.beta, "ci": ch.ci}
    down = None
    if all("nll" in r for r in records) and all("accuracy" in r for r in records):
        nll_iso = {p["budget"]: p for p in fit_isoflop(records, key="nll")}
        opt_nll = [float(np.polyval(nll_iso[p["budget"]]["coef"], math.log10(p["tokens_opt"]))) for p in iso]
        down = fit_downstream(budgets, opt_nll, [r["nll"] for r in records], [r["accuracy"] for r in records])
        out["downstream"] = {
            "nll_k": down.nll_law.A,
            "nll_s": down.nll_law.alpha,
            "slope": down.slope,
            "mid": down.mid,
            "accuracy_at": {f"{extrapolate_to:.3g}": float(down.accuracy(extrapolate_to))},
        }
    if out_dir is not None:
        from eval import scaling_plots

        out["plots"] = scaling_plots.plot_sweep(records, iso, out, down, out_dir, extrapolate_to)
    return out
