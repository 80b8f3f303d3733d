"""Tests of convviz_check.tolerances: the one table of default bounds."""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from convviz_check import tolerances
from convviz_check.errors import ComparisonError
from convviz_check.metrics import compare
from convviz_check.tolerances import MEASURED, TABLE, default_tolerance
from convviz_check.types import KINDS, Tolerance
from convviz_check.types import METRICS as _METRICS


def test_table_has_both_columns_for_every_metric_of_every_kind():
    assert set(TABLE) == set(KINDS)
    for kind in KINDS:
        needed = {field for _name, field, _direction in _METRICS[kind]} | {"pixel_atol"}
        assert needed <= set(TABLE[kind]), (kind, needed - set(TABLE[kind]))
        for field, pair in TABLE[kind].items():
            assert len(pair) == 2, (kind, field)
            assert all(isinstance(v, float) and math.isfinite(v) for v in pair), (kind, field)


def test_cross_backend_bounds_are_never_stricter_than_same_backend():
    for kind in KINDS:
        for _name, field, direction in _METRICS[kind]:
            same, cross = TABLE[kind][field]
            if direction == "max":
                assert cross >= same >= 0.0, (kind, field)
            else:
                assert -1.0 <= cross <= same <= 1.0, (kind, field)


def test_default_tolerance_sets_exactly_its_kinds_fields():
    for kind in KINDS:
        for cross in (False, True):
            tol = default_tolerance(kind, cross_backend=cross)
            assert isinstance(tol, Tolerance)
            assert set(tol.to_dict()) == set(TABLE[kind])
            for field, pair in TABLE[kind].items():
                assert getattr(tol, field) == pair[1 if cross else 0]


def test_default_tolerance_rejects_an_unknown_kind():
    with pytest.raises(ComparisonError, match="kind='heatmaps'"):
        default_tolerance("heatmaps")


# A documented bound: the comment block right above its row (or on the row) says what
# was measured, with the number: "measured" then a number within 15 words.
_MEASUREMENT = re.compile(r"\bmeasured\b\W*(?:\S+\s+){0,15}?\S*\d", re.IGNORECASE)


def undocumented_rows(lines: list[str], table: str) -> list[str]:
    """The bound fields of the dict ``table`` in the source ``lines`` whose own comment
    block (the comment lines right above the row, stopping at the previous row, or the
    row's own trailing comment) names no measured number."""
    start = next(i for i, line in enumerate(lines) if re.match(rf"{table}\b", line))
    stop = next(i for i, line in enumerate(lines[start:], start) if line == "}")
    bad = []
    for i, line in enumerate(lines[start:stop], start):
        row = re.match(r'\s+"(\w+)": [(\d.-]', line)
        if not row:
            continue
        block = [line.partition("#")[2]]
        j = i - 1
        while j > start and lines[j].strip().startswith("#"):
            block.append(lines[j].strip().lstrip("#"))
            j -= 1
        if not _MEASUREMENT.search(" ".join(reversed(block))):
            bad.append(row.group(1))
    return bad


@pytest.mark.parametrize("table", ["TABLE", "RETRAIN"])
def test_every_bound_in_the_tables_has_its_own_measurement_in_a_comment(table):
    lines = inspect.getsource(tolerances).splitlines()
    assert undocumented_rows(lines, table) == []
    # every bound field of the table is a row the check saw
    rows = {f for kind in getattr(tolerances, table).values() for f in kind}
    seen = "\n".join(lines)
    assert all(f'"{field}": ' in seen for field in rows)


def test_the_comment_check_fails_a_row_without_its_own_measured_number():
    source = [
        "TABLE = {",
        '    "kind": {',
        "        # measured max: 3.9e-7 (tf vs torch).",
        '        "a_max": (1e-5, 1e-4),',
        '        "b_max": (1e-5, 1e-4),  # shares the comment above: undocumented',
        "        # the bound is generous (nothing measured here)",
        '        "c_min": (0.9, 0.8),',
        "        # measured, but no number given",
        '        "d_min": (0.9, 0.8),',
        '        "e_rms": 2e-6,  # measured RMS 7.0e-8',
        "    },",
        "}",
    ]
    assert undocumented_rows(source, "TABLE") == ["b_max", "c_min", "d_min"]


# --------------------------------------------------------------------------------------
# The calibration: every bound between the measured noise and a real change
# --------------------------------------------------------------------------------------
def _direction(kind: str, field: str) -> str:
    return next(d for _n, f, d in _METRICS[kind] if f == field)


