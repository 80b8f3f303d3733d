"""What a cross-backend request carries: the model *source* (never a model object),
the images as a NumPy array, and JSON-ready parameters per technique. Shared by the
worker route (:mod:`~convviz_check.crossbackend.agreement`) and the export route
(:mod:`~convviz_check.crossbackend.export`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, describe_array
from ..types import TECHNIQUES


def artifact_params(
    *,
    layers: Sequence[str] | None = None,
    batch_size: int = 32,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    gradcam_layer: str | None = None,
    score: str = "auto",
    preprocess: bool = False,
    filters_layer: str | None = None,
    filters: int | Sequence[int] = 8,
    filter_steps: int = 30,
    filter_size: tuple[int, int] | None = None,
    learning_rate: float | None = None,
    seed: int = 0,
    input_range: tuple[float, float] | None = None,
    cam_method: str = "gradcam",
    cam_options: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """JSON-ready per-technique parameters for the workers (and for export).

    The ``"gradcam"`` technique computes ``cc.cam(method=cam_method, **cam_options)``
    (Grad-CAM by default); ``cam_options`` must be JSON-ready (e.g. ``max_channels``).
    """
    classes: int | list[int] | None
    if class_index is None:
        classes = None
    elif isinstance(class_index, int | np.integer):
        classes = int(class_index)
    else:
        classes = [int(c) for c in np.asarray(class_index).reshape(-1)]
    return {
        "activations": {"layers": list(layers) if layers else None, "batch_size": int(batch_size)},
        "gradcam": {
            "class_index": classes,
            "layer": gradcam_layer,
            "score": score,
            "preprocess": bool(preprocess),
            "method": str(cam_method),
            "method_options": dict(cam_options or {}),
        },
        "filters": {
            "layer": filters_layer,
            "filters": filters if isinstance(filters, int) else [int(f) for f in filters],
            "steps": int(filter_steps),
            "size": list(filter_size) if filter_size else None,
            "learning_rate": learning_rate,
            "seed": int(seed),
            # None: inferred from the model's leading Rescaling/Normalization, else (0, 1)
            "input_range": None if input_range is None else [float(v) for v in input_range],
        },
    }


def model_spec(
    model_source: Any, safe_mode: bool = True, custom_objects: Sequence[str] | None = None
) -> dict[str, Any]:
    """The JSON model spec sent to workers: a source string, never a model object."""
    if not isinstance(model_source, str | os.PathLike):
        raise InputError(
            "Cross-backend agreement loads the model in each backend's worker from its "
            "source; model objects are never pickled across processes. Received: "
            f"model_source of type {type(model_source).__name__!r}. Expected a path "
            "(.keras, .h5, preset directory), 'hub:<preset>' or 'pkg.module:factory'."
        )
    if isinstance(custom_objects, Mapping | str):
        raise InputError(
            "custom_objects must be a list of importable module names for cross-backend "
            f"checks (classes cannot cross processes). Received: {custom_objects!r}."
        )
    text = os.fspath(model_source)
    path = Path(text)
    source = str(path.resolve()) if path.exists() else text
    return {
        "source": source,
        "safe_mode": bool(safe_mode),
        "custom_objects": [str(m) for m in (custom_objects or [])],
    }


def as_images(images: Any) -> np.ndarray:
    """Validate images for transport: a NumPy array ``(N, H, W, C)`` or ``(H, W, C)``."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[0] == 0 or arr.dtype.kind not in "uif":
        raise InputError(
            "Images must be a non-empty numeric array (N, H, W, C) or (H, W, C). Received: "
            f"{describe_array('images', arr)}"
        )
    return arr


def check_techniques(what: Sequence[str]) -> tuple[str, ...]:
    """``what`` as a tuple, refused when empty or naming an unknown technique."""
    what = tuple(what)
    unknown = [w for w in what if w not in TECHNIQUES]
    if unknown or not what:
        raise InputError(
            f"Unknown technique(s). Received: what={what!r}. Expected some of {TECHNIQUES}."
        )
    return what
