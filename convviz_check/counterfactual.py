"""Counterfactual probes: paste a candidate cue into images and see what it does.

A model that learned a shortcut (a watermark, a corner tag, a ruler) changes its mind
when the cue is pasted into images of *other* classes: its predictions move towards the
cue's class and its map moves onto the cue. An honest model keeps its predictions, or
reshuffles a few low-confidence images among several classes (a pasted patch is out of
distribution for every model), and keeps its map on the objects.

So the statistics here are not "how many predictions changed" but, per class ``c``,
the **flip rate towards c**: of the images whose clean prediction is not ``c``, the
share whose cued prediction is ``c``; and the **cue mass**: the share of the map's
positive mass on the cue (bilinear map at image resolution, as
:func:`convviz_check.localization.energy_in_box` measures it). The judgment compares
both with the same statistics of the approved (golden) model.

Pure NumPy (plus the core's localization and report helpers): no Keras, no framework.
The fixture ``convviz.check_counterfactual`` computes the predictions and maps and
calls :func:`judge_counterfactual`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError, describe_array
from .heatmaps import Heatmaps
from .localization import energy_in_box, measure
from .report.localization import overlay_figure
from .types import Box, MetricResult, Outcome

__all__ = [
    "CORNERS",
    "DEFAULT_CELL_MARGIN",
    "DEFAULT_MARGIN",
    "DEFAULT_MAX_MASS_INCREASE",
    "DEFAULT_MAX_RATE_INCREASE",
    "corner_box",
    "judge_counterfactual",
    "measure_counterfactual",
    "paste_cue",
]

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
# Pixels between a corner-placed cue and the image's edges. 0: the cue touches the
# corner, as a corner tag or watermark in collected data usually does (and as the
# bundled shortcut example's mark does); pass margin= for a cue that sat inset.
DEFAULT_MARGIN = 0
# The cue's mass is measured on the cue's box grown by this many cells of the map on
# every side. A CAM cannot place a mark finer than its cells and its peak often lands
# on the cell next to the mark: on the bundled shortcut model (8-px mark in the corner,
# 8x8 map on 64-px images, the gate's 13 cued images) 11% of the mass falls on the
# mark's own pixels, 47% within one cell of it, 89% within two; the honest model puts
# 0.4% within one cell. One cell keeps mass on an object near the cue out.
DEFAULT_CELL_MARGIN = 1
# How much more often than the golden model the cue may flip images towards one class.
# An honest retrain of a low-confidence model reshuffles a few minor classes on pasted
# (out-of-distribution) images (4 of 14 images, none to the cue's class, seen on a
# user's model) but spreads those flips over several classes: with ~13 images of other
# classes, 2 to one class (0.15) pass, 3 (0.23) fail. A shortcut concentrates them on
# the cue's class: 9 of 14 (0.64) for a partial one; 1.0 for the bundled shortcut
# model, 0.0 for its honest model and its retrain.
DEFAULT_MAX_RATE_INCREASE = 0.2
# How much more of the map's mass the cue may hold than on the golden model. Measured on
# the bundled example (within one cell of the cue, the gate's 13 cued images): honest
# 0.004, retrain 0.002, shortcut 0.47. 0.15 fails a cue that draws a sixth of the map
# and leaves room for the noise between retrains.
DEFAULT_MAX_MASS_INCREASE = 0.15


# --------------------------------------------------------------------------- pasting
def _cue_parts(cue: Any) -> tuple[np.ndarray, np.ndarray]:
    """The cue's pixels ``(h, w, C)`` and its mask ``(h, w)`` bool (all True if none)."""
    mask: Any = None
    if isinstance(cue, tuple) and len(cue) == 2:
        cue, mask = cue
    patch = np.asarray(cue)
    if patch.ndim != 3 or 0 in patch.shape or not np.issubdtype(patch.dtype, np.number):
        raise InputError(
            "cue must be a numeric (h, w, C) patch, or a (patch, mask) pair. Received: "
            f"{describe_array('cue', patch)}"
        )
    if not np.isfinite(patch).all():
        raise InputError(f"cue holds NaN or inf. Received: {describe_array('cue', patch)}")
    if mask is None:
        return patch, np.ones(patch.shape[:2], bool)
    m = np.asarray(mask)
    if m.shape != patch.shape[:2] or not (
        m.dtype == np.bool_ or (np.issubdtype(m.dtype, np.number) and np.isin(m, (0, 1)).all())
    ):
        raise InputError(
            f"The cue's mask must be a boolean (h, w) array of the patch's size "
            f"{patch.shape[:2]}. Received: {describe_array('mask', m)}"
        )
    if not m.any():
        raise InputError("The cue's mask is empty: there is nothing to paste.")
    return patch, m.astype(bool)


