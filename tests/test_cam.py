"""The CAM family (``cc.cam``): every method against a NumPy reference of its paper's
formula, richer targets (callables, one output of several), degenerate maps, bad input.

The references get ``A`` and ``dy/dA`` without the library's graph code: ``A`` from a
plain ``keras.Model`` (or the nested backbone itself), and ``dy/dA`` analytically. The
head after the target layer ``A`` (ReLU conv) is

    s = A * A + mix(A) + proj(first)     (proj: a skip from before A, over it)
    z = mean_ij(s) @ W + b               (GAP + Dense; the logit, the default score)

so ``dz_c / dA_k(i, j) = (2 A_k(i, j) u_k + (W_mix u)_k) / (h w)`` with ``u = W[:, c]``:
it varies over the map, which tells every method apart.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import convviz_check as cc
from convviz_check import sidecars
from convviz_check.artifacts import Artifact
from convviz_check.errors import ComparisonError, GraphError, InputError
from convviz_check.explain import cam as cam_module
from convviz_check.explain.cam import METHODS, cam
from convviz_check.render import resize_bilinear
from tests import _models

BACKEND = keras.config.backend()
ALL_METHODS = tuple(METHODS)
GRADIENT_METHODS = tuple(m for m, c in METHODS.items() if c.needs_gradient)

# float32 model vs float64 NumPy reference: measured max |diff| / max|raw| over every
# method and both models: TensorFlow 1.5e-7, torch 2.3e-7, JAX 7.5e-8 (the largest is
# Score-CAM's, whose reference masks come from PIL's float32 resize); the bound leaves
# a margin of 20.
REF_RTOL = 5e-6
SIZE = 10


# --------------------------------------------------------------------------- models
def _head(a, first, classes=3, name="head", activation="softmax"):
    sq = keras.layers.Multiply(name="square")([a, a])
    mix = keras.layers.Conv2D(5, 1, name="mix")(a)
    proj = keras.layers.Conv2D(5, 1, name="proj")(first)  # skip over the target layer
    s = keras.layers.Add(name="sum")([sq, mix, proj])
    g = keras.layers.GlobalAveragePooling2D(name="gap")(s)
    return g, keras.layers.Dense(classes, activation=activation, name=name)(g)


def _skip_model(seed=0):
    x_in = keras.Input((SIZE, SIZE, 3), name="image")
    first = keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="first")(x_in)
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(first)
    _, out = _head(a, first)
    model = keras.Model(x_in, out, name="skip_cam")
    _models.seeded_weights(model, seed, scale=0.5)
    return model


def _nested_model(seed=1):
    """The target layer inside a nested backbone that returns it and the layer before
    (the skip over the target is then taken in the outer model)."""
    b_in = keras.Input((SIZE, SIZE, 3))
    first = keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="first")(b_in)
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(first)
    backbone = keras.Model(b_in, [first, a], name="backbone")
    x_in = keras.Input((SIZE, SIZE, 3), name="image")
    first_out, a_out = backbone(x_in)
    _, out = _head(a_out, first_out)
    model = keras.Model(x_in, out, name="nested_cam")
    _models.seeded_weights(model, seed, scale=0.5)
    return model


def _two_output_model(seed=2):
    x_in = keras.Input((SIZE, SIZE, 3), name="image")
    first = keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="first")(x_in)
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(first)
    g, cls = _head(a, first, name="cls")
    reg = keras.layers.Dense(1, name="reg")(g)
    model = keras.Model(x_in, [cls, reg], name="two_heads")
    _models.seeded_weights(model, seed, scale=0.5)
    return model


MODELS = {"skip": _skip_model, "nested": _nested_model}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


def _cam(model, images, **kwargs):
    """``cam`` at the layer whose A and dy/dA the references know."""
    return cam(model, images, layer=kwargs.pop("layer", "target"), **kwargs)


def _images(n=3, seed=0):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3)).astype(np.float32)


# --------------------------------------------------------------------------- references
def _target_activation(model, x):
    """``A`` from plain Keras: a sub-model, or the nested backbone called directly."""
    names = [layer.name for layer in model.layers]
    if "backbone" in names:
        return np.asarray(model.get_layer("backbone").predict_on_batch(x)[1], np.float64)
    sub = keras.Model(model.inputs, model.get_layer("target").output)
    return np.asarray(sub.predict_on_batch(x), np.float64)


def _logits(model, x, head="head"):
    """The head's pre-activation ``z = GAP(s) @ W + b`` (float64)."""
    feats = keras.Model(model.inputs, model.get_layer("gap").output).predict_on_batch(x)
    w, b = model.get_layer(head).get_weights()
    return np.asarray(feats, np.float64) @ w + b


