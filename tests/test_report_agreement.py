"""The text of an agreement report (convviz_check/report/agreement.py)."""

from __future__ import annotations

import itertools

import pytest

from convviz_check.crossbackend import agreement as ag
from convviz_check.report import agreement as text
from convviz_check.types import TECHNIQUES, Comparison, MetricResult, Tolerance
from tests.test_agreement import synthetic_results

ALL = ("tensorflow", "torch", "jax")


def _table(rendered: str, technique: str) -> list[str]:
    """The table lines of one technique (after its subject line, until the next one)."""
    lines = rendered.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split(":")[0] == technique)
    return list(itertools.takewhile(lambda line: line.startswith("  "), lines[start + 1 :]))


def test_failed_report_leads_with_the_verdict_the_worst_item_and_the_details() -> None:
    base, changed = synthetic_results(shift=0.5)
    results = {"tensorflow": base, "torch": base, "jax": changed}
    rendered = str(ag.build_report("m.keras", ALL, TECHNIQUES, results))
    lines = rendered.splitlines()
    assert lines[0] == (
        "cross-backend agreement FAILED: m.keras; backends tensorflow, torch, jax "
        "(reference tensorflow)"
    )
    assert lines[1] == "  - activations disagree: worst layer b (tensorflow vs jax)"
    table = _table(rendered, "activations")
    assert table[0].split() == [
        "metric",
        "bound",
        "tensorflow|torch",
        "tensorflow|jax",
        "torch|jax",
    ]
    max_rel = table[1].split()
    assert max_rel[:5] == ["max_rel", "<=", "0.0001", "0", "ok"]
    assert max_rel[6] == max_rel[8] == "FAIL" and float(max_rel[5]) > 1e-4
    assert any(line.split()[:3] == ["worst", "layer", "a"] for line in table)
    assert "details of the failing pairs:" in lines
    assert "  activations tensorflow -> jax:" in lines
    details = lines[lines.index("  activations tensorflow -> jax:") + 1]
    assert details == "    activation comparison FAILED (2 layers, worst b)"
    assert "filters: layer 'b', filters [0, 1, 2] (compared deprocessed)" in lines
    assert "activations: 2 layers (a, b)" in lines


def test_bounds_are_printed_exactly_as_set() -> None:
    base, _ = synthetic_results()
    results = {"tensorflow": base, "jax": base}
    tolerance = Tolerance(pattern_ssim_min=0.99999, pattern_pearson_min=0.123456789)
    rendered = str(ag.build_report("m", ("tensorflow", "jax"), ("filters",), results, tolerance))
    table = _table(rendered, "filters")
    assert table[1].split()[:3] == ["ssim", ">=", "0.99999"]
    assert table[2].split()[:3] == ["pearson", ">=", "0.123456789"]
    assert ">= 1 " not in rendered


@pytest.mark.parametrize(
    "bound, expected",
    [(0.99999, "0.99999"), (5e-06, "5e-06"), (1e-4, "0.0001"), (0.0, "0"), (2.0, "2"), (None, "")],
)
def test_exact_is_the_shortest_text_that_reads_back(bound, expected) -> None:
    assert text.exact(bound) == expected
    if bound is not None:
        assert float(expected) == bound


@pytest.mark.parametrize(
    "value, bound, direction, expected",
    [
        (0.99998, 0.99999, "min", "0.99998"),  # 3 digits would read "1", a pass
        (0.9999996, 0.99999, "min", "1"),  # above the bound either way
        (1.00004e-4, 1e-4, "max", "0.000100004"),  # just over: more digits than "0.0001"
        (6.7e-7, 1e-4, "max", "6.7e-07"),
        (0.0, 1e-4, "max", "0"),
        (float("nan"), 1e-4, "max", "nan"),
        (0.123456, None, "max", "0.123"),
    ],
)
def test_values_get_the_digits_that_show_their_side_of_the_bound(
    value, bound, direction, expected
) -> None:
    ok = bound is None or (value <= bound if direction == "max" else value >= bound)
    metric = MetricResult("m", value, bound, ok, direction)
    assert text.format_value(metric) == expected


def test_format_bound_names_the_relation() -> None:
    assert text.format_bound(MetricResult("max_rel", 0.0, 1e-4, True, "max")) == "<= 0.0001"
    assert text.format_bound(MetricResult("ssim", 1.0, 0.999, True, "min")) == ">= 0.999"
    assert text.format_bound(MetricResult("count", 0.0, None, True)) == ""


def test_degenerate_error_and_uncompared_rows() -> None:
    deg, _ = synthetic_results(degenerate=True)
    report = ag.build_report(
        "m", ("tensorflow", "jax"), ("gradcam",), {"tensorflow": deg, "jax": deg}
    )
    table = _table(str(report), "gradcam")
    assert ["degenerate", "yes"] in [line.split() for line in table]
    report.pairs.append(ag.PairComparison("filters", "tensorflow", "jax", None, error="boom"))
    report.what = ("gradcam", "filters", "activations")
    rendered = str(report)
    filters = _table(rendered, "filters")
    assert ["error", "yes"] in [line.split() for line in filters]
    assert "  filters tensorflow -> jax:" in rendered.splitlines()
    assert "    boom" in rendered.splitlines()
    assert rendered.splitlines()[-1] != "activations"
    assert "activations\n  (not compared)" in rendered


def test_problems_and_notes_come_before_the_tables() -> None:
    report = ag.AgreementReport(model="m", backends=("torch",), what=("activations",))
    report.problems.append("exported by ['torch'] only")
    report.notes.append("a note")
    report.subjects["images"] = "2 image(s) (8, 8, 3) float32"
    assert str(report).splitlines() == [
        "cross-backend agreement FAILED: m, 2 image(s) (8, 8, 3) float32; backends torch "
        "(reference torch)",
        "  ! exported by ['torch'] only",
        "  - a note",
        "activations",
        "  (not compared)",
    ]


def test_a_metric_missing_from_one_pair_shows_a_dash() -> None:
    full = Comparison(
        "heatmap",
        {
            "max_abs": MetricResult("max_abs", 0.0, 1e-4, True),
            "ssim": MetricResult("ssim", 1.0, 0.999, True, "min"),
        },
        True,
    )
    partial = Comparison("heatmap", {"max_abs": MetricResult("max_abs", 0.0, 1e-4, True)}, True)
    report = ag.AgreementReport(
        model="m", backends=("tensorflow", "torch", "jax"), what=("gradcam",)
    )
    report.pairs += [
        ag.PairComparison("gradcam", "tensorflow", "torch", full),
        ag.PairComparison("gradcam", "tensorflow", "jax", partial),
    ]
    rows = [line.split() for line in _table(str(report), "gradcam")]
    assert ["ssim", ">=", "0.999", "1", "ok", "-"] in rows
    assert ["worst", "image", "-", "-"] in rows
