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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import ComparisonError, describe_array
from .tolerances import resolve
from .types import KINDS, METRICS, Comparison, GradCAM, MetricResult, Tolerance, bound_distance

# Relative resolution below which values are treated as equal when ranking cells
# (peak, top-k) and when deciding that a map is constant: 1e-6 of the map's largest
# |value|. Heatmaps are normalized to max 1, and float32 noise between thread counts or
# backends is ~1e-7 relative (measured), so cells tied in exact arithmetic stay
# tied instead of being ordered by rounding noise.
RANK_RESOLUTION = 1e-6

# SSIM's window: the largest odd size <= min(7, h, w) (7 is scikit-image's default);
# a 3x3 window is the smallest that measures structure at all.
SSIM_MAX_WINDOW = 7
SSIM_MIN_WINDOW = 3

# Share of cells in the "top region" whose overlap is measured (the top 10%).
TOPK_NUMERATOR, TOPK_DENOMINATOR = 1, 10

# Plain changes (class, degeneracy) listed one per line for at most this many images.
MAX_LISTED = 5

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

    Returns:
        A :class:`~convviz_check.types.Comparison`: ``metrics`` (name ->
        ``MetricResult``), ``passed``, ``degenerate`` (any degenerate map on each side),
        ``text`` (leading with the plainest change: top class changed, degenerate
        changed, peak moved) and JSON-ready ``details`` (``worst_item``,
        ``peak_expected`` / ``peak_obtained`` as ``[row, col]`` cells, ``share_out``,
        ``per_item``, ``notes``, ``tolerance``).

    Raises:
        ComparisonError: unknown kind; different structure, keys, shapes or dtype
            families; NaN or infinite values; empty arrays.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((7, 7), np.float32); a[1, 1] = 1.0
        >>> b = np.zeros((7, 7), np.float32); b[5, 5] = 1.0
        >>> result = compare(a, b, "heatmap")
        >>> result.passed, result.text.splitlines()[0]
        (False, 'peak moved 5.66 cells: (row 1, col 1) -> (row 5, col 5)')
    """
    kind = _check_kind(kind)
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


def _heatmap_items(expected: Any, obtained: Any, tol: Tolerance) -> tuple[list[_Item], _Extra]:
    exp = _as_heatmaps(expected, "expected")
    obt = _as_heatmaps(obtained, "obtained")
    _check_same_shape(exp.maps, obt.maps, "heatmap", "expected", "obtained")
    has_classes = exp.class_index is not None and obt.class_index is not None
    items = []
    for i in range(exp.maps.shape[0]):
        item = _Item(
            name=f"image {i}", degenerate=(bool(exp.degenerate[i]), bool(obt.degenerate[i]))
        )
        if exp.class_index is not None and obt.class_index is not None:  # has_classes
            item.class_index = (int(exp.class_index[i]), int(obt.class_index[i]))
        _measure_heatmap(item, exp.maps[i], obt.maps[i], tol)
        items.append(item)
    extra = _Extra(has_class_index=has_classes, image_shape=exp.image_shape or obt.image_shape)
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
    ssim_value, note = _ssim_or_note(e, o, data_range=1.0)
    if ssim_value is None:
        item.notes.append(note)
    else:
        item.values["ssim"] = ssim_value
    item.peak_expected, item.peak_obtained = peak_cell(e), peak_cell(o)
    item.values["peak_shift"] = math.dist(item.peak_expected, item.peak_obtained)
    item.values["topk_iou"] = topk_iou(e, o)


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
    ssim_value, note = _ssim_or_note(e, o, data_range=data_range)
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
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped arrays, defined for constant ones.

    Two constant arrays give 1.0 (neither has any structure, so none differs; their
    levels are judged by the error metrics), a constant against a non-constant one
    gives 0.0. "Constant" means a spread below ``RANK_RESOLUTION`` of the array's
    largest |value| (float32 noise does not count as structure).

    Example:
        >>> pearson(np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 4.0]))
        1.0
    """
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    const_a, const_b = _is_constant(a), _is_constant(b)
    if const_a or const_b:
        return 1.0 if const_a and const_b else 0.0
    # Centred and rescaled to max 1 first so that squares cannot overflow.
    a = a - a.mean()
    b = b - b.mean()
    a /= np.max(np.abs(a))
    b /= np.max(np.abs(b))
    # dot / sqrt(aa * bb) (not dot / (|a| |b|)) makes an array against itself exactly 1.
    r = float(np.dot(a, b) / math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b))))
    return min(1.0, max(-1.0, r))