def _gradient(model, a, u):
    """``dz/dA`` for the direction ``u`` (N, k) over the logits: ``z . u``."""
    w_mix = model.get_layer("mix").get_weights()[0][0, 0].astype(np.float64)  # (k_in, k_out)
    v = u @ w_mix.T  # (N, k): (W_mix u)_k
    h, w = a.shape[1:3]
    return (2.0 * a * u[:, None, None, :] + v[:, None, None, :]) / (h * w)


def _class_direction(model, classes, head="head"):
    w = model.get_layer(head).get_weights()[0].astype(np.float64)
    return w[:, classes].T  # (N, k)


def ref_gradcam(a, g):
    out = np.zeros(a.shape[:3])
    for n in range(a.shape[0]):
        for k in range(a.shape[3]):
            out[n] += g[n, :, :, k].mean() * a[n, :, :, k]
    return out


def ref_gradcam_pp(a, g):
    out = np.zeros(a.shape[:3])
    for n in range(a.shape[0]):
        for k in range(a.shape[3]):
            gk, ak = g[n, :, :, k], a[n, :, :, k]
            num = gk**2
            den = 2 * gk**2 + ak.sum() * gk**3
            alpha = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
            out[n] += (alpha * np.maximum(gk, 0)).sum() * ak
    return out


def ref_xgradcam(a, g):
    out = np.zeros(a.shape[:3])
    for n in range(a.shape[0]):
        for k in range(a.shape[3]):
            ak = a[n, :, :, k]
            if ak.sum() != 0:
                out[n] += (ak / ak.sum() * g[n, :, :, k]).sum() * ak
    return out


def ref_hirescam(a, g):
    return (g * a).sum(axis=-1)


def ref_layercam(a, g):
    return (np.maximum(g, 0) * a).sum(axis=-1)


def ref_scorecam(a, x, score_of_masked, max_channels=None):
    """Per-mask loop: upsample (PIL), min-max, mask, one forward per mask."""
    out = np.zeros(a.shape[:3])
    for n in range(a.shape[0]):
        kept = [k for k in range(a.shape[3]) if a[n, :, :, k].max() > a[n, :, :, k].min()]
        if max_channels is not None:
            means = {k: a[n, :, :, k].mean() for k in kept}
            kept = sorted(sorted(kept, key=lambda k: -means[k])[:max_channels])
        scores = []
        for k in kept:
            up = resize_bilinear(a[n, :, :, k].astype(np.float32), x.shape[1:3]).astype(np.float64)
            mask = (up - up.min()) / (up.max() - up.min())
            scores.append(score_of_masked(n, (x[n] * mask[..., None])[None].astype(np.float32)))
        if kept:
            e = np.exp(np.array(scores) - max(scores))
            for k, weight in zip(kept, e / e.sum(), strict=True):
                out[n] += weight * a[n, :, :, k]
    return out


def ref_eigencam(a, center=False):
    out = np.zeros(a.shape[:3])
    for n in range(a.shape[0]):
        m = a[n].reshape(-1, a.shape[3])
        channel_sum = m.sum(axis=1)
        if center:
            m = m - m.mean(axis=0)
        values, vectors = np.linalg.eigh(m.T @ m)  # the right singular vectors of m
        proj = m @ vectors[:, np.argmax(values)]
        out[n] = (proj if proj @ channel_sum >= 0 else -proj).reshape(a.shape[1:3])
    return out


