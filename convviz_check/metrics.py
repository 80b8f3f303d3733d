"""Comparison metrics: two artifacts in, one :class:`~convviz_check.types.Comparison` out.

Pure NumPy and scikit-image. This module decides nothing about pytest and
imports no Keras and no framework: the CLI and the parent process of a cross-backend
run use it without loading one.

One judge for every profile and kind: each item (a layer, an image, a filter) is
measured, then the profile's metrics combine the items' measures as
:data:`convviz_check.tolerances.PROFILE_SPECS` says (the worst item, a mean, a share, a
count), each judged against its bound by :meth:`MetricResult.judge
<convviz_check.types.MetricResult.judge>`, and the item farthest from its bounds
(:attr:`MetricResult.distance <convviz_check.types.MetricResult.distance>`) is named.

Metrics per kind under the ``exact`` profile (names as in ``Comparison.metrics``):

- ``"activation"`` (an array, or a dict layer -> array compared per layer):
  ``max_rel`` = max |e - o| / scale and ``mean_rel`` = mean |e - o| / scale, with
  ``scale = max(max |e|, activation_scale_floor)`` per layer. The metrics hold the
  worst layer's value (their ``note`` names it); every layer's values are in
  ``details["per_item"]``.
- ``"heatmap"`` (anything :meth:`Heatmaps.of <convviz_check.heatmaps.Heatmaps.of>`
  takes: an ``(N, h, w)`` / ``(h, w)`` array, a ``GradCAM``, or a mapping with a
  ``"heatmap"`` key and optional ``"class_index"`` / ``"degenerate"``), per image:
  ``max_abs``, ``rms``, ``pearson``, ``ssim``, ``peak_shift`` (cells, Euclidean) and
  ``topk_iou`` (IoU of the top-10% cells), plus the counts ``degenerate_changed`` and
  (when both sides know their classes) ``class_changed``, both bounded by 0. A
  degenerate map (flagged, or constant) is not measured.
- ``"pattern"`` (``(F, H, W, C)`` filter images uint8 or float, one ``(H, W, C)`` or
  ``(H, W)`` image, or a dict of those), per filter: ``ssim`` and ``pearson``.

Over a batch each metric reports its worst item; the item with the worst violation
overall is named in ``details["worst_item"]`` and in the text.

Under ``profile="retrain"`` heatmaps and activations are judged on what survives an
independent retraining (:data:`~convviz_check.types.RETRAIN_METRICS`): per-image Spearman
rank correlation and top-10% IoU averaged, the share of images explaining the golden's
class, given object boxes the energy in the box (mean and worst drop) and the pointing
hits lost; per layer the linear CKA. Filter patterns: see pattern_response. The heatmaps'
batch evidence (a region's mass grown in most images of a group, class agreement on
confident images, changes towards one class) and the two verdicts, "predicts
differently" and "looks elsewhere", come from :mod:`convviz_check.evidence`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import ComparisonError, describe_array
from .evidence import box_facts, retrain_evidence, verdicts
from .heatmaps import Heatmaps
from .measures import (
    check_boxes,
    check_same_shape,
    joint_range,
    layer_cka,
    paired_arrays,
    peak_cell,
    pearson,
    region_name,
    spearman,
    ssim_or_note,
    topk_iou,
)
from .report.comparison import comparison_text
from .tolerances import DEFAULT_PROFILE, PROFILE_SPECS, MetricSpec, check_profile, resolve
from .types import (
    ITEM_UNIT,
    KINDS,
    Box,
    Comparison,
    MetricResult,
    Tolerance,
)

__all__ = ["check_boxes", "compare", "not_judged", "region_name"]

# Half an ulp of float16 relative to the value: 2**-11 (10-bit mantissa).
FLOAT16_REL_ROUNDING = 2.0**-11
# Per-image measures that need an object box; a profile that uses none ignores boxes.
BOX_MEASURES = frozenset({"box_energy", "box_energy_drop", "pointing"})
# A per-item drop -> the (expected, obtained) fact it is the drop of (for its note).
DROP_OF = {"box_energy_drop": "box_energy"}


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
    regions: Mapping[str, Box] | None = None,
) -> Comparison:
    """Compare an obtained artifact with the expected one using the metrics of ``kind``.

    Args:
        expected: the reference (golden) artifact: an array, a dict of arrays
            (activations per layer, patterns per layer), or for heatmaps anything
            :meth:`Heatmaps.of <convviz_check.heatmaps.Heatmaps.of>` takes (a ``GradCAM``,
            a ``Heatmaps``, a mapping with a ``"heatmap"`` key, an array).
        obtained: the artifact just computed, of the same structure, shape and dtype
            family (float / integer / bool) as ``expected``.
        kind: ``"activation"``, ``"heatmap"`` or ``"pattern"``.
        tolerance: a :class:`~convviz_check.types.Tolerance` (or a dict of its fields)
            whose set fields override the defaults of
            :func:`convviz_check.tolerances.default_tolerance`.
        cross_backend: use the cross-backend column of the default table (the two
            artifacts come from different backends).
        profile: ``"exact"`` (default: bounds at numerical noise) or ``"retrain"``
            (heatmaps and activations, judged on what survives a retraining; see the
            module docstring).
        boxes: the object box of each heatmap (a list of
            :class:`~convviz_check.types.Box` or an ``(N, 4)`` int array y0, x0, y1, x1
            in input-image pixels; see :func:`check_boxes`), for the ``retrain``
            profile's box metrics; ignored by ``exact``.
        regions: more regions (name -> Box in input pixels) whose mass the ``retrain``
            profile's ``region_shift`` watches, beside the border, the corners and, with
            boxes, the box (:mod:`convviz_check.evidence`); ignored by ``exact``.

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
    reason = not_judged(kind, profile)
    if reason:
        raise ComparisonError(reason)
    tol = _resolve_tolerance(kind, tolerance, cross_backend, profile)
    specs = PROFILE_SPECS[profile][kind]
    extra = _Extra()
    if kind == "activation":
        items, tol = _activation_items(expected, obtained, tol, specs)
    elif kind == "heatmap":
        items, extra = _heatmap_items(expected, obtained, tol, specs, boxes, regions)
    else:
        items = _pattern_items(expected, obtained, tol)
    return _assemble(kind, profile, specs, items, extra, tol, cross_backend)


