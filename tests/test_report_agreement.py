"""The text of an agreement report (convviz_check/report/agreement.py)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convviz_check.artifacts import Artifact
from convviz_check.crossbackend import agreement as ag
from convviz_check.report import agreement as text
from convviz_check.report.comparison import exact
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
    assert exact(bound) == expected
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


# -- the pictures and the page (convviz-check agree --out DIR) ------------------------------
def _png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _planted(backends=ALL, shift: float = 0.5) -> ag.AgreementReport:
    """A report whose last backend's layer b is shifted by ``shift`` on image 1 only."""
    base, _ = synthetic_results()
    acts = dict(base["activations"].arrays)
    b = acts["b"].copy()
    b[1] += shift
    changed = {**base, "activations": Artifact.from_value({**acts, "b": b}, "activation")}
    results = {name: base for name in backends[:-1]} | {backends[-1]: changed}
    return ag.build_report("m.keras", backends, TECHNIQUES, results)


def test_the_report_keeps_each_backends_arrays_outside_dict_equality_and_repr() -> None:
    report = _planted()
    assert set(report.results) == set(ALL)
    np.testing.assert_allclose(
        report.results["jax"]["activations"].arrays["b"][1] - 0.5,
        report.results["tensorflow"]["activations"].arrays["b"][1],
        atol=1e-6,
    )
    assert "results" not in report.to_dict() and "inputs" not in report.to_dict()
    json.dumps(report.to_dict())  # JSON-ready, no arrays
    assert "array(" not in repr(report)
    assert report == _planted()  # equality ignores the arrays (no ambiguous truth value)


def test_pictures_show_every_backend_and_the_worst_pairs_self_scaled_diff(tmp_path) -> None:
    report = _planted()
    page, drawn = text.write_pictures(report, tmp_path)
    by = {d.technique: d for d in drawn}
    assert [d.technique for d in drawn] == list(report.what) and not any(d.error for d in drawn)
    acts = by["activations"]
    # the worst pair, the worst layer, the image where they differ most, its scale
    assert acts.diff_pair == "tensorflow|jax"
    assert acts.diff_scale == pytest.approx(0.5, rel=1e-6)
    assert "white = 0.5" in acts.diff_caption
    assert "image where tensorflow and jax differ most" in acts.caption
    diff = _png(acts.diff)
    assert diff.max() == 255  # scaled to its own max: the largest difference is white
    # one labelled row per backend: three backends draw a taller strip than two
    two = _planted(("tensorflow", "jax"))
    _, drawn_two = text.write_pictures(two, tmp_path / "two")
    for d, d2 in zip(drawn, drawn_two, strict=True):
        assert _png(d.strip).shape[0] > _png(d2.strip).shape[0], d.technique
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        f"{t}{s}.png" for t in TECHNIQUES for s in ("", ".diff")
    )
    assert page == tmp_path / "index.html"


def test_identical_backends_get_a_black_diff_that_says_so(tmp_path) -> None:
    base, _ = synthetic_results()
    report = ag.build_report("m", ALL, TECHNIQUES, {b: base for b in ALL})
    _, drawn = text.write_pictures(report, tmp_path)
    for d in drawn:
        assert d.diff_scale == 0.0 and "identical" in d.diff_caption, d
        assert _png(d.diff)[20:].min() >= 0  # drawn, not skipped
    assert "white =" not in (tmp_path / "index.html").read_text()


def test_heatmaps_are_drawn_over_the_inputs_when_the_report_knows_them(tmp_path) -> None:
    from convviz_check.report.pictures import inputs_thumbnail

    report = _planted()
    _, bare = text.write_pictures(report, tmp_path / "bare")
    report.inputs = inputs_thumbnail(np.zeros((2, 12, 12, 3), np.float32) + 1.0)
    _, over = text.write_pictures(report, tmp_path / "over")
    cam_bare, cam_over = (next(d for d in x if d.technique == "gradcam") for x in (bare, over))
    assert "drawn alone" in cam_bare.caption and "over the input images" in cam_over.caption
    white = [(_png(d.strip) == 255).all(axis=-1).sum() for d in (cam_bare, cam_over)]
    # A white input saturates the overlay: the 2 x 3 heatmap tiles (96 px) turn white.
    assert white[1] - white[0] > 0.7 * 2 * 3 * 96 * 96


def test_the_page_opens_on_the_tables_with_exact_bounds_then_the_pictures(tmp_path) -> None:
    base, changed = synthetic_results(shift=0.5)
    tolerance = Tolerance(pattern_ssim_min=0.99999)
    report = ag.build_report(
        "m.keras", ALL, TECHNIQUES, {"tensorflow": base, "torch": base, "jax": changed}, tolerance
    )
    page, drawn = text.write_pictures(report, tmp_path)
    html = page.read_text()
    assert "cross-backend agreement <span class='badge failed'>FAILED</span>" in html
    assert "&gt;= 0.99999" in html and "&gt;= 1<" not in html  # exact, never rounded
    assert "&lt;= 0.0001" in html
    tables = html.index("Metrics per backend pair")
    pictures = html.index("<h2>Pictures</h2>")
    assert tables < html.index("details of the failing pairs") < pictures
    for d in drawn:  # relative links: the folder opens from disk and can be moved
        assert f"src='{Path(d.strip).name}'" in html and f"src='{Path(d.diff).name}'" in html
        assert html.index(f"id='table-{d.technique}'") < tables + len(html) // 2
    # the failing cells are marked
    assert "<td class='num bad'>0.161 FAIL</td>" in html.replace("\n", "")


