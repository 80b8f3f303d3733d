"""The CAM's target layer: which one (the rule lives in :mod:`convviz_check.graph.targets`),
how its output maps onto the image (a token layer's grid), and its output shape."""

from __future__ import annotations

from typing import Any

from .. import graph as graph_lib
from ..graph.targets import target_layer
from ..graph.tokens import TokenGrid, grid_for


def resolve_layer(
    model: Any, layer: str | None, image_hw: tuple[int, int], token_grid: Any = None
) -> tuple[str, TokenGrid | None]:
    """``(layer name, token grid or None)``: ``layer`` checked, or the automatic choice
    (:func:`~convviz_check.graph.targets.target_layer`), and its grid for inputs of
    ``image_hw`` where it is a token layer (:func:`~convviz_check.graph.tokens.grid_for`).

    The checked name is cached with the model (a graph model's layers do not change; a
    bad ``layer`` raises every time): the check reads the whole graph, ~0.1 ms a call,
    1% of a warm 1-image Grad-CAM of a small model on torch."""
    per_model = graph_lib.model_cache(model, "cam_layers")
    name = per_model.get(layer)
    if name is None:
        name = per_model[layer] = target_layer(model, layer)
    return name, grid_for(model, name, image_hw, token_grid)


def layer_output_shape(model: Any, layer: str, declared: tuple, model_input_shape: tuple) -> tuple:
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


__all__ = ["layer_output_shape", "resolve_layer"]
