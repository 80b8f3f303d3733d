"""Filter patterns: gradient ascent in input space.

Models: a seeded chapter-style convnet (weights from NumPy, identical on every
backend), the bundled example convnet when it is committed, and a grayscale 64x64x1
model whose first-layer filters are known edge detectors.
"""

from __future__ import annotations

import math
import re

import keras
import numpy as np
import pytest

import convviz_check as cc
from convviz_check.errors import ConvvizError, GraphError, InputError
from convviz_check.explain import filters as filters_mod
from convviz_check.explain.filters import pattern_note

BACKEND = keras.config.backend()
SIZE = 32  # small synthesized images keep the ascent fast on a shared CPU


def _seeded(model, seed: int = 0) -> None:
    """He-normal kernels and small biases from NumPy (same weights on every backend)."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.get_weights():
        if w.ndim >= 2:
            fan_in = int(np.prod(w.shape[:-1]))
            values.append(rng.normal(0, math.sqrt(2.0 / fan_in), w.shape).astype("float32"))
        else:
            values.append(rng.normal(0, 0.05, w.shape).astype("float32"))
    model.set_weights(values)


def _convnet(data_format: str = "channels_last"):
    """Chapter-style stack that takes any image size. Leaky ReLU, not ReLU: with seeded
    (untrained) weights most ReLU filters are zero over the whole grey start image, so
    they have no gradient to climb (measured: 4 of 12 alive in c2; GELU saturates the
    same way below zero); leaky ReLU keeps every filter climbable. Dead ReLU filters
    have their own test below."""
    from keras import layers

    shape = (3, None, None) if data_format == "channels_first" else (None, None, 3)
    inp = keras.Input(shape)
    x = layers.Conv2D(8, 3, activation="leaky_relu", name="c1", data_format=data_format)(inp)
    x = layers.MaxPooling2D(2, name="p1", data_format=data_format)(x)
    x = layers.Conv2D(12, 3, activation="leaky_relu", name="c2", data_format=data_format)(x)
    x = layers.GlobalAveragePooling2D(name="gap", data_format=data_format)(x)
    out = layers.Dense(4, activation="softmax", name="head")(x)
    model = keras.Model(inp, out, name=f"convnet_{data_format}")
    _seeded(model)
    return model


@pytest.fixture(scope="module")
def convnet():
    return _convnet()


def _bundled_convnet():
    from convviz_check import examples

    return examples.load_example_model("convnet")  # shipped with the package


def _mean_inner_activation(model, layer, images):
    """(N, C): mean of each channel inside the 2-pixel border (the ascent's objective)."""
    out = cc.graph.submodel(model, [layer])(images, training=False)
    if isinstance(out, list | tuple):  # a one-output model built with a list of outputs
        out = out[0]
    acts = keras.ops.convert_to_numpy(out)
    b = filters_mod.BORDER
    return acts[:, b:-b, b:-b, :].mean(axis=(1, 2))


def _gains(model, layer, filters, size, **kwargs):
    """Per pattern: how much it raised each filter's objective over the start image."""
    patterns = cc.filter_patterns(model, layer, filters=filters, size=size, **kwargs)
    start = filters_mod.start_image(*patterns.shape[1:], seed=kwargs.get("seed", 0))
    before = _mean_inner_activation(model, layer, start[None])[0]
    after = _mean_inner_activation(model, layer, patterns)
    return before, after, patterns


# --- the ascent does what it is for --------------------------------------------------------


def _assert_patterns_select_their_filters(model, layer, filters, size, min_alive):
    before, after, patterns = _gains(model, layer, filters, size)
    filters = np.asarray(filters)
    own_before, own_after = before[filters], after[np.arange(len(filters)), filters]
    # A ReLU filter that is zero over the whole inner map of the start image has a zero
    # gradient: its "pattern" is the start image, unchanged (nothing to climb; see
    # test_a_filter_without_gradient_keeps_the_start_image_and_never_nans).
    start = filters_mod.start_image(*patterns.shape[1:], seed=0)
    alive = np.array([not np.array_equal(p, start) for p in patterns])
    assert alive.sum() >= min_alive, own_before
    # "Far above" on a scale-free yardstick: the spread (std) of all the layer's filter
    # means on the start image. Measured: the smallest rise is 5.7x that spread on the
    # seeded convnet (c2, 32x32, JAX: from -0.22..0.26 to 0.87..15.6) and 3.4x on the
    # bundled convnet (TF: from -1.13..1.31 to 1.35..57); 2x still fails an ascent
    # that does not climb.
    rise = own_after[alive] - own_before[alive]
    spread = float(np.std(before))
    assert np.all(rise >= 2.0 * spread), (spread, own_before, own_after)
    gain = after - before[None, :]
    for row in np.flatnonzero(alive):
        f = filters[row]
        others = np.delete(gain[row], f)
        # Measured: each pattern raises its own filter more than >= 91% of the other
        # filters of the seeded convnet and >= 74% on the bundled (trained, correlated
        # filters) convnet (TF); a majority (60%) still fails a pattern of another filter.
        assert np.mean(gain[row, f] > others) >= 0.6, (f, gain[row])


def test_each_pattern_raises_its_own_filter_far_above_the_start(convnet):
    _assert_patterns_select_their_filters(convnet, "c2", list(range(12)), SIZE, min_alive=12)


def test_patterns_of_the_bundled_convnet_select_their_filters():
    model = _bundled_convnet()
    layer = cc.conv_layers(model)[1]
    n = min(8, _channels(model, layer))
    _assert_patterns_select_their_filters(model, layer, list(range(n)), None, min_alive=1)


def test_a_filter_without_gradient_keeps_the_start_image_and_never_nans():
    from keras import layers

    inp = keras.Input((None, None, 3))
    out = layers.Conv2D(2, 3, activation="relu", name="dead")(inp)
    model = keras.Model(inp, out)
    # Filter 0: negative everywhere (ReLU zero, no gradient); filter 1: constant (zero
    # kernel, no gradient either).
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[..., 0] = -1.0
    model.get_layer("dead").set_weights([kernel, np.array([0.0, 1.0], np.float32)])
    # Both are dead starts no restart fires: each is named, and left at its start.
    patterns = cc.filter_patterns(model, "dead", size=SIZE)
    assert re.match("filter 0: dead start .*; filter 1: dead start", pattern_note(patterns))
    start = filters_mod.start_image(SIZE, SIZE, 3, seed=0)
    np.testing.assert_array_equal(patterns, np.stack([start, start]))


def _channels(model, layer):
    return int(cc.graph.flatten(model).record(layer).output_shape[-1])


# --- shape, layout, defaults ---------------------------------------------------------------


def test_returns_float32_channels_last_for_every_filter_by_default(convnet):
    patterns = cc.filter_patterns(convnet, "c1", size=SIZE, steps=2)
    assert patterns.shape == (8, SIZE, SIZE, 3)
    assert patterns.dtype == np.float32


def test_size_none_takes_200x200_for_a_model_of_any_size(convnet):
    patterns = cc.filter_patterns(convnet, "c1", filters=[0], steps=0)
    assert patterns.shape == (1, 200, 200, 3)


def test_zero_steps_returns_the_seeded_start_in_the_input_range(convnet):
    p = cc.filter_patterns(convnet, "c1", filters=[0, 1], size=SIZE, steps=0, input_range=(0, 255))
    # Uniform in [0.4, 0.6] of (0, 255) = [102, 153], the same start for every filter.
    assert p.min() >= 102.0 and p.max() <= 153.0 and p.max() - p.min() > 40
    np.testing.assert_array_equal(p[0], p[1])
    expected = filters_mod.start_image(SIZE, SIZE, 3, seed=0, input_range=(0, 255))
    np.testing.assert_array_equal(p[0], expected)


def test_default_learning_rate_follows_the_chapters_per_pixel_step():
    assert filters_mod.default_learning_rate(200, 200, 3) == 10.0
    assert math.isclose(filters_mod.default_learning_rate(64, 64, 1), 10 * math.sqrt(4096 / 120000))
    assert math.isclose(filters_mod.default_learning_rate(400, 400, 3), 20.0)


@pytest.mark.parametrize("learning_rate", [None, 0.25])
def test_one_step_moves_the_image_by_the_learning_rate(convnet, learning_rate):
    # The gradient is L2-normalized over the whole image, so one step moves each image
    # by exactly the learning rate (in L2): the default at 32x32x3 is
    # 10 * sqrt(3072 / 120000) = 1.6; an explicit value is used as given.
    p = cc.filter_patterns(
        convnet, "c2", filters=[0, 3], size=SIZE, steps=1, learning_rate=learning_rate
    )
    start = filters_mod.start_image(SIZE, SIZE, 3, seed=0)
    moved = np.sqrt(((p.astype(np.float64) - start) ** 2).sum(axis=(1, 2, 3)))
    expected = 10 * math.sqrt(SIZE * SIZE * 3 / 120000) if learning_rate is None else learning_rate
    np.testing.assert_allclose(moved, expected, rtol=1e-4)


# --- the input range the model expects ------------------------------------------------------


def _preprocessed(*front):
    """Leading preprocessing layers ``front``, then a small seeded convnet."""
    from keras import layers

    inp = keras.Input((None, None, 3))
    x = inp
    for layer in front:
        x = layer(x)
    x = layers.Conv2D(6, 3, activation="leaky_relu", name="c1")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, layers.Dense(3, name="head")(x))
    _seeded(model)
    return model