def _heatmap(raw):
    relu = np.maximum(raw, 0)
    peak = relu.max(axis=(1, 2), keepdims=True)
    return np.divide(relu, peak, out=np.zeros_like(relu), where=peak > 0)


def _assert_matches(result, raw):
    assert not result.degenerate.any()
    np.testing.assert_allclose(result.raw, raw, rtol=0, atol=REF_RTOL * np.abs(raw).max())
    np.testing.assert_allclose(result.heatmap, _heatmap(raw), rtol=0, atol=10 * REF_RTOL)


def _reference(method, model, x, direction, score_of_masked, **options):
    a = _target_activation(model, x)
    g = _gradient(model, a, direction)
    by_gradient = {
        "gradcam": ref_gradcam,
        "gradcam++": ref_gradcam_pp,
        "xgradcam": ref_xgradcam,
        "hirescam": ref_hirescam,
        "layercam": ref_layercam,
    }
    if method in by_gradient:
        return by_gradient[method](a, g)
    if method == "scorecam":
        return ref_scorecam(a, x, score_of_masked, **options)
    return ref_eigencam(a, **options)


# --------------------------------------------------------------------------- formulas
@pytest.mark.parametrize("method", ALL_METHODS)
def test_each_method_matches_a_numpy_reference_of_its_papers_formula(model, method):
    x = _images()
    result = _cam(model, x, method=method)
    classes = np.argmax(_logits(model, x), axis=1)
    assert result.class_index.tolist() == classes.tolist()
    assert (result.method, result.target, result.layer, result.score_kind) == (
        method,
        "class:top",
        "target",
        "logit",
    )

    def class_score(n, masked):
        return _logits(model, masked)[0, classes[n]]

    raw = _reference(method, model, x, _class_direction(model, classes), class_score)
    _assert_matches(result, raw)
    np.testing.assert_allclose(result.score, _logits(model, x)[np.arange(3), classes], rtol=1e-5)


def test_the_methods_give_different_maps_on_a_head_with_varying_gradients(model):
    # Guards the reference test: on this head no two methods coincide.
    x = _images()
    raws = {m: _cam(model, x, method=m).raw for m in ALL_METHODS}
    for i, m1 in enumerate(ALL_METHODS):
        for m2 in ALL_METHODS[i + 1 :]:
            assert not np.allclose(raws[m1], raws[m2], rtol=1e-3, atol=0), (m1, m2)


def test_scorecam_max_channels_keeps_the_channels_of_highest_mean_activation(model):
    x = _images()
    a = _target_activation(model, x)
    varying = [int((a[n].max(axis=(0, 1)) > a[n].min(axis=(0, 1))).sum()) for n in range(3)]
    assert max(varying) > 2  # the option has channels to drop
    classes = np.argmax(_logits(model, x), axis=1)

    def class_score(n, masked):
        return _logits(model, masked)[0, classes[n]]

    result = _cam(model, x, method="scorecam", max_channels=2)
    _assert_matches(result, ref_scorecam(a, x, class_score, max_channels=2))
    full = _cam(model, x, method="scorecam")
    assert not np.allclose(result.raw, full.raw)


def test_eigencam_centered_option_projects_the_centred_activations(model):
    x = _images()
    result = _cam(model, x, method="eigencam", center=True)
    _assert_matches(result, ref_eigencam(_target_activation(model, x), center=True))


@pytest.mark.parametrize("center", [False, True])
def test_eigencam_sign_makes_the_map_agree_with_the_channel_sum(model, center):
    x = _images()
    result = _cam(model, x, method="eigencam", center=center)
    channel_sum = _target_activation(model, x).sum(axis=-1)
    assert ((result.raw * channel_sum).sum(axis=(1, 2)) > 0).all()
    if not center:  # post-ReLU activations: a non-negative map
        assert (result.raw >= -1e-6 * np.abs(result.raw).max()).all()


