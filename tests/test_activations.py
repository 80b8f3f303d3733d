"""Tests of explain/activations.py and explain/inputs.py.

The values are checked against an independent NumPy reference (correlation for
Conv2D, max over windows for MaxPooling2D) computed from the layer weights, not
against Keras' own sub-model.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from PIL import Image

import convviz_check as cc
from convviz_check import backends, graph
from convviz_check.errors import ConvvizError, GraphError, InputError
from convviz_check.explain.activations import (
    activations,
    layer_file_stem,
    save_activation_grids,
)
from convviz_check.explain.inputs import as_image_batch, input_spec, to_model_layout
from convviz_check.render import activation_grid

BACKEND = keras.config.backend()
TF_CHANNELS_FIRST_REASON = "TF on CPU runs Conv2D only in channels-last"


# --- independent NumPy reference ---------------------------------------------------


def _same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    """TF/Keras 'same' padding: output ceil(size / s); the extra pixel goes after."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pad(x: np.ndarray, k: int, s: int, padding: str, value: float) -> np.ndarray:
    if padding == "valid":
        return x
    (t, b), (left, r) = _same_padding(x.shape[1], k, s), _same_padding(x.shape[2], k, s)
    return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """(N, H', W', C, k, k) windows of x (N, H, W, C) with stride s."""
    w = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    return w[:, ::s, ::s]


def ref_conv2d(x, kernel, bias, stride, padding, activation):
    """Cross-correlation (what deep-learning 'convolution' computes), in float64."""
    k = kernel.shape[0]
    win = _windows(_pad(x.astype(np.float64), k, stride, padding, 0.0), k, stride)
    out = np.einsum("nhwcij,ijco->nhwo", win, kernel.astype(np.float64)) + bias
    return np.maximum(out, 0.0) if activation == "relu" else out


def ref_maxpool(x, k, stride, padding):
    # Keras pads max pooling with -inf: padded cells never win the max.
    win = _windows(_pad(x.astype(np.float64), k, stride, padding, -np.inf), k, stride)
    return win.max(axis=(-2, -1))


def _seeded_weights(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(
                [rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()]
            )


def small_convnet(data_format: str = "channels_last") -> keras.Model:
    """conv 'same' relu -> maxpool 2/2 valid -> conv 'valid' linear (stride 2) ->
    maxpool 3/2 'same' -> global pool -> dense."""
    shape = (13, 13, 3) if data_format == "channels_last" else (3, 13, 13)
    df = {"data_format": data_format}
    model = keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="c1", **df),
            keras.layers.MaxPooling2D(2, name="p1", **df),
            keras.layers.Conv2D(4, 2, strides=2, padding="valid", name="c2", **df),
            keras.layers.MaxPooling2D(3, strides=2, padding="same", name="p2", **df),
            keras.layers.GlobalAveragePooling2D(name="gap", **df),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="small",
    )
    _seeded_weights(model, seed=1)
    return model


