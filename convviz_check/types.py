"""Value types and the constants that exist once (plain dataclasses, NumPy only).

Every module shares these instead of inventing its own; none of them imports Keras.

Vocabulary:
- a **technique** is what is computed: ``"activations"``, ``"gradcam"``, ``"filters"``
  (the ``what=`` of cross-backend checks);
- its result has a **kind**, which decides how it is compared: ``"activation"``,
  ``"heatmap"``, ``"pattern"``;
- an :class:`~convviz_check.artifacts.Artifact` stores a result in one of three
  **layouts**: ``"array"`` (one array), ``"activations"`` (layer -> array) or
  ``"gradcam"`` (the arrays of a :class:`GradCAM`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .errors import ConvvizError, InputError, LocalizationError

BACKENDS = ("tensorflow", "torch", "jax")
# The backend whose goldens are the neutral ones, unless the project says otherwise.
DEFAULT_REFERENCE_BACKEND = "tensorflow"
# Names people type for a backend, and the Keras name they mean (for error messages).
BACKEND_ALIASES = {"pytorch": "torch", "tf": "tensorflow", "tensorflow-cpu": "tensorflow"}
KINDS = ("activation", "heatmap", "pattern")
LAYOUTS = ("array", "activations", "gradcam")
TECHNIQUES = ("activations", "gradcam", "filters")
KIND_OF = {"activations": "activation", "gradcam": "heatmap", "filters": "pattern"}
# What one item of a result is called in reports (one layer, image or filter).
ITEM_UNIT = {"activation": "layer", "heatmap": "image", "pattern": "filter"}

# The metrics of each kind: (metric name, the Tolerance field that bounds it,
# direction). "max": an error that must stay <= its bound; "min": a similarity that
# must stay >= its bound.
METRICS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "activation": (
        ("max_rel", "activation_max_rel", "max"),
        ("mean_rel", "activation_mean_rel", "max"),
    ),
    "heatmap": (
        ("max_abs", "heatmap_max_abs", "max"),
        ("rms", "heatmap_rms", "max"),
        ("pearson", "heatmap_pearson_min", "min"),
        ("ssim", "heatmap_ssim_min", "min"),
        ("peak_shift", "heatmap_peak_shift_cells", "max"),
        ("topk_iou", "heatmap_topk_iou_min", "min"),
    ),
    "pattern": (
        ("ssim", "pattern_ssim_min", "min"),
        ("pearson", "pattern_pearson_min", "min"),
    ),
}

# Gate profiles: "exact" judges with METRICS (bounds at numerical noise: a refactor, a
# Keras upgrade, a backend switch, same weights); "retrain" judges heatmaps on what
# survives an independent retraining (rank agreement, the hot region, the explained
# class, the object box), activations by linear CKA (unchanged when a retrain permutes
# or rotates a layer's channels); filter patterns by pattern_response (a golden with a
# response record), not here. Per-image values are averaged ("_mean") where one
# image's map may legitimately move between retrains; box energy is bounded per
# image too. The box metrics need object boxes (``convviz.check(..., boxes=...)``).
PROFILES = ("exact", "retrain")
RETRAIN_METRICS: dict[str, tuple[tuple[str, str, str], ...]] = {
    # linear CKA of each layer (measures.linear_cka), the worst layer's
    "activation": (("cka", "activation_cka_min", "min"),),
    "heatmap": (
        ("spearman_mean", "heatmap_spearman_mean_min", "min"),
        ("topk_iou_mean", "heatmap_topk_iou_mean_min", "min"),
        ("class_agreement", "heatmap_class_agreement_min", "min"),
        ("class_flip_share", "heatmap_class_flip_share_max", "max"),
        ("box_energy_drop_mean", "heatmap_box_energy_drop_mean", "max"),
        ("box_energy_drop", "heatmap_box_energy_drop", "max"),
        ("pointing_drop", "heatmap_pointing_drop", "max"),
        ("region_shift", "heatmap_region_shift_share_max", "max"),
    ),
    "pattern": (),
}
PROFILE_METRICS = {"exact": METRICS, "retrain": RETRAIN_METRICS}


def bound_distance(value: float, bound: float | None, direction: str) -> float:
    """How far ``value`` is from its bound, in units of the allowed slack: <= 1 passes,
    > 1 fails, ``inf`` when there is no slack at all.

    Errors (``direction="max"``): ``value / bound``. Similarities (``"min"``, at most
    1): ``(1 - value) / (1 - bound)``. This one rule ranks the worst layer, image or
    filter of a comparison and the worst backend pair of an agreement report.
    """
    if bound is None or not math.isfinite(value):
        return 0.0 if bound is None else math.inf
    if direction == "max":
        if bound > 0:
            return value / bound
        return math.inf if value > 0 else 0.0
    slack, gap = 1.0 - bound, 1.0 - value
    if slack > 0:
        return gap / slack
    return math.inf if gap > 0 else 0.0


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in input-image pixels, half-open: rows ``[y0, y1)``, cols ``[x0, x1)``."""

    y0: int
    x0: int
    y1: int
    x1: int

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise LocalizationError(
                    f"Box coordinates must be integers. Received: {f.name}={v!r} "
                    f"(type {type(v).__name__})"
                )
            object.__setattr__(self, f.name, int(v))
        if self.y1 <= self.y0 or self.x1 <= self.x0:
            raise LocalizationError(
                "Box must be non-empty with y0 < y1 and x0 < x1 (half-open). "
                f"Received: Box(y0={self.y0}, x0={self.x0}, y1={self.y1}, x1={self.x1})"
            )

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return self.height * self.width

    def contains(self, y: float, x: float) -> bool:
        return self.y0 <= y < self.y1 and self.x0 <= x < self.x1

    def to_tuple(self) -> tuple[int, int, int, int]:
        return (self.y0, self.x0, self.y1, self.x1)


