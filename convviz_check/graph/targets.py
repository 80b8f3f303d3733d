"""Which layers hold a spatial map, by name: the rule shared by Grad-CAM, activations
and filter patterns (the rule itself: :mod:`convviz_check.graph.structure`).

- :func:`map_layers`: the spatial maps before the head's pooling (filter patterns);
- :func:`gradcam_layers`: those the model's output depends on (Grad-CAM);
- :func:`head_pooling_input`: the automatic Grad-CAM layer, the map that feeds the
  head's global pooling (or Flatten); for a keras-hub ``ImageClassifier`` the
  backbone's output;
- :func:`class_score_conv`: whether a layer is a class-score map of an
  all-convolutional head.

Transformers on tokens (keras-hub ViT/DeiT/Swin) have no map: their CAM layer is a
token sequence read as a grid (:mod:`convviz_check.graph.tokens`); models without
either (an MLP) have no Grad-CAM layer: :func:`no_map_error`.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from .. import graph as graph_lib
from ..errors import ClassScoreLayerWarning, GraphError
from . import tokens as graph_tokens
from .structure import Structure

# convviz_check/ (this module lives in convviz_check/graph/)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

# Single-input operations between a class-score convolution and the head's pooling
# that keep its channels one per class.
_CHANNELWISE = (
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "PReLU",
    "Softmax",
    "BatchNormalization",
    "Dropout",
    "SpatialDropout2D",
    "Identity",
)


def structure(model: Any) -> Structure:
    """The map structure of ``model``'s flattened graph (cached with the model; see
    :mod:`convviz_check.graph.structure` for the rule)."""
    return graph_lib.structure(model)


def map_layers(model: Any) -> list[str]:
    """Layers whose output is a spatial map before the head's pooling, depth order: the
    layers filter patterns accept."""
    s = structure(model)
    records = graph_lib.flatten(model).records
    return [r.name for i, r in enumerate(records) if s.is_map[i] and not s.after_head_pooling[i]]


def gradcam_layers(model: Any) -> list[str]:
    """The layers Grad-CAM accepts, depth order: maps before the head's pooling that the
    model's output depends on (the output layer itself excluded)."""
    s = structure(model)
    records = graph_lib.flatten(model).records
    return [
        r.name
        for i, r in enumerate(records)
        if s.is_map[i] and not s.after_head_pooling[i] and s.feeds_head[i] and i != s.head
    ]


def default_activation_layers(model: Any) -> list[str]:
    """The default layers of ``activations`` (:func:`graph.default_activation_layers`)."""
    return graph_lib.default_activation_layers(model)


# A filter pattern's loss leaves out a 2-cell border of the map: a map of more than 8
# cells keeps a loss window of at least 5x5.
MIN_FILTER_MAP_CELLS = 9


def spatial_side(model: Any, layer: str) -> int | None:
    """Smallest spatial side of ``layer``'s output, or None when unknown."""
    record = graph_lib.flatten(model).by_name[layer]
    shape = tuple(record.output.shape)
    if len(shape) != 4:
        return None
    dims = shape[2:4] if record.data_format == "channels_first" else shape[1:3]
    known = [d for d in dims if d is not None]
    return min(known) if len(known) == 2 else None


def default_filters_layer(model: Any) -> str:
    """The default layer of filter patterns (the CLI's ``explain`` and ``agree``): the
    deepest 2-D conv layer before the head whose output map is wider than 8 cells.

    Why: the filter-pattern loss leaves out a 2-cell border of the map, so the map must
    be larger than 4 cells, and a 5x5 map leaves a 1x1 loss window that is pure border
    noise; more than 8 cells keeps at least a 5x5 window. Deeper layers show the most
    structure (and amplify backend differences the most, the strictest agreement check).
    A conv after the head's pooling (MobileNetV3's 1x1 ``logits``) is no map. Without
    a fixed input size the deepest conv layer is used; without conv layers, the deepest
    map; when every map is small, the first.

    Raises:
        GraphError: the model has no spatial map before its head.
    """
    maps = map_layers(model)
    in_maps = set(maps)
    candidates = [c for c in graph_lib.conv_layers(model) if c in in_maps] or maps
    if not candidates:
        raise GraphError(
            f"Model {getattr(model, 'name', '?')!r} has no 2-D convolution layer or other "
            "spatial map before its head, so filter patterns cannot be computed. "
            "Expected a model with at least one Conv2D/SeparableConv2D/DepthwiseConv2D."
        )
    sides = [(name, spatial_side(model, name)) for name in candidates]
    if all(side is None for _, side in sides):
        return candidates[-1]
    wide = [name for name, side in sides if side is not None and side >= MIN_FILTER_MAP_CELLS]
    return wide[-1] if wide else candidates[0]


