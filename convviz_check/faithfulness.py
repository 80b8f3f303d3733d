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

The probability comes from the model's first output (a multi-output model's others
are not read). Every perturbed image goes through the model's compiled forward pass
(:func:`convviz_check.backends.make_forward`, cached per model), ``batch_size`` images
per call, so the metrics run batched on TensorFlow, torch and JAX alike. Images are
passed as given, in the range the model expects (nothing is rescaled).

Keras is imported inside the functions only (through the backend and graph modules).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import FaithfulnessError, InputError, describe_array
from .types import GradCAM

__all__ = [
    "BLUR_SIGMA",
    "BLUR_SIZE",
    "DEFAULT_BASELINE",
    "DEFAULT_MARGIN",
    "DEFAULT_STEPS",
    "Confidence",
    "Curves",
    "assert_faithful",
    "average_drop",
    "blur_kernel",
    "blurred",
    "confidence",
    "deletion",
    "increase_in_confidence",
    "insertion",
]

METRICS = ("deletion", "insertion")
# The maps assert_faithful's map must beat.
COMPETITORS = ("random", "wrong_class")

# Deletion replaces pixels with zero (black), insertion starts from a blurred copy: the
# RISE paper's choices.
DEFAULT_BASELINE: dict[str, str] = {"deletion": "zero", "insertion": "blur"}
BASELINES = ("zero", "mean", "blur")

# RISE's blur, exactly as the authors' evaluation code makes it (``gkern(klen=11,
# nsig=5)`` then ``conv2d(x, kern, padding=klen // 2)``): the kernel is scipy's
# ``gaussian_filter`` (sigma 5, its default reflect mode and truncate 4, i.e. radius 20)
# applied to an 11 x 11 Dirac, so the Gaussian's tails are folded back into the 11 taps
# (weights 0.088 at the ends to 0.094 at the centre: nearly a box filter, sum 1); each
# channel is convolved with it alone, and the image is padded with zeros (the edges
# darken towards 0). The kernel is separable: the same 11 taps along rows then columns.
BLUR_SIGMA = 5.0
BLUR_SIZE = 11
BLUR_TEXT = f"blur (RISE's {BLUR_SIZE}-px kernel, sigma {BLUR_SIGMA:g}, zero padding)"

# Fractions of the pixels changed: 0, 1/steps, ..., 1 (steps + 1 forward passes per
# image). Measured (bundled convnet, 16 scenes of seed 7, Grad-CAM maps, TF): the mean
# AUC at 8 / 16 / 32 / 64 steps differs from steps=256 by 0.025 / 0.013 / 0.005 /
# 0.0006 (deletion, steep at the start) and 0.0009 / 0.0019 / 0.0002 / 0.0002
# (insertion); the worst single image by 0.031 (deletion) at 32. 32 keeps that error
# ten times below DEFAULT_MARGIN at half the forward passes of 64.
DEFAULT_STEPS = 32

# Perturbed images per compiled forward call (``batch_size=None``). A forward pass
# alone holds no gradients, so a larger batch than Grad-CAM's 8 is cheap; the last
# call is padded to this size so that JAX reuses the compiled program.
DEFAULT_BATCH_SIZE = 32

# assert_faithful's margin, in AUC units (probability x fraction of pixels), and its
# metric. Measured by benchmarks/calibrate_faithful.py (TF, Grad-CAM, default steps,
# scenes of seeds 0-11 at 4 and 8 images, the bundled convnet and xception: 48 batches
# per metric):
# - insertion (from a blur): the map leads the random map (seed 0) by at least 0.095
#   and the least likely class's map by at least 0.26; an inverted map (1 - map)
#   trails the random map by at least 0.30. Every good map passes 0.05, no inverted one.
# - deletion to black: a good map missed 0.05 in 15 of 48 batches (7 of 12 convnet
#   batches of 4 images) and an inverted map beat the random map by up to 0.22: a shape
#   painted black keeps its class (its silhouette is still there), so the curve barely
#   tells the pixel orders apart. Deletion to a blur separates them too (good leads
#   >= 0.18, inverted <= -0.15), but black is deletion's usual baseline, and a default
#   metric should keep its usual meaning: hence insertion.
DEFAULT_MARGIN = 0.05
DEFAULT_ASSERT_METRIC = "insertion"


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

    @property
    def mean_auc(self) -> float:
        """The AUC averaged over the batch."""
        return float(np.mean(self.auc))


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


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Maps:
    values: np.ndarray  # (N, H, W) float32 at image resolution
    class_index: np.ndarray | None  # from a GradCAM
    degenerate: np.ndarray  # (N,) bool
    source: GradCAM | None