@pytest.mark.parametrize("method", ["scorecam", "gradcam++"])
def test_batch_size_and_the_padded_last_chunk_leave_the_maps_unchanged(model, method):
    x = _images(5)
    one = _cam(model, x, method=method, batch_size=5)
    split = _cam(model, x, method=method, batch_size=2)  # chunks 2, 2, 1 (+1 padded)
    np.testing.assert_allclose(split.raw, one.raw, rtol=0, atol=1e-6 * np.abs(one.raw).max())
    np.testing.assert_array_equal(split.class_index, one.class_index)


def _chunked_and_padded(monkeypatch) -> None:
    """The path every backend took before whole batches: 8 images (32 masked inputs)
    per call, the last chunk padded, and on torch passes of 2 samples."""
    from convviz_check import backends

    monkeypatch.setattr(backends, "whole_batches", lambda: False)
    if BACKEND == "torch":
        from convviz_check.backends import torch as torch_backend

        monkeypatch.setattr(torch_backend, "PASS_MAP_BYTES", 0)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_whole_unpadded_batches_give_the_maps_of_chunked_padded_ones(model, method, monkeypatch):
    # Whole batches (torch on a CPU) run other batch sizes through the kernels than the
    # chunked, padded path; float32 convolutions may then round differently (measured
    # on torch: 1.3e-7 of max|raw|), never more than the batch_size bound above. Checked
    # on every backend by forcing the whole-batch path where it is not the default.
    from convviz_check import backends

    x = _images(11)  # one chunk of 8 and a padded one of 3
    options = {"max_channels": 3} if method == "scorecam" else {}
    monkeypatch.setattr(backends, "whole_batches", lambda: True)
    whole = _cam(model, x, method=method, **options)
    monkeypatch.undo()
    _chunked_and_padded(monkeypatch)
    chunked = _cam(model, x, method=method, **options)
    np.testing.assert_allclose(
        whole.raw, chunked.raw, rtol=0, atol=1e-6 * np.abs(chunked.raw).max()
    )
    np.testing.assert_allclose(whole.heatmap, chunked.heatmap, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(whole.class_index, chunked.class_index)
    np.testing.assert_array_equal(whole.degenerate, chunked.degenerate)


@pytest.mark.skipif(BACKEND != "torch", reason="autograd recording is torch's")
def test_scorecam_masked_forwards_record_no_gradient_on_torch(model, monkeypatch):
    import torch

    from convviz_check.backends import torch as torch_backend

    seen: list[tuple[bool, bool]] = []
    original = torch_backend._to_numpy

    def spy(t):
        seen.append((t.requires_grad or t.grad_fn is not None, torch.is_grad_enabled()))
        return original(t)

    monkeypatch.setattr(torch_backend, "_to_numpy", spy)
    x = _images(2)
    result = _cam(model, x, method="scorecam", batch_size=4)
    masks = sum(int((a.max((0, 1)) > a.min((0, 1))).sum()) for a in _target_activation(model, x))
    # The first forward (A and the head) and one per chunk of 4 masked inputs, two
    # outputs each; none of them recorded for autograd.
    assert len(seen) == 2 * (1 + -(-masks // 4))
    assert not any(recorded or enabled for recorded, enabled in seen)
    assert not result.degenerate.any()


def test_cam_gradcam_is_cc_gradcam(model):
    x = _images()
    a, b = _cam(model, x, method="gradcam"), cc.gradcam(model, x, layer="target")
    for field in ("heatmap", "raw", "class_index", "score", "degenerate"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (b.method, b.target) == ("gradcam", "class:top")


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TF on CPU cannot run channels_first Conv2D")
@pytest.mark.parametrize("method", ["gradcam++", "scorecam", "eigencam"])
def test_a_channels_first_model_gives_channels_last_maps_equal_to_the_reference(method):
    before = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        x_in = keras.Input((3, SIZE, SIZE))
        first = keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="first")(x_in)
        a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(first)
        _, out = _head(a, first)
        model = keras.Model(x_in, out)
    finally:
        keras.config.set_image_data_format(before)
    _models.seeded_weights(model, 3, scale=0.5)
    x = _images()  # channels-last, as cam() takes them

    def channels_first(images):
        return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))

    sub = keras.Model(model.inputs, model.get_layer("target").output)
    acts = np.transpose(
        np.asarray(sub.predict_on_batch(channels_first(x)), np.float64), (0, 2, 3, 1)
    )
    classes = np.argmax(_logits(model, channels_first(x)), axis=1)

    def class_score(n, masked):
        return _logits(model, channels_first(masked))[0, classes[n]]

    raw = {
        "gradcam++": lambda: ref_gradcam_pp(
            acts, _gradient(model, acts, _class_direction(model, classes))
        ),
        "scorecam": lambda: ref_scorecam(acts, x, class_score),
        "eigencam": lambda: ref_eigencam(acts),
    }[method]()
    result = _cam(model, x, method=method)
    assert result.heatmap.shape == (3, SIZE, SIZE)
    _assert_matches(result, raw)


# --------------------------------------------------------------------------- targets
def weighted_classes(y):
    """A weighted sum of classes, built from keras ops (the docs' example)."""
    return y[:, 1] - 0.5 * y[:, 2]


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "scorecam"])
def test_a_callable_target_is_differentiated_instead_of_a_class(model, method):
    x = _images()
    result = _cam(model, x, method=method, class_index=weighted_classes)
    u = _class_direction(model, [1, 1, 1]) - 0.5 * _class_direction(model, [2, 2, 2])

    def callable_score(n, masked):
        z = _logits(model, masked)[0]
        return z[1] - 0.5 * z[2]

    _assert_matches(result, _reference(method, model, x, u, callable_score))
    assert result.class_index.tolist() == [-1, -1, -1]
    assert result.target == "callable:weighted_classes"
    z = _logits(model, x)
    np.testing.assert_allclose(result.score, z[:, 1] - 0.5 * z[:, 2], rtol=1e-5, atol=1e-6)