def test_a_technique_without_arrays_gets_a_reason_not_an_exception(tmp_path) -> None:
    report = _planted()
    report.results.clear()
    page, drawn = text.write_pictures(report, tmp_path)
    assert all("no backend's arrays" in d.error for d in drawn)
    assert "no picture: ValueError: no backend&#x27;s arrays" in page.read_text()
    assert not list(tmp_path.glob("*.png"))


def test_activation_preview_caps_channels_and_enlarges_small_maps() -> None:
    from convviz_check.report import pictures

    act = np.random.default_rng(0).normal(size=(2, 2, 64)).astype(np.float32)
    grid = pictures.activation_preview(act, max_channels=32)
    # 2x2 maps enlarged 8 times (16 px tiles, 8 px gaps), 16 per row, 32 of 64
    # channels: two rows
    assert grid.shape == (8 * (2 * 3 - 1), 8 * (16 * 3 - 1))
    assert (grid[16:24] == 0).all()  # the gap between the rows
    wide = pictures.activation_preview(np.ones((112, 112, 4), np.float32), max_width=500)
    assert wide.shape[1] <= 500  # as many tiles per row as fit
    diff, scale = pictures.activation_diff_preview(act, act + 0.25, max_channels=32)
    assert diff.shape == grid.shape and scale == pytest.approx(0.25)


def test_write_index_links_every_check_with_its_verdict(tmp_path) -> None:
    base, _ = synthetic_results()
    passed = ag.build_report(
        "a", ("tensorflow", "jax"), TECHNIQUES, {"tensorflow": base, "jax": base}
    )
    failed = _planted()
    pages = {}
    for name, report in {"tests/t.py::a": passed, "tests/t.py::b": failed}.items():
        page, _ = text.write_pictures(report, tmp_path / name.replace("/", "_"))
        pages[name] = (report, page)
    index = text.write_index(pages, tmp_path).read_text()
    assert "2 check(s), 1 disagree" in index
    assert "href='tests_t.py::b/index.html'>tests/t.py::b</a>" in index


def test_the_inputs_thumbnail_is_kept_where_the_images_can_be_drawn() -> None:
    three = ag._thumbnail(np.zeros((10, 12, 12, 3), np.float32))
    assert three is not None and three.shape == (64, 8 * 64, 3)  # the first 8 images
    assert ag._thumbnail(np.zeros((1, 12, 12, 4), np.float32)) is None  # drawn alone then


# ------------------------------------------------------------------ the plugin's report
AGREE = """
import numpy as np

from convviz_check.crossbackend import agreement, pool
from tests._reports import agreement_report


def test_agree(convviz, monkeypatch):
    # the backends' arrays planted: the picture is what is under test, not the workers
    monkeypatch.setattr(agreement, "agreement", lambda *a, **k: agreement_report())
    monkeypatch.setattr(pool, "require_backends", lambda backends: None)
    convviz.assert_backends_agree(
        "m.keras", np.zeros((3, 12, 12, 3), np.float32), backends=("tensorflow", "jax"),
        what=("gradcam",), pool=object(),
    )
"""


@pytest.mark.parametrize("where", ["ini", "attribute"])
def test_the_plugins_agreement_picture_names_the_configured_classes(pytester, where) -> None:
    from convviz_check.report.agreement import pictures
    from convviz_check.report.outcomes import _enlarged
    from tests._reports import agreement_report

    names = ["sky", "grass", "gravel"]
    test = AGREE
    if where == "ini":
        (pytester.path / "classes.txt").write_text("\n".join(names) + "\n")
        pytester.makeini("[pytest]\nconvviz_class_names = classes.txt\n")
    else:
        test = AGREE.replace(
            "(convviz, monkeypatch):",
            f"(convviz, monkeypatch):\n    convviz.class_names = {names!r}",
        )
    pytester.makepyfile(test_agree=test)
    results = pytester.path / "results"
    pytester.runpytest(
        f"--convviz-results-dir={results}", "-p", "no:cacheprovider"
    ).assert_outcomes(passed=1)
    entry = json.loads((results / "report.json").read_text())["entries"][0]
    drawn = np.asarray(Image.open(entry["images"]["gradcam"]).convert("RGB"))
    named = _enlarged(pictures(agreement_report(), names)["gradcam"])
    bare = _enlarged(pictures(agreement_report())["gradcam"])
    # the title reads "gravel (2) x2, sky (0) x1", not "class per image [2, 0, 2]"
    assert drawn.shape != bare.shape or not np.array_equal(drawn, bare)
    np.testing.assert_array_equal(drawn, named)
