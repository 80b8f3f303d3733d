"""Token grids: a transformer's ``(batch, tokens, features)`` output as a spatial map.

A vision transformer cuts the image into patches and carries one token per patch
(``h * w`` of them, row by row) after a few *prefix* tokens (a class token, DeiT's
distillation token, register tokens). Dropping the prefix and reshaping gives a
``(batch, h, w, features)`` map that every CAM method weighs like a convolutional one:
the grid is an adapter in front of the CAM skeleton (:mod:`convviz_check.explain.cam`),
the way pytorch-grad-cam's ``reshape_transform`` is.

- :func:`infer_grid` decides ``(h, w, prefix)`` for a layer: from the model's patch
  embedding (a convolution whose kernel equals its stride: ``h = H / stride``, also
  halved per downsampling stage as in Swin), else from the image's aspect ratio, or
  takes the caller's ``token_grid=(h, w, prefix)``;
- :func:`auto_token_layer` is the automatic CAM layer of a transformer (the rule is in
  its docstring);
- :func:`check_token_layer` checks a token layer the caller named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import graph as graph_lib
from .. import keras_private
from ..errors import GraphError, InputError
from ..types import check_token_grid

# Operations that pass tokens through unchanged at inference: the automatic layer of a
# head that averages tokens lies before them.
PASS_THROUGH = ("Dropout", "Identity")

# Operations that act on each token alone (no mixing across tokens): behind a class-token
# head, the patch tokens of their outputs never reach the score.
TOKENWISE = (
    *PASS_THROUGH,
    "LayerNormalization",
    "RMSNormalization",
    "Activation",
    "Dense",
    "EinsumDense",
)

# Operations that combine tensors token by token (a residual connection's Add).
ELEMENTWISE = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")

# Operations that reduce the token axis by picking tokens (the class token ``x[:, 0]``)
# rather than averaging them.
SELECTIONS = ("GetItem", "Slice", "Take", "StridedSlice")

# Prefix tokens accepted by inference: class (1), distillation (DeiT: 2), register tokens
# (up to 4 in "Vision Transformers Need Registers", Darcet et al. 2024: 5). More than 8
# is more likely a wrong grid than real prefix tokens.
MAX_PREFIX = 8

# Downsampling stages tried after a patch embedding (Swin halves the grid per stage; 4
# stages is Swin's deepest configuration).
MAX_STAGES = 4


@dataclass(frozen=True)
class TokenGrid:
    """How a ``(batch, tokens, features)`` tensor maps onto the image: ``prefix`` leading
    tokens dropped, the next ``height * width`` tokens row by row. ``source`` says where
    it came from (for a layer's note and error messages)."""

    height: int
    width: int
    prefix: int
    source: str

    @property
    def tokens(self) -> int:
        return self.prefix + self.height * self.width

    def to_map(self, array: np.ndarray) -> np.ndarray:
        """``(N, tokens, F)`` -> ``(N, height, width, F)``: the prefix tokens dropped."""
        n, t = array.shape[0], array.shape[1]
        if t != self.tokens:
            raise GraphError(
                f"The token grid does not fit the layer's output. Received: {t} tokens. "
                f"Expected {self.tokens} = {self.prefix} prefix + {self.height} x "
                f"{self.width} patches ({self.source})."
            )
        return array[:, self.prefix :].reshape(n, self.height, self.width, -1)

    def describe(self) -> str:
        """``"a 4x4 grid after 1 prefix token(s) (source)"``."""
        return (
            f"a {self.height}x{self.width} grid after {self.prefix} prefix token(s) ({self.source})"
        )

    def note(self, layer: str) -> str:
        """What a CAM's ``note`` says about the grid."""
        return f"Token layer {layer!r} read as {self.describe()}."


def is_token_record(record: Any) -> bool:
    """A record whose output is ``(batch, tokens, features)`` with a known token count."""
    shape = record.output_shape
    return len(shape) == 3 and shape[1] is not None


def token_layers(model: Any) -> list[str]:
    """Token-sequence layers the model's output depends on, before the head reduces the
    token axis (depth order)."""
    records = graph_lib.flatten(model).records
    s = graph_lib.structure(model)
    pool = _token_pooling(model)
    return [
        r.name
        for i, r in enumerate(records)
        if is_token_record(r) and s.feeds_head[i] and (pool is None or i < pool)
    ]


def _token_pooling(model: Any) -> int | None:
    """Index of the head's token pooling: the deepest record the output depends on that
    reads a token sequence and outputs no token sequence (``x[:, 0]``, a mean). The
    deepest, because a reduction inside the network (a class token made from the
    patches' mean) is not the head's."""
    records = graph_lib.flatten(model).records
    s = graph_lib.structure(model)
    found = [
        i
        for i, r in enumerate(records)
        if not is_token_record(r)
        and s.feeds_head[i]
        and any(is_token_record(records[p]) for p in r.parents)
    ]
    return max(found) if found else None


def auto_token_layer(model: Any) -> str | None:
    """The automatic CAM layer of a transformer on tokens, ``None`` without one.

    The rule follows tensors back from the head's token pooling.

    - A head that *selects* tokens (``x[:, 0]``, the class token): the patch tokens of
      the last block's output reach the score through token-wise layers only (the final
      norm, a Dense, a residual Add), so their gradient is exactly zero and every
      gradient-based map would be degenerate. The layer is the input of the last layer
      that mixes tokens (the last block, or its attention layer in a functional
      model): the previous block's output, or the patch embedding for a one-block
      model, where the last block's attention still mixes every patch into the class
      token: the layer
      pytorch-grad-cam recommends for ViT (the last block's first norm, a token-wise
      view of the same tensor).
    - A head that *averages* tokens (Swin, ViT with ``pooling="gap"``): the tensor the
      mean reads (Dropout skipped), which is the final norm's output. Not the last
      block's output before that norm: a LayerNormalization is scale-invariant per
      token, so at its input ``sum_k A_k dy/dA_k = 0`` for every token, and the
      element-wise methods (HiResCAM) give zero maps there (measured on a tiny ViT:
      ``max|raw|`` ~1e-7 against a score of 1.4).
    """
    records = graph_lib.flatten(model).records
    pool = _token_pooling(model)
    if pool is None:
        return None
    if records[pool].class_name in SELECTIONS:
        mixing = _last_mixing(records, pool)
        if mixing is None:
            return None
        before = _token_parent(records, mixing)
        return records[mixing if before is None else before].name
    m = _token_parent(records, pool)
    while m is not None and records[m].class_name in PASS_THROUGH:
        before = _token_parent(records, m)
        if before is None:
            break
        m = before
    return None if m is None else records[m].name


def _last_mixing(records: list, pool: int) -> int | None:
    """The deepest record that mixes tokens among those the pooling reads through
    per-token operations (norms, Dense, and element-wise ones such as a residual
    ``Add``, whose every token input is followed)."""
    stack, seen, mixing = [pool], set(), []
    while stack:
        i = stack.pop()
        for p in records[i].parents:
            if p in seen or not is_token_record(records[p]):
                continue
            seen.add(p)
            if records[p].class_name in TOKENWISE + ELEMENTWISE:
                stack.append(p)
            else:
                mixing.append(p)
    return max(mixing) if mixing else None


def _token_parent(records: list, i: int) -> int | None:
    """The deepest token-sequence record that record ``i`` reads, or None."""
    parents = [p for p in records[i].parents if is_token_record(records[p])]
    return max(parents) if parents else None


def check_token_layer(model: Any, layer: str) -> str:
    """``layer`` when it is a token layer the output depends on, before the head's token
    pooling.

    Raises:
        GraphError: saying which of these it is not, with the layers that fit.
    """
    valid = token_layers(model)
    if layer in valid:
        return layer
    record = graph_lib.flatten(model).record(layer)
    auto = auto_token_layer(model)
    raise GraphError(
        f"The CAM layer {layer!r} of model {getattr(model, 'name', '?')!r} is a token "
        f"sequence {record.output_shape} that is not before the head's token pooling, or "
        f"that the output does not depend on. Expected one of {valid} (the automatic "
        f"layer is {auto!r})."
    )


def _patch_strides(model: Any) -> list[tuple[int, int]]:
    """The strides of the model's patch embeddings: 2-D convolutions (inside custom
    layers included) whose kernel equals their stride, larger than 1."""
    import keras

    found: list[tuple[int, int]] = []
    for layer in keras_private.sublayers(model):
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        kernel, strides = tuple(layer.kernel_size), tuple(layer.strides)
        if kernel == strides and max(strides) > 1 and strides not in found:
            found.append((int(strides[0]), int(strides[1])))
    return found


def _candidates(tokens: int, image_hw: tuple[int, int], strides: list) -> list[tuple]:
    """``(h, w, prefix, source)`` grids that fit ``tokens`` for an image of ``image_hw``."""
    height, width = image_hw
    found: list[tuple] = []
    for sh, sw in strides:
        for stage in range(MAX_STAGES):
            h, w = height // sh >> stage, width // sw >> stage
            if h >= 1 and w >= 1 and 0 <= tokens - h * w <= MAX_PREFIX:
                source = f"patch embedding of stride {(sh, sw)}" + (
                    f", {stage} downsampling stage(s)" if stage else ""
                )
                found.append((h, w, tokens - h * w, source))
    if found:
        return found
    for prefix in range(min(MAX_PREFIX, tokens - 1) + 1):
        n = tokens - prefix
        for h in range(1, math.isqrt(n * max(height, 1)) + 2):
            if n % h == 0 and h * width == (n // h) * height:
                found.append((h, n // h, prefix, "image aspect ratio"))
    return found


def infer_grid(
    model: Any, layer: str, image_hw: tuple[int, int], token_grid: Any = None
) -> TokenGrid:
    """The token grid of ``layer`` for images of ``image_hw`` (model layout's height and
    width): ``token_grid=(h, w, prefix)`` when given, else inferred (module docstring).

    Raises:
        InputError: a malformed ``token_grid``.
        GraphError: ``token_grid`` does not add up to the layer's token count, or
            inference finds no grid or more than one (the message lists what it found).
    """
    record = graph_lib.flatten(model).record(layer)
    what = f"layer {layer!r} (output {record.output_shape})"
    return grid_of_tokens(model, int(record.output_shape[1]), image_hw, token_grid, what)


def grid_of_tokens(
    model: Any, tokens: int, image_hw: tuple[int, int], token_grid: Any, what: str
) -> TokenGrid:
    """The grid of ``tokens`` tokens of ``model`` (``what``: where they come from, for
    messages); as :func:`infer_grid`."""
    given = check_token_grid(token_grid)
    if given is not None:
        grid = TokenGrid(*given, source="token_grid=")
        if grid.tokens != tokens:
            raise GraphError(
                f"token_grid={given!r} does not fit {what}: {given[0]} x {given[1]} "
                f"patches + {given[2]} prefix = {grid.tokens} tokens. Received: {tokens} "
                f"tokens. Expected height * width + prefix = {tokens}."
            )
        return grid
    strides = _patch_strides(model)
    found = _candidates(tokens, image_hw, strides)
    if len(found) == 1:
        return TokenGrid(*found[0])
    listed = [f"{h}x{w} + {p} prefix ({src})" for h, w, p, src in found] or "none"
    raise GraphError(
        f"Cannot tell the token grid of {what}: {tokens} tokens for images of "
        f"{image_hw[0]}x{image_hw[1]}; patch embeddings found (kernel = stride): "
        f"{strides or 'none'}; candidate grids: {listed}. Expected exactly one grid of at "
        f"most {MAX_PREFIX} prefix tokens. Pass token_grid=(height, width, prefix tokens)."
    )


def on_grid(grid: TokenGrid | None, activation: Any, gradient: Any) -> tuple[Any, Any]:
    """``(activation, gradient)`` of a CAM layer as maps: read as ``grid`` when it is a
    token layer (``grid`` not None; a missing gradient stays None), else unchanged."""
    if grid is None:
        return activation, gradient
    return grid.to_map(activation), None if gradient is None else grid.to_map(gradient)


def grid_for(
    model: Any, layer: str, image_hw: tuple[int, int], token_grid: Any = None
) -> TokenGrid | None:
    """The grid of CAM layer ``layer`` when it is a token layer, ``None`` for a map.

    Raises:
        InputError: ``token_grid`` given for a layer that is already a spatial map.
        GraphError: as :func:`infer_grid`.
    """
    if is_token_record(graph_lib.flatten(model).record(layer)):
        return infer_grid(model, layer, image_hw, token_grid)
    if token_grid is not None:
        raise InputError(
            f"token_grid applies to a token layer (batch, tokens, features). Received: "
            f"token_grid={token_grid!r} for layer {layer!r}, a spatial map. Expected "
            "token_grid=None for a convolutional layer."
        )
    return None


__all__ = [
    "MAX_PREFIX",
    "PASS_THROUGH",
    "SELECTIONS",
    "TOKENWISE",
    "TokenGrid",
    "auto_token_layer",
    "check_token_grid",
    "check_token_layer",
    "grid_for",
    "grid_of_tokens",
    "infer_grid",
    "is_token_record",
    "on_grid",
    "token_layers",
]