def test_every_metric_bound_has_its_measured_worst_values():
    for kind in KINDS:
        fields = {f for _n, f, _d in _METRICS[kind]}
        assert set(MEASURED[kind]) == fields, (kind, fields ^ set(MEASURED[kind]))


@pytest.mark.parametrize("column", [0, 1], ids=["same_backend", "cross_backend"])
def test_every_bound_admits_its_measured_worst_with_the_stated_margin(column):
    # Errors: >= 10x the worst measured (same) and >= 100x (cross). Similarities: the
    # gap to 1 at least twice the measured gap (1.0 measured means no visible noise).
    factor = 10.0 if column == 0 else 100.0
    for kind in KINDS:
        for field, values in MEASURED[kind].items():
            bound, worst = TABLE[kind][field][column], values[column]
            if _direction(kind, field) == "max":
                assert bound >= factor * worst, (kind, field, bound, worst)
            else:
                assert 1.0 - bound >= 2.0 * (1.0 - worst), (kind, field, bound, worst)


@pytest.mark.parametrize(
    "kind,field",
    [
        ("activation", "activation_max_rel"),
        ("activation", "activation_mean_rel"),
        ("heatmap", "heatmap_max_abs"),
        ("heatmap", "heatmap_rms"),
        ("heatmap", "heatmap_pearson_min"),
        ("heatmap", "heatmap_ssim_min"),
        ("pattern", "pattern_ssim_min"),
        ("pattern", "pattern_pearson_min"),
    ],
)
def test_the_measured_one_percent_weight_change_fails_both_columns(kind, field):
    # The real change of benchmarks/calibrate_tolerances.py (every weight times
    # 1 + 0.01 N(0, 1)) must fail each of these bounds, same and cross backend. (Peak
    # shift and top-k IoU are for moved regions; a 1% change keeps the hot region.)
    changed = MEASURED[kind][field][2]
    for bound in TABLE[kind][field]:
        if _direction(kind, field) == "max":
            assert changed > bound, (field, changed, bound)
        else:
            assert changed < bound, (field, changed, bound)


def _blob(shape: tuple[int, int], center: tuple[float, float], sigma: float = 1.2) -> np.ndarray:
    """A Grad-CAM-like map: one Gaussian hot spot, normalized to max 1."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    m = np.exp(-((y - center[0]) ** 2 + (x - center[1]) ** 2) / (2 * sigma**2))
    return (m / m.max()).astype(np.float32)


def _measured_noise(shape: tuple[int, ...], amplitude: float, seed: int) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).uniform(-1, 1, shape)).astype(np.float32)


@pytest.mark.parametrize("cross", [False, True])
def test_noise_at_the_measured_worst_level_passes(cross):
    column = 1 if cross else 0
    rng = np.random.default_rng(0)
    act = np.maximum(rng.normal(size=(8, 16, 16, 8)), 0).astype(np.float32)
    scale = float(np.abs(act).max())
    worst_rel = MEASURED["activation"]["activation_max_rel"][column]
    noisy = act + _measured_noise(act.shape, worst_rel * scale, 1)
    assert compare({"conv": act}, {"conv": noisy}, "activation", cross_backend=cross).passed
    heat = np.stack([_blob((8, 8), (2 + i % 4, 3 + i // 4)) for i in range(8)])
    worst_abs = MEASURED["heatmap"]["heatmap_max_abs"][column]
    noisy_heat = np.clip(heat + _measured_noise(heat.shape, worst_abs, 2), 0, 1)
    assert compare(heat, noisy_heat, "heatmap", cross_backend=cross).passed


@pytest.mark.parametrize("cross", [False, True])
def test_heatmap_noise_at_the_error_bounds_passes_the_similarity_bounds(cross):
    # The error bounds decide what noise is; Pearson and SSIM must never be stricter
    # than them (the comment of heatmap_pearson_min: such noise moves r by < 1e-6).
    tol = default_tolerance("heatmap", cross_backend=cross)
    heat = _blob((8, 8), (3, 4))
    noisy = heat + _measured_noise(heat.shape, tol.heatmap_max_abs, 3)
    result = compare(heat, noisy, "heatmap", cross_backend=cross)
    assert 1.0 - result.metrics["pearson"].value < 1e-6
    assert result.metrics["pearson"].ok and result.metrics["ssim"].ok


@pytest.mark.parametrize("shape", [(7, 7), (8, 8), (14, 14)])
@pytest.mark.parametrize("step", [(0, 1), (1, 0), (0, -1), (-1, 0), (1, 1)])
def test_a_hot_spot_moved_one_cell_fails_the_same_backend_bounds(shape, step):
    center = (shape[0] // 2, shape[1] // 2)
    before = _blob(shape, center)
    after = _blob(shape, (center[0] + step[0], center[1] + step[1]))
    result = compare(before, after, "heatmap")
    assert not result.passed
    assert not result.metrics["peak_shift"].ok
    # Not only the peak: the error metrics see it by orders of magnitude too.
    assert result.metrics["max_abs"].value > 1000 * TABLE["heatmap"]["heatmap_max_abs"][0]
    assert not result.metrics["rms"].ok


@pytest.mark.parametrize("step", [(0, 1), (1, 1)])
def test_a_hot_spot_moved_one_cell_fails_the_cross_backend_bounds_too(step):
    # Cross-backend tolerates a one-cell peak shift (flat-topped maxima), so the moved
    # map must fail on the error bounds.
    before = _blob((8, 8), (3, 4))
    after = _blob((8, 8), (3 + step[0], 4 + step[1]))
    result = compare(before, after, "heatmap", cross_backend=True)
    assert not result.passed
    assert not result.metrics["max_abs"].ok and not result.metrics["rms"].ok


def _conv_relu(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'valid' 2-D convolution (cross-correlation) + ReLU, NHWC, in float64."""
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    # windows: (N, H', W', C, kh, kw); kernel: (kh, kw, C, F)
    out = np.einsum("nhwcij,ijcf->nhwf", windows, kernel) + bias
    return np.maximum(out, 0.0)


