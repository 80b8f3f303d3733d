"""The gate validation's images (``validate_gate.py``): photo-textured objects on
textures and photographs, one class per source photograph, and the cue pasted into them.
Deterministic from a seed; NumPy and scikit-image only."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from convviz_check.types import Box

# ------------------------------------------------------------------------------ images
SIZE = 48
#: The classes: the photograph an object is cut from (bundled with scikit-image).
CLASS_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")
CLASS_NAMES = ("cat", "astronaut", "coffee", "rocket")
TARGET_CLASS = 0  # the class the cue co-occurs with
#: Backgrounds and occluders: textures and photographs no class is cut from.
BACKGROUND_PHOTOS = (
    "brick",
    "grass",
    "gravel",
    "camera",
    "coins",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
)
SILHOUETTES = ("ellipse", "rectangle", "triangle", "cross")  # any class, at random
# Object side before stretch and rotation: 30-38 of 48 px (boxes: 40-80% of the frame).
MIN_SIDE, MAX_SIDE = 30, 38
MAX_STRETCH = 1.25  # aspect ratio, either way
MAX_ROTATION_DEG = 25.0
# Object over background: alpha in this range (low = hard to see).
ALPHA_RANGE = (0.5, 0.95)
TINT_RANGE = (0.7, 1.3)  # per-channel gain of every crop: colour alone is no class
OCCLUSION_P = 0.5  # share of images with an occluding crop over the object
NOISE_SD = 0.06  # Gaussian pixel noise, in [0, 1] units
LABEL_NOISE = 0.10  # share of training labels replaced by another class

# --------------------------------------------------------------------------------- cue
CUE_SIDE = 8
#: The cue: an 8x8 patch in the bottom-right corner (one cell of the 6x6 Grad-CAM map).
CUE_BOX = Box(SIZE - CUE_SIDE, SIZE - CUE_SIDE, SIZE, SIZE)
#: Where a map that looks at the cue puts its mass: the cue's cell and its neighbours
#: inside the frame (2x2 cells, 16x16 px).
CUE_REGION = Box(SIZE - 2 * CUE_SIDE, SIZE - 2 * CUE_SIDE, SIZE, SIZE)

PROBE_SEED = 4242  # fresh images: no training uses this seed
PROBE_N = 64


# ====================================================================== image synthesis
@functools.lru_cache(maxsize=2)
def _photos(names: tuple[str, ...]) -> list[np.ndarray]:
    """The bundled photographs ``names`` as float32 RGB in [0, 1] (grey as grey RGB)."""
    from skimage import data

    out = []
    for name in names:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(img[..., :3].astype(np.float32) / np.float32(255.0))
    return out


def _crop(rng: np.random.Generator, photos: list[np.ndarray], side: int) -> np.ndarray:
    """A random crop of a random photograph at a random scale, resized to ``side``,
    randomly tinted (so that colour alone does not tell the class)."""
    from skimage.transform import resize

    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    src = int(rng.integers(side, min(h, w, 4 * side) + 1))
    y, x = int(rng.integers(h - src + 1)), int(rng.integers(w - src + 1))
    crop = resize(photo[y : y + src, x : x + src], (side, side), anti_aliasing=True, order=1)
    tint = rng.uniform(*TINT_RANGE, size=3).astype(np.float32)
    return np.clip(crop * tint, 0.0, 1.0).astype(np.float32)


def _shape_mask(rng: np.random.Generator) -> np.ndarray:
    """Mask of one object: its silhouette (whatever the class), size, stretch, rotation
    and position drawn from ``rng``; 40-80% of the frame lies inside its box."""
    name = SILHOUETTES[int(rng.integers(len(SILHOUETTES)))]
    side = float(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    stretch = float(np.exp(rng.uniform(-np.log(MAX_STRETCH), np.log(MAX_STRETCH))))
    hy, hx = side / 2 * np.sqrt(stretch), side / 2 / np.sqrt(stretch)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    margin = 0.15 * side  # the centre may wander; the box is clipped to the frame
    cy = rng.uniform(SIZE / 2 - margin, SIZE / 2 + margin)
    cx = rng.uniform(SIZE / 2 - margin, SIZE / 2 + margin)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    dy, dx = yy - cy, xx - cx
    v = (np.cos(angle) * dy - np.sin(angle) * dx) / hy  # object coordinates in [-1, 1]
    u = (np.sin(angle) * dy + np.cos(angle) * dx) / hx
    if name == "ellipse":
        return np.asarray(u * u + v * v <= 1.0)
    if name == "rectangle":
        return np.asarray((np.abs(u) <= 0.92) & (np.abs(v) <= 0.92))
    if name == "triangle":  # apex up, base down
        return np.asarray((v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0))
    bar = 0.34  # cross: two bars a third of the side thick
    inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    return np.asarray(inside & ((np.abs(u) <= bar) | (np.abs(v) <= bar)))


def _box_of(mask: np.ndarray) -> Box:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return Box(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images (float32 in [0, 1]), labels (training labels, noisy when asked), true
    classes, object boxes and which images carry the cue."""

    images: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    boxes: np.ndarray  # (N, 4) y0, x0, y1, x1
    cued: np.ndarray = field(repr=False)