def head_pooling_input(model: Any) -> str | None:
    """The map that feeds the head's global pooling (or Flatten): the deepest map read
    by a record after the head's pooling; ``None`` when the model has no such map."""
    s = structure(model)
    records = graph_lib.flatten(model).records
    fed = [j for i, r in enumerate(records) if s.after_head_pooling[i] for j in r.parents]
    fed = [j for j in fed if s.is_map[j]]
    return records[max(fed)].name if fed else None


def class_score_conv(model: Any, layer: str) -> tuple[str, str | None] | None:
    """``(convolution, alternative)`` when ``layer`` is a class-score map, else ``None``.

    A class-score map comes from a convolution with as many output channels as the
    model has classes, whose output reaches a global pooling of the head through
    channel-wise operations only (activations, BatchNormalization, Dropout), with no
    weighted layer after the pooling: an all-convolutional head, where the pooled
    channels are the class scores. ``alternative`` is the map that convolution reads
    (the previous spatial layer), ``None`` when it reads none.
    """
    flat = graph_lib.flatten(model)
    s = structure(model)
    records = flat.records
    shape = tuple(flat.outputs[0].shape)
    if len(shape) != 2 or shape[-1] is None:
        return None
    i = records.index(flat.record(layer))
    pools = [c for c in s.children[i] if s.after_head_pooling[c] and s.pooled[c]]
    weighted = any(
        getattr(records[j].operation, "weights", None)
        for j in range(len(records))
        if s.after_head_pooling[j]
    )
    if not pools or weighted:
        return None
    while records[i].class_name in _CHANNELWISE and len(records[i].parents) == 1:
        i = records[i].parents[0]
    conv = records[i]
    if conv.class_name not in ("Conv2D", "SeparableConv2D") or not conv.is_spatial:
        return None
    channels = conv.output_shape[1 if conv.data_format == "channels_first" else 3]
    if channels != shape[-1]:
        return None
    maps = [j for j in conv.parents if s.is_map[j]]
    return conv.name, (records[max(maps)].name if maps else None)


def check_chosen_layer(model: Any, layer: Any, source: str) -> str:
    """``layer``, a Grad-CAM layer chosen for a whole project or test (``source`` says
    where: the ini key, the flag or the marker), when ``model`` has it as a Grad-CAM
    layer.

    Raises:
        GraphError: not a layer name, no layer of that name, or a layer Grad-CAM cannot
            use; the message names the setting and the layers that would fit.
    """
    valid = gradcam_layers(model) + graph_tokens.token_layers(model)  # maps, or token grids
    if isinstance(layer, str) and layer in valid:
        return layer
    names = graph_lib.flatten(model).names
    if not isinstance(layer, str) or not layer.strip():
        why = f"a layer name is expected (received type {type(layer).__name__})"
    elif layer not in names:
        why = "the model has no layer of that name"
    else:
        why = "that layer is no spatial map before the head that the output depends on"
    auto = head_pooling_input(model)
    return_hint = f" (the automatic layer is {auto!r})" if auto else ""
    raise GraphError(
        f"The Grad-CAM layer set by {source} does not fit model "
        f"{getattr(model, 'name', '?')!r}: {why}. Received: {layer!r}. Expected one of the "
        f"layers that would fit{return_hint}: {short_list(valid)}. Change the setting, "
        "or pass layer= to this call."
    )


def warn_class_score_layer(note: str) -> None:
    """Warn that the *automatic* Grad-CAM layer is a class-score map (``note``: the
    :func:`gradcam_note` of it), with how to choose another.

    Why a warning and not only the note: in a test nobody reads ``cam.note``, and a
    class-score map's peak is where the class's own channel peaks, which can miss the
    object entirely; pytest lists the warning in its summary. A layer passed on purpose
    (``layer=``, or the project's ``convviz_gradcam_layer``) warns nowhere.
    """
    # Point at the caller's line (a test, a script), not at a frame of this package.
    frame: Any = sys._getframe(1)
    stacklevel = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(
        f"{note} In pytest, choose the layer for every Grad-CAM of the fixture with the ini "
        "key convviz_gradcam_layer (or --convviz-gradcam-layer, or the marker "
        "convviz(gradcam_layer=...)).",
        ClassScoreLayerWarning,
        stacklevel=stacklevel,
    )


