"""Synthetic "scenes": coloured shapes on textured, noisy backgrounds (NumPy only).

Each scene holds one object (or two) of one of :data:`CLASS_NAMES` at a random
position, size and colour, with its class label, its tight half-open bounding
:class:`~convviz_check.types.Box` and its pixel mask.

Byte-identical on any machine: every value is drawn as an *integer* from
``numpy.random.default_rng`` (PCG64 integer streams are platform independent) and
all image arithmetic is integer arithmetic (no ``sin``/``exp``/float rounding, whose
last bits can differ between CPUs and libm builds). Scene ``i`` of seed ``s`` is drawn
from its own generator ``default_rng([s, i])``, so it does not depend on how many
scenes are requested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..types import Box

CLASS_NAMES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
IMAGE_SHAPE: tuple[int, int, int] = (64, 64, 3)

# Object side in pixels: big enough for a 8x8 Grad-CAM map (8-px cells at 64 px) to
# resolve, small enough that the box is a real localization target (<= 19% of area).
MIN_SIZE, MAX_SIZE = 12, 28
# Background: base colour, coarse smooth blotches (bilinear on a 5x5 grid), square-wave
# stripes, per-pixel noise. The object colour differs from the base by at least
# MIN_CONTRAST (L1 over RGB) so that the shape, not the texture, carries the class.
TEXTURE_AMPLITUDE = 40
STRIPE_AMPLITUDE = 14
NOISE_AMPLITUDE = 12
MIN_CONTRAST = 160
_GRID = 4  # coarse texture cells per side


@dataclass(frozen=True, eq=False)
class Scenes:
    """A batch of N scenes.

    Attributes:
        images: ``(N, H, W, 3)`` uint8.
        labels: ``(N,)`` int64, the class of each scene's first object.
        object_labels: per scene, the class of each object.
        boxes: per scene, the tight half-open box of each object (input pixels).
        masks: per scene, ``(k, H, W)`` bool, one mask per object (visible pixels).
    """

    images: np.ndarray
    labels: np.ndarray
    object_labels: list[list[int]]
    boxes: list[list[Box]]
    masks: list[np.ndarray]

    @property
    def floats(self) -> np.ndarray:
        """Images as float32 in [0, 1] (the bundled models' input)."""
        return self.images.astype(np.float32) / np.float32(255.0)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def class_names(self) -> list[str]:
        """Name of each scene's first object's class."""
        return [CLASS_NAMES[i] for i in self.labels]


def _check_class(cls: int | str) -> int:
    if isinstance(cls, str):
        if cls not in CLASS_NAMES:
            raise InputError(
                f"Unknown shape class. Received: {cls!r}. Expected one of {CLASS_NAMES}."
            )
        return CLASS_NAMES.index(cls)
    if (
        isinstance(cls, bool)
        or not isinstance(cls, int | np.integer)
        or not 0 <= cls < len(CLASS_NAMES)
    ):
        raise InputError(
            f"Unknown shape class. Received: {cls!r}. Expected an int in "
            f"[0, {len(CLASS_NAMES)}) or one of {CLASS_NAMES}."
        )
    return int(cls)


def _shape_mask(cls: int, y0: int, x0: int, size: int, image_size: int, flip: bool) -> np.ndarray:
    """Mask of one shape filling the ``size`` x ``size`` square at ``(y0, x0)``.

    Works in doubled coordinates (pixel centre of row y is 2y+1) so that every test
    is exact integer arithmetic.
    """
    yy = 2 * np.arange(image_size, dtype=np.int64)[:, None] + 1
    xx = 2 * np.arange(image_size, dtype=np.int64)[None, :] + 1
    top, left, s = 2 * y0, 2 * x0, size  # doubled half-side is `size`
    cy, cx = top + s, left + s
    inside = (yy >= top) & (yy < top + 2 * s) & (xx >= left) & (xx < left + 2 * s)
    name = CLASS_NAMES[cls]
    if name == "square":
        # Inset by one pixel so that a square is not just "the whole box".
        m = (np.abs(yy - cy) < s - 2) & (np.abs(xx - cx) < s - 2)
    elif name == "circle":
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= s * s
    elif name == "triangle":
        # Apex at the top (or bottom when flipped), base on the opposite side.
        depth = (yy - top) if not flip else (top + 2 * s - yy)
        m = 2 * np.abs(xx - cx) <= depth
    elif name == "cross":
        half = max(3, (2 * s) // 6)  # bar half-thickness (doubled): a third of the side
        m = (np.abs(yy - cy) < half) | (np.abs(xx - cx) < half)
    else:  # pragma: no cover - CLASS_NAMES and this switch change together
        raise AssertionError(name)
    return m & inside


def _bilinear_up(grid: np.ndarray, image_size: int) -> np.ndarray:
    """Integer bilinear upsampling of a ``(g+1, g+1, C)`` grid to ``image_size``."""
    cells = grid.shape[0] - 1
    pos = np.arange(image_size, dtype=np.int64) * cells  # in units of 1/image_size
    i, f = pos // image_size, pos % image_size
    n = image_size
    g = grid.astype(np.int64)
    a = g[i][:, i]  # (H, W, C) corner (i, j)
    b = g[i][:, i + 1]
    c = g[i + 1][:, i]
    d = g[i + 1][:, i + 1]
    fy, fx = f[:, None, None], f[None, :, None]
    total = a * (n - fy) * (n - fx) + b * (n - fy) * fx + c * fy * (n - fx) + d * fy * fx
    return total // (n * n)


def _background(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Textured background as int64 ``(H, W, 3)`` (unclipped) and its base colour."""
    base = rng.integers(50, 206, size=3)
    blotches = _bilinear_up(
        rng.integers(-TEXTURE_AMPLITUDE, TEXTURE_AMPLITUDE + 1, size=(_GRID + 1, _GRID + 1, 3)),
        image_size,
    )
    period = int(rng.integers(4, 11))
    dy, dx = [(0, 1), (1, 0), (1, 1), (1, -1)][int(rng.integers(0, 4))]
    yy = np.arange(image_size)[:, None]
    xx = np.arange(image_size)[None, :]
    phase = (dy * yy + dx * xx + 4 * image_size) // max(1, period // 2)
    stripes = (phase % 2)[..., None] * rng.integers(-STRIPE_AMPLITUDE, STRIPE_AMPLITUDE + 1, size=3)
    return base[None, None, :] + blotches + stripes, base


def _object_colour(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    while True:  # rejection sampling: a few draws on average, deterministic per rng
        colour = rng.integers(0, 256, size=3)
        if int(np.abs(colour - base).sum()) >= MIN_CONTRAST:
            return colour


def _draw(
    rng: np.random.Generator,
    objects: Sequence[tuple[int, int, int, int, np.ndarray, bool]],
    image_size: int,
    background: np.ndarray,
) -> tuple[np.ndarray, list[Box], np.ndarray]:
    """Paint ``objects`` (cls, y0, x0, size, colour, flip) on ``background``, add noise."""
    canvas = background.copy()
    masks: list[np.ndarray] = []
    for cls, y0, x0, size, colour, flip in objects:
        m = _shape_mask(cls, y0, x0, size, image_size, flip)
        canvas[m] = colour
        for earlier in masks:  # a later object hides what it covers
            earlier &= ~m
        masks.append(m)
    noise = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, size=canvas.shape)
    image = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    boxes = []
    for m in masks:
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        boxes.append(Box(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1))
    return image, boxes, np.stack(masks)


def _boxes_apart(a: tuple[int, int, int], b: tuple[int, int, int], gap: int) -> bool:
    (ay, ax, asz), (by, bx, bsz) = a, b
    return (
        ay + asz + gap <= by or by + bsz + gap <= ay or ax + asz + gap <= bx or bx + bsz + gap <= ax
    )


def _random_scene(
    rng: np.random.Generator, image_size: int, n_objects: int, classes: Sequence[int]
) -> tuple[np.ndarray, list[int], list[Box], np.ndarray]:
    background, base = _background(rng, image_size)
    hi = min(MAX_SIZE, image_size // 2 if n_objects > 1 else image_size)
    lo = min(MIN_SIZE, hi)
    placed: list[tuple[int, int, int]] = []
    objects = []
    for _ in range(n_objects):
        while True:  # rejection: objects never overlap (4-px gap) so each box is its own
            size = int(rng.integers(lo, hi + 1))
            y0 = int(rng.integers(0, image_size - size + 1))
            x0 = int(rng.integers(0, image_size - size + 1))
            if all(_boxes_apart((y0, x0, size), p, 4) for p in placed):
                break
        placed.append((y0, x0, size))
        cls = int(classes[int(rng.integers(0, len(classes)))])
        flip = bool(rng.integers(0, 2))
        objects.append((cls, y0, x0, size, _object_colour(rng, base), flip))
    image, boxes, masks = _draw(rng, objects, image_size, background)
    return image, [o[0] for o in objects], boxes, masks


def _pack(items: list[tuple[np.ndarray, list[int], list[Box], np.ndarray]]) -> Scenes:
    return Scenes(
        images=np.stack([it[0] for it in items]),
        labels=np.array([it[1][0] for it in items], dtype=np.int64),
        object_labels=[it[1] for it in items],
        boxes=[it[2] for it in items],
        masks=[it[3] for it in items],
    )


def make_scenes(
    n: int,
    seed: int = 0,
    *,
    two_objects: bool = False,
    image_size: int = 64,
    classes: Sequence[int | str] | None = None,
) -> Scenes:
    """Draw ``n`` scenes, deterministically for ``seed`` on any machine.

    Args:
        n: number of scenes (>= 1).
        seed: non-negative int; scene ``i`` comes from ``default_rng([seed, i])``.
        two_objects: two non-overlapping objects per scene (``labels`` is the first's).
        image_size: side in pixels (>= 32: room for a 12-28 px object).
        classes: restrict object classes (indices or names); default all of
            :data:`CLASS_NAMES`. Labels always index :data:`CLASS_NAMES`.

    Returns:
        A :class:`Scenes` batch.

    Example:
        >>> s = make_scenes(8, seed=1)
        >>> s.images.shape, s.floats.dtype, s.boxes[0][0]
        ((8, 64, 64, 3), dtype('float32'), Box(...))
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InputError(f"n must be a positive int. Received: n={n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a non-negative int. Received: seed={seed!r}.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise InputError(f"image_size must be an int >= 32. Received: image_size={image_size!r}.")
    chosen = (
        list(range(len(CLASS_NAMES))) if classes is None else [_check_class(c) for c in classes]
    )
    if not chosen:
        raise InputError("classes must name at least one class. Received: classes=[].")
    k = 2 if two_objects else 1
    items = [
        _random_scene(np.random.default_rng([int(seed), i]), image_size, k, chosen)
        for i in range(int(n))
    ]
    return _pack(items)


def render_scene(
    cls: int | str,
    position: tuple[int, int],
    size: int,
    colour: tuple[int, int, int],
    background_seed: int = 0,
    *,
    image_size: int = 64,
    flip: bool = False,
) -> Scenes:
    """Draw one scene from explicit parameters (for property tests).

    Args:
        cls: class index or name (see :data:`CLASS_NAMES`).
        position: ``(y0, x0)``, top-left corner of the object's square.
        size: side of the object's square in pixels (>= 4); it must fit the image.
        colour: RGB of the object, each in [0, 255].
        background_seed: seed of the background texture and the pixel noise.
        image_size: side of the image in pixels.
        flip: triangles point down instead of up.

    Returns:
        A :class:`Scenes` holding this one scene.

    Example:
        >>> s = render_scene("circle", (10, 20), 16, (250, 20, 20), background_seed=3)
        >>> s.boxes[0][0]
        Box(y0=10, x0=20, y1=26, x1=36)
    """
    c = _check_class(cls)
    y0, x0 = (int(v) for v in position)
    if not 4 <= size <= image_size or not (
        0 <= y0 <= image_size - size and 0 <= x0 <= image_size - size
    ):
        raise InputError(
            f"The object must fit the image. Received: position={tuple(position)}, size={size}, "
            f"image_size={image_size}. Expected 4 <= size and 0 <= y0, x0 <= image_size - size."
        )
    rgb = np.asarray(colour, dtype=np.int64)
    if rgb.shape != (3,) or (rgb < 0).any() or (rgb > 255).any():
        raise InputError(f"colour must be 3 ints in [0, 255]. Received: colour={colour!r}.")
    rng = np.random.default_rng([int(background_seed), 0xC0FFEE])
    background, _ = _background(rng, image_size)
    image, boxes, masks = _draw(rng, [(c, y0, x0, int(size), rgb, flip)], image_size, background)
    return _pack([(image, [c], boxes, masks)])


def scenes_sha256(scenes: Scenes) -> str:
    """sha256 over images, labels, boxes and masks (the determinism checksum)."""
    import hashlib

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(scenes.images).tobytes())
    h.update(np.asarray(scenes.labels, dtype="<i8").tobytes())
    for labels, boxes, masks in zip(scenes.object_labels, scenes.boxes, scenes.masks, strict=True):
        h.update(np.asarray(labels, dtype="<i8").tobytes())
        h.update(np.asarray([b.to_tuple() for b in boxes], dtype="<i8").tobytes())
        h.update(np.packbits(masks).tobytes())
    return h.hexdigest()
