"""PNG plots of the scaling-law fits: isoFLOP curves with their minima, the power law with its extrapolation, and
the downstream sigmoid."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tools import atomic  # noqa: E402


def _save(fig, path: Path) -> str:
    with atomic.replacing(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def plot_isoflop(records, iso, path: Path) -> str:
    by = defaultdict(list)
    for r in records:
        by[float(r["budget"])].append(r)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(iso)))
    for color, p in zip(colors, iso):
        rs = by[p["budget"]]
        x = np.log10([r["tokens"] for r in rs])
        ax.scatter(10**x, [r["loss"] for r in rs], color=color, s=18, label=f"{p['budget']:.1e} FLOPs")
        xs = np.linspace(x.min() - 0.15, x.max() + 0.15, 100)
        ax.plot(10**xs, np.polyval(p["coef"], xs), color=color, lw=1)
        ax.scatter([p["tokens_opt"]], [p["loss_opt"]], color=color, marker="*", s=120, edgecolor="k", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss")
    ax.set_title("IsoFLOP curves (stars: fitted minima)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_power_law(iso, fit: dict, path: Path, extrapolate_to: float) -> str:
    budgets = np.array([p["budget"] for p in iso])
    tokens = np.array([p["tokens_opt"] for p in iso])
    A, alpha = fit["tokens_law"]["A"], fit["tokens_law"]["alpha"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    cs = np.logspace(np.log10(budgets.min()) - 0.5, np.log10(max(extrapolate_to, budgets.max())) + 0.2, 100)
    ax.plot(cs, A * cs**alpha, label=f"fit: D* = {A:.3g} C^{alpha:.3f}")
    ax.scatter(budgets, tokens, color="k", zorder=3, label="isoFLOP minima")
    ax.scatter(
        [extrapolate_to],
        [A * extrapolate_to**alpha],
        marker="x",
        color="r",
        s=60,
        label=f"extrapolation: {A * extrapolate_to**alpha:.3g} tokens at {extrapolate_to:.2g}",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute (FLOPs)")
    ax.set_ylabel("compute-optimal training tokens")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_downstream(records, down, path: Path) -> str:
    nll = np.array([r["nll"] for r in records])
    acc = np.array([r["accuracy"] for r in records])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(nll, acc, color="k", s=14, label="models")
    xs = np.linspace(nll.min() - 0.2 * np.ptp(nll), nll.max() + 0.2 * np.ptp(nll), 200)
    ax.plot(xs, down.accuracy_from_nll(xs), label=f"sigmoid: slope {down.slope:.3g}, mid {down.mid:.3g}")
    ax.set_xlabel("normalised NLL of the correct answer")
    ax.set_ylabel("accuracy")
    ax.set_title("Downstream: NLL -> accuracy")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_sweep(records, iso, fit: dict, down, out_dir, extrapolate_to: float) -> dict:
    out_dir = Path(out_dir)
    paths = {"isoflop": plot_isoflop(records, iso, out_dir / "isoflop.png")}
    if "tokens_law" in fit:
        paths["power_law"] = plot_power_law(iso, fit, out_dir / "power_law.png", extrapolate_to)
    if down is not None:
        paths["downstream"] = plot_downstream(records, down, out_dir / "downstream.png")
    return paths
