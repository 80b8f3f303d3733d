"""Validation of image batches, shared by activations, Grad-CAM and filter patterns.

Images are given channels-last, ``(N, H, W, C)`` or one image ``(H, W, C)``, uint8 or
float, in the value range the model expects: nothing is rescaled or otherwise
"preprocessed" here. :func:`as_image_batch` only checks them against the
model's input and returns a float32 channels-last batch; :func:`to_model_layout`
transposes such a batch to ``(N, C, H, W)`` for a ``channels_first`` model.

Every problem raises :class:`~convviz_check.errors.InputError` naming what was received
and what was expected.

:func:`infer_input_range` reads the value range a model expects from the preprocessing
layers at the start of its graph (``Rescaling``, ``Normalization``: EfficientNet,
MobileNetV3 and ConvNeXt take 0-255 pixels).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, describe_array


@dataclass(frozen=True)
class InputSpec:
    """The model's image input, described channels-last.

    ``height``, ``width`` and ``channels`` are ``None`` where the model accepts any
    size (e.g. keras-hub backbones built with ``image_shape=(None, None, 3)``).
    """

    height: int | None
    width: int | None
    channels: int | None
    data_format: str  # "channels_last" or "channels_first"

    @property
    def shape(self) -> tuple[int | None, int | None, int | None]:
        """``(H, W, C)``, channels-last whatever the model's layout."""
        return (self.height, self.width, self.channels)