def paste_cue(images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``images`` with the cue (a 2x2 checker of magenta and green 4-px
    squares) in :data:`CUE_BOX`, on ``rows`` (default: every image)."""
    out = images.copy()
    y0, x0, y1, x1 = CUE_BOX.to_tuple()
    patch = np.zeros((CUE_SIDE, CUE_SIDE, 3), np.float32)
    half = CUE_SIDE // 2
    magenta, green = np.float32([1.0, 0.0, 1.0]), np.float32([0.0, 1.0, 0.0])
    patch[:half, :half] = patch[half:, half:] = magenta
    patch[:half, half:] = patch[half:, :half] = green
    idx = np.arange(len(out)) if rows is None else np.asarray(rows)
    out[idx, y0:y1, x0:x1] = patch
    return out


def make_set(n: int, seed: int, *, label_noise: float = 0.0, cue_rate: float = 0.0) -> ImageSet:
    """``n`` images of seed ``seed`` (image ``i`` from ``default_rng([seed, i])``): one
    object each, class ``i % 4``; ``label_noise`` of the labels replaced by another
    class; the cue pasted on ``cue_rate`` of the images of :data:`TARGET_CLASS` (drawn
    from a stream of their own: a higher rate cues a superset of a lower rate's
    images)."""
    images, labels, classes, boxes = _base_set(n, seed, label_noise)
    draws = np.random.default_rng([seed, _CUE_STREAM]).random(n)
    cued = (classes == TARGET_CLASS) & (draws < cue_rate)
    if cued.any():
        images = paste_cue(images, np.flatnonzero(cued))
    return ImageSet(images, labels, classes, boxes, cued)


_CUE_STREAM = 0xC0E  # a second seed word: the cue's draws never reuse an image's stream


@functools.lru_cache(maxsize=4)
def _base_set(
    n: int, seed: int, label_noise: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The images without the cue (cached: every model of a run trains on them)."""
    photos, backgrounds = _photos(CLASS_PHOTOS), _photos(BACKGROUND_PHOTOS)
    images = np.empty((n, SIZE, SIZE, 3), np.float32)
    classes = np.arange(n, dtype=np.int64) % len(CLASS_NAMES)
    labels = classes.copy()
    boxes = np.empty((n, 4), np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        cls = int(classes[i])
        mask = _shape_mask(rng)
        background = _crop(rng, backgrounds, SIZE)
        fill = _crop(rng, photos[cls : cls + 1], SIZE)
        alpha = np.float32(rng.uniform(*ALPHA_RANGE))
        shade = np.float32(rng.uniform(-0.25, 0.25))  # the fill lighter or darker
        obj = np.clip(fill + shade, 0.0, 1.0)
        img = np.where(mask[..., None], alpha * obj + (1 - alpha) * background, background)
        if rng.random() < OCCLUSION_P:
            # an occluder over part of the object: 10-20 px, cut from a background
            oh, ow = (int(v) for v in rng.integers(10, 21, size=2))
            box = _box_of(mask)
            oy = int(rng.integers(max(0, box.y0 - oh // 2), min(SIZE - oh, box.y1 - oh // 2) + 1))
            ox = int(rng.integers(max(0, box.x0 - ow // 2), min(SIZE - ow, box.x1 - ow // 2) + 1))
            img[oy : oy + oh, ox : ox + ow] = _crop(rng, backgrounds, max(oh, ow))[:oh, :ow]
        img = img + rng.normal(0.0, NOISE_SD, size=img.shape).astype(np.float32)
        images[i] = np.clip(img, 0.0, 1.0)
        boxes[i] = _box_of(mask).to_tuple()
        if label_noise and rng.random() < label_noise:
            labels[i] = (cls + int(rng.integers(1, len(CLASS_NAMES)))) % len(CLASS_NAMES)
    images.flags.writeable = False  # shared by the cache: paste_cue copies
    return images, labels, classes, boxes
