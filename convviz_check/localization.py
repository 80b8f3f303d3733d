"""Does a heatmap land on the object? Pointing game, energy, IoU, the Grad-CAM box.

Pure NumPy (plus Pillow for bilinear resizing and scikit-image / SciPy for connected
regions and distances, both imported lazily): no Keras, no framework, so the CLI and
the parent of a cross-backend run can measure maps without importing either.

Conventions:

- ``heatmap`` is an ``(h, w)`` array (or ``(1, h, w)``) or a one-image
  :class:`~convviz_check.types.GradCAM`, which knows its ``image_shape``.
- ``target`` is a half-open :class:`~convviz_check.types.Box` in input-image pixels or
  a boolean mask ``(H, W)``.
- The measuring resolution is ``image_shape`` if given, else the GradCAM's
  ``image_shape``, else the mask's shape, else (a Box without an image shape) the
  heatmap's own shape: such a heatmap is taken to be at image resolution. The heatmap
  is resized there with bilinear interpolation before measuring.
- All-zero heatmaps (no positive value): pointing game ``False``, energy ``0.0``,
  IoU ``0.0``, :func:`heatmap_box` ``None``.
- Degenerate GradCAM maps (the class score barely depends on the layer) are
  stored as zeros, so they are measured as all-zero maps: never a hit, no energy, no
  overlap. This makes a localization *rate* over a sample count them as misses, which
  is what they are. :func:`assert_localized` goes further and fails on them with
  "degenerate" in the message, since no localization claim can rest on such a map.
- Ties at the max: the pointing game is a hit only if *every* tied pixel is inside
  the target (within ``tolerance_px``); a flat map cannot "point".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import storage
from .errors import InputError, LocalizationError, describe_array
from .heatmaps import Heatmaps
from .report.localization import failure_text, overlay_figure
from .types import Box, GradCAM, Localization, MetricResult, Outcome

__all__ = [
    "DEFAULT_THRESHOLD",
    "Localization",
    "assert_localized",
    "energy_in_box",
    "heatmap_box",
    "iou",
    "judge_localized",
    "measure",
    "pointing_game",
]

# Grad-CAM paper (Selvaraju et al., arXiv:1610.02391, sec. 4.1): "we threshold
# Grad-CAM at 15% of the max intensity" before taking the box of the largest segment.
DEFAULT_THRESHOLD = 0.15

# Pixels within this relative distance of the max count as tied. Bilinear resizing is
# done in float32 (Pillow mode "F"), and two cells with the same value can come out a
# few ulps apart after resizing (float32 eps = 1.2e-7); 1e-6 absorbs that and nothing
# a map could mean.
_TIE_RTOL = 1e-6


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Map:
    """A heatmap at its own resolution plus what its source knows about it."""

    values: np.ndarray  # (h, w) float32, finite
    image_shape: tuple[int, int] | None  # from a GradCAM
    degenerate: bool


def _as_map(heatmap: Any) -> _Map:
    """One heatmap, by the one heatmap rule (:meth:`Heatmaps.of`): a constant map,
    all zeros included, is degenerate and measured as all zeros."""
    maps = Heatmaps.of(heatmap, role="heatmap")
    if len(maps) != 1:
        raise InputError(
            "Localization metrics take one heatmap. Received "
            f"{describe_array('heatmap', maps.maps)}: {len(maps)} maps. Index a GradCAM "
            "(cam[i]) or pass one (h, w) map."
        )
    if isinstance(heatmap, GradCAM):
        _shape2(heatmap.image_shape, "cam.image_shape")
    return _Map(maps.maps[0], maps.image_shape, bool(maps.degenerate[0]))


def _shape2(shape: Any, name: str) -> tuple[int, int]:
    """(H, W) from (H, W) or (H, W, C); positive ints."""
    try:
        if isinstance(shape, str | bytes):
            raise TypeError(shape)
        dims = tuple(int(d) for d in shape)
        ok = (
            len(dims) in (2, 3)
            and all(d > 0 for d in dims)
            and all(float(d) == float(s) for d, s in zip(dims, shape, strict=True))
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(
            f"{name} must be (H, W) (or (H, W, C)) of positive ints. Received: {name}={shape!r}"
        )
    return dims[0], dims[1]


def _mask_of(target: Any) -> np.ndarray:
    mask = np.asarray(target)
    if mask.ndim != 2:
        raise LocalizationError(
            "target must be a Box or a boolean mask (H, W). Received: "
            f"{describe_array('target', mask)}"
        )
    if mask.dtype != np.bool_:
        values = np.unique(mask) if np.issubdtype(mask.dtype, np.number) else None
        if values is None or not np.isin(values, (0, 1)).all():
            raise LocalizationError(
                "A target mask must be boolean (or hold only 0 and 1). Received: "
                f"{describe_array('target', mask)}"
            )
        mask = mask.astype(bool)
    if not mask.any():
        raise LocalizationError(
            "The target mask is empty: there is no object to land on. Received: "
            f"{describe_array('target', mask)} with 0 pixels set"
        )
    return mask


def _prepare(
    heatmap: Any, target: Any, image_shape: Any
) -> tuple[np.ndarray, np.ndarray, _Map, Box | None]:
    """Heatmap resized to the measuring resolution, the target as a mask there, the
    parsed map, and the target Box (None for a mask)."""
    hm = _as_map(heatmap)
    explicit = None if image_shape is None else _shape2(image_shape, "image_shape")
    if isinstance(target, Box):
        shape = explicit or hm.image_shape or hm.values.shape
        _check_box_inside(target, shape)
        mask = np.zeros(shape, dtype=bool)
        mask[target.y0 : target.y1, target.x0 : target.x1] = True
        box: Box | None = target
    else:
        mask = _mask_of(target)
        for known, name in ((explicit, "image_shape"), (hm.image_shape, "cam.image_shape")):
            if known is not None and mask.shape != known:
                raise LocalizationError(
                    f"The target mask must have the image's shape {known} ({name}). "
                    f"Received: {describe_array('target', mask)}"
                )
        shape = mask.shape
        box = None
    return _at(hm.values, shape), mask, hm, box


def _check_box_inside(box: Box, shape: tuple[int, int]) -> None:
    h, w = shape
    if box.y0 < 0 or box.x0 < 0 or box.y1 > h or box.x1 > w:
        raise LocalizationError(
            f"The target box lies (partly) outside the {h}x{w} image. Received: {box}. "
            f"Expected 0 <= y0 < y1 <= {h} and 0 <= x0 < x1 <= {w} (half-open, "
            "input-image pixels; pass image_shape when the heatmap is not at image "
            "resolution)"
        )


def _at(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The heatmap at ``shape`` (bilinear), float32."""
    if tuple(values.shape) == tuple(shape):
        return values
    from .render import resize_bilinear

    return resize_bilinear(values, shape)


