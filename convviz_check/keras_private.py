"""Every private Keras symbol convviz_check uses, in one audited place.

Keras 3 exports no public name for these. Each entry says what it is for, and each was
verified on the Keras version in ``VERIFIED_ON``; a Keras upgrade re-checks this list
(``tests/test_architecture.py`` fails on a ``keras.src`` name anywhere else in the
package, and ``tests/test_keras_private.py`` resolves every entry on the installed
Keras). Where a symbol has moved, each user falls back to the public behaviour (or says
so), never to a wrong result.

| symbol | used by | why |
|---|---|---|
| ``keras.src.models.functional.Functional`` | ``graph.is_plain_functional`` | tell a graph model from a subclassed one |
| ``keras.src.backend.common.variables`` (``Variable``, ``standardize_dtype``) | ``_fastload`` | create variables as zeros while a saved model loads |
| ``keras.src.backend.common.stateless_scope.in_stateless_scope`` | ``_fastload`` | leave variables of a stateless scope alone |
| ``keras.src.backend.torch.nn._transpose_spatial_inputs`` | ``backends.torch`` | a channels-last view instead of a copy (scoped patch) |
| ``keras.src.backend.common.masking.get_keras_mask``; ``Layer`` attributes ``_call_context_args``, ``_remat_mode`` | ``backends._torch_calls`` | call a layer's ``call`` without ``Layer.__call__`` only where that changes nothing (no mask, no extra context argument, no rematerialization) |
| ``keras.src.backend.jax.nn.depthwise_conv`` | ``backends.jax`` | depthwise convolution by taps (scoped patch) |
| ``Layer._flatten_layers`` (method) | ``graph.tokens``, ``explain.rollout`` | every sublayer of a layer (patch embeddings and attention layers inside custom layers) |
| ``MultiHeadAttention.call`` (per-instance override) | ``explain.rollout`` | the attention weights of layers that do not ask for them (scoped patch) |
| keras-hub ``ViTEncoder`` / ``DeiTEncoder`` attributes ``encoder_layers``, ``dropout``, ``layer_norm`` | ``graph`` (via :func:`encoder_parts`) | address each transformer block of an encoder that is one layer |

Imports are done on use, never at import time: importing this module imports no Keras.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# The Keras release every entry below was checked against.
VERIFIED_ON = "3.15.1"

FUNCTIONAL = ("keras.src.models.functional", "Functional")
VARIABLES_MODULE = "keras.src.backend.common.variables"
STATELESS_SCOPE = ("keras.src.backend.common.stateless_scope", "in_stateless_scope")
TORCH_NN_MODULE = "keras.src.backend.torch.nn"
TORCH_TRANSPOSE = "_transpose_spatial_inputs"
JAX_NN_MODULE = "keras.src.backend.jax.nn"
JAX_DEPTHWISE = "depthwise_conv"
KERAS_MASK = ("keras.src.backend.common.masking", "get_keras_mask")

# (module, attribute) of every entry, for the check on the installed Keras.
SYMBOLS: tuple[tuple[str, str], ...] = (
    FUNCTIONAL,
    (VARIABLES_MODULE, "Variable"),
    (VARIABLES_MODULE, "standardize_dtype"),
    STATELESS_SCOPE,
    (TORCH_NN_MODULE, TORCH_TRANSPOSE),
    (JAX_NN_MODULE, JAX_DEPTHWISE),
    KERAS_MASK,
)


def _get(module: str, attribute: str) -> Any:
    return getattr(importlib.import_module(module), attribute)


def functional_class() -> type:
    """Keras' class of functional models (what ``keras.Model(inputs, outputs)`` is)."""
    cls: type = _get(*FUNCTIONAL)
    return cls


def variables_module() -> ModuleType:
    """The module that defines ``Variable`` (its ``__init__`` and ``assign``)."""
    return importlib.import_module(VARIABLES_MODULE)


def standardize_dtype(dtype: Any) -> str:
    """Keras' name of ``dtype`` (``"float32"``...)."""
    name: str = _get(VARIABLES_MODULE, "standardize_dtype")(dtype)
    return name