_IMAGENET_MEAN, _IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        (lambda L: [L.Rescaling(1 / 255.0)], (0.0, 255.0)),
        (lambda L: [L.Rescaling(1 / 127.5, offset=-1.0)], (0.0, 255.0)),  # MobileNetV3
        (  # EfficientNet: 1/255, then ImageNet standardization
            lambda L: [
                L.Rescaling(1 / 255.0),
                L.Normalization(mean=_IMAGENET_MEAN, variance=_IMAGENET_STD**2),
            ],
            (0.0, 255.0),
        ),
        (  # ConvNeXt: ImageNet statistics times 255
            lambda L: [
                L.Normalization(mean=255 * _IMAGENET_MEAN, variance=(255 * _IMAGENET_STD) ** 2)
            ],
            (0.0, 255.0),
        ),
        (  # augmentation is an identity at inference: skipped
            lambda L: [L.RandomFlip(), L.Rescaling(1 / 255.0)],
            (0.0, 255.0),
        ),
        (lambda L: [L.Normalization(mean=0.45, variance=0.05)], (0.0, 1.0)),  # 0-1 inputs
        (lambda L: [], None),
        (lambda L: [L.Rescaling(1000.0)], None),  # no conventional range fits
    ],
    ids=["1/255", "1/127.5-1", "efficientnet", "convnext", "augment", "0-1", "none", "odd"],
)
def test_input_range_is_inferred_from_the_leading_preprocessing(front, expected):
    from convviz_check.explain.inputs import infer_input_range

    assert infer_input_range(_preprocessed(*front(keras.layers))) == expected


