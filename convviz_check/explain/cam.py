"""Class-activation maps (the CAM family) on one skeleton, batched, never NaN.

Every method here weighs the feature maps ``A`` (``(h, w, k)``) of one target layer
and differs only in *how*: :func:`cam` does everything else once (the target layer,
the score and the target, batching with a padded last chunk, the degenerate rule,
ReLU and normalisation), and each method is a small :class:`CamMethod` registered in
:data:`METHODS`:

=============  ================================================================
method         raw map (``g = dy/dA``; sums over ``i, j`` are spatial, ``k`` channels)
=============  ================================================================
``gradcam``    ``sum_k mean_ij(g_k) A_k`` (Selvaraju et al. 2017)
``gradcam++``  ``sum_k w_k A_k``, ``w_k = sum_ij alpha_kij ReLU(g_kij)``,
               ``alpha = g^2 / (2 g^2 + sum_ab A_kab g^3)`` (Chattopadhyay et al. 2018)
``xgradcam``   ``sum_k w_k A_k``, ``w_k = sum_ij (A_kij / sum_ab A_kab) g_kij``
               (Fu et al. 2020)
``hirescam``   ``sum_k g_k * A_k`` elementwise (Draelos & Carin 2020)
``layercam``   ``sum_k ReLU(g_k) * A_k`` elementwise (Jiang et al. 2021)
``scorecam``   ``sum_k softmax_k(y(X * M_k)) A_k``, ``M_k`` = ``A_k`` upsampled and
               min-max normalised (Wang et al. 2020); no gradient
``eigencam``   ``A v_1``, the projection on the first right singular vector of
               ``A`` as an ``(hw, k)`` matrix (Muhammad & Yeasin 2020); no gradient
=============  ================================================================

then ``heatmap = ReLU(raw) / max``.

The gradient w.r.t. an intermediate layer comes from :func:`graph.rewire`: a zero input
is added to ``A``, so every consumer of ``A`` (skip connections over it included) sees
``A + zero`` and ``d y / d zero = d y / d A``. One compiled forward/backward
(:func:`backends.make_value_and_grad`) serves a whole batch: the loss is the target
score summed over the batch, and since inference-mode images do not interact, each
image's gradient is its own. The class per image travels as a tensor (``-1`` = "top
predicted"), so the compiled function is reused for every class choice. Methods
without a gradient run the same rewired graph forward only (:func:`backends.
make_forward`, cached with the model).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import graph as graph_lib
from ..errors import ConvvizWarning, InputError
from ..graph.targets import gradcam_note, target_layer
from ..graph.tokens import grid_for, on_grid
from ..types import GradCAM
from .cam_methods import (  # noqa: F401  (re-exported: explain.cam.METHODS etc.)
    METHODS,
    CamInputs,
    CamMethod,
    bilinear_matrix,
    make_method,
    method_options,
)
from .inputs import as_image_batch, check_batch_size, to_model_layout
from .outputs import select_output
from .probabilities import explained_probability
from .rollout import rollout
from .targets import (
    SCORES,
    Target,
    callable_loss,
    class_loss,
    make_target,
    num_classes,
    score_plan,
)

# A map is degenerate when max|raw| <= DEGENERATE_RTOL * |y_c| (gradient methods: the
# class score barely depends on A at float32 precision) or <= DEGENERATE_RTOL * max|A|
# (Score-CAM, Eigen-CAM: the map is float32 noise next to the activations). Measured:
# an untrained Xception-41 gives max|raw| / |y_c| ~ 5e-10; the bundled trained models
# give >= 1e-2.
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

# Masked inputs per forward call of Score-CAM when batch_size is None (an explicit
# batch_size sets both). Forward-only calls hold no gradient state, so larger chunks
# pay. Measured 2026-12-01, bundled convnet (64 px, 510 masks for 8 scenes), 2-core
# CPU, warm s per cam() call at 8 / 16 / 32 / 64 / 128 masks per call: TF 0.425 /
# 0.349 / 0.265 / 0.279 / 0.353; JAX 0.565 / 0.576 / 0.577 / 0.777 / 0.834; torch
# 7.06 / 6.50 / 3.45 / 2.22 / 1.59 (its per-call overhead dominates: on torch pass
# batch_size=128 for Score-CAM). 32 is the best compromise of the three.
DEFAULT_MASK_BATCH_SIZE = 32

# Masked inputs per call of Score-CAM where the backend sizes its own passes (torch on a
# CPU: see backends.torch.PASS_MAP_BYTES) and batch_size is None: the masks of a call
# are built in NumPy at once (float64, H x W each: 128 masks of 224 x 224 take 51 MB).
# Measured 2026-12-01 with the table above: torch was fastest at 128.
WHOLE_BATCH_MASKS = 128

# Compiled functions kept per model for callable targets (each callable compiles its
# own loss); the oldest is dropped beyond this many.
_MAX_CALLABLE_TARGETS = 8


# --------------------------------------------------------------------------- target layer
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


# --------------------------------------------------------------------------- compiled
def compiled_cache(model: Any) -> dict:
    """The compiled class-target CAM functions of ``model``: ``{(layer, bypass,
    backend): (rewired, fn)}`` (freed with the model)."""
    return graph_lib.model_cache(model, "gradcam")


def _compiled(model: Any, layer: str, bypass: bool, target: Target) -> tuple[Any, Any]:
    """``(rewired, value_and_grad fn)`` for (model, layer, head bypass, target), cached."""
    from .. import backends

    n_inputs = len(graph_lib.flatten(model).inputs)
    if target.fn is None:
        per_model = compiled_cache(model)
        key: tuple = (layer, bypass, backends.current_backend())
        if key not in per_model:
            rewired = graph_lib.rewire(model, layer, bypass_head_activation=bypass)
            fn = backends.make_value_and_grad(
                rewired.model, class_loss(num_classes(model)), wrt=n_inputs
            )
            per_model[key] = (rewired, fn)
        return per_model[key]
    # Callables are keyed by identity and kept alive with their entry (an id is unique
    # only while its object lives).
    per_callable = graph_lib.model_cache(model, "cam_callables")
    key = (layer, bypass, backends.current_backend(), id(target.fn))
    hit = per_callable.get(key)
    if hit is None or hit[2] is not target.fn:
        rewired = graph_lib.rewire(model, layer, bypass_head_activation=bypass)
        fn = backends.make_value_and_grad(rewired.model, callable_loss(target.fn), wrt=n_inputs)
        while len(per_callable) >= _MAX_CALLABLE_TARGETS:
            per_callable.pop(next(iter(per_callable)))
        hit = per_callable[key] = (rewired, fn, target.fn)
    return hit[0], hit[1]


def _forward(model: Any, layer: str, bypass: bool) -> tuple[Any, Any]:
    """``(rewired, forward fn)``: ``fn([x, zero]) -> [A, head]``, cached with the model."""
    from .. import backends

    rewired = graph_lib.rewire(model, layer, bypass_head_activation=bypass)
    return rewired, backends.make_forward(rewired.model)


# --------------------------------------------------------------------------- skeleton
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
    # A token sequence (N, tokens, features) has no channel axis to move.
    if data_format == "channels_first" and array.ndim == 4:
        return np.moveaxis(array, 1, -1)
    return array


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` grown to ``size`` rows by repeating its last row.

    A short last chunk runs the program already compiled for ``size`` (a JAX compile of
    Xception-41 took ~30 s here, more than the padded rows cost); callers drop the
    padding from the results.
    """
    pad = size - array.shape[0]
    return array if pad <= 0 else np.concatenate([array, np.repeat(array[-1:], pad, axis=0)])


