"""Intermediate activations: every conv/pool layer's feature maps at once.

One multi-output model ``input -> [output of each layer of interest]`` is built by the
graph layer (:func:`convviz_check.graph.submodel`, cached per model and layer set), so
one compiled forward pass per batch returns every activation, nested models included.

Images are passed to the model as given: ``(N, H, W, C)`` or ``(H, W, C)``, channels-last,
uint8 or float, already in the value range the model was trained on. Nothing is
rescaled or normalized here; a model that expects ``[0, 1]`` must be given ``[0, 1]``
(e.g. ``images / 255``), one with a ``Rescaling`` layer takes raw pixels.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import backends
from .. import graph as graph_lib
from ..errors import ConvvizWarning, GraphError, InputError, describe_array
from ..graph.targets import short_list
from ..render import activation_grid
from ..storage import write_png
from .inputs import as_image_batch, to_channels_last, to_model_layout


def _resolve_layers(model: Any, layers: str | Sequence[str] | None) -> list[str]:
    """Validated layer names, in the order given (duplicates dropped)."""
    if layers is None:
        names = graph_lib.default_activation_layers(model)
        if not names:
            raise GraphError(
                f"Model {model.name!r} has no 2-D convolution or pooling layer whose output "
                "is a spatial map, so there are no default activation layers. Expected a "
                "convnet, or pass layers=[...] from its 4-D layers: "
                f"{short_list(graph_lib.spatial_layers(model))}"
            )
        return names
    if isinstance(layers, str):
        layers = [layers]
    names = list(dict.fromkeys(layers))
    if not names:
        raise InputError(
            "layers is empty. Received: layers=[]. Expected None (every conv/pool layer) "
            "or a list of layer names."
        )
    flat = graph_lib.flatten(model)
    spatial = graph_lib.spatial_layers(model)
    for name in names:
        if not isinstance(name, str):
            raise InputError(
                f"Layer names must be strings. Received: {name!r} of type {type(name).__name__} "
                f"in layers={list(layers)!r}."
            )
        if name not in flat.by_name:
            raise GraphError(
                f"Unknown layer for activations. Received: layer={name!r}. Expected one of "
                f"the model's layers with a 4-D output: {short_list(spatial)}"
            )
        record = flat.by_name[name]
        if not record.is_spatial:
            raise GraphError(
                f"Layer {name!r} has no 4-D (batch, H, W, C) output, so it has no feature "
                f"maps. Received: output shape {record.output_shape} "
                f"({record.class_name}). Expected one of: {short_list(spatial)}"
            )
    return names


def activations(
    model: Any,
    images: Any,
    layers: str | Sequence[str] | None = None,
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """Feature maps of several layers for a batch of images, in one forward pass per batch.

    Args:
        model: a functional or Sequential Keras model (nested models are flattened:
            inner layers are addressed by their qualified names, see ``cc.conv_layers``).
        images: ``(N, H, W, C)`` or one image ``(H, W, C)``, channels-last even for a
            ``channels_first`` model, uint8 or float, in the value range the model
            expects (passed as given: nothing is rescaled).
        layers: layer names (or one name; any layer with a 4-D output); ``None`` means
            every 2-D convolution and 2-D pooling layer whose output is a spatial map
            before the head's pooling, in depth order: the 1x1 convolutions inside
            squeeze-and-excitation branches and after a ``keepdims`` global pooling are
            left out (``graph.default_activation_layers``).
        batch_size: images per forward pass.

    Returns:
        ``{layer name: (N, h, w, c) float32}``, channels-last whatever the model's
        ``data_format``, in the order of ``layers`` (depth order by default).

    Raises:
        GraphError: an unknown layer (the message lists the valid ones), a layer without
            a 4-D output, or a model without default layers.
        InputError: images of the wrong rank, channel count or fixed size, an empty
            batch, non-finite pixels, or a bad ``batch_size``.

    Example:
        >>> acts = cc.activations(model, images / 255.0)
        >>> {name: a.shape for name, a in acts.items()}
        {'conv2d': (4, 62, 62, 32), 'max_pooling2d': (4, 31, 31, 32), ...}
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise InputError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    batch = as_image_batch(images, model)
    names = _resolve_layers(model, layers)
    flat = graph_lib.flatten(model)
    formats = [flat.by_name[n].data_format for n in names]
    forward = backends.make_forward(graph_lib.submodel(model, names))
    model_input = to_model_layout(batch, model)

    parts: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, len(model_input), int(batch_size)):
        # backends.make_forward: compiled once per extractor (and input shape), and
        # without predict_on_batch's output copies (see backends.make_forward).
        outputs = forward([model_input[start : start + int(batch_size)]])
        for k, (out, fmt) in enumerate(zip(outputs, formats, strict=True)):
            parts[k].append(to_channels_last(np.asarray(out), fmt))
    result = {}
    for name, chunks in zip(names, parts, strict=True):
        joined = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)
        # astype copies only when needed (mixed-precision models return float16).
        result[name] = joined.astype(np.float32, copy=False)
    _warn_non_finite(result)
    return result