def ssim_window(h: int, w: int) -> int | None:
    """Largest odd SSIM window <= min(7, h, w), or None when the map is under 3x3.

    Example:
        >>> ssim_window(7, 7), ssim_window(6, 9), ssim_window(4, 4), ssim_window(2, 5)
        (7, 5, 3, None)
    """
    size = min(SSIM_MAX_WINDOW, h, w)
    if size % 2 == 0:
        size -= 1
    return size if size >= SSIM_MIN_WINDOW else None


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM (scikit-image) with the window of :func:`ssim_window`; ``(H, W)`` or
    ``(H, W, C)`` (channels averaged).

    Raises:
        ComparisonError: the images are smaller than 3x3.
    """
    value, note = _ssim_or_note(np.asarray(a), np.asarray(b), data_range)
    if value is None:
        raise ComparisonError(note)
    return value


def _ssim_or_note(a: np.ndarray, b: np.ndarray, data_range: float) -> tuple[float | None, str]:
    from skimage.metrics import structural_similarity

    h, w = a.shape[:2]
    win = ssim_window(h, w)
    if win is None:
        return None, (
            f"ssim skipped: {h}x{w} maps are smaller than SSIM's {SSIM_MIN_WINDOW}x"
            f"{SSIM_MIN_WINDOW} minimum window"
        )
    channel_axis = -1 if a.ndim == 3 else None
    value = structural_similarity(
        np.asarray(a, np.float64),
        np.asarray(b, np.float64),
        win_size=win,
        data_range=data_range,
        channel_axis=channel_axis,
    )
    return min(1.0, max(-1.0, float(value))), ""


def peak_cell(heatmap: np.ndarray) -> tuple[int, int]:
    """``(row, col)`` of the hottest cell; ties (within ``RANK_RESOLUTION``) go to the
    first cell in row-major order.

    Example:
        >>> peak_cell(np.array([[0.0, 1.0], [1.0, 0.5]]))
        (0, 1)
    """
    q = _quantized(heatmap)
    row, col = np.unravel_index(int(np.argmax(q)), q.shape)
    return int(row), int(col)


def topk_count(cells: int) -> int:
    """k = ceil(10% of the cells), computed in integers (``0.1 * 30`` is 3.0000000000000004
    in floating point, whose ceiling would be 4).

    Example:
        >>> topk_count(30), topk_count(31), topk_count(49), topk_count(1)
        (3, 4, 5, 1)
    """
    return -(-cells * TOPK_NUMERATOR // TOPK_DENOMINATOR)


def topk_mask(heatmap: np.ndarray) -> np.ndarray:
    """Boolean mask of the map's hot region: its k = ceil(10% of cells) hottest cells.

    Values equal within ``RANK_RESOLUTION`` of the map's max are ties; ties are broken
    by row-major position (earlier first), so the choice is always the same. Cells at
    the map's minimum are background and never join the region (unless the whole map
    is constant): a ReLU'd heatmap whose positive part covers fewer than k cells would
    otherwise be padded with arbitrary zero cells, the same ones in both maps, and two
    disjoint hot spots would overlap.
    """
    q = _quantized(heatmap).ravel()
    k = topk_count(q.size)
    order = np.argsort(-q, kind="stable")[:k]  # stable: equal values keep row-major order
    if q.max() > q.min():
        order = order[q[order] > q.min()]
    mask = np.zeros(q.size, dtype=bool)
    mask[order] = True
    return mask.reshape(np.shape(heatmap))


def topk_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the two maps' top-10% regions (see :func:`topk_mask`).

    Example:
        >>> a = np.arange(10.0).reshape(2, 5)
        >>> topk_iou(a, a), topk_iou(a, -a)
        (1.0, 0.0)
    """
    ma, mb = topk_mask(a), topk_mask(b)
    union = int(np.count_nonzero(ma | mb))
    return int(np.count_nonzero(ma & mb)) / union


def _quantized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    scale = float(np.max(np.abs(x))) if x.size else 0.0
    if scale == 0.0:
        return np.zeros_like(x)
    return np.rint(x / (scale * RANK_RESOLUTION))


def _is_constant(x: np.ndarray) -> bool:
    q = _quantized(x)
    return bool(q.max() == q.min())


# --------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------
def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ComparisonError(
            f"Unknown comparison kind. Expected one of {KINDS}. Received: kind={kind!r}"
        )
    return kind


def _resolve_tolerance(kind: str, tolerance: Any, cross_backend: bool) -> Tolerance:
    tol = resolve(kind, tolerance, cross_backend=cross_backend)
    for _name, field_name, _direction in METRICS[kind]:
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
    text = _text(kind, items, metrics, worst, extra, tol, passed, details)
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
    return facts