def corner_box(
    corner: str, image_shape: tuple[int, int], cue_shape: tuple[int, int], margin: int
) -> Box:
    """The box of a ``cue_shape`` cue in ``corner`` of an ``image_shape`` image,
    ``margin`` pixels from both edges.

    Example:
        >>> corner_box("bottom_right", (64, 64), (8, 8), 0)
        Box(y0=56, x0=56, y1=64, x1=64)
    """
    if corner not in CORNERS:
        raise InputError(
            f"Unknown corner. Received: at={corner!r}. Expected a Box or one of {CORNERS}."
        )
    if isinstance(margin, bool) or not isinstance(margin, int | np.integer) or margin < 0:
        raise InputError(f"margin must be an int >= 0. Received: margin={margin!r}")
    (hh, ww), (h, w) = image_shape, cue_shape
    if h + margin > hh or w + margin > ww:
        raise InputError(f"A {h}x{w} cue with margin {margin} does not fit the {hh}x{ww} images.")
    y0 = int(margin) if corner.startswith("top") else hh - margin - h
    x0 = int(margin) if corner.endswith("left") else ww - margin - w
    return Box(y0, x0, y0 + h, x0 + w)


def paste_cue(
    images: Any, cue: Any, at: Box | str = "bottom_right", *, margin: int = DEFAULT_MARGIN
) -> tuple[np.ndarray, Box]:
    """Paste ``cue`` into every image.

    Args:
        images: ``(N, H, W, C)`` (or one ``(H, W, C)``) images, as the model takes them.
        cue: an ``(h, w, C)`` patch in the images' range and channels, or a
            ``(patch, mask)`` pair whose ``(h, w)`` boolean mask says which of the
            patch's pixels are pasted (a logo's shape).
        at: a :class:`~convviz_check.types.Box` of the patch's size (input pixels,
            half-open), or a corner: ``"top_left"``, ``"top_right"``,
            ``"bottom_left"``, ``"bottom_right"`` (default).
        margin: pixels between a corner-placed cue and the edges (default
            :data:`DEFAULT_MARGIN`, 0: touching the corner); ignored for a Box.

    Returns:
        ``(cued, box)``: a copy of the images (same dtype and shape) with the cue pasted,
        and the cue's Box.

    Raises:
        InputError: images or cue of the wrong shape, a cue with other channels or out
            of the images' dtype range, a box of another size or outside the images.

    Example:
        >>> cued, box = paste_cue(np.zeros((2, 4, 4, 1)), np.ones((2, 2, 1)), "top_left")
        >>> box, float(cued[:, :2, :2].min()), float(cued.sum())
        (Box(y0=0, x0=0, y1=2, x1=2), 1.0, 8.0)
    """
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or 0 in arr.shape or not np.issubdtype(arr.dtype, np.number):
        raise InputError(
            "images must be numeric (N, H, W, C) or one (H, W, C) image. Received: "
            f"{describe_array('images', arr)}"
        )
    patch, mask = _cue_parts(cue)
    if patch.shape[2] != arr.shape[3]:
        raise InputError(
            f"The cue must have the images' {arr.shape[3]} channel(s). Received: "
            f"{describe_array('cue', patch)}"
        )
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if patch.min() < info.min or patch.max() > info.max:
            raise InputError(
                f"The cue's values must fit the images' dtype {arr.dtype} "
                f"([{info.min}, {info.max}]). Received: {describe_array('cue', patch)}"
            )
    image_shape = (int(arr.shape[1]), int(arr.shape[2]))
    cue_shape = (int(patch.shape[0]), int(patch.shape[1]))
    if isinstance(at, Box):
        box = at
        if (box.height, box.width) != cue_shape:
            raise InputError(f"at= must be a box of the cue's size {cue_shape}. Received: {box}")
        if box.y0 < 0 or box.x0 < 0 or box.y1 > image_shape[0] or box.x1 > image_shape[1]:
            raise InputError(f"at= lies outside the {image_shape} images. Received: {box}")
    elif isinstance(at, str):
        box = corner_box(at, image_shape, cue_shape, margin)
    else:
        raise InputError(f"at must be a Box or one of {CORNERS}. Received: at={at!r}")
    cued = arr.copy()
    region = cued[:, box.y0 : box.y1, box.x0 : box.x1]
    region[:, mask] = patch[mask].astype(arr.dtype)
    return cued, box