def _warn_non_finite(result: dict[str, np.ndarray]) -> None:
    """Warn (:class:`ConvvizWarning`) when a layer's activations hold NaN or inf: the
    images were finite, so the model made them (a log or a division of a value it
    cannot take), and a picture of them is blank. Returned as they are, to debug."""
    # A sum is NaN or inf when any value is (one fast pass, no boolean copy); only then
    # count them (a finite sum that overflowed counts none, and warns of nothing).
    suspects = [n for n, a in result.items() if not np.isfinite(a.sum())]
    bad = {n: float(np.mean(~np.isfinite(result[n]))) for n in suspects}
    bad = {n: f for n, f in bad.items() if f > 0}
    if not bad:
        return
    listed = ", ".join(f"{n!r} ({f:.0%} of its values)" for n, f in list(bad.items())[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    warnings.warn(
        ConvvizWarning(
            f"The model produced non-finite activations (NaN or inf) from finite images "
            f"in layer(s) {listed}{more}. Expected finite activations: "
            "look for an operation such as a log or a division in the layers before "
            "the first one named."
        ),
        stacklevel=3,
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def layer_file_stem(name: str) -> str:
    """A file-name-safe form of a (qualified) layer name: ``/`` and ``:`` and any other
    character outside ``[A-Za-z0-9._-]`` become ``_``, leading dots are dropped (no
    hidden files, no ``..``), and the result is never empty."""
    stem = _UNSAFE.sub("_", name).lstrip(".")
    return stem or "layer"


def save_activation_grids(
    acts: dict[str, np.ndarray],
    out_dir: str | Path,
    image_index: int = 0,
    images_per_row: int = 16,
) -> list[Path]:
    """Write one channel-grid PNG per layer (``cc.activation_grid`` of one image).

    Files are named ``<index>_<layer>.png`` with the depth index first (so a directory
    listing keeps layer order) and the layer name sanitized by :func:`layer_file_stem`;
    distinct names that sanitize alike still get distinct files through the index.

    Args:
        acts: the dict returned by :func:`activations`.
        out_dir: directory to write into (created if missing).
        image_index: which image of the batch to draw.
        images_per_row: tiles per grid row.

    Returns:
        The written paths, in the order of ``acts``.

    Example:
        >>> paths = save_activation_grids(cc.activations(model, image), "out/acts")
        >>> paths[0].name
        '00_conv2d.png'
    """
    out = Path(out_dir)
    width = max(2, len(str(max(len(acts) - 1, 0))))
    paths = []
    for i, (name, act) in enumerate(acts.items()):
        a = np.asarray(act)
        if a.ndim != 4:
            raise InputError(
                f"Expected activations (N, H, W, C) per layer. Received: layer {name!r} with "
                f"{describe_array('activation', a)}."
            )
        if not -a.shape[0] <= image_index < a.shape[0]:
            raise InputError(
                f"image_index out of range. Received: image_index={image_index} for layer "
                f"{name!r} holding {a.shape[0]} image(s). Expected 0 <= image_index < {a.shape[0]}."
            )
        grid = activation_grid(a[image_index], images_per_row=images_per_row)
        paths.append(write_png(out / f"{i:0{width}d}_{layer_file_stem(name)}.png", grid))
    return paths
