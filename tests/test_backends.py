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
