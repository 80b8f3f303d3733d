"""The faithfulness judgment, pure NumPy: does a map's deletion / insertion curve beat
the random maps' and the wrong class's by a margin?

:func:`judge_faithful` takes :class:`Curves` already measured (by
:mod:`convviz_check.faithfulness`, which runs the model) and returns an
:class:`~convviz_check.types.Outcome`; ``assert_faithful`` raises when it is not ok,
and the pytest fixture records it in the report. No Keras, no framework: the judgment
can be replayed and tested on plain arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..types import MetricResult, Outcome

__all__ = [
    "DEFAULT_ASSERT_METRIC",
    "DEFAULT_MARGIN",
    "RANDOM_DRAWS",
    "Confidence",
    "Curves",
    "curves_chart",
    "judge_faithful",
]

METRICS = ("deletion", "insertion")

# assert_faithful's margin, in AUC units (probability x fraction of pixels), and its
# metric. Measured by benchmarks/calibrate_faithful.py (TF, Grad-CAM, default steps,
# RISE's blur, RANDOM_DRAWS draws; scenes of seeds 0-11 at 4 and 8 images, the bundled
# convnet and xception: 48 batches per metric):
# - insertion (from the blur): the map leads the random draws' mean by at least 0.204
#   and the least likely class's map by at least 0.271; an inverted map (1 - map)
#   trails the random mean by at least 0.270. Every good map passes 0.05, no inverted
#   one. (With one random draw and a mirrored blur, before: >= 0.095 / 0.26 / 0.30.)
# - deletion to black: a good map missed 0.05 in 16 of 48 batches (7 of 12 convnet
#   batches of 4 images) and an inverted map passed in 3 (leading the random mean by up
#   to 0.197): a shape painted black keeps its class (its silhouette is still there),
#   so the curve barely tells the pixel orders apart. Deletion to the blur separates
#   them (good leads >= 0.275, inverted <= -0.201), but black is deletion's usual
#   baseline, and a default metric should keep its usual meaning: hence insertion.
DEFAULT_MARGIN = 0.05
DEFAULT_ASSERT_METRIC = "insertion"

# Random maps drawn per check; the map must beat their *mean* AUC. One draw is noise
# (reported on a pretrained 224-px classifier: a good Grad-CAM led one random map by
# 0.015 at seed 0, a failure, and by 0.07-0.185 at seeds 1-9). Measured here
# (calibrate_faithful.py, insertion, the 48 batches above): one draw's lead has a
# standard deviation of 0.052-0.098 at 4 images and 0.031-0.068 at 8, as large as the
# margin. The mean of R draws has sqrt(R) times less: 16 draws leave 0.008-0.025 (the
# judged lead moved by at most 0.074 across 4 seeds of the draws, on leads >= 0.20),
# for 16 times the map's own forward passes, run in the same batched calls (a check
# took 3.4-3.5 s at 4 images, 6-7 s at 8, on 2 shared CPU cores). Why the mean and not
# a low quantile: the question is "better than a random ranking on average"; the mean
# is the lowest-variance estimate of it and keeps the margin's meaning (one draw was an
# unbiased sample of the same mean), while a q-quantile of R draws is a noisier
# estimate that moves with R itself.
RANDOM_DRAWS = 16


# --------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class Curves:
    """Deletion or insertion curves of a batch of N images.

    Attributes:
        metric: ``"deletion"`` or ``"insertion"``.
        auc: ``(N,)`` float64, area under each image's curve (trapezoid rule over the
            fraction axis ``[0, 1]``). Deletion: lower is better; insertion: higher.
        curves: ``(N, steps + 1)`` float64, the class probability after each step.
        fractions: ``(steps + 1,)`` float64, the fraction of pixels removed (deletion)
            or inserted (insertion) at each point: ``0, 1/steps, ..., 1``.
        class_index: ``(N,)`` int64, the class whose probability is tracked.
        baseline: what removed pixels become (deletion) or insertion starts from:
            ``"zero"``, ``"mean (per image and channel)"``, ``"blur (RISE's 11-px
            kernel, sigma 5, zero padding)"``, ``"constant <value>"`` or ``"array"``.
        score_kind: what the tracked probability is (``"softmax output"``,
            ``"sigmoid output"``, ``"softmax of the logits"``, ...).
        degenerate: ``(N,)`` bool, maps that rank nothing (a degenerate GradCAM or a
            constant map: the order is then plain row-major).
    """

    metric: str
    auc: np.ndarray
    curves: np.ndarray
    fractions: np.ndarray
    class_index: np.ndarray
    baseline: str
    score_kind: str
    degenerate: np.ndarray

    def __len__(self) -> int:
        return int(self.auc.shape[0])

    def __getitem__(self, i: int | slice) -> Curves:
        """The curves of image ``i`` (or of a slice of images)."""
        idx = slice(i, (i + 1) or None) if isinstance(i, int | np.integer) else i
        return Curves(
            self.metric,
            self.auc[idx],
            self.curves[idx],
            self.fractions,
            self.class_index[idx],
            self.baseline,
            self.score_kind,
            self.degenerate[idx],
        )

    @property
    def mean_auc(self) -> float:
        """The AUC averaged over the batch."""
        return float(np.mean(self.auc))

    @property
    def steps(self) -> int:
        return int(len(self.fractions) - 1)


@dataclass(frozen=True, eq=False)
class Confidence:
    """Class probabilities on each image and on the image multiplied by its map.

    Attributes:
        original: ``(N,)`` float64, ``Y_c`` on the image.
        masked: ``(N,)`` float64, ``O_c`` on ``image * map``.
        class_index: ``(N,)`` int64.
        score_kind: what the probability is (see :class:`Curves`).
    """

    original: np.ndarray
    masked: np.ndarray
    class_index: np.ndarray
    score_kind: str

    @property
    def drop(self) -> np.ndarray:
        """``max(0, Y_c - O_c) / Y_c`` per image, in [0, 1] for probabilities."""
        y = np.maximum(self.original, np.finfo(np.float64).tiny)
        return np.maximum(0.0, self.original - self.masked) / y

    @property
    def average_drop(self) -> float:
        """``mean(drop) * 100`` (percent; lower is better)."""
        return float(np.mean(self.drop) * 100.0)

    @property
    def increase_in_confidence(self) -> float:
        """Percentage of images with ``O_c > Y_c`` (higher is better)."""
        return float(np.mean(self.masked > self.original) * 100.0)


# --------------------------------------------------------------------------- judgment
def check_margin(margin: Any) -> float:
    if (
        isinstance(margin, bool)
        or not isinstance(margin, int | float | np.integer | np.floating)
        or not math.isfinite(float(margin))
    ):
        raise InputError(f"margin must be a finite number. Received: margin={margin!r}")
    return float(margin)


def _same_run(curves: Curves, rival: Any, name: str) -> Curves:
    """``rival`` scored like ``curves``: same metric, images, steps and classes."""
    if not isinstance(rival, Curves):
        raise InputError(f"{name} must be Curves. Received: {type(rival).__name__}")
    if (
        rival.metric != curves.metric
        or len(rival) != len(curves)
        or not np.array_equal(rival.fractions, curves.fractions)
        or not np.array_equal(rival.class_index, curves.class_index)
    ):
        raise InputError(
            f"{name} must be scored like the map: same metric, images, steps and classes. "
            f"Received: {rival.metric} of {len(rival)} image(s), {rival.steps} steps, classes "
            f"{rival.class_index.tolist()[:8]}. Expected: {curves.metric} of {len(curves)} "
            f"image(s), {curves.steps} steps, classes {curves.class_index.tolist()[:8]}."
        )
    return rival


def judge_faithful(
    curves: Curves,
    random: Sequence[Curves] = (),
    wrong_class: Curves | None = None,
    *,
    margin: float = DEFAULT_MARGIN,
    seed: int | None = None,
    wrong_class_source: str = "the given wrong-class maps",
) -> Outcome:
    """Judge whether the map's curves beat the random maps' and the wrong class's by
    ``margin``; ``assert_faithful`` is this judgment, raised when it fails.

    The map passes when its AUC averaged over the images beats (deletion: is lower
    than; insertion: higher than) the **mean** AUC of the ``random`` draws by at least
    ``margin``, and the ``wrong_class`` map's mean AUC likewise, and no map is
    degenerate.

    Args:
        curves: the map's :class:`Curves`.
        random: the Curves of each random draw (same images, steps and classes), or
            empty to leave the random maps out.
        wrong_class: the Curves of the wrong class's maps, or None to leave them out.
        margin: the lead required, in AUC units.
        seed: the seed the random draws came from (recorded).
        wrong_class_source: what the wrong-class maps are (for the message).

    Returns:
        An :class:`~convviz_check.types.Outcome` (judgment ``"faithfulness"``): metrics
        ``lead_over_random`` / ``lead_over_wrong_class`` (bound ``margin``, direction
        ``"min"``) and ``degenerate_maps`` (bound 0); per image the map's AUC, the
        random draws' mean AUC, the wrong class's AUC and the class tracked; facts
        (metric, baseline, steps, draws, seed...); the picture ``"curves"``.

    Raises:
        InputError: no rival, a bad margin, or rivals not scored like the map.
    """
    if not isinstance(curves, Curves) or curves.metric not in METRICS:
        raise InputError(
            f"curves must be deletion or insertion Curves. Received: {type(curves).__name__}"
        )
    needed = check_margin(margin)
    draws = [_same_run(curves, r, f"random[{i}]") for i, r in enumerate(random)]
    wrong = None if wrong_class is None else _same_run(curves, wrong_class, "wrong_class")
    if not draws and wrong is None:
        raise InputError(
            "Nothing to judge the map against. Received: no random draws and no "
            "wrong-class curves. Expected either or both."
        )
    n, metric = len(curves), curves.metric
    sign = 1.0 if metric == "deletion" else -1.0  # lead > 0: the map is better
    ours = curves.mean_auc
    metrics: dict[str, MetricResult] = {}
    labels: dict[str, str] = {}
    rival_auc: dict[str, np.ndarray] = {}
    facts: dict[str, Any] = {
        **{k: getattr(curves, k) for k in ("metric", "baseline", "steps", "score_kind")},
        "better": "lower" if metric == "deletion" else "higher",
        "images": n,
        "margin": needed,
        "mean_auc": ours,
    }
    if draws:
        metrics["lead_over_random"], rival_auc["random"], random_facts = _against_draws(
            curves, draws, needed, seed
        )
        labels["random"] = "random map"
        facts |= random_facts
    if wrong is not None:
        rival_auc["wrong_class"] = wrong.auc
        labels["wrong_class"] = "wrong-class map"
        lead = sign * (wrong.mean_auc - ours)
        metrics["lead_over_wrong_class"] = MetricResult.judge(
            "lead_over_wrong_class", lead, needed, "min"
        )
        facts |= {"wrong_class_mean_auc": wrong.mean_auc, "wrong_class": wrong_class_source}
    bad = np.flatnonzero(curves.degenerate)
    metrics["degenerate_maps"] = MetricResult.judge("degenerate_maps", bad.size, 0, "max")
    items = _per_image(curves, rival_auc)
    failures = []
    if bad.size:
        failures.append(
            f"{bad.size} map(s) are degenerate or constant (images {bad[:8].tolist()}): "
            "they rank no pixel, so they explain nothing"
        )
    for key, label in labels.items():
        m = metrics[f"lead_over_{key}"]
        if not m.ok:
            failures.append(
                f"it beats the {label} by {m.value:.4f} < margin {needed:g}"
                + (f" (the mean of {len(draws)} random draws)" if key == "random" else "")
            )
    leads = ", ".join(
        f"{metrics[f'lead_over_{k}'].value:.4f} over the {label}" for k, label in labels.items()
    )
    picture = curves_chart(curves, draws, wrong)
    if not failures:
        lead_line = f"The map is faithful to the model ({metric}): it leads by {leads} " + (
            f"(margin {needed:g}; random: the mean of {len(draws)} draws)."
            if draws
            else f"(margin {needed:g})."
        )
        return Outcome(
            "faithfulness", "passed", lead_line, "", metrics, items, {"curves": picture}, facts
        )
    lead_line = f"The map is not faithful to the model ({metric}): " + "; ".join(failures) + "."
    message = _failure_text(curves, lead_line, labels, leads, facts, wrong_class_source)
    return Outcome(
        "faithfulness", "failed", lead_line, message, metrics, items, {"curves": picture}, facts
    )


def _per_image(curves: Curves, rival_auc: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Each image's row of the report: the class tracked, the map's AUC, each rival's."""
    return {
        f"image {i}": {
            "class_index": int(curves.class_index[i]),
            "auc": float(curves.auc[i]),
            **{f"{k}_auc": float(v[i]) for k, v in rival_auc.items()},
            "degenerate": bool(curves.degenerate[i]),
        }
        for i in range(len(curves))
    }