# --------------------------------------------------------------------------------------
# Per-item results
# --------------------------------------------------------------------------------------
@dataclass
class _Item:
    """What was measured on one compared item (a layer, an image, a filter)."""

    name: str
    # measures of the pair (max_abs, pearson, spearman, box_energy_drop...)
    values: dict[str, float] = field(default_factory=dict)
    # (expected, obtained) facts of each side: degenerate, class_index, peak, and with
    # a box: box_energy, pointing (a hit), peak_where (the peak's place in words)
    sides: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    n_out: int = 0
    n_total: int = 0
    notes: list[str] = field(default_factory=list)

    def changed(self, fact: str) -> bool:
        pair = self.sides.get(fact)
        return pair is not None and pair[0] != pair[1]


@dataclass
class _Extra:
    """Facts about a whole heatmap batch (not per image)."""

    layers: tuple[str, str] | None = None
    image_shape: tuple[int, ...] | None = None
    boxes: bool = False  # the boxed measures were taken
    # the retrain evidence: metrics and details (convviz_check.evidence)
    evidence: tuple[dict[str, MetricResult], dict[str, Any]] | None = None


# --------------------------------------------------------------------------------------
# Activation
# --------------------------------------------------------------------------------------
def _activation_items(
    expected: Any, obtained: Any, tol: Tolerance, specs: tuple[MetricSpec, ...]
) -> tuple[list[_Item], Tolerance]:
    pairs = paired_arrays(expected, obtained, "activation")
    notes = []
    if any(p.float16 for p in pairs.values()) and tol.activation_max_rel is not None:
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
    for item, p in zip(items, pairs.values(), strict=True):  # retrain: channels may permute
        if any(spec.measure == "cka" for spec in specs):
            item.values["cka"] = layer_cka(p.e, p.o, item.name)
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
def _heatmap_items(
    expected: Any,
    obtained: Any,
    tol: Tolerance,
    specs: tuple[MetricSpec, ...],
    boxes: Any,
    regions: Mapping[str, Box] | None,
) -> tuple[list[_Item], _Extra]:
    exp = Heatmaps.of(expected, role="expected", error=ComparisonError)
    obt = Heatmaps.of(obtained, role="obtained", error=ComparisonError)
    _check_same_method(exp, obt)
    check_same_shape(exp.maps, obt.maps, "heatmap", "expected", "obtained")
    measures = {spec.measure for spec in specs}
    image_shape = exp.image_shape or obt.image_shape
    box_rows = None
    if boxes is not None and measures & BOX_MEASURES:
        box_rows = check_boxes(boxes, len(exp), image_shape or exp.maps.shape[1:])
    # Heatmaps are float32; measured in float64 so that sums do not round.
    e_maps, o_maps = exp.maps.astype(np.float64), obt.maps.astype(np.float64)
    items = []
    for i in range(len(exp)):
        item = _Item(
            f"image {i}", sides={"degenerate": (bool(exp.degenerate[i]), bool(obt.degenerate[i]))}
        )
        if exp.class_index is not None and obt.class_index is not None:
            item.sides["class_index"] = (int(exp.class_index[i]), int(obt.class_index[i]))
        _measure_heatmap(item, e_maps[i], o_maps[i], tol, specs)
        if box_rows is not None:
            box = Box(*(int(v) for v in box_rows[i]))
            shape = image_shape or e_maps.shape[1:]
            item.sides.update(box_facts(e_maps[i], o_maps[i], item.sides["degenerate"], box, shape))
            energy = item.sides["box_energy"]
            item.values["box_energy_drop"] = energy[0] - energy[1]
        items.append(item)
    extra = _Extra(image_shape=image_shape, boxes=box_rows is not None)
    if any(spec.aggregate == "evidence" for spec in specs):
        extra.evidence = retrain_evidence(exp, obt, tol, image_shape, box_rows, regions)
    if exp.layer is not None and obt.layer is not None:
        extra.layers = (exp.layer, obt.layer)
    return items, extra