def test_a_callable_target_receives_probabilities_under_score_output():
    model = _skip_model()
    x = _images()
    result = _cam(model, x, class_index=lambda y: y[:, 0], score="output")
    z = _logits(model, x)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(result.score, p[:, 0], rtol=1e-5)
    assert result.score_kind == "output"


@pytest.mark.parametrize(
    "bad", [lambda y: y, lambda y: keras.ops.sum(y), lambda y: y[:1, 0]], ids=["2d", "0d", "rows"]
)
def test_a_callable_of_the_wrong_shape_is_refused(bad):
    with pytest.raises(InputError, match=r"one score per image, shape \(N,\).*Received: ") as e:
        _cam(_skip_model(), _images(), class_index=bad)
    assert "probe batch" in str(e.value) and "not your image count" in str(e.value)


def test_class_targets_are_described():
    model, x = _skip_model(), _images()
    assert _cam(model, x, class_index=2).target == "class:2"
    assert _cam(model, x, class_index=[0, 1, 2]).target == "class:per-image"
    assert _cam(model, x, class_index=[1, 1, 1]).target == "class:1"


def test_output_picks_one_output_of_a_two_output_model():
    model, x = _two_output_model(), _images()
    default = _cam(model, x)
    for chosen in ("cls", 0):
        same = _cam(model, x, output=chosen)
        np.testing.assert_array_equal(same.raw, default.raw)
        assert same.target == "class:top@cls"
    classes = np.argmax(_logits(model, x, "cls"), axis=1)
    _assert_matches(
        default,
        ref_gradcam(
            _target_activation(model, x),
            _gradient(model, _target_activation(model, x), _class_direction(model, classes, "cls")),
        ),
    )
    for chosen in ("reg", 1, -1):
        reg = _cam(model, x, method="layercam", output=chosen, class_index=lambda y: y[:, 0])
        a = _target_activation(model, x)
        _assert_matches(
            reg, ref_layercam(a, _gradient(model, a, _class_direction(model, [0] * 3, "reg")))
        )
        assert (
            reg.target
            == "callable:test_output_picks_one_output_of_a_two_output_model.<locals>.<lambda>@reg"
        )
        np.testing.assert_allclose(reg.score, _logits(model, x, "reg")[:, 0], rtol=1e-5)


