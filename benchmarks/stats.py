"""Medians, ratios and the rows of the result table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratios(variant: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per-round ratios: round i of the variant against round i of its baseline."""
    return [v / b for v, b in zip(variant, baseline, strict=True) if b > 0]


@dataclass
class Row:
    """One line of the table: a figure, what it is measured against, and its target."""

    section: str
    name: str
    value: float
    unit: str
    baseline: str = ""
    target: float | None = None
    #: "min" when the value must be at least the target, "max" when at most.
    bound: str = "min"
    detail: str = ""
    spread: tuple[float, float] | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value != self.value:  # NaN: not measured
            return None
        return self.value >= self.target if self.bound == "min" else self.value <= self.target

    def shown_value(self) -> str:
        if self.value != self.value:
            return "n/a"
        if self.unit == "x":
            return f"{self.value:.2f}x"
        if self.unit == "%":
            # two decimals: 98.99% must not print as 99.0% beside a target of 99%
            return f"{self.value * 100:.2f}%"
        if self.unit == "ns":
            return f"{self.value:,.0f} ns"
        if self.unit == "us":
            return f"{self.value:,.1f} us"
        if self.unit == "Ir":
            return f"{self.value:,.0f} instr."
        if self.unit in ("MB", "ms"):
            return f"{self.value:.2f} {self.unit}"
        return f"{self.value:.2f} {self.unit}".strip()

    def shown_target(self) -> str:
        if self.target is None:
            return ""
        sign = ">=" if self.bound == "min" else "<="
        if self.unit == "%":
            return f"{sign} {self.target * 100:.0f}%"
        if self.unit == "x":
            return f"{sign} {self.target:g}x"
        return f"{sign} {self.target:g} {self.unit}".rstrip()

    def shown_spread(self) -> str:
        if not self.spread:
            return ""
        low, high = self.spread
        if self.unit == "%":
            return f"{low * 100:.1f}-{high * 100:.1f}%"
        if self.unit in ("ns", "us"):
            return f"{low:,.0f}-{high:,.0f} {self.unit}"
        return f"{low:.2f}-{high:.2f}"


def spread(values: Sequence[float]) -> tuple[float, float] | None:
    """The middle of the rounds (quartiles from 5 rounds on, else min-max)."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) >= 5:
        q = statistics.quantiles(ordered, n=4)
        return q[0], q[2]
    return ordered[0], ordered[-1]


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (also readable as plain text)."""
    header = ["section", "figure", "value", "target", "met", "rounds IQR", "baseline / detail"]
    lines = [header]
    for row in rows:
        met = {True: "yes", False: "NO", None: ""}[row.met]
        detail = "; ".join(x for x in (row.baseline, row.detail) if x)
        lines.append([row.section, row.name, row.shown_value(), row.shown_target(), met, row.shown_spread(), detail])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