# Measures of one pair of meaningful maps, by name.
_PAIR_MEASURES = {
    "max_abs": lambda e, o: float(np.max(np.abs(e - o))),
    "rms": lambda e, o: float(np.sqrt(np.mean((e - o) ** 2))),
    "pearson": pearson,
    "spearman": spearman,
    "topk_iou": topk_iou,
}


def _measure_heatmap(
    item: _Item, e: np.ndarray, o: np.ndarray, tol: Tolerance, specs: tuple[MetricSpec, ...]
) -> None:
    """Both peaks and the measures ``specs`` combine, in their order."""
    diff = np.abs(e - o)
    # Heatmaps live in [0, 1] (normalized by their max), so pixel_atol is absolute.
    item.n_out = int(np.count_nonzero(diff > _resolved(tol.pixel_atol)))
    item.n_total = int(diff.size)
    if item.sides["degenerate"] != (False, False):
        # A degenerate map carries no information: measuring its "correlation" or
        # "peak" would report noise as a result.
        return
    item.sides["peak"] = (peak_cell(e), peak_cell(o))
    for measure in dict.fromkeys(spec.measure for spec in specs):
        if measure in _PAIR_MEASURES:
            item.values[measure] = _PAIR_MEASURES[measure](e, o)
        elif measure == "ssim":
            value, note = ssim_or_note(e, o, data_range=1.0)
            if value is None:
                item.notes.append(note)
            else:
                item.values["ssim"] = value
        elif measure == "peak_shift":
            item.values["peak_shift"] = math.dist(*item.sides["peak"])


def not_judged(kind: str, profile: str) -> str:
    """Why ``profile`` does not judge ``kind`` (empty when it does: the profile has
    metrics for it in :data:`~convviz_check.tolerances.PROFILE_SPECS`)."""
    if PROFILE_SPECS[check_profile(profile)].get(kind):
        return ""
    what = {"activation": "activations", "pattern": "filter patterns"}.get(kind, kind)
    return (
        f"{what} are not judged under the retrain profile: the channels of two "
        "independently trained models do not correspond (channel 5 of one is no "
        "channel of the other), so channel-by-channel bounds would fail every retrain "
        "and any looser bound would pass anything. Judge a retrain on its heatmaps and "
        f"activations; the {kind} goldens keep guarding refactors and upgrades (exact profile)."
    )