def test_rescaling_after_the_first_convolution_is_not_preprocessing():
    from keras import layers

    from convviz_check.explain.inputs import infer_input_range

    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(2, 3, name="c")(inp)
    x = layers.Rescaling(1 / 255.0)(x)
    model = keras.Model(inp, layers.Dense(2)(layers.Flatten()(x)))
    assert infer_input_range(model) is None


def test_default_input_range_follows_the_model_and_scales_the_step():
    model = _preprocessed(keras.layers.Rescaling(1 / 255.0))
    start = cc.filter_patterns(model, "c1", filters=[0], size=SIZE, steps=0)
    expected = filters_mod.start_image(SIZE, SIZE, 3, seed=0, input_range=(0, 255))
    np.testing.assert_array_equal(start[0], expected)  # in [102, 153]
    # The default step is the same fraction of the range: 255x the step for 0-1.
    moved = cc.filter_patterns(model, "c1", filters=[0], size=SIZE, steps=1)
    step = np.sqrt(((moved[0].astype(np.float64) - expected) ** 2).sum())
    np.testing.assert_allclose(
        step, 255 * filters_mod.default_learning_rate(SIZE, SIZE, 3), rtol=1e-4
    )
    # An explicit range still wins.
    given = cc.filter_patterns(model, "c1", filters=[0], size=SIZE, steps=0, input_range=(0, 1))
    np.testing.assert_array_equal(given[0], filters_mod.start_image(SIZE, SIZE, 3, seed=0))


