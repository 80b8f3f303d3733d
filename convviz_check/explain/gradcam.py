"""Grad-CAM class-activation heatmaps, batched, never NaN.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" (arXiv:1610.02391), as in the reference chapter (Deep Learning with
Python, 3rd ed., ch. 10):

- ``A``: the output of a target layer (unless given, the spatial map that feeds the
  head's global pooling or Flatten: :mod:`convviz_check.graph_targets`), ``y_c``: the
  score of class ``c`` (logit or model output);
- ``alpha_k = mean_ij dy_c / dA_k(i, j)``; ``raw = sum_k alpha_k A_k``;
  ``heatmap = ReLU(raw) / max``.

The gradient w.r.t. an intermediate layer comes from :func:`graph.rewire`: a zero input
is added to ``A``, so every consumer of ``A`` (skip connections over it included) sees
``A + zero`` and ``d y / d zero = d y / d A``. One compiled forward/backward
(:func:`backends.make_value_and_grad`) serves a whole batch: the loss is ``y_c`` summed
over the batch, and since inference-mode images do not interact, each image's gradient
is its own. The class per image travels as a tensor (``-1`` = "top predicted"), so the
compiled function is reused for every class choice.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import graph as graph_lib
from ..errors import ConvvizWarning, GraphError, InputError
from ..types import GradCAM
from .inputs import as_image_batch, check_batch_size, to_model_layout

SCORES = ("auto", "logit", "output")

# A map is degenerate when max|raw| <= DEGENERATE_RTOL * |y_c|: the class score
# barely depends on A at float32 precision. Measured: an untrained Xception-41 gives
# max|raw| / |y_c| ~ 5e-10; the bundled trained models give >= 1e-2.
DEGENERATE_RTOL = 1e-5

# A softmax/sigmoid output within this distance of 0 or 1 is called saturated in the
# degenerate warning (its float32 gradient is ~1e-8 or exactly 0; measured).
_SATURATION_EPS = 1e-4

# Images per compiled call (default of ``batch_size``). Measured 2026-11-26, Xception-41
# at 299x299, 16 images, 2-core CPU, s/image at 1 / 2 / 4 / 8 / 16 images per call:
# TF 0.188 / 0.194 / 0.176 / 0.191 / 0.217; torch 0.496 / 0.381 / 0.380 / 0.356 / 0.425
# (32 in one call: 0.94, peak RSS 10.9 GB); JAX 1.068 / 1.143 / 1.030 / 1.007 / 1.008.
# Larger batches buy nothing on a CPU and cost memory (~0.3 GB per image on torch);
# on an accelerator pass a larger batch_size. Identical heatmaps whatever the split.
DEFAULT_BATCH_SIZE = 8


def _zero_shape(model: Any, layer: str, declared: tuple, model_input_shape: tuple) -> tuple:
    """The target layer's output shape (no batch axis) for inputs of ``model_input_shape``.

    Fixed-size models declare it; for models built with ``(None, None, C)`` inputs it
    comes from a symbolic replay at the given size (cached per size).
    """
    if all(d is not None for d in declared):
        return tuple(int(d) for d in declared)
    key = ("shape", layer, tuple(model_input_shape))
    per_model = graph_lib.model_cache(model, "gradcam_shapes")
    if key not in per_model:
        import keras

        flat = graph_lib.flatten(model)
        target = flat.records.index(flat.record(layer))
        shapes: list[tuple] = []

        def hook(path: tuple[str, ...], op: Any, args: tuple, kwargs: dict, call: Any) -> Any:
            out = op.compute_output_spec(*args, **kwargs)
            shapes.append(tuple(keras.tree.flatten(out)[0].shape))
            return out

        fn = graph_lib.functional_of(model)
        inputs = [keras.KerasTensor((None, *model_input_shape), dtype=fn.inputs[0].dtype)]
        graph_lib._replay(fn, inputs, hook, ())
        per_model[key] = tuple(int(d) for d in shapes[target][1:])
    return per_model[key]


def target_layer(model: Any, layer: str | None = None) -> str:
    """The Grad-CAM target layer: ``layer`` after checking it, or the spatial map that
    feeds the head's global pooling (or Flatten).

    The rule follows tensors (:mod:`convviz_check.graph_targets`): a global pooling
    whose result multiplies back into a map (squeeze-and-excitation blocks, as in
    EfficientNet and MobileNetV3) does not end the spatial part of the network. For a
    keras-hub ``ImageClassifier`` the layer is the backbone's output
    (``block14_sepconv2_act`` for Xception-41); for EfficientNetB0 ``top_activation``.

    Raises:
        GraphError: an unknown layer, a non-4-D output, a layer after the head's
            pooling, a 4-D tensor computed from global pooling alone (inside a
            squeeze-and-excitation branch), the output layer itself, a layer the output
            does not depend on, or a model with no spatial map (a vision transformer on
            tokens, an MLP).
    """
    from .. import graph_targets as targets

    flat = graph_lib.flatten(model)
    s = targets.structure(model)
    valid = targets.gradcam_layers(model)
    if layer is None:
        if not any(s.is_map):
            raise targets.no_map_error(model, "Grad-CAM")
        name = targets.head_pooling_input(model)
        if name is None:  # no pooling before the head: the deepest map that feeds it
            name = valid[-1] if valid else None
        if name is None:
            raise GraphError(
                f"Model {getattr(model, 'name', '?')!r} has no spatial map that its output "
                "depends on, so Grad-CAM has no map to weight. Received: spatial layers "
                f"{targets.short_list(graph_lib.spatial_layers(model))}. Expected a "
                "convolutional classifier (a map feeding global pooling or Flatten)."
            )
        return name
    if not isinstance(layer, str):
        raise GraphError(
            f"The Grad-CAM layer must be a layer name. Received: layer={layer!r} "
            f"(type {type(layer).__name__}). Expected one of {targets.short_list(valid)}."
        )
    r = flat.record(layer)
    _check_target(model, r, flat.records.index(r), s, valid)
    return r.name


def _check_target(model: Any, r: Any, i: int, s: Any, valid: list[str]) -> None:
    """Raise the GraphError that says why record ``r`` (index ``i``) is not a valid
    Grad-CAM layer; return when it is."""
    from .. import graph_targets as targets

    layer, expected = r.name, targets.short_list(valid)
    if not r.is_spatial:
        raise GraphError(
            f"The Grad-CAM layer must have a 4-D spatial output (batch, h, w, channels). "
            f"Received: layer={layer!r} with output shape {r.output_shape}. Expected one of "
            f"{expected}."
        )
    if s.after_head_pooling[i]:
        raise GraphError(
            f"The Grad-CAM layer comes after global pooling (or a non-spatial tensor), so "
            f"its map has no spatial meaning. Received: layer={layer!r} with output shape "
            f"{r.output_shape}. Expected a layer before the pooling: one of {expected}."
        )
    if s.pooled[i]:
        raise GraphError(
            f"The Grad-CAM layer is computed from a global pooling alone (as inside a "
            f"squeeze-and-excitation branch), so its {r.output_shape[1:]} output has no "
            f"spatial layout. Received: layer={layer!r} ({r.class_name}). Expected a "
            f"spatial map: one of {expected}."
        )
    if i == s.head:
        raise GraphError(
            f"The Grad-CAM layer cannot be the model's output layer. Received: "
            f"layer={layer!r}. Expected a spatial layer before the head."
        )
    if not s.feeds_head[i]:
        head = graph_lib.flatten(model).records[s.head].name
        raise GraphError(
            f"The model's output does not depend on the Grad-CAM layer, so every map "
            f"would be zero. Received: layer={layer!r}. Expected a layer on the path to "
            f"the output {head!r}."
        )


def gradcam_note(model: Any, layer: str | None = None) -> str:
    """A remark about the Grad-CAM layer (``None``: the automatic one), or ``""``.

    Where the layer is a class-score map (an all-convolutional head: a convolution
    with one channel per class feeding the global pooling directly), the note says so
    and names the previous spatial layer as the alternative.
    """
    from .. import graph_targets as targets

    name = target_layer(model, layer)
    found = targets.class_score_conv(model, name)
    if found is None:
        return ""
    conv, alternative = found
    note = (
        f"Grad-CAM layer {name!r} is a class-score map: the convolution {conv!r} has one "
        "channel per class and feeds the head's global pooling directly (an "
        "all-convolutional head), so the heatmap is the explained class's own channel of "
        "that map (a class activation map), not a weighting of features."
    )
    if alternative is not None:
        note += (
            f" The previous spatial layer {alternative!r} weighs every feature: pass "
            f"layer={alternative!r} for a Grad-CAM over features."
        )
    return note


def _score_plan(model: Any, score: str) -> tuple[str, bool]:
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


def _num_classes(model: Any) -> int:
    out = graph_lib.flatten(model).outputs[0]
    shape = tuple(out.shape)
    if len(shape) != 2 or shape[-1] is None:
        raise GraphError(
            f"Grad-CAM needs a classifier head with output (batch, classes). Received: "
            f"model output shape {shape}. Expected a 2-D output with a known class count."
        )
    return int(shape[-1])


def _loss_fn(num_classes: int) -> Any:
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


def _compiled(model: Any, layer: str, bypass: bool) -> tuple[Any, Any]:
    """``(rewired, value_and_grad fn)`` for (model, layer, head bypass), cached."""
    from .. import backends

    per_model = compiled_cache(model)
    key = (layer, bypass, backends.current_backend())
    if key not in per_model:
        rewired = graph_lib.rewire(model, layer, bypass_head_activation=bypass)
        n_inputs = len(graph_lib.flatten(model).inputs)
        fn = backends.make_value_and_grad(
            rewired.model, _loss_fn(_num_classes(model)), wrt=n_inputs
        )
        per_model[key] = (rewired, fn)
    return per_model[key]


def compiled_cache(model: Any) -> dict:
    """The compiled Grad-CAM functions of ``model``: ``{(layer, bypass, backend):
    (rewired, fn)}`` (freed with the model)."""
    return graph_lib.model_cache(model, "gradcam")


def _class_indices(class_index: Any, n: int, num_classes: int) -> np.ndarray:
    """Requested classes as int32 ``(n,)``; ``-1`` means "top predicted"."""
    if class_index is None:
        return np.full((n,), -1, np.int32)
    arr = np.asarray(class_index)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"class_index must be an int or one int per image. Received: "
            f"class_index={class_index!r}. Expected integers in [0, {num_classes})."
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
    return arr.astype(np.int32)


def _apply_preprocessor(model: Any, batch: np.ndarray) -> np.ndarray:
    """The keras-hub task's own preprocessor applied to the images (preprocess=True)."""
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