def _check_same_method(expected: Heatmaps, obtained: Heatmaps) -> None:
    """Maps of two CAM methods are different explanations, never "close": refuse them."""
    if None not in (expected.method, obtained.method) and expected.method != obtained.method:
        raise ComparisonError(
            f"method changed: golden {expected.method}, obtained {obtained.method}. "
            "Maps of different CAM methods cannot be compared: compute the same "
            f"method as the golden (method={expected.method!r}), or rewrite the golden."
        )


# --------------------------------------------------------------------------------------
# Pattern
# --------------------------------------------------------------------------------------
def _pattern_items(expected: Any, obtained: Any, tol: Tolerance) -> list[_Item]:
    pairs = paired_arrays(expected, obtained, "pattern")
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
    data_range = fixed_range or joint_range(e, o)
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


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------
def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ComparisonError(
            f"Unknown comparison kind. Expected one of {KINDS}. Received: kind={kind!r}"
        )
    return kind


def _resolve_tolerance(kind: str, tolerance: Any, cross_backend: bool, profile: str) -> Tolerance:
    tol = resolve(kind, tolerance, cross_backend=cross_backend, profile=profile)
    for spec in PROFILE_SPECS[profile][kind]:
        _check_bound(tol, spec.field or "pixel_atol")
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
    """A bound :func:`_resolve_tolerance` checked (finite): never None here."""
    assert bound is not None, "a tolerance field the kind uses was not resolved"
    return bound


# --------------------------------------------------------------------------------------
# Assembly: the profile's metrics from the items, the worst item, the text
# --------------------------------------------------------------------------------------
def _assemble(
    kind: str,
    profile: str,
    specs: tuple[MetricSpec, ...],
    items: list[_Item],
    extra: _Extra,
    tol: Tolerance,
    cross_backend: bool,
) -> Comparison:
    unit = ITEM_UNIT[kind]
    metrics = {}
    for spec in specs:
        if spec.aggregate == "evidence":  # measured on the whole batch: evidence.py
            metric = extra.evidence[0].get(spec.name) if extra.evidence else None
        else:
            metric = _aggregate(spec, items, tol, unit)
        if metric is not None:
            metrics[spec.name] = metric
    passed = all(m.ok for m in metrics.values())
    worst = _worst_item(items, specs, tol)
    details = _details(kind, items, worst, extra, tol, cross_backend)
    if profile != DEFAULT_PROFILE:
        details["profile"] = profile
    if extra.evidence is not None:
        details.update(extra.evidence[1], verdicts=verdicts(metrics))
    if any(spec.measure in BOX_MEASURES for spec in specs):
        details["boxes"] = extra.boxes
    flags = [it.sides.get("degenerate", (False, False)) for it in items]
    degenerate = (any(f[0] for f in flags), any(f[1] for f in flags))
    text = comparison_text(kind, metrics, details, passed)
    return Comparison(
        kind=kind, metrics=metrics, passed=passed, degenerate=degenerate, text=text, details=details
    )


def _aggregate(
    spec: MetricSpec, items: list[_Item], tol: Tolerance, unit: str
) -> MetricResult | None:
    """The metric ``spec`` over the items, judged; None when no item has its measure
    (an SSIM of maps under 3x3, box metrics without boxes, classes unknown)."""
    n = len(items)
    bound = 0.0 if spec.field is None else _resolved(getattr(tol, spec.field))
    if spec.aggregate in ("worst", "mean"):
        measured = [(it.values[spec.measure], it) for it in items if spec.measure in it.values]
        if not measured:
            return None
        pick = max if spec.direction == "max" else min
        value, at = pick(measured, key=lambda pair: pair[0])  # the first item on ties
        if spec.aggregate == "worst":
            sides = at.sides.get(DROP_OF.get(spec.measure, ""))
            note = f"worst at {at.name}" if n > 1 or sides else ""
            if sides:
                note += f": {sides[0]:.3g} -> {sides[1]:.3g}"
            return MetricResult.judge(spec.name, value, bound, spec.direction, note)
        which = "lowest" if spec.direction == "min" else "highest"
        note = f"mean over {len(measured)} {unit}s; {which} {value:.3g} at {at.name}"
        if len(measured) < n:
            note += f"; {n - len(measured)} degenerate left out"
        mean = float(np.mean([v for v, _ in measured]))
        return MetricResult.judge(spec.name, mean, bound, spec.direction, note)
    if not all(spec.measure in it.sides for it in items):
        return None
    pairs = [it.sides[spec.measure] for it in items]
    if spec.aggregate == "mean_drop":
        sums = np.sum(np.asarray(pairs, np.float64), axis=0)
        if isinstance(pairs[0][0], bool):  # hits
            note = f"hits {int(sums[0])}/{n} -> {int(sums[1])}/{n}"
        else:
            note = f"mean over {n} {unit}s: {sums[0] / n:.3g} -> {sums[1] / n:.3g}"
        return MetricResult.judge(spec.name, (sums[0] - sums[1]) / n, bound, spec.direction, note)
    changed = [it.name for it in items if it.changed(spec.measure)]
    if spec.aggregate == "share_same":
        note = f"{n - len(changed)} of {n} {unit}s"
        return MetricResult.judge(spec.name, 1 - len(changed) / n, bound, spec.direction, note)
    note = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
    return MetricResult.judge(spec.name, len(changed), bound, spec.direction, note)


