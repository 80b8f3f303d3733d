"""A classifier's class probabilities on batches of images, through the model's compiled
forward pass (:func:`convviz_check.backends.make_forward`, cached per model): what the
faithfulness metrics (:mod:`convviz_check.faithfulness`) run every perturbed image
through, ``chunk`` images per call, on TensorFlow, torch and JAX alike.

The class probability is the model's output where its head ends in softmax or sigmoid;
for a linear head (logits) it is the softmax of the logits (the sigmoid for a single
logit); any other head's output is used as it is (``score_kind`` says which).
(:mod:`convviz_check.explain.cam` reads the same head for its score, ``_score_plan``.)

Keras is imported inside the functions only (through the backend and graph modules).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..types import GradCAM

# Perturbed images per compiled forward call (``batch_size=None``). A forward pass
# alone holds no gradients, so a larger batch than Grad-CAM's 8 is cheap; the last
# call is padded to this size so that JAX reuses the compiled program.
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class Classifier:
    """A model's one tracked output as class probabilities (see :func:`prepare`)."""

    forward: Any
    model: Any
    num_classes: int
    score_kind: str
    chunk: int

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, classes)`` float64 class probabilities of a channels-last batch,
        ``chunk`` images per call (the last call padded to ``chunk``)."""
        return np.concatenate(list(self.run(chunks(batch, self.chunk))))

    def run(self, parts: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """The probabilities of each channels-last batch of ``parts`` (each at most
        ``chunk`` images), in order."""
        from .inputs import to_model_layout

        for xs in parts:
            k = len(xs)
            if k < self.chunk:
                xs = np.concatenate([xs, np.repeat(xs[-1:], self.chunk - k, axis=0)])
            out = np.asarray(self.forward([to_model_layout(xs, self.model)])[0], np.float64)
            if out.ndim != 2:
                raise InputError(
                    "Faithfulness metrics need a classifier with output (batch, classes). "
                    f"Received: model output shape {out.shape}."
                )
            yield to_probability(out[:k], self.score_kind)


def chunks(batch: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(batch), size):
        yield batch[start : start + size]


def score_kind(model: Any) -> str:
    """What the tracked probability is, from the head's final activation."""
    from .. import graph as graph_lib

    act = graph_lib.head_activation(model)
    if act in ("softmax", "sigmoid"):
        return f"{act} output"
    if act == "linear":
        return "softmax of the logits"
    return f"output (head activation {act!r}, used as it is)"


def to_probability(out: np.ndarray, kind: str) -> np.ndarray:
    if kind != "softmax of the logits":
        return out
    if out.shape[1] == 1:  # one logit: a binary classifier's sigmoid
        return 1.0 / (1.0 + np.exp(-out))
    shifted = out - out.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def explained_probability(
    head: np.ndarray, classes: np.ndarray, score_kind: str, activation: str
) -> np.ndarray | None:
    """The model's probability of each image's explained class, ``(N,)`` float32, from
    the head values a CAM already computed (no extra forward pass).

    Args:
        head: ``(N, classes)``: the logits where the CAM scored a logit (the head's
            softmax/sigmoid bypassed, or a linear head), else the model's output.
        classes: ``(N,)`` the class explained per image (``-1``: a callable target).
        score_kind: the GradCAM's ``score_kind``, ``"logit"`` or ``"output"``.
        activation: the head's final activation
            (:func:`convviz_check.graph.head_activation`).

    Returns:
        The softmax of the logits under a softmax or linear head (the sigmoid of a
        single logit, as :func:`to_probability`), the sigmoid of each logit under a
        sigmoid head, the output itself where a softmax/sigmoid output was scored;
        None for a callable target, a head that is not ``(N, classes)`` or a head
        whose values are not probabilities (another activation).

    Example:
        >>> explained_probability(np.array([[0.0, np.log(3.0)]]), np.array([1]), "logit",
        ...                       "softmax").round(4).tolist()
        [0.75]
    """
    if head.ndim != 2 or classes.shape != (head.shape[0],) or (classes < 0).any():
        return None
    values = head.astype(np.float64)
    if score_kind == "logit" and activation == "sigmoid":
        with np.errstate(over="ignore"):  # exp(-x) -> inf for a very negative logit: 0
            p = 1.0 / (1.0 + np.exp(-values))
    elif score_kind == "logit" and activation in ("softmax", "linear"):
        p = to_probability(values, "softmax of the logits")
    elif score_kind == "output" and activation in ("softmax", "sigmoid"):
        p = values
    else:
        return None
    # a model's own float32 output may round a hair past [0, 1]: stored goldens refuse that
    return np.clip(p[np.arange(p.shape[0]), classes], 0.0, 1.0).astype(np.float32)


def cam_output(heatmap: Any) -> str | None:
    """The output a GradCAM explains (``"@<name>"`` of its target on a multi-output
    model), else ``None``."""
    from .targets import target_output

    target = getattr(heatmap, "target", "") if isinstance(heatmap, GradCAM) else ""
    return target_output(target) if target else None


def prepare(
    model: Any, images: Any, batch_size: Any, output: str | int | None = None
) -> tuple[Classifier, np.ndarray]:
    """The :class:`Classifier` of ``model``'s output ``output`` (a name or index;
    ``None``: the first) and ``images`` as a channels-last float batch.

    Raises:
        GraphError: a subclassed or unbuilt model.
        InputError: bad images or batch size, an unknown output, or an output that is
            not ``(batch, classes)``.
    """
    from .. import backends
    from .. import graph as graph_lib
    from .inputs import as_image_batch, check_batch_size
    from .outputs import single_output_model

    graph_lib.flatten(model)  # refuses subclassed / unbuilt models first
    check_batch_size(batch_size)
    batch = as_image_batch(images, model)
    model = single_output_model(model, output)  # the tracked output alone
    flat = graph_lib.flatten(model)
    shape = tuple(flat.outputs[0].shape)
    if len(shape) != 2 or shape[-1] is None:
        raise InputError(
            "Faithfulness metrics need a classifier with output (batch, classes). "
            f"Received: model output shape {shape}. Expected a 2-D output with a known "
            "class count."
        )
    forward = backends.make_forward(model)
    chunk = int(batch_size or DEFAULT_BATCH_SIZE)
    return Classifier(forward, model, int(shape[-1]), score_kind(model), chunk), batch
