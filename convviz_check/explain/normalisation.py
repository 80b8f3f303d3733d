"""A CAM's raw maps made heatmaps: ReLU, divided by the max, degenerate maps as zeros.

One rule for every method of the CAM family (:mod:`convviz_check.explain.cam`), and the
warning that names the usual cause of degenerate maps (a saturated softmax/sigmoid
output explained under ``score="output"``).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np

from .. import graph as graph_lib
from ..errors import ConvvizWarning

# A map is degenerate when max|raw| <= DEGENERATE_RTOL * |y_c| (gradient methods: the
# class score barely depends on A at float32 precision) or <= DEGENERATE_RTOL * max|A|
# (Score-CAM, Eigen-CAM: the map is float32 noise next to the activations). Measured:
# an untrained Xception-41 gives max|raw| / |y_c| ~ 5e-10; the bundled trained models
# give >= 1e-2.
DEGENERATE_RTOL = 1e-5

# A softmax/sigmoid output within this distance of 0 or 1 is called saturated in the
# degenerate warning (its float32 gradient is ~1e-8 or exactly 0; measured).
_SATURATION_EPS = 1e-4


def normalise(raw: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(heatmap, raw, degenerate)`` of raw maps ``(N, h, w)``: ReLU, divided by the max.

    A map is degenerate, and returned as zeros, when it holds a non-finite value, when
    ``max|raw| <= DEGENERATE_RTOL * |reference|`` (per image) or when its ReLU is all
    zero. Never NaN.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(raw).all(axis=(1, 2))
        raw = np.where(finite[:, None, None], raw, 0.0)
        peak = np.maximum(raw, 0.0).max(axis=(1, 2))
        max_abs = np.abs(raw).max(axis=(1, 2))
        degenerate = (~finite) | (max_abs <= DEGENERATE_RTOL * np.abs(reference)) | (peak <= 0.0)
        scale = np.where(degenerate, 1.0, peak)
        heatmap = np.where(
            degenerate[:, None, None], 0.0, np.maximum(raw, 0.0) / scale[:, None, None]
        )
    return heatmap.astype(np.float32), raw.astype(np.float32), degenerate


def warn_if_saturated(
    model: Any, kind: str, y: np.ndarray, degenerate: np.ndarray, method: str
) -> None:
    """A :class:`ConvvizWarning` where maps explained under ``score="output"`` are
    degenerate because the model's softmax/sigmoid output is saturated."""
    if kind != "output" or not degenerate.any():
        return
    act = graph_lib.head_activation(model)
    if act not in graph_lib.BYPASSABLE_ACTIVATIONS:
        return
    saturated = degenerate & ((y >= 1.0 - _SATURATION_EPS) | (y <= _SATURATION_EPS))
    if saturated.any():
        idx = np.flatnonzero(saturated)
        label = "Grad-CAM" if method == "gradcam" else f"CAM ({method})"
        warnings.warn(
            f"{label} maps of {idx.size} image(s) (e.g. {idx[:5].tolist()}) are degenerate "
            f"(returned as zeros): the model's {act} output is saturated (y_c = "
            f"{float(y[idx[0]]):.6g}), so its float32 gradient vanishes. Use score='logit' "
            "(the pre-activation score, as the Grad-CAM paper recommends).",
            ConvvizWarning,
            stacklevel=_outside_stacklevel(),
        )


def _outside_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside this package's explain modules
    (the user's line, whether it called ``cam``, ``gradcam`` or the fixture)."""
    frame, level = inspect.currentframe(), 0
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith(
        "convviz_check.explain"
    ):
        frame, level = frame.f_back, level + 1
    return level


__all__ = ["DEGENERATE_RTOL", "normalise", "warn_if_saturated"]