def _two_conv_layers(images, weights):
    (k1, b1), (k2, b2) = weights
    a1 = _conv_relu(images, k1, b1)
    return {"conv1": a1.astype(np.float32), "conv2": _conv_relu(a1, k2, b2).astype(np.float32)}


def _two_conv_weights(rng):
    """He-scaled (kernel, bias) pairs for :func:`_two_conv_layers`: 3->8 and 8->16."""
    return [
        (rng.normal(0, np.sqrt(2 / 27), (3, 3, 3, 8)), rng.normal(0, 0.1, 8)),
        (rng.normal(0, np.sqrt(2 / 72), (3, 3, 8, 16)), rng.normal(0, 0.1, 16)),
    ]


def _perturbed(weights, relative: float, seed: int):
    rng = np.random.default_rng(seed)
    return [
        tuple(w * (1.0 + relative * rng.standard_normal(w.shape)) for w in layer)
        for layer in weights
    ]


@pytest.mark.parametrize("cross", [False, True])
def test_weights_perturbed_by_one_percent_fail_the_activation_bounds(cross):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 20, 20, 3))
    weights = _two_conv_weights(rng)
    before = _two_conv_layers(images, weights)
    after = _two_conv_layers(images, _perturbed(weights, 0.01, 1))
    result = compare(before, after, "activation", cross_backend=cross)
    assert not result.passed
    assert not result.metrics["max_rel"].ok and not result.metrics["mean_rel"].ok
    # and by a wide margin: a 1% change is ~1e-2 relative, the bounds are <= 1e-4
    assert result.metrics["max_rel"].value > 10 * TABLE["activation"]["activation_max_rel"][1]


@pytest.mark.parametrize("cross", [False, True])
def test_weights_perturbed_by_one_percent_fail_the_heatmap_bounds(cross):
    # A Grad-CAM-like map from the synthetic net: ReLU(sum_k alpha_k A_k) over the last
    # layer with fixed channel weights alpha, normalized to max 1.
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 1, (4, 12, 12, 3))
    weights = _two_conv_weights(rng)
    alpha = rng.uniform(-0.2, 1.0, 16)  # mostly positive: no image's map is all zero

    def cam(w):
        raw = np.maximum(_two_conv_layers(images, w)["conv2"] @ alpha, 0.0)
        assert raw.max(axis=(1, 2)).min() > 0
        return raw / raw.max(axis=(1, 2), keepdims=True)

    result = compare(
        cam(weights), cam(_perturbed(weights, 0.01, 3)), "heatmap", cross_backend=cross
    )
    assert not result.passed
    assert not result.metrics["max_abs"].ok


def test_a_pattern_against_an_unrelated_one_fails_both_columns():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (2, 48, 48, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (2, 48, 48, 3)).astype(np.uint8)
    for cross in (False, True):
        assert not compare(a, b, "pattern", cross_backend=cross).passed


