"""PNG plots written by the CLI (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_losses(curves: Mapping[str, Sequence[float]], path: str | Path, title: str = "loss") -> Path:
    """One line per curve, x = step. Returns the written path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_learning_curves(results: Mapping, path: str | Path, smooth: int = 5) -> Path | None:
    """A rank benchmark's training loss per step: one panel per task, one line per method x
    adapter (mean over seeds, moving average over ``smooth`` steps). None when no row has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in results["rows"] if r.get("losses")]
    if not rows:
        return None
    tasks = [t for t in results["config"]["tasks"] if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.8), dpi=100, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [r for r in rows if r["task"] == task]
        for method, adapter in dict.fromkeys((r["method"], r["adapter"]) for r in mine):
            curves = [r["losses"] for r in mine if r["method"] == method and r["adapter"] == adapter]
            steps = min(len(c) for c in curves)
            mean = np.mean([c[:steps] for c in curves], axis=0)
            window = max(1, min(smooth, steps))
            smoothed = np.convolve(mean, np.ones(window) / window, mode="valid")
            ax.plot(range(window, steps + 1), smoothed, label=f"{method}/{adapter}", linewidth=1.2)
        chance = results.get("chance", {}).get(task)
        ax.set_title(task + (f" (chance {100 * chance:.0f} %)" if chance is not None else ""), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    seeds = len({r["seed"] for r in rows})
    adalora = "; peft-adalora's includes its orthogonality regulariser" if any(r["method"] == "peft-adalora" for r in rows) else ""
    fig.suptitle(f"training loss, mean over {seeds} seed{'s' if seeds > 1 else ''} (moving average {smooth}){adalora}", fontsize=10)
    return save_figure(fig, path)
