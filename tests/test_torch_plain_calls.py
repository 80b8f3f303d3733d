"""Plain layer calls on torch (``backends._torch_calls``): ``layer.call`` without
``Layer.__call__`` where that changes nothing, ``Layer.__call__`` everywhere else.

Each test compares a result with the plain calls on against the same computation
through ``Layer.__call__`` (the plain calls switched off), bit for bit."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import convviz_check as cc
from convviz_check import backends

pytestmark = pytest.mark.skipif(
    keras.config.backend() != "torch", reason="eager torch pays Layer.__call__ per call"
)

METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "eigencam")


def _many_kinds(name: str = "kinds") -> keras.Model:
    """Every kind of layer a convnet's CAM replays: convolutions (plain, separable,
    depthwise), batch norm, activations, padding, poolings, merges, dropout, a softmax
    Dense head."""
    layers = keras.layers
    x_in = keras.Input((12, 12, 3))
    x = layers.ZeroPadding2D(1)(x_in)
    x = layers.Conv2D(6, 3, name="c1")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    a = layers.SeparableConv2D(6, 3, padding="same")(x)
    b = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.Add()([a, b])
    x = layers.Activation("tanh")(x)
    x = layers.Concatenate(name="target")([x, layers.MaxPooling2D(1)(x)])
    x = layers.AveragePooling2D(2)(x)
    x = layers.Dropout(0.5)(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(3, activation="softmax")(x)
    model = keras.Model(x_in, out, name=name)
    _seeded(model, seed=5)
    return model


def _seeded(model: keras.Model, seed: int) -> None:
    """NumPy-seeded weights; batch-norm variances positive (as trained ones are)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = rng.normal(0, 0.3, tuple(v.shape))
        if v.path.endswith("moving_variance"):
            value = 1 + np.abs(value)
        v.assign(value.astype("float32"))


def _images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(4).uniform(0, 1, (n, 12, 12, 3)).astype("float32")


def _plain_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from convviz_check.backends import _torch_calls

    monkeypatch.setattr(_torch_calls, "_plan", lambda op: None)


def _count_plain(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the name of each layer called plainly."""
    from convviz_check.backends import _torch_calls

    plain: list[str] = []
    original = _torch_calls._ready

    def ready(op, args, kwargs):
        ok = original(op, args, kwargs)
        if ok:
            plain.append(op.name)
        return ok

    monkeypatch.setattr(_torch_calls, "_ready", ready)
    return plain


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_bit_identical_maps_with_plain_layer_calls(method, monkeypatch):
    model, x = _many_kinds(), _images()
    options = {"max_channels": 4} if method == "scorecam" else {}
    plain = _count_plain(monkeypatch)
    fast = cc.cam(model, x, method=method, layer="target", **options)
    # Every layer up to the head ran plainly (the head's own call included).
    assert {layer.name for layer in model.layers[1:]} <= set(plain)
    _plain_off(monkeypatch)
    plain.clear()
    slow = cc.cam(model, x, method=method, layer="target", **options)
    assert plain == []
    for field in ("heatmap", "raw", "score", "class_index", "degenerate", "probability"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))


def test_the_gradient_and_the_outputs_are_bit_identical_and_the_weights_stay_trainable(
    monkeypatch,
):
    model, x = _many_kinds(), _images(2)
    rewired = cc.graph.rewire(model, "target", bypass_head_activation=True)
    zero = np.zeros((2, *rewired.zero_shape), "float32")

    def loss(outputs, aux):
        return keras.ops.sum(outputs[-1][:, 1])

    fast = backends.make_value_and_grad(rewired.model, loss, wrt=1)([x, zero])
    forward = backends.make_forward(rewired.model)([x, zero])
    _plain_off(monkeypatch)
    slow = backends.make_value_and_grad(rewired.model, loss, wrt=1)([x, zero])
    slow_forward = backends.make_forward(rewired.model)([x, zero])
    assert fast[0] == slow[0]
    for a, b in zip([*fast[1], fast[2], *forward], [*slow[1], slow[2], *slow_forward], strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(v.value.requires_grad for v in model.trainable_variables)


def test_a_torch_hook_on_a_layer_still_sees_every_call(monkeypatch):
    model, x = _many_kinds(), _images(2)
    seen: list[tuple] = []
    handle = model.get_layer("c1").register_forward_hook(
        lambda module, inputs, output: seen.append(tuple(output.shape))
    )
    plain = _count_plain(monkeypatch)
    try:
        cc.cam(model, x, layer="target")
    finally:
        handle.remove()
    assert seen == [(2, 12, 12, 6)]
    assert "c1" not in plain and "target" in plain


class _Training(keras.layers.Layer):
    """Records the ``training`` value its ``call`` receives."""

    seen: list = []

    def call(self, inputs, training=None):
        _Training.seen.append(training)
        return inputs


class _MaskMaker(keras.layers.Layer):
    """A layer that makes a mask from none: never called plainly."""

    def call(self, inputs):
        return inputs

    def compute_mask(self, inputs, previous_mask=None):
        return keras.ops.not_equal(inputs[..., 0], 1e9)


@pytest.mark.filterwarnings("ignore:Layer .* was passed an input with a mask:UserWarning")
def test_training_is_what_layer_call_would_pass_and_mask_makers_are_left_alone(monkeypatch):
    x_in = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="target")(x_in)
    x = _Training(name="inferred")(x)
    x = _Training(name="explicit")(x, training=True)  # as an MC-dropout graph passes it
    x = _MaskMaker(name="masks")(x)
    x = keras.layers.Activation("relu", name="masked")(x)  # gets the mask: never plain
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(x_in, out)
    _seeded(model, seed=2)
    images = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype("float32")

    cc.cam(model, images, layer="target")  # builds the graph (symbolic calls)
    plain = _count_plain(monkeypatch)
    _Training.seen.clear()
    fast = cc.cam(model, images, layer="target")
    fast_seen = list(_Training.seen)
    assert {"inferred", "explicit"} <= set(plain)
    assert "masks" not in plain and "masked" not in plain
    _plain_off(monkeypatch)
    _Training.seen.clear()
    slow = cc.cam(model, images, layer="target")
    assert fast_seen == _Training.seen == [False, True]
    np.testing.assert_array_equal(fast.raw, slow.raw)


def test_the_layers_of_a_mixed_precision_model_go_through_layer_call(monkeypatch):
    from convviz_check.backends._torch_calls import PlainCalls

    assert PlainCalls(_many_kinds()).wanted
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = _many_kinds("mixed")
    finally:
        keras.config.set_dtype_policy(policy)
    assert not PlainCalls(mixed).wanted  # its __call__ would enter an autocast scope
    x = _images(2)
    plain = _count_plain(monkeypatch)
    fast = cc.cam(mixed, x, layer="target")
    assert plain == []  # float16 compute, float32 variables: Layer.__call__ casts
    _plain_off(monkeypatch)
    np.testing.assert_array_equal(fast.raw, cc.cam(mixed, x, layer="target").raw)


def test_the_replay_caller_is_restored_after_errors_and_nesting():
    from convviz_check import graph
    from convviz_check.backends._torch_calls import PlainCalls

    original = graph._caller
    model = _many_kinds()
    with PlainCalls(model):
        with PlainCalls(model):
            assert graph._caller is not original
        assert graph._caller is not original
    assert graph._caller is original
    with pytest.raises(ZeroDivisionError), PlainCalls(model):
        1 / 0  # noqa: B018
    assert graph._caller is original
