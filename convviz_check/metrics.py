"""Comparison metrics: two artifacts in, one :class:`~convviz_check.types.Comparison` out.

Pure NumPy and scikit-image. This module decides nothing about pytest and
imports no Keras and no framework: the CLI and the parent process of a cross-backend
run use it without loading one.

Metrics per kind (names as they appear in ``Comparison.metrics``):

- ``"activation"`` (an array, or a dict layer -> array compared per layer):
  ``max_rel`` = max |e - o| / scale and ``mean_rel`` = mean |e - o| / scale, with
  ``scale = max(max |e|, activation_scale_floor)`` per layer. The metrics hold the
  worst layer's value (their ``note`` names it); every layer's values are in
  ``details["per_item"]``.
- ``"heatmap"`` (an ``(N, h, w)`` / ``(h, w)`` array, a ``GradCAM``, or a mapping with a
  ``"heatmap"`` key and optional ``"class_index"`` / ``"degenerate"``), per image:
  ``max_abs``, ``rms``, ``pearson``, ``ssim``, ``peak_shift`` (cells, Euclidean) and
  ``topk_iou`` (IoU of the top-10% cells), plus the counts ``degenerate_changed`` and
  (when both sides know their classes) ``class_changed``, both bounded by 0.
- ``"pattern"`` (``(F, H, W, C)`` filter images uint8 or float, one ``(H, W, C)`` or
  ``(H, W)`` image, or a dict of those), per filter: ``ssim`` and ``pearson``.

Over a batch each metric reports its worst item; the item with the worst violation
overall is named in ``details["worst_item"]`` and in the text.

These are the metrics of the ``exact`` gate profile. Under ``profile="retrain"`` only
heatmaps are judged (channels of two trainings do not correspond), on what survives an
independent retraining (:data:`~convviz_check.types.RETRAIN_METRICS`):
``spearman_mean`` and ``topk_iou_mean`` (per-image Spearman rank correlation and
top-10% IoU, averaged), ``class_agreement`` (share of images explaining the golden's
class) and, given object boxes, ``box_energy_drop_mean`` (mean energy in the box,
golden minus obtained), ``box_energy_drop`` (the largest per-image drop) and
``pointing_drop`` (pointing-game hits lost, as a share of the images).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import ComparisonError, LocalizationError, describe_array
from .measures import peak_cell, pearson, spearman, ssim_or_note, topk_iou
from .report.comparison import comparison_text
from .tolerances import DEFAULT_PROFILE, check_profile, resolve
from .types import (
    KINDS,
    METRICS,
    PROFILE_METRICS,
    Box,
    Comparison,
    GradCAM,
    MetricResult,
    Tolerance,
    bound_distance,
)

# Half an ulp of float16 relative to the value: 2**-11 (10-bit mantissa).
FLOAT16_REL_ROUNDING = 2.0**-11


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------
def compare(
    expected: Any,
    obtained: Any,
    kind: str,
    tolerance: Tolerance | Mapping[str, float] | None = None,
    *,
    cross_backend: bool = False,
    profile: str = DEFAULT_PROFILE,
    boxes: Any = None,
) -> Comparison:
    """Compare an obtained artifact with the expected one using the metrics of ``kind``.

    Args:
        expected: the reference (golden) artifact: an array, a dict of arrays
            (activations per layer, patterns per layer), a ``GradCAM`` or a mapping with
            a ``"heatmap"`` key (heatmaps).
        obtained: the artifact just computed, of the same structure, shape and dtype
            family (float / integer / bool) as ``expected``.
        kind: ``"activation"``, ``"heatmap"`` or ``"pattern"``.
        tolerance: a :class:`~convviz_check.types.Tolerance` (or a dict of its fields)
            whose set fields override the defaults of
            :func:`convviz_check.tolerances.default_tolerance`.
        cross_backend: use the cross-backend column of the default table (the two
            artifacts come from different backends).
        profile: ``"exact"`` (default: bounds at numerical noise) or ``"retrain"``
            (heatmaps only, judged on what survives a retraining; see the module
            docstring).
        boxes: the object box of each heatmap (a list of
            :class:`~convviz_check.types.Box` or an ``(N, 4)`` int array y0, x0, y1, x1
            in input-image pixels; see :func:`check_boxes`), for the ``retrain``
            profile's box metrics; ignored by ``exact``.

    Returns:
        A :class:`~convviz_check.types.Comparison`: ``metrics`` (name ->
        ``MetricResult``), ``passed``, ``degenerate`` (any degenerate map on each side),
        ``text`` (leading with the plainest change: top class changed, degenerate
        changed, peak moved) and JSON-ready ``details`` (``worst_item``,
        ``peak_expected`` / ``peak_obtained`` as ``[row, col]`` cells, ``share_out``,
        ``per_item``, ``notes``, ``tolerance``).

    Raises:
        ComparisonError: unknown kind or profile; a kind the profile does not judge;
            different structure, keys, shapes or dtype families; NaN or infinite
            values; empty arrays.
        LocalizationError: boxes that do not fit the heatmaps.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((7, 7), np.float32); a[1, 1] = 1.0
        >>> b = np.zeros((7, 7), np.float32); b[5, 5] = 1.0
        >>> result = compare(a, b, "heatmap")
        >>> result.passed, result.text.splitlines()[0]
        (False, 'peak moved 5.66 cells: (row 1, col 1) -> (row 5, col 5)')
    """
    kind = _check_kind(kind)
    profile = check_profile(profile)
    if profile != DEFAULT_PROFILE:
        reason = not_judged(kind, profile)
        if reason:
            raise ComparisonError(reason)
        tol = _resolve_tolerance(kind, tolerance, cross_backend, profile)
        items, extra = _heatmap_items(expected, obtained, tol, boxes=boxes, retrain=True)
        return _assemble_retrain(items, extra, tol, cross_backend)
    tol = _resolve_tolerance(kind, tolerance, cross_backend)
    if kind == "activation":
        items, tol = _activation_items(expected, obtained, tol)
        extra = _Extra()
    elif kind == "heatmap":
        items, extra = _heatmap_items(expected, obtained, tol)
    else:
        items = _pattern_items(expected, obtained, tol)
        extra = _Extra()
    return _assemble(kind, items, extra, tol, cross_backend)


# --------------------------------------------------------------------------------------
# Per-item results
# --------------------------------------------------------------------------------------
@dataclass
class _Item:
    """Metrics of one compared item (a layer, an image, a filter)."""

    name: str
    values: dict[str, float] = field(default_factory=dict)
    n_out: int = 0
    n_total: int = 0
    peak_expected: tuple[int, int] | None = None
    peak_obtained: tuple[int, int] | None = None
    degenerate: tuple[bool, bool] = (False, False)
    class_index: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)
    # retrain profile, with boxes: (expected, obtained) energy in the box, pointing
    # hit, and where each peak lies ("in the box" or a region of the image)
    box_energy: tuple[float, float] | None = None
    pointing: tuple[bool, bool] | None = None
    peak_where: tuple[str, str] | None = None

    @property
    def degenerate_changed(self) -> bool:
        return self.degenerate[0] != self.degenerate[1]

    @property
    def class_changed(self) -> bool:
        return self.class_index is not None and self.class_index[0] != self.class_index[1]


@dataclass
class _Extra:
    """Facts about a whole heatmap batch (not per image)."""

    has_class_index: bool = False
    layers: tuple[str, str] | None = None
    image_shape: tuple[int, ...] | None = None
    has_boxes: bool = False


# --------------------------------------------------------------------------------------
# Activation
# --------------------------------------------------------------------------------------
def _activation_items(
    expected: Any, obtained: Any, tol: Tolerance
) -> tuple[list[_Item], Tolerance]:
    pairs = _paired_arrays(expected, obtained, "activation")
    notes = []
    if any(p.float16 for p in pairs.values()):
        # A float16 golden (it keeps large activation goldens small) rounds each
        # value by up to half an ulp, 2**-11 of its magnitude <= the layer scale, on
        # top of whatever the computation varies: widen both relative bounds by it.
        tol = replace(
            tol,
            activation_max_rel=_resolved(tol.activation_max_rel) + FLOAT16_REL_ROUNDING,
            activation_mean_rel=_resolved(tol.activation_mean_rel) + FLOAT16_REL_ROUNDING,
        )
        notes.append(
            f"float16 storage: max_rel and mean_rel bounds widened by {FLOAT16_REL_ROUNDING:.3g} "
            "(float16 rounding)"
        )
    items = [_activation_item(name or "activation", p.e, p.o, tol) for name, p in pairs.items()]
    items[0].notes += notes
    return items, tol


def _activation_item(name: str, e: np.ndarray, o: np.ndarray, tol: Tolerance) -> _Item:
    # The scale is the layer's own magnitude so that layers of very different ranges
    # share one relative bound; the floor keeps a dead (all-zero) layer from dividing
    # by zero and from turning float32 noise into a huge relative error.
    scale = max(float(np.max(np.abs(e))), float(_resolved(tol.activation_scale_floor)))
    diff = np.abs(e - o)
    return _Item(
        name=name,
        values={"max_rel": float(diff.max()) / scale, "mean_rel": float(diff.mean()) / scale},
        n_out=int(np.count_nonzero(diff > _resolved(tol.pixel_atol) * scale)),
        n_total=int(diff.size),
    )


# --------------------------------------------------------------------------------------
# Heatmap
# --------------------------------------------------------------------------------------
@dataclass
class _Heatmaps:
    maps: np.ndarray  # (N, h, w) float64
    degenerate: np.ndarray  # (N,) bool
    class_index: np.ndarray | None  # (N,) int or None
    layer: str | None = None
    image_shape: tuple[int, ...] | None = None  # as the GradCAM carried it


def _heatmap_items(
    expected: Any, obtained: Any, tol: Tolerance, *, boxes: Any = None, retrain: bool = False
) -> tuple[list[_Item], _Extra]:
    exp = _as_heatmaps(expected, "expected")
    obt = _as_heatmaps(obtained, "obtained")
    _check_same_method(expected, obtained)
    _check_same_shape(exp.maps, obt.maps, "heatmap", "expected", "obtained")
    has_classes = exp.class_index is not None and obt.class_index is not None
    image_shape = exp.image_shape or obt.image_shape
    # A GradCAM stored without its image shape reads back as (0, 0): unknown.
    known_shape = next((s for s in (exp.image_shape, obt.image_shape) if s and all(s)), None)
    box_rows = None
    if retrain and boxes is not None:
        box_rows = check_boxes(boxes, exp.maps.shape[0], known_shape or exp.maps.shape[1:])
    items = []
    for i in range(exp.maps.shape[0]):
        item = _Item(
            name=f"image {i}", degenerate=(bool(exp.degenerate[i]), bool(obt.degenerate[i]))
        )
        if exp.class_index is not None and obt.class_index is not None:  # has_classes
            item.class_index = (int(exp.class_index[i]), int(obt.class_index[i]))
        if retrain:
            box = None if box_rows is None else Box(*(int(v) for v in box_rows[i]))
            _measure_retrain(item, exp.maps[i], obt.maps[i], tol, box, known_shape)
        else:
            _measure_heatmap(item, exp.maps[i], obt.maps[i], tol)
        items.append(item)
    extra = _Extra(
        has_class_index=has_classes, image_shape=image_shape, has_boxes=box_rows is not None
    )
    if exp.layer is not None and obt.layer is not None:
        extra.layers = (exp.layer, obt.layer)
    return items, extra


def _measure_heatmap(item: _Item, e: np.ndarray, o: np.ndarray, tol: Tolerance) -> None:
    diff = np.abs(e - o)
    # Heatmaps live in [0, 1] (normalized by their max), so pixel_atol is absolute.
    item.n_out = int(np.count_nonzero(diff > tol.pixel_atol))
    item.n_total = int(diff.size)
    if item.degenerate[0] or item.degenerate[1]:
        # A degenerate map is zeros that carry no information: measuring
        # its "correlation" or "peak" would report noise as a result.
        return
    item.values["max_abs"] = float(diff.max())
    item.values["rms"] = float(np.sqrt(np.mean(diff**2)))
    item.values["pearson"] = pearson(e, o)
    ssim_value, note = ssim_or_note(e, o, data_range=1.0)
    if ssim_value is None:
        item.notes.append(note)
    else:
        item.values["ssim"] = ssim_value
    item.peak_expected, item.peak_obtained = peak_cell(e), peak_cell(o)
    item.values["peak_shift"] = math.dist(item.peak_expected, item.peak_obtained)
    item.values["topk_iou"] = topk_iou(e, o)


def _measure_retrain(
    item: _Item,
    e: np.ndarray,
    o: np.ndarray,
    tol: Tolerance,
    box: Box | None,
    image_shape: tuple[int, ...] | None,
) -> None:
    """The retrain profile's per-image facts: rank agreement and hot-region overlap of
    two meaningful maps, and with a box each side's energy in it, pointing hit and
    where its peak lies (a degenerate map counts as no energy and no hit, as in
    :mod:`convviz_check.localization`)."""
    from .localization import energy_in_box, pointing_game

    diff = np.abs(e - o)
    item.n_out = int(np.count_nonzero(diff > _resolved(tol.pixel_atol)))
    item.n_total = int(diff.size)
    meaningful = not (item.degenerate[0] or item.degenerate[1])
    if meaningful:
        item.values["spearman"] = spearman(e, o)
        item.values["topk_iou"] = topk_iou(e, o)
    if not item.degenerate[0]:
        item.peak_expected = peak_cell(e)
    if not item.degenerate[1]:
        item.peak_obtained = peak_cell(o)
    if box is None:
        return
    shape = tuple(image_shape[:2]) if image_shape else e.shape
    energies, hits, where = [], [], []
    for values, degenerate, peak in (
        (e, item.degenerate[0], item.peak_expected),
        (o, item.degenerate[1], item.peak_obtained),
    ):
        if degenerate:
            energies.append(0.0)
            hits.append(False)
            where.append("nowhere (degenerate map)")
            continue
        energies.append(energy_in_box(values, box, image_shape=shape))
        hit = pointing_game(values, box, image_shape=shape)
        hits.append(hit)
        where.append("inside the box" if hit else region_name(peak, values.shape))
    item.box_energy = (energies[0], energies[1])
    item.pointing = (hits[0], hits[1])
    item.peak_where = (where[0], where[1])
    item.values["box_energy_drop"] = energies[0] - energies[1]


_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "middle", "right")


def region_name(peak: tuple[int, int] | None, shape: tuple[int, ...]) -> str:
    """Where a peak cell lies, in words: the image cut in thirds each way gives four
    corners, four edges and the centre.

    Example:
        >>> region_name((0, 0), (8, 8)), region_name((4, 7), (8, 8)), region_name((3, 4), (8, 8))
        ('the top-left corner', 'the right edge', 'the centre')
    """
    if peak is None:
        return "nowhere"
    third = [min(2, int(3 * (p + 0.5) / n)) for p, n in zip(peak, shape[:2], strict=True)]
    row, col = _ROWS[third[0]], _COLS[third[1]]
    if row == col == "middle":
        return "the centre"
    if row == "middle":
        return f"the {col} edge"
    if col == "middle":
        return f"the {row} edge"
    return f"the {row}-{col} corner"


def check_boxes(boxes: Any, n: int, image_shape: Any, source: str = "boxes") -> np.ndarray:
    """One object box per heatmap as an ``(n, 4)`` int64 array (y0, x0, y1, x1, half-open,
    input-image pixels), checked.

    Args:
        boxes: a sequence of :class:`~convviz_check.types.Box` (or of 4 ints), one per
            image, or an ``(n, 4)`` integer array.
        n: the number of heatmaps.
        image_shape: ``(H, W)`` the boxes refer to (a GradCAM's ``image_shape``; for
            bare maps their own ``(h, w)``: such maps are taken to be at image
            resolution, as :mod:`convviz_check.localization` does).
        source: how the caller names the argument, for messages.

    Raises:
        LocalizationError: not one box per image, not integers, an empty box, or a box
            (partly) outside the image.

    Example:
        >>> check_boxes([Box(0, 0, 4, 4)], 1, (8, 8)).tolist()
        [[0, 0, 4, 4]]
    """
    rows: Any = boxes
    if isinstance(boxes, Box):
        raise LocalizationError(
            f"{source} takes one box per image ({n}): a list of Box or an ({n}, 4) array. "
            f"Received: one {boxes}."
        )
    if isinstance(boxes, list | tuple):
        rows = [b.to_tuple() if isinstance(b, Box) else b for b in boxes]
    try:
        arr = np.asarray(rows)
    except ValueError:
        arr = np.asarray(rows, dtype=object)
    if arr.ndim != 2 or arr.shape[1:] != (4,) or arr.dtype.kind not in "iu":
        raise LocalizationError(
            f"{source} must be a list of Box or an (N, 4) integer array y0, x0, y1, x1 in "
            f"input-image pixels. Received: {describe_array(source, arr)}"
        )
    if arr.shape[0] != n:
        raise LocalizationError(
            f"{source} needs one box per image: {n} heatmap(s), {arr.shape[0]} box(es). "
            f"Received: {describe_array(source, arr)}"
        )
    height, width = (int(v) for v in tuple(image_shape)[:2])
    for i, (y0, x0, y1, x1) in enumerate(arr.tolist()):
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise LocalizationError(
                f"{source}[{i}] must be a non-empty box inside the {height}x{width} image "
                f"(0 <= y0 < y1 <= {height}, 0 <= x0 < x1 <= {width}; half-open, input-image "
                f"pixels). Received: (y0={y0}, x0={x0}, y1={y1}, x1={x1})"
            )
    return np.ascontiguousarray(arr, dtype=np.int64)


def not_judged(kind: str, profile: str) -> str:
    """Why ``profile`` does not judge ``kind`` (empty when it does)."""
    if check_profile(profile) == "exact" or kind == "heatmap":
        return ""
    what = {"activation": "activations", "pattern": "filter patterns"}.get(kind, kind)
    return (
        f"{what} are not judged under the retrain profile: the channels of two "
        "independently trained models do not correspond (channel 5 of one is no "
        "channel of the other), so channel-by-channel bounds would fail every retrain "
        "and any looser bound would pass anything. Judge a retrain on its heatmaps; "
        f"the {kind} goldens keep guarding refactors and upgrades under the exact profile."
    )


def _check_same_method(expected: Any, obtained: Any) -> None:
    """Maps of two CAM methods are different explanations, never "close": refuse them."""
    if isinstance(expected, GradCAM) and isinstance(obtained, GradCAM):
        if expected.method != obtained.method:
            raise ComparisonError(
                f"method changed: golden {expected.method}, obtained {obtained.method}. "
                "Maps of different CAM methods cannot be compared: compute the same "
                f"method as the golden (method={expected.method!r}), or rewrite the golden."
            )


def _as_heatmaps(value: Any, role: str) -> _Heatmaps:
    layer: str | None = None
    image_shape: tuple[int, ...] | None = None
    # Whatever the caller passed (array-likes or None), validated below.
    maps: Any
    degenerate: Any
    classes: Any
    if isinstance(value, GradCAM):
        maps, degenerate, classes = value.heatmap, value.degenerate, value.class_index
        layer, image_shape = value.layer, tuple(value.image_shape)
    elif isinstance(value, Mapping):
        if "heatmap" not in value:
            raise ComparisonError(
                f"A heatmap given as a mapping needs a 'heatmap' entry. "
                f"Received: {role} keys={sorted(map(str, value))}"
            )
        maps, degenerate, classes = (value.get(k) for k in ("heatmap", "degenerate", "class_index"))
    else:
        maps, degenerate, classes = value, None, None
    maps = _as_float_array(maps, f"{role} heatmap")
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ComparisonError(
            f"Heatmaps must be (N, h, w) or one (h, w) map. Received: {describe_array(role, maps)}"
        )
    n = maps.shape[0]
    if degenerate is None:
        # Degenerate maps are returned as exact zeros, and a meaningful
        # ReLU'd map always has a positive cell, so an all-zero map is degenerate.
        degenerate = ~np.any(maps != 0, axis=(1, 2))
    degenerate = _per_image(degenerate, n, f"{role} degenerate").astype(bool)
    if classes is not None:
        classes = _per_image(classes, n, f"{role} class_index").astype(np.int64)
    return _Heatmaps(maps, degenerate, classes, layer, image_shape)


def _per_image(value: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value).reshape(-1)
    if arr.shape != (n,):
        raise ComparisonError(
            f"`{name}` must hold one value per heatmap ({n}). Received: {name}.shape="
            f"{np.shape(value)}"
        )
    return arr


# --------------------------------------------------------------------------------------
# Pattern
# --------------------------------------------------------------------------------------
def _pattern_items(expected: Any, obtained: Any, tol: Tolerance) -> list[_Item]:
    pairs = _paired_arrays(expected, obtained, "pattern")
    items = []
    for key, pair in pairs.items():
        e, o = pair.e, pair.o
        # Deprocessed patterns are uint8 images (range 255). Raw float patterns have no
        # fixed range: use each pair's joint range so SSIM's constants scale with it.
        fixed_range = 255.0 if pair.uint8 else None
        prefix = "" if key == "" else f"{key} "
        if e.ndim == 4:  # (F, H, W, C): one item per filter
            items += [
                _pattern_item(f"{prefix}filter {f}", e[f], o[f], tol, fixed_range)
                for f in range(len(e))
            ]
        elif e.ndim in (2, 3):  # one (H, W, C) or (H, W) image
            items.append(_pattern_item(key or "pattern", e, o, tol, fixed_range))
        else:
            raise ComparisonError(
                "Patterns must be (F, H, W, C) filter images or one (H, W, C) / (H, W) "
                f"image. Received: {describe_array('expected', e)}"
            )
    return items


def _pattern_item(
    name: str, e: np.ndarray, o: np.ndarray, tol: Tolerance, fixed_range: float | None
) -> _Item:
    data_range = fixed_range or _joint_range(e, o)
    diff = np.abs(e - o)
    item = _Item(
        name=name,
        n_out=int(np.count_nonzero(diff > _resolved(tol.pixel_atol) * data_range)),
        n_total=int(diff.size),
    )
    item.values["pearson"] = pearson(e, o)
    ssim_value, note = ssim_or_note(e, o, data_range=data_range)
    if ssim_value is None:
        item.notes.append(note)
    else:
        item.values["ssim"] = ssim_value
    return item


def _joint_range(e: np.ndarray, o: np.ndarray) -> float:
    lo, hi = min(e.min(), o.min()), max(e.max(), o.max())
    return float(hi - lo) if hi > lo else 1.0


# --------------------------------------------------------------------------------------
# Metric primitives (public for tests and reports)
# --------------------------------------------------------------------------------------
def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ComparisonError(
            f"Unknown comparison kind. Expected one of {KINDS}. Received: kind={kind!r}"
        )
    return kind


def _resolve_tolerance(
    kind: str, tolerance: Any, cross_backend: bool, profile: str = DEFAULT_PROFILE
) -> Tolerance:
    tol = resolve(kind, tolerance, cross_backend=cross_backend, profile=profile)
    for _name, field_name, _direction in PROFILE_METRICS[profile][kind]:
        _check_bound(tol, field_name)
    _check_bound(tol, "pixel_atol")
    if kind == "activation":
        if _check_bound(tol, "activation_scale_floor") <= 0:
            raise ComparisonError(
                "`activation_scale_floor` must be > 0 (it keeps dead layers from dividing "
                f"by zero). Received: activation_scale_floor={tol.activation_scale_floor}"
            )
    return tol


def _check_bound(tol: Tolerance, name: str) -> float:
    value = getattr(tol, name)
    if value is None or not math.isfinite(value):
        raise ComparisonError(
            f"Tolerance field `{name}` must be a finite number. Received: {name}={value!r}"
        )
    return value


def _resolved(bound: float | None) -> float:
    """A bound of a tolerance from :func:`_resolve_tolerance`, which checked that every
    field the kind uses (and ``pixel_atol``) is a finite number: never None here."""
    assert bound is not None, "a tolerance field the kind uses was not resolved"
    return bound


def _paired_arrays(expected: Any, obtained: Any, kind: str) -> dict[str, _Pair]:
    """Key -> expected/obtained float arrays, after every structural check."""
    if isinstance(expected, GradCAM) or isinstance(obtained, GradCAM):
        raise ComparisonError(
            f"A GradCAM result can only be compared as kind='heatmap'. Received: kind={kind!r}"
        )
    e_is_map, o_is_map = isinstance(expected, Mapping), isinstance(obtained, Mapping)
    if e_is_map != o_is_map:
        raise ComparisonError(
            f"Cannot compare a dict of arrays with a single array ({kind}). Received: "
            f"expected type {type(expected).__name__}, obtained type {type(obtained).__name__}"
        )
    if not e_is_map:
        return {"": _checked_pair(expected, obtained, kind, "expected", "obtained")}
    e_keys, o_keys = [str(k) for k in expected], [str(k) for k in obtained]
    if set(e_keys) != set(o_keys):
        missing = sorted(set(e_keys) - set(o_keys))
        extra = sorted(set(o_keys) - set(e_keys))
        raise ComparisonError(
            f"Cannot compare {kind}s: the keys differ. Missing from obtained: {missing}; "
            f"not in expected: {extra}. Received: expected keys={sorted(e_keys)}, "
            f"obtained keys={sorted(o_keys)}"
        )
    if not e_keys:
        raise ComparisonError(f"Nothing to compare: both {kind} dicts are empty.")
    return {
        str(k): _checked_pair(
            expected[k], obtained[k], kind, f"expected[{k!r}]", f"obtained[{k!r}]"
        )
        for k in expected
    }


@dataclass
class _Pair:
    """Expected and obtained values of one key as float64, after every check."""

    e: np.ndarray
    o: np.ndarray
    uint8: bool = False
    float16: bool = False


def _checked_pair(e: Any, o: Any, kind: str, e_name: str, o_name: str) -> _Pair:
    e_raw, o_raw = np.asarray(e), np.asarray(o)
    _check_same_shape(e_raw, o_raw, kind, e_name, o_name)
    fe, fo = _dtype_family(e_raw, e_name), _dtype_family(o_raw, o_name)
    if fe != fo:
        raise ComparisonError(
            f"Cannot compare {kind}: dtype families differ ({fe} vs {fo}). Received: "
            f"{describe_array(e_name, e_raw)}; {describe_array(o_name, o_raw)}"
        )
    ef, of = _as_float_array(e_raw, e_name), _as_float_array(o_raw, o_name)
    return _Pair(
        ef,
        of,
        uint8=e_raw.dtype == np.uint8 and o_raw.dtype == np.uint8,
        float16=np.float16 in (e_raw.dtype, o_raw.dtype),
    )


def _check_same_shape(e: np.ndarray, o: np.ndarray, kind: str, e_name: str, o_name: str) -> None:
    if np.shape(e) != np.shape(o):
        raise ComparisonError(
            f"Cannot compare {kind}: shapes differ. Received: {e_name}.shape="
            f"{tuple(np.shape(e))}, {o_name}.shape={tuple(np.shape(o))}"
        )


def _dtype_family(arr: np.ndarray, name: str) -> str:
    families = {"f": "float", "i": "integer", "u": "integer", "b": "bool"}
    if arr.dtype.kind not in families:
        raise ComparisonError(
            f"Only numeric arrays can be compared. Received: {describe_array(name, arr)}"
        )
    return families[arr.dtype.kind]


def _as_float_array(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value)
    _dtype_family(arr, name)
    if arr.size == 0:
        raise ComparisonError(
            f"Nothing to compare: the array is empty. Received: {describe_array(name, arr)}"
        )
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        n_nan = int(np.count_nonzero(np.isnan(out)))
        n_inf = int(np.count_nonzero(np.isinf(out)))
        raise ComparisonError(
            f"Cannot compare arrays holding NaN or infinite values: {n_nan} NaN and {n_inf} "
            f"infinite value(s) in {name}. Received: {describe_array(name, arr)}"
        )
    return out


# --------------------------------------------------------------------------------------
# Assembly: aggregate items into metrics, pick the worst item, write the text
# --------------------------------------------------------------------------------------
def _assemble(
    kind: str, items: list[_Item], extra: _Extra, tol: Tolerance, cross_backend: bool
) -> Comparison:
    metrics = _aggregate_metrics(kind, items, tol)
    if kind == "heatmap":
        metrics["degenerate_changed"] = _count_metric(
            "degenerate_changed", items, lambda it: it.degenerate_changed
        )
        if extra.has_class_index:
            metrics["class_changed"] = _count_metric(
                "class_changed", items, lambda it: it.class_changed
            )
    passed = all(m.ok for m in metrics.values())
    worst = _worst_item(kind, items, tol)
    details = _details(kind, items, worst, extra, tol, cross_backend)
    degenerate = (any(it.degenerate[0] for it in items), any(it.degenerate[1] for it in items))
    text = comparison_text(kind, metrics, details, passed)
    return Comparison(
        kind=kind, metrics=metrics, passed=passed, degenerate=degenerate, text=text, details=details
    )


def _aggregate_metrics(kind: str, items: list[_Item], tol: Tolerance) -> dict[str, MetricResult]:
    metrics = {}
    for name, field_name, direction in METRICS[kind]:
        measured = [(it.values[name], it.name) for it in items if name in it.values]
        if not measured:
            continue
        pick = max if direction == "max" else min
        value, where = pick(measured, key=lambda pair: pair[0])  # first item on ties
        bound = float(getattr(tol, field_name))
        ok = value <= bound if direction == "max" else value >= bound
        note = f"worst at {where}" if len(items) > 1 else ""
        metrics[name] = MetricResult(name, float(value), bound, bool(ok), direction, note)
    return metrics


def _count_metric(name: str, items: list[_Item], predicate: Any) -> MetricResult:
    hits = [it.name for it in items if predicate(it)]
    note = ", ".join(hits[:5]) + (" ..." if len(hits) > 5 else "")
    return MetricResult(name, float(len(hits)), 0.0, not hits, "max", note)


def _severity(kind: str, item: _Item, tol: Tolerance) -> float:
    """How far an item is from passing: > 1 fails, inf for a plain change."""
    if item.class_changed or item.degenerate_changed:
        return math.inf
    worst = 0.0
    for name, field_name, direction in METRICS[kind]:
        if name in item.values:
            bound = float(getattr(tol, field_name))
            worst = max(worst, bound_distance(item.values[name], bound, direction))
    return worst


def _worst_item(kind: str, items: list[_Item], tol: Tolerance) -> _Item:
    candidates = [it for it in items if it.values or it.degenerate_changed or it.class_changed]
    if not candidates:
        return items[0]
    return max(candidates, key=lambda it: _severity(kind, it, tol))  # first on ties


def _details(
    kind: str, items: list[_Item], worst: _Item, extra: _Extra, tol: Tolerance, cross_backend: bool
) -> dict[str, Any]:
    n_out = sum(it.n_out for it in items)
    n_total = sum(it.n_total for it in items)
    notes = sorted({note for it in items for note in it.notes})
    details: dict[str, Any] = {
        "worst_item": worst.name,
        "share_out": n_out / n_total,
        "n_out": n_out,
        "n_total": n_total,
        "pixel_atol": float(_resolved(tol.pixel_atol)),
        "cross_backend": bool(cross_backend),
        "tolerance": tol.to_dict(),
        "notes": notes,
        "per_item": {it.name: _item_facts(it) for it in items},
    }
    if kind == "heatmap":
        details["peak_expected"] = list(worst.peak_expected) if worst.peak_expected else None
        details["peak_obtained"] = list(worst.peak_obtained) if worst.peak_obtained else None
        details["degenerate_expected"] = [it.degenerate[0] for it in items]
        details["degenerate_obtained"] = [it.degenerate[1] for it in items]
        if extra.has_class_index:
            # _heatmap_items gives every item its class pair when the batch has classes.
            pairs = [it.class_index for it in items]
            details["class_index_expected"] = [_class_pair(p)[0] for p in pairs]
            details["class_index_obtained"] = [_class_pair(p)[1] for p in pairs]
        if extra.layers is not None:
            details["layer_expected"], details["layer_obtained"] = extra.layers
        if extra.image_shape is not None:
            details["image_shape"] = list(extra.image_shape)
    return details


def _item_facts(item: _Item) -> dict[str, Any]:
    facts: dict[str, Any] = dict(item.values)
    facts["share_out"] = item.n_out / item.n_total if item.n_total else 0.0
    if item.peak_expected is not None and item.peak_obtained is not None:  # set together
        facts["peak_expected"] = list(item.peak_expected)
        facts["peak_obtained"] = list(item.peak_obtained)
    if item.degenerate != (False, False):
        facts["degenerate"] = list(item.degenerate)
    if item.class_index is not None:
        facts["class_index"] = list(item.class_index)
    if item.box_energy is not None:  # retrain profile with boxes: set together
        facts["box_energy"] = list(item.box_energy)
        facts["pointing"] = list(item.pointing or ())
        facts["peak_where"] = list(item.peak_where or ())
    return facts


# --------------------------------------------------------------------------------------
# Assembly of the retrain profile
# --------------------------------------------------------------------------------------
# per-image value -> the retrain metric whose bound ranks it (the worst image)
_RETRAIN_ITEM_BOUND = {
    "spearman": ("heatmap_spearman_mean_min", "min"),
    "topk_iou": ("heatmap_topk_iou_mean_min", "min"),
    "box_energy_drop": ("heatmap_box_energy_drop", "max"),
}


def _assemble_retrain(
    items: list[_Item], extra: _Extra, tol: Tolerance, cross_backend: bool
) -> Comparison:
    n = len(items)
    metrics: dict[str, MetricResult] = {}

    def bounded(name: str, field_name: str, direction: str, value: float, note: str) -> None:
        bound = float(getattr(tol, field_name))
        ok = value <= bound if direction == "max" else value >= bound
        metrics[name] = MetricResult(name, float(value), bound, bool(ok), direction, note)

    for name in ("spearman", "topk_iou"):
        measured = [(it.values[name], it.name) for it in items if name in it.values]
        if measured:
            lowest, where = min(measured, key=lambda pair: pair[0])
            note = f"mean over {len(measured)} images; lowest {lowest:.3g} at {where}"
            if len(measured) < n:
                note += f"; {n - len(measured)} degenerate left out"
            value = float(np.mean([v for v, _ in measured]))
            bounded(f"{name}_mean", f"heatmap_{name}_mean_min", "min", value, note)
    if extra.has_class_index:
        changed = [it for it in items if it.class_changed]
        note = f"{n - len(changed)} of {n} images"
        bounded("class_agreement", "heatmap_class_agreement_min", "min", 1 - len(changed) / n, note)
    summary: dict[str, Any] = {"n": n, "boxes": extra.has_boxes}
    if extra.has_boxes:
        energy = np.array([it.box_energy for it in items], np.float64)  # (n, 2)
        hits = np.array([it.pointing for it in items], bool)
        mean_e, mean_o = (float(v) for v in energy.mean(axis=0))
        bounded(
            "box_energy_drop_mean",
            "heatmap_box_energy_drop_mean",
            "max",
            mean_e - mean_o,
            f"mean over {n} images: {mean_e:.3g} -> {mean_o:.3g}",
        )
        drops = energy[:, 0] - energy[:, 1]
        worst = int(np.argmax(drops))  # first image on ties
        bounded(
            "box_energy_drop",
            "heatmap_box_energy_drop",
            "max",
            float(drops[worst]),
            f"worst at {items[worst].name}: {energy[worst, 0]:.3g} -> {energy[worst, 1]:.3g}",
        )
        hit_e, hit_o = (int(v) for v in hits.sum(axis=0))
        bounded(
            "pointing_drop",
            "heatmap_pointing_drop",
            "max",
            (hit_e - hit_o) / n,
            f"hits {hit_e}/{n} -> {hit_o}/{n}",
        )
        moved: dict[str, int] = {}
        for it in items:
            if it.pointing == (True, False) and it.peak_where is not None:
                moved[it.peak_where[1]] = moved.get(it.peak_where[1], 0) + 1
        summary.update(
            box_energy=[mean_e, mean_o],
            hits=[hit_e, hit_o],
            # images whose peak left the box, by where it went (most first)
            peak_left_box=dict(sorted(moved.items(), key=lambda kv: (-kv[1], kv[0]))),
        )
    metrics["degenerate_changed"] = _count_metric(
        "degenerate_changed", items, lambda it: it.degenerate_changed
    )
    passed = all(m.ok for m in metrics.values())

    def severity(item: _Item) -> float:
        if item.class_changed or item.degenerate_changed:
            return math.inf
        return max(
            (
                bound_distance(item.values[k], float(getattr(tol, f)), d)
                for k, (f, d) in _RETRAIN_ITEM_BOUND.items()
                if k in item.values
            ),
            default=0.0,
        )

    worst_item = max(items, key=severity)  # first on ties
    details = _details("heatmap", items, worst_item, extra, tol, cross_backend)
    details["profile"] = "retrain"
    details["retrain"] = summary
    degenerate = (any(it.degenerate[0] for it in items), any(it.degenerate[1] for it in items))
    text = comparison_text("heatmap", metrics, details, passed)
    return Comparison(
        kind="heatmap",
        metrics=metrics,
        passed=passed,
        degenerate=degenerate,
        text=text,
        details=details,
    )


def _class_pair(pair: tuple[int, int] | None) -> tuple[int, int]:
    """An item's (expected, obtained) classes where the caller knows they are set."""
    assert pair is not None, "an item without class indices"
    return pair