def _severity(item: _Item, specs: tuple[MetricSpec, ...], tol: Tolerance) -> float:
    """How far an item is from passing (MetricResult.distance of its measures against
    the bounds that judge them; a per-item bound before a mean's): > 1 fails, inf for
    a plain change (another class, a map that became or stopped being degenerate)."""
    if item.changed("class_index") or item.changed("degenerate"):
        return math.inf
    judging: dict[str, MetricSpec] = {}
    for spec in specs:
        if spec.measure in item.values and spec.aggregate in ("worst", "mean"):
            if spec.measure not in judging or spec.aggregate == "worst":
                judging[spec.measure] = spec
    return max(
        (
            MetricResult.judge(
                s.name, item.values[m], _resolved(getattr(tol, str(s.field))), s.direction
            ).distance
            for m, s in judging.items()
        ),
        default=0.0,
    )


def _worst_item(items: list[_Item], specs: tuple[MetricSpec, ...], tol: Tolerance) -> _Item:
    candidates = [
        it for it in items if it.values or it.changed("degenerate") or it.changed("class_index")
    ]
    if not candidates:
        return items[0]
    return max(candidates, key=lambda it: _severity(it, specs, tol))  # first on ties


def _details(
    kind: str, items: list[_Item], worst: _Item, extra: _Extra, tol: Tolerance, cross_backend: bool
) -> dict[str, Any]:
    n_out = sum(it.n_out for it in items)
    n_total = sum(it.n_total for it in items)
    details: dict[str, Any] = {
        "worst_item": worst.name,
        "share_out": n_out / n_total,
        "n_out": n_out,
        "n_total": n_total,
        "pixel_atol": float(_resolved(tol.pixel_atol)),
        "cross_backend": bool(cross_backend),
        "tolerance": tol.to_dict(),
        "notes": sorted({note for it in items for note in it.notes}),
        "per_item": {it.name: _item_facts(it) for it in items},
    }
    if kind == "heatmap":
        peaks = worst.sides.get("peak")
        details["peak_expected"] = list(peaks[0]) if peaks else None
        details["peak_obtained"] = list(peaks[1]) if peaks else None
        details["degenerate_expected"] = [it.sides["degenerate"][0] for it in items]
        details["degenerate_obtained"] = [it.sides["degenerate"][1] for it in items]
        if all("class_index" in it.sides for it in items):
            details["class_index_expected"] = [it.sides["class_index"][0] for it in items]
            details["class_index_obtained"] = [it.sides["class_index"][1] for it in items]
        if extra.layers is not None:
            details["layer_expected"], details["layer_obtained"] = extra.layers
        if extra.image_shape is not None:
            details["image_shape"] = list(extra.image_shape)
    return details


def _item_facts(item: _Item) -> dict[str, Any]:
    facts: dict[str, Any] = dict(item.values)
    facts["share_out"] = item.n_out / item.n_total if item.n_total else 0.0
    for fact in _SIDE_FACTS:
        if fact not in item.sides:
            continue
        expected, obtained = item.sides[fact]
        if fact == "peak":
            facts["peak_expected"], facts["peak_obtained"] = list(expected), list(obtained)
        elif fact != "degenerate" or (expected, obtained) != (False, False):
            facts[fact] = [expected, obtained]
    return facts


# The (expected, obtained) facts of an item, in the order report.json lists them.
_SIDE_FACTS = ("peak", "degenerate", "class_index", "box_energy", "pointing", "peak_where")