def _tolerance(tolerance_px: Any) -> float:
    if (
        isinstance(tolerance_px, bool)
        or not isinstance(tolerance_px, int | float | np.integer | np.floating)
        or not math.isfinite(float(tolerance_px))
        or tolerance_px < 0
    ):
        raise InputError(
            f"tolerance_px must be a finite number >= 0. Received: tolerance_px={tolerance_px!r}"
        )
    return float(tolerance_px)


def _threshold(threshold: Any) -> float:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float | np.integer | np.floating)
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise InputError(
            "threshold is a fraction of the heatmap's max and must be in [0, 1]. "
            f"Received: threshold={threshold!r}"
        )
    return float(threshold)


# --------------------------------------------------------------------------- metrics
def _peak_pixels(values: np.ndarray) -> np.ndarray | None:
    """``(k, 2)`` (row, col) of every pixel tied at the max, or None if none is > 0."""
    peak = float(values.max())
    if peak <= 0.0:
        return None
    return np.argwhere(values >= peak * (1.0 - _TIE_RTOL))


def _distance_to_target(pixels: np.ndarray, mask: np.ndarray, box: Box | None) -> np.ndarray:
    """Euclidean distance in pixels from each (row, col) to the nearest target pixel."""
    rows, cols = pixels[:, 0], pixels[:, 1]
    if box is not None:
        dy = np.maximum.reduce([box.y0 - rows, np.zeros_like(rows), rows - (box.y1 - 1)])
        dx = np.maximum.reduce([box.x0 - cols, np.zeros_like(cols), cols - (box.x1 - 1)])
        return np.hypot(dy, dx)
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~mask)[rows, cols]