def test_a_model_without_preprocessing_keeps_the_0_1_default(convnet):
    p = cc.filter_patterns(convnet, "c1", filters=[0], size=SIZE, steps=0)
    np.testing.assert_array_equal(p[0], filters_mod.start_image(SIZE, SIZE, 3, seed=0))


# --- the layers filter patterns accept --------------------------------------------------------


def _se_convnet():
    """A squeeze-and-excitation block between two convolutions, then a pooled head
    whose 1x1 convolution follows the pooling (as in MobileNet heads)."""
    from keras import layers

    inp = keras.Input((None, None, 3))
    a = layers.Conv2D(6, 3, activation="leaky_relu", name="c1")(inp)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(a)
    s = layers.Conv2D(6, 1, activation="sigmoid", name="se_conv")(s)
    x = layers.Multiply(name="se_mul")([a, s])
    x = layers.Conv2D(8, 3, activation="leaky_relu", name="c2")(x)
    x = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = layers.Conv2D(3, 1, name="head_conv")(x)
    model = keras.Model(inp, layers.Flatten(name="flat")(x))
    _seeded(model)
    return model


def test_layers_after_an_se_block_are_accepted_and_its_1x1_maps_refused():
    model = _se_convnet()
    p = cc.filter_patterns(model, "c2", filters=[0, 1], size=SIZE, steps=2)
    assert p.shape == (2, SIZE, SIZE, 3) and np.isfinite(p).all()
    with pytest.raises(GraphError, match=r"global pooling alone.*layer='se_conv'.*'se_mul', 'c2'"):
        cc.filter_patterns(model, "se_conv", size=SIZE)
    with pytest.raises(GraphError, match=r"after the head's global pooling.*layer='head_conv'"):
        cc.filter_patterns(model, "head_conv", size=SIZE)


# --- grayscale, fixed size, known filters --------------------------------------------------


@pytest.fixture(scope="module")
def edge_model():
    """64x64x1 model whose two filters are known: a horizontal-edge detector (responds to
    rows that change from dark to bright) and a vertical-edge detector."""
    from keras import layers

    inp = keras.Input((64, 64, 1))
    x = layers.Conv2D(2, 3, activation="relu", name="edges")(inp)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, layers.Dense(2, name="head")(x), name="edges")
    sobel_y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32)  # d/dy
    kernel = np.stack([sobel_y, sobel_y.T], axis=-1)[:, :, None, :]  # (3, 3, 1, 2)
    model.get_layer("edges").set_weights([kernel, np.zeros(2, np.float32)])
    model.get_layer("head").set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    return model


def _gradient_energy(image):
    """(energy along y, energy along x) of an (H, W) image."""
    return float((np.diff(image, axis=0) ** 2).sum()), float((np.diff(image, axis=1) ** 2).sum())


