"""Tests of convviz_check.metrics (compare) and the primitives it measures with
(convviz_check.measures): every metric on hand-computed cases, the edge cases, the
failure text, and invariants under hypothesis."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.metrics import structural_similarity

from convviz_check.errors import ComparisonError
from convviz_check.measures import (
    peak_cell,
    pearson,
    ssim,
    ssim_window,
    topk_count,
    topk_iou,
    topk_mask,
)
from convviz_check.metrics import compare
from convviz_check.tolerances import default_tolerance
from convviz_check.types import GradCAM, Tolerance


def hot_spot(shape: tuple[int, int], *cells: tuple[int, int], value: float = 1.0) -> np.ndarray:
    m = np.zeros(shape, np.float32)
    for cell in cells:
        m[cell] = value
    return m


def make_cam(
    heatmap: np.ndarray, class_index=None, degenerate=None, layer: str = "conv"
) -> GradCAM:
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.ndim == 2:
        heatmap = heatmap[None]
    n = heatmap.shape[0]
    return GradCAM(
        heatmap=heatmap,
        raw=heatmap.copy(),
        class_index=np.asarray(class_index if class_index is not None else [0] * n, np.int64),
        score=np.ones(n, np.float32),
        score_kind="logit",
        layer=layer,
        degenerate=np.asarray(degenerate if degenerate is not None else [False] * n, bool),
        image_shape=(64, 64),
    )


# --------------------------------------------------------------------------------------
# activation
# --------------------------------------------------------------------------------------
def test_activation_errors_are_relative_to_the_largest_expected_magnitude():
    expected = np.array([0.0, 2.0, -4.0], np.float32)
    obtained = np.array([0.0, 2.5, -4.0], np.float32)
    result = compare(expected, obtained, "activation")
    # scale = max|expected| = 4; errors 0, 0.5, 0
    assert result.metrics["max_rel"].value == pytest.approx(0.5 / 4)
    assert result.metrics["mean_rel"].value == pytest.approx((0.5 / 3) / 4)
    assert not result.passed


def test_activation_scale_floor_applies_to_a_near_dead_layer():
    expected = np.full((4, 4), 1e-5, np.float32)  # max|expected| below the floor
    obtained = expected + np.float32(1e-4)
    tol = Tolerance(activation_scale_floor=1e-3)
    result = compare(expected, obtained, "activation", tol)
    assert result.metrics["max_rel"].value == pytest.approx(1e-4 / 1e-3, rel=1e-3)


def test_activation_of_an_all_zero_layer_compares_without_dividing_by_zero():
    zeros = np.zeros((2, 3, 3, 4), np.float32)
    result = compare(zeros, zeros, "activation")
    assert result.passed
    assert result.metrics["max_rel"].value == 0.0


def test_activation_dict_is_compared_per_layer_and_names_the_worst_layer():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    b = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    moved = b.copy()
    moved[0, 1, 1, 2] += 1.0
    result = compare({"conv1": a, "pool1": b}, {"conv1": a, "pool1": moved}, "activation")
    assert not result.passed
    assert result.details["worst_item"] == "pool1"
    assert "pool1" in result.metrics["max_rel"].note
    assert result.details["per_item"]["conv1"]["max_rel"] == 0.0
    assert result.details["per_item"]["pool1"]["max_rel"] == pytest.approx(
        1.0 / np.abs(b).max(), rel=1e-6
    )
    assert "worst pool1" in result.text


def test_activation_tiny_relative_noise_passes_same_backend_defaults():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1, 8, 8, 4)).astype(np.float32)
    noisy = a * (1 + 1e-7 * rng.standard_normal(a.shape)).astype(np.float32)
    assert compare({"c": a}, {"c": noisy}, "activation").passed


# --------------------------------------------------------------------------------------
# heatmap: each metric by hand
# --------------------------------------------------------------------------------------
def test_heatmap_max_abs_and_rms_match_hand_values():
    expected = hot_spot((4, 4), (1, 1))
    obtained = expected.copy()
    obtained[2, 3] = 0.5
    result = compare(expected, obtained, "heatmap")
    assert result.metrics["max_abs"].value == pytest.approx(0.5)
    assert result.metrics["rms"].value == pytest.approx(math.sqrt(0.25 / 16))


def test_pearson_hand_values():
    assert pearson(np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 4.0])) == pytest.approx(1.0)
    assert pearson(np.array([0.0, 1.0, 2.0]), np.array([2.0, 1.0, 0.0])) == pytest.approx(-1.0)
    # centred: a = [.75, -.25, -.25, -.25], b = [-.25, .75, -.25, -.25]
    # dot = -0.25, |a|^2 = |b|^2 = 0.75  ->  r = -1/3
    a, b = np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0, 0])
    assert pearson(a, b) == pytest.approx(-1 / 3)


def test_pearson_of_equal_constant_maps_is_one_and_constant_vs_varying_is_zero():
    const = np.full((5, 5), 0.5)
    varying = np.arange(25.0).reshape(5, 5) / 24
    assert pearson(const, const) == 1.0
    assert pearson(np.ones((3, 3)), np.ones((3, 3))) == 1.0
    assert pearson(const, varying) == 0.0
    assert pearson(varying, const) == 0.0


def test_pearson_treats_float32_noise_on_a_constant_map_as_constant():
    const = np.ones((6, 6))
    noisy = const.copy()
    noisy[2, 2] -= 1e-8  # below RANK_RESOLUTION of the max: not structure
    assert pearson(const, noisy) == 1.0


def test_ssim_window_is_largest_odd_not_above_seven_or_the_map():
    assert ssim_window(7, 7) == 7
    assert ssim_window(20, 30) == 7
    assert ssim_window(6, 6) == 5
    assert ssim_window(5, 9) == 5
    assert ssim_window(4, 8) == 3
    assert ssim_window(3, 3) == 3
    assert ssim_window(2, 9) is None
    assert ssim_window(9, 1) is None


def test_heatmap_ssim_on_a_4x4_map_uses_a_3x3_window_and_data_range_one():
    rng = np.random.default_rng(2)
    e = rng.random((4, 4))
    o = np.clip(e + 0.1 * rng.standard_normal((4, 4)), 0, 1)
    result = compare(e, o, "heatmap")
    reference = structural_similarity(e, o, win_size=3, data_range=1.0)
    assert result.metrics["ssim"].value == pytest.approx(reference)


def test_ssim_of_two_constant_maps_matches_the_formula():
    # Constant maps: variances and covariance are 0, so SSIM reduces to the luminance
    # term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), C1 = (0.01 * data_range)^2.
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.5 * 0.7 + c1) / (0.5**2 + 0.7**2 + c1)
    assert ssim(np.full((5, 5), 0.5), np.full((5, 5), 0.7)) == pytest.approx(expected)


def test_maps_under_3x3_skip_ssim_and_say_so():
    e = np.array([[0.0, 1.0, 0.2, 0.1, 0.0], [0.3, 0.2, 0.1, 0.0, 0.0]])
    result = compare(e, e, "heatmap")
    assert "ssim" not in result.metrics
    assert result.passed
    assert "ssim skipped: 2x5 maps are smaller than SSIM's 3x3 minimum window" in result.text
    assert any("ssim skipped" in note for note in result.details["notes"])
    with pytest.raises(ComparisonError, match="2x5"):
        ssim(e, e)


def test_peak_cell_breaks_ties_row_major_and_ignores_float32_noise():
    assert peak_cell(np.array([[0.0, 1.0], [1.0, 0.5]])) == (0, 1)
    # (0, 0) is 1e-8 below (0, 1): equal at RANK_RESOLUTION, so the earlier cell wins
    assert peak_cell(np.array([[1.0 - 1e-8, 1.0], [0.0, 0.0]])) == (0, 0)
    assert peak_cell(np.array([[0.9, 1.0], [0.0, 0.0]])) == (0, 1)


def test_peak_shift_is_euclidean_in_cells():
    e = hot_spot((7, 7), (1, 1))
    o = hot_spot((7, 7), (4, 5))
    result = compare(e, o, "heatmap")
    assert result.metrics["peak_shift"].value == pytest.approx(5.0)  # 3-4-5 triangle
    assert result.details["peak_expected"] == [1, 1]
    assert result.details["peak_obtained"] == [4, 5]


@pytest.mark.parametrize(
    ("cells", "k"), [(1, 1), (9, 1), (10, 1), (11, 2), (30, 3), (31, 4), (49, 5), (100, 10)]
)
def test_topk_count_is_the_integer_ceiling_of_ten_percent(cells, k):
    assert topk_count(cells) == k


def test_topk_mask_picks_exactly_k_cells_and_ties_go_row_major():
    flat = np.ones((4, 5))  # 20 cells all tied: k = 2, the first two cells
    mask = topk_mask(flat)
    assert mask.sum() == 2
    assert mask[0, 0] and mask[0, 1]
    m = np.zeros((3, 10))
    m[2, :] = 1.0  # ten tied hot cells, k = 3: the first three of row 2
    assert np.flatnonzero(topk_mask(m)).tolist() == [20, 21, 22]


def test_topk_region_never_pads_with_background_cells():
    m = np.zeros((10, 10))
    m[4, 4] = 1.0  # k = 10, but only one cell is above the background
    assert np.flatnonzero(topk_mask(m)).tolist() == [44]


def test_topk_iou_hand_value():
    # 100 cells -> k = 10. expected's top-10 are cells 0..9, obtained's 5..14:
    # intersection 5, union 15.
    e = np.zeros(100)
    e[:10] = 1.0
    o = np.zeros(100)
    o[5:15] = 1.0
    assert topk_iou(e.reshape(10, 10), o.reshape(10, 10)) == pytest.approx(5 / 15)


def test_share_of_pixels_out_of_tolerance_is_reported():
    e = hot_spot((7, 7), (1, 1))
    o = hot_spot((7, 7), (5, 5))
    result = compare(e, o, "heatmap", Tolerance(pixel_atol=0.5))
    assert result.details["n_out"] == 2
    assert result.details["share_out"] == pytest.approx(2 / 49)
    assert "share of values out of pixel_atol=0.5: 4.08% (2 of 49)" in result.text


# --------------------------------------------------------------------------------------
# heatmap: the failure story
# --------------------------------------------------------------------------------------
def test_hot_spot_moved_fails_and_the_text_leads_with_the_peak_shift():
    e = hot_spot((7, 7), (1, 1))
    o = hot_spot((7, 7), (5, 5))
    result = compare(e, o, "heatmap")
    assert not result.passed
    assert not result
    first = result.text.splitlines()[0]
    assert first == "peak moved 5.66 cells: (row 1, col 1) -> (row 5, col 5)"
    assert "peak expected (row 1, col 1), obtained (row 5, col 5)" in result.text
    # each metric line is named by the Tolerance field that bounds it
    assert re.search(r"^  heatmap_peak_shift_cells +5\.66 > max 0  FAIL$", result.text, re.M)


def test_a_mean_error_hides_a_moved_hot_spot_but_max_and_peak_catch_it():
    # A small hot spot (2 cells) moves across a 14x14 map: the mean absolute error
    # is 4/196 ~ 0.02 (a "mean <= 0.05" check would pass), max error and peak do not.
    e = hot_spot((14, 14), (2, 2), (2, 3))
    o = hot_spot((14, 14), (11, 10), (11, 11))
    mean_abs = float(np.mean(np.abs(e - o)))
    assert mean_abs == pytest.approx(4 / 196)
    assert mean_abs < 0.05
    result = compare(e, o, "heatmap", Tolerance(heatmap_rms=1.0))  # rms alone: lenient
    assert result.metrics["rms"].ok
    assert not result.metrics["max_abs"].ok
    assert not result.metrics["peak_shift"].ok
    assert result.metrics["topk_iou"].value == 0.0  # hot regions are disjoint
    assert not result.passed


def test_failure_text_writes_each_metric_against_its_bound():
    rng = np.random.default_rng(3)
    e = rng.random((8, 8))
    o = rng.random((8, 8))
    result = compare(e, o, "heatmap", Tolerance(heatmap_ssim_min=0.95, heatmap_max_abs=0.001))
    value = result.metrics["ssim"].value
    assert value < 0.95
    assert re.search(rf"^  heatmap_ssim_min +{value:.3g} < min 0\.95  FAIL$", result.text, re.M)
    assert re.search(r"^  heatmap_max_abs +[0-9.e-]+ > max 0\.001  FAIL$", result.text, re.M)


def test_top_class_change_leads_the_text_and_fails_even_with_equal_maps():
    m = hot_spot((7, 7), (3, 3))
    result = compare(make_cam(m, class_index=[3]), make_cam(m, class_index=[1]), "heatmap")
    assert not result.passed
    assert result.text.splitlines()[0] == "top class changed: 3 -> 1"
    assert result.metrics["class_changed"].value == 1.0
    assert result.details["class_index_expected"] == [3]
    assert result.details["class_index_obtained"] == [1]


def test_many_class_changes_are_listed_up_to_five_then_counted():
    maps = np.stack([hot_spot((5, 5), (2, 2))] * 7)
    result = compare(
        make_cam(maps, class_index=[0] * 7), make_cam(maps, class_index=[1] * 7), "heatmap"
    )
    lines = result.text.splitlines()
    assert lines[:5] == [f"top class changed: 0 -> 1 (image {i})" for i in range(5)]
    assert lines[5] == "top class changed in 2 more images"
    assert result.metrics["class_changed"].value == 7.0


def test_batch_names_the_worst_image():
    rng = np.random.default_rng(4)
    maps = rng.random((3, 7, 7)).astype(np.float32)
    moved = maps.copy()
    moved[2] = np.roll(maps[2], 3, axis=0)
    result = compare(maps, moved, "heatmap")
    assert not result.passed
    assert result.details["worst_item"] == "image 2"
    assert "worst image 2" in result.text
    assert result.details["per_item"]["image 0"]["max_abs"] == 0.0


def test_gradcam_against_a_golden_mapping_compares_heatmap_class_and_degenerate():
    m = hot_spot((7, 7), (3, 3))
    golden = {"heatmap": m[None], "class_index": np.array([2]), "degenerate": np.array([False])}
    assert compare(golden, make_cam(m, class_index=[2]), "heatmap").passed
    assert not compare(golden, make_cam(m, class_index=[0]), "heatmap").passed


def test_target_layer_change_is_reported():
    m = hot_spot((7, 7), (3, 3))
    result = compare(make_cam(m, layer="a"), make_cam(m, layer="b"), "heatmap")
    assert "target layer changed: 'a' -> 'b'" in result.text


# --------------------------------------------------------------------------------------
# degenerate maps
# --------------------------------------------------------------------------------------
def test_degenerate_vs_meaningful_never_passes_even_with_lenient_bounds():
    zeros = np.zeros((7, 7), np.float32)
    meaningful = hot_spot((7, 7), (3, 3))
    lenient = Tolerance(
        heatmap_max_abs=10,
        heatmap_rms=10,
        heatmap_pearson_min=-1,
        heatmap_ssim_min=-1,
        heatmap_peak_shift_cells=100,
        heatmap_topk_iou_min=0,
    )
    cam_degenerate = make_cam(zeros, degenerate=[True])
    cam_ok = make_cam(meaningful)
    for e, o in [(cam_degenerate, cam_ok), (cam_ok, cam_degenerate)]:
        result = compare(e, o, "heatmap", lenient)
        assert not result.passed
        assert result.text.splitlines()[0].startswith("degenerate changed")
        # metrics refuse to measure a degenerate map
        assert "pearson" not in result.metrics and "peak_shift" not in result.metrics
        assert result.metrics["degenerate_changed"].value == 1.0
    assert compare(cam_degenerate, cam_ok, "heatmap").degenerate == (True, False)


def test_degenerate_vs_degenerate_passes_and_says_degenerate():
    zeros = np.zeros((2, 5, 5), np.float32)
    result = compare(
        make_cam(zeros, degenerate=[True, True]),
        make_cam(zeros, degenerate=[True, True]),
        "heatmap",
    )
    assert result.passed
    assert result.degenerate == (True, True)
    assert "degenerate" in result.text
    assert set(result.metrics) == {"degenerate_changed", "class_changed"}


def test_bare_all_zero_heatmap_arrays_are_taken_as_degenerate():
    zeros = np.zeros((1, 5, 5), np.float32)
    assert compare(zeros, zeros, "heatmap").degenerate == (True, True)
    result = compare(zeros, hot_spot((5, 5), (2, 2))[None], "heatmap")
    assert not result.passed
    assert "degenerate changed" in result.text


def test_batch_with_one_degenerate_image_measures_the_others():
    maps = np.stack([hot_spot((5, 5), (1, 1)), np.zeros((5, 5), np.float32)])
    result = compare(maps, maps, "heatmap")
    assert result.passed
    assert "degenerate on both sides, not measured: image 1" in result.text
    assert "image 1" not in [k for k, v in result.details["per_item"].items() if "pearson" in v]


# --------------------------------------------------------------------------------------
# pattern
# --------------------------------------------------------------------------------------
def test_uint8_patterns_use_data_range_255_and_name_the_worst_filter():
    rng = np.random.default_rng(5)
    e = rng.integers(0, 256, size=(3, 9, 9, 3), dtype=np.uint8)
    o = e.copy()
    o[1] = 255 - o[1]
    result = compare(e, o, "pattern")
    assert not result.passed
    assert result.details["worst_item"] == "filter 1"
    reference = structural_similarity(
        e[1].astype(float), o[1].astype(float), win_size=7, data_range=255, channel_axis=-1
    )
    assert result.metrics["ssim"].value == pytest.approx(reference)
    assert result.metrics["pearson"].value == pytest.approx(-1.0)


def test_float_patterns_use_the_joint_range():
    rng = np.random.default_rng(6)
    e = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    o = e + 0.01 * rng.standard_normal(e.shape).astype(np.float32)
    result = compare(e, o, "pattern")
    lo, hi = min(e[0].min(), o[0].min()), max(e[0].max(), o[0].max())
    reference = structural_similarity(
        e[0].astype(float), o[0].astype(float), win_size=7, data_range=hi - lo, channel_axis=-1
    )
    assert result.details["per_item"]["filter 0"]["ssim"] == pytest.approx(reference)
    assert result.metrics["pearson"].value > 0.99


def test_pattern_rescaled_but_same_structure_passes_pearson():
    rng = np.random.default_rng(7)
    e = rng.random((1, 10, 10, 3))
    result = compare(e, 2.0 * e + 1.0, "pattern", Tolerance(pattern_ssim_min=-1.0))
    assert result.metrics["pearson"].value == pytest.approx(1.0)


def test_grid_image_of_patterns_compares_as_one_item():
    img = np.random.default_rng(8).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    result = compare(img, img, "pattern")
    assert result.passed
    assert list(result.details["per_item"]) == ["pattern"]


def _float_patterns(seed: int = 11) -> np.ndarray:
    """Four 16x16 RGB filter patterns as gradient ascent leaves them (raw floats)."""
    return np.random.default_rng(seed).normal(size=(4, 16, 16, 3)).astype(np.float32)


def test_comparable_deprocesses_float_patterns_and_keeps_images_and_other_kinds():
    from convviz_check.artifacts import Artifact, comparable
    from convviz_check.render import deprocess_image

    raw = _float_patterns()
    shown = comparable(Artifact.from_value(raw, "pattern"))
    assert shown.dtype == np.uint8 and shown.shape == (4, 12, 12, 3)  # borders cropped
    assert np.array_equal(shown[2], deprocess_image(raw[2]))
    one = comparable(Artifact.from_value(raw[0, :, :, 0], "pattern"))
    assert one.dtype == np.uint8 and one.shape == (12, 12)
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(comparable(Artifact.from_value(image, "pattern")), image)
    acts = {"conv": np.ones((1, 4, 4, 2), np.float32)}
    assert np.array_equal(comparable(Artifact.from_value(acts))["conv"], acts["conv"])
    cam = make_cam(hot_spot((5, 5), (2, 2)))
    assert np.array_equal(comparable(Artifact.from_value(cam)).heatmap, cam.heatmap)


def test_a_golden_check_compares_float_patterns_as_they_are_shown(tmp_path):
    """Golden checks read patterns deprocessed (uint8), like cross-backend agreement,
    where the pattern bounds were calibrated: gradient ascent's free scale and offset
    are no change, a changed pattern still fails."""
    from pathlib import PurePosixPath

    from convviz_check.artifacts import Artifact, comparable
    from convviz_check.checks import CheckRequest, Settings, run_check

    raw = _float_patterns()
    rel = PurePosixPath("tests/test_x.py/test_p/patterns")

    def check(value, update=None):
        request = CheckRequest("patterns", rel, Artifact.from_value(value, "pattern"), "tensorflow")
        return run_check(Settings(tmp_path / "golden", update=update), request, None)

    assert check(raw, "missing").status == "written"
    rescaled = check(3.0 * raw + 0.5)
    assert rescaled.status == "passed", rescaled.message
    assert rescaled.comparison.metrics["ssim"].value == 1.0
    # the raw floats, compared in their own joint range, would have failed
    assert not compare(raw, 3.0 * raw + 0.5, "pattern").passed
    changed = raw.copy()
    changed[1] = _float_patterns(seed=12)[1]
    failed = check(changed)
    assert failed.status == "failed" and failed.comparison.details["worst_item"] == "filter 1"
    # the same comparison as the agreement route's
    direct = compare(
        comparable(Artifact.from_value(raw, "pattern")),
        comparable(Artifact.from_value(changed, "pattern")),
        "pattern",
    )
    assert direct.metrics == failed.comparison.metrics


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------
def test_mismatched_shapes_raise_naming_both_shapes():
    with pytest.raises(
        ComparisonError, match=r"expected\.shape=\(1, 7, 7\), obtained\.shape=\(1, 8, 8\)"
    ):
        compare(np.zeros((1, 7, 7)), np.zeros((1, 8, 8)), "heatmap")
    with pytest.raises(ComparisonError, match=r"expected\['c'\]\.shape=\(2, 3\)"):
        compare({"c": np.zeros((2, 3))}, {"c": np.zeros((3, 2))}, "activation")


def test_mismatched_dtype_family_raises_naming_both_dtypes():
    with pytest.raises(ComparisonError, match="uint8.*float32"):
        compare(np.zeros((2, 5, 5, 3), np.uint8), np.zeros((2, 5, 5, 3), np.float32), "pattern")


def test_float16_golden_widens_activation_bounds_by_float16_rounding():
    a = np.random.default_rng(9).random((2, 4, 4, 3)).astype(np.float32)
    result = compare(a.astype(np.float16), a, "activation")
    assert result.passed, result.text
    default = default_tolerance("activation").activation_max_rel
    assert result.metrics["max_rel"].bound == pytest.approx(default + 2.0**-11)
    assert "float16 storage" in result.text
    # a real change is still caught
    changed = a.copy()
    changed[0, 0, 0, 0] += 0.1
    assert not compare(a.astype(np.float16), changed, "activation").passed


def test_unknown_kind_raises():
    with pytest.raises(ComparisonError, match="kind='heatmaps'"):
        compare(np.zeros(3), np.zeros(3), "heatmaps")


def test_mismatched_keys_raise_naming_missing_and_extra():
    with pytest.raises(
        ComparisonError, match=r"Missing from obtained: \['b'\]; not in expected: \['c'\]"
    ):
        compare(
            {"a": np.zeros(2), "b": np.zeros(2)}, {"a": np.zeros(2), "c": np.zeros(2)}, "activation"
        )


def test_dict_against_array_raises():
    with pytest.raises(ComparisonError, match="dict of arrays with a single array"):
        compare({"a": np.zeros(2)}, np.zeros(2), "activation")


def test_gradcam_with_a_non_heatmap_kind_raises():
    cam = make_cam(hot_spot((5, 5), (1, 1)))
    with pytest.raises(ComparisonError, match="kind='heatmap'"):
        compare(cam, cam, "activation")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("kind", ["activation", "heatmap", "pattern"])
def test_nan_or_inf_in_either_input_raises(kind, bad):
    good = np.random.default_rng(10).random((1, 5, 5, 3) if kind != "heatmap" else (1, 5, 5))
    broken = good.copy()
    broken.flat[3] = bad
    for e, o in [(good, broken), (broken, good)]:
        with pytest.raises(ComparisonError, match="NaN or inf"):
            compare(e, o, kind)


def test_empty_arrays_raise():
    with pytest.raises(ComparisonError, match="empty"):
        compare(np.zeros((0, 4)), np.zeros((0, 4)), "activation")


def test_heatmap_of_wrong_rank_raises():
    with pytest.raises(ComparisonError, match=r"\(N, h, w\)"):
        compare(np.zeros((1, 5, 5, 1)), np.zeros((1, 5, 5, 1)), "heatmap")


# --------------------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------------------
def test_tolerance_dict_overrides_only_its_fields():
    e = hot_spot((7, 7), (1, 1))
    o = hot_spot((7, 7), (1, 2))
    result = compare(e, o, "heatmap", {"heatmap_peak_shift_cells": 1.0})
    assert result.metrics["peak_shift"].bound == 1.0
    assert result.metrics["max_abs"].bound == default_tolerance("heatmap").heatmap_max_abs


def test_cross_backend_uses_the_cross_backend_column():
    a = np.ones((3, 3), np.float32)
    same = compare(a, a, "activation")
    cross = compare(a, a, "activation", cross_backend=True)
    assert same.metrics["max_rel"].bound == default_tolerance("activation").activation_max_rel
    assert (
        cross.metrics["max_rel"].bound == default_tolerance("activation", True).activation_max_rel
    )
    assert cross.details["cross_backend"] is True


def test_invalid_tolerance_raises():
    a = np.ones(3)
    with pytest.raises(ComparisonError, match=r"a dict of its fields or None\. Received: 0\.5"):
        compare(a, a, "activation", 0.5)
    with pytest.raises(ComparisonError, match="Unknown tolerance field"):
        compare(a, a, "activation", {"max_rel": 1.0})
    with pytest.raises(ComparisonError, match="activation_scale_floor"):
        compare(a, a, "activation", Tolerance(activation_scale_floor=0.0))


def test_details_are_json_serializable():
    import json

    m = hot_spot((7, 7), (1, 1))
    result = compare(
        make_cam(m, class_index=[3]), make_cam(np.roll(m, 2), class_index=[1]), "heatmap"
    )
    json.dumps(result.details)


# --------------------------------------------------------------------------------------
# invariants (hypothesis)
# --------------------------------------------------------------------------------------
unit_floats = st.floats(0.0, 1.0, width=32, allow_nan=False)
map_shapes = st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12))
heatmaps = map_shapes.flatmap(lambda s: arrays(np.float32, s, elements=unit_floats))


@given(heatmaps)
def test_a_heatmap_passes_against_itself_and_fails_with_one_cell_changed(maps):
    result = compare(maps, maps.copy(), "heatmap")
    assert result.passed, result.text
    for m in result.metrics.values():
        assert m.ok
    assume(maps.shape[1] * maps.shape[2] > 1)  # a one-cell map is constant: degenerate
    # One cell of the last map moved by 0.5: either the map's degeneracy flips (a
    # constant map is degenerate) or both are measured and differ by exactly 0.5.
    changed = maps.copy()
    cell = float(changed[-1, 0, 0])
    changed[-1, 0, 0] = cell + 0.5 if cell <= 0.5 else cell - 0.5
    moved = compare(maps, changed, "heatmap")
    assert not moved.passed, moved.text
    last = f"image {len(maps) - 1}"
    assert moved.details["worst_item"] == last
    facts = moved.details["per_item"][last]
    if "max_abs" in facts:
        assert facts["max_abs"] == pytest.approx(0.5, abs=1e-6)
        assert facts["rms"] == pytest.approx(0.5 / math.sqrt(maps[0].size), rel=1e-5)
    else:
        assert moved.metrics["degenerate_changed"].value == 1.0


def _as_form(form: str, maps: np.ndarray) -> object:
    """The same maps given as a bare array, a golden's mapping, a GradCAM or Heatmaps."""
    from convviz_check.heatmaps import Heatmaps

    n = len(maps)
    arrays = {"heatmap": maps, "degenerate": np.zeros(n, bool), "class_index": np.zeros(n)}
    return {
        "array": maps,
        "mapping": arrays,
        "gradcam": make_cam(maps),
        "heatmaps": Heatmaps.of(make_cam(maps)),
    }[form]