def _maps(heatmap: Any, n: int, image_shape: tuple[int, int]) -> _Maps:
    """The heatmaps of ``n`` images at ``image_shape`` (bilinear, as the overlays)."""
    from .render import resize_bilinear

    cam = heatmap if isinstance(heatmap, GradCAM) else None
    if cam is not None:
        if tuple(cam.image_shape) != tuple(image_shape):
            raise InputError(
                "The GradCAM was computed for images of another size. Received: "
                f"cam.image_shape={tuple(cam.image_shape)} and images of {image_shape}. "
                "Expected the GradCAM of these images."
            )
        values = np.asarray(cam.heatmap)
        degenerate = np.asarray(cam.degenerate, bool).reshape(-1)
    else:
        try:
            values = np.asarray(heatmap)
        except Exception as exc:  # noqa: BLE001 - say what was received
            raise InputError(
                "heatmap must be an array (N, h, w) or a GradCAM. Received: "
                f"{type(heatmap).__name__}"
            ) from exc
        if values.ndim == 2 and n == 1:
            values = values[None]
        degenerate = np.zeros(n, bool)
    if (
        values.ndim != 3
        or values.shape[0] != n
        or 0 in values.shape
        or values.dtype == bool
        or not np.issubdtype(values.dtype, np.number)
    ):
        raise InputError(
            f"heatmap must be a numeric array (N, h, w) with one map per image ({n} "
            f"image(s)), or their GradCAM. Received: {describe_array('heatmap', values)}"
        )
    values = values.astype(np.float32)
    if not np.isfinite(values).all():
        raise InputError(
            "heatmap contains NaN or inf, so it ranks no pixel. Received: "
            f"{describe_array('heatmap', values)} with "
            f"{int(np.count_nonzero(~np.isfinite(values)))} non-finite values"
        )
    if cam is not None:
        values = np.where(degenerate[:, None, None], 0.0, values).astype(np.float32)
    flat = values.reshape(n, -1)
    degenerate = degenerate | (flat.max(axis=1) == flat.min(axis=1))
    if values.shape[1:] != tuple(image_shape):
        values = np.stack([resize_bilinear(v, image_shape) for v in values])
    class_index = None if cam is None else np.asarray(cam.class_index, np.int64).reshape(-1)
    return _Maps(values, class_index, degenerate, cam)


def _steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise InputError(f"steps must be an int >= 1. Received: steps={steps!r}")
    return int(steps)