def test_output_by_key_of_a_dict_of_outputs():
    base = _two_output_model()
    model = keras.Model(base.inputs, {"p": base.outputs[0], "q": base.outputs[1]})
    x = _images()
    by_key = _cam(model, x, output="q", class_index=lambda y: y[:, 0])
    by_layer = _cam(base, x, output="reg", class_index=lambda y: y[:, 0])
    np.testing.assert_allclose(by_key.raw, by_layer.raw, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "output, match",
    [
        ("nope", r"Received: output='nope'.*\['cls', 'reg'\]"),
        (2, r"Received: output=2.*\[0, 2\).*\['cls', 'reg'\]"),
        (1.0, r"name or index.*Received: output=1.0.*\['cls', 'reg'\]"),
    ],
)
def test_a_bad_output_is_refused_listing_the_outputs(output, match):
    with pytest.raises(InputError, match=match):
        _cam(_two_output_model(), _images(), output=output)


def test_a_class_index_on_a_non_classifier_output_suggests_a_callable():
    x_in = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Conv2D(3, 3, activation="relu", name="target")(x_in)
    out = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(a)  # (N, 1, 1, 3)
    model = keras.Model(x_in, keras.layers.Reshape((3, 1), name="flat")(out))
    with pytest.raises(GraphError, match="class_index as a callable"):
        _cam(model, _images(), layer="target")


# --------------------------------------------------------------------------- degenerate
def _dead_target_model():
    """The target layer outputs zeros everywhere (zero kernel, zero bias, ReLU)."""
    model = _skip_model()
    layer = model.get_layer("target")
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    return model


def _dead_head_model():
    """The class scores do not depend on anything (zero Dense kernel)."""
    model = _skip_model()
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([np.zeros_like(kernel), bias])
    return model


@pytest.mark.parametrize("method", ALL_METHODS)
def test_an_all_zero_map_is_degenerate_exact_zeros_never_nan(method):
    model = _dead_target_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no 0 / 0 along the way either
        result = _cam(model, _images(), method=method)
    assert result.degenerate.all()
    assert np.array_equal(result.heatmap, np.zeros_like(result.heatmap))
    assert np.isfinite(result.raw).all() and np.isfinite(result.score).all()


@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_score_that_does_not_depend_on_the_layer_never_gives_nan(method):
    model = _dead_head_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = _cam(model, _images(), method=method)
    assert np.isfinite(result.heatmap).all() and np.isfinite(result.raw).all()
    assert ((result.heatmap >= 0) & (result.heatmap <= 1)).all()
    if method in GRADIENT_METHODS:  # zero gradient: nothing to show
        assert result.degenerate.all()
    if method == "eigencam":  # class-agnostic: the activations still have structure
        assert not result.degenerate.any()


def test_normalise_turns_non_finite_maps_into_degenerate_zeros():
    raw = np.ones((3, 2, 2))
    raw[0, 0, 0] = np.nan
    raw[1, 1, 1] = np.inf
    heatmap, raw32, degenerate = cam_module.normalise(raw, np.ones(3))
    assert degenerate.tolist() == [True, True, False]
    assert np.isfinite(heatmap).all() and np.isfinite(raw32).all()
    assert heatmap[2].tolist() == [[1.0, 1.0], [1.0, 1.0]]


# --------------------------------------------------------------------------- bad input
def test_an_unknown_method_is_refused_listing_the_methods():
    with pytest.raises(InputError, match=r"Received: method='gradcam2'.*'eigencam'.*'xgradcam'"):
        _cam(_skip_model(), _images(), method="gradcam2")


