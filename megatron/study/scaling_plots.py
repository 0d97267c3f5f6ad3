"""The scaling study's plots, one per question (never every arm on one axes):

* ``scaling_curves.png``: per budget level, the baseline's and the composed arm's
  validation curves (mean over seeds, the band between the lowest and highest seed
  shaded) and the baseline's final loss, the target;
* ``scaling_data_to_quality.png``: the data the composed arm (and the same-steps control)
  needs for the baseline's final loss, against the budget, beside ``D = L`` and ``D = L/2``;
* ``scaling_same_steps.png``: final loss of the baseline, the same-steps control and the
  composed arm against the budget."""
from __future__ import annotations

import os

import numpy as np

from megatron.study.scaling import BASELINE, COMPOSED, CONTROL, by_run

COLOURS = {BASELINE: "tab:blue", COMPOSED: "tab:orange", CONTROL: "tab:green"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    _plt().close(fig)
    os.replace(path + ".tmp.png", path)
    return path


def seed_band(runs: dict[int, dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, mean, lowest, highest) of the seeds' validation curves, on the first
    seed's evaluation points (the others interpolated there, within their own range)."""
    curves = [sorted((p["tokens"], p["loss"]) for p in r["curve"])
              for _, r in sorted(runs.items())]
    x = np.array([t for t, _ in curves[0]], dtype=float)
    hi = min(c[-1][0] for c in curves)
    x = x[x <= hi] if (x <= hi).any() else x[:1]
    ys = np.array([np.interp(x, [t for t, _ in c], [v for _, v in c]) for c in curves])
    return x, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def _finish_budget_axes(fig, ax, analysis: dict, xlabel: str, ylabel: str, path: str) -> str:
    """x ticks at the levels' budgets, named (``B\n327,680``), labels, grid, legend;
    saves the figure."""
    rows = analysis["levels"]
    ax.set_xticks([r["budget_tokens"] for r in rows],
                  labels=[f"{r['name']}\n{r['budget_tokens']:,}" for r in rows], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_curves(runs, analysis: dict, path: str) -> str:
    plt = _plt()
    levels = analysis["levels"]
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 4), squeeze=False)
    for ax, row in zip(axes[0], levels):
        for arm in (BASELINE, COMPOSED):
            x, mean, lo, hi = seed_band(runs[(arm, round(row["level"], 6))])
            ax.plot(x, mean, color=COLOURS[arm], marker=".", label=arm)
            ax.fill_between(x, lo, hi, color=COLOURS[arm], alpha=0.25, linewidth=0)
        target = np.mean(list(row["target"].values()))
        ax.axhline(target, color="grey", linestyle="--", linewidth=1,
                   label="baseline final loss")
        ax.set_title(f"budget {row['name']} ({row['budget_tokens']:,} tokens)", fontsize=9)
        ax.set_xlabel("consumed tokens (layer-weighted)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation loss (whole split)")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def plot_data_to_quality(analysis: dict, path: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    budgets = np.array([r["budget_tokens"] for r in analysis["levels"]], dtype=float)
    ax.plot(budgets, budgets, color="grey", linestyle="--", label="D = budget (baseline)")
    ax.plot(budgets, budgets / 2, color="grey", linestyle=":", label="D = budget / 2 (paper)")
    for key, arm in (("composed", COMPOSED), ("control", CONTROL)):
        for row in analysis["levels"]:
            d = row.get(key)
            if d is None:
                continue
            label = arm if row is analysis["levels"][0] else None
            seeds = [t for t in d["tokens"].values() if t is not None]
            ax.scatter([row["budget_tokens"]] * len(seeds), seeds, color=COLOURS[arm],
                       s=12, alpha=0.6)
            if d["fraction_mean"] is not None:
                ax.errorbar(row["budget_tokens"], d["fraction_mean"] * row["budget_tokens"],
                            yerr=d["fraction_sd"] * row["budget_tokens"], color=COLOURS[arm],
                            marker="o", capsize=3, label=label)
            else:   # drawn at the budget with a note: not reached, not extrapolated
                ax.scatter(row["budget_tokens"], row["budget_tokens"], marker="^",
                           color=COLOURS[arm], label=label)
                ax.annotate("not reached", (row["budget_tokens"], row["budget_tokens"]),
                            fontsize=7, xytext=(4, 4), textcoords="offset points")
    return _finish_budget_axes(fig, ax, analysis, "budget: the baseline's tokens",
                               "tokens to reach the baseline's final loss", path)


def plot_same_steps(analysis: dict, path: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    rows = [r for r in analysis["levels"] if "same_steps" in r]
    for i, (key, arm) in enumerate((("baseline", BASELINE), ("control", CONTROL),
                                    ("composed", COMPOSED))):
        x = [r["budget_tokens"] * (1 + 0.03 * (i - 1)) for r in rows]   # side by side
        y = [r["same_steps"]["loss"][key]["mean"] for r in rows]
        e = [r["same_steps"]["loss"][key]["sd"] for r in rows]
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, color=COLOURS[arm], label=arm)
    return _finish_budget_axes(fig, ax, analysis, "budget (tokens, every arm the same)",
                               "final validation loss (whole split)", path)


def plot_all(records: list[dict], analysis: dict, out_dir: str) -> list[str]:
    """The three plots (the control's only when it ran); returns their paths."""
    if not analysis["levels"]:
        return []
    paths = [plot_curves(by_run(records), analysis,
                         os.path.join(out_dir, "scaling_curves.png")),
             plot_data_to_quality(analysis, os.path.join(out_dir,
                                                         "scaling_data_to_quality.png"))]
    if any("same_steps" in r for r in analysis["levels"]):
        paths.append(plot_same_steps(analysis, os.path.join(out_dir, "scaling_same_steps.png")))
    return paths
