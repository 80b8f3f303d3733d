"""The backend gradient layer against central finite differences, in every backend env.

float32-aware: a smooth (tanh) model, step 1e-2 and a relative tolerance of 2e-2 (the
truncation error of a central difference is O(h^2) ~1e-4 of the curvature, float32
rounding of the loss ~1e-7/h ~1e-5; measured worst relative error here ~3e-3)."""

import keras
import numpy as np
import pytest

from convviz_check import backends, graph
from tests import _models

H = 1e-2
RTOL = 2e-2


def _central_differences(f, x, coords):
    out = []
    for c in coords:
        xp, xm = x.copy(), x.copy()
        xp[c] += H
        xm[c] -= H
        out.append((f(xp) - f(xm)) / (2 * H))
    return np.array(out)


def _coords(shape, n, seed):
    rng = np.random.default_rng(seed)
    return [tuple(int(rng.integers(0, s)) for s in shape) for _ in range(n)]


def _head_loss(outputs, aux):
    # y_c summed over the batch, class per sample from aux (a tensor: no retrace).
    onehot = keras.ops.one_hot(keras.ops.cast(aux, "int32"), outputs[-1].shape[-1])
    return keras.ops.sum(outputs[-1] * onehot)


def test_gradient_wrt_input_matches_finite_differences():
    model = _models.residual(activation="tanh")
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    aux = np.array([0, 2])
    fn = backends.make_value_and_grad(model, _head_loss, wrt=0)
    loss, outputs, grad = fn([x], aux)
    assert grad.shape == x.shape and np.isfinite(grad).all()
    np.testing.assert_allclose(outputs[0], model.predict_on_batch(x), rtol=1e-5, atol=1e-7)

    def f(xv):
        return float(fn([xv.astype("float32")], aux)[0])

    coords = _coords(x.shape, 6, seed=1)
    numeric = _central_differences(f, x.astype("float64"), coords)
    analytic = np.array([grad[c] for c in coords])
    scale = np.abs(analytic).max()
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=RTOL * scale)


def test_gradient_wrt_rewired_layer_matches_finite_differences_with_skip_connections():
    # `mid` feeds `after` AND the head directly; `first` skips over `mid`: the gradient
    # w.r.t. the zero input is the total derivative through every consumer.
    model = _models.residual(activation="tanh")
    rw = graph.rewire(model, "mid", bypass_head_activation=True)
    x = np.random.default_rng(2).normal(size=(1, 12, 12, 3)).astype("float32")
    zero = np.zeros((1, *rw.zero_shape), "float32")
    aux = np.array([1])
    fn = backends.make_value_and_grad(rw.model, _head_loss, wrt=1)
    _, (a, logits), grad = fn([x, zero], aux)
    assert grad.shape == zero.shape

    def f(z):
        return float(fn([x, z.astype("float32")], aux)[0])

    coords = _coords(zero.shape, 6, seed=3)
    numeric = _central_differences(f, zero.astype("float64"), coords)
    analytic = np.array([grad[c] for c in coords])
    scale = np.abs(analytic).max()
    assert scale > 0
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=RTOL * scale)


def test_value_and_grad_is_reused_across_calls_and_aux_values():
    model = _models.sequential()
    fn = backends.make_value_and_grad(model, _head_loss, wrt=0)
    x = np.random.default_rng(4).normal(size=(2, 16, 16, 3)).astype("float32")
    first = fn([x], np.array([0, 0]))[2]
    second = fn([x], np.array([1, 2]))[2]
    again = fn([x], np.array([0, 0]))[2]
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, again)  # deterministic repeat
    concrete = getattr(fn, "concrete", None)
    if concrete is not None:  # TensorFlow: one trace for every aux value
        assert len(concrete._list_all_concrete_functions_for_serialization()) == 1


def test_ascent_increases_the_objective_and_normalizes_each_sample():
    model = _models.sequential()
    sub = graph.submodel(model, ["c2"])

    def loss(outputs, aux):
        a = outputs[0][:, 2:-2, 2:-2, :]
        onehot = keras.ops.one_hot(keras.ops.cast(aux, "int32"), a.shape[-1])
        return keras.ops.sum(keras.ops.mean(a, axis=(1, 2)) * onehot)

    ascent = backends.make_ascent(sub, loss)
    start = np.random.default_rng(5).uniform(0.4, 0.6, (2, 16, 16, 3)).astype("float32")
    aux = np.array([2, 2])  # the live filter of c2 under these seeded weights
    one = ascent(start, aux, 1, 1.0)
    # each sample moved by exactly learning_rate in L2 norm
    norms = np.sqrt(((one - start) ** 2).reshape(2, -1).sum(1))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-4)
    after = ascent(start, aux, 10, 1.0)
    fn = backends.make_value_and_grad(sub, loss, wrt=0)
    assert fn([after], aux)[0] > fn([start], aux)[0]
    zero_steps = ascent(start, aux, 0, 1.0)
    np.testing.assert_array_equal(zero_steps, start)


