"""Cross-backend agreement as a judgment: the report of every backend pair, its text,
and :func:`judge_agreement`, the :class:`~convviz_check.types.Outcome` it comes to.

Pure NumPy: the per-backend results are computed elsewhere
(:func:`convviz_check.agreement` sends them to worker processes; the export route
reads them from files); this module holds what was found and how it reads.

Text: a header with the verdict, the problems and notes, one table per technique
(metric, bound, one column per backend pair, the worst item) and the details of the
failing pairs. Bounds are printed exactly as set (the shortest text that reads back as
the same float: ``>= 0.99999``, never rounded to ``>= 1``); values get as many digits as
it takes to show on which side of their bound they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..artifacts import Artifact
from ..report.comparison import distinct_format, exact
from ..types import ITEM_UNIT, KIND_OF, Comparison, MetricResult, Outcome

# One backend's results: technique -> artifact.
Results = dict[str, Artifact]
# Significant digits of a value when its bound does not need more.
VALUE_DIGITS = 3


@dataclass(frozen=True)
class PairComparison:
    """One technique compared between two backends (``expected`` is the earlier one in
    the backend order)."""

    artifact: str
    expected: str
    obtained: str
    comparison: Comparison | None
    error: str = ""

    @property
    def passed(self) -> bool:
        return self.comparison is not None and self.comparison.passed and not self.error

    @property
    def worst_item(self) -> str:
        if self.comparison is None:
            return ""
        return str(self.comparison.details.get("worst_item", ""))

    @property
    def pair(self) -> str:
        return f"{self.expected}|{self.obtained}"

    @property
    def distance(self) -> float:
        """How far the pair is from its bounds (the largest
        :attr:`~convviz_check.types.MetricResult.distance`): <= 1 passes; a failing
        pair is always beyond 1, a pair that could not be compared infinitely far."""
        if self.comparison is None:
            return math.inf
        # A failed metric is beyond 1 by construction (MetricResult.distance); a pair
        # failed by no metric of its own is as far as one that could not be compared.
        worst = max((m.distance for m in self.comparison.metrics.values()), default=0.0)
        return worst if self.comparison.passed or worst > 1.0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        metrics = self.comparison.metrics if self.comparison is not None else {}
        return {
            "artifact": self.artifact,
            "expected": self.expected,
            "obtained": self.obtained,
            "passed": self.passed,
            "error": self.error,
            "worst_item": self.worst_item,
            "metrics": {name: m.to_dict() for name, m in metrics.items()},
            "text": self.comparison.text if self.comparison is not None else "",
        }


@dataclass
class AgreementReport:
    """Outcome of :func:`agreement` (or :func:`~.export.compare_exported`).

    Attributes:
        model: the model source.
        backends: the backends compared, in order (the first is the reference).
        what: the techniques compared.
        pairs: one :class:`PairComparison` per technique and backend pair.
        notes: plain facts that lead the report (top class differs, fingerprint
            differs, degenerate maps).
        problems: failures that are not a metric (missing result, heatmaps of
            different classes on the export route); any problem fails the report.
        info: per backend: versions, threads, model fingerprint.
        subjects: per technique, what was compared (layers, classes, filters).
        results: backend -> technique -> :class:`~convviz_check.artifacts.Artifact`,
            the arrays each backend computed (Grad-CAM after the class alignment), for
            the pictures (:func:`convviz_check.report.agreement.write_pictures`,
            ``convviz-check agree --out DIR``). They are kept as long as the report:
            every compared layer's activations for every image, the heatmaps and the
            filter patterns, once per backend (measured: 3 x 2.8 MB for the bundled
            convnet's 7 layers on 4 scenes of 64x64 with 8 filter patterns; 3 x 0.9 MB
            for MobileNetV3Small's 34 layers on 2 images of 64x64, without patterns);
            ``report.results.clear()`` frees them (the table and :meth:`to_dict` need
            none of it). Not part of :meth:`to_dict`, equality or ``repr``.
        inputs: a thumbnail strip of the first input images (uint8, at most 8 tiles
            of 64x64: :func:`convviz_check.report.pictures.inputs_thumbnail`), to draw
            heatmaps over; None where the images are not known (the export route).
    """

    model: str
    backends: tuple[str, ...]
    what: tuple[str, ...]
    pairs: list[PairComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    subjects: dict[str, str] = field(default_factory=dict)
    results: dict[str, Results] = field(default_factory=dict, compare=False, repr=False)
    inputs: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def reference(self) -> str:
        return self.backends[0]

    @property
    def passed(self) -> bool:
        return not self.problems and all(p.passed for p in self.pairs)

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[PairComparison]:
        return [p for p in self.pairs if not p.passed]

    def metric_names(self, artifact: str) -> list[str]:
        names: dict[str, None] = {}
        for p in self.pairs:
            if p.artifact == artifact and p.comparison is not None:
                names.update(dict.fromkeys(p.comparison.metrics))
        return list(names)

    def matrix(self, artifact: str, metric: str) -> dict[str, dict[str, MetricResult | None]]:
        """Backend x backend matrix of one metric of one technique (the worst item of
        each pair; symmetric, None on the diagonal and where not measured)."""
        out: dict[str, dict[str, MetricResult | None]] = {
            a: {b: None for b in self.backends} for a in self.backends
        }
        for p in self.pairs:
            if p.artifact == artifact and p.comparison is not None:
                m = p.comparison.metrics.get(metric)
                out[p.expected][p.obtained] = m
                out[p.obtained][p.expected] = m
        return out

    def worst(self, artifact: str) -> tuple[PairComparison, str] | None:
        """The pair and item (layer, image or filter) farthest from their bounds for
        ``artifact`` (:attr:`PairComparison.distance`; a failing pair first)."""
        pairs = [p for p in self.pairs if p.artifact == artifact]
        if not pairs:
            return None
        worst = max(pairs, key=lambda p: p.distance)  # the first of equals
        return worst, worst.worst_item

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for ``report.json`` and ``convviz-check agree --json``)."""
        return {
            "passed": self.passed,
            "model": self.model,
            "backends": list(self.backends),
            "what": list(self.what),
            "notes": list(self.notes),
            "problems": list(self.problems),
            "subjects": dict(self.subjects),
            "info": self.info,
            "pairs": [p.to_dict() for p in self.pairs],
        }

    def __str__(self) -> str:
        return render(self)


# --------------------------------------------------------------------------------------
# The text
# --------------------------------------------------------------------------------------
def _headline(report: AgreementReport) -> str:
    n_images = report.subjects.get("images", "")
    return (
        f"cross-backend agreement {'passed' if report.passed else 'FAILED'}: "
        f"{report.model}{', ' + n_images if n_images else ''}; backends "
        f"{', '.join(report.backends)} (reference {report.reference})"
    )


def render(report: AgreementReport) -> str:
    """The whole report as text."""
    lines = [_headline(report)]
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
    subject = report.subjects.get(technique, "")
    lines = [f"{technique}{': ' + subject if subject else ''}"]
    rows = table_rows(report, technique)
    if not rows:
        return lines + ["  (not compared)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return lines


def table_rows(report: AgreementReport, technique: str) -> list[list[str]]:
    """One technique's table as cells: a header (metric, bound, one column per backend
    pair), one row per metric, the worst item, and the degenerate / error rows where
    they apply; empty when nothing was compared."""
    pairs = [p for p in report.pairs if p.artifact == technique]
    if not pairs:
        return []
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
    return rows


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


# --------------------------------------------------------------------------------------
# The judgment
# --------------------------------------------------------------------------------------
def judge_agreement(report: AgreementReport) -> Outcome:
    """The Outcome of a cross-backend comparison (judgment ``"agreement"``).

    Metrics: per technique and metric, the pair farthest from its bound
    (``gradcam.pearson``...; the note names the pair and its worst item). Items: one
    row per technique and backend pair. Facts: the backends, the reference, the
    notes and problems. Pictures are added by the report layer
    (:func:`convviz_check.report.agreement.pictures`) where the arrays are kept.
    """
    metrics: dict[str, MetricResult] = {}
    for technique in report.what:
        for name in report.metric_names(technique):
            found = [
                (p, p.comparison.metrics[name])
                for p in report.pairs
                if p.artifact == technique
                and p.comparison is not None
                and name in p.comparison.metrics
            ]
            pair, worst = max(found, key=lambda pm: pm[1].distance)
            where = f"{pair.pair}" + (f", {pair.worst_item}" if pair.worst_item else "")
            metrics[f"{technique}.{name}"] = MetricResult(
                worst.name, worst.value, worst.bound, worst.ok, worst.direction, where
            )
    items = {
        f"{p.artifact} {p.expected} vs {p.obtained}": {
            "ok": p.passed,
            "worst_item": p.worst_item or "-",
            **({"error": p.error} if p.error else {}),
        }
        for p in report.pairs
    }
    failing = report.failures()
    if report.passed:
        lead = _headline(report)
    elif report.problems:
        lead = f"{_headline(report)}: {report.problems[0]}"
    else:
        first = failing[0]
        lead = f"{_headline(report)}: {first.artifact} differs between {first.expected} and {first.obtained}"
        out = [
            m
            for m in (first.comparison.metrics.values() if first.comparison is not None else [])
            if not m.ok
        ]
        if out:
            m = out[0]
            lead += f" ({m.name} {format_value(m)}, bound {format_bound(m)})"
    facts: dict[str, Any] = {
        "backends": list(report.backends),
        "reference": report.reference,
        "what": list(report.what),
        "model": report.model,
    }
    if report.notes:
        facts["notes"] = "; ".join(report.notes)
    if report.problems:
        facts["problems"] = "; ".join(report.problems)
    status = "passed" if report.passed else "failed"
    message = "" if report.passed else render(report)
    return Outcome("agreement", status, lead, message, metrics, items, {}, facts)
