"""Every private Keras symbol listed in convviz_check.keras_private exists in the
installed Keras (a Keras upgrade that moves one fails here, by name)."""

from __future__ import annotations

import importlib
import importlib.util

import keras
import pytest

from convviz_check import keras_private

# The backend modules of Keras import their framework: checked where it is installed.
_NEEDS = {keras_private.TORCH_NN_MODULE: "torch", keras_private.JAX_NN_MODULE: "jax"}


@pytest.mark.parametrize("module, attribute", keras_private.SYMBOLS)
def test_every_listed_private_symbol_resolves(module, attribute):
    framework = _NEEDS.get(module)
    if framework is not None and importlib.util.find_spec(framework) is None:
        pytest.skip(f"{module} needs {framework}, which this env does not install")
    assert callable(getattr(importlib.import_module(module), attribute))


def test_the_accessors_return_what_the_graph_and_the_fast_load_need():
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(2)(x))
    assert isinstance(model, keras_private.functional_class())
    assert keras_private.standardize_dtype("float32") == "float32"
    assert keras_private.in_stateless_scope() is False
    assert hasattr(keras_private.variables_module().Variable, "assign")
