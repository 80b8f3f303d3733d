"""Pictures of golden checks: previews, expected / obtained / diff images, and the small
thumbnail of the inputs that heatmaps are drawn over.

- Heatmaps are drawn over their input image when a thumbnail of the inputs is known
  (the golden keeps one next to it as ``<check>.inputs.png``): a bare 4x4 colour tile
  says little, the same tile over the face says where the model looks.
- A diff is scaled to its own maximum (``|expected - obtained|`` / its max), so a small
  real change is as visible as a large one; the scale is returned and printed beside
  the image (a 3% weight change gave diffs whose brightest pixel was 8-19 of 255 on a
  fixed scale: black to the eye).

NumPy, Pillow and matplotlib colormaps only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict, TypeVar, Unpack

import numpy as np
from PIL import Image

from .. import storage
from ..artifacts import Artifact
from ..render import (
    activation_grid,
    as_rgb,
    colorize,
    deprocess_image,
    filter_grid,
    inferred_range,
    overlay,
)
from .labels import corner_label

# Small maps (7x7 Grad-CAM) are upscaled (nearest) to at least this many pixels per
# side so that cells stay visible in the report.
MIN_TILE = 96
MAX_TILES = 8
THUMBNAIL_SIDE = 64
_GAP = 2
T = TypeVar("T")


# --------------------------------------------------------------------------- helpers
def _upscale(img: np.ndarray, min_side: int = MIN_TILE) -> np.ndarray:
    h, w = img.shape[:2]
    k = max(1, int(np.ceil(min_side / max(1, min(h, w)))))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1) if k > 1 else img


def _hstack(tiles: list[np.ndarray], gap: int = 0) -> np.ndarray:
    """Tiles (uint8) side by side with gaps of grey level ``gap`` (black by default)."""
    rgb = [t if t.ndim == 3 else np.stack([t] * 3, axis=-1) for t in tiles]
    h = max(t.shape[0] for t in rgb)
    w = sum(t.shape[1] for t in rgb) + _GAP * (len(rgb) - 1)
    out = np.full((h, w, 3), gap, np.uint8)
    x = 0
    for t in rgb:
        out[: t.shape[0], x : x + t.shape[1]] = t[..., :3]
        x += t.shape[1] + _GAP
    return out


def _unit(a: np.ndarray, scale: float | None = None) -> np.ndarray:
    """``a / scale`` clipped to [0, 1]; ``scale`` defaults to max |a| (0 -> zeros)."""
    a = np.nan_to_num(np.asarray(a, np.float64))
    s = float(np.max(np.abs(a))) if scale is None else float(scale)
    return np.clip(a / s, 0, 1) if s > 0 else np.zeros_like(a)


def _tile_channels(x: np.ndarray, per_row: int = 16) -> np.ndarray:
    """(H, W, C) values in [0, 1] -> uint8 grid laid out like ``activation_grid``."""
    h, w, c = x.shape
    cols = min(per_row, c)
    rows = int(np.ceil(c / cols))
    grid = np.zeros((rows * (h + 1) - 1, cols * (w + 1) - 1), np.uint8)
    for k in range(c):
        r, q = divmod(k, cols)
        grid[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = np.round(
            x[:, :, k] * 255
        ).astype(np.uint8)
    return grid


def _heatmaps(g: Artifact) -> np.ndarray:
    hm = np.asarray(g.arrays["heatmap" if g.layout == "gradcam" else "value"], np.float32)
    while hm.ndim > 3:
        hm = hm[..., 0] if hm.shape[-1] == 1 else hm[0]
    return hm[None] if hm.ndim == 2 else hm


def _activation_of(g: Artifact, layer: str | None) -> tuple[str, np.ndarray]:
    v = g.to_value()
    if isinstance(v, dict):
        name = layer if layer in v else next(iter(v))
        return name, np.asarray(v[name], np.float32)
    return "value", np.asarray(v, np.float32)


def _one_image(a: np.ndarray) -> np.ndarray:
    """One image's activation as (H, W, C)."""
    while a.ndim > 3:
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim == 1:
        a = a[None, :, None]
    return a