def blur_kernel(sigma: float = BLUR_SIGMA, size: int = BLUR_SIZE) -> np.ndarray:
    """The 1-D taps of RISE's blur kernel (the 2-D kernel is their outer product):
    scipy's ``gaussian_filter1d`` (reflect mode, truncate 4) of a ``size``-tap Dirac,
    as the RISE evaluation code's ``gkern(size, sigma)`` builds it.

    Returns:
        float64 ``(size,)``, summing to 1.
    """
    from scipy.ndimage import gaussian_filter1d

    dirac = np.zeros(size)
    dirac[size // 2] = 1.0
    return np.asarray(gaussian_filter1d(dirac, float(sigma)), np.float64)


def blurred(images: Any, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """RISE's blur of ``images``: the default insertion baseline.

    Each channel is convolved with the 11 x 11 kernel of the RISE evaluation code
    (:func:`blur_kernel`: a Gaussian of ``sigma`` px, 5 by default, folded into 11
    taps), the image padded with zeros, as their ``conv2d(x, kern, padding=5)`` does.

    Args:
        images: ``(N, H, W, C)`` or one ``(H, W, C)`` image.
        sigma: standard deviation in pixels (> 0) of the Gaussian folded into the 11 taps.

    Returns:
        float32 ``(N, H, W, C)``.

    Example:
        >>> insertion(model, images, cam, baseline=blurred(images, sigma=10))
    """
    from scipy.ndimage import correlate1d

    from .explain.inputs import as_image_batch

    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0:
        raise InputError(f"sigma must be a number > 0. Received: sigma={sigma!r}")
    batch = as_image_batch(images).astype(np.float64)
    taps = blur_kernel(float(sigma))
    for axis in (1, 2):  # the separable kernel: rows, then columns; zeros outside
        batch = correlate1d(batch, taps, axis=axis, mode="constant", cval=0.0)
    return batch.astype(np.float32)


def _baseline(baseline: Any, batch: np.ndarray) -> tuple[np.ndarray, str]:
    """The baseline as float32 broadcastable to ``batch`` and its description."""
    if isinstance(baseline, str):
        if baseline == "zero":
            return np.zeros((1, 1, 1, 1), np.float32), "zero"
        if baseline == "mean":
            return batch.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(
                np.float32
            ), "mean (per image and channel)"
        if baseline == "blur":
            return blurred(batch), BLUR_TEXT
        raise InputError(
            f"Unknown baseline. Received: baseline={baseline!r}. Expected one of "
            f"{BASELINES}, a number or an array of the images' shape."
        )
    if isinstance(baseline, bool):
        raise InputError(f"baseline must not be a bool. Received: baseline={baseline!r}")
    if isinstance(baseline, int | float | np.integer | np.floating):
        if not math.isfinite(float(baseline)):
            raise InputError(f"baseline must be finite. Received: baseline={baseline!r}")
        return np.full((1, 1, 1, 1), float(baseline), np.float32), f"constant {float(baseline):g}"
    arr = np.asarray(baseline)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"baseline must be numeric. Received: {describe_array('baseline', arr)}")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1:] != batch.shape[1:] or arr.shape[0] not in (1, len(batch)):
        raise InputError(
            "A baseline array must have the images' shape. Received: "
            f"{describe_array('baseline', np.asarray(baseline))}. Expected "
            f"{batch.shape[1:]} or {batch.shape} (channels-last, like the images)."
        )
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InputError(
            f"baseline contains NaN or inf. Received: {describe_array('baseline', arr)}"
        )
    return arr, "array"


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class _Model:
    forward: Any
    model: Any
    num_classes: int
    score_kind: str
    chunk: int

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, classes)`` float64 class probabilities of a channels-last batch,
        ``chunk`` images per call (the last call padded to ``chunk``)."""
        return np.concatenate(list(self.run(_chunks(batch, self.chunk))))

    def run(self, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        from .explain.inputs import to_model_layout

        for xs in chunks:
            k = len(xs)
            if k < self.chunk:
                xs = np.concatenate([xs, np.repeat(xs[-1:], self.chunk - k, axis=0)])
            out = np.asarray(self.forward([to_model_layout(xs, self.model)])[0], np.float64)
            if out.ndim != 2:
                raise InputError(
                    "Faithfulness metrics need a classifier with output (batch, classes). "
                    f"Received: model output shape {out.shape}."
                )
            yield _to_probability(out[:k], self.score_kind)


def _chunks(batch: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(batch), size):
        yield batch[start : start + size]


def _score_kind(model: Any) -> str:
    from . import graph as graph_lib

    act = graph_lib.head_activation(model)
    if act in ("softmax", "sigmoid"):
        return f"{act} output"
    if act == "linear":
        return "softmax of the logits"
    return f"output (head activation {act!r}, used as it is)"


def _to_probability(out: np.ndarray, score_kind: str) -> np.ndarray:
    if score_kind != "softmax of the logits":
        return out
    if out.shape[1] == 1:  # one logit: a binary classifier's sigmoid
        return 1.0 / (1.0 + np.exp(-out))
    shifted = out - out.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _cam_output(heatmap: Any) -> str | None:
    """The output a GradCAM explains (``"@<name>"`` of its target on a multi-output
    model), else ``None``."""
    target = getattr(heatmap, "target", "") if isinstance(heatmap, GradCAM) else ""
    return target.rsplit("@", 1)[1] if target and "@" in target else None


def _prepare(
    model: Any, images: Any, batch_size: Any, output: str | int | None = None
) -> tuple[_Model, np.ndarray]:
    from . import backends
    from . import graph as graph_lib
    from .explain.cam import single_output_model
    from .explain.inputs import as_image_batch, check_batch_size

    graph_lib.flatten(model)  # refuses subclassed / unbuilt models first
    check_batch_size(batch_size)
    batch = as_image_batch(images, model)
    model = single_output_model(model, output)  # the tracked output alone
    flat = graph_lib.flatten(model)
    shape = tuple(flat.outputs[0].shape)
    if len(shape) != 2 or shape[-1] is None:
        raise InputError(
            "Faithfulness metrics need a classifier with output (batch, classes). "
            f"Received: model output shape {shape}. Expected a 2-D output with a known "
            "class count."
        )
    forward = backends.make_forward(model)
    chunk = int(batch_size or DEFAULT_BATCH_SIZE)
    return _Model(forward, model, int(shape[-1]), _score_kind(model), chunk), batch


def _given_classes(class_index: Any, maps: _Maps, n: int, num_classes: int) -> np.ndarray | None:
    """Per-image classes: given, else the GradCAM's; ``None`` means the top predicted
    class of each image (known after the forward pass). Checked before any pass."""
    if class_index is None:
        if maps.class_index is None:
            return None
        if (maps.class_index < 0).any():
            target = getattr(maps.source, "target", "") or "a callable"
            raise InputError(
                "The GradCAM explains a score function, not a class, and faithfulness "
                "metrics track one class's probability. Received: a GradCAM with "
                f"target {target!r} (class_index -1). Expected class_index= (the class "
                "to track)."
            )
        class_index = maps.class_index
    from .explain.inputs import class_indices

    return class_indices(class_index, n, num_classes)


def _or_top(classes: np.ndarray | None, probs: np.ndarray) -> np.ndarray:
    """``classes``, or the top class of each row of ``probs`` (first of ties)."""
    return np.argmax(probs, axis=1).astype(np.int64) if classes is None else classes


# --------------------------------------------------------------------------- curves
def _order_ranks(values: np.ndarray) -> np.ndarray:
    """``(N, H*W)`` rank of each pixel (0 = highest map value); ties in row-major
    order (a stable sort), so equal maps always give equal curves."""
    flat = values.reshape(len(values), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :], axis=1)
    return ranks


def _curves(
    metric: str,
    model: Any,
    images: Any,
    heatmap: Any,
    class_index: Any,
    steps: Any,
    baseline: Any,
    batch_size: Any,
    output: str | int | None,
) -> Curves:
    n_steps = _steps(steps)
    net, batch = _prepare(model, images, batch_size, _tracked(heatmap, output))
    n, h, w, _ = batch.shape
    maps = _maps(heatmap, n, (h, w))
    wanted = _given_classes(class_index, maps, n, net.num_classes)
    base, base_text = _baseline(DEFAULT_BASELINE[metric] if baseline is None else baseline, batch)
    base = np.broadcast_to(base, batch.shape)
    ranks = _order_ranks(maps.values).reshape(n, h, w)
    # Pixels changed at step k: the first floor(k * H * W / steps) in the map's order.
    counts = (np.arange(n_steps + 1, dtype=np.int64) * (h * w)) // n_steps
    pairs = n * (n_steps + 1)

    def perturbed() -> Iterator[np.ndarray]:
        for start in range(0, pairs, net.chunk):
            p = np.arange(start, min(start + net.chunk, pairs))
            img, k = p // (n_steps + 1), p % (n_steps + 1)
            changed = (ranks[img] < counts[k][:, None, None])[..., None]
            if metric == "deletion":
                yield np.where(changed, base[img], batch[img])
            else:
                yield np.where(changed, batch[img], base[img])

    probs = np.concatenate(list(net.run(perturbed())))  # (pairs, classes)
    original = probs.reshape(n, n_steps + 1, -1)[:, 0 if metric == "deletion" else -1]
    classes = _or_top(wanted, original)
    curves = probs.reshape(n, n_steps + 1, -1)[np.arange(n), :, classes]
    fractions = counts / float(h * w)
    auc = np.sum((curves[:, 1:] + curves[:, :-1]) * 0.5 * np.diff(fractions)[None, :], axis=1)
    return Curves(
        metric=metric,
        auc=auc,
        curves=curves,
        fractions=fractions,
        class_index=classes,
        baseline=base_text,
        score_kind=net.score_kind,
        degenerate=maps.degenerate,
    )


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
    return _curves(
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
            image, an 11-px kernel of sigma 5 with zero padding, see :func:`blurred`), ``"zero"``, ``"mean"``, a
            number, or an array of the images' shape.

    Returns:
        :class:`Curves`.

    Example:
        >>> insertion(model, images, cc.gradcam(model, images)).mean_auc
    """
    return _curves(
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
    net, batch = _prepare(model, images, batch_size, _tracked(heatmap, output))
    n, h, w, _ = batch.shape
    maps = _maps(heatmap, n, (h, w))
    wanted = _given_classes(class_index, maps, n, net.num_classes)
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
    classes = _or_top(wanted, both[:n])
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
def _tracked(heatmap: Any, output: str | int | None) -> str | int | None:
    """The output whose probabilities are tracked: ``output``, else the GradCAM's."""
    return output if output is not None else _cam_output(heatmap)


def _margin(margin: Any) -> float:
    if (
        isinstance(margin, bool)
        or not isinstance(margin, int | float | np.integer | np.floating)
        or not math.isfinite(float(margin))
    ):
        raise InputError(f"margin must be a finite number. Received: margin={margin!r}")
    return float(margin)


def _least_likely(
    model: Any, batch: np.ndarray, batch_size: Any, explained: np.ndarray, output: Any
) -> np.ndarray:
    """Each image's least likely class other than the explained one (a model that
    gives every class the same probability would otherwise name the explained class;
    ties go to the lowest index)."""
    net, _ = _prepare(model, batch, batch_size, output)
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

    Three maps are scored with ``metric`` (:func:`deletion` or :func:`insertion`), all
    tracking the probability of the same class (``class_index``, else the GradCAM's,
    else the top predicted one):

    - ``cam``, the map under test;
    - a **random map** of the same shape, uniform in ``[0, 1)`` from
      ``numpy.random.default_rng(seed)``;
    - the **wrong-class map**: the same method's map of each image's *least likely*
      class (lowest probability on the image among the classes other than the
      explained one; the GradCAM's ``method``, layer and score, Grad-CAM for a plain
      array), or ``wrong_map`` when given.

    It passes when the map's AUC, averaged over the batch, beats each map named in
    ``against`` by at least ``margin`` (deletion: lower by ``margin``; insertion:
    higher). A degenerate map always fails.

    Args:
        model: the Keras classifier.
        images: ``(N, H, W, C)`` in the range the model expects.
        cam: a ``GradCAM`` or ``(N, h, w)`` maps.
        metric: ``"insertion"`` (default: it separates good maps from random and
            inverted ones on every batch measured, see ``DEFAULT_MARGIN``) or
            ``"deletion"``.
        margin: required lead in AUC units (probability x fraction of pixels); 0.05 by
            default (see ``DEFAULT_MARGIN`` for the numbers behind it).
        seed: seed of the random map.
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
    if metric not in METRICS:
        raise InputError(f"Unknown metric. Received: metric={metric!r}. Expected one of {METRICS}.")
    lead_needed = _margin(margin)
    rivals = _against(against)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InputError(f"seed must be an int. Received: seed={seed!r}")
    from .explain.inputs import as_image_batch

    batch = as_image_batch(images, model)
    n, h, w, _ = batch.shape
    score = deletion if metric == "deletion" else insertion
    tracked = _tracked(cam, output)
    kwargs: dict[str, Any] = {
        "steps": steps,
        "baseline": baseline,
        "batch_size": batch_size,
        "output": tracked,
    }
    ours = score(model, batch, cam, class_index, **kwargs)
    source = _maps(cam, n, (h, w)).source
    more = " ..." if n > 8 else ""
    # name -> (label, their Curves, what they are)
    scored: dict[str, tuple[str, Curves, str]] = {}
    if "random" in rivals:
        own = np.asarray(cam.heatmap if isinstance(cam, GradCAM) else cam).shape[-2:]
        random_map = np.random.default_rng(int(seed)).random((n, *own)).astype(np.float32)
        scored["random"] = (
            "random map",
            score(model, batch, random_map, ours.class_index, **kwargs),
            f"uniform [0, 1), seed {int(seed)}",
        )
    if "wrong_class" in rivals:
        if wrong_map is None:
            least = _least_likely(model, batch, batch_size, ours.class_index, tracked)
            wrong_map = _explain_again(model, batch, source, least, tracked)
            text = (
                f"{_method_name(source)} of each image's least likely class: "
                f"{least.tolist()[:8]}{more}"
            )
        else:
            text = "the given wrong_map"
        wrong = score(model, batch, wrong_map, ours.class_index, **kwargs)
        if wrong.degenerate.any():
            text += f"; {int(wrong.degenerate.sum())} of them degenerate or constant"
        scored["wrong_class"] = ("wrong-class map", wrong, text)

    sign = 1.0 if metric == "deletion" else -1.0  # lead > 0: the map is better
    leads = {k: sign * (c.mean_auc - ours.mean_auc) for k, (_, c, _) in scored.items()}
    failures = []
    if ours.degenerate.any():
        idx = np.flatnonzero(ours.degenerate)
        failures.append(
            f"{idx.size} map(s) are degenerate or constant (images {idx[:8].tolist()}): "
            "they rank no pixel, so they explain nothing"
        )
    for key, lead in leads.items():
        if not lead >= lead_needed:
            failures.append(f"it beats the {scored[key][0]} by {lead:.4f} < margin {lead_needed:g}")
    if not failures:
        return ours
    better = "lower" if metric == "deletion" else "higher"
    lines = [
        f"The map is not faithful to the model ({metric}): " + "; ".join(failures) + ".",
        f"  mean {metric} AUC over {n} image(s) ({better} is better):",
        f"    map under test:   {ours.mean_auc:.4f}",
        *(f"    {label + ':':<18}{c.mean_auc:.4f} ({text})" for label, c, text in scored.values()),
        f"  margin: {lead_needed:g}; leads: "
        + ", ".join(f"{lead:.4f} over the {scored[k][0]}" for k, lead in leads.items()),
        f"  baseline: {ours.baseline}; steps: {len(ours.fractions) - 1}; probability: "
        f"{ours.score_kind} of classes {ours.class_index.tolist()[:8]}{more}",
        f"  per-image AUC of the map: {np.round(ours.auc, 4).tolist()[:8]}{more}",
    ]
    raise FaithfulnessError("\n".join(lines))


def _method_name(cam: GradCAM | None) -> str:
    if cam is None:
        return "Grad-CAM (the map under test is a plain array)"
    return str(getattr(cam, "method", "gradcam") or "gradcam")
