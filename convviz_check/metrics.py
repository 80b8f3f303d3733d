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
from .measures import peak_cell, pearson, ssim_or_note, topk_iou
from .report.comparison import comparison_text
from .tolerances import resolve
from .types import KINDS, METRICS, Comparison, GradCAM, MetricResult, Tolerance, bound_distance

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
    ssim_value, note = ssim_or_note(e, o, data_range=1.0)
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
    return facts


def _class_pair(pair: tuple[int, int] | None) -> tuple[int, int]:
    """An item's (expected, obtained) classes where the caller knows they are set."""
    assert pair is not None, "an item without class indices"
    return pair
