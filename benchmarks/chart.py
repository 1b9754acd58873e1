"""The chart of docs/performance.md: each variant's share of its baseline, as bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .stats import Row


def chartable(rows: Sequence[Row]) -> list[Row]:
    """The rows that are a share of a baseline (unit ``%``, higher is better) and were measured."""
    return [
        row
        for row in rows
        if row.unit == "%" and row.value == row.value and row.bound == "min" and "share" not in row.name
    ]


def draw(rows: Sequence[Row], path: Path, title: str) -> None:
    """A horizontal bar per row, its target as a tick, the middle half of its rounds as
    an error bar; written as a PNG to ``path`` (matplotlib, from the dev extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = chartable(rows)
    if not shown:
        return
    labels = [f"{row.section[:1]}  {row.name}" for row in shown]
    values = [row.value * 100 for row in shown]
    low = [max(0.0, (row.value - row.spread[0]) * 100) if row.spread else 0.0 for row in shown]
    high = [max(0.0, (row.spread[1] - row.value) * 100) if row.spread else 0.0 for row in shown]
    colors = ["#4c72b0" if row.met is not False else "#c44e52" for row in shown]
    figure, axes = plt.subplots(figsize=(11, 0.38 * len(shown) + 1.6))
    positions = list(range(len(shown)))[::-1]
    axes.barh(positions, values, xerr=[low, high], color=colors, height=0.6, capsize=2)
    for position, row, value, above in zip(positions, shown, values, high, strict=True):
        if row.target is not None:
            axes.plot([row.target * 100] * 2, [position - 0.38, position + 0.38], color="black", linewidth=1.6)
        axes.text(value + above + 1, position, f"{value:.1f}%", va="center", fontsize=8)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xlabel("share of the baseline, % (black tick: target; red: target not met; bars: rounds IQR)")
    axes.set_xlim(0, max(110.0, max(v + h for v, h in zip(values, high, strict=True)) + 12))
    axes.axvline(100, color="grey", linewidth=0.6, linestyle=":")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
