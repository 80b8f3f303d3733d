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
| ``keras.src.backend.jax.nn.depthwise_conv`` | ``backends.jax`` | depthwise convolution by taps (scoped patch) |

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

# (module, attribute) of every entry, for the check on the installed Keras.
SYMBOLS: tuple[tuple[str, str], ...] = (
    FUNCTIONAL,
    (VARIABLES_MODULE, "Variable"),
    (VARIABLES_MODULE, "standardize_dtype"),
    STATELESS_SCOPE,
    (TORCH_NN_MODULE, TORCH_TRANSPOSE),
    (JAX_NN_MODULE, JAX_DEPTHWISE),
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


def in_stateless_scope() -> bool:
    """Whether the caller runs inside a Keras stateless scope."""
    return bool(_get(*STATELESS_SCOPE)())
