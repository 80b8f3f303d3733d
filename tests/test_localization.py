"""convviz_check.localization: hand-computed cases, invariants, invalid targets, the
assertion and its overlay, the fixture method, and a keras-free import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from convviz_check.errors import InputError, LocalizationError
from convviz_check.localization import (
    assert_localized,
    energy_in_box,
    heatmap_box,
    iou,
    measure,
    pointing_game,
)
from convviz_check.types import Box, GradCAM


def one_hot(shape: tuple[int, int], *cells: tuple[int, int], value: float = 1.0) -> np.ndarray:
    hm = np.zeros(shape, dtype=np.float32)
    for r, c in cells:
        hm[r, c] = value
    return hm


def make_cam(heatmap: np.ndarray, image_shape=(8, 8), degenerate=False) -> GradCAM:
    hm = np.asarray(heatmap, np.float32)[None]
    return GradCAM(
        heatmap=hm,
        raw=hm.copy(),
        class_index=np.zeros(1, np.int64),
        score=np.ones(1, np.float32),
        score_kind="logit",
        layer="conv",
        degenerate=np.array([degenerate]),
        image_shape=image_shape,
    )


# Along one axis, Pillow's bilinear upsampling of [0, 1] from 2 to 8 pixels samples at
# output pixel centres (i + 0.5) / 4 in input units against input centres 0.5 and 1.5,
# clamping at the edges: [0, 0, .125, .375, .625, .875, 1, 1].
UP_2_TO_8 = np.array([0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1])


# --------------------------------------------------------------------- pointing game
def test_pointing_game_hits_when_the_peak_is_inside_the_box():
    hm = one_hot((4, 4), (1, 2))
    assert pointing_game(hm, Box(0, 2, 2, 4))
    assert not pointing_game(hm, Box(2, 0, 4, 2))


def test_pointing_game_box_on_the_bottom_right_border_is_half_open():
    hm = one_hot((4, 4), (3, 3))
    assert pointing_game(hm, Box(2, 2, 4, 4))
    assert not pointing_game(hm, Box(0, 0, 3, 3))  # row 3 / col 3 are excluded


def test_pointing_game_one_pixel_box():
    assert pointing_game(one_hot((5, 5), (1, 2)), Box(1, 2, 2, 3))
    assert not pointing_game(one_hot((5, 5), (1, 3)), Box(1, 2, 2, 3))


def test_pointing_game_tolerance_is_euclidean_distance_in_pixels():
    box = Box(1, 1, 2, 2)
    side = one_hot((5, 5), (1, 2))  # one pixel right of the box
    diagonal = one_hot((5, 5), (2, 2))  # sqrt(2) away
    assert not pointing_game(side, box)
    assert pointing_game(side, box, tolerance_px=1)
    assert not pointing_game(diagonal, box, tolerance_px=1)
    assert pointing_game(diagonal, box, tolerance_px=1.5)


def test_pointing_game_tolerance_with_a_mask_uses_the_distance_to_the_mask():
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = True
    assert not pointing_game(one_hot((5, 5), (0, 2)), mask, tolerance_px=1.9)
    assert pointing_game(one_hot((5, 5), (0, 2)), mask, tolerance_px=2)


def test_pointing_game_tie_is_a_hit_only_if_every_tied_pixel_is_inside():
    box = Box(0, 0, 2, 2)
    assert pointing_game(one_hot((4, 4), (0, 0), (1, 1)), box)
    assert not pointing_game(one_hot((4, 4), (0, 0), (3, 3)), box)


def test_pointing_game_tie_within_tolerance_counts_every_tied_pixel():
    box = Box(0, 0, 1, 1)
    hm = one_hot((4, 4), (0, 1), (0, 3))
    assert pointing_game(hm, box, tolerance_px=3)
    assert not pointing_game(hm, box, tolerance_px=2)


def test_a_flat_map_is_degenerate_and_points_nowhere_even_at_a_box_covering_the_image():
    # One degenerate rule for every judgment: a constant map ranks no pixel.
    flat = np.full((4, 4), 0.5, np.float32)
    assert not pointing_game(flat, Box(0, 0, 4, 3))
    assert not pointing_game(flat, Box(0, 0, 4, 4))
    result = measure(flat, Box(0, 0, 4, 4))
    assert result.degenerate and result.energy == 0.0 and result.heatmap_box is None
    # one cell above the rest is no longer flat: it points
    flat[1, 2] = 0.6
    assert pointing_game(flat, Box(0, 0, 4, 4))


def test_pointing_game_with_a_mask_needs_the_mask_not_its_bounding_box():
    mask = np.zeros((4, 4), bool)
    mask[:, 0] = True
    mask[3, :] = True  # an L: its bounding box is the whole image
    assert pointing_game(one_hot((4, 4), (3, 2)), mask)
    assert not pointing_game(one_hot((4, 4), (1, 2)), mask)


def test_pointing_game_on_a_resized_map():
    hm = np.array([[0, 0], [0, 1]], np.float32)
    assert pointing_game(hm, Box(4, 4, 8, 8), image_shape=(8, 8))
    assert not pointing_game(hm, Box(0, 0, 4, 4), image_shape=(8, 8))
    # the peak after resizing is the 2x2 corner block: a hit needs all of it
    assert not pointing_game(hm, Box(6, 6, 8, 7), image_shape=(8, 8))
    assert pointing_game(hm, Box(6, 6, 8, 8), image_shape=(8, 8))


# --------------------------------------------------------------------- all-zero maps
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_map_without_positive_values_never_localizes(value):
    hm = np.full((4, 4), value, np.float32)
    box = Box(0, 0, 4, 4)
    assert pointing_game(hm, box) is False
    assert energy_in_box(hm, box) == 0.0
    assert iou(hm, box) == 0.0
    assert heatmap_box(hm) is None


def test_degenerate_gradcam_is_measured_as_all_zero_even_if_values_linger():
    cam = make_cam(one_hot((2, 2), (0, 0)), degenerate=True)
    box = Box(0, 0, 8, 8)
    assert pointing_game(cam, box) is False
    assert energy_in_box(cam, box) == 0.0
    assert iou(cam, box) == 0.0
    assert heatmap_box(cam) is None
    assert measure(cam, box).degenerate


# --------------------------------------------------------------------- energy
def test_energy_is_the_share_of_positive_mass_inside():
    assert energy_in_box(np.array([[1.0, 3.0]]), Box(0, 1, 1, 2)) == pytest.approx(0.75)
    # negative values are not mass: they neither add to nor subtract from the total
    assert energy_in_box(np.array([[-5.0, 1.0, 3.0]]), Box(0, 2, 1, 3)) == pytest.approx(0.75)


def test_energy_in_a_mask():
    hm = np.arange(1, 5, dtype=np.float32).reshape(2, 2)  # total 10
    mask = np.array([[True, False], [False, True]])
    assert energy_in_box(hm, mask) == pytest.approx((1 + 4) / 10)


def test_energy_of_a_resized_map_matches_the_bilinear_weights():
    hm = np.array([[0, 0], [0, 1]], np.float32)
    expected = (UP_2_TO_8[4:].sum() / UP_2_TO_8.sum()) ** 2  # (3.5 / 4)^2 = 0.765625
    assert energy_in_box(hm, Box(4, 4, 8, 8), image_shape=(8, 8)) == pytest.approx(expected)


def test_gradcam_input_is_resized_to_its_image_shape():
    cam = make_cam(np.array([[0, 0], [0, 1]]), image_shape=(8, 8))
    assert energy_in_box(cam, Box(4, 4, 8, 8)) == pytest.approx(0.765625)
    assert pointing_game(cam, Box(6, 6, 8, 8))
    # A box beyond the 2x2 map but inside the 8x8 image is valid for the GradCAM. At
    # 8x8 the map is outer(UP_2_TO_8, UP_2_TO_8): >= 0.15 on rows/cols 3..7 except
    # (3, 3) (0.375^2 = 0.14), 24 pixels, all inside the 36-pixel box.
    assert iou(cam, Box(2, 2, 8, 8)) == pytest.approx(24 / 36)


def test_gradcam_holding_several_images_is_refused():
    cam = make_cam(np.array([[1.0, 0.5], [0.5, 0.5]]))
    two = GradCAM(
        **{
            **{f: getattr(cam, f) for f in ("score_kind", "layer", "image_shape")},
            **{
                f: np.concatenate([getattr(cam, f)] * 2)
                for f in ("heatmap", "raw", "class_index", "score", "degenerate")
            },
        }
    )
    with pytest.raises(InputError, match=r"cam\[i\]"):
        pointing_game(two, Box(0, 0, 1, 1))
    assert pointing_game(two[1], Box(0, 0, 8, 8))


# --------------------------------------------------------------------- IoU
def test_iou_of_the_thresholded_region_and_the_box():
    hm = np.array([[1.0, 1.0, 0.0, 0.0]])
    assert iou(hm, Box(0, 1, 1, 3)) == pytest.approx(1 / 3)


def test_iou_region_is_at_or_above_threshold_times_max():
    hm = np.array([[1.0, 0.2, 0.15, 0.1]])  # at 0.15: cols 0, 1, 2 (0.15 is "at")
    assert iou(hm, Box(0, 0, 1, 3)) == pytest.approx(1.0)
    assert iou(hm, Box(0, 0, 1, 3), threshold=0.5) == pytest.approx(1 / 3)


def test_iou_with_a_mask_and_a_resized_map():
    hm = np.array([[0, 0], [0, 1]], np.float32)  # at 8x8, >= 0.15: 24 pixels (see above)
    mask = np.zeros((8, 8), bool)
    mask[4:, 4:] = True
    assert iou(hm, mask) == pytest.approx(16 / 24)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, "0.2", True])
def test_iou_refuses_a_threshold_outside_0_1(threshold):
    with pytest.raises(InputError, match="threshold"):
        iou(np.ones((2, 2)), Box(0, 0, 1, 1), threshold=threshold)


# --------------------------------------------------------------------- heatmap box
def test_heatmap_box_is_the_box_of_the_largest_region():
    hm = np.zeros((6, 6), np.float32)
    hm[1:3, 1:4] = 0.5  # 6 pixels
    hm[5, 5] = 1.0  # the max, but one pixel
    assert heatmap_box(hm) == Box(1, 1, 3, 4)


def test_heatmap_box_regions_touching_diagonally_are_one_region():
    hm = one_hot((4, 4), (0, 0), (1, 1), (3, 3))
    assert heatmap_box(hm) == Box(0, 0, 2, 2)


def test_heatmap_box_threshold_drops_the_faint_part():
    hm = np.array([[1.0, 0.2, 0.1, 0.0]])
    assert heatmap_box(hm) == Box(0, 0, 1, 2)
    assert heatmap_box(hm, threshold=0.5) == Box(0, 0, 1, 1)


def test_heatmap_box_equal_regions_prefer_more_mass():
    hm = np.zeros((3, 5), np.float32)
    hm[0, 0] = 0.5
    hm[2, 4] = 1.0
    assert heatmap_box(hm) == Box(2, 4, 3, 5)


def test_heatmap_box_of_a_gradcam_is_in_image_pixels():
    cam = make_cam(np.array([[0, 0], [0, 1]]), image_shape=(8, 8))
    assert heatmap_box(cam) == Box(3, 3, 8, 8)  # UP_2_TO_8 >= 0.15 from index 3
    assert heatmap_box(cam.heatmap[0]) == Box(1, 1, 2, 2)
    assert heatmap_box(cam.heatmap[0], image_shape=(8, 8)) == Box(3, 3, 8, 8)


# --------------------------------------------------------------------- invalid targets
@pytest.mark.parametrize(
    "box",
    [Box(0, 0, 5, 4), Box(0, 0, 4, 5), Box(-1, 0, 2, 2), Box(0, -1, 2, 2), Box(4, 4, 6, 6)],
)
def test_box_outside_the_image_is_refused(box):
    with pytest.raises(LocalizationError, match=r"outside the 4x4 image.*Received: Box"):
        pointing_game(np.ones((4, 4)), box)


def test_box_outside_the_image_shape_is_refused_not_the_heatmap_shape():
    assert pointing_game(np.eye(2), Box(0, 0, 8, 8), image_shape=(8, 8))
    with pytest.raises(LocalizationError, match="8x8"):
        energy_in_box(np.ones((2, 2)), Box(0, 0, 9, 8), image_shape=(8, 8))


def test_inverted_box_is_refused_on_construction():
    with pytest.raises(LocalizationError, match="y0 < y1"):
        Box(3, 0, 1, 2)


def test_empty_mask_is_refused():
    with pytest.raises(LocalizationError, match="empty"):
        iou(np.ones((4, 4)), np.zeros((4, 4), bool))


def test_mask_of_another_shape_than_the_image_is_refused():
    with pytest.raises(LocalizationError, match=r"\(8, 8\).*Received: target.shape=\(4, 4\)"):
        energy_in_box(np.ones((2, 2)), np.ones((4, 4), bool), image_shape=(8, 8))
    with pytest.raises(LocalizationError, match="cam.image_shape"):
        energy_in_box(make_cam(np.ones((2, 2)), (8, 8)), np.ones((4, 4), bool))


@pytest.mark.parametrize(
    "target", [np.full((4, 4), 2), np.ones((1, 4, 4), bool), (0, 0, 2, 2), "box"]
)
def test_target_that_is_neither_box_nor_mask_is_refused(target):
    with pytest.raises(LocalizationError, match="Received"):
        pointing_game(np.ones((4, 4)), target)


def test_mask_of_zeros_and_ones_is_accepted():
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0] = 1
    assert pointing_game(one_hot((4, 4), (0, 0)), mask)


@pytest.mark.parametrize(
    "heatmap", [np.ones((2, 2, 2)), np.array([[np.nan, 1.0]]), np.zeros((0, 3)), "map"]
)
def test_invalid_heatmap_is_refused_with_what_was_received(heatmap):
    with pytest.raises(InputError, match="Received"):
        pointing_game(heatmap, Box(0, 0, 1, 1))


@pytest.mark.parametrize("shape", [(8,), (8, 0), (8.5, 8), "88"])
def test_invalid_image_shape_is_refused(shape):
    with pytest.raises(InputError, match="image_shape"):
        pointing_game(np.ones((2, 2)), Box(0, 0, 1, 1), image_shape=shape)


def test_negative_tolerance_is_refused():
    with pytest.raises(InputError, match="tolerance_px"):
        pointing_game(np.ones((2, 2)), Box(0, 0, 1, 1), tolerance_px=-1)


# --------------------------------------------------------------------- invariants
@st.composite
def map_and_box(draw, max_side=12):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    values = draw(
        st.lists(st.floats(-1, 1, width=32), min_size=h * w, max_size=h * w).map(
            lambda v: np.array(v, np.float32).reshape(h, w)
        )
    )
    y0 = draw(st.integers(0, h - 1))
    x0 = draw(st.integers(0, w - 1))
    y1 = draw(st.integers(y0 + 1, h))
    x1 = draw(st.integers(x0 + 1, w))
    return values, Box(y0, x0, y1, x1)


@given(map_and_box(), st.floats(0, 1))
def test_iou_is_between_0_and_1(case, threshold):
    hm, box = case
    assert 0.0 <= iou(hm, box, threshold=threshold) <= 1.0


@given(map_and_box())
def test_energy_is_between_0_and_1(case):
    hm, box = case
    assert 0.0 <= energy_in_box(hm, box) <= 1.0


@given(map_and_box(), st.data())
def test_energy_never_decreases_as_the_box_grows(case, data):
    hm, box = case
    h, w = hm.shape
    grown = Box(
        data.draw(st.integers(0, box.y0)),
        data.draw(st.integers(0, box.x0)),
        data.draw(st.integers(box.y1, h)),
        data.draw(st.integers(box.x1, w)),
    )
    assert energy_in_box(hm, grown) >= energy_in_box(hm, box) - 1e-12


@given(map_and_box())
def test_box_covering_the_image_gets_every_positive_map(case):
    hm, _ = case
    full = Box(0, 0, *hm.shape)
    # a constant map (all zero or flat) is degenerate: it points nowhere, holds no energy
    positive = bool(hm.max() > 0) and bool(hm.max() > hm.min())
    assert pointing_game(hm, full) is positive
    assert energy_in_box(hm, full) == (pytest.approx(1.0) if positive else 0.0)


@given(map_and_box(), st.sampled_from([(8, 8), (16, 12), (30, 30)]))
def test_pointing_game_true_for_a_box_covering_a_resized_image(case, shape):
    hm, _ = case
    # a constant map (one cell included) is degenerate: it points nowhere
    expected = bool(hm.max() > 0) and bool(hm.max() > hm.min())
    assert pointing_game(hm, Box(0, 0, *shape), image_shape=shape) is expected


@st.composite
def two_masks(draw, max_side=10):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    cells = st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(
        lambda v: np.array(v, bool).reshape(h, w)
    )
    a = draw(cells.filter(np.any))
    b = draw(cells.filter(np.any))
    return a, b


@given(two_masks(), st.floats(0.01, 1))
def test_iou_of_binary_maps_is_symmetric(masks, threshold):
    a, b = masks
    forward = iou(a.astype(np.float32), b, threshold=threshold)
    backward = iou(b.astype(np.float32), a, threshold=threshold)
    assert forward == backward
    assert (forward == 1.0) == bool(np.array_equal(a, b))


@given(map_and_box())
def test_heatmap_box_lies_in_the_image_and_is_above_threshold(case):
    hm, _ = case
    box = heatmap_box(hm)
    if hm.max() <= 0:
        assert box is None
        return
    assert 0 <= box.y0 < box.y1 <= hm.shape[0] and 0 <= box.x0 < box.x1 <= hm.shape[1]
    inside = hm[box.y0 : box.y1, box.x0 : box.x1]
    assert inside.max() >= 0.15 * hm.max()


@given(map_and_box())
def test_measure_agrees_with_the_single_metrics(case):
    hm, box = case
    m = measure(hm, box)
    assert m.pointing == pointing_game(hm, box)
    assert m.energy == energy_in_box(hm, box)
    assert m.iou == iou(hm, box)
    assert m.heatmap_box == heatmap_box(hm)


# --------------------------------------------------------------------- assertion
def test_assert_localized_passes_when_every_requested_property_holds():
    hm = one_hot((8, 8), (2, 3))
    assert_localized(hm, Box(0, 0, 4, 4), min_energy=0.9, min_iou=0.01)


def test_assert_localized_message_gives_peak_box_energy_and_iou():
    hm = one_hot((8, 8), (6, 7))
    with pytest.raises(AssertionError) as info:
        assert_localized(hm, Box(0, 0, 4, 4))
    text = str(info.value)
    assert "pointing game missed" in text
    assert "peak: (y=6, x=7)" in text
    assert "rows [0, 4), cols [0, 4)" in text
    assert "energy in target: 0.000" in text
    assert "IoU" in text and "0.000" in text
    assert "heatmap box (Grad-CAM paper): rows [6, 7), cols [7, 8)" in text


def test_assert_localized_checks_energy_and_iou_bounds():
    hm = np.zeros((4, 4), np.float32)
    hm[0, 0] = 1.0
    hm[3, 3] = 0.5  # a third of the mass is outside Box(0, 0, 2, 2)
    box = Box(0, 0, 2, 2)
    assert_localized(hm, box, min_energy=0.6)
    with pytest.raises(AssertionError, match=r"energy in target 0.667 < min_energy 0.900"):
        assert_localized(hm, box, min_energy=0.9)
    with pytest.raises(AssertionError, match=r"IoU 0.200 < min_iou 0.500"):
        assert_localized(hm, box, pointing=False, min_iou=0.5)


def test_assert_localized_lists_tied_peaks():
    with pytest.raises(AssertionError, match=r"2 tied pixels: \(y=0, x=0\), \(y=3, x=3\)"):
        assert_localized(one_hot((4, 4), (0, 0), (3, 3)), Box(0, 0, 2, 2))


def test_assert_localized_fails_on_a_degenerate_gradcam():
    cam = make_cam(one_hot((2, 2), (0, 0)), degenerate=True)
    with pytest.raises(AssertionError, match="degenerate"):
        assert_localized(cam, Box(0, 0, 8, 8), pointing=False, min_energy=0.0)


def test_assert_localized_fails_on_an_all_zero_map():
    with pytest.raises(AssertionError, match="all zero"):
        assert_localized(np.zeros((4, 4)), Box(0, 0, 4, 4))


def test_assert_localized_with_nothing_to_assert_is_refused():
    with pytest.raises(InputError, match="nothing to assert"):
        assert_localized(np.ones((4, 4)), Box(0, 0, 4, 4), pointing=False)


def test_assert_localized_invalid_target_is_a_localization_error_not_a_failure():
    with pytest.raises(LocalizationError):
        assert_localized(np.ones((4, 4)), Box(0, 0, 5, 5))


def test_failed_assertion_saves_an_overlay_with_the_box_drawn(tmp_path):
    image = np.zeros((16, 16, 3), np.uint8)
    cam = make_cam(one_hot((2, 2), (1, 1)), image_shape=(16, 16))
    box = Box(2, 2, 6, 7)
    with pytest.raises(AssertionError) as info:
        assert_localized(cam, box, image=image, results_dir=tmp_path, name="t/case")
    path = tmp_path / "t" / "case.png"
    assert f"overlay: {path}" in str(info.value)
    picture = np.asarray(Image.open(path))
    assert picture.shape == (16, 16, 3)
    green = np.all(picture == (0, 255, 0), axis=-1)
    assert green[2, 2:7].all() and green[5, 2:7].all() and green[2:6, 2].all()
    assert not green[3:5, 3:6].any()  # only the outline
    assert np.all(picture[15, 15] == (255, 0, 255))  # the peak


def test_overlay_outlines_a_mask_target_and_scales_an_array_image(tmp_path):
    mask = np.zeros((8, 8), bool)
    mask[1:4, 1:4] = True
    image = np.full((16, 16), 0.5, np.float32)  # another resolution, grey, float
    with pytest.raises(AssertionError):
        assert_localized(one_hot((8, 8), (7, 7)), mask, image=image, results_dir=tmp_path)
    picture = np.asarray(Image.open(tmp_path / "localization.png"))
    green = np.all(picture == (0, 255, 0), axis=-1)
    assert green[1, 1:4].all() and not green[2, 2]


def test_overlay_name_cannot_escape_the_results_dir(tmp_path):
    with pytest.raises(AssertionError):
        assert_localized(
            one_hot((4, 4), (3, 3)),
            Box(0, 0, 1, 1),
            results_dir=tmp_path / "r",
            name="../../evil/../x",
        )
    written = [p for p in tmp_path.rglob("*.png")]
    assert len(written) == 1 and (tmp_path / "r") in written[0].parents


def test_passing_assertion_writes_nothing(tmp_path):
    assert_localized(one_hot((4, 4), (0, 0)), Box(0, 0, 1, 1), results_dir=tmp_path)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------- fixture method
def test_fixture_assert_localized_saves_the_overlay_under_the_results_dir(pytester):
    pytester.makepyfile(
        test_loc="""
        import numpy as np
        from convviz_check.types import Box

        def test_points(convviz):
            hm = np.zeros((8, 8)); hm[1, 1] = 1.0
            convviz.assert_localized(hm, Box(0, 0, 4, 4))
            convviz.assert_localized(hm, Box(4, 4, 8, 8))
        """
    )
    result = pytester.runpytest("--convviz-results-dir=out", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pointing game missed*", "*peak: (y=1, x=1)*", "*overlay:*"])
    written = sorted(p.relative_to(pytester.path) for p in pytester.path.rglob("*.png"))
    # every judgment's picture is recorded (the report shows passed ones too); the
    # failure names its own
    assert [str(p) for p in written] == [
        "out/images/test_loc.py/test_points/localized-1.overlay.png",
        "out/images/test_loc.py/test_points/localized-2.overlay.png",
    ]
    result.stdout.fnmatch_lines(["*overlay: *localized-2.overlay.png"])


# --------------------------------------------------------------------- layering
def test_localization_imports_and_runs_without_keras_or_frameworks(tmp_path):
    code = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"keras", "tensorflow", "torch", "jax", "keras_hub"}:
                    raise ImportError("blocked: " + name)

        sys.meta_path.insert(0, Block())
        import numpy as np
        from convviz_check.localization import assert_localized, heatmap_box, measure
        from convviz_check.types import Box

        hm = np.zeros((4, 4)); hm[3, 3] = 1.0
        mask = np.zeros((8, 8), bool); mask[6:, 6:] = True
        m = measure(hm, mask, tolerance_px=1)
        assert m.pointing and heatmap_box(hm) == Box(3, 3, 4, 4)
        try:
            assert_localized(hm, Box(0, 0, 1, 1), results_dir=sys.argv[1])
        except AssertionError:
            pass
        loaded = [m for m in sys.modules if m.split(".")[0] in {"keras", "tensorflow", "torch", "jax"}]
        assert not loaded, loaded
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert (tmp_path / "localization.png").exists()
