"""What a cross-backend request carries: the model *source* (never a model object),
the images as a NumPy array, and JSON-ready parameters per technique. Shared by the
worker route (:mod:`~convviz_check.crossbackend.agreement`) and the export route
(:mod:`~convviz_check.crossbackend.export`); and what a worker's reply brings back (an
artifact in a file, read and removed; how the worker ended when it failed)."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..artifacts import Artifact
from ..errors import InputError, describe_array
from ..types import TECHNIQUES, check_token_grid


# --------------------------------------------------------------------------- parameters
# One frozen dataclass per technique: every default is written here once, and the
# agreement API, the workers (compute.py), the export route and the CLI build from it.
@dataclass(frozen=True)
class ActivationsParams:
    """What the ``"activations"`` technique computes (:func:`convviz_check.activations`).

    Attributes:
        layers: the layers (None: every conv / pooling layer).
        batch_size: images per forward call.
    """

    layers: tuple[str, ...] | None = None
    batch_size: int = 32


@dataclass(frozen=True)
class CamParams:
    """What the ``"gradcam"`` technique computes (:func:`convviz_check.cam`).

    Attributes:
        class_index: one class, one per image, or None (each image's top class; the
            agreement passes the reference backend's to the others).
        layer: the target layer (None: the automatic one).
        score: ``"auto"``, ``"logit"`` or ``"output"``.
        preprocess: apply a keras-hub task model's own preprocessor.
        method: the CAM method (``"gradcam"``...).
        method_options: the method's options, JSON-ready (``{"max_channels": 64}``).
        token_grid: a vision transformer's ``(height, width, prefix tokens)`` where the
            patch embedding does not tell it (None: inferred in each worker).
    """

    class_index: int | tuple[int, ...] | None = None
    layer: str | None = None
    score: str = "auto"
    preprocess: bool = False
    method: str = "gradcam"
    method_options: Mapping[str, Any] = field(default_factory=dict)
    token_grid: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class FiltersParams:
    """What the ``"filters"`` technique computes (:func:`convviz_check.filter_patterns`).

    Attributes:
        layer: the layer (None: the deepest conv map before the head wider than 8
            cells, :func:`convviz_check.graph.targets.default_filters_layer`).
        filters: how many (the first ``n``) or which ones.
        steps, size, learning_rate, seed, batch_size: the ascent's.
        input_range: the model's input range (None: inferred from a leading
            Rescaling / Normalization layer, else ``(0, 1)``).
    """

    layer: str | None = None
    filters: int | tuple[int, ...] = 8
    steps: int = 30
    size: tuple[int, int] | None = None
    learning_rate: float | None = None
    seed: int = 0
    batch_size: int | None = None
    input_range: tuple[float, float] | None = None


TechniqueParams = ActivationsParams | CamParams | FiltersParams
PARAMS: dict[str, type[ActivationsParams] | type[CamParams] | type[FiltersParams]] = {
    "activations": ActivationsParams,
    "gradcam": CamParams,
    "filters": FiltersParams,
}


def _json_ready(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_ready(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def to_json(params: TechniqueParams) -> dict[str, Any]:
    """The JSON-ready form a request carries to a worker or an export."""
    return {f.name: _json_ready(getattr(params, f.name)) for f in fields(params)}


def from_json(technique: str, data: Mapping[str, Any] | None) -> TechniqueParams:
    """The parameters of ``technique`` from their JSON form (missing keys take their
    defaults; an unknown key is refused, so a misspelt one never goes unnoticed)."""
    cls = PARAMS[technique]
    known = {f.name for f in fields(cls)}
    given = dict(data or {})
    unknown = sorted(set(given) - known)
    if unknown:
        raise InputError(
            f"Unknown {technique} parameter(s) {unknown}. Expected some of {sorted(known)}."
        )
    for name in ("layers", "class_index", "filters", "size", "input_range", "token_grid"):
        if isinstance(given.get(name), list):
            given[name] = tuple(given[name])
    return cls(**given)


def artifact_params(
    *,
    layers: Sequence[str] | None = ActivationsParams.layers,
    batch_size: int = ActivationsParams.batch_size,
    class_index: int | Sequence[int] | np.ndarray | None = CamParams.class_index,
    gradcam_layer: str | None = CamParams.layer,
    score: str = CamParams.score,
    preprocess: bool = CamParams.preprocess,
    filters_layer: str | None = FiltersParams.layer,
    filters: int | Sequence[int] = FiltersParams.filters,
    filter_steps: int = FiltersParams.steps,
    filter_size: tuple[int, int] | None = FiltersParams.size,
    learning_rate: float | None = FiltersParams.learning_rate,
    seed: int = FiltersParams.seed,
    input_range: tuple[float, float] | None = FiltersParams.input_range,
    cam_method: str = CamParams.method,
    cam_options: Mapping[str, Any] | None = None,
    token_grid: Sequence[int] | None = CamParams.token_grid,
) -> dict[str, dict[str, Any]]:
    """JSON-ready per-technique parameters for the workers (and for export), from the
    keyword arguments of :func:`convviz_check.agreement` (their defaults are the
    parameter classes' own).

    The ``"gradcam"`` technique computes ``cc.cam(method=cam_method, **cam_options)``
    (Grad-CAM by default); ``cam_options`` must be JSON-ready (e.g. ``max_channels``).
    ``token_grid`` travels with it (checked here, before any worker starts).

    Raises:
        InputError: ``token_grid`` is not three integers ``(height >= 1, width >= 1,
            prefix >= 0)``.
    """
    classes: int | tuple[int, ...] | None
    if class_index is None:
        classes = None
    elif isinstance(class_index, int | np.integer):
        classes = int(class_index)
    else:
        classes = tuple(int(c) for c in np.asarray(class_index).reshape(-1))
    requests: dict[str, TechniqueParams] = {
        "activations": ActivationsParams(
            layers=tuple(layers) if layers else None, batch_size=int(batch_size)
        ),
        "gradcam": CamParams(
            class_index=classes,
            layer=gradcam_layer,
            score=score,
            preprocess=bool(preprocess),
            method=str(cam_method),
            method_options=dict(cam_options or {}),
            token_grid=check_token_grid(token_grid),
        ),
        "filters": FiltersParams(
            layer=filters_layer,
            filters=filters if isinstance(filters, int) else tuple(int(f) for f in filters),
            steps=int(filter_steps),
            size=(int(filter_size[0]), int(filter_size[1])) if filter_size else None,
            learning_rate=learning_rate,
            seed=int(seed),
            input_range=(
                None if input_range is None else (float(input_range[0]), float(input_range[1]))
            ),
        ),
    }
    return {name: to_json(params) for name, params in requests.items()}


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


# --------------------------------------------------------------------------- replies
def reply_artifact(reply: Mapping[str, Any]) -> Artifact | None:
    """The artifact a reply names, read (never unpickled) and its file removed."""
    described = reply.get("artifact")
    if not described:
        return None
    path = Path(described["path"])
    try:
        arrays = storage.read_npz(path)
    finally:
        path.unlink(missing_ok=True)
    return Artifact.decode(
        arrays, str(described["kind"]), str(described["layout"]), described.get("attrs") or {}
    )


def exit_text(returncode: int | None) -> str:
    """How a worker process ended, for the message of the request it failed."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