@pytest.mark.parametrize("bad", ["numpy", "theano"])
def test_unsupported_backend_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setattr(backends, "current_backend", lambda: bad)
    from convviz_check import BackendError

    with pytest.raises(BackendError, match=f"Received: keras.config.backend\\(\\)='{bad}'"):
        backends.make_value_and_grad(None, None)


def test_value_and_grad_leaves_the_weights_trainable_state_unchanged():
    model = _models.sequential()
    before = [v.trainable for v in model.trainable_variables]
    fn = backends.make_value_and_grad(model, _head_loss, wrt=0)
    x = np.random.default_rng(6).normal(size=(1, 16, 16, 3)).astype("float32")
    fn([x], np.array([0]))
    assert [v.trainable for v in model.trainable_variables] == before
    if backends.current_backend() == "torch":  # weights frozen only during the call
        assert all(v.value.requires_grad for v in model.trainable_variables)


def _layout_model():
    """Every layer kind whose torch kernel takes the channels-last view: convolutions
    (same/valid, strided), separable, depthwise, max/average pooling with 'same'
    padding (the replicate pad) and a pooling whose output feeds a convolution."""
    x_in = keras.Input((15, 15, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x_in)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="mp")(x)
    x = keras.layers.SeparableConv2D(12, 3, padding="same", name="sep")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, name="dw")(x)
    x = keras.layers.AveragePooling2D(2, padding="same", name="ap")(x)
    x = keras.layers.Conv2D(6, 1, activation="tanh", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(4, name="head")(x)
    model = keras.Model(x_in, out, name="layouts")
    _models.seeded_weights(model, seed=3)
    return model


@pytest.mark.skipif(keras.config.backend() != "torch", reason="a torch-only memory layout")
def test_torch_channels_last_view_gives_bit_identical_forward_and_gradients(monkeypatch):
    import torch

    from convviz_check.backends import torch as torch_backend

    monkeypatch.setattr(torch_backend, "CPU_SUB_BATCH", 100)  # one pass, as the reference

    model = _layout_model()
    x = np.random.default_rng(7).normal(size=(3, 15, 15, 3)).astype("float32")

    def plain_forward_and_grad():
        xt = torch.as_tensor(x).clone().requires_grad_(True)
        out = model(xt, training=False)
        (g,) = torch.autograd.grad(out.sum(), xt)
        return out.detach().numpy(), g.numpy()

    expected = plain_forward_and_grad()
    with torch_backend.CHANNELS_LAST_VIEW:
        obtained = plain_forward_and_grad()
    np.testing.assert_array_equal(obtained[0], expected[0])
    np.testing.assert_array_equal(obtained[1], expected[1])
    np.testing.assert_array_equal(backends.make_forward(model)([x])[0], expected[0])
    loss, _, grad = backends.make_value_and_grad(model, lambda o, aux: o[0].sum(), wrt=0)([x])
    np.testing.assert_array_equal(grad, expected[1])


@pytest.mark.skipif(keras.config.backend() != "torch", reason="a torch-only memory layout")
def test_torch_channels_last_patch_is_undone_after_nesting_and_errors():
    from keras.src.backend.torch import nn as keras_nn

    from convviz_check.backends import torch as torch_backend

    original = keras_nn._transpose_spatial_inputs
    with torch_backend.CHANNELS_LAST_VIEW:
        with torch_backend.CHANNELS_LAST_VIEW:
            assert keras_nn._transpose_spatial_inputs is not original
        assert keras_nn._transpose_spatial_inputs is not original  # outer block still on
    assert keras_nn._transpose_spatial_inputs is original
    with pytest.raises(ZeroDivisionError):
        with torch_backend.CHANNELS_LAST_VIEW:
            1 / 0  # noqa: B018
    assert keras_nn._transpose_spatial_inputs is original


@pytest.mark.skipif(keras.config.backend() != "jax", reason="a JAX-only kernel replacement")
@pytest.mark.parametrize(
    "kernel, strides, dilation, padding, multiplier",
    [
        (3, 1, 1, "same", 1),
        (3, 2, 1, "same", 1),
        (3, 2, 1, "valid", 2),
        (2, 1, 1, "same", 1),  # even kernel: 'same' pads one side more
        (5, 1, 2, "same", 1),
        (3, (2, 1), 1, "valid", 3),
    ],
)
def test_jax_depthwise_by_taps_matches_keras_forward_and_gradient(
    kernel, strides, dilation, padding, multiplier
):
    import jax

    from convviz_check.backends import jax as jax_backend

    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 13, 11, 4)).astype("float32")
    k = rng.normal(size=(kernel, kernel, 4, multiplier)).astype("float32")

    def conv(xv):
        return keras.ops.depthwise_conv(
            xv, k, strides=strides, padding=padding, dilation_rate=dilation
        )

    def value_and_grad():
        out = np.asarray(jax.jit(conv)(x))
        grad = np.asarray(jax.jit(jax.grad(lambda xv: (conv(xv) ** 2).sum()))(x))
        return out, grad

    expected = value_and_grad()
    with jax_backend.DEPTHWISE_BY_TAPS:
        obtained = value_and_grad()
    assert obtained[0].shape == expected[0].shape
    scale = np.abs(expected[0]).max()
    np.testing.assert_allclose(obtained[0], expected[0], rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(
        obtained[1], expected[1], rtol=0, atol=1e-6 * np.abs(expected[1]).max()
    )


@pytest.mark.skipif(keras.config.backend() != "jax", reason="a JAX-only kernel replacement")
def test_jax_depthwise_by_taps_is_traced_into_our_programs_and_removed_after(monkeypatch):
    from keras.src.backend.jax import nn as keras_nn

    from convviz_check.backends import jax as jax_backend

    patch = jax_backend.DEPTHWISE_BY_TAPS
    make, calls = patch._make, []

    def counting(original):
        fast = make(original)

        def depthwise_conv(*args, **kwargs):
            calls.append(args[0].shape)
            return fast(*args, **kwargs)

        return depthwise_conv

    monkeypatch.setattr(patch, "_make", counting)
    original = keras_nn.depthwise_conv
    model = _layout_model()
    x = np.random.default_rng(9).normal(size=(2, 15, 15, 3)).astype("float32")
    out = backends.make_forward(model)([x])[0]
    backends.make_forward(model)([x])  # compiled: no trace, no call
    assert len(calls) == 2  # the separable and the depthwise layer, traced once
    assert keras_nn.depthwise_conv is original
    np.testing.assert_allclose(
        out, model.predict_on_batch(x), rtol=0, atol=1e-6 * np.abs(out).max()
    )


@pytest.mark.skipif(keras.config.backend() != "torch", reason="torch's CPU sub-batches")
def test_torch_sub_batches_give_the_results_of_one_pass(monkeypatch):
    from convviz_check.backends import torch as torch_backend

    model = _layout_model()
    x = np.random.default_rng(10).normal(size=(10, 15, 15, 3)).astype("float32")
    aux = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])  # one class per sample: split with x

    def all_three():
        vg = backends.make_value_and_grad(model, _head_loss, wrt=0)([x], aux)
        forward = backends.make_forward(model)([x])
        loss = lambda outputs, a: keras.ops.sum(outputs[0] * keras.ops.one_hot(a, 4))  # noqa: E731
        ascent = backends.make_ascent(model, loss)(x, aux, 2, 1.0)
        return vg, forward, ascent

    monkeypatch.setattr(torch_backend, "CPU_SUB_BATCH", 100)
    whole = all_three()
    monkeypatch.setattr(torch_backend, "CPU_SUB_BATCH", 4)
    assert len(torch_backend._sub_batches([x])) == 3  # 4 + 4 + 2
    split = all_three()
    (loss_w, outs_w, grad_w), (loss_s, outs_s, grad_s) = whole[0], split[0]
    np.testing.assert_allclose(loss_s, loss_w, rtol=1e-5)
    np.testing.assert_allclose(outs_s[0], outs_w[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_s, grad_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split[1][0], whole[1][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split[2], whole[2], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(keras.config.backend() != "torch", reason="torch's CPU passes")
def test_torch_pass_size_follows_the_largest_map_and_leaves_results_unchanged(monkeypatch):
    from convviz_check.backends import torch as torch_backend

    model = _layout_model()  # largest map: c1, 15 x 15 x 8 = 1800 elements per sample
    budget = torch_backend.PASS_MAP_BYTES
    assert torch_backend._rows_per_pass(model) == budget // (4 * 1800)
    x_in = keras.Input((None, None, 3))
    free = keras.Model(x_in, keras.layers.Conv2D(2, 3)(x_in))  # sizes known only per call
    assert torch_backend._rows_per_pass(free) == torch_backend.CPU_SUB_BATCH

    x = np.random.default_rng(9).normal(size=(7, 15, 15, 3)).astype("float32")
    aux = np.arange(7) % 4
    passes: list[int] = []
    original = torch_backend._to_numpy

    def run(pass_bytes):
        monkeypatch.setattr(torch_backend, "PASS_MAP_BYTES", pass_bytes)
        passes.clear()
        monkeypatch.setattr(torch_backend, "_to_numpy", lambda t: passes.append(1) or original(t))
        loss, outputs, grad = backends.make_value_and_grad(model, _head_loss, wrt=0)([x], aux)
        n_passes = len(passes) // 2  # one output and the gradient per pass
        forward = torch_backend.make_forward(model)([x])[0]
        return n_passes, loss, outputs[0], grad, forward

    one = run(budget)
    three = run(4 * 1800 * 3)  # passes of 3, 3 and 1 samples
    assert (one[0], three[0]) == (1, 3)
    for a, b in zip(one[1:], three[1:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(a).max())
