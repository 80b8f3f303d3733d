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

The skeleton's steps each live in their own module: the inputs and the preprocessor
(:mod:`.inputs`), the output of a multi-output model (:mod:`.outputs`), the target layer
and its token grid (:mod:`.layer`), the score and the target per image (:mod:`.targets`),
the compiled calls in chunks (:mod:`.execution`) and the heatmap rule
(:mod:`.normalisation`); the weighting rules are :mod:`.cam_methods`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import graph as graph_lib
from ..graph.targets import gradcam_note, target_layer, warn_class_score_layer
from ..graph.tokens import on_grid
from ..types import GradCAM
from .cam_methods import (  # noqa: F401  (re-exported: explain.cam.METHODS etc.)
    METHODS,
    CamInputs,
    CamMethod,
    bilinear_matrix,
    make_method,
    method_options,
)
from .execution import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MASK_BATCH_SIZE,
    Runner,
    chunk_sizes,
    compiled_cache,
)
from .inputs import apply_preprocessor, as_image_batch, check_batch_size, to_model_layout
from .layer import resolve_layer
from .normalisation import DEGENERATE_RTOL, normalise, warn_if_saturated
from .outputs import select_output
from .probabilities import explained_probability
from .rollout import rollout
from .targets import SCORES, Target, explained_scores, make_target, score_plan


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
    batch = as_image_batch(apply_preprocessor(model, batch) if preprocess else batch, model)
    view, output_label = select_output(model, output)
    kind, bypass = score_plan(view, score)
    name, grid = resolve_layer(view, layer, (int(batch.shape[1]), int(batch.shape[2])), token_grid)
    chunk, mask_chunk = chunk_sizes(batch_size, batch.shape[0])
    target = make_target(view, class_index, batch.shape[0], output_label)
    x = to_model_layout(batch, model)
    run = Runner(view, name, bypass, target, rule.needs_gradient, x.shape[1:])
    activation, gradient, head = run.batches(x, target.classes, chunk)
    activation, gradient = on_grid(grid, activation, gradient)  # tokens: read as the grid
    classes, y = explained_scores(target, head, batch.shape)
    masked = run.masked_scorer(model, classes, mask_chunk) if rule.needs_masked_forward else None
    data = CamInputs(activation, gradient, batch, masked_scores=masked, chunk=mask_chunk)
    with np.errstate(all="ignore"):  # non-finite maps become degenerate zeros below
        raw = rule.raw(data)
    reference = y if rule.scale == "score" else np.abs(activation).max(axis=(1, 2, 3))
    heatmap, raw32, degenerate = normalise(raw, reference)
    if rule.scale == "score":
        warn_if_saturated(view, kind, y, degenerate, method)
    note = _note(view, name)
    if note and layer is None:  # only the automatic choice: a layer passed was chosen
        warn_class_score_layer(note)
    return GradCAM(
        heatmap=heatmap,
        raw=raw32,
        class_index=classes,
        score=y.astype(np.float32),
        score_kind=kind,
        layer=name,
        degenerate=degenerate,
        image_shape=image_shape,
        note=grid.note(name) if grid is not None else note,
        method=method,
        target=target.description,
        probability=_probability(view, target, head, classes, kind),
    )


def _note(model: Any, layer: str) -> str:
    """:func:`gradcam_note` of ``layer``, cached with the model (it reads the graph only)."""
    per_model = graph_lib.model_cache(model, "cam_notes")
    if layer not in per_model:
        per_model[layer] = gradcam_note(model, layer)
    note: str = per_model[layer]
    return note


def _probability(
    model: Any, target: Target, head: np.ndarray, classes: np.ndarray, kind: str
) -> np.ndarray | None:
    """The probability of each explained class from the head values already computed
    (no second forward pass); None for a callable target."""
    if target.fn is not None:
        return None
    flat = head.reshape(head.shape[0], -1)
    return explained_probability(flat, classes, kind, graph_lib.head_activation(model))


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
