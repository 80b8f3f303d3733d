"""The mechanics of the deletion and insertion curves (Petsiuk et al., RISE, 2018):
the maps at image resolution, the pixel order, the baselines (RISE's blur), and the
class probability as the pixels are changed, batched through
:mod:`convviz_check.explain.probabilities`. :mod:`convviz_check.faithfulness` holds the
public metrics and the assertion built on these.

Keras is imported inside the functions only (through the backend and graph modules).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, describe_array
from ..heatmaps import Heatmaps
from ..judge.faithfulness import Curves
from ..types import GradCAM
from .probabilities import Classifier, cam_output, prepare

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


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Maps:
    values: np.ndarray  # (N, H, W) float32 at image resolution
    class_index: np.ndarray | None  # from a GradCAM
    degenerate: np.ndarray  # (N,) bool
    source: GradCAM | None


def heatmaps_at(heatmap: Any, n: int, image_shape: tuple[int, int]) -> Maps:
    """The heatmaps of ``n`` images at ``image_shape`` (bilinear, as the overlays), by
    the one heatmap rule (:meth:`~convviz_check.heatmaps.Heatmaps.of`): a map flagged
    degenerate, or constant, ranks nothing and counts as all zero."""
    from ..render import resize_bilinear

    cam = heatmap if isinstance(heatmap, GradCAM) else None
    if cam is not None and tuple(cam.image_shape) != tuple(image_shape):
        raise InputError(
            "The GradCAM was computed for images of another size. Received: "
            f"cam.image_shape={tuple(cam.image_shape)} and images of {image_shape}. "
            "Expected the GradCAM of these images."
        )
    maps = Heatmaps.of(heatmap, role="heatmap", n=n)
    values = maps.maps
    if values.shape[1:] != tuple(image_shape):
        values = np.stack([resize_bilinear(v, image_shape) for v in values])
    return Maps(values, maps.class_index, maps.degenerate, cam)


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

    from .inputs import as_image_batch

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


def given_classes(class_index: Any, maps: Maps, n: int, num_classes: int) -> np.ndarray | None:
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
    from .inputs import class_indices

    return class_indices(class_index, n, num_classes)


def or_top(classes: np.ndarray | None, probs: np.ndarray) -> np.ndarray:
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


def curves(
    metric: str,
    model: Any,
    images: Any,
    heatmap: Any,
    class_index: Any,
    steps: Any,
    baseline: Any,
    batch_size: Any,
    output: str | int | None,
    repeat: int = 1,
) -> Curves:
    """The curves of ``heatmap``'s maps; ``repeat`` blocks of one map per image (the
    random draws: the perturbed images of every block go through the same batched
    forward calls, the baseline is made once)."""
    n_steps = _steps(steps)
    net, batch = prepare(model, images, batch_size, tracked_output(heatmap, output))
    n, h, w, _ = batch.shape
    maps = heatmaps_at(heatmap, n * repeat, (h, w))
    wanted = given_classes(class_index, maps, n, net.num_classes)
    base, base_text = _baseline(DEFAULT_BASELINE[metric] if baseline is None else baseline, batch)
    base = np.broadcast_to(base, batch.shape)
    return _score(metric, net, batch, base, maps, wanted, n_steps, base_text)


def _score(
    metric: str,
    net: Classifier,
    batch: np.ndarray,
    base: np.ndarray,
    maps: Maps,
    wanted: np.ndarray | None,
    n_steps: int,
    base_text: str,
) -> Curves:
    n, h, w, _ = batch.shape
    m = len(maps.values)  # maps: blocks of n, map j perturbs image j % n
    ranks = _order_ranks(maps.values).reshape(m, h, w)
    # Pixels changed at step k: the first floor(k * H * W / steps) in the map's order.
    counts = (np.arange(n_steps + 1, dtype=np.int64) * (h * w)) // n_steps
    pairs = m * (n_steps + 1)

    def perturbed() -> Iterator[np.ndarray]:
        for start in range(0, pairs, net.chunk):
            p = np.arange(start, min(start + net.chunk, pairs))
            row, k = p // (n_steps + 1), p % (n_steps + 1)
            img = row % n
            changed = (ranks[row] < counts[k][:, None, None])[..., None]
            if metric == "deletion":
                yield np.where(changed, base[img], batch[img])
            else:
                yield np.where(changed, batch[img], base[img])

    probs = np.concatenate(list(net.run(perturbed()))).reshape(m, n_steps + 1, -1)
    original = probs[:, 0 if metric == "deletion" else -1]
    classes = or_top(None if wanted is None else np.tile(wanted, m // n), original)
    curves = probs[np.arange(m), :, classes]
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


def tracked_output(heatmap: Any, output: str | int | None) -> str | int | None:
    """The output whose probabilities are tracked: ``output``, else the GradCAM's."""
    return output if output is not None else cam_output(heatmap)