def test_grayscale_fixed_size_model_gets_64x64x1_patterns_of_its_known_filters(edge_model):
    patterns = cc.filter_patterns(edge_model, "edges")
    assert patterns.shape == (2, 64, 64, 1)
    # Default learning rate at 64x64x1 = 10 * sqrt(4096 / 120000) = 1.85.
    along_y, along_x = _gradient_energy(patterns[0, :, :, 0])
    # Measured (JAX): the d/dy detector's pattern changes 7.5x more down the rows than
    # along them (horizontal stripes), and the d/dx detector's the other way round.
    assert along_y > 3 * along_x
    along_y, along_x = _gradient_energy(patterns[1, :, :, 0])
    assert along_x > 3 * along_y
    grid = cc.filter_grid(np.stack([cc.deprocess_image(p) for p in patterns]))
    assert grid.shape == (5 + 48 + 5, 5 + 2 * (48 + 5), 1) and grid.dtype == np.uint8


def test_a_size_other_than_the_fixed_input_is_refused(edge_model):
    with pytest.raises(InputError, match=r"fixed input height of 64.*Received: size=32"):
        cc.filter_patterns(edge_model, "edges", size=32)


# --- determinism, batching, compile once ---------------------------------------------------


def test_same_seed_gives_identical_arrays_and_another_seed_does_not(convnet):
    a = cc.filter_patterns(convnet, "c2", filters=[1, 4], size=SIZE, seed=3)
    b = cc.filter_patterns(convnet, "c2", filters=[1, 4], size=SIZE, seed=3)
    c = cc.filter_patterns(convnet, "c2", filters=[1, 4], size=SIZE, seed=4)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.05


def test_batched_patterns_match_one_at_a_time(convnet):
    filters = [0, 2, 5, 7, 11]
    one = cc.filter_patterns(convnet, "c2", filters=filters, size=SIZE, batch_size=1)
    # batch 2 over 5 filters: the last batch is padded and its padding dropped.
    two = cc.filter_patterns(convnet, "c2", filters=filters, size=SIZE, batch_size=2)
    five = cc.filter_patterns(convnet, "c2", filters=filters, size=SIZE, batch_size=5)
    # Each image has its own loss term and normalization: batching changes only float
    # summation order. Measured max abs difference after 30 steps (values ~0-3):
    # 0 (TF), <= 1e-6 (torch, JAX); 1e-4 is a wide bound.
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-4)
    np.testing.assert_allclose(five, one, rtol=0, atol=1e-4)


def test_a_pattern_does_not_depend_on_the_other_filters_asked_for(convnet):
    alone = cc.filter_patterns(convnet, "c2", filters=[6], size=SIZE)
    among = cc.filter_patterns(convnet, "c2", filters=[3, 6, 9], size=SIZE)
    np.testing.assert_allclose(among[1], alone[0], rtol=0, atol=1e-4)


def test_new_filter_indices_reuse_the_compiled_ascent(convnet, monkeypatch):
    import keras

    model = keras.models.clone_model(convnet)  # a model with nothing compiled yet
    counts = {"compiled": 0, "loss": 0}
    from convviz_check import backends

    real = backends.make_ascent

    def counting(m, loss_fn, *args, **kwargs):
        counts["compiled"] += 1

        def counted(outputs, aux):
            counts["loss"] += 1  # in Python: per trace (compiled) or per step (torch)
            return loss_fn(outputs, aux)

        return real(m, counted, *args, **kwargs)

    monkeypatch.setattr(backends, "make_ascent", counting)
    cc.filter_patterns(model, "c2", filters=[0, 1], size=SIZE, steps=3, batch_size=2)
    before = counts["loss"]
    cc.filter_patterns(model, "c2", filters=[7, 9], size=SIZE, steps=3, batch_size=2)
    cc.filter_patterns(model, "c2", filters=[10, 11], size=SIZE, steps=3, batch_size=2)
    assert counts["compiled"] == 1  # one compiled ascent for every filter index
    calls = counts["loss"] - before
    if BACKEND == "torch":
        # Eager: the loss runs once per step and nothing is traced; 2 calls x 3 steps.
        assert calls == 6
    else:
        # The loss function runs in Python only while tracing: new filter indices (a
        # tensor argument) and a new call must not trace again.
        assert calls == 0