def _patterns(g: Artifact) -> list[np.ndarray]:
    a = np.asarray(g.arrays["value"])
    if a.ndim == 3:
        a = a[None]
    if a.ndim == 2:
        a = a[None, ..., None]
    return [
        p.astype(np.uint8) if a.dtype == np.uint8 else deprocess_image(p, crop=0)
        for p in a[: 8 * MAX_TILES]
    ]


# --------------------------------------------------------------------------- thumbnails
def inputs_thumbnail(images: np.ndarray) -> np.ndarray:
    """A strip of square RGB tiles (``THUMBNAIL_SIDE`` px) of the first images, uint8:
    what a golden keeps of its inputs to draw heatmaps over. The range of the whole
    batch is inferred as overlays infer it (uint8 and [0, 255] integers, [0, 1] and
    [-1, 1] floats; other floats their own min..max)."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    arr = np.nan_to_num(arr)
    value_range = inferred_range(arr)
    tiles = []
    for img in arr[:MAX_TILES]:
        rgb = as_rgb(img, "inputs_thumbnail", value_range).clip(0, 255).astype(np.uint8)
        side = THUMBNAIL_SIDE
        tile = Image.fromarray(rgb).resize((side, side), Image.Resampling.BILINEAR)
        tiles.append(np.asarray(tile))
    return np.concatenate(tiles, axis=1)


def thumbnail_tiles(strip: np.ndarray | None) -> list[np.ndarray]:
    """The tiles of a strip written by :func:`inputs_thumbnail` (square tiles)."""
    if strip is None or strip.ndim != 3 or strip.shape[0] == 0:
        return []
    side = strip.shape[0]
    return [strip[:, i : i + side] for i in range(0, strip.shape[1] - side + 1, side)]


def _heat_tiles(
    maps: np.ndarray,
    scale: float,
    colormap: str,
    under: Sequence[np.ndarray | None] | None = None,
    gap: int = 0,
    marks: Marks | None = None,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """One tile per map (at most ``MAX_TILES``): over its input tile when there is one,
    with the marks of that image (``marks``: ``(image_shape, per-map boxes or None,
    regions)``) drawn on it and its label (the image's index) in its corner."""
    tiles = []
    for i, m in enumerate(maps[:MAX_TILES]):
        unit = _unit(m, scale)
        base_image = under[i] if under and i < len(under) else None
        if base_image is not None:
            base = np.asarray(
                Image.fromarray(base_image).resize((MIN_TILE, MIN_TILE), Image.Resampling.BILINEAR)
            )
            tile = overlay(base, unit, colormap=colormap)
        else:
            tile = _upscale(colorize(unit, colormap))
        if marks is not None:
            shape, boxes, regions = marks
            box = None if boxes is None or i >= len(boxes) else boxes[i]
            # the diff's brightest cells are near white: its box is green
            colour = DIFF_BOX_COLOUR if colormap == "magma" else BOX_COLOUR
            tile = draw_marks(tile, shape, box, regions, colour)
        if labels is not None and i < len(labels):
            tile = corner_label(tile, labels[i])
        tiles.append(tile)
    return _hstack(tiles, gap)


# (image_shape, one object box per drawn map or None, the suspect regions' boxes)
Marks = tuple[tuple[int, int], Sequence[Sequence[int]] | None, Sequence[Sequence[int]]]
# The object box is drawn solid white (green on a diff, whose largest values are near
# white), each suspect region dashed cyan: they read on the jet and magma colormaps, and
# a dashed line is not taken for the object's box.
BOX_COLOUR = (255, 255, 255)
DIFF_BOX_COLOUR = (0, 230, 0)
REGION_COLOUR = (0, 255, 255)
_DASH = 4


def draw_marks(
    tile: np.ndarray,
    image_shape: tuple[int, int],
    box: Sequence[int] | None,
    regions: Sequence[Sequence[int]] = (),
    box_colour: tuple[int, int, int] = BOX_COLOUR,
) -> np.ndarray:
    """A copy of ``tile`` (uint8 RGB, a picture of an ``image_shape`` input) with the
    object ``box`` (y0, x0, y1, x1 in input pixels) outlined solid (``box_colour``) and
    each region dashed cyan, scaled to the tile. A box outside the image is clipped."""
    out = np.array(tile[..., :3] if tile.ndim == 3 else np.stack([tile] * 3, -1), np.uint8)
    h, w = out.shape[:2]
    sy, sx = h / max(1, image_shape[0]), w / max(1, image_shape[1])
    for coords, colour, dash in [(r, REGION_COLOUR, _DASH) for r in regions] + (
        [(box, box_colour, 0)] if box is not None else []
    ):
        y0, x0, y1, x1 = (int(v) for v in coords)
        top, left = min(h - 1, round(y0 * sy)), min(w - 1, round(x0 * sx))
        bottom, right = max(top, min(h, round(y1 * sy)) - 1), max(left, min(w, round(x1 * sx)) - 1)
        # 2 px lines on a report tile (96 px): 1 px vanished over a hot spot (seen).
        for inset in range(2 if min(h, w) >= 64 else 1):
            sides = _outline(
                top + inset, left + inset, max(top, bottom - inset), max(left, right - inset)
            )
            for line in sides:
                for k, (y, x) in enumerate(line):
                    if not dash or (k // dash) % 2 == 0:
                        out[y, x] = colour
    return out


def _outline(top: int, left: int, bottom: int, right: int) -> list[list[tuple[int, int]]]:
    """The four sides of a rectangle as pixel runs (each side one run, so dashes start
    at its corner)."""
    return [
        [(top, x) for x in range(left, right + 1)],
        [(bottom, x) for x in range(left, right + 1)],
        [(y, left) for y in range(top, bottom + 1)],
        [(y, right) for y in range(top, bottom + 1)],
    ]


# --------------------------------------------------------------------------- pictures
def picture(
    g: Artifact,
    layer: str | None = None,
    inputs: np.ndarray | None = None,
    *,
    order: Sequence[int] | None = None,
    under: Sequence[np.ndarray | None] | None = None,
    marks: bool = False,
) -> np.ndarray:
    """A uint8 picture of an artifact (previews and expected/obtained images).

    Heatmaps: "jet" colormap over the inputs' thumbnail (``inputs``, a strip from
    :func:`inputs_thumbnail`) when given, up to 8 side by side (``order``: which
    images, in that order, each over its tile of ``under`` when given); with ``marks``
    each image's object box and the suspect regions the artifact holds; activations:
    the channel grid of one layer (``layer`` or the first) for the first image;
    patterns: the filter grid.
    """
    if g.kind == "heatmap":
        maps = _heatmaps(g)
        top = float(np.max(maps)) if maps.size else 0.0
        tiles = list(under) if under is not None else thumbnail_tiles(inputs)
        picked, drawn = _picked(g, maps, order, marks)
        labels = None if order is None else [str(i) for i in order]
        return _heat_tiles(
            picked, 1.0 if top <= 1.0 else top, "jet", tiles, marks=drawn, labels=labels
        )
    if g.kind == "pattern":
        return _upscale(filter_grid(np.stack(_patterns(g)), cols=8, margin=2), 64)
    _, a = _activation_of(g, layer)
    return _upscale(activation_grid(_one_image(a)), 64)


def _picked(
    g: Artifact, maps: np.ndarray, order: Sequence[int] | None, marks: bool
) -> tuple[np.ndarray, Marks | None]:
    """The maps ``order`` picks (all without one) and their marks when asked for."""
    picked = maps if order is None else maps[[i for i in order if 0 <= i < len(maps)]]
    if not marks:
        return picked, None
    shape = tuple(g.attrs.get("image_shape") or ()) or tuple(maps.shape[-2:])
    if not all(shape):
        shape = tuple(maps.shape[-2:])
    boxes = g.boxes
    if boxes is not None and order is not None:
        boxes = boxes[[i for i in order if 0 <= i < len(boxes)]]
    regions = [box.to_tuple() for box in (g.regions or {}).values()]
    if boxes is None and not regions:
        return picked, None
    return picked, (
        (int(shape[0]), int(shape[1])),
        None if boxes is None else boxes.tolist(),
        regions,
    )


def under_tiles(
    order: Sequence[int], strip: np.ndarray | None, images: np.ndarray | None = None
) -> list[np.ndarray | None]:
    """The input tile of each image of ``order``: from the images themselves when at
    hand, else from a stored thumbnail strip (which holds the first ``MAX_TILES``
    images only: a later image gets none, its map drawn alone)."""
    if images is not None:
        try:
            batch = np.asarray(images)
            batch = batch[None] if batch.ndim == 3 else batch
            picked = [i for i in order if 0 <= i < len(batch)]
            if len(picked) == len(order) and picked:
                return list(thumbnail_tiles(inputs_thumbnail(batch[picked])))
        except Exception:  # noqa: BLE001 - a thumbnail is only a picture
            pass
    tiles = thumbnail_tiles(strip)
    return [tiles[i] if 0 <= i < len(tiles) else None for i in order]


def preview(g: Artifact, inputs: np.ndarray | None = None) -> np.ndarray | None:
    """The golden's ``.png`` preview, or None when no picture can be drawn (a preview
    is for humans and never compared, so it never fails a write)."""
    try:
        return picture(g, inputs=inputs)
    except Exception:  # noqa: BLE001 - any odd shape just has no preview
        return None


def diff_image(
    expected: Artifact,
    obtained: Artifact,
    layer: str | None = None,
    order: Sequence[int] | None = None,
) -> tuple[np.ndarray, float] | None:
    """``|expected - obtained|`` as a picture scaled to its own maximum, with that
    maximum (white means this much), or None when the two cannot be aligned.

    Heatmaps: "magma", one tile per image; activations: the channel grid of one layer
    for the first image; patterns: the grey mean over channels of the deprocessed
    images (grey levels of 255).
    """
    if expected.kind != obtained.kind:
        return None
    if expected.kind == "heatmap":
        e, o = _heatmaps(expected), _heatmaps(obtained)
        if e.shape != o.shape:
            return None
        d = np.abs(e - o)
        scale = float(d.max()) if d.size else 0.0
        picked, drawn = _picked(obtained, d, order, marks=order is not None)
        # White gaps: a diff is mostly near-black, where black gaps would not show.
        labels = None if order is None else [str(i) for i in order]
        return _heat_tiles(picked, scale, "magma", gap=255, marks=drawn, labels=labels), scale
    if expected.kind == "pattern":
        ep, op = _patterns(expected), _patterns(obtained)
        if len(ep) != len(op) or any(a.shape != b.shape for a, b in zip(ep, op, strict=True)):
            return None
        diffs = [
            np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=-1)
            for a, b in zip(ep, op, strict=True)
        ]
        scale = max(float(d.max()) for d in diffs) if diffs else 0.0
        tiles = [(_unit(d, scale) * 255).astype(np.uint8)[..., None] for d in diffs]
        return _upscale(filter_grid(np.stack(tiles), cols=8, margin=2)[..., 0], 64), scale
    name, e = _activation_of(expected, layer)
    if obtained.layout == "activations" and name not in obtained.arrays:
        return None
    _, o = _activation_of(obtained, name)
    e, o = _one_image(e), _one_image(o)
    if e.shape != o.shape:
        return None
    d = np.abs(e - o)
    scale = float(d.max()) if d.size else 0.0
    return _upscale(_tile_channels(_unit(d, scale)), 64), scale


class ImageSources(TypedDict, total=False):
    """Where a check's pictures take their images from (keyword arguments, each may be
    left out): ``inputs`` and ``expected_inputs``, this run's and the golden's
    thumbnail strips; ``order``, the images to show, worst first (heatmaps); ``images``,
    the checked images when at hand (each image's own tile)."""

    inputs: np.ndarray | None
    expected_inputs: np.ndarray | None
    order: Sequence[int] | None
    images: np.ndarray | None


def write_check_images(
    out_base: str | os.PathLike[str],
    obtained: Artifact,
    expected: Artifact | None = None,
    layer: str | None = None,
    **sources: Unpack[ImageSources],
) -> tuple[dict[str, str], float | None]:
    """Write ``<out_base>.obtained.png`` and, with an expected artifact,
    ``.expected.png`` and ``.diff.png``; ``sources`` as :class:`ImageSources`.

    Heatmaps with an ``order`` (the images to show, worst first: see
    :func:`convviz_check.report.classes.picture_order`) show those images, each with
    its object box and the suspect regions drawn on it, over its own input tile
    (from ``images``, the checked inputs, when at hand, else the thumbnails).

    Returns:
        (role -> path of what was written, the diff's scale: the largest
        ``|expected - obtained|``, or None without a diff).
    """
    inputs, expected_inputs = sources.get("inputs"), sources.get("expected_inputs")
    order, images = sources.get("order"), sources.get("images")
    out_base = Path(out_base)
    written: dict[str, str] = {}
    pictures: dict[str, np.ndarray | None] = {}
    scale = None
    marks = order is not None and obtained.kind == "heatmap"
    seen = under_tiles(order, inputs, images) if marks and order is not None else None
    was = None
    if marks and order is not None:  # the golden's own thumbnails first: its images
        stored, current = under_tiles(order, expected_inputs), under_tiles(order, None, images)
        was = [s if s is not None else c for s, c in zip(stored, current, strict=True)]
    if expected is not None:
        pictures["expected"] = _safe(
            lambda: picture(expected, layer, expected_inputs, order=order, under=was, marks=marks)
        )
    pictures["obtained"] = _safe(
        lambda: picture(obtained, layer, inputs, order=order, under=seen, marks=marks)
    )
    if expected is not None:
        diff = _safe(lambda: diff_image(expected, obtained, layer, order if marks else None))
        if diff is not None:
            pictures["diff"], scale = diff
    for role, img in pictures.items():
        if img is not None:
            path = out_base.with_name(f"{out_base.name}.{role}.png")
            storage.write_png(path, img)
            written[role] = str(path)
    return written, scale


def _channel_scale(h: int, w: int, min_tile: int, max_width: int) -> tuple[int, int]:
    """(k, cols): the nearest-neighbour factor that makes an ``h x w`` tile at least
    ``min_tile`` px, and how many tiles (with their gaps, k px once enlarged) fit a row
    of ``max_width`` px, at most 16."""
    k = max(1, int(np.ceil(min_tile / max(1, min(h, w)))))
    return k, max(1, min(16, max_width // ((w + 1) * k)))


def _enlarge(grid: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(grid, k, axis=0), k, axis=1) if k > 1 else grid


def activation_preview(
    activation: np.ndarray, max_channels: int = 32, min_tile: int = 16, max_width: int = 1024
) -> np.ndarray:
    """One image's activation ``(H, W, C)`` as a channel grid that stays readable: the
    first ``max_channels`` channels, each standardized on its own
    (:func:`~convviz_check.render.activation_grid`), the grid enlarged (nearest) so a
    tile is at least ``min_tile`` px (a 2x2 map: 16x16, with 8 px gaps: a 1 px gap
    between 2x2 tiles shown 12 times larger could not be told from the tiles' own
    cells), rows no wider than ``max_width`` px. At most ``FEW_CHANNELS`` channels are
    one row of numbered tiles of at least ``FEW_CHANNEL_TILE`` px; a ``1x1`` map (one
    value per channel) is grey across its channels, not per channel (flat grey)."""
    a = np.asarray(activation, np.float32)[..., :max_channels]
    k, cols = _channel_scale(a.shape[0], a.shape[1], min_tile, max_width)
    if a.shape[0] * a.shape[1] == 1:  # one value per channel: grey across the channels
        grid = _tile_channels(_unit(a - a.min()), per_row=cols)
    else:
        grid = activation_grid(a, images_per_row=cols)
    return _few_channels(grid, a.shape) if _is_few(a.shape, max_width) else _enlarge(grid, k)


# A layer of few channels is drawn as one row of numbered tiles of at least this many
# px: a 2-channel 4x4 map came out 36x16 px, unreadable in the report (seen).
FEW_CHANNELS = 8
FEW_CHANNEL_TILE = 64


def _is_few(shape: tuple[int, ...], max_width: int) -> bool:
    """Whether an ``(h, w, c)`` map is drawn by :func:`_few_channels` (few channels, and
    their row of enlarged tiles fits ``max_width``)."""
    h, w, c = shape
    k = max(1, int(np.ceil(FEW_CHANNEL_TILE / max(1, min(h, w)))))
    return c <= FEW_CHANNELS and c * (w * k + _GAP) - _GAP <= max_width


def _few_channels(grid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The one-row channel grid of an ``(h, w, c)`` map (1 px gaps) as tiles of at
    least ``FEW_CHANNEL_TILE`` px, each numbered in its corner, on white gaps."""
    h, w, c = shape
    tiles = [_upscale(grid[:h, q * (w + 1) : q * (w + 1) + w], FEW_CHANNEL_TILE) for q in range(c)]
    rgb = [corner_label(np.stack([t] * 3, axis=-1), str(q)) for q, t in enumerate(tiles)]
    return _hstack(rgb, gap=255)


def activation_diff_preview(
    expected: np.ndarray,
    obtained: np.ndarray,
    max_channels: int = 32,
    min_tile: int = 16,
    max_width: int = 1024,
) -> tuple[np.ndarray, float]:
    """``|expected - obtained|`` of one image's activation, laid out as
    :func:`activation_preview` lays it out, scaled to its own maximum (returned: white
    means this much)."""
    d = np.abs(np.asarray(expected, np.float64) - np.asarray(obtained, np.float64))
    d = np.nan_to_num(d[..., :max_channels])
    scale = float(d.max()) if d.size else 0.0
    k, cols = _channel_scale(d.shape[0], d.shape[1], min_tile, max_width)
    grid = _tile_channels(_unit(d, scale), per_row=cols)
    few = _is_few(d.shape, max_width)
    return (_few_channels(grid, d.shape) if few else _enlarge(grid, k)), scale


def pattern_preview(patterns: list[np.ndarray], min_tile: int = 64) -> np.ndarray:
    """uint8 patterns ``(h, w, C)`` in a grid of 8 per row, each upscaled (nearest) to
    at least ``min_tile`` px; other than 3 channels are drawn grey (their mean)."""
    rgb = [
        p if p.shape[-1] == 3 else np.repeat(p.mean(axis=-1, keepdims=True), 3, -1).astype(np.uint8)
        for p in patterns
    ]
    return filter_grid(np.stack([_upscale(p, min_tile) for p in rgb]), cols=8, margin=2)


def pattern_diff_preview(
    expected: list[np.ndarray], obtained: list[np.ndarray], min_tile: int = 64
) -> tuple[np.ndarray, float] | None:
    """The mean over channels of ``|expected - obtained|`` of uint8 patterns, laid out
    as :func:`pattern_preview` lays them out, scaled to its own maximum (returned, in
    grey levels of 255); None when the patterns do not align."""
    if len(expected) != len(obtained) or any(
        a.shape != b.shape for a, b in zip(expected, obtained, strict=True)
    ):
        return None
    diffs = [
        np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=-1)
        for a, b in zip(expected, obtained, strict=True)
    ]
    scale = max((float(d.max()) for d in diffs), default=0.0)
    tiles = [(_unit(d, scale) * 255).astype(np.uint8)[..., None] for d in diffs]
    return pattern_preview(tiles, min_tile), scale


def _safe(make: Callable[[], T]) -> T | None:
    try:
        return make()
    except Exception:  # noqa: BLE001 - a picture must never hide the check's outcome
        return None
