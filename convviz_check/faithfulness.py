"""Does a heatmap explain the model? Deletion, insertion, average drop, increase in
confidence, and an assertion built on them.

A map that stays the same from run to run may still explain nothing. These metrics ask
the model itself: perturb the image where the map points and watch the class
probability.

- **Deletion** and **insertion** (Petsiuk et al., "RISE: Randomized Input Sampling for
  Explanation of Black-box Models", BMVC 2018): the pixels are ranked by the map
  (upsampled to the image with the bilinear resize the overlays use,
  :func:`convviz_check.render.resize_bilinear`; ties in row-major order), then removed
  (deletion: set to a baseline, black by default) or added (insertion: starting from
  a baseline, by default the RISE evaluation code's blur: its 11-px kernel of sigma 5,
  zeros outside the image, see :func:`blurred`) in ``steps`` equal fractions. The class
  probability after each step makes a curve over the fraction axis ``[0, 1]``; its
  area (trapezoid rule) is the score. A faithful map makes the probability fall fast
  under deletion (**lower deletion AUC is better**) and rise fast under insertion
  (**higher insertion AUC is better**).
- **Average drop** and **increase in confidence** (Chattopadhyay et al.,
  "Grad-CAM++", WACV 2018): ``Y_c`` is the class probability on the image, ``O_c`` on
  the image multiplied by the (upsampled) map. Average drop ``= mean(max(0, Y_c -
  O_c) / Y_c) * 100`` (lower is better); increase in confidence = the percentage of
  images with ``O_c > Y_c`` (higher is better).

The class probability is the model's output where its head ends in softmax or sigmoid;
for a linear head (logits) it is the softmax of the logits (the sigmoid for a single
logit); any other head's output is used as it is. The choice is recorded
(``score_kind``).

The probability comes from one output: ``output=``, else the one the GradCAM
explains, else the first. Every perturbed image goes through the model's compiled
forward pass (:mod:`convviz_check.explain.probabilities`), ``batch_size`` images per
call, so the metrics run batched on TensorFlow, torch and JAX alike. Images are passed
as given, in the range the model expects (nothing is rescaled). Maps are read by the
one heatmap rule (:meth:`convviz_check.heatmaps.Heatmaps.of`): a map flagged degenerate,
or constant (all zeros included), ranks nothing and counts as all zero.

The curves' mechanics (pixel order, baselines, batching) are in
:mod:`convviz_check.explain.perturb`; the verdict of :func:`assert_faithful` is
:func:`convviz_check.judge.faithfulness.judge_faithful` (pure NumPy).

Keras is imported inside the functions only (through the backend and graph modules).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import FaithfulnessError, InputError
from .explain.perturb import (
    BASELINES,
    BLUR_SIGMA,
    BLUR_SIZE,
    DEFAULT_BASELINE,
    DEFAULT_STEPS,
    blur_kernel,
    blurred,
    curves,
    given_classes,
    heatmaps_at,
    or_top,
    tracked_output,
)
from .explain.probabilities import DEFAULT_BATCH_SIZE, prepare
from .heatmaps import Heatmaps
from .judge.faithfulness import (
    DEFAULT_ASSERT_METRIC,
    DEFAULT_MARGIN,
    METRICS,
    RANDOM_DRAWS,
    Confidence,
    Curves,
    check_margin,
    judge_faithful,
)
from .types import GradCAM, Outcome

__all__ = [
    "BASELINES",
    "BLUR_SIGMA",
    "BLUR_SIZE",
    "DEFAULT_ASSERT_METRIC",
    "DEFAULT_BASELINE",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MARGIN",
    "DEFAULT_STEPS",
    "RANDOM_DRAWS",
    "Confidence",
    "Curves",
    "assert_faithful",
    "average_drop",
    "blur_kernel",
    "blurred",
    "check_faithful",
    "confidence",
    "deletion",
    "increase_in_confidence",
    "insertion",
]

# The maps assert_faithful's map must beat.
COMPETITORS = ("random", "wrong_class")
# Random maps scored per run: 64 maps of 224 x 224 pixels hold 26 MB of pixel ranks
# (all 16 draws of 32 such images at once would hold 205 MB).
_MAPS_PER_RUN = 64


def deletion(
    model: Any,
    images: Any,
    heatmap: Any,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    steps: int = DEFAULT_STEPS,
    baseline: Any = "zero",
    batch_size: int | None = None,
    output: str | int | None = None,
) -> Curves:
    """Deletion curves: remove the pixels the map ranks highest first, watch the class
    probability fall (Petsiuk et al., RISE, 2018). Lower AUC is better.

    Args:
        model: a Keras classifier (output ``(batch, classes)``).
        images: ``(N, H, W, C)`` or one ``(H, W, C)``, channels-last, in the range the
            model expects (not rescaled).
        heatmap: ``(N, h, w)`` maps (``(h, w)`` for one image), or their ``GradCAM``
            (its ``class_index`` is then the default class). Upsampled to ``(H, W)``
            bilinearly (as the overlays); only the order of the values matters.
        class_index: the class whose probability is tracked: one int, one per image, or
            ``None`` (the GradCAM's classes, else the top predicted class).
        steps: number of equal fractions of the pixels (``steps + 1`` forward passes
            per image).
        baseline: what a removed pixel becomes: ``"zero"`` (default, black for 0-based
            images), ``"mean"`` (the image's mean per channel), ``"blur"`` (RISE's
            blur, see :func:`blurred`), a number, or an array of the images' shape.
        batch_size: perturbed images per forward call (``None``: 32).
        output: on a model with several outputs, the one whose class probabilities
            are tracked (a name or index): default the output the GradCAM explains,
            else the first.

    Returns:
        :class:`Curves` (``auc`` per image, ``curves``, ``fractions``, ``baseline``...).

    Raises:
        InputError: bad images, maps, classes, steps or baseline (the message names
            what was received and what was expected).

    Example:
        >>> cam = cc.gradcam(model, images)
        >>> deletion(model, images, cam).auc          # (N,), lower is better
    """
    return curves(
        "deletion", model, images, heatmap, class_index, steps, baseline, batch_size, output
    )


def insertion(
    model: Any,
    images: Any,
    heatmap: Any,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    steps: int = DEFAULT_STEPS,
    baseline: Any = "blur",
    batch_size: int | None = None,
    output: str | int | None = None,
) -> Curves:
    """Insertion curves: start from a baseline, put back the pixels the map ranks
    highest first, watch the class probability rise (Petsiuk et al., RISE, 2018).
    Higher AUC is better.

    Args:
        model, images, heatmap, class_index, steps, batch_size, output: as in
            :func:`deletion`.
        baseline: what insertion starts from: ``"blur"`` (default: RISE's blur of the
            image, an 11-px kernel of sigma 5 with zero padding, see :func:`blurred`),
            ``"zero"``, ``"mean"``, a number, or an array of the images' shape.

    Returns:
        :class:`Curves`.

    Example:
        >>> insertion(model, images, cc.gradcam(model, images)).mean_auc
    """
    return curves(
        "insertion", model, images, heatmap, class_index, steps, baseline, batch_size, output
    )


# --------------------------------------------------------------------------- average drop
def confidence(
    model: Any,
    images: Any,
    heatmap: Any,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    batch_size: int | None = None,
    output: str | int | None = None,
) -> Confidence:
    """``Y_c`` on each image and ``O_c`` on the image multiplied by its map (upsampled
    bilinearly to the image; values must lie in ``[0, 1]``, as a GradCAM's do).

    Returns:
        :class:`Confidence` (``original``, ``masked``, ``drop``, ``average_drop``,
        ``increase_in_confidence``).

    Raises:
        InputError: bad images, maps or classes, or a map outside ``[0, 1]``.
    """
    net, batch = prepare(model, images, batch_size, tracked_output(heatmap, output))
    n, h, w, _ = batch.shape
    maps = heatmaps_at(heatmap, n, (h, w))
    wanted = given_classes(class_index, maps, n, net.num_classes)
    lo, hi = float(maps.values.min()), float(maps.values.max())
    # Bilinear interpolation stays within the map's own range, so checking after the
    # resize checks the map itself.
    if lo < 0.0 or hi > 1.0 + 1e-6:
        raise InputError(
            "Average drop multiplies the image by the map, so the map must lie in [0, 1]. "
            f"Received: a heatmap with min {lo:g} and max {hi:g}. Expected values in "
            "[0, 1] (divide by the max, as a GradCAM's heatmap is)."
        )
    both = net.probabilities(np.concatenate([batch, batch * maps.values[..., None]]))
    classes = or_top(wanted, both[:n])
    rows = np.arange(n)
    return Confidence(
        original=both[:n][rows, classes],
        masked=both[n:][rows, classes],
        class_index=classes,
        score_kind=net.score_kind,
    )


def average_drop(
    model: Any,
    images: Any,
    heatmap: Any,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    batch_size: int | None = None,
    output: str | int | None = None,
) -> float:
    """Average drop in percent, ``mean(max(0, Y_c - O_c) / Y_c) * 100`` (Chattopadhyay
    et al., Grad-CAM++, 2018): how much of the class probability is lost when only what
    the map shows is kept. Lower is better.

    Args: as :func:`confidence`.

    Example:
        >>> average_drop(model, images, cc.gradcam(model, images))
        12.5
    """
    return confidence(model, images, heatmap, class_index, batch_size, output).average_drop


def increase_in_confidence(
    model: Any,
    images: Any,
    heatmap: Any,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    batch_size: int | None = None,
    output: str | int | None = None,
) -> float:
    """Percentage of images whose class probability rises (``O_c > Y_c``) when only
    what the map shows is kept (Chattopadhyay et al., Grad-CAM++, 2018). Higher is
    better.

    Args: as :func:`confidence`.
    """
    conf = confidence(model, images, heatmap, class_index, batch_size, output)
    return conf.increase_in_confidence


# --------------------------------------------------------------------------- assertion
def _least_likely(
    model: Any, batch: np.ndarray, batch_size: Any, explained: np.ndarray, output: Any
) -> np.ndarray:
    """Each image's least likely class other than the explained one (a model that
    gives every class the same probability would otherwise name the explained class;
    ties go to the lowest index)."""
    net, _ = prepare(model, batch, batch_size, output)
    probs = net.probabilities(batch)
    if probs.shape[1] < 2:
        raise InputError(
            "A model with one output has no wrong class to compare the map with. Received: "
            f"model output shape {probs.shape}. Expected two or more classes, or pass "
            "wrong_map=."
        )
    probs[np.arange(len(batch)), explained] = np.inf
    return np.argmin(probs, axis=1).astype(np.int64)


def _explain_again(
    model: Any, batch: np.ndarray, cam: GradCAM | None, classes: np.ndarray, output: Any
) -> Any:
    """The same CAM method's maps for ``classes`` (Grad-CAM for a plain array), of the
    same output."""
    from .explain.cam import cam as explain

    if cam is None:
        return explain(model, batch, class_index=classes, output=output)
    score = cam.score_kind if cam.score_kind in ("logit", "output") else "auto"
    method = str(getattr(cam, "method", "") or "gradcam")
    return explain(
        model,
        batch,
        method=method,
        class_index=classes,
        layer=cam.layer,
        score=score,
        output=output,
    )


def _against(against: Any) -> tuple[str, ...]:
    chosen = (against,) if isinstance(against, str) else tuple(against)
    if not chosen or any(a not in COMPETITORS for a in chosen):
        raise InputError(
            f"against names the maps to beat. Received: against={against!r}. Expected a "
            f"non-empty subset of {COMPETITORS}."
        )
    return tuple(a for a in COMPETITORS if a in chosen)


def _measure(
    model: Any,
    images: Any,
    cam: Any,
    *,
    metric: str = DEFAULT_ASSERT_METRIC,
    margin: float = DEFAULT_MARGIN,
    seed: int = 0,
    baseline: Any = None,
    steps: int = DEFAULT_STEPS,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    against: str | Sequence[str] = COMPETITORS,
    wrong_map: Any = None,
    batch_size: int | None = None,
    output: str | int | None = None,
) -> tuple[Outcome, Curves]:
    """The map's curves, its rivals', and the judgment (see :func:`assert_faithful`)."""
    if metric not in METRICS:
        raise InputError(f"Unknown metric. Received: metric={metric!r}. Expected one of {METRICS}.")
    lead_needed = check_margin(margin)
    rivals = _against(against)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InputError(f"seed must be an int. Received: seed={seed!r}")
    from .explain.inputs import as_image_batch

    batch = as_image_batch(images, model)
    n, h, w, _ = batch.shape
    tracked = tracked_output(cam, output)
    kwargs: dict[str, Any] = {
        "steps": steps,
        "baseline": baseline,
        "batch_size": batch_size,
        "output": tracked,
    }
    ours = curves(metric, model, batch, cam, class_index, **kwargs)
    source = cam if isinstance(cam, GradCAM) else None
    random: list[Curves] = []
    if "random" in rivals:
        # RANDOM_DRAWS maps per image from one generator; the draws of a group share
        # the forward calls (whole chunks), and a group holds about _MAPS_PER_RUN maps
        # at image resolution (their pixel ranks are the memory that grows).
        own = Heatmaps.of(cam, n=n).maps.shape[1:]
        draws = np.random.default_rng(int(seed)).random((RANDOM_DRAWS * n, *own))
        group = max(1, _MAPS_PER_RUN // n)
        for first in range(0, RANDOM_DRAWS, group):
            k = min(group, RANDOM_DRAWS - first)
            maps = draws[first * n : (first + k) * n].astype(np.float32)
            scored = curves(metric, model, batch, maps, ours.class_index, **kwargs, repeat=k)
            random += [scored[j * n : (j + 1) * n] for j in range(k)]
    wrong, text = None, ""
    if "wrong_class" in rivals:
        if wrong_map is None:
            least = _least_likely(model, batch, batch_size, ours.class_index, tracked)
            wrong_map = _explain_again(model, batch, source, least, tracked)
            more = " ..." if n > 8 else ""
            text = (
                f"{_method_name(source)} of each image's least likely class: "
                f"{least.tolist()[:8]}{more}"
            )
        else:
            text = "the given wrong_map"
        wrong = curves(metric, model, batch, wrong_map, ours.class_index, **kwargs)
        if wrong.degenerate.any():
            text += f"; {int(wrong.degenerate.sum())} of them degenerate or constant"
    outcome = judge_faithful(
        ours, random, wrong, margin=lead_needed, seed=int(seed), wrong_class_source=text
    )
    return outcome, ours


def check_faithful(
    model: Any,
    images: Any,
    cam: Any,
    *,
    metric: str = DEFAULT_ASSERT_METRIC,
    margin: float = DEFAULT_MARGIN,
    seed: int = 0,
    baseline: Any = None,
    steps: int = DEFAULT_STEPS,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    against: str | Sequence[str] = COMPETITORS,
    wrong_map: Any = None,
    batch_size: int | None = None,
    output: str | int | None = None,
) -> Outcome:
    """:func:`assert_faithful`'s judgment without raising: the
    :class:`~convviz_check.types.Outcome` (judgment ``"faithfulness"``, see
    :func:`convviz_check.judge.faithfulness.judge_faithful`). Same arguments.

    Raises:
        InputError: bad arguments (a map that is not faithful is a failed Outcome).
    """
    return _measure(
        model,
        images,
        cam,
        metric=metric,
        margin=margin,
        seed=seed,
        baseline=baseline,
        steps=steps,
        class_index=class_index,
        against=against,
        wrong_map=wrong_map,
        batch_size=batch_size,
        output=output,
    )[0]


def assert_faithful(
    model: Any,
    images: Any,
    cam: Any,
    *,
    metric: str = DEFAULT_ASSERT_METRIC,
    margin: float = DEFAULT_MARGIN,
    seed: int = 0,
    baseline: Any = None,
    steps: int = DEFAULT_STEPS,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    against: str | Sequence[str] = COMPETITORS,
    wrong_map: Any = None,
    batch_size: int | None = None,
    output: str | int | None = None,
) -> Curves:
    """Assert that a map explains the model better than chance and better than the
    map of another class.

    The maps are scored with ``metric`` (:func:`deletion` or :func:`insertion`), all
    tracking the probability of the same class (``class_index``, else the GradCAM's,
    else the top predicted one):

    - ``cam``, the map under test;
    - ``RANDOM_DRAWS`` (16) **random maps** per image of the map's shape, uniform in
      ``[0, 1)``, all from ``numpy.random.default_rng(seed)`` and scored in the same
      batched forward calls;
    - the **wrong-class map**: the same method's map of each image's *least likely*
      class (lowest probability on the image among the classes other than the
      explained one; the GradCAM's ``method``, layer and score, Grad-CAM for a plain
      array), or ``wrong_map`` when given.

    It passes when the map's AUC, averaged over the batch, beats the random draws'
    mean AUC and the wrong-class map's, for the maps named in ``against``, by at least
    ``margin`` each (deletion: lower by ``margin``; insertion: higher). The mean of
    many draws keeps the verdict from hanging on one lucky or unlucky random map (see
    ``RANDOM_DRAWS`` for the numbers). A degenerate map (flagged, or constant) always
    fails. The judgment is :func:`~convviz_check.judge.faithfulness.judge_faithful`;
    :func:`check_faithful` returns it without raising.

    Args:
        model: the Keras classifier.
        images: ``(N, H, W, C)`` in the range the model expects.
        cam: a ``GradCAM`` or ``(N, h, w)`` maps.
        metric: ``"insertion"`` (default: it separates good maps from random and
            inverted ones on every batch measured, see ``DEFAULT_MARGIN``) or
            ``"deletion"``.
        margin: required lead in AUC units (probability x fraction of pixels); 0.05 by
            default (see ``DEFAULT_MARGIN`` for the numbers behind it).
        seed: seed of the random draws (one generator for all of them).
        baseline: as in :func:`deletion` / :func:`insertion` (``None``: ``"zero"`` for
            deletion, ``"blur"`` for insertion).
        steps: fractions per curve.
        class_index: the class tracked.
        against: the maps to beat: ``("random", "wrong_class")`` (default) or one of
            them. A class-agnostic method (Eigen-CAM: the same map for every class)
            can only beat ``"random"``.
        wrong_map: the maps to use instead of the least likely class's.
        batch_size: images per forward call.
        output: as in :func:`deletion` (default: the output the GradCAM explains);
            every map is scored on it, and the wrong-class map explains it.

    Returns:
        The map's :class:`Curves` (when it passes).

    Raises:
        FaithfulnessError: the map does not beat the others by ``margin``, or is
            degenerate; the message gives the mean AUCs, the leads, the margin, the
            baseline and the class tracked. An ``AssertionError``, so pytest shows a
            failure.
        InputError: bad arguments.

    Example:
        >>> cam = cc.gradcam(model, images)
        >>> assert_faithful(model, images, cam)
    """
    __tracebackhide__ = True
    outcome, ours = _measure(
        model,
        images,
        cam,
        metric=metric,
        margin=margin,
        seed=seed,
        baseline=baseline,
        steps=steps,
        class_index=class_index,
        against=against,
        wrong_map=wrong_map,
        batch_size=batch_size,
        output=output,
    )
    if not outcome.ok:
        raise FaithfulnessError(outcome.message)
    return ours


def _method_name(cam: GradCAM | None) -> str:
    if cam is None:
        return "Grad-CAM (the map under test is a plain array)"
    return str(getattr(cam, "method", "gradcam") or "gradcam")
