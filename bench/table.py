"""The one table ``make bench`` prints (``bench/suite.py``): rows, ratios, aims, layout.

No measuring here: a row holds what a workload measured, the reference measured beside
it (a ceiling of this machine, or a peer's figure quoted from elsewhere), their ratio,
the aim it is held to, and the CPU each process used over the measured interval. The
same rows print as aligned text and as markdown for ``docs/benchmarks.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

COLUMNS = ("workload", "figure", "ceiling or reference", "ratio", "aim", "CPU, % of one core")


@dataclass(frozen=True)
class Aim:
    """A product aim for one figure: ``value`` must be at least, at most, or below a bound.

    ``stretch`` is a higher bound also aimed for (met, but not the stretch, in between).
    """

    text: str
    at_least: float | None = None
    at_most: float | None = None
    below: float | None = None
    stretch: float | None = None

    def met(self, value: float | None) -> bool | None:
        """Whether ``value`` meets the aim; None when there is no value to judge."""
        if value is None or math.isnan(value):
            return None
        if self.at_least is not None and value < self.at_least:
            return False
        if self.at_most is not None and value > self.at_most:
            return False
        return not (self.below is not None and value >= self.below)

    def verdict(self, value: float | None) -> str:
        met = self.met(value)
        if met is None:
            return "n/a"
        if not met:
            return "not met"
        if self.stretch is not None and value is not None and value < self.stretch:
            return "met (stretch not)"
        return "met"


@dataclass
class Row:
    """One line of the table. ``aim_value`` is what the aim is checked against (the ratio
    when left out); ``error`` replaces the figures of a workload that failed."""

    workload: str
    figure: str = ""
    reference: str = ""
    ratio: float | None = None
    aim: Aim | None = None
    aim_value: float | None = None
    cpu: str = ""
    error: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def judged(self) -> float | None:
        return self.aim_value if self.aim_value is not None else self.ratio

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "failed"
        if self.aim is None:
            return ""
        return self.aim.verdict(self.judged)

    def cells(self) -> list[str]:
        if self.error is not None:
            aim = f"{self.aim.text}: failed" if self.aim else ""
            return [self.workload, f"FAILED: {self.error}", "", "", aim, ""]
        aim = f"{self.aim.text}: {self.verdict}" if self.aim else ""
        return [self.workload, self.figure, self.reference, fmt_ratio(self.ratio), aim, self.cpu]


def ratio(figure: float | None, reference: float | None) -> float | None:
    """figure / reference, or None when either is missing, not a number, or the
    reference is zero."""
    if figure is None or reference is None:
        return None
    if math.isnan(figure) or math.isnan(reference) or reference == 0:
        return None
    return figure / reference


def mean_reference(values: Iterable[float | None]) -> float | None:
    """The mean of the reference runs that produced a figure (e.g. the ceiling measured
    before and after the workload), None if none did."""
    got = [v for v in values if v is not None and not math.isnan(v)]
    return sum(got) / len(got) if got else None


def fmt_ratio(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x"


def fmt_ms(value: float) -> str:
    if math.isinf(value):
        return "lost"
    if math.isnan(value):
        return "n/a"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def fmt_cpu(shares: dict[str, float | Sequence[float] | None]) -> str:
    """'server 95 %, PostgreSQL 60 %' from CPU shares in cores (1.0 = one core); a
    sequence is one share per process of that name ('server 120 % (3 processes: …)');
    None leaves the name out."""
    parts = []
    for name, share in shares.items():
        if share is None:
            continue
        if isinstance(share, int | float):
            parts.append(f"{name} {share * 100:.0f} %")
            continue
        each = list(share)
        total = sum(each)
        if len(each) > 1:
            inner = " + ".join(f"{v * 100:.0f}" for v in each)
            parts.append(f"{name} {total * 100:.0f} % ({len(each)} processes: {inner})")
        else:
            parts.append(f"{name} {total * 100:.0f} %")
    return ", ".join(parts)


def percentile_with_losses(values: Sequence[float], lost: int, q: float) -> float:
    """The q-th percentile (nearest rank) when ``lost`` samples never arrived: they count
    as infinitely late, so losing more than 1 - q of them makes the percentile infinite."""
    ordered = sorted(values) + [math.inf] * lost
    if not ordered:
        return math.nan
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def exit_status(rows: Sequence[Row]) -> int:
    """1 if any workload failed, else 0 (an aim not met is a result, not a failure)."""
    return 1 if any(row.error is not None for row in rows) else 0


def render_text(header: Sequence[str], rows: Sequence[Row]) -> str:
    """The header lines, then the rows as columns aligned with spaces; a cell too wide
    for its column (at most ``width``) wraps onto the next lines."""
    width = 46
    cells = [list(COLUMNS)] + [row.cells() for row in rows]
    widths = [min(width, max(len(c[i]) for c in cells)) for i in range(len(COLUMNS))]
    lines = [*header, ""]
    for n, cols in enumerate(cells):
        wrapped = [_wrap(text, widths[i]) for i, text in enumerate(cols)]
        for k in range(max(len(w) for w in wrapped)):
            parts = [(w[k] if k < len(w) else "").ljust(widths[i]) for i, w in enumerate(wrapped)]
            lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, current = text.split(" "), [], ""
    for word in words:
        while len(word) > width:
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:width])
            word = word[width:]
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return lines


def render_markdown(header: Sequence[str], rows: Sequence[Row]) -> str:
    """The header as a list, then a markdown table of the rows."""
    lines = [f"- {line}" for line in header] + [""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in rows:
        cells = row.cells()
        if row.error is None and row.aim is not None:
            cells[4] = f"{row.aim.text}: **{row.verdict}**"
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or " "