def check_batch_size(batch_size: Any) -> None:
    """``batch_size`` must be ``None`` or an int >= 1 (bools refused)."""
    if batch_size is not None and (
        not isinstance(batch_size, numbers.Integral)
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise InputError(
            f"batch_size must be None or an int >= 1. Received: batch_size={batch_size!r}."
        )


def _dim(value: Any) -> int | None:
    return None if value is None else int(value)


def input_spec(model: Any) -> InputSpec:
    """Describe ``model``'s single image input (channels-last), from its flattened graph.

    The layout is the ``data_format`` of the first layer that declares one (a Conv2D or
    pooling layer); models without such a layer follow ``keras.config.image_data_format()``.

    Raises:
        InputError: the model does not have exactly one 4-D input.
    """
    import keras

    from .. import graph as graph_lib

    flat = graph_lib.flatten(model)
    if len(flat.inputs) != 1 or len(flat.inputs[0].shape) != 4:
        shapes = [tuple(x.shape) for x in flat.inputs]
        raise InputError(
            "Expected a model with exactly one image input of rank 4 (batch, H, W, C). "
            f"Received: model {getattr(model, 'name', '?')!r} with input shapes {shapes}."
        )
    data_format = next(
        (
            r.operation.data_format
            for r in flat.records
            if getattr(r.operation, "data_format", None) in ("channels_first", "channels_last")
        ),
        keras.config.image_data_format(),
    )
    _, a, b, c = (_dim(d) for d in flat.inputs[0].shape)
    if data_format == "channels_first":
        return InputSpec(height=b, width=c, channels=a, data_format=data_format)
    return InputSpec(height=a, width=b, channels=c, data_format=data_format)


def as_image_batch(images: Any, model: Any = None) -> np.ndarray:
    """Check ``images`` against ``model``'s input; return a float32 ``(N, H, W, C)`` batch.

    Args:
        images: ``(N, H, W, C)`` or one image ``(H, W, C)``, channels-last even for a
            ``channels_first`` model, uint8/integer or float, already in the model's
            expected value range (not rescaled here).
        model: the Keras model the images are for; ``None`` checks only rank, emptiness,
            dtype and finiteness.

    Returns:
        A new float32 array ``(N, H, W, C)`` (values unchanged).

    Raises:
        InputError: wrong rank, an empty batch, a non-numeric dtype, NaN/inf pixels, a
            channel count or (for a fixed-size input) a spatial size the model does not
            take.

    Example:
        >>> batch = as_image_batch(np.zeros((32, 32, 3), np.uint8), model)
        >>> batch.shape, batch.dtype
        ((1, 32, 32, 3), dtype('float32'))
    """
    if isinstance(images, list | tuple):
        try:
            images = np.stack([np.asarray(im) for im in images])
        except ValueError as e:
            raise InputError(
                f"Images given as a list must all have one shape. Received: {len(images)} "
                f"images ({e}). Expected a list of (H, W, C) arrays or an (N, H, W, C) array."
            ) from None
    arr = np.asarray(images)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InputError(
            f"Images must be numeric (uint8/integer or float). Received: {describe_array('images', arr)}."
        )
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError(
            "Images must be (N, H, W, C) or one image (H, W, C), channels-last. "
            f"Received: {describe_array('images', arr)} (rank {arr.ndim})."
        )
    if arr.shape[0] == 0:
        raise InputError(
            f"The image batch is empty. Received: {describe_array('images', arr)}. "
            "Expected at least one image."
        )
    batch = arr.astype(np.float32)
    finite = np.isfinite(batch)
    if not finite.all():
        bad = int(batch.size - np.count_nonzero(finite))
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InputError(
            f"Images contain non-finite pixels (NaN or inf). Received: {bad} non-finite "
            f"value(s) in images.shape={arr.shape}, the first at index {where}. "
            "Expected finite pixel values."
        )
    if model is not None:
        _check_against_model(batch, input_spec(model), getattr(model, "name", "?"))
    return batch


def _check_against_model(batch: np.ndarray, spec: InputSpec, name: str) -> None:
    n, h, w, c = batch.shape
    expected = f"(N, {spec.height or 'H'}, {spec.width or 'W'}, {spec.channels or 'C'})"
    if spec.channels is not None and c != spec.channels:
        hint = ""
        if spec.data_format == "channels_first" and h == spec.channels:
            hint = (
                " The model is channels_first, but images are always given channels-last; "
                "they are transposed for the model."
            )
        raise InputError(
            f"Images have the wrong number of channels for model {name!r}. Received: "
            f"images.shape={batch.shape} ({c} channels). Expected channels-last images "
            f"{expected} with {spec.channels} channels.{hint}"
        )
    for axis, got, want in (("height", h, spec.height), ("width", w, spec.width)):
        if want is not None and got != want:
            raise InputError(
                f"Image {axis} does not match the fixed input size of model {name!r}. "
                f"Received: images.shape={batch.shape}. Expected {expected}."
            )


def to_model_layout(batch: np.ndarray, model: Any) -> np.ndarray:
    """A channels-last batch in the layout ``model`` takes (``(N, C, H, W)`` for a
    ``channels_first`` model; unchanged otherwise)."""
    if input_spec(model).data_format == "channels_first":
        return np.ascontiguousarray(np.transpose(batch, (0, 3, 1, 2)))
    return batch


def apply_preprocessor(model: Any, batch: np.ndarray) -> np.ndarray:
    """The keras-hub task's own ``preprocessor`` applied to the images (the
    ``preprocess=True`` of :func:`convviz_check.cam`), as float32 NumPy.

    Raises:
        InputError: ``model`` has no ``preprocessor``.
    """
    pre = getattr(model, "preprocessor", None)
    if pre is None:
        raise InputError(
            f"preprocess=True needs a keras-hub task model with a preprocessor. Received: "
            f"model {getattr(model, 'name', '?')!r} of class {type(model).__name__!r} with "
            "no `preprocessor`. Expected a keras-hub task (e.g. ImageClassifier) built or "
            "loaded with one, or preprocess=False and images already preprocessed."
        )
    import keras

    out = pre(batch)
    if isinstance(out, tuple):  # (x, y, sample_weight) when a label was packed
        out = out[0]
    return np.asarray(keras.ops.convert_to_numpy(out), np.float32)


def to_channels_last(array: np.ndarray, data_format: str) -> np.ndarray:
    """A 4-D activation in channels-last order (``(N, C, H, W)`` -> ``(N, H, W, C)``
    when ``data_format`` is ``"channels_first"``); a token sequence ``(N, tokens,
    features)`` has no channel axis to move and is returned as it is."""
    if data_format == "channels_first" and array.ndim == 4:
        return np.ascontiguousarray(np.transpose(array, (0, 2, 3, 1)))
    return array


# The conventional pixel ranges :func:`infer_input_range` chooses from, in this order.
PIXEL_RANGES: tuple[tuple[float, float], ...] = ((0.0, 255.0), (0.0, 1.0), (-1.0, 1.0))
# A preprocessed range counts as unit scale when every channel's interval is this wide
# ([0, 1] is 1 wide, [-1, 1] 2, ImageNet standardization ~4.4) and stays inside
# [-UNIT_BOUND, UNIT_BOUND].
UNIT_WIDTH = (0.5, 8.0)
UNIT_BOUND = 8.0
# Layers that leave pixel values as they are at inference (augmentation is off, resizing
# and cropping move pixels): skipped while looking for the leading preprocessing.
_VALUE_PRESERVING = ("Random", "Resizing", "CenterCrop", "Identity", "Dropout", "InputLayer")


def _numpy(value: Any) -> np.ndarray:
    try:
        return np.asarray(value, np.float64).reshape(-1)
    except (TypeError, ValueError):
        import keras

        return np.asarray(keras.ops.convert_to_numpy(value), np.float64).reshape(-1)


def _affine(op: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(slope, offset)`` per channel (1-D, broadcastable) of a Rescaling or a built
    Normalization layer; ``None`` for a Normalization without statistics."""
    if type(op).__name__ == "Rescaling":
        return _numpy(op.scale), _numpy(op.offset)
    mean, variance = getattr(op, "mean", None), getattr(op, "variance", None)
    if mean is None or variance is None:
        return None
    import keras

    std = np.maximum(np.sqrt(np.maximum(_numpy(variance), 0.0)), keras.config.epsilon())
    mean = _numpy(mean)
    if getattr(op, "invert", False):
        return std, mean
    return 1.0 / std, -mean / std


def _leading_preprocessing(model: Any) -> list[Any]:
    """The Rescaling/Normalization operations that the model input goes through first,
    in order (value-preserving layers in between are skipped)."""
    from .. import graph as graph_lib
    from ..graph import targets as graph_targets

    records = graph_lib.flatten(model).records
    children = graph_targets.structure(model).children
    current = [i for i, r in enumerate(records) if r.reads_input and not r.parents]
    chain: list[Any] = []
    while len(current) == 1:
        i = current[0]
        r = records[i]
        if r.class_name in ("Rescaling", "Normalization"):
            chain.append(r.operation)
        elif not r.class_name.startswith(_VALUE_PRESERVING):
            break
        nxt = list(children[i])  # follow the only consumer, when it reads nothing else
        if len(nxt) != 1 or records[nxt[0]].parents != (i,) or records[nxt[0]].reads_input:
            break
        current = nxt
    return chain


def infer_input_range(model: Any) -> tuple[float, float] | None:
    """The value range ``model`` expects, inferred from the preprocessing layers at the
    start of its graph; ``None`` when it cannot be inferred.

    The leading ``Rescaling`` and ``Normalization`` layers (value-preserving layers
    such as ``Resizing`` or ``Random*`` augmentation may sit in between) form an affine
    map per channel. The result is the first of ``PIXEL_RANGES`` (0-255, then 0-1, then
    -1-1) that this map sends to a unit-scale range: every channel's interval
    ``UNIT_WIDTH[0]``-``UNIT_WIDTH[1]`` wide and inside ``[-UNIT_BOUND, UNIT_BOUND]``.
    EfficientNet (``Rescaling(1/255)`` + ``Normalization``), EfficientNetV2,
    MobileNetV3 (``Rescaling(1/127.5, -1)``) and ConvNeXt (``Normalization`` with
    ImageNet statistics times 255) give ``(0.0, 255.0)``. ``None`` for a model without
    such layers, an unbuilt ``Normalization``, or a map that fits no candidate.

    Example:
        >>> infer_input_range(keras.applications.MobileNetV3Small(weights=None))
        (0.0, 255.0)
    """
    chain = _leading_preprocessing(model)
    found = [_affine(op) for op in chain]
    maps = [m for m in found if m is not None]
    if not maps or len(maps) != len(found):
        return None
    for lo, hi in PIXEL_RANGES:
        low, high = np.array([lo]), np.array([hi])
        try:
            for slope, offset in maps:
                a, b = slope * low + offset, slope * high + offset
                low, high = np.minimum(a, b), np.maximum(a, b)
        except ValueError:  # per-channel statistics that do not broadcast together
            return None
        width = high - low
        if (
            np.all(width >= UNIT_WIDTH[0])
            and np.all(width <= UNIT_WIDTH[1])
            and np.all(np.abs(low) <= UNIT_BOUND)
            and np.all(np.abs(high) <= UNIT_BOUND)
        ):
            return (lo, hi)
    return None


__all__ = [
    "InputSpec",
    "PIXEL_RANGES",
    "apply_preprocessor",
    "as_image_batch",
    "infer_input_range",
    "input_spec",
    "to_channels_last",
    "to_model_layout",
]


def class_indices(
    class_index: Any, n: int, num_classes: int, callable_allowed: bool = False
) -> np.ndarray:
    """``class_index`` (one int, or one int per image) checked against ``num_classes``
    and broadcast to int64 ``(n,)``; ``callable_allowed`` only changes the message."""
    arr = np.asarray(class_index)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        what = (
            "an int, one int per image or a callable"
            if callable_allowed
            else ("an int or one int per image")
        )
        raise InputError(
            f"class_index must be {what}. Received: class_index={class_index!r}. Expected "
            f"integers in [0, {num_classes})."
        )
    if arr.ndim == 0:
        if not 0 <= int(arr) < num_classes:
            raise InputError(
                f"class_index out of range. Received: class_index={int(arr)}. Expected an "
                f"integer in [0, {num_classes}) for a model with {num_classes} classes."
            )
        arr = np.full((n,), int(arr), np.int64)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(
            f"class_index must be an int or one per image. Received: class_index with "
            f"shape {arr.shape} for {n} image(s). Expected an int or shape ({n},)."
        )
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise InputError(
            f"class_index out of range. Received: class_index={arr[bad][:5].tolist()} "
            f"(at image(s) {np.flatnonzero(bad)[:5].tolist()}). Expected integers in "
            f"[0, {num_classes}) for a model with {num_classes} classes."
        )
    return arr.astype(np.int64)