def test_progress_is_called_after_each_batch(convnet):
    seen = []
    cc.filter_patterns(
        convnet,
        "c2",
        filters=range(10),
        size=SIZE,
        steps=1,
        batch_size=4,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(4, 10), (8, 10), (10, 10)]


def _conv_zoo(data_format: str = "channels_last"):
    """Conv2D with bias and leaky ReLU, a SeparableConv2D, a Conv2D with a softmax
    activation (not elementwise: must not be restricted) and a grouped Conv2D."""
    from keras import layers

    shape = (4, None, None) if data_format == "channels_first" else (None, None, 4)
    inp = keras.Input(shape)
    kw = {"data_format": data_format}
    x = layers.Conv2D(6, 3, activation="leaky_relu", name="plain", **kw)(inp)
    x = layers.SeparableConv2D(8, 3, activation="tanh", name="sep", **kw)(x)
    x = layers.Conv2D(6, 3, activation="softmax", name="soft", **kw)(x)
    x = layers.Conv2D(6, 3, groups=2, activation="leaky_relu", name="grouped", **kw)(x)
    model = keras.Model(inp, x, name=f"zoo_{data_format}")
    _seeded(model, seed=3)
    return model


@pytest.mark.parametrize(
    ("layer", "restricted"), [("plain", True), ("sep", True), ("soft", False), ("grouped", False)]
)
def test_a_plain_conv_target_computes_only_the_asked_filters_with_the_same_result(
    monkeypatch, layer, restricted
):
    """The ascent computes only the wanted channels of a plain conv layer: same patterns
    as computing every channel and masking (measured identical bit for bit on TF, torch
    and JAX; the bound allows summation-order noise)."""
    fast_model = _conv_zoo()
    op = fast_model.get_layer(layer)
    assert filters_mod._restricted_conv(op) is restricted
    fast = cc.filter_patterns(fast_model, layer, filters=[5, 1, 3], size=24, batch_size=2)
    fn = filters_mod._ascent_for(fast_model, filters_mod._resolve_target(fast_model, layer))
    assert fn.restricted is restricted

    monkeypatch.setattr(filters_mod, "_restricted_conv", lambda op: False)
    slow_model = _conv_zoo()
    slow = cc.filter_patterns(slow_model, layer, filters=[5, 1, 3], size=24, batch_size=2)
    start = filters_mod.start_image(24, 24, 4)
    assert np.abs(slow - start).max() > 0.1  # the ascent moved: the comparison means something
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-5)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TF on CPU has no channels_first Conv2D")
def test_the_restricted_conv_path_holds_for_channels_first():
    first, last = _conv_zoo("channels_first"), _conv_zoo("channels_last")
    last.set_weights(first.get_weights())
    for layer in ("plain", "sep"):
        a = cc.filter_patterns(first, layer, filters=[0, 5], size=24)
        b = cc.filter_patterns(last, layer, filters=[0, 5], size=24)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TF on CPU has no channels_first Conv2D")
