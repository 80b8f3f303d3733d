"""Which output of a model a CAM explains: the output names, the choice of one
(``output=``, a name or an index) and a one-output view of a multi-output model
(sharing its layers, cached with the model).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import graph as graph_lib
from ..errors import InputError


def output_names(model: Any) -> list[list[str]]:
    """The names that pick each output of ``model``: the layer that produces it and,
    for a dict of outputs, its key."""
    fn = graph_lib.functional_of(model)
    outs = list(fn.outputs)
    names: list[list[str]] = [[] for _ in outs]
    for i, name in enumerate(getattr(fn, "output_names", None) or []):
        if i < len(outs):
            names[i].append(str(name))
    struct = getattr(fn, "_outputs_struct", None)
    if isinstance(struct, dict):
        for key, tensor in struct.items():
            for i, out in enumerate(outs):
                if out is tensor and str(key) not in names[i]:
                    names[i].append(str(key))
    return names


def select_output(model: Any, output: Any) -> tuple[Any, str | None]:
    """``(model whose first output is the chosen one, its label or None)``.

    A single-output model is used as it is. Another output than the first is explained
    through a functional view ``inputs -> that output`` sharing the model's layers
    (cached with the model).
    """
    names = output_names(model)
    count = len(names)
    label = (lambda i: names[i][0] if names[i] else str(i)) if count > 1 else (lambda i: None)
    if output is None:
        return model, label(0)
    listing = [n[0] if n else str(i) for i, n in enumerate(names)]
    if isinstance(output, int | np.integer) and not isinstance(output, bool):
        index = int(output)
        if not -count <= index < count:
            raise InputError(
                f"Unknown output. Received: output={output!r}. Expected an index in "
                f"[0, {count}) or one of the output names {listing}."
            )
        index %= count
    elif isinstance(output, str):
        found = [i for i, n in enumerate(names) if output in n]
        if not found:
            raise InputError(
                f"Unknown output. Received: output={output!r}. Expected one of the output "
                f"names {listing} (or an index in [0, {count}))."
            )
        index = found[0]
    else:
        raise InputError(
            f"output must be an output name or index. Received: output={output!r} (type "
            f"{type(output).__name__}). Expected one of {listing} or an index in "
            f"[0, {count})."
        )
    if index == 0:
        return model, label(0)
    views = graph_lib.model_cache(model, "cam_outputs")
    if index not in views:
        import keras

        fn = graph_lib.functional_of(model)
        views[index] = keras.Model(
            fn.inputs, fn.outputs[index], name=f"{model.name}_output_{index}"
        )
    return views[index], label(index)


def single_output_model(model: Any, output: str | int | None = None) -> Any:
    """``model`` itself when it has one plain output, else a functional view whose one
    output is ``output`` (a name or index; ``None``: the first), sharing its layers
    (cached with the model). For code that reads one ``(N, classes)`` array per call
    from a model whose outputs may be a list or a dict.

    Raises:
        InputError: an unknown output name or index.
    """
    view, _ = select_output(model, output)
    if view is not model:
        return view
    fn = graph_lib.functional_of(model)
    if len(fn.outputs) == 1 and not isinstance(fn.output, list | tuple | dict):
        return model
    views = graph_lib.model_cache(model, "cam_outputs")
    if "first" not in views:  # a list or dict of outputs: the first tensor alone
        import keras

        views["first"] = keras.Model(fn.inputs, fn.outputs[0], name=f"{model.name}_output_0")
    return views["first"]
