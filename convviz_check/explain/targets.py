"""What a CAM explains: the score (the logit where the head's activation can be
bypassed, else the output), the target per image (a class, each image's top class, or
a callable ``score(outputs) -> (N,)``) as a typed :class:`Target`, and the losses the
compiled gradient differentiates. :func:`convviz_check.explain.cam.cam` uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import graph as graph_lib
from ..errors import GraphError, InputError
from .inputs import class_indices

SCORES = ("auto", "logit", "output")


def score_plan(model: Any, score: str) -> tuple[str, bool]:
    """``(score_kind, bypass_head_activation)`` for a requested ``score``."""
    if score not in SCORES:
        raise InputError(f"Unknown score. Received: score={score!r}. Expected one of {SCORES}.")
    act = graph_lib.head_activation(model)
    bypassable = act in graph_lib.BYPASSABLE_ACTIVATIONS
    if score == "output":
        return "output", False
    if score == "logit":
        if not bypassable and act != "linear":
            head = graph_lib.flatten(model).head_record().name
            raise GraphError(
                f"score='logit' needs a head whose final activation is softmax, sigmoid or "
                f"linear. Received: final activation {act!r} in layer {head!r}. Expected "
                "score='output' (or 'auto') for this model."
            )
        return "logit", bypassable
    # auto: the logit wherever it can be had (a saturated softmax has gradients ~1e-8
    # to 1e-11, measured), else the output.
    if bypassable:
        return "logit", True
    return ("logit" if act == "linear" else "output"), False


def num_classes(model: Any) -> int:
    out = graph_lib.flatten(model).outputs[0]
    shape = tuple(out.shape)
    if len(shape) != 2 or shape[-1] is None:
        raise GraphError(
            f"Grad-CAM needs a classifier head with output (batch, classes) to pick a "
            f"class. Received: model output shape {shape}. Expected a 2-D output with a "
            "known class count, or class_index as a callable score(outputs) -> (N,)."
        )
    return int(shape[-1])


def _class_indices(class_index: Any, n: int, num_classes: int) -> np.ndarray:
    """Requested classes as int32 ``(n,)``; ``-1`` means "top predicted"."""
    if class_index is None:
        return np.full((n,), -1, np.int32)
    return class_indices(class_index, n, num_classes, callable_allowed=True).astype(np.int32)


def callable_name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


@dataclass(frozen=True)
class Target:
    """What is differentiated (or weighed) per image: a class (``classes``, ``-1`` =
    top predicted) or a callable ``score(outputs) -> (N,)``."""

    classes: np.ndarray  # (N,) int32; -1 everywhere for a callable
    fn: Callable[[Any], Any] | None
    description: str

    def values(self, head: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """The target score per row of ``head`` (rows explain ``classes``), float64."""
        if self.fn is None:
            return head[np.arange(head.shape[0]), classes].astype(np.float64)
        return _call_target(self.fn, head)


def _call_target(fn: Callable[[Any], Any], head: np.ndarray, what: str = "") -> np.ndarray:
    """``fn`` on a concrete head batch, checked to give one score per row."""
    import keras

    value = fn(keras.ops.convert_to_tensor(head))
    out = np.asarray(keras.ops.convert_to_numpy(value), np.float64)
    if out.shape != (head.shape[0],):
        raise InputError(
            f"class_index as a callable must return one score per image, shape (N,). "
            f"Received: {callable_name(fn)}(outputs) of shape {out.shape} for outputs of "
            f"shape {head.shape}{what}. Expected shape ({head.shape[0]},)."
        )
    return out


def _check_callable_shape(fn: Callable[[Any], Any], model: Any) -> None:
    """Refuse a callable of the wrong output shape before anything is compiled (on a
    zero batch whose row count differs from every output dimension)."""
    dims = tuple(graph_lib.flatten(model).outputs[0].shape)[1:]
    if any(d is None for d in dims):
        return  # checked on the real outputs instead
    rows = max((int(d) for d in dims), default=1) + 1
    probe = (
        f" (checked before anything runs, on a probe batch of {rows} zero rows whose row "
        "count differs from every output dimension: N is that row count here, not your "
        "image count)"
    )
    _call_target(fn, np.zeros((rows, *dims), np.float32), probe)


def make_target(model: Any, class_index: Any, n: int, output_label: str | None) -> Target:
    at = "" if output_label is None else f"@{output_label}"
    if callable(class_index):
        _check_callable_shape(class_index, model)
        return Target(
            np.full((n,), -1, np.int32), class_index, f"callable:{callable_name(class_index)}{at}"
        )
    classes = _class_indices(class_index, n, num_classes(model))
    if class_index is None:
        label = "top"
    elif np.all(classes == classes[0]):
        label = str(int(classes[0]))
    else:
        label = "per-image"
    return Target(classes, None, f"class:{label}{at}")


def explained_scores(
    target: Target, head: np.ndarray, batch_shape: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """``(classes (N,) int64, target scores (N,) float64)`` from the head values of a
    batch of ``batch_shape``: each image's class (its top class where the target says
    ``-1``; ``-1`` everywhere for a callable target) and its score.

    Raises:
        InputError: the head holds a non-finite value, or a target score is not finite.
    """
    n = head.shape[0]
    if not np.isfinite(head).all():
        bad = np.flatnonzero(~np.isfinite(head.reshape(n, -1)).all(axis=1))
        raise InputError(
            f"The model produced non-finite outputs for image(s) {bad[:5].tolist()} (NaN "
            "or inf), so no class score can be differentiated. Received: finite images "
            f"of shape {batch_shape}. Expected a model with finite outputs on them."
        )
    # Same rule as inside the compiled loss: argmax takes the first of tied maxima in
    # NumPy and in all three backends. A callable target has no class: -1.
    classes = np.where(
        target.classes >= 0, target.classes, np.argmax(head.reshape(n, -1), axis=-1)
    ).astype(np.int64)
    if target.fn is not None:
        classes = np.full((n,), -1, np.int64)
    y = target.values(head, classes)
    if not np.isfinite(y).all():
        raise InputError(
            f"The target score is not finite for image(s) "
            f"{np.flatnonzero(~np.isfinite(y))[:5].tolist()} ({target.description}). "
            "Expected a finite score to explain."
        )
    return classes, y


# --------------------------------------------------------------------------- losses
def class_loss(num_classes: int) -> Any:
    """``sum_n y[n, c_n]`` with ``c_n = aux[n]``, or the top class where ``aux[n] < 0``."""

    def loss(outputs: list, aux: Any) -> Any:
        from keras import ops

        head = outputs[1]
        top = ops.cast(ops.argmax(ops.stop_gradient(head), axis=-1), "int32")
        wanted = ops.cast(aux, "int32")
        cls = ops.where(wanted >= 0, wanted, top)
        onehot = ops.one_hot(cls, num_classes, dtype=head.dtype)
        return ops.sum(head * onehot)

    return loss


def callable_loss(fn: Callable[[Any], Any]) -> Any:
    """``sum_n fn(head)[n]``: each image's gradient is that of its own score."""

    def loss(outputs: list, aux: Any) -> Any:
        from keras import ops

        return ops.sum(fn(outputs[1]))

    return loss


def target_output(description: str) -> str | None:
    """The output a target description names (``"class:top@logits"`` -> ``"logits"``;
    :func:`make_target` appends ``@<output>`` on a multi-output model), else None. The
    description is what a GradCAM (and its golden) records as ``target``; this is its
    one reader."""
    return description.rsplit("@", 1)[1] if "@" in description else None
