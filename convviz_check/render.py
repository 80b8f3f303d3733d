"""Renderings: channel grids, deprocessed filter patterns, filter grids, overlays.

Pure NumPy (+ matplotlib's colormap registry and Pillow for resizing); never pyplot,
so no global figure state. No Keras: reports, the CLI and the cross-backend parent use
these too. Files are written by :mod:`convviz_check.storage`.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError, describe_array


def _standardize_to_uint8(x: np.ndarray, axes: tuple[int, ...] | None) -> np.ndarray:
    """(x - mean) / std * 64 + 128, clipped, uint8; a constant input maps to flat 128."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    safe = np.where(std > 0, std, 1.0)
    z = np.where(std > 0, (x - mean) / safe, 0.0)
    return np.clip(z * 64.0 + 128.0, 0, 255).astype(np.uint8)


def one_activation(caller: str, activation: np.ndarray, images_per_row: int) -> np.ndarray:
    """``activation`` as one image's ``(H, W, C)`` (a batch of one is unwrapped), once
    it and ``images_per_row`` (a positive int) are what a channel grid takes.

    Raises:
        InputError: another shape, or ``images_per_row`` not a positive int.
    """
    a = np.asarray(activation)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise InputError(
            f"{caller} expects one activation of shape (H, W, C) (or (1, H, W, C)). "
            f"Received: {describe_array('activation', a)}"
        )
    if (
        isinstance(images_per_row, bool)
        or not isinstance(images_per_row, int | np.integer)
        or images_per_row < 1
    ):
        raise InputError(f"images_per_row must be a positive int. Received: {images_per_row!r}")
    return a