forms = st.sampled_from(["array", "mapping", "gradcam", "heatmaps"])


@given(map_shapes, st.data(), forms, forms)
def test_compare_gives_the_same_verdict_whatever_form_the_maps_came_in(shape, data, f1, f2):
    a = data.draw(arrays(np.float32, shape, elements=unit_floats))
    b = data.draw(st.sampled_from(["same", "noise", "other"]))
    if b == "other":
        b = data.draw(arrays(np.float32, shape, elements=unit_floats))
    else:
        b = a + (1e-6 if b == "noise" else 0.0) * np.float32(np.arange(a.size).reshape(shape) % 3)
    plain = compare(a, b, "heatmap")
    given_forms = compare(_as_form(f1, a), _as_form(f2, b), "heatmap")
    assert given_forms.passed == plain.passed, (given_forms.text, plain.text)
    assert given_forms.degenerate == plain.degenerate
    assert given_forms.details["worst_item"] == plain.details["worst_item"]
    values = {k: m.value for k, m in given_forms.metrics.items() if k != "class_changed"}
    assert values == {k: m.value for k, m in plain.metrics.items()}


@given(map_shapes, unit_floats)
def test_constant_heatmaps_compared_with_themselves_pass(shape, level):
    maps = np.full(shape, level, np.float32)
    assert compare(maps, maps.copy(), "heatmap").passed


