"""The text of a cross-backend agreement report (what ``print(report)`` shows).

Pure text from an :class:`~convviz_check.crossbackend.agreement.AgreementReport`:
a header with the verdict, the problems and notes, one table per technique (metric,
bound, one column per backend pair, the worst item) and the details of the failing
pairs. Bounds are printed exactly as set (the shortest text that reads back as the
same float: ``>= 0.99999``, never rounded to ``>= 1``); values get as many digits as
it takes to show on which side of their bound they are. NumPy and the standard
library only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..types import ITEM_UNIT, KIND_OF
from .comparison import distinct_format, exact

if TYPE_CHECKING:  # pragma: no cover - types only (no import cycle at run time)
    from ..crossbackend.agreement import AgreementReport, PairComparison
    from ..types import MetricResult

# Significant digits of a value when its bound does not need more.
VALUE_DIGITS = 3


def render(report: AgreementReport) -> str:
    """The whole report as text."""
    n_images = report.subjects.get("images", "")
    head = (
        f"cross-backend agreement {'passed' if report.passed else 'FAILED'}: "
        f"{report.model}{', ' + n_images if n_images else ''}; backends "
        f"{', '.join(report.backends)} (reference {report.reference})"
    )
    lines = [head]
    lines += [f"  ! {p}" for p in report.problems]
    lines += [f"  - {n}" for n in report.notes]
    for technique in report.what:
        lines += technique_table(report, technique)
    failing = report.failures()
    if failing:
        lines.append("details of the failing pairs:")
        for p in failing:
            lines.append(f"  {p.artifact} {p.expected} -> {p.obtained}:")
            body = p.error or (p.comparison.text if p.comparison is not None else "")
            lines += ["    " + line for line in body.splitlines()]
    return "\n".join(lines)


def technique_table(report: AgreementReport, technique: str) -> list[str]:
    """One technique's lines: its subject, then a table of metric x backend pair."""
    pairs = [p for p in report.pairs if p.artifact == technique]
    subject = report.subjects.get(technique, "")
    lines = [f"{technique}{': ' + subject if subject else ''}"]
    if not pairs:
        return lines + ["  (not compared)"]
    rows: list[list[str]] = [["metric", "bound", *[p.pair for p in pairs]]]
    for name in report.metric_names(technique):
        rows.append(_metric_row(name, pairs))
    unit = ITEM_UNIT[KIND_OF[technique]]
    rows.append([f"worst {unit}", "", *[p.worst_item or "-" for p in pairs]])
    degenerate = [
        p.comparison is not None and "every map is degenerate" in p.comparison.text for p in pairs
    ]
    if any(degenerate):
        rows.append(["degenerate", "", *["yes" if d else "no" for d in degenerate]])
    if any(p.error for p in pairs):
        rows.append(["error", "", *["yes" if p.error else "" for p in pairs]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return lines


def _metric_row(name: str, pairs: list[PairComparison]) -> list[str]:
    bound, cells = "", []
    for p in pairs:
        m = p.comparison.metrics.get(name) if p.comparison is not None else None
        if m is None:
            cells.append("-")
            continue
        if m.bound is not None:
            bound = format_bound(m)
        cells.append(f"{format_value(m)} {'ok' if m.ok else 'FAIL'}")
    return [name, bound, *cells]


def format_bound(metric: MetricResult) -> str:
    """``<= bound`` for errors, ``>= bound`` for similarities, the bound exact."""
    relation = "<=" if metric.direction == "max" else ">="
    return f"{relation} {exact(metric.bound)}" if metric.bound is not None else ""


def format_value(metric: MetricResult) -> str:
    """The metric's value, precise enough to show which side of its bound it is on (a
    similarity of 0.99998 against ``>= 0.99999`` prints as ``0.99998``, never ``1``)."""
    value = float(metric.value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    if metric.bound is None:
        return f"{value:.{VALUE_DIGITS}g}" if math.isfinite(value) else str(value)
    return distinct_format(value, float(metric.bound))[0]
