"""A picture of a simulated run: each team's running slots over time, against capacity."""

from __future__ import annotations

from pathlib import Path

from benchmarks.fairshare_sim.simulator import SimResult


def plot_allocation(result: SimResult, path: str | Path) -> Path:
    """Write a PNG of each team's running slots over time (stacked), with the capacity.

    Uses matplotlib's object API with the Agg canvas, so no global backend or GUI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    hours = [t / 3600 for t in result.times]
    stacks = [result.running[t.name] for t in result.teams]
    labels = [f"{t.name} (w={t.weight:g}, quota={t.quota})" for t in result.teams]
    axes.stackplot(hours, stacks, labels=labels, step="post", alpha=0.85)
    axes.axhline(result.capacity, color="black", linewidth=1, linestyle="--", label="capacity")
    axes.set_xlabel("time (h)")
    axes.set_ylabel("running slots")
    axes.set_ylim(0, result.capacity * 1.1)
    axes.set_title(f"{result.scheduler}: running slots per team")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png")
    return target
