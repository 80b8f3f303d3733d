"""Errors raised by convviz_check.

Every error derives from :class:`ConvvizError` and says what was received and what
was expected, in Keras' style ("Received: images.shape=(2, 3)").
"""

from __future__ import annotations


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


class GoldenError(ConvvizError):
    """A golden file is missing, corrupt, unsafe or inconsistent with its sidecar."""


class ComparisonError(ConvvizError, ValueError):
    """Two artifacts cannot be compared (kind, shape or dtype mismatch)."""


class LocalizationError(ConvvizError, ValueError):
    """A localization target (box or mask) is invalid for the heatmap or image."""


def describe_array(name: str, value: object) -> str:
    """Short ``name.shape=... dtype=...`` description for error messages."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None:
        return f"{name}={value!r} (type {type(value).__name__})"
    return f"{name}.shape={tuple(shape)}, {name}.dtype={dtype}"


class ConvvizWarning(UserWarning):
    """Warnings convviz_check emits (large goldens, skipped metrics...)."""