def activation_grid(activation: np.ndarray, images_per_row: int = 16) -> np.ndarray:
    """Tile every channel of one activation ``(H, W, C)`` into a uint8 grid.

    Each channel is standardized on its own (constant channels are flat 128, never
    NaN), then tiles are laid ``images_per_row`` per row with 1-pixel gaps. Unlike the
    chapter's listing (``n_features // 16`` rows), every channel is shown: the last
    row is padded with gap colour (0).

    Args:
        activation: ``(H, W, C)``, or ``(1, H, W, C)`` for one image of a batch.
        images_per_row: tiles per row.

    Returns:
        ``(rows * (H + 1) - 1, cols * (W + 1) - 1)`` uint8 array.
    """
    a = one_activation("activation_grid", activation, images_per_row)
    images_per_row = int(images_per_row)
    if 0 in a.shape:
        raise InputError(
            "activation_grid needs at least one channel of at least 1x1 pixels. "
            f"Received: {describe_array('activation', a)}"
        )
    h, w, c = a.shape
    tiles = _standardize_to_uint8(a, axes=(0, 1))  # per channel
    cols = min(images_per_row, c)
    rows = math.ceil(c / cols)
    grid = np.zeros((rows * (h + 1) - 1, cols * (w + 1) - 1), dtype=np.uint8)
    for k in range(c):
        r, q = divmod(k, cols)
        grid[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = tiles[:, :, k]
    return grid


def deprocess_image(pattern: np.ndarray, crop: int | None = None) -> np.ndarray:
    """Standardize a filter pattern ``(H, W, C)`` to uint8 and crop its borders.

    ``crop`` pixels are removed from each side; ``None`` means 12.5% of the smaller
    side (25 px at 200x200, as in the chapter).
    """
    p = np.asarray(pattern)
    if p.ndim != 3:
        raise InputError(
            f"deprocess_image expects one pattern (H, W, C). Received: {describe_array('pattern', p)}"
        )
    h, w = p.shape[:2]
    if crop is None:
        crop = int(round(0.125 * min(h, w)))
    if not isinstance(crop, int | np.integer) or crop < 0 or 2 * crop >= min(h, w):
        raise InputError(
            f"crop must be an int in [0, {(min(h, w) - 1) // 2}] for a {h}x{w} pattern. "
            f"Received: crop={crop!r}"
        )
    img = _standardize_to_uint8(p, axes=None)
    return img[crop : h - crop, crop : w - crop]


def filter_grid(images: np.ndarray, cols: int = 8, margin: int = 5) -> np.ndarray:
    """Tile uint8 images ``(F, H, W, C)`` ``cols`` per row with ``margin`` px between
    (and around) tiles; any count (the last row is padded with black)."""
    imgs = np.asarray(images)
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    if imgs.ndim != 4 or imgs.shape[0] == 0:
        raise InputError(
            f"filter_grid expects images (F, H, W, C) with F >= 1. Received: {describe_array('images', imgs)}"
        )
    if cols < 1 or margin < 0:
        raise InputError(
            f"cols must be >= 1 and margin >= 0. Received: cols={cols}, margin={margin}"
        )
    f, h, w, c = imgs.shape
    cols = min(cols, f)
    rows = math.ceil(f / cols)
    grid = np.zeros((rows * h + (rows + 1) * margin, cols * w + (cols + 1) * margin, c), imgs.dtype)
    for k in range(f):
        r, q = divmod(k, cols)
        y, x = margin + r * (h + margin), margin + q * (w + margin)
        grid[y : y + h, x : x + w] = imgs[k]
    return grid


def resize_bilinear(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float array to ``shape`` (H, W).

    One convention for every map the package upsamples (overlays, localization,
    faithfulness, region masses, Score-CAM's masks): pixel centres aligned, edges
    clamped (:func:`bilinear_matrix`, as PIL's and Keras' bilinear upsampling).
    Shrinking (an image to a model's input) goes through PIL, whose bilinear filter
    widens with the factor (antialiasing) where plain interpolation would alias.
    """
    values = np.asarray(array, dtype=np.float32)
    h, w = values.shape
    if shape[0] >= h and shape[1] >= w:
        rows, cols = bilinear_matrix(h, shape[0]), bilinear_matrix(w, shape[1])
        return (rows @ values.astype(np.float64) @ cols.T).astype(np.float32)
    from PIL import Image

    img = Image.fromarray(values, mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def bilinear_matrix(size: int, new_size: int) -> np.ndarray:
    """``(new_size, size)`` weights of a bilinear resize along one axis (pixel centres
    aligned, edges clamped: the convention of PIL's and Keras' bilinear upsampling)."""
    pos = (np.arange(new_size, dtype=np.float64) + 0.5) * (size / new_size) - 0.5
    pos = np.clip(pos, 0.0, size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, size - 1)
    frac = pos - lo
    matrix = np.zeros((new_size, size), np.float64)
    rows = np.arange(new_size)
    np.add.at(matrix, (rows, lo), 1.0 - frac)
    np.add.at(matrix, (rows, hi), frac)
    return matrix


def colorize(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Map a [0, 1] heatmap to uint8 RGB with a matplotlib colormap (no pyplot)."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise InputError(f"Unknown colormap. Received: colormap={colormap!r}.") from None
    idx = np.uint8(np.clip(np.asarray(heatmap, np.float64), 0, 1) * 255)
    lut = (cmap(np.arange(256))[:, :3] * 255).astype(np.uint8)
    return lut[idx]


def _check_range(value_range: object, caller: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise InputError(
            f"{caller}: value_range must be a pair (low, high). Received: "
            f"value_range={value_range!r}."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(
            f"{caller}: value_range must be finite with low < high. Received: "
            f"value_range={value_range!r}."
        )
    return lo, hi


def inferred_range(image: np.ndarray) -> tuple[float, float]:
    """The value range an image is taken to be in when none is stated.

    - uint8: ``(0, 255)``;
    - other integers: ``(0, 255)`` when every value is in it, else the image's own
      ``(min, max)``;
    - floats with min >= 0 and max <= 1: ``(0, 1)``;
    - floats with min >= -1, max <= 1 and min < 0: ``(-1, 1)``;
    - other floats: the image's own ``(min, max)`` (so a float image in [0, 255] is
      stretched to its darkest and brightest pixel); a constant such image is drawn
      mid grey.
    """
    img = np.asarray(image)
    if img.dtype == np.uint8:
        return (0.0, 255.0)
    lo, hi = float(img.min()), float(img.max())
    if np.issubdtype(img.dtype, np.integer):
        return (0.0, 255.0) if lo >= 0 and hi <= 255 else (lo, hi)
    if lo >= 0.0 and hi <= 1.0:
        return (0.0, 1.0)
    if lo >= -1.0 and hi <= 1.0:
        return (-1.0, 1.0)
    return (lo, hi)


def as_rgb(
    image: np.ndarray,
    caller: str = "image",
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """``(H, W, 3)`` float32 in [0, 255] from ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``.

    Values are mapped linearly from ``value_range`` (``(low, high)``) to [0, 255];
    ``None`` infers the range: uint8 is [0, 255]; other integers [0, 255] when they fit
    it; floats in [0, 1] are [0, 1]; floats in [-1, 1] with a negative value are
    [-1, 1]; other floats their own min/max. Nothing is clipped silently: a value
    outside a stated range is an :class:`~convviz_check.errors.InputError` that names it.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3 or 0 in img.shape:
        raise InputError(
            f"{caller} expects an image (H, W, 3) or (H, W). Received: "
            f"{describe_array('image', img)}"
        )
    if img.dtype == bool or not (
        np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)
    ):
        raise InputError(
            f"{caller} expects a numeric image. Received: {describe_array('image', img)}"
        )
    values = img.astype(np.float64)
    if not np.isfinite(values).all():
        raise InputError(
            f"{caller}: the image has NaN or inf values. Received: {describe_array('image', img)}"
        )
    if value_range is None:
        lo, hi = inferred_range(img)
    else:
        lo, hi = _check_range(value_range, caller)
        low, high = float(values.min()), float(values.max())
        slack = 1e-6 * (hi - lo)
        if low < lo - slack or high > hi + slack:
            raise InputError(
                f"{caller}: image values fall outside the stated value_range. Received: "
                f"value_range={(lo, hi)} and an image with min {low:g}, max {high:g}. "
                "Expected every value inside value_range (or value_range=None to infer it)."
            )
    if hi <= lo:  # a constant image whose range was inferred from itself
        return np.full(img.shape, 127.5, np.float32)
    rgb = (values - lo) * (255.0 / (hi - lo))
    return np.clip(rgb, 0.0, 255.0).astype(np.float32)  # clips only the slack


def overlay(
    image: np.ndarray,
    heatmap: object,
    alpha: float = 0.4,
    colormap: str = "jet",
    *,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Superimpose a heatmap on its image: ``alpha * colormap(heatmap) + image``.

    The image is first mapped to [0, 255] from its value range, then the heatmap
    (``(h, w)`` in [0, 1], or a one-image ``GradCAM``) is coloured, resized (bilinear)
    to the image, added, and the sum clipped to [0, 255].

    Args:
        image: ``(H, W, 3)`` or ``(H, W)``/``(H, W, 1)``, integer or float.
        heatmap: ``(h, w)`` array in [0, 1], or a ``GradCAM`` holding one image.
        alpha: weight of the coloured heatmap.
        colormap: a matplotlib colormap name.
        value_range: ``(low, high)`` of the image's values, mapped to [0, 255] (e.g.
            ``(-1, 1)`` for a model input in [-1, 1]); ``None`` infers it: uint8 is
            [0, 255]; floats with min >= 0 and max <= 1 are [0, 1]; floats with
            min >= -1, max <= 1 and min < 0 are [-1, 1]; any other float image is
            stretched from its own min to its own max (a constant one is mid grey).

    Returns:
        ``(H, W, 3)`` uint8.

    Raises:
        InputError: bad shapes, a bad ``value_range``, an image value outside the
            stated ``value_range``, or a heatmap value outside ``[0, 1]`` or not
            finite (never clipped silently).
    """
    from .types import GradCAM

    if isinstance(heatmap, GradCAM):
        if len(heatmap) != 1:
            raise InputError(
                f"overlay takes one heatmap; the GradCAM holds {len(heatmap)}. Index it: cam[i]."
            )
        heatmap = heatmap.heatmap[0]
    hm = np.asarray(heatmap)
    if hm.ndim == 3 and hm.shape[0] == 1:
        hm = hm[0]
    if hm.ndim != 2:
        raise InputError(
            f"overlay expects a heatmap (h, w). Received: {describe_array('heatmap', hm)}"
        )
    if not np.isfinite(hm).all():
        raise InputError(
            "overlay expects a finite heatmap. Received: "
            f"{describe_array('heatmap', hm)} with {int((~np.isfinite(hm)).sum())} NaN or "
            "inf value(s). Expected values in [0, 1], as a GradCAM's heatmap."
        )
    # Float rounding may leave a hair outside [0, 1]; anything more is another scale,
    # which clipping would hide (as an image outside value_range, it is refused).
    if hm.size and (float(hm.min()) < -1e-3 or float(hm.max()) > 1 + 1e-3):
        raise InputError(
            f"overlay expects a heatmap in [0, 1]. Received: values in "
            f"[{float(hm.min()):.4g}, {float(hm.max()):.4g}]. Expected [0, 1], as a "
            "GradCAM's heatmap (divide a raw map by its maximum)."
        )
    base = as_rgb(image, "overlay", value_range)
    heat = colorize(resize_bilinear(hm, base.shape[:2]).clip(0, 1), colormap).astype(np.float32)
    return np.clip(alpha * heat + base, 0, 255).astype(np.uint8)
