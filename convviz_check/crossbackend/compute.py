"""The computations of a cross-backend check, under the running Keras backend.

Child side: run by the backend worker (:mod:`convviz_check.crossbackend.worker`) and,
in-process, by :func:`convviz_check.crossbackend.export.export_current_backend`. Keras
and the techniques are imported inside the functions, so importing this module stays
light. Each technique returns an :class:`~convviz_check.artifacts.Artifact`:

- ``"activations"``: kind ``"activation"``, layout ``"activations"`` (layer -> array);
- ``"gradcam"``: kind ``"heatmap"``, layout ``"gradcam"``; ``attrs["top_class"]`` holds
  the model's own top class per image (a list), which may differ from the class
  explained when the caller passed ``class_index``;
- ``"filters"``: kind ``"pattern"``, layout ``"array"`` (``(F, H, W, C)`` float32);
  ``attrs`` holds the layer and the filter indices.

Parameters are the JSON-ready dicts of :func:`convviz_check.crossbackend.agreement.
artifact_params` in :mod:`.requests` (one per technique).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..artifacts import Artifact
from ..errors import InputError
from ..graph.targets import default_filters_layer
from ..types import TECHNIQUES
from .requests import ActivationsParams, CamParams, FiltersParams, from_json

Params = dict[str, Any]


def top_classes(model: Any, images: np.ndarray) -> np.ndarray | None:
    """Arg-max class per image of the model output (None unless the output is (N, K))."""
    import keras

    from ..backends import to_numpy

    out = model(keras.ops.convert_to_tensor(images), training=False)
    if isinstance(out, list | tuple | dict):
        return None
    arr = to_numpy(out)
    if arr.ndim != 2:
        return None
    return np.argmax(arr, axis=-1).astype(np.int64)


def _need_images(images: np.ndarray | None, technique: str) -> np.ndarray:
    if images is None:
        raise InputError(f"{technique} needs images. Received: images=None.")
    return images


def compute_activations(model: Any, images: np.ndarray | None, params: Params) -> Artifact:
    """Activations of the requested layers (default: every conv/pool layer)."""
    from ..explain.activations import activations

    p = from_json("activations", params)
    assert isinstance(p, ActivationsParams)
    acts = activations(
        model,
        _need_images(images, "activations"),
        layers=list(p.layers) if p.layers else None,
        batch_size=p.batch_size,
    )
    return Artifact.from_value(acts, "activation")


def compute_gradcam(model: Any, images: np.ndarray | None, params: Params) -> Artifact:
    """Grad-CAM (or the requested CAM method with its options, on the requested token
    grid) for the requested class (default: each image's top class); the model's own
    top classes are kept in ``attrs["top_class"]``."""
    from ..explain.cam import cam

    images = _need_images(images, "gradcam")
    p = from_json("gradcam", params)
    assert isinstance(p, CamParams)
    class_index: Any = p.class_index
    if isinstance(class_index, tuple):
        class_index = np.asarray(class_index, np.int64)
    result = cam(
        model,
        images,
        method=p.method,
        class_index=class_index,
        layer=p.layer,
        score=p.score,
        preprocess=p.preprocess,
        token_grid=p.token_grid,
        **dict(p.method_options),
    )
    top = top_classes(model, images)
    attrs = {"top_class": [int(c) for c in top]} if top is not None else {}
    return Artifact.from_value(result, "heatmap", attrs=attrs)


def compute_filters(model: Any, images: np.ndarray | None, params: Params) -> Artifact:
    """Filter patterns of the requested layer (default: :func:`default_filters_layer`);
    ``images`` are not used."""
    from ..explain.filters import filter_patterns

    p = from_json("filters", params)
    assert isinstance(p, FiltersParams)
    layer = p.layer or default_filters_layer(model)
    filters = list(range(p.filters)) if isinstance(p.filters, int) else list(p.filters)
    patterns = filter_patterns(
        model,
        layer,
        filters=filters,
        steps=p.steps,
        learning_rate=p.learning_rate,
        size=p.size,
        seed=p.seed,
        batch_size=p.batch_size,
        input_range=_range(p.input_range),
    )
    attrs = {"layer": layer, "filters": [int(f) for f in filters]}
    return Artifact.from_value(np.asarray(patterns, np.float32), "pattern", attrs=attrs)


Compute = Callable[[Any, np.ndarray | None, Params], Artifact]
COMPUTE: dict[str, Compute] = {
    "activations": compute_activations,
    "gradcam": compute_gradcam,
    "filters": compute_filters,
}


def compute_artifacts(
    model: Any,
    images: np.ndarray | None,
    what: Sequence[str],
    params: Mapping[str, Params],
) -> dict[str, Artifact]:
    """Compute each technique in ``what`` for ``model`` under the running backend.

    Args:
        model: a loaded ``keras.Model``.
        images: the input batch (unused by ``"filters"``).
        what: techniques among ``"activations"``, ``"gradcam"``, ``"filters"``.
        params: per-technique parameters (:func:`~.requests.artifact_params`).

    Returns:
        technique -> :class:`~convviz_check.artifacts.Artifact`.
    """
    unknown = [w for w in what if w not in COMPUTE]
    if unknown:
        raise InputError(
            f"Unknown technique(s). Received: {unknown}. Expected some of {TECHNIQUES}."
        )
    return {name: COMPUTE[name](model, images, dict(params.get(name) or {})) for name in what}


def describe_model(model: Any) -> dict[str, Any]:
    """JSON facts about a loaded model: name, weights fingerprint, conv layers, shapes."""
    from ..graph import conv_layers
    from ..models import model_fingerprint

    return {
        "name": model.name,
        "fingerprint": model_fingerprint(model),
        "conv_layers": conv_layers(model),
        "input_shape": _shape_json(getattr(model, "input_shape", None)),
        "output_shape": _shape_json(getattr(model, "output_shape", None)),
        "reduced_precision": reduced_precision(model),
    }


def reduced_precision(model: Any) -> list[str]:
    """The 16-bit compute dtypes among the model's layers (a ``mixed_float16`` or
    ``mixed_bfloat16`` policy), sorted; empty for a float32 model."""
    from ..graph import flatten

    found = {str(getattr(r.operation, "compute_dtype", "") or "") for r in flatten(model).records}
    return sorted(found & {"float16", "bfloat16"})


def _shape_json(shape: Any) -> Any:
    if shape is None:
        return None
    if isinstance(shape, list):
        return [_shape_json(s) for s in shape]
    return [None if d is None else int(d) for d in shape]


def _range(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    return lo, hi