def pointing_game(
    heatmap: Any, target: Box | np.ndarray, image_shape: Any = None, tolerance_px: float = 0
) -> bool:
    """Whether the heatmap's maximum falls on the target (Zhang et al.'s pointing game).

    Args:
        heatmap: ``(h, w)`` array or a one-image ``GradCAM``.
        target: a :class:`~convviz_check.Box` (input-image pixels) or a bool mask ``(H, W)``.
        image_shape: ``(H, W)`` the target refers to (see the module docstring).
        tolerance_px: a peak pixel within this Euclidean distance (pixels) of the
            target still counts as inside (the original pointing game used 15 px).

    Returns:
        ``True`` if every pixel tied at the max lies in the target (within the
        tolerance); ``False`` for an all-zero or degenerate map.

    Example:
        >>> hm = np.zeros((4, 4)); hm[1, 2] = 1.0
        >>> pointing_game(hm, Box(0, 2, 2, 4))
        True
    """
    values, mask, _, box = _prepare(heatmap, target, image_shape)
    tol = _tolerance(tolerance_px)
    pixels = _peak_pixels(values)
    if pixels is None:
        return False
    if tol == 0.0:
        return bool(mask[pixels[:, 0], pixels[:, 1]].all())
    return bool((_distance_to_target(pixels, mask, box) <= tol).all())


def energy_in_box(heatmap: Any, target: Box | np.ndarray, image_shape: Any = None) -> float:
    """Share of the heatmap's positive mass inside the target (energy-based pointing game,
    Wang et al., Score-CAM, 2020).

    Args:
        heatmap: ``(h, w)`` array or a one-image ``GradCAM``.
        target: Box or bool mask ``(H, W)``.
        image_shape: ``(H, W)`` the target refers to.

    Returns:
        ``sum(max(h, 0) inside) / sum(max(h, 0))`` in [0, 1]; ``0.0`` for an all-zero or
        degenerate map.

    Example:
        >>> energy_in_box(np.array([[1.0, 3.0]]), Box(0, 1, 1, 2))
        0.75
    """
    values, mask, _, _ = _prepare(heatmap, target, image_shape)
    positive = np.maximum(values, 0.0).astype(np.float64)
    total = float(positive.sum())
    if total <= 0.0:
        return 0.0
    return float(min(1.0, positive[mask].sum() / total))


def _region(values: np.ndarray, threshold: float) -> np.ndarray | None:
    peak = float(values.max())
    if peak <= 0.0:
        return None
    return values >= threshold * peak