def _chunks(batch_size: int | None, n: int) -> tuple[int, int]:
    """``(images, masked inputs)`` per compiled call. Without ``batch_size``: where the
    backend splits a call into memory-sized passes itself (torch on a CPU), the whole
    batch and ``WHOLE_BATCH_MASKS``; else ``DEFAULT_BATCH_SIZE`` and
    ``DEFAULT_MASK_BATCH_SIZE``."""
    from .. import backends

    if batch_size:
        return int(batch_size), int(batch_size)
    if backends.whole_batches():
        return max(n, 1), WHOLE_BATCH_MASKS
    return DEFAULT_BATCH_SIZE, DEFAULT_MASK_BATCH_SIZE


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


def cam(
    model: Any,
    images: Any,
    method: str = "gradcam",
    class_index: int | Sequence[int] | np.ndarray | Callable[[Any], Any] | None = None,
    layer: str | None = None,
    score: str = "auto",
    preprocess: bool = False,
    batch_size: int | None = None,
    output: str | int | None = None,
    token_grid: tuple[int, int, int] | None = None,
    **method_options: Any,
) -> GradCAM:
    """Class-activation maps of ``images`` by one method of the CAM family.

    Args:
        model: a functional or Sequential Keras model (nested models and keras-hub
            task models included).
        images: ``(N, H, W, C)`` or one ``(H, W, C)`` image, channels-last, uint8 or
            float, in the range the model expects (not rescaled here).
        method: ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"hirescam"``,
            ``"layercam"``, ``"scorecam"`` or ``"eigencam"`` (the module docstring has
            each formula and paper); ``"rollout"``: attention rollout of a vision
            transformer (:func:`convviz_check.explain.rollout.rollout`; class-agnostic,
            no ``class_index``, ``layer``, ``score``, ``output`` or method options).
        class_index: what is explained: ``None`` (the top predicted class of each
            image), one int for all images, one int per image, or a callable
            ``score(outputs) -> (N,)`` built from ``keras.ops`` on the head tensor (a
            multi-label sigmoid head, a regression head, a weighted sum of classes:
            ``lambda y: y[:, 2] + 0.5 * y[:, 7]``). The callable receives the tensor
            that ``score`` selects (the logits under ``"auto"`` where the head ends in
            softmax or sigmoid; pass ``score="output"`` for probabilities) and must
            compute each image's score from that image's row alone.
        layer: target layer name (as :func:`convviz_check.graph.flatten` names it);
            ``None`` picks the spatial map that feeds the head's global pooling (or
            Flatten) (:func:`target_layer`).
        score: ``"logit"`` (the head's pre-softmax/sigmoid value; an error where the
            head cannot be bypassed), ``"output"`` (the model output) or ``"auto"``
            (the logit where it can be had, else the output).
        preprocess: apply a keras-hub task model's own ``preprocessor`` to the images
            first (an error for models without one).
        batch_size: images per compiled call, and masked inputs per call for
            Score-CAM (``None``: 8 images, 32 masked inputs, see ``DEFAULT_BATCH_SIZE``
            and ``DEFAULT_MASK_BATCH_SIZE``; on torch on a CPU every image in one call,
            which the backend runs in memory-sized passes, and 128 masked inputs);
            results do not depend on it (beyond float32 rounding, ~1e-7).
        output: the output of a multi-output model to explain, by name (the layer
            that produces it, or its key in a dict of outputs) or index; ``None``: the
            first output.
        token_grid: ``(height, width, prefix tokens)`` of a token layer (a vision
            transformer's ``(batch, tokens, features)`` output), where it cannot be
            inferred from the model's patch embedding; ``None``: inferred
            (:mod:`convviz_check.graph.tokens`). The layer's maps are that grid.
        **method_options: the method's own options: ``max_channels`` (Score-CAM: the
            channels of highest mean activation per image; default every channel),
            ``center`` (Eigen-CAM: subtract each channel's mean first; default False).

    Returns:
        A :class:`~convviz_check.types.GradCAM`: ``heatmap`` (N, h, w) in [0, 1],
        ``raw``, ``class_index`` (the class explained per image; ``-1`` for a
        callable target), ``score`` (the target score of each image), ``score_kind``,
        ``layer``, ``degenerate``, ``image_shape``, ``note``, ``method`` and
        ``target`` (``"class:top"``, ``"class:3"``, ``"class:per-image"`` or
        ``"callable:<qualname>"``, with ``"@<output>"`` on a multi-output model).

    Raises:
        InputError: bad images, class indices, score, output, a callable of the wrong
            output shape, an unknown method or method option.
        GraphError: a bad target layer (the message lists the valid ones), a model
            without a spatial map, a class index on a head that is not
            ``(batch, classes)``, or ``score="logit"`` on a head that cannot be bypassed.

    Warns:
        ConvvizWarning: degenerate maps under ``score="output"`` from a saturated
            softmax/sigmoid (the message suggests ``score="logit"``).

    Example:
        >>> result = cam(model, images, method="scorecam", max_channels=64)
        >>> result.method, result.target, result.heatmap.shape
        ('scorecam', 'class:top', (8, 10, 10))
    """
    if method == "rollout":  # attention weights, not a weighting of maps (explain.rollout)
        extra = dict(method_options, class_index=class_index, layer=layer, output=output)
        return rollout(model, images, preprocess, batch_size, token_grid, score=score, **extra)
    rule = make_method(method, method_options)
    graph_lib.flatten(model)  # refuses subclassed / unbuilt models first
    check_batch_size(batch_size)
    batch = as_image_batch(images)
    image_shape = (int(batch.shape[1]), int(batch.shape[2]))
    if preprocess:
        batch = as_image_batch(_apply_preprocessor(model, batch), model)
    else:
        batch = as_image_batch(batch, model)
    view, output_label = select_output(model, output)
    kind, bypass = score_plan(view, score)
    name = target_layer(view, layer)
    grid = grid_for(view, name, (int(batch.shape[1]), int(batch.shape[2])), token_grid)
    n = batch.shape[0]
    chunk, mask_chunk = _chunks(batch_size, n)
    target = make_target(view, class_index, n, output_label)
    x = to_model_layout(batch, model)
    run = _Runner(view, name, bypass, target, rule.needs_gradient)
    zero_item = _zero_shape(view, name, run.zero_shape, x.shape[1:])
    zero = np.zeros((min(chunk, n), *zero_item), np.float32)
    activation, gradient, head = run.batches(x, target.classes, zero)
    activation, gradient = on_grid(grid, activation, gradient)  # tokens: read as the grid
    if not np.isfinite(head).all():
        bad = np.flatnonzero(~np.isfinite(head.reshape(n, -1)).all(axis=1))
        raise InputError(
            f"The model produced non-finite outputs for image(s) {bad[:5].tolist()} (NaN "
            "or inf), so no class score can be differentiated. Received: finite images "
            f"of shape {batch.shape}. Expected a model with finite outputs on them."
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
    data = CamInputs(
        activation=activation,
        gradient=gradient,
        images=batch,
        masked_scores=(
            run.masked_scorer(model, classes, np.zeros((mask_chunk, *zero_item), np.float32))
            if rule.needs_masked_forward
            else None
        ),
        chunk=mask_chunk,
    )
    with np.errstate(all="ignore"):  # non-finite maps become degenerate zeros below
        raw = rule.raw(data)
    reference = y if rule.scale == "score" else np.abs(activation).max(axis=(1, 2, 3))
    heatmap, raw32, degenerate = normalise(raw, reference)
    if rule.scale == "score":
        _warn_if_saturated(view, kind, y, degenerate, method)
    note = gradcam_note(view, name)
    if note and layer is None:  # only the automatic choice: a layer passed was chosen
        from ..graph.targets import warn_class_score_layer

        warn_class_score_layer(note)
    note = grid.note(name) if grid is not None else note
    return GradCAM(
        heatmap=heatmap,
        raw=raw32,
        class_index=classes,
        score=y.astype(np.float32),
        score_kind=kind,
        layer=name,
        degenerate=degenerate,
        image_shape=image_shape,
        note=note,
        method=method,
        target=target.description,
        probability=_probability(view, target, head, classes, kind),
    )


def _probability(
    model: Any, target: Target, head: np.ndarray, classes: np.ndarray, kind: str
) -> np.ndarray | None:
    """The probability of each explained class from the head values already computed
    (no second forward pass); None for a callable target."""
    if target.fn is not None:
        return None
    flat = head.reshape(head.shape[0], -1)
    return explained_probability(flat, classes, kind, graph_lib.head_activation(model))


class _Runner:
    """The compiled function of one (model, layer, head bypass, target) and the chunked,
    padded calls through it."""

    def __init__(
        self, model: Any, layer: str, bypass: bool, target: Target, gradient: bool
    ) -> None:
        self.target = target
        if gradient:
            self.rewired, self.step = _compiled(model, layer, bypass, target)
            self.forward = None
        else:
            self.rewired, self.forward = _forward(model, layer, bypass)
            self.step = None
        self.zero_shape: tuple = self.rewired.zero_shape
        self.data_format: str = self.rewired.data_format
        # A short last chunk is padded to the chunk size only where the backend compiles
        # per shape (TF, JAX); torch on a CPU would compute the padding for nothing.
        from .. import backends

        self.pad = not backends.whole_batches()

    def batches(
        self, x: np.ndarray, wanted: np.ndarray, zero: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """``(A, dy/dA or None, head)`` of the model-layout batch ``x``, channels-last,
        ``zero.shape[0]`` images per call (``A`` and ``dy/dA`` in float64: a channel sum
        adds up to thousands of terms, 2048 for Xception)."""
        acts, grads, heads = [], [], []
        n, size = x.shape[0], zero.shape[0]
        for start in range(0, n, size):
            k = min(size, n - start)
            xs, cls = x[start : start + k], wanted[start : start + k]
            if self.pad:
                xs, cls = _padded(xs, size), _padded(cls, size)
            else:
                zero = zero[:k]
            if self.step is not None:
                _, outputs, grad = self.step([xs, zero], cls)
                grads.append(_channels_last(np.asarray(grad[:k], np.float32), self.data_format))
            else:
                assert self.forward is not None
                outputs = self.forward([xs, zero])
            acts.append(_channels_last(np.asarray(outputs[0][:k], np.float32), self.data_format))
            heads.append(np.asarray(outputs[1][:k], np.float32))
        gradient = np.concatenate(grads).astype(np.float64) if grads else None
        return np.concatenate(acts).astype(np.float64), gradient, np.concatenate(heads)

    def masked_scorer(
        self, model: Any, classes: np.ndarray, zeros: np.ndarray
    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``fn(masked (M, H, W, C) channels-last, owner (M,)) -> target scores (M,)``
        for ``M <= chunk``: the cached compiled forward, ``chunk`` inputs per call (a
        short chunk padded), each scored for its owner image's target."""
        assert self.forward is not None, "masked inputs run forward only"
        forward, chunk, pad = self.forward, zeros.shape[0], self.pad

        def scores(masked: np.ndarray, owner: np.ndarray) -> np.ndarray:
            m = masked.shape[0]
            inputs = to_model_layout(masked, model)
            if pad:
                outputs = forward([_padded(inputs, chunk), zeros])
            else:
                outputs = forward([inputs, zeros[:m]])
            head = np.asarray(outputs[1][:m], np.float32)
            return self.target.values(head, classes[owner])

        return scores


def _warn_if_saturated(
    model: Any, kind: str, y: np.ndarray, degenerate: np.ndarray, method: str
) -> None:
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


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MASK_BATCH_SIZE",
    "DEGENERATE_RTOL",
    "METHODS",
    "SCORES",
    "CamInputs",
    "CamMethod",
    "bilinear_matrix",
    "cam",
    "compiled_cache",
    "gradcam_note",
    "make_method",
    "method_options",
    "normalise",
    "target_layer",
]