def test_channels_first_model_gives_the_channels_last_patterns_of_its_twin():
    first, last = _convnet("channels_first"), _convnet("channels_last")
    last.set_weights(first.get_weights())  # kernels are (kh, kw, in, out) in both layouts
    a = cc.filter_patterns(first, "c2", filters=[0, 5], size=SIZE)
    b = cc.filter_patterns(last, "c2", filters=[0, 5], size=SIZE)
    assert a.shape == (2, SIZE, SIZE, 3)
    # Same function, other memory layout: float summation order only (measured <= 2e-6).
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": "nope"}, GraphError, r"Received: layer='nope'"),
        ({"layer": "gap"}, GraphError, r"4-D output.*Received: layer='gap'"),
        ({"layer": "head"}, GraphError, r"4-D output.*Received: layer='head'"),
        ({"filters": [12]}, InputError, r"out of range.*Received: filter 12.*\[0, 11\]"),
        ({"filters": [-1]}, InputError, r"out of range.*Received: filter -1"),
        ({"filters": []}, InputError, r"filters is empty"),
        ({"filters": ["a"]}, InputError, r"must be ints"),
        ({"steps": -1}, InputError, r"steps must be an int >= 0. Received: steps=-1"),
        ({"steps": 2.5}, InputError, r"Received: steps=2.5"),
        ({"learning_rate": 0}, InputError, r"Received: learning_rate=0"),
        ({"learning_rate": -1.0}, InputError, r"Received: learning_rate=-1.0"),
        ({"learning_rate": float("nan")}, InputError, r"Received: learning_rate=nan"),
        ({"batch_size": 0}, InputError, r"Received: batch_size=0"),
        ({"input_range": (1.0, 0.0)}, InputError, r"low < high. Received: input_range"),
        ({"size": 0}, InputError, r"Received: size=0"),
        ({"size": (32, 32, 3)}, InputError, r"Received: size=\(32, 32, 3\)"),
        ({"seed": -1}, InputError, r"Received: seed=-1"),
        ({"progress": 3}, InputError, r"progress must be callable"),
        # c1 (valid 3x3) -> 6x6 -> pool 3x3 -> c2 (valid 3x3) -> 1x1: no inner pixels.
        ({"size": 8}, InputError, r"too small for the 2-pixel border.*map \(1, 1\)"),
        # c1 cannot even run on a 2x2 image.
        ({"size": 2}, InputError, r"size is too small for layer 'c2'"),
    ],
)
def test_bad_arguments_raise_a_convviz_error_naming_what_was_received(
    convnet, kwargs, error, match
):
    args = {"layer": "c2", "size": SIZE, "steps": 1} | kwargs
    layer = args.pop("layer")
    with pytest.raises(error, match=match) as info:
        cc.filter_patterns(convnet, layer, **args)
    assert isinstance(info.value, ConvvizError)


def test_a_map_too_small_for_the_border_names_the_layer_and_size(edge_model):
    from keras import layers

    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(2, 3, strides=2, name="strided")(inp)  # 3x3 map
    model = keras.Model(inp, x)
    with pytest.raises(InputError, match=r"layer 'strided'.*Received: map \(3, 3\).*\(8, 8\)"):
        cc.filter_patterns(model, "strided")


# --------------------------------------------------------------------------- dead start
def _dead_start_model(bias: float):  # type: ignore[no-untyped-def]
    """Channel 1 sums its 3x3x3 inputs minus ``bias``: zero (ReLU) on every start in
    [0.4, 0.6] when bias > 27 * 0.6 = 16.2, so its gradient is zero there."""
    import keras

    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(2, 3, activation="relu", name="conv")
    outputs = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[1, 1, :, 0] = 1.0  # channel 0: alive on any start
    kernel[..., 1] = 1.0
    conv.set_weights([kernel, np.array([0.0, -bias], np.float32)])
    return model


def test_a_dead_start_is_restarted_and_said_in_the_note():
    import keras

    from convviz_check.explain.activations import activations

    keras.utils.set_random_seed(0)
    model = _dead_start_model(16.5)
    patterns = cc.filter_patterns(model, "conv", steps=10)
    assert pattern_note(patterns).startswith(
        "filter 1: dead start (its channel is constant on the start image: zero gradient); "
        "restarted from full-range noise"
    )
    fired = activations(model, patterns, "conv")["conv"]
    assert fired[1, ..., 1].max() > 0.0  # the restarted pattern fires its channel
    # Filter 0 is not restarted: the same pattern as a call that asks for it alone.
    alone = cc.filter_patterns(model, "conv", filters=[0], steps=10)
    np.testing.assert_array_equal(alone[0], patterns[0])
    assert pattern_note(alone) == ""


def test_a_channel_no_start_fires_is_named_and_left_at_its_start():
    from convviz_check.explain.filters import start_image

    patterns = cc.filter_patterns(_dead_start_model(100.0), "conv", filters=[1], steps=5)
    np.testing.assert_array_equal(patterns[0], start_image(16, 16, 3, 0))
    assert "no start of 3 restarts fires it" in pattern_note(patterns)
