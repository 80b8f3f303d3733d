"""Image arguments of the command line (``convviz_check.cli.images``): reading files at
their own size and channels, fitting them to a model, mapping value ranges, the
``--preprocess`` hook, and ``agree``'s loader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from convviz_check.cli import images as img_lib
from convviz_check.errors import ConvvizWarning, InputError
from tests._models import seeded_weights


def _save(tmp_path: Path, name: str, image: Image.Image, **kwargs: object) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


# --------------------------------------------------------------------------- reading
def test_a_grayscale_png_is_read_as_one_channel(tmp_path: Path) -> None:
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    data = img_lib.read_image_file(_save(tmp_path, "g.png", Image.fromarray(gray)))
    assert data.shape == (12, 10, 1) and data.dtype == np.uint8
    np.testing.assert_array_equal(data[..., 0], gray)


def test_rgb_rgba_and_palette_files_keep_what_they_hold(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    assert img_lib.read_image_file(_save(tmp_path, "c.png", Image.fromarray(rgb))).shape == (
        6,
        7,
        3,
    )
    rgba = Image.fromarray(np.dstack([rgb, np.full((6, 7), 128, np.uint8)]))
    np.testing.assert_array_equal(img_lib.read_image_file(_save(tmp_path, "a.png", rgba)), rgb)
    gray_palette = Image.fromarray(np.full((5, 5), 77, np.uint8)).convert("P")
    assert img_lib.read_image_file(_save(tmp_path, "p.png", gray_palette)).shape == (5, 5, 1)
    colour_palette = Image.fromarray(rgb).convert("P")
    assert img_lib.read_image_file(_save(tmp_path, "q.png", colour_palette)).shape == (6, 7, 3)


def test_a_16_bit_png_is_scaled_to_0_255(tmp_path: Path) -> None:
    deep = np.array([[0, 65535], [32768, 1000]], np.uint16)
    data = img_lib.read_image_file(_save(tmp_path, "d.png", Image.fromarray(deep)))
    assert data.dtype == np.float32 and data.shape == (2, 2, 1)
    assert data[0, 0, 0] == 0.0 and data[0, 1, 0] == pytest.approx(255.0)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = _save(tmp_path, "r.jpg", im, exif=exif)
    assert img_lib.read_image_file(path).shape[:2] == (20, 10)


def test_missing_and_unreadable_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        img_lib.read_sources([str(tmp_path / "absent.png")])
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match="Cannot read image file"):
        img_lib.read_sources([str(tmp_path / "text.png")])
    with pytest.raises(InputError, match="directory"):
        img_lib.read_sources([str(tmp_path)])


def test_arrays_split_into_images_and_floats_are_not_pixels(tmp_path: Path) -> None:
    np.save(tmp_path / "batch.npy", np.zeros((3, 4, 5, 1), np.float32))
    np.save(tmp_path / "one.npy", np.zeros((4, 5), np.uint8))
    sources = img_lib.read_sources([str(tmp_path / "batch.npy"), str(tmp_path / "one.npy")])
    assert [s.name for s in sources] == ["batch.npy[0]", "batch.npy[1]", "batch.npy[2]", "one.npy"]
    assert [s.is_pixels for s in sources] == [False, False, False, True]
    assert sources[3].data.shape == (4, 5, 1)
    assert len({s.stem for s in sources}) == 4
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 2, 2, 2)))
    with pytest.raises(InputError, match="shape"):
        img_lib.read_sources([str(tmp_path / "bad.npy")])


# --------------------------------------------------------------------------- fitting
def test_fit_resizes_bilinear_and_converts_rgb_to_gray_by_luma() -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    source = img_lib.SourceImage("x", "x", rgb, is_pixels=True)
    fitted = img_lib.fit(source, (12, 16), 1)
    assert fitted.shape == (12, 16, 1) and fitted.dtype == np.float32
    luma = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)  # Pillow's 601-2 luma
    expected = np.asarray(
        Image.fromarray(rgb.astype(np.float32) @ img_lib.LUMA, mode="F").resize(
            (16, 12), Image.Resampling.BILINEAR
        )
    )
    np.testing.assert_allclose(fitted[..., 0], expected, atol=1e-3)
    assert np.abs(img_lib.fit(source, None, 1)[..., 0] - luma).max() <= 1.0


def test_gray_becomes_rgb_by_repetition_and_bad_channel_counts_are_refused() -> None:
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    rgb = img_lib.convert_channels(gray, 3)
    assert rgb.shape == (2, 3, 3) and (rgb == gray).all()
    assert img_lib.convert_channels(np.zeros((2, 2, 4)), 3).shape == (2, 2, 3)
    with pytest.raises(InputError, match="from 2 to 3 channels"):
        img_lib.convert_channels(np.zeros((2, 2, 2)), 3, "two.npy")


def test_map_pixels_sends_0_and_255_to_the_range_ends() -> None:
    mapped = img_lib.map_pixels(np.array([0.0, 127.5, 255.0]), (-1.0, 1.0))
    np.testing.assert_allclose(mapped, [-1.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("values", [(1, 1), (2, -1), (0, float("inf"))])
def test_parse_range_needs_finite_lo_below_hi(values: tuple[float, float]) -> None:
    with pytest.raises(InputError, match="LO < HI"):
        img_lib.parse_range(values)


# --------------------------------------------------------------------------- --preprocess
def test_load_preprocess_names_what_is_wrong() -> None:
    with pytest.raises(InputError, match="module:function"):
        img_lib.load_preprocess("no_colon")
    with pytest.raises(InputError, match="cannot import"):
        img_lib.load_preprocess("no_such_module_xyz:f")
    with pytest.raises(InputError, match="has no"):
        img_lib.load_preprocess("numpy:no_such_function")
    fn = img_lib.load_preprocess("numpy:negative")
    batch = np.ones((2, 3, 3, 1), np.float32)
    np.testing.assert_array_equal(img_lib.apply_preprocess(fn, batch, "numpy:negative"), -batch)
    with pytest.raises(InputError, match=r"\(N, H, W, C\)"):
        img_lib.apply_preprocess(np.sum, batch, "numpy:sum")


# --------------------------------------------------------------------------- agree
def test_agree_loader_keeps_gray_files_gray_and_mixes_by_repeating(tmp_path: Path) -> None:
    gray = _save(tmp_path, "g.png", Image.fromarray(np.full((4, 4), 9, np.uint8)))
    rgb = _save(tmp_path, "c.png", Image.fromarray(np.full((4, 4, 3), 9, np.uint8)))
    assert img_lib.load_images([str(gray)]).shape == (1, 4, 4, 1)
    both = img_lib.load_images([str(gray), str(rgb)], rescale=0.5)
    assert both.shape == (2, 4, 4, 3) and both.dtype == np.float32 and (both == 4.5).all()


def test_agree_uses_the_same_loader() -> None:
    from convviz_check.cli import agree

    assert agree.load_images is img_lib.load_images


def test_importing_the_image_module_imports_no_keras() -> None:
    code = (
        "import sys\nimport convviz_check.cli.images, convviz_check.cli.agree\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- prepare
def _model(shape: tuple, rescale: bool = False) -> Any:
    import keras
    from keras import layers

    x_in = keras.Input(shape)
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(x_in) if rescale else x_in
    x = layers.Conv2D(3, 3, activation="relu", name="conv")(x)
    out = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(x_in, out)
    seeded_weights(model)
    return model


def test_prepare_maps_pixels_to_the_inferred_range_and_passes_float_arrays() -> None:
    model = _model((8, 8, 3), rescale=True)  # a Rescaling layer: takes 0-255 pixels
    pixels = img_lib.SourceImage("p", "p", np.full((16, 16, 3), 255, np.uint8), True)
    spread = np.linspace(3.0, 250.0, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    floats = img_lib.SourceImage("f", "f", spread, False)
    prep = img_lib.prepare(model, [pixels, floats])
    assert prep.value_range == (0.0, 255.0) and "inferred" in prep.range_source
    assert prep.model_input.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(prep.model_input[0], 255.0)
    np.testing.assert_allclose(prep.model_input[1], spread)
    # Passed as given even when they do not look like the model's range, with a warning.
    unit = img_lib.SourceImage("u.npy", "u.npy", spread / 255.0, False)
    with pytest.warns(
        ConvvizWarning, match=r"u.npy: values in \[0.0118, 0.98\], but the model takes \[0, 255\]"
    ):
        prep = img_lib.prepare(model, [unit])
    np.testing.assert_allclose(prep.model_input[0], spread / 255.0)


def test_prepare_with_a_stated_range_and_a_variable_size_model() -> None:
    model = _model((None, None, 1))
    a = img_lib.SourceImage("a", "a", np.zeros((10, 12, 3), np.uint8), True)
    b = img_lib.SourceImage("b", "b", np.full((20, 5, 1), 255, np.uint8), True)
    prep = img_lib.prepare(model, [a, b], stated=(-1.0, 1.0))
    assert prep.fitted.shape == (2, 10, 12, 1)
    assert any("first one's, 12x10 px" in s for s in prep.steps)
    np.testing.assert_allclose(prep.model_input[0], -1.0)
    np.testing.assert_allclose(prep.model_input[1], 1.0, atol=1e-6)


def test_prepare_with_a_preprocess_function_derives_the_filters_range() -> None:
    model = _model((4, 4, 1))
    src = img_lib.SourceImage("a", "a", np.full((4, 4, 1), 51, np.uint8), True)
    prep = img_lib.prepare(model, [src], preprocess="numpy:sqrt")
    np.testing.assert_allclose(prep.model_input, np.sqrt(51.0), rtol=1e-6)
    assert prep.value_range == pytest.approx((0.0, np.sqrt(255.0)))
    floats = img_lib.SourceImage("f", "f", np.zeros((4, 4, 1), np.float32), False)
    with pytest.raises(InputError, match="Float .npy arrays"):
        img_lib.prepare(model, [floats], preprocess="numpy:sqrt")