def short_list(names: list[str], limit: int = 40) -> str:
    """``names`` for an error message: all of them up to ``limit``, else the first and
    last ones with the count."""
    if len(names) <= limit:
        return repr(names)
    head, tail = names[: limit // 4], names[-(limit - limit // 4) :]
    return f"{head!r} ... {tail!r} ({len(names)} layers)"


def no_map_error(model: Any, purpose: str) -> GraphError:
    """The refusal for a model without any spatial map (transformers on tokens, MLPs)."""
    flat = graph_lib.flatten(model)
    shapes = [(r.name, r.output_shape) for r in flat.records]
    tokens = any(len(r.output_shape) == 3 for r in flat.records)
    why = (
        "its layers work on token sequences (batch, tokens, features), as a vision "
        "transformer does (ViT, DeiT)"
        if tokens
        else "none of its layers outputs a (batch, H, W, channels) tensor"
    )
    return GraphError(
        f"Model {getattr(model, 'name', '?')!r} has no layer with a 4-D spatial output, so "
        f"{purpose} has no feature map to work on: {why}. Received: layers "
        f"{shapes[:12]}{' ...' if len(shapes) > 12 else ''}. Expected a convolutional model "
        "(Conv2D/pooling stages before global pooling or Flatten), or a hierarchical "
        "transformer whose stages output (batch, H, W, channels) maps; for a vision "
        "transformer on tokens use cc.cam / cc.gradcam (a token layer read as its grid) "
        "or cc.cam(method='rollout')."
    )


__all__ = [
    "Structure",
    "check_chosen_layer",
    "class_score_conv",
    "default_activation_layers",
    "gradcam_layers",
    "head_pooling_input",
    "map_layers",
    "no_map_error",
    "short_list",
    "structure",
    "warn_class_score_layer",
]


# --------------------------------------------------------------------------- the CAM layer
def target_layer(model: Any, layer: str | None = None) -> str:
    """The Grad-CAM (and every CAM method's) target layer: ``layer`` after checking it,
    or the spatial map that feeds the head's global pooling (or Flatten).

    The rule follows tensors (:mod:`convviz_check.graph.targets`): a global pooling
    whose result multiplies back into a map (squeeze-and-excitation blocks, as in
    EfficientNet and MobileNetV3) does not end the spatial part of the network. For a
    keras-hub ``ImageClassifier`` the layer is the backbone's output
    (``block14_sepconv2_act`` for Xception-41); for EfficientNetB0 ``top_activation``.

    Raises:
        GraphError: an unknown layer, a non-4-D output (other than a token layer of a
            vision transformer, read as its grid: :mod:`convviz_check.graph.tokens`,
            whose rule also picks a transformer's automatic layer), a layer after the
            head's pooling, a 4-D tensor computed from global pooling alone (inside a
            squeeze-and-excitation branch), the output layer itself, a layer the output
            does not depend on, or a model with no spatial map (a vision transformer on
            tokens, an MLP).
    """
    flat = graph_lib.flatten(model)
    s = structure(model)
    valid = gradcam_layers(model)
    if layer is None:
        if not any(s.is_map):
            auto = graph_tokens.auto_token_layer(model)  # a transformer on tokens
            if auto is not None:
                return auto
            raise no_map_error(model, "Grad-CAM")
        name = head_pooling_input(model)
        if name is None:  # no pooling before the head: the deepest map that feeds it
            name = valid[-1] if valid else None
        # The tensor nearest the head wins: a head that reads tokens after the last map
        # (a hybrid: a convolutional stem before a transformer) is explained on its
        # tokens, not on the stem's map; tokens before a map (MiT's stages) are not.
        tokens = graph_tokens.auto_token_layer(model)
        if tokens is not None and (name is None or _order(flat, tokens) > _order(flat, name)):
            return tokens
        if name is None:
            raise GraphError(
                f"Model {getattr(model, 'name', '?')!r} has no spatial map that its output "
                "depends on, so Grad-CAM has no map to weight. Received: spatial layers "
                f"{short_list(graph_lib.spatial_layers(model))}. Expected a "
                "convolutional classifier (a map feeding global pooling or Flatten)."
            )
        return name
    if not isinstance(layer, str):
        raise GraphError(
            f"The Grad-CAM layer must be a layer name. Received: layer={layer!r} "
            f"(type {type(layer).__name__}). Expected one of {short_list(valid)}."
        )
    r = flat.record(layer)
    if graph_tokens.is_token_record(r):
        return graph_tokens.check_token_layer(model, r.name)
    _check_target(model, r, flat.records.index(r), s, valid)
    return r.name


def _order(flat: Any, name: str) -> int:
    """The position of layer ``name`` in the flattened graph's call order."""
    return flat.records.index(flat.record(name))


def _check_target(model: Any, r: Any, i: int, s: Any, valid: list[str]) -> None:
    """Raise the GraphError that says why record ``r`` (index ``i``) is not a valid
    Grad-CAM layer; return when it is."""
    layer, expected = r.name, short_list(valid)
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
    name = target_layer(model, layer)
    found = class_score_conv(model, name)
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