@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_topk_iou_is_symmetric_and_in_unit_interval(h, w, data):
    a = data.draw(arrays(np.float32, (h, w), elements=unit_floats))
    b = data.draw(arrays(np.float32, (h, w), elements=unit_floats))
    iou = topk_iou(a, b)
    assert 0.0 <= iou <= 1.0
    assert iou == topk_iou(b, a)
    assert pearson(a, b) == pytest.approx(pearson(b, a), abs=1e-12)


@given(map_shapes, st.data())
def test_heatmap_metrics_are_finite_for_any_pair(shape, data):
    a = data.draw(arrays(np.float32, shape, elements=unit_floats))
    b = data.draw(arrays(np.float32, shape, elements=unit_floats))
    result = compare(a, b, "heatmap")
    for m in result.metrics.values():
        assert math.isfinite(m.value)
        if m.name in ("pearson", "ssim"):
            assert -1.0 <= m.value <= 1.0
    assert 0.0 <= result.details["share_out"] <= 1.0


@given(
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)).flatmap(
        lambda s: arrays(np.float32, s, elements=st.floats(-1e6, 1e6, width=32))
    )
)
def test_activations_compared_with_themselves_pass(a):
    assert compare({"layer": a}, {"layer": a.copy()}, "activation").passed


@given(
    st.tuples(
        st.integers(1, 3), st.integers(1, 10), st.integers(1, 10), st.sampled_from([1, 3])
    ).flatmap(lambda s: arrays(np.uint8, s))
)
def test_patterns_compared_with_themselves_pass(p):
    assert compare(p, p.copy(), "pattern").passed


# --------------------------------------------------------------------------------------
# layer boundary
# --------------------------------------------------------------------------------------
def test_compare_imports_no_keras_and_no_framework():
    code = textwrap.dedent(
        """
        import sys
        for name in ("keras", "tensorflow", "torch", "jax"):
            sys.modules[name] = None  # any import of them now raises ImportError
        import numpy as np
        import convviz_check as cc
        from convviz_check.metrics import compare
        a = np.zeros((7, 7), np.float32); a[1, 1] = 1
        assert not compare(a, np.roll(a, 3), "heatmap").passed
        # importing the submodule must not rebind cc.compare to the module
        assert cc.compare is compare and cc.compare(a, a, "heatmap").passed
        import convviz_check.crossbackend.agreement
        assert callable(cc.agreement) and cc.agreement.__name__ == "agreement"
        loaded = [m for m in ("keras", "tensorflow", "torch", "jax") if sys.modules.get(m)]
        assert not loaded, loaded
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