@dataclass(frozen=True, eq=False)
class GradCAM:
    """Result of :func:`convviz_check.cam` (and :func:`convviz_check.gradcam`) for a
    batch of N images.

    Attributes:
        heatmap: ``(N, h, w)`` float32 in [0, 1]; zeros where ``degenerate``.
        raw: ``(N, h, w)`` float32, the method's map before ReLU and scaling (Grad-CAM:
            ``sum_k alpha_k A_k``).
        class_index: ``(N,)`` int64, the class explained per image (-1 for a callable
            target).
        score: ``(N,)`` float32, the target score (``y_c``, or the callable's value)
            that was explained.
        score_kind: ``"logit"`` or ``"output"``.
        layer: name of the target layer (qualified for nested models).
        degenerate: ``(N,)`` bool, maps that carry no information (the class
            score barely depends on the layer, or the map is all zero).
        image_shape: ``(H, W)`` of the input images, for resizing and overlays.
        note: a fact about the target layer worth reading (e.g. it is a class-score
            convolution, and which spatial layer is the alternative); empty otherwise.
        method: the CAM method that made the maps (``"gradcam"``, ``"gradcam++"``,
            ``"xgradcam"``, ``"hirescam"``, ``"layercam"``, ``"scorecam"``,
            ``"eigencam"``); goldens written before methods existed read as
            ``"gradcam"``.
        target: what was explained: ``"class:top"`` (each image's top class),
            ``"class:3"``, ``"class:per-image"`` (one given class per image, in
            ``class_index``) or ``"callable:<qualname>"`` (a score function; then
            ``class_index`` is -1 per image), with ``"@<output name>"`` appended on a
            multi-output model; ``""`` where not recorded (older goldens, values
            built by hand).
        probability: ``(N,)`` float32, the model's probability of the explained class
            per image (the softmax of the logits where the CAM scored a logit under a
            softmax head, the sigmoid under a sigmoid head, the output itself where it
            scored a softmax/sigmoid output); None for a callable target, a head whose
            outputs are not probabilities, older goldens and values built by hand.
    """

    heatmap: np.ndarray
    raw: np.ndarray
    class_index: np.ndarray
    score: np.ndarray
    score_kind: str
    layer: str
    degenerate: np.ndarray
    image_shape: tuple[int, int]
    note: str = ""
    method: str = "gradcam"
    target: str = ""
    probability: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.heatmap.shape[0])

    def __getitem__(self, i: int | slice) -> GradCAM:
        """One image's (or a slice's) result, still a batch with a leading axis."""
        idx = slice(i, (i + 1) or None) if isinstance(i, int | np.integer) else i
        return GradCAM(
            heatmap=self.heatmap[idx],
            raw=self.raw[idx],
            class_index=self.class_index[idx],
            score=self.score[idx],
            score_kind=self.score_kind,
            layer=self.layer,
            degenerate=self.degenerate[idx],
            image_shape=self.image_shape,
            note=self.note,
            method=self.method,
            target=self.target,
            probability=None if self.probability is None else self.probability[idx],
        )


