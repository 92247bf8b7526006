"""What a comparison returns and how it is printed.

Results are plain data (so tests can assert on them and ``--json`` can save them); rich only
renders them. A row always carries both medians, so its ratio can be recomputed and checked.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Timing:
    """Wall times (seconds) of one contender over the repeats, and what it produced."""

    name: str
    seconds: list[float]
    tokens: int = 0  # generated tokens per run (the same in every repeat: greedy decoding)
    cpu_seconds: list[float] = field(default_factory=list)  # this process + engine children
    frontend_cpu_seconds: list[float] = field(default_factory=list)  # this process only

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else math.nan

    @property
    def frontend_cpu_median(self) -> float:
        if not self.frontend_cpu_seconds:
            return math.nan
        return statistics.median(self.frontend_cpu_seconds)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.median if self.median > 0 else math.nan


@dataclass
class Row:
    """One comparison: ours against the other contender, with an optional target ratio."""

    label: str
    ours: Timing
    other: Timing
    target: float | None = None  # the ratio must be at most this
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours.median / self.other.median if self.other.median > 0 else math.nan

    @property
    def paired_ratios(self) -> list[float]:
        """Ours / other within each repeat (the two ran back to back in the same round).

        Their spread is how far apart the two can land on this machine from one round to the
        next, which says whether a ratio of medians near its target is a result or noise.
        """
        ours, other = self.ours.seconds, self.other.seconds
        if len(ours) != len(other):
            return []
        return sorted(a / b for a, b in zip(ours, other, strict=True) if b > 0)

    @property
    def paired_range(self) -> tuple[float, float]:
        """The middle half of the paired ratios (all of them below four repeats)."""
        ratios = self.paired_ratios
        if not ratios:
            return (math.nan, math.nan)
        if len(ratios) < 4:
            return (ratios[0], ratios[-1])
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        return (q1, q3)

    @property
    def cpu_ratio(self) -> float:
        """CPU time ratio: less sensitive than wall time to other jobs on a shared machine."""
        other = self.other.cpu_median
        return self.ours.cpu_median / other if other > 0 else math.nan

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target


@dataclass
class Report:
    """All rows of one comparison, plus free-form notes (memory, identity checks, skips)."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # figures tests and JSON may want

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(label)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for raw, row in zip(out["rows"], self.rows, strict=True):
            raw.update(
                ratio=row.ratio,
                paired_ratios=row.paired_ratios,
                cpu_ratio=row.cpu_ratio,
                met=row.met,
                ours_median_s=row.ours.median,
                other_median_s=row.other.median,
            )
        return out


def _met_text(met: bool | None) -> str:
    return {None: "-", True: "[green]yes[/]", False: "[red]no[/]"}[met]


def render(report: Report, console: Console) -> None:
    """Print one report as a table; the ratio is time of ours / time of the other.

    Times are medians over the repeats, in seconds; "paired IQR" is the middle half of the
    per-round ratios (see :attr:`Row.paired_ratios`).
    """
    extra_cols: list[str] = []
    for row in report.rows:
        extra_cols += [k for k in row.extra if k not in extra_cols]
    table = Table(title=report.title, title_justify="left", show_lines=False)
    columns = (
        "comparison (ours vs other)",
        "ours s",
        "other s",
        "ratio",
        "paired IQR",
        "target",
        "met",
    )
    for col in (*columns, "CPU ratio", "front-end CPU s"):
        table.add_column(col, justify="left" if col.startswith("comparison") else "right")
    for col in extra_cols:
        table.add_column(col, justify="right")
    for row in report.rows:
        table.add_row(
            row.label,
            f"{row.ours.median:.3f}",
            f"{row.other.median:.3f}",
            f"{row.ratio:.3f}",
            "{:.2f}-{:.2f}".format(*row.paired_range),
            "-" if row.target is None else f"<= {row.target:g}",
            _met_text(row.met),
            f"{row.cpu_ratio:.3f}",
            f"{row.ours.frontend_cpu_median:.2f} / {row.other.frontend_cpu_median:.2f}",
            *(row.extra.get(c, "") for c in extra_cols),
        )
    console.print(table)
    for note in report.notes:
        console.print(f"  [dim]-[/] {note}")
    console.print()
