"""Tests of render.py: channel grids, deprocessing, filter grids, overlays.

Pure NumPy: render imports no Keras, so these run the same under every backend.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convviz_check.errors import ConvvizError, InputError
from convviz_check.render import (
    activation_grid,
    colorize,
    deprocess_image,
    filter_grid,
    overlay,
)
from convviz_check.types import GradCAM


def _standardized(channel: np.ndarray) -> np.ndarray:
    """The per-channel rendering (standardize, x64, +128, clip), written out for one 2-D channel."""
    c = channel.astype(np.float64)
    if c.std() == 0:
        return np.full(c.shape, 128, np.uint8)
    return np.clip((c - c.mean()) / c.std() * 64 + 128, 0, 255).astype(np.uint8)


def _tile(grid: np.ndarray, k: int, cols: int, h: int, w: int) -> np.ndarray:
    r, q = divmod(k, cols)
    return grid[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w]


# --- activation_grid -----------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 7, 8, 16, 17, 512])
def test_activation_grid_shows_every_channel(channels):
    h, w = 5, 4
    act = np.random.default_rng(channels).normal(size=(h, w, channels)).astype(np.float32)
    grid = activation_grid(act)
    cols = min(16, channels)
    rows = math.ceil(channels / 16)
    assert grid.dtype == np.uint8
    assert grid.shape == (rows * (h + 1) - 1, cols * (w + 1) - 1)
    for k in range(channels):
        np.testing.assert_array_equal(_tile(grid, k, cols, h, w), _standardized(act[:, :, k]))


def test_activation_grid_has_one_pixel_zero_gaps_and_padded_last_row():
    act = np.random.default_rng(0).normal(size=(3, 3, 17)) + 10.0
    grid = activation_grid(act)
    assert grid.shape == (2 * 4 - 1, 16 * 4 - 1)
    assert (grid[3, :] == 0).all()  # row gap
    assert (grid[:, 3] == 0).all()  # column gap
    assert (grid[4:, 4:] == 0).all()  # the 15 empty tiles of the last row


def test_activation_grid_constant_channel_is_flat_128_not_nan():
    act = np.zeros((6, 6, 3), np.float32)
    act[:, :, 1] = 7.5
    act[:, :, 2] = np.arange(36).reshape(6, 6)
    grid = activation_grid(act)
    assert (_tile(grid, 0, 3, 6, 6) == 128).all()
    assert (_tile(grid, 1, 3, 6, 6) == 128).all()
    assert _tile(grid, 2, 3, 6, 6).std() > 0


@pytest.mark.parametrize(
    "images_per_row, shape", [(1, (5 * 4 - 1, 3)), (2, (3 * 4 - 1, 7)), (8, (3, 19))]
)
def test_activation_grid_images_per_row(images_per_row, shape):
    assert activation_grid(np.ones((3, 3, 5)), images_per_row=images_per_row).shape == shape


def test_activation_grid_accepts_one_image_batch():
    act = np.random.default_rng(1).normal(size=(1, 4, 4, 3))
    np.testing.assert_array_equal(activation_grid(act), activation_grid(act[0]))


@pytest.mark.parametrize("shape", [(4, 4), (2, 4, 4, 3), (4,)])
def test_activation_grid_refuses_wrong_rank(shape):
    with pytest.raises(InputError, match=r"Received: activation\.shape="):
        activation_grid(np.zeros(shape))


@pytest.mark.parametrize("shape", [(4, 4, 0), (0, 4, 3)])
def test_activation_grid_refuses_empty_activation(shape):
    with pytest.raises(InputError, match=r"at least one channel.*activation\.shape="):
        activation_grid(np.zeros(shape))


def test_activation_grid_accepts_numpy_integer_images_per_row():
    act = np.random.default_rng(2).normal(size=(3, 3, 5))
    np.testing.assert_array_equal(
        activation_grid(act, images_per_row=np.int64(2)), activation_grid(act, images_per_row=2)
    )


@pytest.mark.parametrize("images_per_row", [0, -3, 2.5, True])
def test_activation_grid_refuses_bad_images_per_row(images_per_row):
    with pytest.raises(InputError, match="images_per_row"):
        activation_grid(np.zeros((2, 2, 2)), images_per_row=images_per_row)


@given(
    st.integers(1, 40),
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(1, 20),
    st.floats(-1e6, 1e6, allow_nan=False),
)
def test_activation_grid_shape_and_values_hold_for_any_size(c, h, w, per_row, offset):
    act = np.random.default_rng(c * 31 + h).normal(size=(h, w, c)) * 3 + offset
    grid = activation_grid(act, images_per_row=per_row)
    cols = min(per_row, c)
    assert grid.shape == (math.ceil(c / cols) * (h + 1) - 1, cols * (w + 1) - 1)
    assert grid.dtype == np.uint8


# --- deprocess_image ---------------------------------------------------------------------


def test_deprocess_image_crops_12_5_percent_by_default():
    pattern = np.random.default_rng(2).normal(size=(200, 200, 3)).astype(np.float32)
    img = deprocess_image(pattern)
    assert img.shape == (150, 150, 3) and img.dtype == np.uint8
    p = pattern.astype(np.float64)
    expected = np.clip((p - p.mean()) / p.std() * 64 + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(img, expected[25:-25, 25:-25])


@pytest.mark.parametrize("crop, side", [(0, 40), (3, 34), (19, 2)])
def test_deprocess_image_explicit_crop(crop, side):
    img = deprocess_image(np.random.default_rng(0).normal(size=(40, 40, 1)), crop=crop)
    assert img.shape == (side, side, 1)


def test_deprocess_image_constant_pattern_is_128():
    img = deprocess_image(np.full((16, 16, 3), 0.5), crop=0)
    assert (img == 128).all()


@pytest.mark.parametrize("crop", [20, -1, 1.5])
def test_deprocess_image_refuses_bad_crop(crop):
    with pytest.raises(InputError, match="crop"):
        deprocess_image(np.zeros((40, 40, 3)), crop=crop)


def test_deprocess_image_refuses_batch():
    with pytest.raises(InputError, match=r"pattern\.shape=\(2, 8, 8, 3\)"):
        deprocess_image(np.zeros((2, 8, 8, 3)))


# --- filter_grid ----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 7, 8, 9, 17])
def test_filter_grid_shape_and_tile_positions(count):
    h, w, margin, cols = 6, 5, 5, 8
    imgs = np.random.default_rng(count).integers(1, 256, (count, h, w, 3), dtype=np.uint8)
    grid = filter_grid(imgs, cols=cols, margin=margin)
    c = min(cols, count)
    rows = math.ceil(count / c)
    assert grid.shape == (rows * h + (rows + 1) * margin, c * w + (c + 1) * margin, 3)
    assert grid.dtype == np.uint8
    for k in range(count):
        r, q = divmod(k, c)
        y, x = margin + r * (h + margin), margin + q * (w + margin)
        np.testing.assert_array_equal(grid[y : y + h, x : x + w], imgs[k])
    # everything outside the tiles is margin (black): the tiles hold all nonzero pixels
    assert np.count_nonzero(grid) == np.count_nonzero(imgs)


def test_filter_grid_accepts_grayscale_stack():
    grid = filter_grid(np.full((3, 4, 4), 9, np.uint8), cols=2, margin=1)
    assert grid.shape == (2 * 4 + 3, 2 * 4 + 3, 1)


@pytest.mark.parametrize(
    "images, kwargs",
    [
        (np.zeros((0, 4, 4, 3), np.uint8), {}),
        (np.zeros((4, 4), np.uint8), {}),
        (np.zeros((2, 4, 4, 3), np.uint8), {"cols": 0}),
        (np.zeros((2, 4, 4, 3), np.uint8), {"margin": -1}),
    ],
)
def test_filter_grid_refuses_bad_input(images, kwargs):
    with pytest.raises(InputError):
        filter_grid(images, **kwargs)


# --- colorize / overlay ----------------------------------------------------------------------


def test_colorize_jet_endpoints():
    rgb = colorize(np.array([[0.0, 1.0]]))
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 2] > 100 and rgb[0, 0, 0] == 0  # jet starts dark blue
    assert rgb[0, 1, 0] > 100 and rgb[0, 1, 2] == 0  # and ends dark red


def test_colorize_refuses_unknown_colormap():
    with pytest.raises(InputError, match="no_such_map"):
        colorize(np.zeros((2, 2)), colormap="no_such_map")


def test_overlay_of_constant_heatmap_is_alpha_times_colour_plus_image():
    image = np.random.default_rng(0).integers(0, 100, (10, 12, 3), dtype=np.uint8)
    heat = np.full((3, 4), 0.5, np.float32)
    out = overlay(image, heat, alpha=0.4)
    colour = colorize(np.array([[0.5]]))[0, 0].astype(np.float32)
    expected = np.clip(0.4 * colour + image.astype(np.float32), 0, 255).astype(np.uint8)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_overlay_resizes_heatmap_to_image_and_keeps_hot_spot_position():
    heat = np.zeros((4, 4), np.float32)
    heat[0, 3] = 1.0  # top-right cell
    out = overlay(np.zeros((40, 40, 3), np.uint8), heat, alpha=1.0)
    red = out[..., 0].astype(int) - out[..., 2].astype(int)
    y, x = np.unravel_index(np.argmax(red), red.shape)
    assert y < 10 and x >= 30


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 1)])
def test_overlay_accepts_grayscale_images(shape):
    grey = np.random.default_rng(0).integers(0, 200, (8, 8), dtype=np.uint8)
    heat = np.array([[0.0, 1.0], [0.25, 0.5]])
    out = overlay(grey.reshape(shape), heat)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    # the same as the grey image given as RGB: its value in every channel
    np.testing.assert_array_equal(out, overlay(np.repeat(grey[..., None], 3, axis=-1), heat))
    # where the map is 0, jet is dark blue (0, 0, 0.5): red and green keep the grey
    np.testing.assert_array_equal(out[0, 0, :2], [grey[0, 0], grey[0, 0]])
    assert abs(int(out[0, 0, 2]) - (int(grey[0, 0]) + 0.4 * 127.5)) <= 1


def test_overlay_treats_float_image_in_unit_range_as_0_to_255():
    img = np.full((6, 6, 3), 0.5, np.float32)
    a = overlay(img, np.zeros((2, 2)), alpha=0.0)
    assert (a == 127).all()


def test_overlay_clips_instead_of_wrapping():
    out = overlay(np.full((4, 4, 3), 250, np.uint8), np.ones((2, 2)), alpha=1.0)
    assert out[..., 0].min() == 255  # 250 + red would wrap to a small number in uint8


@pytest.mark.parametrize(
    ("heatmap", "pattern"),
    [
        (np.full((4, 4), 5.0), r"heatmap in \[0, 1\]. Received: values in \[5, 5\]"),
        (np.full((4, 4), -0.5), r"Received: values in \[-0.5, -0.5\]"),
        (np.full((4, 4), np.nan), r"finite heatmap.*16 NaN or inf"),
    ],
)
def test_overlay_refuses_a_heatmap_off_the_unit_range_instead_of_clipping(heatmap, pattern):
    with pytest.raises(InputError, match=pattern):
        overlay(np.zeros((8, 8, 3), np.uint8), heatmap)
    overlay(np.zeros((8, 8, 3), np.uint8), np.full((4, 4), 1.0 + 1e-6))  # rounding passes


def test_overlay_takes_one_image_gradcam_and_refuses_several():
    heat = np.zeros((2, 3, 3), np.float32)
    heat[:, 1, 1] = 1.0
    cam = GradCAM(
        heatmap=heat,
        raw=heat.copy(),
        class_index=np.zeros(2, np.int64),
        score=np.ones(2, np.float32),
        score_kind="logit",
        layer="conv",
        degenerate=np.zeros(2, bool),
        image_shape=(9, 9),
    )
    with pytest.raises(InputError, match="holds 2"):
        overlay(np.zeros((9, 9, 3), np.uint8), cam)
    out = overlay(np.zeros((9, 9, 3), np.uint8), cam[0])
    np.testing.assert_array_equal(out, overlay(np.zeros((9, 9, 3), np.uint8), heat[0]))


@pytest.mark.parametrize(
    "image, heatmap",
    [
        (np.zeros((8, 8, 3), np.uint8), np.zeros((2, 2, 2))),
        (np.zeros((8, 8, 4), np.uint8), np.zeros((2, 2))),
        (np.zeros((8,), np.uint8), np.zeros((2, 2))),
    ],
)
def test_overlay_refuses_bad_shapes(image, heatmap):
    with pytest.raises(InputError, match="Received"):
        overlay(image, heatmap)


def test_render_errors_are_convviz_errors():
    with pytest.raises(ConvvizError):
        activation_grid(np.zeros(3))


# --- overlay value ranges ---------------------------------------------------------------------


def _photo() -> np.ndarray:
    """A float image in [0, 1] with structure (a gradient and a bright square)."""
    y, x = np.mgrid[0:24, 0:32] / np.array([23.0, 31.0])[:, None, None]
    img = np.stack([x, y, 0.5 * (x + y)], axis=-1).astype(np.float32)
    img[6:12, 8:16] = 1.0
    return img


@pytest.mark.parametrize("value_range", [(-1.0, 1.0), None])
def test_overlay_of_a_minus_one_to_one_image_is_not_dark(value_range):
    unit = _photo()
    heat = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    reference = overlay(unit, heat).astype(float)
    shifted = overlay(unit * 2.0 - 1.0, heat, value_range=value_range).astype(float)
    assert abs(shifted.mean() - reference.mean()) < 1.0
    assert np.abs(shifted - reference).max() <= 1.0


def test_overlay_maps_a_stated_range_to_0_255():
    img = np.array([[10.0, 30.0]], np.float32)
    out = overlay(img, np.zeros((1, 1)), alpha=0.0, value_range=(10.0, 30.0))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [255, 255, 255]


def test_overlay_refuses_a_value_outside_the_stated_range_and_names_it():
    img = np.full((4, 4, 3), 0.5, np.float32)
    img[0, 0] = 1.5
    with pytest.raises(InputError, match=r"value_range=\(0.0, 1.0\).*max 1.5"):
        overlay(img, np.zeros((2, 2)), value_range=(0.0, 1.0))


@pytest.mark.parametrize("value_range", [(1.0, 1.0), (2.0, 1.0), (0.0, float("nan")), (1.0,)])
def test_overlay_refuses_a_bad_value_range(value_range):
    with pytest.raises(InputError, match="value_range"):
        overlay(np.zeros((4, 4, 3), np.float32), np.zeros((2, 2)), value_range=value_range)


def test_overlay_infers_the_range_of_uint8_integers_and_other_floats():
    zero = np.zeros((2, 2))
    assert (overlay(np.full((2, 2), 100, np.uint8), zero, alpha=0.0) == 100).all()
    assert (overlay(np.full((2, 2), 100, np.int32), zero, alpha=0.0) == 100).all()
    wide = np.array([[10.0, 200.0]], np.float32)  # other float: its own min and max
    out = overlay(wide, np.zeros((1, 1)), alpha=0.0)
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255
    assert (overlay(np.full((2, 2), 100.0), zero, alpha=0.0) == 127).all()  # constant: grey


def test_overlay_refuses_non_finite_images():
    img = np.zeros((2, 2, 3), np.float32)
    img[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        overlay(img, np.zeros((2, 2)))


def test_upsampling_is_one_bilinear_convention_and_shrinking_antialiases():
    from PIL import Image

    from convviz_check.render import bilinear_matrix, resize_bilinear

    rng = np.random.default_rng(3)
    small = rng.random((7, 5)).astype(np.float32)
    up = resize_bilinear(small, (64, 48))
    by_matrix = bilinear_matrix(7, 64) @ small.astype(np.float64) @ bilinear_matrix(5, 48).T
    np.testing.assert_array_equal(up, by_matrix.astype(np.float32))
    pil = Image.fromarray(small, mode="F").resize((48, 64), Image.Resampling.BILINEAR)
    np.testing.assert_allclose(up, np.asarray(pil), atol=1e-5)  # PIL's convention
    # shrinking averages (PIL's widened filter); plain interpolation would alias: a
    # one-pixel checkerboard shrunk by 4 is flat grey, not a sample of it
    board = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)
    shrunk = resize_bilinear(board, (16, 16))
    assert np.abs(shrunk - 0.5).max() < 0.05