@pytest.mark.parametrize(
    "method, options, match",
    [
        ("gradcam", {"max_channels": 4}, r"'gradcam'.*Received: \['max_channels'\].*none"),
        ("scorecam", {"max_chanels": 4}, r"'scorecam'.*\['max_chanels'\].*\['max_channels'\]"),
        ("eigencam", {"centre": True}, r"\['centre'\].*\['center'\]"),
        ("scorecam", {"max_channels": 0}, r"max_channels=0"),
        ("scorecam", {"max_channels": True}, r"max_channels=True"),
        ("eigencam", {"center": "yes"}, r"center='yes'"),
    ],
)
def test_unknown_or_bad_method_options_are_refused(method, options, match):
    with pytest.raises(InputError, match=match):
        _cam(_skip_model(), _images(), method=method, **options)


def test_every_method_is_a_registered_subclass_with_typed_keyword_only_options():
    assert set(ALL_METHODS) == {
        "gradcam",
        "gradcam++",
        "xgradcam",
        "hirescam",
        "layercam",
        "scorecam",
        "eigencam",
    }
    for name, cls in METHODS.items():
        assert issubclass(cls, cam_module.CamMethod) and cls.name == name
        for option in cam_module.method_options(name):
            assert option in cls.__init__.__annotations__
    with pytest.raises(TypeError, match="abstract"):
        cam_module.CamMethod()  # type: ignore[abstract]


# --------------------------------------------------------------------------- goldens
def _cam_value(method):
    return _cam(_skip_model(), _images(2), method=method)


def test_comparing_maps_of_two_methods_fails_saying_the_method_changed():
    golden_cam, obtained = _cam_value("gradcam"), _cam_value("scorecam")
    with pytest.raises(ComparisonError, match="method changed: golden gradcam, obtained scorecam"):
        cc.compare(golden_cam, obtained, "heatmap")
    assert cc.compare(golden_cam, _cam_value("gradcam"), "heatmap").passed


def test_golden_sidecar_and_artifact_record_method_and_target():
    value = _cam(_skip_model(), _images(2), method="layercam", class_index=weighted_classes)
    artifact = Artifact.from_value(value)
    side = sidecars.build_sidecar(artifact, {})
    assert (side["method"], side["target"]) == ("layercam", "callable:weighted_classes")
    back = artifact.to_value()
    assert (back.method, back.target) == ("layercam", "callable:weighted_classes")


def test_the_fixture_and_the_package_export_cam():
    from convviz_check.plugin_fixture import ConvvizFixture

    assert cc.cam is cam and ConvvizFixture.cam is cam
    assert "cam" in cc.__all__


def test_cross_backend_compute_runs_the_requested_method():
    from convviz_check.crossbackend.compute import compute_gradcam
    from convviz_check.crossbackend.requests import artifact_params

    params = artifact_params(
        gradcam_layer="target", cam_method="scorecam", cam_options={"max_channels": 2}
    )
    artifact = compute_gradcam(_skip_model(), _images(2), params["gradcam"])
    assert artifact.attrs["method"] == "scorecam"
    expected = _cam(_skip_model(), _images(2), method="scorecam", max_channels=2)
    np.testing.assert_array_equal(artifact.to_value().raw, expected.raw)


# --------------------------------------------------------------------------- a real model
@pytest.fixture(scope="module")
def mobilenet():
    return keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=5)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_runs_on_keras_applications_mobilenetv2(mobilenet, method):
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32) * 2 - 1
    options = {"max_channels": 16} if method == "scorecam" else {}
    result = cam(mobilenet, x, method=method, **options)
    assert result.layer == "out_relu" and result.heatmap.shape == (2, 2, 2)
    assert np.isfinite(result.heatmap).all() and np.isfinite(result.raw).all()
    assert ((result.heatmap >= 0) & (result.heatmap <= 1)).all()
    assert (result.heatmap.max(axis=(1, 2)) == 1.0).tolist() == (~result.degenerate).tolist()
