"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in
Transformers"): how much each patch token flows into the class token through every
attention layer of a vision transformer, as a map on the token grid.

Per attention layer ``l`` the weights ``A_l`` ``(heads, T, T)`` are averaged over heads,
the residual connection is accounted for by mixing in the identity and rows are
normalised again::

    A_hat_l = rownorm(0.5 * mean_heads(A_l) + 0.5 * I)
    R = A_hat_L @ ... @ A_hat_2 @ A_hat_1

The map is the class token's row of ``R`` over the patch tokens (the first prefix
token is taken as the class token), or, for a model without prefix tokens, the mean of
``R``'s rows over the patch tokens (how much each patch flows into the tokens the head
averages). A DeiT (a model with a ``distillation_token`` weight, the second prefix
token) gets the mean of the class token's and the distillation token's rows: DeiT
(Touvron et al. 2021, "Training data-efficient image transformers & distillation
through attention") trains both tokens to carry the prediction and predicts with the
average of their two heads, so both flows make the map. It is class-agnostic: the same
map explains every class.

The weights come from every ``keras.layers.MultiHeadAttention`` inside the model
(keras-hub ViT and DeiT use it), captured during one inference forward
(:class:`convviz_check.keras_private.capture_attention`). A model without one is
refused: Swin's windowed attention (keras-hub ``WindowAttention``) attends within
windows only and has no token-to-token matrix over the whole image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import keras_private
from ..errors import GraphError, InputError
from ..graph.tokens import TokenGrid, grid_of_tokens
from ..types import GradCAM
from .execution import DEFAULT_BATCH_SIZE  # images per forward call, as the CAM family
from .inputs import apply_preprocessor, as_image_batch, check_batch_size, to_model_layout
from .normalisation import normalise

# Weight of the identity (the residual path) in each layer's matrix, the paper's choice.
RESIDUAL_WEIGHT = 0.5


def rollout_matrix(attentions: list[np.ndarray]) -> np.ndarray:
    """``R = A_hat_L @ ... @ A_hat_1`` of per-layer weights ``(N, heads, T, T)``, in
    float64: ``(N, T, T)``, each row summing to 1.

    Example:
        >>> a = np.full((1, 2, 3, 3), 1 / 3)
        >>> rollout_matrix([a]).sum(axis=-1)
        array([[1., 1., 1.]])
    """
    result: np.ndarray | None = None
    for weights in attentions:
        a = np.asarray(weights, np.float64).mean(axis=1)
        eye = np.eye(a.shape[-1])[None]
        a = RESIDUAL_WEIGHT * eye + (1.0 - RESIDUAL_WEIGHT) * a
        a = a / a.sum(axis=-1, keepdims=True)
        result = a if result is None else a @ result
    assert result is not None, "at least one attention layer"
    return result


def rollout_map(matrix: np.ndarray, grid: TokenGrid, rows: int = 1) -> np.ndarray:
    """``(N, h, w)`` from ``R`` ``(N, T, T)``: the mean of the first ``rows`` prefix
    tokens' rows over the patch tokens (1: the class token's; 2: the class and
    distillation tokens' of a DeiT), or (no prefix token) the mean of the patch tokens'
    rows.

    Raises:
        InputError: ``rows`` is not between 1 and the grid's prefix tokens.

    Example:
        >>> grid = TokenGrid(1, 2, 2, "given")
        >>> r = np.eye(4)[None] * 0.5 + 0.125
        >>> rollout_map(r, grid, rows=2)
        array([[[0.125, 0.125]]])
    """
    patches = slice(grid.prefix, None)
    if grid.prefix == 0:
        flow = matrix[:, patches, patches].mean(axis=1)
    elif 1 <= rows <= grid.prefix:
        flow = matrix[:, :rows, patches].mean(axis=1)
    else:
        raise InputError(
            f"rollout rows must be between 1 and the grid's {grid.prefix} prefix tokens. "
            f"Received: rows={rows}. Expected 1 (class token) or 2 (class and "
            "distillation tokens)."
        )
    return flow.reshape(matrix.shape[0], grid.height, grid.width)


def prefix_rows(model: Any, grid: TokenGrid) -> int:
    """How many leading prefix tokens the map reads: 2 for a DeiT (a weight named
    ``distillation_token`` and at least 2 prefix tokens: class and distillation), else
    1 (register tokens, which no head reads, never count); 0 without prefix tokens."""
    if grid.prefix == 0:
        return 0
    names = (str(getattr(w, "path", None) or getattr(w, "name", "")) for w in model.weights)
    distilled = any(n.rsplit("/", 1)[-1].startswith("distillation_token") for n in names)
    return 2 if distilled and grid.prefix >= 2 else 1


def attention_layers(model: Any) -> list[Any]:
    """Every ``keras.layers.MultiHeadAttention`` inside ``model``.

    Raises:
        GraphError: none, naming the attention-like layers found instead.
    """
    import keras

    inner = keras_private.sublayers(model)
    found = [layer for layer in inner if isinstance(layer, keras.layers.MultiHeadAttention)]
    if found:
        return found
    other = sorted({type(x).__name__ for x in inner if "attention" in type(x).__name__.lower()})
    raise GraphError(
        f"Attention rollout needs the attention weights over all tokens, and model "
        f"{getattr(model, 'name', '?')!r} has no keras.layers.MultiHeadAttention layer. "
        f"Received: attention-like layers {other or 'none'} (windowed attention, as in "
        "Swin, has no token-to-token matrix over the whole image). Expected a vision "
        "transformer with global self-attention (keras-hub ViT, DeiT, or "
        "MultiHeadAttention layers), or a CAM method on its token grid instead."
    )


def _refuse_options(options: dict[str, Any]) -> None:
    given = {k: v for k, v in options.items() if v is not None}
    if given:
        raise InputError(
            f"Attention rollout is class-agnostic and reads every attention layer, so it "
            f"takes no class, layer, score, output or method option. Received: {given}. "
            "Expected only model, images, preprocess, batch_size and token_grid."
        )


def rollout(
    model: Any,
    images: Any,
    preprocess: bool = False,
    batch_size: int | None = None,
    token_grid: tuple[int, int, int] | None = None,
    score: str = "auto",
    **refused: Any,
) -> GradCAM:
    """Attention-rollout maps of ``images`` (``cam(model, images, method="rollout")``).

    Args:
        model: a Keras vision transformer with ``keras.layers.MultiHeadAttention``
            layers (keras-hub ViT, DeiT).
        images: ``(N, H, W, C)`` or one ``(H, W, C)`` image, as for :func:`cam`.
        preprocess: apply a keras-hub task model's own ``preprocessor`` first.
        batch_size: images per forward call (``None``: 8); maps do not depend on it.
        token_grid: ``(height, width, prefix tokens)`` where the patch embedding does
            not tell it; ``None``: inferred (:mod:`convviz_check.graph.tokens`).
        score: only ``"auto"`` (rollout has no score to choose).
        **refused: ``class_index``, ``layer``, ``output`` or method options: refused
            unless None (the map is the same for every class and reads every attention
            layer).

    Returns:
        A :class:`~convviz_check.types.GradCAM` with ``method="rollout"``: ``heatmap``
        (N, h, w) on the token grid (``raw / max``), ``raw`` (the rolled-out attention
        flow), ``class_index`` and ``score`` of each image's top class (for the
        record; the map does not depend on them), ``score_kind="output"``, ``layer``
        (the path of the last attention layer called), ``target="attention"``, ``note`` (the grid and
        which rows were used: the class token's, the class and distillation tokens'
        mean for a DeiT, or the mean over tokens).

    Raises:
        GraphError: a model without MultiHeadAttention layers, or a grid that cannot be
            inferred (the message lists what was found).
        InputError: bad images, a class, a layer or a method option.
    """
    _refuse_options({**refused, "score": None if score == "auto" else score})
    check_batch_size(batch_size)
    layers = attention_layers(model)
    batch = as_image_batch(images)
    image_shape = (int(batch.shape[1]), int(batch.shape[2]))
    batch = as_image_batch(apply_preprocessor(model, batch) if preprocess else batch, model)
    weights, head, last = _forward(model, layers, to_model_layout(batch, model), batch_size)
    tokens = int(weights[0].shape[-1])
    what = f"the attention weights ({tokens} tokens)"
    image_hw = (int(batch.shape[1]), int(batch.shape[2]))
    grid = grid_of_tokens(model, tokens, image_hw, token_grid, what)
    rows = prefix_rows(model, grid)
    raw = rollout_map(rollout_matrix(weights), grid, rows=max(rows, 1))
    # The CAM family's rule (rollout flows are >= 0, so its ReLU changes nothing) without
    # its score bound: rollout has no score, only a map with no positive value or a
    # non-finite one is degenerate.
    heatmap, _, degenerate = normalise(raw, np.zeros(raw.shape[0]))
    classes = np.argmax(head.reshape(head.shape[0], -1), axis=-1).astype(np.int64)
    row = {
        0: "the mean over tokens (no class token)",
        1: "the class token's row",
        2: "the mean of the class and distillation tokens' rows",
    }[rows]
    return GradCAM(
        heatmap=heatmap,
        raw=raw.astype(np.float32),
        class_index=classes,
        score=head.reshape(head.shape[0], -1)[np.arange(len(classes)), classes],
        score_kind="output",
        layer=last,
        degenerate=degenerate,
        image_shape=image_shape,
        note=f"Attention rollout over {len(layers)} attention layer(s): {row}, on "
        f"{grid.describe()}.",
        method="rollout",
        target="attention",
    )


def _forward(
    model: Any, layers: list[Any], x: np.ndarray, batch_size: int | None
) -> tuple[list[np.ndarray], np.ndarray, str]:
    """``(per-layer attention weights (N, heads, T, T), first output (N, ...), the path
    of the last attention layer called)`` of one inference forward per chunk."""
    import keras

    size = int(batch_size or DEFAULT_BATCH_SIZE)
    per_chunk: list[list[np.ndarray]] = []
    heads: list[np.ndarray] = []
    for start in range(0, x.shape[0], size):
        with keras_private.capture_attention(layers) as captured:
            out = model(x[start : start + size], training=False)
        per_chunk.append([np.asarray(keras.ops.convert_to_numpy(s)) for s in captured.scores])
        heads.append(np.asarray(keras.ops.convert_to_numpy(keras.tree.flatten(out)[0])))
    weights = [np.concatenate(parts) for parts in zip(*per_chunk, strict=True)]
    if not captured.called:
        raise GraphError(
            f"Model {getattr(model, 'name', '?')!r} holds {len(layers)} "
            "MultiHeadAttention layer(s), but its forward called none of them, so there "
            "are no attention weights to roll out. Expected a transformer whose forward "
            "runs its attention layers."
        )
    last = captured.called[-1]
    return weights, np.concatenate(heads).astype(np.float32), str(getattr(last, "path", last.name))


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "RESIDUAL_WEIGHT",
    "attention_layers",
    "prefix_rows",
    "rollout",
    "rollout_map",
    "rollout_matrix",
]