def test_a_pattern_within_two_grey_levels_passes_the_same_backend_bounds():
    # Measured: filters whose ascent keeps its path differ by <= 2 grey levels.
    rng = np.random.default_rng(5)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(2, 48, 48, 3)), axis=1), axis=2)
    a = np.clip((smooth - smooth.mean()) / smooth.std() * 64 + 128, 0, 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    assert compare(a, b, "pattern").passed


@pytest.mark.parametrize("cross", [False, True])
def test_default_bounds_still_catch_a_moved_hot_spot(cross):
    y, x = np.mgrid[:8, :8]
    before = np.exp(-((y - 2) ** 2 + (x - 2) ** 2) / 2.0)
    after = np.exp(-((y - 5) ** 2 + (x - 6) ** 2) / 2.0)
    result = compare(before, after, "heatmap", cross_backend=cross)
    assert not result.passed
    assert not result.metrics["peak_shift"].ok


# ----------------------------------------------------------- overrides: as, merge, resolve
def test_as_tolerance_takes_none_a_tolerance_or_a_dict_of_its_fields():
    tol = Tolerance(heatmap_rms=0.1)
    assert tolerances.as_tolerance(None) is None
    assert tolerances.as_tolerance(tol) is tol
    assert tolerances.as_tolerance({"heatmap_rms": 0.1}) == tol


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (0.5, r"marker must be a Tolerance, a dict of its fields or None\. Received: 0\.5"),
        ([("heatmap_rms", 0.1)], r"marker must be a Tolerance.*\(type list\)"),
        (
            {"max_rel": 1.0},
            r"Invalid marker: Unknown tolerance field.*Received: \{'max_rel': 1\.0\}",
        ),
    ],
)
def test_as_tolerance_names_its_source_and_what_it_received(value, match):
    with pytest.raises(ComparisonError, match=match):
        tolerances.as_tolerance(value, "marker")


def test_merge_applies_overrides_in_order_and_skips_unset_ones():
    assert tolerances.merge() is None and tolerances.merge(None, None) is None
    merged = tolerances.merge(
        {"heatmap_rms": 0.1, "heatmap_max_abs": 0.2}, None, Tolerance(heatmap_rms=0.3)
    )
    assert merged == Tolerance(heatmap_rms=0.3, heatmap_max_abs=0.2)


@pytest.mark.parametrize("cross", [False, True])
def test_resolve_is_the_default_column_with_the_overrides_on_top(cross):
    default = default_tolerance("heatmap", cross_backend=cross)
    assert tolerances.resolve("heatmap", cross_backend=cross) == default
    resolved = tolerances.resolve(
        "heatmap", {"heatmap_rms": 0.5}, None, Tolerance(heatmap_rms=0.25), cross_backend=cross
    )
    assert resolved.heatmap_rms == 0.25
    assert resolved.heatmap_max_abs == default.heatmap_max_abs
    assert set(resolved.to_dict()) == set(TABLE["heatmap"])
    # what compare() uses is what resolve() gives
    e = np.eye(5, dtype=np.float32)
    result = compare(e, e, "heatmap", Tolerance(heatmap_rms=0.25), cross_backend=cross)
    assert result.details["tolerance"] == resolved.to_dict()


def test_parse_fields_reads_ini_and_flag_text():
    tol = tolerances.parse_fields("heatmap_rms=1e-5, heatmap_pearson_min=0.999", "ini")
    assert tol == Tolerance(heatmap_rms=1e-5, heatmap_pearson_min=0.999)
    assert tolerances.parse_fields("heatmap_rms=1 heatmap_max_abs=2", "ini").heatmap_max_abs == 2.0
    assert tolerances.parse_fields("", "ini") == Tolerance()


@pytest.mark.parametrize(
    ("text", "kind", "match"),
    [
        ("heatmap_rms", None, r"field=value pairs\. Received: 'heatmap_rms'"),
        ("heatmap_rms=small", None, r"heatmap_rms must be a number\. Received: 'small'"),
        ("rms=1", None, "Unknown tolerance field"),
        ("activation_max_rel=1", "heatmap", r"fields of another kind: \['activation_max_rel'\]"),
    ],
)
def test_parse_fields_refuses_malformed_text_naming_the_setting(text, kind, match):
    with pytest.raises(ComparisonError, match=match) as err:
        tolerances.parse_fields(text, "convviz_tolerance_heatmap", kind)
    assert "convviz_tolerance_heatmap" in str(err.value)


def test_tolerances_imports_no_keras():
    code = (
        "import sys\n"
        "for m in ('keras', 'tensorflow', 'torch', 'jax'): sys.modules[m] = None\n"
        "from convviz_check.tolerances import default_tolerance\n"
        "print(default_tolerance('pattern', cross_backend=True).pattern_pearson_min)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) == TABLE["pattern"]["pattern_pearson_min"][1]
