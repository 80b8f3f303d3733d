"""Hypothesis strategies over the bundled scenes (``convviz_check.examples``).

For property tests of what a model looks at: a drawn :class:`Scene` holds the image,
the class of each object, its box and its mask, *and* the parameters it was rendered
from, so a test can move the object (:meth:`Scene.moved`) or swap the background
(:meth:`Scene.with_background`) and compare the heatmaps of the two renderings.

Use hypothesis for what must *always* hold (translation equivariance, class
specificity, background invariance); assert *rates* (pointing game over a sample) on
a fixed seeded sample instead (``examples.make_scenes(n, seed)``): hypothesis would
hunt down the failing tail and make CI red by design.

No Keras is imported here.

Example (a test module)::

    from hypothesis import given
    import convviz_check as cc
    from convviz_check import strategies as cst

    @given(cst.scenes(objects=1))
    def test_peak_stays_on_a_new_background(scene):
        cam = cc.gradcam(model, scene.with_background(7).floats[None])
        assert cc.localization.pointing_game(cam, scene.boxes[0], tolerance_px=8)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from hypothesis import strategies as st

from .errors import InputError
from .examples.scenes import CLASS_NAMES, MAX_SIZE, MIN_CONTRAST, MIN_SIZE, render_scene
from .types import Box

__all__ = ["ObjectSpec", "Scene", "object_specs", "render", "scenes"]

# The bundled models' last feature maps are 8x8 at 64 px (examples/train.py): one
# Grad-CAM cell is 8 px, and an object must span >= 2 cells to be resolvable.
DEFAULT_CELL_PX = 8
# Objects are kept this far apart (px) so each box is its own target; make_scenes uses 4.
OBJECT_GAP = 4
# make_scenes draws object colours >= MIN_CONTRAST (L1 over RGB) from the background's
# base colour. Here the base is estimated as the mean background pixel, which differs
# from it by the blotches' and stripes' means (a few units per channel); the margin
# keeps drawn scenes inside the training distribution.
CONTRAST_MARGIN = 30


@dataclass(frozen=True)
class ObjectSpec:
    """One object: class index, top-left corner ``(y0, x0)`` of its square, side, RGB
    colour, and whether a triangle points down."""

    cls: int
    y0: int
    x0: int
    size: int
    colour: tuple[int, int, int]
    flip: bool = False

    def moved(self, dy: int, dx: int) -> ObjectSpec:
        return replace(self, y0=self.y0 + dy, x0=self.x0 + dx)


@dataclass(frozen=True, eq=False)
class Scene:
    """One rendered scene and the parameters behind it.

    Attributes:
        image: ``(H, W, 3)`` uint8.
        labels: class index of each object (order of ``objects``).
        boxes: tight half-open box of each object's visible pixels.
        masks: ``(k, H, W)`` bool, one mask per object.
        objects: the :class:`ObjectSpec` of each object.
        background_seed: seed of the background texture and pixel noise.
    """

    image: np.ndarray
    labels: tuple[int, ...]
    boxes: tuple[Box, ...]
    masks: np.ndarray
    objects: tuple[ObjectSpec, ...]
    background_seed: int

    @property
    def floats(self) -> np.ndarray:
        """The image as float32 in [0, 1] (the bundled models' input)."""
        return self.image.astype(np.float32) / np.float32(255.0)

    @property
    def label(self) -> int:
        """The first object's class."""
        return self.labels[0]

    @property
    def image_size(self) -> int:
        return int(self.image.shape[0])

    def fits(self, dy: int, dx: int) -> bool:
        """Whether every object moved by ``(dy, dx)`` stays inside the image."""
        n = self.image_size
        return all(
            0 <= o.y0 + dy <= n - o.size and 0 <= o.x0 + dx <= n - o.size for o in self.objects
        )

    def moved(self, dy: int, dx: int) -> Scene:
        """The same scene with every object moved by ``(dy, dx)`` pixels (same
        background and noise)."""
        if not self.fits(dy, dx):
            raise InputError(
                f"Moving the objects by (dy={dy}, dx={dx}) leaves the {self.image_size}-px "
                f"image. Received: objects={self.objects}"
            )
        return render(
            [o.moved(dy, dx) for o in self.objects], self.background_seed, self.image_size
        )

    def with_background(self, background_seed: int) -> Scene:
        """The same objects on another background (texture and noise)."""
        return render(self.objects, background_seed, self.image_size)


def render(objects: Sequence[ObjectSpec], background_seed: int, image_size: int = 64) -> Scene:
    """Render objects (non-overlapping) on the background of ``background_seed``.

    ``render_scene`` draws one object; its background and pixel noise depend on the
    seed only (documented), so a multi-object scene is the first object's rendering
    with every further object's pixels taken from its own rendering on the same seed.
    """
    if not objects:
        raise InputError("A scene needs at least one object. Received: objects=[]")
    singles = [
        render_scene(
            o.cls,
            (o.y0, o.x0),
            o.size,
            o.colour,
            background_seed,
            image_size=image_size,
            flip=o.flip,
        )
        for o in objects
    ]
    image = singles[0].images[0].copy()
    masks = [s.masks[0][0].copy() for s in singles]
    for k in range(1, len(singles)):
        image[masks[k]] = singles[k].images[0][masks[k]]
        for j in range(k):  # a later object hides what it covers (as make_scenes draws)
            masks[j] &= ~masks[k]
    boxes = []
    for k, m in enumerate(masks):
        if not m.any():
            raise InputError(
                f"Object {k} is hidden by later objects. Received: objects={tuple(objects)}"
            )
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        boxes.append(Box(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1))
    return Scene(
        image=image,
        labels=tuple(int(o.cls) for o in objects),
        boxes=tuple(boxes),
        masks=np.stack(masks),
        objects=tuple(objects),
        background_seed=int(background_seed),
    )


def _background_mean(background_seed: int, image_size: int) -> np.ndarray:
    """Mean background colour of a seed (a 4-px object rendered in a corner, masked out)."""
    probe = render_scene(0, (0, 0), 4, (0, 0, 0), background_seed, image_size=image_size)
    keep = ~probe.masks[0][0]
    return probe.images[0][keep].astype(np.float64).mean(axis=0)


def _contrasting(colour: tuple[int, int, int], background: np.ndarray) -> tuple[int, int, int]:
    """``colour``, pushed channel by channel to the far end of [0, 255] from the
    background until its L1 contrast reaches MIN_CONTRAST + CONTRAST_MARGIN.

    A deterministic repair rather than a filter: hypothesis never has to reject a draw,
    and shrinking still moves towards simple colours.
    """
    c = np.array(colour, dtype=np.float64)
    need = MIN_CONTRAST + CONTRAST_MARGIN
    # channels with the most room to gain first
    far = np.where(background > 127.5, 0.0, 255.0)
    order = np.argsort(-(np.abs(far - background) - np.abs(c - background)), kind="stable")
    for ch in order:
        if np.abs(c - background).sum() >= need:
            break
        c[ch] = far[ch]
    return (int(c[0]), int(c[1]), int(c[2]))


def _class_indices(classes: Sequence[int | str] | None) -> list[int]:
    if classes is None:
        return list(range(len(CLASS_NAMES)))
    out = []
    for c in classes:
        if isinstance(c, str) and c in CLASS_NAMES:
            out.append(CLASS_NAMES.index(c))
        elif (
            isinstance(c, int | np.integer)
            and not isinstance(c, bool)
            and 0 <= c < len(CLASS_NAMES)
        ):
            out.append(int(c))
        else:
            raise InputError(
                f"Unknown class. Received: {c!r}. Expected an index in "
                f"[0, {len(CLASS_NAMES)}) or one of {CLASS_NAMES}."
            )
    if not out:
        raise InputError("classes must name at least one class. Received: classes=[]")
    return out


def _apart(a: ObjectSpec, b: ObjectSpec, gap: int) -> bool:
    return (
        a.y0 + a.size + gap <= b.y0
        or b.y0 + b.size + gap <= a.y0
        or a.x0 + a.size + gap <= b.x0
        or b.x0 + b.size + gap <= a.x0
    )


def _size_range(
    image_size: int, min_size: int | None, max_size: int | None, cell_px: int, n_objects: int
) -> tuple[int, int]:
    lo = max(MIN_SIZE, 2 * cell_px) if min_size is None else int(min_size)
    hi = MAX_SIZE if max_size is None else int(max_size)
    # two objects side by side must fit with the gap
    hi = min(hi, image_size if n_objects == 1 else (image_size - OBJECT_GAP) // 2)
    if not 4 <= lo <= hi:
        raise InputError(
            "No object size fits. Received: "
            f"min_size={min_size}, max_size={max_size}, cell_px={cell_px}, "
            f"image_size={image_size}, objects={n_objects}. Expected 4 <= min_size <= max_size "
            "(the default minimum is two feature-map cells, 2 * cell_px)."
        )
    return lo, hi


@st.composite
def object_specs(
    draw: st.DrawFn,
    n_objects: int = 1,
    *,
    classes: Sequence[int | str] | None = None,
    distinct_classes: bool = False,
    image_size: int = 64,
    min_size: int | None = None,
    max_size: int | None = None,
    cell_px: int = DEFAULT_CELL_PX,
    background_seed: int = 0,
) -> tuple[ObjectSpec, ...]:
    """``n_objects`` non-overlapping objects (gap :data:`OBJECT_GAP` px) for a scene on
    ``background_seed``, their colours contrasting with that background.

    Sizes default to [max(12, 2 * cell_px), 28] px: at least two feature-map cells.
    """
    pool = _class_indices(classes)
    if distinct_classes and len(set(pool)) < n_objects:
        raise InputError(
            f"distinct_classes needs {n_objects} classes. Received: classes={classes!r}"
        )
    lo, hi = _size_range(image_size, min_size, max_size, cell_px, n_objects)
    background = _background_mean(background_seed, image_size)
    placed: list[ObjectSpec] = []
    for _ in range(n_objects):
        choices = [c for c in pool if not (distinct_classes and c in {p.cls for p in placed})]
        cls = draw(st.sampled_from(choices))
        size = draw(st.integers(lo, hi))
        # Positions are drawn among those that keep the gap to earlier objects, so the
        # draw never has to be rejected.
        free = [
            (y, x)
            for y in range(0, image_size - size + 1)
            for x in range(0, image_size - size + 1)
            if all(_apart(ObjectSpec(cls, y, x, size, (0, 0, 0)), p, OBJECT_GAP) for p in placed)
        ]
        if not free:  # the first object left no room at this size: shrink it
            size = lo
            free = [
                (y, x)
                for y in range(0, image_size - size + 1)
                for x in range(0, image_size - size + 1)
                if all(
                    _apart(ObjectSpec(cls, y, x, size, (0, 0, 0)), p, OBJECT_GAP) for p in placed
                )
            ]
        y0, x0 = draw(st.sampled_from(free))
        raw = draw(st.tuples(*[st.integers(0, 255)] * 3))
        flip = draw(st.booleans())
        placed.append(ObjectSpec(cls, y0, x0, size, _contrasting(raw, background), flip))
    return tuple(placed)


@st.composite
def scenes(
    draw: st.DrawFn,
    objects: int | Sequence[int] = (1, 2),
    *,
    classes: Sequence[int | str] | None = None,
    distinct_classes: bool = True,
    image_size: int = 64,
    min_size: int | None = None,
    max_size: int | None = None,
    cell_px: int = DEFAULT_CELL_PX,
    background_seeds: st.SearchStrategy[int] | None = None,
) -> Scene:
    """Scenes of the bundled generator with drawn classes, sizes, positions, colours
    and backgrounds.

    Args:
        objects: number of objects (1 or 2), or the choices to draw it from.
        classes: restrict the classes (indices or names of ``CLASS_NAMES``).
        distinct_classes: in two-object scenes, the objects have different classes
            (what class-specificity tests need).
        image_size: side in pixels (the bundled models take 64).
        min_size, max_size: object side bounds; the default minimum is two
            feature-map cells (``2 * cell_px``, 16 px for the bundled 8x8 maps).
        cell_px: feature-map cell size in input pixels.
        background_seeds: strategy for the background seed (default 0 .. 2**16 - 1).

    Returns:
        A strategy of :class:`Scene`.

    Example:
        >>> from hypothesis import given
        >>> @given(scenes(objects=2))
        ... def test_two(scene):
        ...     assert len(scene.boxes) == 2
    """
    counts = [objects] if isinstance(objects, int) else list(objects)
    if not counts or any(isinstance(k, bool) or k not in (1, 2) for k in counts):
        raise InputError(f"objects must be 1 or 2 (or a choice of them). Received: {objects!r}")
    n = draw(st.sampled_from(counts))
    seed = draw(background_seeds if background_seeds is not None else st.integers(0, 2**16 - 1))
    specs = draw(
        object_specs(
            n,
            classes=classes,
            distinct_classes=distinct_classes and n > 1,
            image_size=image_size,
            min_size=min_size,
            max_size=max_size,
            cell_px=cell_px,
            background_seed=seed,
        )
    )
    return render(specs, seed, image_size)
