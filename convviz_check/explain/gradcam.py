"""Grad-CAM class-activation heatmaps, batched, never NaN.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" (arXiv:1610.02391), as in the reference chapter (Deep Learning with
Python, 3rd ed., ch. 10):

- ``A``: the output of a target layer (unless given, the spatial map that feeds the
  head's global pooling or Flatten: :mod:`convviz_check.graph.targets`), ``y_c``: the
  score of class ``c`` (logit or model output);
- ``alpha_k = mean_ij dy_c / dA_k(i, j)``; ``raw = sum_k alpha_k A_k``;
  ``heatmap = ReLU(raw) / max``.

Grad-CAM is the first method of the CAM family in :mod:`convviz_check.explain.cam`,
which holds the shared skeleton (target layer, score, batching, degenerate rule);
:func:`gradcam` is ``cam(..., method="gradcam")`` and the names below stay importable
from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..graph.targets import gradcam_note, target_layer
from ..types import GradCAM
from .cam import (
    DEFAULT_BATCH_SIZE,
    DEGENERATE_RTOL,
    SCORES,
    cam,
    compiled_cache,
)


def gradcam(
    model: Any,
    images: Any,
    class_index: int | Sequence[int] | np.ndarray | Callable[[Any], Any] | None = None,
    layer: str | None = None,
    score: str = "auto",
    preprocess: bool = False,
    batch_size: int | None = None,
    output: str | int | None = None,
    token_grid: tuple[int, int, int] | None = None,
) -> GradCAM:
    """Grad-CAM heatmaps of ``images`` for one class (or score) each.

    The same as :func:`convviz_check.cam` with ``method="gradcam"``.

    Args:
        model: a functional or Sequential Keras classifier (nested models and keras-hub
            task models included) whose output is ``(batch, classes)``.
        images: ``(N, H, W, C)`` or one ``(H, W, C)`` image, channels-last, uint8 or
            float, in the range the model expects (not rescaled here).
        class_index: ``None`` (the top predicted class of each image), one int for all
            images, one int per image, or a callable ``score(outputs) -> (N,)`` on the
            head tensor (see :func:`convviz_check.cam`).
        layer: target layer name (as :func:`convviz_check.graph.flatten` names it);
            ``None`` picks the spatial map that feeds the head's global pooling (or
            Flatten), following tensors: the pooling inside squeeze-and-excitation
            blocks is not the head's (:func:`target_layer`). The choice is reported in
            the result (``layer``); :func:`gradcam_note` tells when it is a class-score
            map of an all-convolutional head, and names the alternative.
        score: ``"logit"`` (the head's pre-softmax/sigmoid value; an error where the
            head cannot be bypassed), ``"output"`` (the model output, the chapter's
            choice) or ``"auto"`` (the logit where it can be had, else the output).
        preprocess: apply a keras-hub task model's own ``preprocessor`` to the images
            first (an error for models without one).
        batch_size: images per compiled forward/backward call (``None``: 8, measured
            best or near best on a CPU, see ``DEFAULT_BATCH_SIZE``); the heatmaps do
            not depend on it.
        output: the output of a multi-output model to explain (name or index);
            ``None``: the first.
        token_grid: ``(height, width, prefix tokens)`` of a vision transformer's token
            layer where the model's patch embedding does not tell it (see
            :func:`convviz_check.cam`); ``None``: inferred.

    Returns:
        A :class:`~convviz_check.types.GradCAM`: ``heatmap`` (N, h, w) in [0, 1],
        ``raw`` (N, h, w), ``class_index``, ``score`` (y_c), ``score_kind``, ``layer``,
        ``degenerate`` (maps returned as zeros where the class score barely depends on
        the layer: ``max|raw| <= DEGENERATE_RTOL * |y_c|``) and ``image_shape`` (H, W);
        ``note`` (:func:`gradcam_note`), ``method`` (``"gradcam"``) and ``target``.

    Raises:
        InputError: bad images, class indices, score or output.
        GraphError: a bad target layer (the message lists the valid ones), a model
            without a spatial map or token grid (an MLP), a token grid that cannot be
            inferred, a
            non-classifier head, or ``score="logit"`` on a head that cannot be bypassed.

    Warns:
        ConvvizWarning: degenerate maps under ``score="output"`` from a saturated
            softmax/sigmoid (the message suggests ``score="logit"``).

    Example:
        >>> cam = gradcam(model, images)            # top class, auto score
        >>> cam.layer, cam.heatmap.shape
        ('block14_sepconv2_act', (8, 10, 10))
        >>> overlay(images[0], cam.heatmap[0])      # uint8 (H, W, 3)
    """
    return cam(
        model,
        images,
        method="gradcam",
        class_index=class_index,
        layer=layer,
        score=score,
        preprocess=preprocess,
        batch_size=batch_size,
        output=output,
        token_grid=token_grid,
    )


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEGENERATE_RTOL",
    "SCORES",
    "compiled_cache",
    "gradcam",
    "gradcam_note",
    "target_layer",
]