@dataclass(frozen=True)
class MetricResult:
    """One metric of a comparison: its value, its bound and whether it is within it.

    ``direction`` is ``"max"`` when the value must stay at or below the bound (errors)
    and ``"min"`` when it must stay at or above it (similarities).
    """

    name: str
    value: float
    bound: float | None
    ok: bool
    direction: str = "max"
    note: str = ""

    @classmethod
    def judge(
        cls, name: str, value: float, bound: float | None, direction: str = "max", note: str = ""
    ) -> MetricResult:
        """The one pass rule: an error (``"max"``) passes at or below its bound, a
        similarity (``"min"``) at or above it; NaN never passes a bound; no bound
        (``None``): reported, not judged (always ok)."""
        if direction not in ("max", "min"):
            raise InputError(f"direction must be 'max' or 'min'. Received: direction={direction!r}")
        value = float(value)
        if bound is None:
            ok = True
        elif direction == "max":
            ok = value <= bound
        else:
            ok = value >= bound
        return cls(name, value, None if bound is None else float(bound), bool(ok), direction, note)

    @property
    def distance(self) -> float:
        """Distance to the bound (see :func:`bound_distance`): <= 1 exactly when the
        metric passed, > 1 when it failed (``bound_distance`` rounds, so a value one ulp
        past its bound may compute as 1: it is reported just beyond); a failed metric
        with no bound is infinitely far."""
        if self.bound is None or not math.isfinite(self.value):
            return 0.0 if self.ok else math.inf
        d = bound_distance(self.value, self.bound, self.direction)
        return min(d, 1.0) if self.ok else max(d, math.nextafter(1.0, math.inf))

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "bound": self.bound,
            "ok": self.ok,
            "direction": self.direction,
            "note": self.note,
        }


@dataclass(frozen=True)
class Comparison:
    """Outcome of :func:`convviz_check.compare`.

    Attributes:
        kind: ``"activation"``, ``"heatmap"`` or ``"pattern"``.
        metrics: metric name -> :class:`MetricResult`.
        passed: every metric within its bound (and degeneracy consistent).
        degenerate: ``(expected_degenerate, obtained_degenerate)`` when known.
        text: human-readable summary, leading with the plainest change.
        details: extra facts for reports (peak positions, share out of tolerance...).
    """

    kind: str
    metrics: dict[str, MetricResult]
    passed: bool
    degenerate: tuple[bool, bool] = (False, False)
    text: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.passed


@dataclass(frozen=True)
class Tolerance:
    """Bounds for :func:`convviz_check.compare`, one field per metric.

    ``None`` on a field means "use the default of the table in
    :mod:`convviz_check.tolerances`" for the kind and setting (same backend or cross
    backend). Errors (``*_max``) are upper bounds, similarities (``*_min``) lower.
    """

    # activation
    activation_max_rel: float | None = None
    activation_mean_rel: float | None = None
    activation_scale_floor: float | None = None
    # activation, retrain profile (see RETRAIN_METRICS)
    activation_cka_min: float | None = None
    # heatmap
    heatmap_max_abs: float | None = None
    heatmap_rms: float | None = None
    heatmap_pearson_min: float | None = None
    heatmap_ssim_min: float | None = None
    heatmap_peak_shift_cells: float | None = None
    heatmap_topk_iou_min: float | None = None
    # heatmap, retrain profile (see RETRAIN_METRICS)
    heatmap_spearman_mean_min: float | None = None
    heatmap_topk_iou_mean_min: float | None = None
    heatmap_class_agreement_min: float | None = None
    heatmap_box_energy_drop_mean: float | None = None
    heatmap_box_energy_drop: float | None = None
    heatmap_pointing_drop: float | None = None
    heatmap_class_flip_share_max: float | None = None
    heatmap_region_shift_share_max: float | None = None
    # the per-image growth of a region's mass that region_shift counts (not a bound)
    heatmap_region_growth: float | None = None
    # pattern
    pattern_ssim_min: float | None = None
    pattern_pearson_min: float | None = None
    # pattern, retrain profile (convviz_check.pattern_response: its DEFAULT_MAX_GAP)
    pattern_response_gap_max: float | None = None
    # pixel-wise tolerance used only for the "share of pixels out of tolerance" fact
    pixel_atol: float | None = None

    def merged(self, other: Tolerance | None) -> Tolerance:
        """Fields set in ``other`` override this one's."""
        if other is None:
            return self
        values = {
            f.name: (
                getattr(other, f.name)
                if getattr(other, f.name) is not None
                else getattr(self, f.name)
            )
            for f in fields(self)
        }
        return Tolerance(**values)

    def to_dict(self) -> dict[str, float]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tolerance:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConvvizError(
                f"Unknown tolerance field(s) {unknown}. Expected any of {sorted(known)}."
            )
        return cls(**{k: (None if v is None else float(v)) for k, v in data.items()})