def _against_draws(
    curves: Curves, draws: Sequence[Curves], needed: float, seed: int | None
) -> tuple[MetricResult, np.ndarray, dict[str, Any]]:
    """The lead over the random draws' mean AUC (the metric), each image's mean AUC over
    the draws, and the facts (count, seed, the spread of one draw's lead)."""
    sign = 1.0 if curves.metric == "deletion" else -1.0  # lead > 0: the map is better
    by_draw = np.stack([d.auc for d in draws])  # (R, N)
    draw_leads = sign * (by_draw.mean(axis=1) - curves.mean_auc)
    count = len(draws)
    metric = MetricResult.judge(
        "lead_over_random",
        sign * (float(by_draw.mean()) - curves.mean_auc),
        needed,
        "min",
        f"mean of {count} random draws",
    )
    facts = {
        "random_draws": count,
        "seed": seed,
        "random_mean_auc": float(by_draw.mean()),
        "random_judged_on": "the mean AUC of the draws",
        "one_draw_lead": {
            "min": float(draw_leads.min()),
            "max": float(draw_leads.max()),
            "std": float(draw_leads.std(ddof=1)) if count > 1 else 0.0,
        },
    }
    return metric, by_draw.mean(axis=0), facts


def _failure_text(
    curves: Curves,
    lead_line: str,
    labels: dict[str, str],
    leads: str,
    facts: dict[str, Any],
    wrong_class_source: str,
) -> str:
    """The message of a map that is not faithful: the mean AUCs of the map and of each
    rival, the leads against the margin, how the curves were made."""
    n, metric = len(curves), curves.metric
    more = " ..." if n > 8 else ""
    texts = {"wrong_class": wrong_class_source, "random": ""}
    if "random_draws" in facts:
        one = facts["one_draw_lead"]
        texts["random"] = (
            f"mean of {facts['random_draws']} draws, uniform [0, 1), default_rng(seed "
            f"{facts['seed']}); one draw's lead {one['min']:.4f} to {one['max']:.4f}"
        )
    means = {
        "random": facts.get("random_mean_auc"),
        "wrong_class": facts.get("wrong_class_mean_auc"),
    }
    lines = [
        lead_line,
        f"  mean {metric} AUC over {n} image(s) ({facts['better']} is better):",
        f"    map under test:   {curves.mean_auc:.4f}",
        *(f"    {label + ':':<18}{means[k]:.4f} ({texts[k]})" for k, label in labels.items()),
        f"  margin: {facts['margin']:g}; leads: {leads}",
        f"  baseline: {curves.baseline}; steps: {curves.steps}; probability: "
        f"{curves.score_kind} of classes {curves.class_index.tolist()[:8]}{more}",
        f"  per-image AUC of the map: {np.round(curves.auc, 4).tolist()[:8]}{more}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- picture
_PANEL = 160  # px per panel side: the report enlarges pictures under 160 px
_COLOURS = {"map": (214, 39, 40), "random": (127, 127, 127), "wrong class": (31, 119, 180)}
# Panels after the batch mean: the first images, one each.
CHART_IMAGES = 3


def curves_chart(
    curves: Curves, random: Sequence[Curves] = (), wrong_class: Curves | None = None
) -> np.ndarray:
    """The curves as a small picture (uint8 ``(H, W, 3)``, no pyplot): one panel with
    the batch's mean curves, then one per image for the first ``CHART_IMAGES``; the
    map in red, the random draws' mean in grey, the wrong class's map in blue; x: the
    fraction of pixels changed (0 to 1), y: the tracked probability over the values'
    own range (its ends written on the axis: curves of a hesitant model that stay
    near 0.15 would be flat lines on a 0-to-1 axis). The legend wraps to the width."""
    from PIL import Image, ImageDraw

    series: list[tuple[str, np.ndarray]] = [("map", curves.curves)]
    if random:
        series.append(("random", np.mean([r.curves for r in random], axis=0)))
    if wrong_class is not None:
        series.append(("wrong class", wrong_class.curves))
    shown = min(len(curves), CHART_IMAGES)
    panels = [("mean", None)] + [(f"image {i}", i) for i in range(shown)]
    lo, hi = _y_range(np.concatenate([s.ravel() for _, s in series]))
    width, title_h, pad = _PANEL * len(panels), 14, 6
    lines = _legend_lines(curves, series, len(random), width - 2 * pad)
    canvas = Image.new("RGB", (width, _PANEL + 14 * len(lines)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x_frac = curves.fractions
    for p, (title, image) in enumerate(panels):
        x0, y0 = p * _PANEL + pad, title_h
        x1, y1 = (p + 1) * _PANEL - pad, _PANEL - pad
        draw.rectangle((x0, y0, x1, y1), outline=(200, 200, 200))
        draw.text((x0, 1), title, fill=(0, 0, 0))
        for name, data in series:
            ys = data.mean(axis=0) if image is None else data[image]
            ok = np.isfinite(ys)
            xs = x0 + x_frac[ok] * (x1 - x0)
            yy = y1 - (ys[ok] - lo) / (hi - lo) * (y1 - y0)
            if xs.size > 1:
                draw.line(list(zip(xs.tolist(), yy.tolist(), strict=True)), _COLOURS[name], 2)
        draw.text((x0 + 2, y0 + 1), f"{hi:.2f}", fill=(90, 90, 90))
        draw.text((x0 + 2, y1 - 11), f"{lo:.2f}", fill=(90, 90, 90))
    for row, line in enumerate(lines):
        for x, label, colour in line:
            draw.text((pad + x, _PANEL + 1 + 14 * row), label, fill=colour)
    return np.asarray(canvas, np.uint8)


def _y_range(values: np.ndarray) -> tuple[float, float]:
    """The y axis of the curves chart: the values' range, widened by 5% on each side
    and to at least 0.05 (a flat curve stays visible), within [0, 1] unless the values
    leave it."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    vmin, vmax = float(finite.min()), float(finite.max())
    margin = max(vmax - vmin, 0.05) * 0.05
    centre = (vmin + vmax) / 2
    half = max(vmax - vmin, 0.05) / 2 + margin
    lo = max(centre - half, min(0.0, vmin))
    hi = min(centre + half, max(1.0, vmax))
    return lo, hi


def _legend_lines(
    curves: Curves, series: Sequence[tuple[str, np.ndarray]], draws: int, width: int
) -> list[list[tuple[float, str, tuple[int, int, int]]]]:
    """The legend's labels placed in lines of at most ``width`` px:
    ``[[(x, label, colour), ...], ...]``."""
    from PIL import Image, ImageDraw

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    changed = "deleted" if curves.metric == "deletion" else "inserted"
    labels = [
        (f"{n} (mean of {draws})" if n == "random" else n, c)
        for n, c in _COLOURS.items()
        if any(s == n for s, _ in series)
    ]
    labels.append((f"x: fraction of pixels {changed}, y: probability", (90, 90, 90)))
    lines: list[list[tuple[float, str, tuple[int, int, int]]]] = [[]]
    x = 0.0
    for label, colour in labels:
        size = measure.textlength(label)
        if lines[-1] and x + size > width:
            lines.append([])
            x = 0.0
        lines[-1].append((x, label, colour))
        x += size + 12
    return lines