def _channels_last(array: np.ndarray, data_format: str) -> np.ndarray:
    return np.moveaxis(array, 1, -1) if data_format == "channels_first" else array


def _maps(
    activation: np.ndarray, gradient: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heatmap, raw, degenerate) from channels-last ``A`` and ``dy_c/dA`` (N,h,w,k)."""
    # float64 accumulation: the channel sum of an Xception map adds 2048 terms.
    alpha = gradient.astype(np.float64).mean(axis=(1, 2))  # (N, k)
    raw = np.einsum("nhwk,nk->nhw", activation.astype(np.float64), alpha)
    finite = np.isfinite(raw).all(axis=(1, 2))
    raw = np.where(finite[:, None, None], raw, 0.0)
    peak = np.maximum(raw, 0.0).max(axis=(1, 2))
    max_abs = np.abs(raw).max(axis=(1, 2))
    degenerate = (~finite) | (max_abs <= DEGENERATE_RTOL * np.abs(score)) | (peak <= 0.0)
    scale = np.where(degenerate, 1.0, peak)
    heatmap = np.where(degenerate[:, None, None], 0.0, np.maximum(raw, 0.0) / scale[:, None, None])
    return heatmap.astype(np.float32), raw.astype(np.float32), degenerate


def gradcam(
    model: Any,
    images: Any,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    layer: str | None = None,
    score: str = "auto",
    preprocess: bool = False,
    batch_size: int | None = None,
) -> GradCAM:
    """Grad-CAM heatmaps of ``images`` for one class each.

    Args:
        model: a functional or Sequential Keras classifier (nested models and keras-hub
            task models included) whose output is ``(batch, classes)``.
        images: ``(N, H, W, C)`` or one ``(H, W, C)`` image, channels-last, uint8 or
            float, in the range the model expects (not rescaled here).
        class_index: ``None`` (the top predicted class of each image), one int for all
            images, or one int per image.
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

    Returns:
        A :class:`~convviz_check.types.GradCAM`: ``heatmap`` (N, h, w) in [0, 1],
        ``raw`` (N, h, w), ``class_index``, ``score`` (y_c), ``score_kind``, ``layer``,
        ``degenerate`` (maps returned as zeros where the class score barely depends on
        the layer: ``max|raw| <= DEGENERATE_RTOL * |y_c|``) and ``image_shape`` (H, W);
        ``note`` (:func:`gradcam_note`).

    Raises:
        InputError: bad images, class indices or score.
        GraphError: a bad target layer (the message lists the valid ones), a model
            without a spatial map (vision transformers on tokens, MLPs), a
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
    flat = graph_lib.flatten(model)  # refuses subclassed / unbuilt models first
    check_batch_size(batch_size)
    chunk = int(batch_size or DEFAULT_BATCH_SIZE)
    batch = as_image_batch(images)
    image_shape = (int(batch.shape[1]), int(batch.shape[2]))
    if preprocess:
        batch = as_image_batch(_apply_preprocessor(model, batch), model)
    else:
        batch = as_image_batch(batch, model)
    if len(flat.inputs) != 1:  # pragma: no cover - as_image_batch refuses these
        raise InputError(f"Expected a single-input model. Received: {len(flat.inputs)} inputs.")
    kind, bypass = _score_plan(model, score)
    name = target_layer(model, layer)
    num_classes = _num_classes(model)
    n = batch.shape[0]
    wanted = _class_indices(class_index, n, num_classes)
    rewired, fn = _compiled(model, name, bypass)
    x = to_model_layout(batch, model)
    zero_shape = _zero_shape(model, name, rewired.zero_shape, x.shape[1:])

    acts, grads, heads = [], [], []
    size = min(chunk, n)
    zero = np.zeros((size, *zero_shape), np.float32)
    for start in range(0, n, size):
        stop = min(start + size, n)
        xs, cls = x[start:stop], wanted[start:stop]
        if stop - start < size:
            # Pad a short last chunk (repeating its last image) so that it runs the
            # program already compiled for this size (a JAX compile of Xception-41 took
            # ~30 s here, more than the padded images cost); the padding is dropped.
            pad = size - (stop - start)
            xs = np.concatenate([xs, np.repeat(xs[-1:], pad, axis=0)])
            cls = np.concatenate([cls, np.repeat(cls[-1:], pad)])
        _, outputs, grad = fn([xs, zero], cls)
        k = stop - start
        acts.append(_channels_last(np.asarray(outputs[0][:k], np.float32), rewired.data_format))
        heads.append(np.asarray(outputs[1][:k], np.float32))
        grads.append(_channels_last(np.asarray(grad[:k], np.float32), rewired.data_format))
    head = np.concatenate(heads)
    if not np.isfinite(head).all():
        bad = np.flatnonzero(~np.isfinite(head).all(axis=1))
        raise InputError(
            f"The model produced non-finite class scores for image(s) {bad[:5].tolist()} "
            "(NaN or inf), so no class score can be differentiated. Received: finite images "
            f"of shape {batch.shape}. Expected a model with finite outputs on them."
        )
    # Same rule as inside the compiled loss: argmax takes the first of tied maxima in
    # NumPy and in all three backends.
    classes = np.where(wanted >= 0, wanted, np.argmax(head, axis=-1)).astype(np.int64)
    y = head[np.arange(n), classes]
    heatmap, raw, degenerate = _maps(np.concatenate(acts), np.concatenate(grads), y)
    _warn_if_saturated(model, kind, y, degenerate)
    return GradCAM(
        heatmap=heatmap,
        raw=raw,
        class_index=classes,
        score=y.astype(np.float32),
        score_kind=kind,
        layer=name,
        degenerate=degenerate,
        image_shape=image_shape,
        note=gradcam_note(model, name),
    )


def _warn_if_saturated(model: Any, kind: str, y: np.ndarray, degenerate: np.ndarray) -> None:
    if kind != "output" or not degenerate.any():
        return
    act = graph_lib.head_activation(model)
    if act not in graph_lib.BYPASSABLE_ACTIVATIONS:
        return
    saturated = degenerate & ((y >= 1.0 - _SATURATION_EPS) | (y <= _SATURATION_EPS))
    if saturated.any():
        idx = np.flatnonzero(saturated)
        warnings.warn(
            f"Grad-CAM maps of {idx.size} image(s) (e.g. {idx[:5].tolist()}) are degenerate "
            f"(returned as zeros): the model's {act} output is saturated (y_c = "
            f"{float(y[idx[0]]):.6g}), so its float32 gradient vanishes. Use score='logit' "
            "(the pre-activation score, as the Grad-CAM paper recommends).",
            ConvvizWarning,
            stacklevel=3,
        )


__all__ = ["DEGENERATE_RTOL", "SCORES", "gradcam", "gradcam_note", "target_layer"]