def is_finite_number(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


@dataclass(frozen=True)
class Localization:
    """Every localization fact about one heatmap and target (what assertions report).

    Attributes:
        pointing: pointing-game hit.
        energy: share of positive mass in the target.
        iou: IoU of the thresholded region with the target.
        peaks: ``(k, 2)`` (row, col) of the pixels tied at the max, at the measuring
            resolution (empty for an all-zero map).
        target_box: the Box, or the bounding box of the mask.
        heatmap_box: the Grad-CAM paper's box, or None.
        image_shape: the measuring resolution ``(H, W)``.
        degenerate: the map came from a degenerate GradCAM.
    """

    pointing: bool
    energy: float
    iou: float
    peaks: np.ndarray
    target_box: Box
    heatmap_box: Box | None
    image_shape: tuple[int, int]
    degenerate: bool


# --------------------------------------------------------------------------- outcomes
# What a judgment judged; each kind is one section of report.json / report.html.
JUDGMENTS = (
    "golden",
    "localization",
    "faithfulness",
    "randomization",
    "agreement",
    "counterfactual",
    "pattern_response",
)
# "passed" / "failed" for every judgment; golden checks add "missing", "written",
# "error" and "skipped" (see convviz_check.checks).
OUTCOME_STATUSES = ("passed", "failed", "missing", "written", "error", "skipped")


@dataclass(frozen=True, eq=False)
class Outcome:
    """What one judgment found: the record every assertion leaves for the report.

    A ``judge_*`` function returns one; ``assert_*`` raises when it is not ``ok``; the
    pytest fixture records every Outcome of a test, so that ``report.json`` and
    ``report.html`` show the localization, faithfulness, randomization and agreement
    results next to the golden checks.

    Attributes:
        judgment: one of ``JUDGMENTS``.
        status: ``"passed"`` or ``"failed"`` (golden checks: see OUTCOME_STATUSES).
        lead: the plainest line: what failed and by how much, or what held.
        message: the whole text a person reads on failure (starts with ``lead``).
        metrics: name -> :class:`MetricResult` (the value against its bound).
        items: per item (image, pair, layer) -> JSON-ready facts, in order.
        pictures: role -> uint8 image ``(H, W, 3)`` for the report (written by the
            report layer, never by a judge).
        facts: more JSON-ready facts (the seed count of a random baseline, the class
            tracked...).
    """

    judgment: str
    status: str
    lead: str
    message: str = ""
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    pictures: dict[str, np.ndarray] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.judgment not in JUDGMENTS:
            raise InputError(
                f"Unknown judgment. Received: judgment={self.judgment!r}. Expected one of "
                f"{JUDGMENTS}."
            )
        if self.status not in OUTCOME_STATUSES:
            raise InputError(
                f"Unknown status. Received: status={self.status!r}. Expected one of "
                f"{OUTCOME_STATUSES}."
            )

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "written", "skipped")

    @property
    def text(self) -> str:
        """The message, or the lead when there is no more to say."""
        return self.message or self.lead

    def to_entry(self) -> dict[str, Any]:
        """The JSON-ready record of ``report.json`` (pictures excluded: the report
        layer writes them and adds their paths)."""
        return {
            "judgment": self.judgment,
            "kind": self.judgment,
            "status": self.status,
            "lead": self.lead,
            "message": self.message if self.status != "passed" else "",
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "per_item": self.items,
            "facts": self.facts,
        }


def check_token_grid(token_grid: Any) -> tuple[int, int, int] | None:
    """``token_grid`` (a vision transformer's token grid, ``cc.cam(..., token_grid=)``)
    as three Python ints ``(h, w, prefix)``, or ``None``. One rule for the library and
    for the parent of a cross-backend run (which imports no framework).

    Raises:
        InputError: not three integers with ``h, w >= 1`` and ``prefix >= 0``.
    """
    if token_grid is None:
        return None
    ok = isinstance(token_grid, list | tuple | np.ndarray) and len(token_grid) == 3
    ok = ok and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in token_grid)
    if not ok or min(token_grid[:2]) < 1 or token_grid[2] < 0:
        raise InputError(
            f"token_grid must be (height, width, prefix tokens): three integers, height "
            f"and width >= 1, prefix >= 0. Received: token_grid={token_grid!r}. Expected "
            "e.g. (14, 14, 1) for a ViT-B/16 at 224 px with a class token."
        )
    h, w, prefix = (int(v) for v in token_grid)
    return h, w, prefix