def iou(
    heatmap: Any,
    target: Box | np.ndarray,
    image_shape: Any = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> float:
    """Intersection over union of the heatmap's region at or above ``threshold x max``
    and the target.

    Args:
        heatmap: ``(h, w)`` array or a one-image ``GradCAM``.
        target: Box or bool mask ``(H, W)``.
        image_shape: ``(H, W)`` the target refers to.
        threshold: fraction of the max that defines the region (0.15: Grad-CAM paper).

    Returns:
        IoU in [0, 1]; ``0.0`` for an all-zero or degenerate map.

    Example:
        >>> iou(np.array([[1.0, 1.0, 0.0, 0.0]]), Box(0, 1, 1, 3))
        0.3333333333333333
    """
    thr = _threshold(threshold)
    values, mask, _, _ = _prepare(heatmap, target, image_shape)
    region = _region(values, thr)
    if region is None:
        return 0.0
    inter = int(np.count_nonzero(region & mask))
    union = int(np.count_nonzero(region | mask))
    return inter / union


def heatmap_box(
    heatmap: Any, threshold: float = DEFAULT_THRESHOLD, *, image_shape: Any = None
) -> Box | None:
    """The Grad-CAM paper's localization box: threshold the map at ``threshold x max``
    and take the bounding box of the largest connected region (8-connectivity).

    The box is in the pixels of ``image_shape`` if given, else of a GradCAM's image,
    else of the array itself. Among regions of equal size the one holding more heatmap
    mass wins, then the first in row-major order.

    Args:
        heatmap: ``(h, w)`` array or a one-image ``GradCAM``.
        threshold: fraction of the max (0.15 in the paper).
        image_shape: ``(H, W)`` to resize the heatmap to first.

    Returns:
        A half-open :class:`~convviz_check.Box`, or ``None`` for an all-zero or
        degenerate map.

    Example:
        >>> hm = np.zeros((5, 5)); hm[1:3, 1:4] = 1.0; hm[4, 4] = 1.0
        >>> heatmap_box(hm)
        Box(y0=1, x0=1, y1=3, x1=4)
    """
    thr = _threshold(threshold)
    hm = _as_map(heatmap)
    shape = (
        _shape2(image_shape, "image_shape") if image_shape is not None else hm.image_shape
    ) or hm.values.shape
    values = _at(hm.values, shape)
    region = _region(values, thr)
    if region is None:
        return None
    return _largest_region_box(region, values)


def _largest_region_box(region: np.ndarray, values: np.ndarray) -> Box:
    from skimage.measure import label

    labels = label(region, connectivity=2)
    n = int(labels.max())
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    mass = np.bincount(labels.ravel(), weights=values.ravel().astype(np.float64), minlength=n + 1)[
        1:
    ]
    # lexsort: last key is primary -> largest size, then most mass, then lowest label.
    best = int(np.lexsort((np.arange(n), -mass, -sizes))[0]) + 1
    rows, cols = np.nonzero(labels == best)
    return Box(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)


# --------------------------------------------------------------------------- assertion
def measure(
    heatmap: Any,
    target: Box | np.ndarray,
    image_shape: Any = None,
    *,
    tolerance_px: float = 0,
    threshold: float = DEFAULT_THRESHOLD,
) -> Localization:
    """All localization metrics at once (one resize), as a :class:`Localization`.

    Example:
        >>> hm = np.zeros((4, 4)); hm[1, 1] = 1.0
        >>> measure(hm, Box(0, 0, 2, 2)).pointing
        True
    """
    thr = _threshold(threshold)
    tol = _tolerance(tolerance_px)
    values, mask, hm, box = _prepare(heatmap, target, image_shape)
    positive = np.maximum(values, 0.0).astype(np.float64)
    total = float(positive.sum())
    pixels = _peak_pixels(values)
    region = _region(values, thr)
    if pixels is None or region is None:
        pointing, energy, overlap, hbox = False, 0.0, 0.0, None
        pixels = np.zeros((0, 2), dtype=np.int64)
    else:
        pointing = bool((_distance_to_target(pixels, mask, box) <= tol).all())
        energy = float(min(1.0, positive[mask].sum() / total))
        overlap = np.count_nonzero(region & mask) / np.count_nonzero(region | mask)
        hbox = _largest_region_box(region, values)
    return Localization(
        pointing=pointing,
        energy=energy,
        iou=float(overlap),
        peaks=pixels,
        target_box=box if box is not None else _bounding_box(mask),
        heatmap_box=hbox,
        image_shape=(int(mask.shape[0]), int(mask.shape[1])),
        degenerate=hm.degenerate,
    )


def _bounding_box(mask: np.ndarray) -> Box:
    rows, cols = np.nonzero(mask)
    return Box(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)


def _bound(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InputError(f"{name} must be a number in [0, 1] or None. Received: {name}={value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise InputError(f"{name} must be in [0, 1]. Received: {name}={value!r}")
    return float(value)


def judge_localized(
    cam_or_heatmap: Any,
    target: Box | np.ndarray,
    pointing: bool = True,
    min_energy: float | None = None,
    min_iou: float | None = None,
    *,
    image: np.ndarray | None = None,
    image_shape: Any = None,
    tolerance_px: float = 0,
    threshold: float = DEFAULT_THRESHOLD,
) -> Outcome:
    """Judge whether a heatmap lands on ``target``; :func:`assert_localized` is this
    judgment, raised when it fails. Same arguments as :func:`assert_localized`.

    Returns:
        An :class:`~convviz_check.types.Outcome` (judgment ``"localization"``): the
        metrics ``pointing`` (1 for a hit), ``energy`` and ``iou`` against the bounds
        asked for (a metric not asked for is reported without a bound), the facts of
        the one image, and the overlay picture (heatmap over ``image`` or grey, target
        in green, the heatmap's box in cyan, the peak in magenta).
    """
    e_min = _bound(min_energy, "min_energy")
    i_min = _bound(min_iou, "min_iou")
    if not pointing and e_min is None and i_min is None:
        raise InputError(
            "assert_localized has nothing to assert. Received: pointing=False, "
            "min_energy=None, min_iou=None. Expected pointing=True or a bound."
        )
    if image_shape is None and image is not None and not isinstance(cam_or_heatmap, GradCAM):
        if isinstance(target, Box):
            image_shape = np.shape(image)[:2]
    result = measure(
        cam_or_heatmap, target, image_shape, tolerance_px=tolerance_px, threshold=threshold
    )
    hm = _as_map(cam_or_heatmap)
    failures = []
    if result.degenerate and isinstance(cam_or_heatmap, GradCAM):
        failures.append(
            "the Grad-CAM map is degenerate (the class score barely depends on the "
            "layer; the map is all zeros): it cannot localize anything"
        )
    elif result.degenerate:
        failures.append("the heatmap is constant (all zero or flat): it points nowhere")
    metrics = {
        "pointing": MetricResult.judge(
            "pointing", float(result.pointing), 1.0 if pointing else None, "min"
        ),
        "energy": MetricResult.judge("energy", result.energy, e_min, "min"),
        "iou": MetricResult.judge("iou", result.iou, i_min, "min"),
    }
    if pointing and not result.pointing and not failures:
        failures.append("pointing game missed: the peak is outside the target")
    if e_min is not None and not metrics["energy"].ok:
        failures.append(f"energy in target {result.energy:.3f} < min_energy {e_min:.3f}")
    if i_min is not None and not metrics["iou"].ok:
        failures.append(f"IoU {result.iou:.3f} < min_iou {i_min:.3f} (threshold {threshold})")
    box_target = isinstance(target, Box)
    mask = None if box_target else _mask_of(target)
    picture = overlay_figure(hm.values, result, mask, image)
    facts = _facts(result, tolerance_px, threshold)
    if failures:
        lead = "Heatmap is not localized on the target: " + "; ".join(failures) + "."
        message = failure_text(result, failures, tolerance_px, box_target)
        return Outcome(
            "localization", "failed", lead, message, metrics, {"image": facts}, {"overlay": picture}
        )
    lead = (
        f"the heatmap lands on the target (pointing {'hit' if result.pointing else 'not asked'}"
        f", energy {result.energy:.3f}, IoU {result.iou:.3f})"
    )
    return Outcome(
        "localization", "passed", lead, "", metrics, {"image": facts}, {"overlay": picture}
    )


def _facts(result: Localization, tolerance_px: float, threshold: float) -> dict[str, Any]:
    return {
        "pointing": result.pointing,
        "energy": result.energy,
        "iou": result.iou,
        "peak": [[int(r), int(c)] for r, c in result.peaks[:5]],
        "target_box": list(result.target_box.to_tuple()),
        "heatmap_box": None if result.heatmap_box is None else list(result.heatmap_box.to_tuple()),
        "image_shape": list(result.image_shape),
        "degenerate": result.degenerate,
        "tolerance_px": tolerance_px,
        "threshold": threshold,
    }


def assert_localized(
    cam_or_heatmap: Any,
    target: Box | np.ndarray,
    pointing: bool = True,
    min_energy: float | None = None,
    min_iou: float | None = None,
    *,
    image: np.ndarray | None = None,
    image_shape: Any = None,
    tolerance_px: float = 0,
    threshold: float = DEFAULT_THRESHOLD,
    results_dir: str | Path | None = None,
    name: str = "localization",
) -> None:
    """Assert that a heatmap lands on ``target``.

    Checks the pointing game (``pointing=True``), a minimum energy in the target and a
    minimum IoU, as requested; a degenerate map (a degenerate GradCAM, or a constant
    map) always fails (it says nothing). On failure, the ``AssertionError`` gives the
    peak vs the target box, the energy, the IoU and the heatmap's own box, and, when
    ``results_dir`` is given, an overlay PNG (heatmap on ``image``, or on grey, with
    the target drawn in green, the heatmap box in cyan and the peak in magenta) is
    saved there as ``<name>.png`` and its path is named in the message. In a test, the
    fixture's ``convviz.assert_localized`` also records the result in the report.

    Args:
        cam_or_heatmap: one-image ``GradCAM`` or ``(h, w)`` array.
        target: Box (input-image pixels) or bool mask ``(H, W)``.
        pointing: require a pointing-game hit.
        min_energy: require at least this share of positive mass in the target.
        min_iou: require at least this IoU of the thresholded region with the target.
        image: the input image, for the overlay only.
        image_shape: ``(H, W)`` the target refers to (defaults as in the metrics;
            ``image``'s shape when given and nothing else says).
        tolerance_px: pointing-game tolerance in pixels.
        threshold: region threshold (fraction of the max) for IoU and the box.
        results_dir: where to save the overlay on failure.
        name: file stem of the overlay (sanitized; ``/`` makes subfolders).

    Raises:
        AssertionError: a requested property does not hold.
        LocalizationError: the target is invalid for the image.

    Example:
        >>> hm = np.zeros((8, 8)); hm[2, 3] = 1.0
        >>> assert_localized(hm, Box(0, 0, 4, 4), min_energy=0.9)  # passes silently
    """
    __tracebackhide__ = True
    outcome = judge_localized(
        cam_or_heatmap,
        target,
        pointing,
        min_energy,
        min_iou,
        image=image,
        image_shape=image_shape,
        tolerance_px=tolerance_px,
        threshold=threshold,
    )
    if outcome.ok:
        return
    message = outcome.message
    if results_dir is not None:
        path = save_picture(Path(results_dir), name, outcome.pictures["overlay"])
        message += f"\n  overlay: {path}"
    raise AssertionError(message)


def save_picture(results_dir: Path, name: str, picture: np.ndarray) -> Path:
    """Write ``picture`` into ``results_dir`` as ``<name>.png`` (each part of ``name``
    sanitized; ``/`` makes subfolders)."""
    parts = [storage.sanitize_part(p) for p in str(name).replace("\\", "/").split("/") if p]
    rel = Path(*parts) if parts else Path("localization")
    return storage.write_png(results_dir / rel.parent / f"{rel.name}.png", picture)