def reference_activations(model: keras.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Channels-last reference for :func:`small_convnet` (either data format: a
    channels_first kernel has the same (kh, kw, in, out) layout in Keras)."""
    c1, c2 = model.get_layer("c1"), model.get_layer("c2")
    a1 = ref_conv2d(x, *c1.get_weights(), stride=1, padding="same", activation="relu")
    p1 = ref_maxpool(a1, 2, 2, "valid")
    a2 = ref_conv2d(p1, *c2.get_weights(), stride=2, padding="valid", activation=None)
    p2 = ref_maxpool(a2, 3, 2, "same")
    return {"c1": a1, "p1": p1, "c2": a2, "p2": p2}


def _images(n: int, shape=(13, 13, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _assert_matches_reference(obtained: dict, expected: dict) -> None:
    assert list(obtained) == list(expected)
    for name, ref in expected.items():
        got = obtained[name]
        assert got.dtype == np.float32, name
        assert got.shape == ref.shape, name
        scale = float(np.abs(ref).max())
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale, err_msg=name)


# --- values ---------------------------------------------------------------------------


def test_activations_match_numpy_reference_for_conv_and_pool_layers():
    model = small_convnet()
    x = _images(3)
    _assert_matches_reference(activations(model, x), reference_activations(model, x))


def test_activations_are_channels_last_float32_for_channels_first_model():
    if BACKEND == "tensorflow":
        pytest.skip(TF_CHANNELS_FIRST_REASON)
    model = small_convnet("channels_first")
    x = _images(2)  # images are given channels-last; they are transposed for the model
    obtained = activations(model, x)
    _assert_matches_reference(obtained, reference_activations(model, x))
    assert {r.data_format for r in graph.flatten(model).records if r.is_spatial} == {
        "channels_first"
    }


def test_activations_pass_uint8_pixels_unscaled():
    model = small_convnet()
    pixels = np.random.default_rng(3).integers(0, 256, (2, 13, 13, 3), dtype=np.uint8)
    obtained = activations(model, pixels)
    # No guessed preprocessing: the model sees 0..255, exactly as the float copy would.
    _assert_matches_reference(obtained, reference_activations(model, pixels.astype(np.float32)))


def test_activations_accept_one_image_without_batch_axis():
    model = small_convnet()
    x = _images(1)
    single = activations(model, x[0])
    assert {k: v.shape[0] for k, v in single.items()} == {k: 1 for k in single}
    _assert_matches_reference(single, reference_activations(model, x))


@pytest.mark.parametrize("batch_size", [1, 2, 5, 32])
def test_activations_do_not_depend_on_batch_size(batch_size):
    model = small_convnet()
    x = _images(5, seed=4)
    obtained = activations(model, x, batch_size=batch_size)
    # Batched vs one-at-a-time differ at ~1e-8: compare with a bound, and
    # against the reference, so a batch that is dropped or repeated fails.
    _assert_matches_reference(obtained, reference_activations(model, x))


def test_activations_return_requested_layers_in_given_order():
    model = small_convnet()
    x = _images(2)
    obtained = activations(model, x, layers=["p2", "c1", "p2"])
    assert list(obtained) == ["p2", "c1"]
    ref = reference_activations(model, x)
    np.testing.assert_allclose(obtained["p2"], ref["p2"], rtol=1e-5, atol=1e-5)


def test_activations_accept_one_layer_name_as_string():
    model = small_convnet()
    assert list(activations(model, _images(1), layers="c2")) == ["c2"]


def test_activations_reuse_one_cached_multi_output_model_per_layer_set(monkeypatch):
    model = small_convnet()
    x = _images(2)
    extractors = []
    original = graph.submodel

    def spy(m, names):
        extractors.append(original(m, names))
        return extractors[-1]

    monkeypatch.setattr(graph, "submodel", spy)
    activations(model, x)
    compiled = backends.make_forward(extractors[0])
    activations(model, x)
    activations(model, x[:1], batch_size=1)
    assert extractors[1] is extractors[0] and extractors[2] is extractors[0]
    # one compiled forward function per extractor, reused by every call
    assert backends.make_forward(extractors[0]) is compiled
    assert list(activations(model, x, layers=["c1"])) == ["c1"]
    assert extractors[3] is not extractors[0]


# --- default layer sets ----------------------------------------------------------------


def test_default_layers_of_sequential_model_are_2d_conv_and_pool_in_order():
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Activation("relu", name="relu"),
            keras.layers.MaxPooling2D(name="maxpool"),
            keras.layers.SeparableConv2D(6, 3, padding="same", name="sep"),
            keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
            keras.layers.AveragePooling2D(2, name="avgpool"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(2, name="dense"),
        ]
    )
    expected = ["conv", "maxpool", "sep", "dw", "avgpool"]
    acts = activations(model, _images(2, (16, 16, 3)))
    assert list(acts) == expected
    assert [a.ndim for a in acts.values()] == [4] * len(expected)
    assert acts["sep"].shape == (2, 7, 7, 6) and acts["avgpool"].shape == (2, 3, 3, 6)


def _residual_model() -> keras.Model:
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="res_a")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="res_b")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    shortcut = keras.layers.Conv2D(16, 1, name="proj")(x)
    z = keras.layers.SeparableConv2D(16, 3, padding="same", name="sep")(x)
    x = keras.layers.Add(name="add2")([shortcut, z])
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    outputs = keras.layers.Dense(3, name="dense")(x)
    return keras.Model(inputs, outputs, name="residual")


def test_default_layers_of_functional_model_with_residuals():
    model = _residual_model()
    acts = activations(model, _images(2, (12, 12, 3)))
    names = list(acts)
    assert sorted(names) == sorted(["stem", "res_a", "res_b", "pool", "proj", "sep"])
    # depth order: every layer after the layers it depends on
    for before, after in [("stem", "res_a"), ("res_a", "res_b"), ("res_b", "pool")]:
        assert names.index(before) < names.index(after)
    assert names.index("pool") < min(names.index("proj"), names.index("sep"))
    # the residual add is applied before pooling: pool = maxpool(stem + res_b)
    expected_pool = ref_maxpool(acts["stem"] + acts["res_b"], 2, 2, "valid")
    np.testing.assert_allclose(acts["pool"], expected_pool, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_xception():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.XceptionBackbone(
        stackwise_conv_filters=[[4, 8], [16, 16], [32, 32]],
        stackwise_pooling=[False, True, False],
        image_shape=(32, 32, 3),
    )
    model = keras_hub.models.XceptionImageClassifier(backbone=backbone, num_classes=3)
    rng = np.random.default_rng(5)
    for v in model.weights:
        if "variance" in v.path:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
        else:
            v.assign(rng.normal(0.0, 0.3, v.shape).astype(np.float32))
    return model


def test_default_layers_of_keras_hub_task_include_nested_backbone(tiny_xception):
    model = tiny_xception
    x = _images(2, (32, 32, 3), seed=6)
    acts = activations(model, x)
    names = list(acts)
    assert sorted(names) == sorted(
        [
            "block1_conv1",
            "block1_conv2",
            "block2_sepconv1",
            "block2_sepconv2",
            "block2_pool",
            "block2_residual_conv",
            "block3_sepconv1",
            "block3_sepconv2",
        ]
    )
    main_path = ["block1_conv1", "block1_conv2", "block2_sepconv1", "block2_sepconv2"]
    assert [names.index(n) for n in main_path] == sorted(names.index(n) for n in main_path)
    assert "pooler" not in names and "predictions" not in names
    assert acts["block1_conv1"].shape == (2, 15, 15, 4)  # 3x3 stride 2 'valid' on 32
    # the first conv of the nested backbone, recomputed with NumPy from its weights
    kernel = model.backbone.get_layer("block1_conv1").get_weights()[0]
    ref = ref_conv2d(x, kernel, 0.0, stride=2, padding="valid", activation=None)
    np.testing.assert_allclose(acts["block1_conv1"], ref, rtol=1e-5, atol=1e-5)


def test_channels_first_model_default_layers_and_shapes():
    if BACKEND == "tensorflow":
        pytest.skip(TF_CHANNELS_FIRST_REASON)
    model = small_convnet("channels_first")
    spec = input_spec(model)
    assert (spec.shape, spec.data_format) == ((13, 13, 3), "channels_first")
    acts = activations(model, _images(2))
    assert {k: v.shape for k, v in acts.items()} == {
        "c1": (2, 13, 13, 5),
        "p1": (2, 6, 6, 5),
        "c2": (2, 3, 3, 4),
        "p2": (2, 2, 2, 4),
    }
    assert to_model_layout(np.zeros((2, 13, 13, 3), np.float32), model).shape == (2, 3, 13, 13)


# --- bad input ---------------------------------------------------------------------------


def test_unknown_layer_error_lists_the_valid_layers():
    model = small_convnet()
    with pytest.raises(GraphError) as info:
        activations(model, _images(1), layers=["c1", "no_such_layer"])
    message = str(info.value)
    assert "'no_such_layer'" in message
    for valid in ("c1", "p1", "c2", "p2"):
        assert repr(valid) in message


def test_layer_without_4d_output_is_refused():
    model = small_convnet()
    with pytest.raises(GraphError, match=r"'gap'.*no 4-D.*\(None, 4\)"):
        activations(model, _images(1), layers=["gap"])


@pytest.mark.parametrize(
    "images, pattern",
    [
        (np.zeros((13, 13)), r"images\.shape=\(13, 13\).*rank 2"),
        (np.zeros((1, 1, 13, 13, 3)), r"rank 5"),
        (np.zeros((2, 13, 13, 1)), r"images\.shape=\(2, 13, 13, 1\) \(1 channels\).*3 channels"),
        (np.zeros((0, 13, 13, 3)), r"empty.*images\.shape=\(0, 13, 13, 3\)"),
        (np.zeros((2, 12, 13, 3)), r"height.*images\.shape=\(2, 12, 13, 3\).*\(N, 13, 13, 3\)"),
        (np.array([["a"]]), r"numeric"),
    ],
)
def test_bad_images_raise_input_error_naming_what_was_received(images, pattern):
    with pytest.raises(InputError, match=pattern):
        activations(small_convnet(), images)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused(bad):
    x = _images(2)
    x[1, 4, 5, 2] = bad
    with pytest.raises(InputError, match=r"non-finite.*index \(1, 4, 5, 2\)"):
        activations(small_convnet(), x)


def test_non_finite_activations_from_finite_images_warn_and_are_returned():
    x_in = keras.Input((8, 8, 3))
    c1 = keras.layers.Conv2D(2, 3, padding="same", name="c1")(x_in)
    logged = keras.layers.Lambda(lambda t: keras.ops.log(t), name="log")(c1)  # NaN where < 0
    c2 = keras.layers.Conv2D(2, 3, padding="same", name="c2")(logged)
    model = keras.Model(x_in, c2)
    x = np.random.default_rng(0).random((1, 8, 8, 3)).astype(np.float32)
    with pytest.warns(cc.ConvvizWarning, match=r"non-finite activations.*'c2' \(\d+% of its"):
        acts = cc.activations(model, x, layers=["c1", "c2"])
    assert np.isfinite(acts["c1"]).all() and not np.isfinite(acts["c2"]).all()


def test_errors_are_convviz_errors():
    assert issubclass(InputError, ConvvizError) and issubclass(GraphError, ConvvizError)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True])
def test_bad_batch_size_is_refused(batch_size):
    with pytest.raises(InputError, match="batch_size"):
        activations(small_convnet(), _images(1), batch_size=batch_size)


def test_channels_first_shaped_images_get_a_layout_hint():
    if BACKEND == "tensorflow":
        pytest.skip(TF_CHANNELS_FIRST_REASON)
    with pytest.raises(InputError, match="always given channels-last"):
        as_image_batch(np.zeros((1, 3, 13, 13)), small_convnet("channels_first"))


def test_as_image_batch_returns_float32_copy_with_values_unchanged():
    pixels = np.arange(2 * 13 * 13 * 3, dtype=np.uint16).reshape(2, 13, 13, 3) % 256
    batch = as_image_batch(pixels, small_convnet())
    assert batch.dtype == np.float32 and batch.shape == (2, 13, 13, 3)
    np.testing.assert_array_equal(batch, pixels.astype(np.float32))


def test_public_name_is_the_same_function():
    assert cc.activations is activations


# --- grids on disk ------------------------------------------------------------------------


def test_save_activation_grids_writes_one_png_per_layer(tmp_path):
    model = small_convnet()
    acts = activations(model, _images(2))
    paths = save_activation_grids(acts, tmp_path / "grids", image_index=1, images_per_row=4)
    assert [p.name for p in paths] == ["00_c1.png", "01_p1.png", "02_c2.png", "03_p2.png"]
    for path, act in zip(paths, acts.values(), strict=True):
        stored = np.asarray(Image.open(path))
        np.testing.assert_array_equal(stored, activation_grid(act[1], images_per_row=4))


@pytest.mark.parametrize(
    "name, stem",
    [
        ("conv2d", "conv2d"),
        ("xception_backbone/block1_conv1", "xception_backbone_block1_conv1"),
        ("conv:1", "conv_1"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "layer"),
        ("a b\n\x00c", "a_b_c"),
    ],
)
def test_layer_file_stem_is_safe(name, stem):
    assert layer_file_stem(name) == stem
    assert "/" not in stem and not stem.startswith(".")


def test_save_activation_grids_keeps_colliding_names_apart(tmp_path):
    act = _images(1, (4, 4, 2))
    paths = save_activation_grids({"a/b": act, "a_b": act}, tmp_path)
    assert len({p.name for p in paths}) == 2 and all(p.parent == tmp_path for p in paths)


def test_save_activation_grids_refuses_image_index_out_of_range(tmp_path):
    with pytest.raises(InputError, match=r"image_index=2.*1 image"):
        save_activation_grids({"c1": _images(1, (4, 4, 2))}, tmp_path, image_index=2)


# --- the bundled example convnet ---------------------------------------------------------


def _ref_bn(x: np.ndarray, layer) -> np.ndarray:
    gamma, beta, mean, var = layer.get_weights()
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def test_bundled_convnet_activations_match_numpy_reference_through_bn_and_relu():
    from convviz_check import examples

    model = examples.load_example_model("convnet")
    x = examples.make_scenes(2, seed=11).floats
    acts = activations(model, x)
    assert list(acts) == ["conv1", "pool1", "conv2", "pool2", "conv3", "pool3", "conv4"]
    h = x
    for block in (1, 2, 3, 4):
        conv = model.get_layer(f"conv{block}")
        kernel, *bias = conv.get_weights()  # no bias where BN follows
        ref_conv = ref_conv2d(h, kernel, sum(bias, 0.0), 1, "same", activation=None)
        got = acts[f"conv{block}"]
        np.testing.assert_allclose(
            got, ref_conv, rtol=1e-4, atol=1e-4 * np.abs(ref_conv).max(), err_msg=f"conv{block}"
        )
        # continue the reference from its own values, not from Keras' output
        h = np.maximum(_ref_bn(ref_conv, model.get_layer(f"conv{block}_bn")), 0.0)
        if block < 4:
            h = ref_maxpool(h, 2, 2, "valid")
            np.testing.assert_allclose(
                acts[f"pool{block}"], h, rtol=1e-4, atol=1e-4 * np.abs(h).max(), err_msg="pool"
            )


def test_default_layers_fall_back_to_every_map_without_plain_convolutions():
    """Convolutions inside a custom layer (keras-hub MiT, MobileNet blocks) are not
    graph layers: the default set is then every spatial map before the head's pooling."""

    class Block(keras.layers.Layer):
        def build(self, input_shape):
            self.conv = keras.layers.Conv2D(4, 3, padding="same")
            self.conv.build(input_shape)

        def call(self, x):
            return self.conv(x)

    x_in = keras.Input((8, 8, 3))
    b = Block(name="block")(x_in)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(b)
    model = keras.Model(x_in, keras.layers.Dense(2, name="head")(g))
    assert graph.default_activation_layers(model) == ["block"]
    acts = activations(model, _images(1, (8, 8, 3)))
    assert list(acts) == ["block"] and acts["block"].shape == (1, 8, 8, 4)
