"""What a retrain changed, split in two verdicts: it **predicts differently** (another
class on images the golden model was sure of, or changes that all go to one class) or
it **looks elsewhere** (the maps rank other pixels, the mass left the object box, or a
region of the image gained mass consistently).

NumPy only, like :mod:`convviz_check.metrics`, which calls it under the ``retrain``
profile.

**Region mass.** The share of a map's positive mass in a region of the input image,
measured by the rule of :func:`convviz_check.localization.energy_in_box`: the map is
resized bilinearly to the image and each pixel's mass counts where it lies, so a 7x7
map and a 64-px box agree with the localization judgment. The regions
(:func:`regions_for`):

- ``"border"``: the ring of width 1/8 of each side along the edges (the mass outside
  the inner box). An eighth is a cell of an 8x8 map and most of a cell of a 7x7 one
  (the usual last-conv grids): the ring holds the outer cells, where padding
  artefacts, frames, captions and watermarks live, and little of a centred object.
- ``"top_left"``, ``"top_right"``, ``"bottom_left"``, ``"bottom_right"``: squares of
  side 1/4 of the image's sides, 1/16 of its area. A quarter is two cells of an 8x8 map
  and 1.75 of a 7x7 map: large enough to hold a coarse map's corner cell whole (a small
  corner mark shows as mass in that cell and its neighbours: the shortcut example's
  8-px cue puts 89% of the mass in a 24-px corner of a 64-px image), small enough that
  an object near the middle puts little mass there.
- with object boxes: ``"box"`` (the object's box) and ``"outside"`` (1 - box);
- the user's regions (name -> :class:`~convviz_check.types.Box` in input pixels).

**A consistent shift** (:func:`region_shifts`): for a region R and a group G of images
(all images, and the images of each golden class with at least :data:`MIN_GROUP`), k
images of G whose R-mass grew by more than ``heatmap_region_growth``; the statistic is
k / |G| and the ``region_shift`` metric is the worst (region, group), bounded by
``heatmap_region_shift_share_max``. The growth counts from ``heatmap_region_growth`` in
a corner-sized region and from ``sqrt(area / CORNER_AREA)`` times it in a larger one
(:func:`growth_thresholds`): the mass of a larger region varies more between honest
retrains (measured: a corner's per-image growth has its 95th percentile at 0.010-0.056,
the border ring's at 0.065-0.091). A shortcut moves mass in the same direction in
every image it acts on, so a small shift in every image of one class fails, while a
retrain's scattered changes of the same mean pass. Growth is judged in every region but
``"box"``: a box that loses mass is ``"outside"`` growing.

**Changed predictions** (:func:`class_flips`): class agreement is counted on the images
whose golden probability of its class is at least :data:`CONFIDENT_PROBABILITY` when
the golden knows probabilities (every image counts otherwise): a retrain may flip an
image the golden model hesitated on, a shortcut flips images it was sure of. The
``class_flip_share`` metric is the share of the changed images that now explain one and
the same class, judged from :data:`MIN_FLIPS` changes on a model of more than two
classes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ComparisonError, LocalizationError
from .measures import peak_cell, region_name
from .types import Box, MetricResult, Tolerance

__all__ = [
    "BUILTIN_REGIONS",
    "CONFIDENT_PROBABILITY",
    "MIN_FLIPS",
    "MIN_GROUP",
    "VERDICTS",
    "VERDICT_OF",
    "Region",
    "box_facts",
    "class_flips",
    "groups_of",
    "growth_thresholds",
    "region_areas",
    "region_masses",
    "region_shifts",
    "regions_for",
    "retrain_evidence",
    "verdicts",
]

# The two verdicts of a retrain comparison, in the order a failing text leads with them.
VERDICTS = ("predicts differently", "looks elsewhere")
# retrain metric -> its verdict (every metric of the retrain profile has one).
VERDICT_OF = {
    "class_agreement": "predicts differently",
    "class_flip_share": "predicts differently",
    "spearman_mean": "looks elsewhere",
    "topk_iou_mean": "looks elsewhere",
    "box_energy_drop_mean": "looks elsewhere",
    "box_energy_drop": "looks elsewhere",
    "pointing_drop": "looks elsewhere",
    "region_shift": "looks elsewhere",
    "degenerate_changed": "looks elsewhere",  # a map that now shows nothing
}
BORDER_FRACTION = 1 / 8  # the border ring's width, per side (see the module docstring)
CORNER_FRACTION = 1 / 4  # a corner square's side, per side
# heatmap_region_growth is the growth that counts in a corner-sized region (1/16 of the
# image); a larger region's mass varies more between honest retrains, so its growth
# counts from sqrt(area / CORNER_AREA) times that (border 7/16: 2.6x).
CORNER_AREA = CORNER_FRACTION**2
BUILTIN_REGIONS = ("border", "top_left", "top_right", "bottom_left", "bottom_right")
BOX_REGIONS = ("box", "outside")
# A group smaller than this is not judged alone: one image of two growing is 50% by
# chance, and a retrain moves some image's mass somewhere.
MIN_GROUP = 3
# Softmax >= 0.5: the golden's class outweighed all other classes together, whatever
# the number of classes; below it the golden model itself hesitated.
CONFIDENT_PROBABILITY = 0.5
# Two changed images going to the same class is common chance; three is a direction.
MIN_FLIPS = 3


@dataclass(frozen=True)
class Region:
    """A region of the input image: ``box`` (None: each image's object box), or the
    mass outside it (``complement``)."""

    name: str
    box: Box | None
    complement: bool = False


def regions_for(
    image_shape: tuple[int, int],
    *,
    boxes: bool = False,
    user: Mapping[str, Any] | None = None,
) -> list[Region]:
    """The regions judged on images of ``image_shape``: the built-in ones, ``"box"`` and
    ``"outside"`` when object boxes are known, then the user's.

    Args:
        image_shape: ``(H, W)`` of the input images (the map's own shape for bare maps).
        boxes: object boxes are known (one per image).
        user: name -> :class:`~convviz_check.types.Box` (or 4 ints y0, x0, y1, x1) in
            input pixels.

    Returns:
        The regions, built-in first.

    Raises:
        LocalizationError: a user region that is not a box inside the image, or whose
            name is empty or a built-in's.

    Example:
        >>> [r.box.to_tuple() for r in regions_for((64, 64))[1:3]]
        [(0, 0, 16, 16), (0, 48, 16, 64)]
    """
    h, w = (int(v) for v in image_shape[:2])
    bh, bw = max(1, round(h * BORDER_FRACTION)), max(1, round(w * BORDER_FRACTION))
    ch, cw = max(1, round(h * CORNER_FRACTION)), max(1, round(w * CORNER_FRACTION))
    out = [Region("border", Box(bh, bw, max(bh + 1, h - bh), max(bw + 1, w - bw)), True)]
    out += [
        Region("top_left", Box(0, 0, ch, cw)),
        Region("top_right", Box(0, w - cw, ch, w)),
        Region("bottom_left", Box(h - ch, 0, h, cw)),
        Region("bottom_right", Box(h - ch, w - cw, h, w)),
    ]
    if boxes:
        out += [Region("box", None), Region("outside", None, True)]
    for name, value in (user or {}).items():
        out.append(Region(str(name), _user_box(name, value, (h, w))))
    return out


def _user_box(name: Any, value: Any, shape: tuple[int, int]) -> Box:
    taken = BUILTIN_REGIONS + BOX_REGIONS
    if not isinstance(name, str) or not name or name in taken:
        raise LocalizationError(
            f"regions= takes names other than the built-in ones {taken}. Received: {name!r}"
        )
    try:
        box = value if isinstance(value, Box) else Box(*value)
    except (TypeError, LocalizationError) as err:
        raise LocalizationError(
            f"regions[{name!r}] must be a Box (y0, x0, y1, x1 in input pixels). "
            f"Received: {value!r} ({err})"
        ) from None
    h, w = shape
    if box.y0 < 0 or box.x0 < 0 or box.y1 > h or box.x1 > w:
        raise LocalizationError(
            f"regions[{name!r}] lies outside the {h}x{w} image. Received: {box}. Expected "
            f"0 <= y0 < y1 <= {h} and 0 <= x0 < x1 <= {w} (half-open, input pixels)"
        )
    return box


def region_masses(
    maps: np.ndarray,
    degenerate: np.ndarray,
    image_shape: tuple[int, int],
    regions: list[Region],
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """The share of each map's positive mass in each region.

    Args:
        maps: ``(N, h, w)`` heatmaps.
        degenerate: ``(N,)`` bool: such a map is not measured (NaN).
        image_shape: ``(H, W)`` the regions refer to; each map is resized to it
            bilinearly, as :func:`~convviz_check.localization.energy_in_box` does.
        regions: from :func:`regions_for`.
        boxes: ``(N, 4)`` object boxes y0, x0, y1, x1, for the regions of ``box=None``.

    Returns:
        ``(N, len(regions))`` float64 in [0, 1]; NaN rows for degenerate maps, zeros for
        a map without positive mass. :func:`region_areas` gives the regions' areas.

    Example:
        >>> m = np.zeros((1, 4, 4)); m[0, 0, 0] = 1.0
        >>> region_masses(m, np.zeros(1, bool), (4, 4), regions_for((4, 4)))[0, :2].tolist()
        [1.0, 1.0]
    """
    shape = (int(image_shape[0]), int(image_shape[1]))
    out = np.full((len(maps), len(regions)), np.nan)
    for i, values in enumerate(maps):
        if degenerate[i]:
            continue
        positive = np.maximum(_at(values, shape), 0.0).astype(np.float64)
        total = float(positive.sum())
        for r, region in enumerate(regions):
            box = region.box
            if box is None:
                if boxes is None:
                    raise ComparisonError(f"region {region.name!r} needs object boxes")
                box = Box(*(int(v) for v in boxes[i]))
            inside = 0.0
            if total > 0.0:
                inside = min(1.0, float(positive[box.y0 : box.y1, box.x0 : box.x1].sum()) / total)
            out[i, r] = 1.0 - inside if region.complement and total > 0.0 else inside
    return out


def region_areas(
    n: int, image_shape: tuple[int, int], regions: list[Region], boxes: np.ndarray | None = None
) -> np.ndarray:
    """``(n, len(regions))``: each region's share of the image's area, per image (the
    object box differs from image to image)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    out = np.zeros((n, len(regions)))
    for r, region in enumerate(regions):
        if region.box is not None:
            area = np.full(n, region.box.area / (h * w))
        elif boxes is not None:
            rows = np.asarray(boxes, np.float64).reshape(n, 4)
            area = (rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1]) / (h * w)
        else:
            raise ComparisonError(f"region {region.name!r} needs object boxes")
        out[:, r] = 1.0 - area if region.complement else area
    return out


def growth_thresholds(growth: float, areas: np.ndarray) -> np.ndarray:
    """The growth that counts in regions of these ``areas`` (shares of the image):
    ``growth`` up to a corner's area, ``growth * sqrt(area / CORNER_AREA)`` above it.

    Example:
        >>> growth_thresholds(0.05, np.array([1 / 64, 1 / 16, 1 / 4])).round(3).tolist()
        [0.05, 0.05, 0.1]
    """
    return growth * np.sqrt(np.maximum(1.0, np.asarray(areas, np.float64) / CORNER_AREA))


def _at(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The map at ``shape`` (bilinear), as localization measures energy in a box."""
    if tuple(values.shape) == shape:
        return values
    from .render import resize_bilinear

    return resize_bilinear(values, shape)


def groups_of(classes: np.ndarray | None, n: int) -> dict[str, np.ndarray]:
    """The image groups judged: ``"all"`` (every image) and ``"class c"`` for each golden
    class with at least :data:`MIN_GROUP` images (indices into the batch)."""
    groups = {"all": np.arange(n)}
    if classes is not None:
        for c in sorted({int(v) for v in classes}):
            members = np.flatnonzero(classes == c)
            if len(members) >= MIN_GROUP and len(members) < n:
                groups[f"class {c}"] = members
    return groups


def region_shifts(
    expected: np.ndarray,
    obtained: np.ndarray,
    names: list[str],
    groups: Mapping[str, np.ndarray],
    growth: float | np.ndarray,
) -> list[dict[str, Any]]:
    """For every region (but ``"box"``) and group of at least :data:`MIN_GROUP` measured
    images: how many images' mass there grew by more than ``growth``.

    Args:
        expected, obtained: ``(N, R)`` region masses (:func:`region_masses`); a NaN row
            (a degenerate map on either side) is left out of every group.
        names: the R region names.
        groups: group name -> image indices (:func:`groups_of`).
        growth: the growth that counts: one number, or ``(N, R)`` per image and region
            (:func:`growth_thresholds`).

    Returns:
        One row per (region, group): ``region``, ``group``, ``k``, ``n``, ``share``
        (k / n), ``mean`` ([expected, obtained] mean mass over the group), ``growth``
        (the largest growth that counted in the group), worst first
        (largest share, then largest k, then the largest mean growth in units of the
        threshold; the order computed on ties).

    Example:
        >>> e = np.array([[0.0], [0.0], [0.0], [0.0]]); o = np.array([[0.1], [0.1], [0.0], [0.1]])
        >>> rows = region_shifts(e, o, ["top_left"], {"all": np.arange(4)}, 0.05)
        >>> rows[0]["k"], rows[0]["n"], rows[0]["share"]
        (3, 4, 0.75)
    """
    measured = ~(np.isnan(expected).any(axis=1) | np.isnan(obtained).any(axis=1))
    limit = np.broadcast_to(np.asarray(growth, np.float64), expected.shape)
    rows: list[dict[str, Any]] = []
    excess: list[float] = []
    for r, name in enumerate(names):
        if name == "box":
            continue
        for group, members in groups.items():
            idx = members[measured[members]]
            if len(idx) < MIN_GROUP:
                continue
            grown = obtained[idx, r] - expected[idx, r] > limit[idx, r]
            k = int(np.count_nonzero(grown))
            rows.append(
                {
                    "region": name,
                    "group": group,
                    "k": k,
                    "n": len(idx),
                    "share": k / len(idx),
                    "mean": [float(expected[idx, r].mean()), float(obtained[idx, r].mean())],
                    "growth": float(limit[idx, r].max()),
                }
            )
            change = obtained[idx, r] - expected[idx, r]
            excess.append(float(np.mean(change / np.maximum(limit[idx, r], 1e-12))))
    # on ties the row whose mean growth is the most thresholds: the corner a shortcut
    # moved the mass to rather than the border around it
    order = sorted(
        range(len(rows)),
        key=lambda i: (-rows[i]["share"], -rows[i]["k"], -excess[i], i),
    )
    return [rows[i] for i in order]


def class_flips(
    expected: np.ndarray,
    obtained: np.ndarray,
    probability: np.ndarray | None = None,
    confident: float = CONFIDENT_PROBABILITY,
) -> dict[str, Any]:
    """How the explained classes changed on the images the golden model was sure of.

    Args:
        expected, obtained: ``(N,)`` class per image (golden, now).
        probability: ``(N,)`` the golden model's probability of its class, or None
            (every image counts).
        confident: the least probability that counts as sure.

    Returns:
        ``n`` (images counted), ``n_all``, ``changed`` (count), ``towards`` ([class,
        count] of the new classes, most first), ``classes`` (distinct classes seen on
        either side), ``confident`` (the probability bound, None without
        probabilities).

    Example:
        >>> f = class_flips(np.array([0, 1, 2, 3]), np.array([5, 5, 2, 5]))
        >>> f["changed"], f["towards"]
        (3, [[5, 3]])
    """
    counted = np.ones(len(expected), bool)
    if probability is not None:
        counted = np.asarray(probability, np.float64) >= confident
    changed = counted & (expected != obtained)
    towards = Counter(int(c) for c in obtained[changed])
    return {
        "n": int(counted.sum()),
        "n_all": len(expected),
        "changed": int(changed.sum()),
        "towards": [[c, k] for c, k in sorted(towards.items(), key=lambda kv: (-kv[1], kv[0]))],
        "classes": len({int(c) for c in expected} | {int(c) for c in obtained}),
        "confident": None if probability is None else float(confident),
    }


def box_facts(
    e: np.ndarray,
    o: np.ndarray,
    degenerate: tuple[bool, bool],
    box: Box,
    image_shape: tuple[int, ...],
) -> dict[str, tuple[Any, Any]]:
    """Each side's energy in the box, pointing hit and where its peak lies, as
    ``(expected, obtained)`` pairs (a degenerate map counts as no energy and no hit,
    as in :mod:`convviz_check.localization`)."""
    from .localization import energy_in_box, pointing_game

    shape = tuple(image_shape[:2])
    energies, hits, where = [], [], []
    for values, flat in zip((e, o), degenerate, strict=True):
        if flat:
            energies.append(0.0)
            hits.append(False)
            where.append("nowhere (degenerate map)")
            continue
        energies.append(energy_in_box(values, box, image_shape=shape))
        hit = pointing_game(values, box, image_shape=shape)
        hits.append(hit)
        where.append("inside the box" if hit else region_name(peak_cell(values), values.shape))
    return {
        "box_energy": (energies[0], energies[1]),
        "pointing": (hits[0], hits[1]),
        "peak_where": (where[0], where[1]),
    }


# --------------------------------------------------------------------------------------
# The retrain evidence of one comparison
# --------------------------------------------------------------------------------------
def retrain_evidence(
    expected: Any,
    obtained: Any,
    tol: Tolerance,
    image_shape: tuple[int, ...] | None,
    boxes: np.ndarray | None = None,
    regions: Mapping[str, Any] | None = None,
) -> tuple[dict[str, MetricResult], dict[str, Any]]:
    """The ``region_shift``, ``class_agreement`` and ``class_flip_share`` metrics of two
    :class:`~convviz_check.heatmaps.Heatmaps` batches, and their JSON-ready details.

    Args:
        expected, obtained: the golden's and the new heatmaps (same shape); the golden's
            optional ``probability`` (its class's probability per image) restricts class
            agreement to confident images.
        tol: the resolved bounds (``heatmap_region_growth``,
            ``heatmap_region_shift_share_max``, ``heatmap_class_agreement_min``,
            ``heatmap_class_flip_share_max``).
        image_shape: ``(H, W)`` of the input images (None: the maps' own shape).
        boxes: ``(N, 4)`` object boxes, or None.
        regions: the user's regions (name -> Box in input pixels).

    Returns:
        ``(metrics, details)``: metrics absent when not measurable (classes unknown);
        details ``regions`` (name -> ``{"box": [y0, x0, y1, x1] or None (each image's
        object box), "outside": the mass outside that box}``), ``region_shift`` (the worst row of :func:`region_shifts`),
        ``region_growth``, ``by_class`` (per group: ``class``, ``n``, ``mass`` region
        -> [expected, obtained] mean, ``grown`` region -> k) and ``class_flips``.

    Raises:
        ComparisonError: a growth that is not a finite number >= 0.
        LocalizationError: a bad user region.
    """
    # the retrain profile's defaults always set it; a Tolerance built by hand may not
    growth = getattr(tol, "heatmap_region_growth", None)
    if growth is None or not np.isfinite(growth) or growth < 0:
        raise ComparisonError(
            f"heatmap_region_growth must be a finite number >= 0. Received: {growth!r}"
        )
    shape = tuple(int(v) for v in (image_shape or expected.maps.shape[1:])[:2])
    regs = regions_for((shape[0], shape[1]), boxes=boxes is not None, user=regions)
    names = [r.name for r in regs]
    e_mass = region_masses(expected.maps, expected.degenerate, (shape[0], shape[1]), regs, boxes)
    o_mass = region_masses(obtained.maps, obtained.degenerate, (shape[0], shape[1]), regs, boxes)
    groups = groups_of(expected.class_index, len(expected))
    limits = growth_thresholds(
        growth, region_areas(len(expected), (shape[0], shape[1]), regs, boxes)
    )
    rows = region_shifts(e_mass, o_mass, names, groups, limits)
    metrics: dict[str, MetricResult] = {}
    details: dict[str, Any] = {
        # name -> [y0, x0, y1, x1] (None: each image's object box) and whether the
        # region is the mass outside that box
        "regions": {
            r.name: {"box": list(r.box.to_tuple()) if r.box else None, "outside": r.complement}
            for r in regs
        },
        "region_growth": growth,
        "by_class": _by_class(rows, groups, names, e_mass, o_mass),
    }
    if rows:
        worst = rows[0]
        details["region_shift"] = worst
        metrics["region_shift"] = MetricResult.judge(
            "region_shift",
            worst["share"],
            tol.heatmap_region_shift_share_max,
            "max",
            f"{worst['region']}: {worst['k']} of {worst['n']} {_group_words(worst['group'])} "
            f"grew > {worst['growth']:.2g} (mean {worst['mean'][0]:.2f} -> {worst['mean'][1]:.2f})",
        )
    if expected.class_index is not None and obtained.class_index is not None:
        probability = getattr(expected, "probability", None)
        flips = class_flips(expected.class_index, obtained.class_index, probability)
        details["class_flips"] = flips
        metrics.update(_class_metrics(flips, tol))
    return metrics, details


def _group_words(group: str) -> str:
    return "images" if group == "all" else f"images of {group}"


def _by_class(
    rows: list[dict[str, Any]],
    groups: Mapping[str, np.ndarray],
    names: list[str],
    e_mass: np.ndarray,
    o_mass: np.ndarray,
) -> list[dict[str, Any]]:
    """Per group: its size, each region's mean mass (golden, now) and how many images
    grew there (the table a report shows)."""
    table = []
    for group, members in groups.items():
        idx = members[~(np.isnan(e_mass[members]).any(1) | np.isnan(o_mass[members]).any(1))]
        grown = {row["region"]: row["k"] for row in rows if row["group"] == group}
        table.append(
            {
                "class": None if group == "all" else int(group.split()[1]),
                "n": len(idx),
                "mass": {
                    name: (
                        [float(e_mass[idx, r].mean()), float(o_mass[idx, r].mean())]
                        if len(idx)
                        else None
                    )
                    for r, name in enumerate(names)
                },
                "grown": grown,
            }
        )
    return table


def _class_metrics(flips: Mapping[str, Any], tol: Tolerance) -> dict[str, MetricResult]:
    n, changed = flips["n"], flips["changed"]
    metrics = {}
    who = "confident images" if flips["confident"] is not None else "images"
    if n:
        note = f"{n - changed} of {n} {who}"
        if flips["confident"] is not None:
            note += f" (golden probability >= {flips['confident']:g}; {flips['n_all']} in all)"
        metrics["class_agreement"] = MetricResult.judge(
            "class_agreement", 1 - changed / n, tol.heatmap_class_agreement_min, "min", note
        )
    top_class, top = flips["towards"][0] if changed else (None, 0)
    bound = tol.heatmap_class_flip_share_max
    note = f"{top} of {changed} changed images now explain class {top_class}" if changed else ""
    if bound is not None and bound >= 1.0:
        bound = None  # a share never exceeds 1: called out, not judged (the default)
        note += "; reported, not judged" if note else "reported, not judged"
    elif changed < MIN_FLIPS or flips["classes"] <= 2:
        bound = None  # too few changes, or two classes: every change goes to the other
        note += "; not judged: " if note else "not judged: "
        note += (
            f"fewer than {MIN_FLIPS} changed images"
            if changed < MIN_FLIPS
            else "two classes (every change goes to the other one)"
        )
    metrics["class_flip_share"] = MetricResult.judge(
        "class_flip_share", top / changed if changed else 0.0, bound, "max", note
    )
    return metrics


# --------------------------------------------------------------------------------------
# The two verdicts
# --------------------------------------------------------------------------------------
def verdicts(metrics: Mapping[str, MetricResult]) -> dict[str, dict[str, Any]]:
    """Per verdict (:data:`VERDICTS`): ``failed`` and the names of its failing
    ``metrics`` (metrics of no verdict are left out)."""
    out: dict[str, dict[str, Any]] = {v: {"failed": False, "metrics": []} for v in VERDICTS}
    for name, metric in metrics.items():
        verdict = VERDICT_OF.get(name)
        if verdict is not None and not metric.ok:
            out[verdict]["failed"] = True
            out[verdict]["metrics"].append(name)
    return out