def keras_mask_getter() -> Any:
    """Keras' ``get_keras_mask(tensor)``: the mask a layer attached to a tensor, or None."""
    return _get(*KERAS_MASK)


def in_stateless_scope() -> bool:
    """Whether the caller runs inside a Keras stateless scope."""
    return bool(_get(*STATELESS_SCOPE)())


# keras-hub encoders that run all transformer blocks inside one layer: class name ->
# the attributes their ``call`` applies in order (verified on keras-hub 0.32: ViTEncoder
# is dropout, blocks, layer_norm; DeiTEncoder is blocks, layer_norm, with each block
# returning ``(tokens, scores)``).
ENCODERS: dict[str, tuple[str, ...]] = {
    "ViTEncoder": ("dropout", "encoder_layers", "layer_norm"),
    "DeiTEncoder": ("encoder_layers", "layer_norm"),
}


def sublayers(layer: Any) -> list[Any]:
    """Every layer inside ``layer`` (itself excluded), depth-first in creation order."""
    return list(layer._flatten_layers(include_self=False, recursive=True))


def encoder_parts(op: Any) -> list[Any] | None:
    """The layers a keras-hub transformer encoder (one layer holding every block) calls
    in order, each taking and returning the token sequence, or ``None`` for any other
    operation or when an attribute is missing (a changed keras-hub: the encoder then
    stays one opaque layer). A block that also returns its scores (DeiT's returns
    ``(tokens, None)``, whose output spec torch's Keras cannot infer) is called through
    an :func:`_encoder_block` of the same name; cached on the encoder."""
    names = ENCODERS.get(type(op).__name__)
    if names is None or not type(op).__module__.startswith("keras_hub"):
        return None
    cached = op.__dict__.get("_convviz_parts")
    if cached is not None:
        return list(cached)
    parts: list[Any] = []
    for name in names:
        value = getattr(op, name, None)
        if value is None:
            return None
        parts.extend(value if isinstance(value, list | tuple) else [value])
    if type(op).__name__ == "DeiTEncoder":
        parts = [_encoder_block()(p) if p in op.encoder_layers else p for p in parts]
    object.__setattr__(op, "_convviz_parts", tuple(parts))
    return parts


_BLOCK_CLASS: Any = None


def _encoder_block() -> type:
    """A layer calling a transformer block and keeping its token output only; its output
    shape is its input's (a block keeps the sequence's shape)."""
    global _BLOCK_CLASS
    if _BLOCK_CLASS is None:
        keras = importlib.import_module("keras")  # on use, as every entry here

        class EncoderBlock(keras.layers.Layer):  # type: ignore[name-defined]
            def __init__(self, block: Any) -> None:
                super().__init__(name=block.name, dtype=block.dtype_policy)
                self.block = block
                self.built = True

            def call(self, x: Any) -> Any:
                return keras.tree.flatten(self.block(x))[0]

            def compute_output_shape(self, input_shape: Any) -> Any:
                return input_shape

        _BLOCK_CLASS = EncoderBlock
    return _BLOCK_CLASS


class capture_attention:  # noqa: N801  (used as a context manager, like a function)
    """Within the block, every ``keras.layers.MultiHeadAttention`` in ``layers`` returns
    its output as usual and appends its attention weights ``(batch, heads, T, S)`` to
    ``self.scores`` (in call order). Keras' ``Layer.__call__`` calls ``self.call``, so an
    instance attribute overrides it for this block only; removed on exit."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers
        self.scores: list[Any] = []
        self.called: list[Any] = []  # the layer of each entry of ``scores``

    def _wrap(self, layer: Any) -> Any:
        original = type(layer).call

        def call(query: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
            asked = kwargs.get("return_attention_scores", False)
            kwargs["return_attention_scores"] = True
            out, scores = original(layer, query, value, *args, **kwargs)
            self.scores.append(scores)
            self.called.append(layer)
            return (out, scores) if asked else out

        return call

    def __enter__(self) -> capture_attention:
        for layer in self.layers:
            object.__setattr__(layer, "call", self._wrap(layer))
        return self

    def __exit__(self, *exc: Any) -> None:
        for layer in self.layers:
            if "call" in layer.__dict__:
                object.__delattr__(layer, "call")
