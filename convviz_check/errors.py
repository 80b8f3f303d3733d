"""Every error and warning convviz_check raises on purpose.

Each error derives from :class:`ConvvizError` and says what was received and what was
expected, in Keras' style ("Received: images.shape=(2, 3)"). All subclasses live in
this module so that an error raised inside a backend worker process can be rebuilt as
the same class in the parent (:func:`rebuild`).
"""

from __future__ import annotations

from typing import Any


class ConvvizError(Exception):
    """Base class of every error convviz_check raises on purpose."""


class ModelLoadError(ConvvizError):
    """A model source could not be loaded (missing, corrupt, unsafe, not a graph)."""


class GraphError(ConvvizError):
    """A model graph cannot be flattened or rewired, or a layer name is unknown."""


class InputError(ConvvizError, ValueError):
    """Images or arguments have the wrong shape, dtype, range or value."""


class BackendError(ConvvizError):
    """A backend is missing, misconfigured, or a backend worker failed."""


class MissingBackendError(BackendError):
    """A backend needed for a cross-backend check is not installed here."""


class WorkerError(BackendError):
    """A backend worker crashed, hung past its timeout, or failed to start."""


class StorageError(ConvvizError):
    """A stored file (array archive, JSON, image) is unreadable, unsafe or too large."""


class GoldenError(StorageError):
    """A golden file is missing, corrupt, unsafe or inconsistent with its sidecar."""


class ComparisonError(ConvvizError, ValueError):
    """Two artifacts cannot be compared (kind, shape or dtype mismatch)."""


class LocalizationError(ConvvizError, ValueError):
    """A localization target (box or mask) is invalid for the heatmap or image."""


class FaithfulnessError(ConvvizError, AssertionError):
    """A heatmap does not explain the model's decision better than a random map or the
    map of another class (``assert_faithful``); an ``AssertionError``, so pytest shows a
    failure, not an error."""


class ConvvizWarning(UserWarning):
    """Warnings convviz_check emits (large goldens, skipped metrics...)."""


class ClassScoreLayerWarning(ConvvizWarning):
    """The automatic Grad-CAM layer is a class-score map (an all-convolutional head: a
    convolution with one channel per class feeding the global pooling), so the heatmap
    is that class's channel, not a weighting of features. Choose the layer: ``layer=``,
    or for a whole test suite the ini key ``convviz_gradcam_layer``."""


def describe_array(name: str, value: object) -> str:
    """Short ``name.shape=... dtype=...`` description for error messages."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None:
        return f"{name}={value!r} (type {type(value).__name__})"
    return f"{name}.shape={tuple(shape)}, {name}.dtype={dtype}"


def _subclasses(cls: type[ConvvizError]) -> dict[str, type[ConvvizError]]:
    found = {cls.__name__: cls}
    for sub in cls.__subclasses__():
        found.update(_subclasses(sub))
    return found


def to_wire(error: BaseException, traceback_text: str = "") -> dict[str, Any]:
    """A JSON-ready description of ``error`` for the trip from a worker to its parent."""
    return {"type": type(error).__name__, "message": str(error), "traceback": traceback_text}


def rebuild(wire: dict[str, Any], context: str) -> ConvvizError:
    """The error a worker reported (see :func:`to_wire`), as the same class here.

    A :class:`ConvvizError` subclass comes back as itself with its message prefixed
    by ``context`` (e.g. ``"[torch worker, gradcam]"``); any other exception becomes a
    :class:`WorkerError` that names the original type and ends with the worker's last
    traceback lines.
    """
    name = str(wire.get("type", ""))
    message = f"{context} {wire.get('message', '')}"
    cls = _subclasses(ConvvizError).get(name)
    if cls is not None:
        return cls(message)
    tail = str(wire.get("traceback", "")).strip().splitlines()[-8:]
    return WorkerError(f"{message} ({name})\nWorker traceback (last lines):\n" + "\n".join(tail))