def _text(
    kind: str,
    items: list[_Item],
    metrics: dict[str, MetricResult],
    worst: _Item,
    extra: _Extra,
    tol: Tolerance,
    passed: bool,
    details: dict[str, Any],
) -> str:
    batch = len(items) > 1
    where = (lambda it: f" ({it.name})") if batch else (lambda it: "")
    lines = _plain_changes(items, metrics, where)
    both_degenerate = [it for it in items if it.degenerate == (True, True)]
    unit = {"activation": "layer", "heatmap": "image", "pattern": "filter"}[kind]
    summary = f"{kind} comparison {'passed' if passed else 'FAILED'}"
    summary += f" ({len(items)} {unit}{'s' if len(items) != 1 else ''}"
    summary += f", worst {worst.name})" if batch and not passed else ")"
    lines.append(summary)
    if both_degenerate and len(both_degenerate) == len(items):
        lines.append(
            "both degenerate: every map is degenerate on both sides (no information); "
            "heatmap metrics not measured"
        )
    elif both_degenerate:
        names = ", ".join(it.name for it in both_degenerate)
        lines.append(f"degenerate on both sides, not measured: {names}")
    width = max((len(name) for name in metrics), default=0)
    for m in metrics.values():
        lines.append("  " + _metric_line(m, width))
    if kind == "heatmap" and worst.peak_expected is not None:
        lines.append(
            f"peak expected {_cell(worst.peak_expected)}, obtained {_cell(worst.peak_obtained)}"
            f"{where(worst)}"
        )
    lines.append(
        f"share of values out of pixel_atol={tol.pixel_atol:g}"
        f"{' x scale' if kind == 'activation' else ' x range' if kind == 'pattern' else ''}: "
        f"{100 * details['share_out']:.2f}% ({details['n_out']} of {details['n_total']})"
    )
    if extra.layers is not None and extra.layers[0] != extra.layers[1]:
        lines.append(f"target layer changed: {extra.layers[0]!r} -> {extra.layers[1]!r}")
    lines += details["notes"]
    return "\n".join(lines)


def _plain_changes(items: list[_Item], metrics: dict[str, MetricResult], where: Any) -> list[str]:
    """The plainest changes, most plain first: top class, degeneracy, peak position."""
    lines = []
    changed = [it for it in items if it.class_changed]
    for it in changed[:MAX_LISTED]:
        was, now = _class_pair(it.class_index)  # class_changed: the pair is set
        lines.append(f"top class changed: {was} -> {now}{where(it)}")
    if len(changed) > MAX_LISTED:
        lines.append(f"top class changed in {len(changed) - MAX_LISTED} more images")
    flipped = [it for it in items if it.degenerate_changed]
    for it in flipped[:MAX_LISTED]:
        before, after = (
            ("degenerate", "meaningful") if it.degenerate[0] else ("meaningful", "degenerate")
        )
        lines.append(
            f"degenerate changed: expected a {before} map, obtained a {after} map{where(it)}"
        )
    if len(flipped) > MAX_LISTED:
        lines.append(f"degenerate changed in {len(flipped) - MAX_LISTED} more images")
    shift = metrics.get("peak_shift")
    if shift is not None and not shift.ok:
        moved = max(
            (it for it in items if "peak_shift" in it.values),
            key=lambda it: it.values["peak_shift"],
        )
        lines.append(
            f"peak moved {moved.values['peak_shift']:.3g} cells: {_cell(moved.peak_expected)} -> "
            f"{_cell(moved.peak_obtained)}{where(moved)}"
        )
    return lines


def _class_pair(pair: tuple[int, int] | None) -> tuple[int, int]:
    """An item's (expected, obtained) classes where the caller knows they are set."""
    assert pair is not None, "an item without class indices"
    return pair


def _cell(cell: tuple[int, int] | None) -> str:
    return "n/a" if cell is None else f"(row {cell[0]}, col {cell[1]})"


def _metric_line(m: MetricResult, width: int) -> str:
    # Every metric of a comparison has a bound (_aggregate_metrics, _count_metric).
    assert m.bound is not None, f"metric {m.name} has no bound"
    v, b = _distinct_format(m.value, m.bound)
    if m.direction == "max":
        relation = "<=" if m.ok else ">"
        side = "max"
    else:
        relation = ">=" if m.ok else "<"
        side = "min"
    status = "ok" if m.ok else "FAIL"
    note = f"  ({m.note})" if m.note else ""
    return f"{m.name:<{width}} {v} {relation} {side} {b}  {status}{note}"


def _distinct_format(value: float, bound: float) -> tuple[str, str]:
    """The bound as written; the value with one digit more than the bound has (at least
    3), and more while rounding would blur which side of the bound it is on."""
    b = f"{bound:.10g}"
    digits = max(3, len(b.lstrip("-0.").split("e")[0].replace(".", "")) + 1)
    for d in range(digits, 17):
        v = f"{value:.{d}g}"
        same_side = (float(v) <= bound) == (value <= bound) and (float(v) >= bound) == (
            value >= bound
        )
        if same_side and (v != b or value == bound):
            return v, b
    return repr(value), b