# --------------------------------------------------------------------------- statistics
def _classes(values: Any, name: str, n: int | None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        if arr.ndim == 1 and arr.size and np.issubdtype(arr.dtype, np.floating):
            if np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
        if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(
                f"{name} must be a non-empty 1-D array of class indices. Received: "
                f"{describe_array(name, arr)}"
            )
    if (arr < 0).any():
        raise InputError(f"{name} holds a negative class. Received: {describe_array(name, arr)}")
    if n is not None and arr.size != n:
        raise InputError(f"{name} must hold {n} classes, one per image. Received: {arr.size}")
    return arr.astype(np.int64)


def mass_box(
    cue_box: Box, image_shape: tuple[int, int], map_shape: tuple[int, int], cell_margin: int
) -> Box:
    """``cue_box`` grown by ``cell_margin`` cells of an ``map_shape`` map on every side
    (a cell: ``image_shape / map_shape`` pixels, rounded up), clipped to the image."""
    dy = math.ceil(cell_margin * image_shape[0] / map_shape[0])
    dx = math.ceil(cell_margin * image_shape[1] / map_shape[1])
    return Box(
        max(0, cue_box.y0 - dy),
        max(0, cue_box.x0 - dx),
        min(image_shape[0], cue_box.y1 + dy),
        min(image_shape[1], cue_box.x1 + dx),
    )


def _masses(maps: Heatmaps, box: Box, image_shape: tuple[int, int]) -> np.ndarray:
    return np.array([energy_in_box(m, box, image_shape) for m in maps.maps], np.float64)


def measure_counterfactual(
    clean_class: Any,
    cued_class: Any,
    cued_maps: Any,
    cue_box: Box,
    *,
    clean_maps: Any = None,
    image_shape: Any = None,
    num_classes: int | None = None,
    cell_margin: int = DEFAULT_CELL_MARGIN,
) -> dict[str, Any]:
    """The counterfactual statistics, JSON-ready (what an Outcome's ``facts`` hold and
    what ``judge_counterfactual(reference=...)`` takes).

    Returns:
        A dict: ``n_images``; per class ``c`` (lists indexed by class) ``eligible``
        (images whose clean prediction is not ``c``), ``flipped`` (of those, the
        images whose cued prediction is ``c``) and ``towards_rate``
        (``flipped / eligible``, 0 when none is eligible); ``changed`` (images whose
        prediction changed at all); ``cue_mass`` (mean share of the cued maps' mass in
        ``mass_box``), ``clean_cue_mass`` (the same on the clean maps, or None);
        ``cue_box``, ``mass_box``, ``image_shape``; and per image ``per_image_mass``,
        ``per_image_clean_mass``, ``per_image_clean_class`` and ``per_image_cued_class``
        (what :func:`judge_counterfactual` takes; the ``per_image`` keys stay out of an
        Outcome's facts and of a written reference).
    """
    clean = _classes(clean_class, "clean_class", None)
    n = clean.size
    cued = _classes(cued_class, "cued_class", n)
    maps = Heatmaps.of(cued_maps, role="cued_maps", n=n)
    before = None if clean_maps is None else Heatmaps.of(clean_maps, role="clean_maps", n=n)
    if not isinstance(cue_box, Box):
        raise InputError(f"cue_box must be a Box. Received: cue_box={cue_box!r}")
    shape = _image_shape(image_shape, maps)
    if isinstance(cell_margin, bool) or not isinstance(cell_margin, int) or cell_margin < 0:
        raise InputError(f"cell_margin must be an int >= 0. Received: {cell_margin!r}")
    k = int(max(clean.max(), cued.max()) + 1)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < k:
            raise InputError(
                f"num_classes must be an int covering every class given ({k}). Received: "
                f"num_classes={num_classes!r}"
            )
        k = num_classes
    region = mass_box(cue_box, shape, tuple(maps.maps.shape[1:]), cell_margin)
    eligible = [int((clean != c).sum()) for c in range(k)]
    flipped = [int(((clean != c) & (cued == c)).sum()) for c in range(k)]
    mass = _masses(maps, region, shape)
    clean_mass = None if before is None else _masses(before, region, shape)
    return {
        "n_images": int(n),
        "eligible": eligible,
        "flipped": flipped,
        "towards_rate": [f / e if e else 0.0 for f, e in zip(flipped, eligible, strict=True)],
        "changed": int((clean != cued).sum()),
        "cue_mass": float(mass.mean()),
        "clean_cue_mass": None if clean_mass is None else float(clean_mass.mean()),
        "cue_box": list(cue_box.to_tuple()),
        "mass_box": list(region.to_tuple()),
        "image_shape": list(shape),
        "per_image_mass": [float(v) for v in mass],
        "per_image_clean_mass": None if clean_mass is None else [float(v) for v in clean_mass],
        "per_image_clean_class": [int(c) for c in clean],
        "per_image_cued_class": [int(c) for c in cued],
    }


def _image_shape(image_shape: Any, maps: Heatmaps) -> tuple[int, int]:
    if image_shape is not None:
        dims = tuple(int(d) for d in tuple(image_shape)[:2])
        if len(dims) != 2 or min(dims) <= 0:
            raise InputError(f"image_shape must be (H, W). Received: {image_shape!r}")
        return dims[0], dims[1]
    if maps.image_shape is not None:
        return maps.image_shape
    h, w = maps.maps.shape[1:]
    return int(h), int(w)


# --------------------------------------------------------------------------- judgment
# What judge_counterfactual reads from a measurement (measure_counterfactual's keys).
_MEASURED_KEYS = (
    "n_images",
    "eligible",
    "flipped",
    "towards_rate",
    "changed",
    "cue_mass",
    "clean_cue_mass",
    "cue_box",
    "mass_box",
    "image_shape",
    "per_image_mass",
    "per_image_clean_mass",
    "per_image_clean_class",
    "per_image_cued_class",
)


def _measured(measured: Any) -> dict[str, Any]:
    """``measured`` checked to be what :func:`measure_counterfactual` returns."""
    missing = (
        [k for k in _MEASURED_KEYS if k not in measured]
        if isinstance(measured, Mapping)
        else list(_MEASURED_KEYS)
    )
    if missing:
        received = (
            f"a dict without {missing}"
            if isinstance(measured, Mapping)
            else f"{type(measured).__name__}"
        )
        raise InputError(
            f"judge_counterfactual judges a measurement. Received: {received}. Expected the "
            "dict measure_counterfactual(clean_class, cued_class, cued_maps, cue_box, ...) "
            "returns (a reference without per-image values cannot be judged itself)."
        )
    return dict(measured)


def _reference(reference: Any, k: int) -> dict[str, Any] | None:
    """The golden model's statistics (a dict as :func:`measure_counterfactual` returns
    it, or an Outcome of this judgment), checked; None for none."""
    if reference is None:
        return None
    if isinstance(reference, Outcome):
        reference = reference.facts
    if not isinstance(reference, Mapping):
        raise InputError(
            "reference must be the golden model's counterfactual statistics (a dict as "
            f"measure_counterfactual returns it) or None. Received: {type(reference).__name__}"
        )
    rates, mass = reference.get("towards_rate"), reference.get("cue_mass")
    ok = (
        isinstance(rates, Sequence)
        and not isinstance(rates, str)
        and all(isinstance(r, int | float) and 0 <= r <= 1 for r in rates)
        and isinstance(mass, int | float)
        and 0 <= mass <= 1
    )
    if not ok or not isinstance(rates, Sequence):
        raise InputError(
            "reference needs 'towards_rate' (a rate in [0, 1] per class) and 'cue_mass' "
            f"(in [0, 1]). Received: keys {sorted(map(str, reference))}, "
            f"towards_rate={rates!r}, cue_mass={mass!r}"
        )
    if len(rates) != k:
        raise InputError(
            f"reference has flip rates for {len(rates)} classes; this run has {k}. The "
            "golden model's statistics must come from a model with the same classes."
        )
    return dict(reference)


def _bound(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InputError(f"{name} must be a number in [0, 1]. Received: {name}={value!r}")
    return float(value)


def _name(c: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and c < len(class_names):
        return f"class {c} ({class_names[c]!r})"
    return f"class {c}"


def _lead(stats: dict[str, Any], ref: dict[str, Any] | None, worst: int, label: str) -> str:
    flipped, eligible = stats["flipped"][worst], stats["eligible"][worst]
    # Each model's count is out of the images it does not already put in the class
    # without the cue (an image already there cannot flip to it), so the two counts'
    # totals differ where the models differ on the clean images: said in words, since
    # "13 of 13 (golden: 0 of 12)" read as a miscount.
    text = (
        f"the cue flips {flipped} of the {eligible} images this model does not already put "
        f"in {label} into that class"
    )
    if ref is not None:
        if "flipped" in ref and "eligible" in ref and worst < len(ref["flipped"]):
            text += (
                f" (golden model: {ref['flipped'][worst]} of the {ref['eligible'][worst]} "
                "it does not already put there)"
            )
        else:
            text += f" (golden model: {ref['towards_rate'][worst]:.0%})"
    text += f"; {stats['cue_mass']:.0%} of the map's mass sits on the cue"
    if ref is not None:
        text += f" (golden: {ref['cue_mass']:.0%})"
    elif stats["clean_cue_mass"] is not None:
        text += f" (without the cue: {stats['clean_cue_mass']:.0%})"
    return text


def judge_counterfactual(
    measured: Mapping[str, Any],
    *,
    reference: Any = None,
    cued_maps: Any = None,
    images: Any = None,
    class_names: Sequence[str] | None = None,
    max_rate_increase: float = DEFAULT_MAX_RATE_INCREASE,
    max_mass_increase: float = DEFAULT_MAX_MASS_INCREASE,
) -> Outcome:
    """Judge what a pasted cue does to a model, against the golden model.

    Args:
        measured: the model's statistics on the cued images, as
            :func:`measure_counterfactual` returns them (predictions with and without
            the cue, the cued maps, the cue's box: measured once, judged here).
        reference: the golden model's statistics on the same images and cue (a dict
            as :func:`measure_counterfactual` returns it, the ``facts`` of its
            Outcome, or that Outcome), or None: then the golden model is taken to flip
            nothing and to put the clean maps' mass on the cue's place (0 when no
            clean maps were measured).
        cued_maps: the maps of the cued images (as measured), for the picture only
            (no picture without them).
        images: the cued images, for the picture only.
        class_names: names printed next to class indices.
        max_rate_increase: the most the flip rate towards any one class may exceed the
            golden model's (default :data:`DEFAULT_MAX_RATE_INCREASE`, 0.2).
        max_mass_increase: the most the cue's share of the map may exceed the golden
            model's (default :data:`DEFAULT_MAX_MASS_INCREASE`, 0.15).

    Returns:
        An :class:`~convviz_check.types.Outcome` (judgment ``"counterfactual"``): the
        metrics ``towards_rate_increase`` and ``cue_mass_increase`` against their
        bounds, ``towards_rate`` (the worst class's) and ``cue_mass`` reported; one
        item per image; the facts of :func:`measure_counterfactual` with
        ``worst_class`` and the ``reference`` used; with ``cued_maps`` the picture
        ``cued``: the first cued images (those flipped to the worst class first) with
        their maps, the cue in green.

    Raises:
        InputError: ``measured`` is not what :func:`measure_counterfactual` returns, a
            malformed reference or bounds.

    Example:
        >>> maps = np.ones((4, 8, 8))
        >>> stats = measure_counterfactual([0, 1, 2, 2], [0, 1, 0, 0], maps,
        ...                                Box(0, 0, 2, 2), image_shape=(8, 8))
        >>> out = judge_counterfactual(stats, cued_maps=maps)
        >>> out.status, out.facts["worst_class"], out.facts["flipped"][0]
        ('failed', 0, 2)
    """
    rate_bound = _bound(max_rate_increase, "max_rate_increase")
    mass_bound = _bound(max_mass_increase, "max_mass_increase")
    stats = _measured(measured)
    k = len(stats["towards_rate"])
    ref = _reference(reference, k)
    ref_rates = np.zeros(k) if ref is None else np.asarray(ref["towards_rate"], np.float64)
    ref_mass = ref["cue_mass"] if ref is not None else (stats["clean_cue_mass"] or 0.0)
    increase = np.asarray(stats["towards_rate"]) - ref_rates
    worst = int(np.argmax(increase))  # ties: the lowest class
    label = _name(worst, class_names)
    metrics = {
        "towards_rate_increase": MetricResult.judge(
            "towards_rate_increase", float(increase[worst]), rate_bound, "max", note=label
        ),
        "cue_mass_increase": MetricResult.judge(
            "cue_mass_increase", stats["cue_mass"] - float(ref_mass), mass_bound, "max"
        ),
        "towards_rate": MetricResult.judge(
            "towards_rate", stats["towards_rate"][worst], None, "max", note=label
        ),
        "cue_mass": MetricResult.judge("cue_mass", stats["cue_mass"], None, "max"),
    }
    facts = {**stats, "worst_class": worst, "reference": ref}
    if class_names is not None:
        facts["class_names"] = list(class_names)
    facts = {k_: v for k_, v in facts.items() if not k_.startswith("per_image")}
    items = _items(stats, worst, class_names)
    pictures = {} if cued_maps is None else {"cued": _picture(cued_maps, images, stats, worst)}
    lead = _lead(stats, ref, worst, label)
    failures = []
    if not metrics["towards_rate_increase"].ok:
        failures.append(
            f"the flip rate towards {label} is {increase[worst]:.2f} above the golden "
            f"model's (bound {rate_bound:.2f})"
        )
    if not metrics["cue_mass_increase"].ok:
        baseline = (
            "on the golden model"
            if ref is not None
            else "without the cue"
            if stats["clean_cue_mass"] is not None
            else "none (no golden model, no clean maps)"
        )
        failures.append(
            f"the cue holds {metrics['cue_mass_increase'].value:.2f} more of the map's mass "
            f"than {baseline} (bound {mass_bound:.2f})"
        )
    if not failures:
        return Outcome("counterfactual", "passed", lead, "", metrics, items, pictures, facts)
    message = _message(lead, failures, stats, ref_rates, class_names)
    return Outcome("counterfactual", "failed", lead, message, metrics, items, pictures, facts)


def _message(
    lead: str,
    failures: list[str],
    stats: dict[str, Any],
    ref_rates: np.ndarray,
    class_names: Sequence[str] | None,
) -> str:
    lines = [f"A pasted cue moves the model: {lead}.", *(f"  {f}" for f in failures)]
    lines.append(
        "  flips towards each class, of the images the model does not already put in it "
        "without the cue:"
    )
    for c, (f, e) in enumerate(zip(stats["flipped"], stats["eligible"], strict=True)):
        rate = f / e if e else 0.0
        lines.append(
            f"    {_name(c, class_names)}: {f} of {e} ({rate:.0%}; golden {ref_rates[c]:.0%})"
        )
    lines.append(
        f"  predictions changed on {stats['changed']} of {stats['n_images']} images; the cue "
        f"at {tuple(stats['cue_box'])}, its mass measured in {tuple(stats['mass_box'])}"
    )
    return "\n".join(lines)


def _items(
    stats: dict[str, Any], worst: int, class_names: Sequence[str] | None
) -> dict[str, dict[str, Any]]:
    clean, cued = stats["per_image_clean_class"], stats["per_image_cued_class"]
    items = {}
    for i in range(stats["n_images"]):
        facts: dict[str, Any] = {
            "clean": int(clean[i]),
            "cued": int(cued[i]),
            "flipped_to_worst": bool(clean[i] != worst and cued[i] == worst),
            "cue_mass": stats["per_image_mass"][i],
        }
        if class_names is not None:
            for key in ("clean", "cued"):
                c = facts[key]
                facts[key] = f"{c} {class_names[c]}" if c < len(class_names) else str(c)
        if stats["per_image_clean_mass"] is not None:
            facts["clean_cue_mass"] = stats["per_image_clean_mass"][i]
        facts["ok"] = not facts["flipped_to_worst"]
        items[f"image {i}"] = facts
    return items


# Cued images shown in the picture: the first flipped towards the worst class first.
PICTURE_IMAGES = 4


def _picture(cued_maps: Any, images: Any, stats: dict[str, Any], worst: int) -> np.ndarray:
    """Up to :data:`PICTURE_IMAGES` cued images side by side, each with its map, the
    cue in green, the map's box in cyan and its peak in magenta."""
    maps = Heatmaps.of(cued_maps, role="cued_maps", n=stats["n_images"])
    shape = tuple(stats["image_shape"])
    cue_box = Box(*stats["cue_box"])
    clean = np.asarray(stats["per_image_clean_class"], np.int64)
    cued = np.asarray(stats["per_image_cued_class"], np.int64)
    flipped = (clean != worst) & (cued == worst)
    order = [*np.flatnonzero(flipped), *np.flatnonzero(~flipped)][:PICTURE_IMAGES]
    batch = None if images is None else np.asarray(images)
    tiles = []
    for i in order:
        result = measure(maps.maps[i], cue_box, shape)
        image = None if batch is None else batch[i]
        tiles.append(overlay_figure(maps.maps[i], result, None, image))
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([p for t in tiles for p in (t, gap)][:-1], axis=1)
