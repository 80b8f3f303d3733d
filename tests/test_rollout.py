"""Attention rollout (``cam(method="rollout")``) against a NumPy implementation of the
recursion of Abnar & Zuidema (2020) on a tiny model's attention weights, taken from
the model itself (its MultiHeadAttention layers return them as outputs); keras-hub ViT;
the refusals. Runs on the running backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import convviz_check as cc
from convviz_check import GraphError, InputError
from convviz_check.explain import rollout as rollout_module
from tests._models import tiny_deit, tiny_vit

layers = keras.layers


def _images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3)).astype("float32")


def _attention_model(class_token: bool) -> tuple[keras.Model, keras.Model]:
    """16x16 images, 4x4 patches of stride 4 (a 4x4 grid), an optional class token
    (made from the patches' mean), two self-attention layers with residuals, a head on
    the class token (or the tokens' mean). Returns ``(classifier, weights model)``:
    the second outputs both layers' attention weights."""
    x_in = keras.Input((16, 16, 3))
    p = layers.Conv2D(8, 4, strides=4, name="patches")(x_in)
    t = layers.Reshape((16, 8), name="tokens")(p)
    if class_token:
        cls = layers.Dense(8, name="cls_dense")(layers.GlobalAveragePooling1D()(t))
        t = layers.Concatenate(axis=1, name="with_cls")([layers.Reshape((1, 8))(cls), t])
    scores = []
    for i in (1, 2):
        att = layers.MultiHeadAttention(num_heads=2, key_dim=4, name=f"att{i}")
        out, s = att(t, t, return_attention_scores=True)
        scores.append(s)
        t = layers.Add(name=f"res{i}")([t, out])
    pooled = t[:, 0] if class_token else layers.GlobalAveragePooling1D()(t)
    y = layers.Dense(3, name="logits")(pooled)
    model = keras.Model(x_in, y, name="tiny_attention")
    rng = np.random.default_rng(7)
    for w in model.weights:
        w.assign(rng.normal(0.0, 0.6, tuple(w.shape)).astype("float32"))
    return model, keras.Model(x_in, scores)


def _paper_rollout(weights: list[np.ndarray], prefix: int) -> np.ndarray:
    """The recursion written out per image with loops: A_hat = rownorm(0.5 A + 0.5 I)
    with A the heads' mean; rollout_l = A_hat_l @ rollout_(l-1)."""
    n, _, t, _ = weights[0].shape
    maps = []
    for i in range(n):
        rolled = np.eye(t)
        for w in weights:
            a = np.zeros((t, t))
            for head in range(w.shape[1]):
                a += w[i, head] / w.shape[1]
            a = 0.5 * a + 0.5 * np.eye(t)
            for row in range(t):
                a[row] /= a[row].sum()
            rolled = a @ rolled
        flow = rolled[0, prefix:] if prefix else rolled[prefix:, prefix:].mean(axis=0)
        maps.append(flow.reshape(4, 4))
    return np.stack(maps)


@pytest.mark.parametrize("class_token", [True, False], ids=["class-token", "no-class-token"])
def test_rollout_equals_the_papers_recursion(class_token):
    model, weights_model = _attention_model(class_token)
    x = _images(3)
    weights = [np.asarray(keras.ops.convert_to_numpy(w), np.float64) for w in weights_model(x)]
    prefix = 1 if class_token else 0
    want = _paper_rollout(weights, prefix)
    got = cc.cam(model, x, method="rollout")
    assert got.method == "rollout" and got.target == "attention"
    assert got.raw.shape == (3, 4, 4)
    # float32 weights: the eager forward and the weights model differ by ~1e-8 (JAX).
    np.testing.assert_allclose(got.raw, want, rtol=1e-5, atol=1e-6)
    expected = want / want.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got.heatmap, expected, rtol=1e-5, atol=1e-5)
    row = "class token's row" if class_token else "mean over tokens (no class token)"
    assert row in got.note and f"{prefix} prefix token" in got.note
    logits = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_array_equal(got.class_index, np.argmax(logits, axis=1))
    # Chunked forwards give the same maps.
    chunked = cc.cam(model, x, method="rollout", batch_size=2).raw
    np.testing.assert_allclose(chunked, got.raw, rtol=1e-5, atol=1e-7)


def test_rollout_matrix_rows_sum_to_one_and_uniform_attention_stays_uniform():
    uniform = np.full((1, 2, 4, 4), 0.25)
    r = rollout_module.rollout_matrix([uniform, uniform])
    np.testing.assert_allclose(r.sum(axis=-1), 1.0)
    # 0.5 * uniform + 0.5 * I, squared: diagonal (0.625^2 + 3 * 0.125^2).
    np.testing.assert_allclose(r[0, 0, 0], 0.625**2 + 3 * 0.125**2)


def test_rollout_on_keras_hub_vit():
    pytest.importorskip("keras_hub")
    model = tiny_vit(seed=13)
    got = cc.cam(model, _images(2, 32), method="rollout")
    assert got.heatmap.shape == (2, 4, 4) and not got.degenerate.any()
    assert "2 attention layer(s)" in got.note and got.layer.endswith("mha")
    # The class token's row sums to 1 over all tokens; the patches hold part of it.
    assert ((got.raw.sum(axis=(1, 2)) > 0) & (got.raw.sum(axis=(1, 2)) < 1)).all()


def test_rollout_on_keras_hub_vit_without_class_token_averages_the_patch_rows():
    """A mean-pooled head (no class token): the map is the mean of the patch tokens'
    rows of the rollout, read from the model's own attention layers."""
    pytest.importorskip("keras_hub")
    from convviz_check import keras_private

    model = tiny_vit(class_token=False, seed=13)
    x = _images(2, 32)
    got = cc.cam(model, x, method="rollout")
    assert got.heatmap.shape == (2, 4, 4) and not got.degenerate.any()
    assert "mean over tokens (no class token)" in got.note and "0 prefix token" in got.note
    attention = rollout_module.attention_layers(model)
    with keras_private.capture_attention(attention) as captured:
        model(x, training=False)
    weights = [np.asarray(keras.ops.convert_to_numpy(s), np.float64) for s in captured.scores]
    assert weights[0].shape == (2, 2, 16, 16)  # 16 patch tokens, nothing before them
    np.testing.assert_allclose(got.raw, _paper_rollout(weights, 0), rtol=1e-5, atol=1e-6)
    # Every token is a patch, so the averaged rows' mass over the grid is exactly 1.
    np.testing.assert_allclose(got.raw.sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_deit_rollout_averages_the_class_and_distillation_rows():
    """DeiT predicts with the mean of its class and distillation heads, so its map is
    the mean of both tokens' rows of R over the patches (checked against the loops of
    the recursion on the weights the model computes), not the class row alone."""
    pytest.importorskip("keras_hub")
    from convviz_check import keras_private

    # std 1 (not 0.3): peaked attention, so the two tokens' rows differ visibly.
    model = tiny_deit(seed=12, scale=1.0)
    x = _images(2, 32)
    with keras_private.capture_attention(rollout_module.attention_layers(model)) as captured:
        model(x, training=False)
    weights = [np.asarray(keras.ops.convert_to_numpy(s), np.float64) for s in captured.scores]
    n, _, t, _ = weights[0].shape
    assert t == 2 + 16  # class, distillation, 4x4 patches
    want, class_row = [], []
    for i in range(n):
        rolled = np.eye(t)
        for w in weights:
            a = 0.5 * w[i].mean(axis=0) + 0.5 * np.eye(t)
            rolled = (a / a.sum(axis=1, keepdims=True)) @ rolled
        want.append(((rolled[0, 2:] + rolled[1, 2:]) / 2).reshape(4, 4))
        class_row.append(rolled[0, 2:].reshape(4, 4))
    got = cc.cam(model, x, method="rollout")
    assert "class and distillation tokens' rows" in got.note
    np.testing.assert_allclose(got.raw, np.stack(want), rtol=1e-5, atol=1e-6)
    # The distillation row changes the map: the class row alone is another one.
    spread = np.ptp(np.stack(want), axis=(1, 2))
    assert (np.abs(np.stack(class_row) - np.stack(want)).max(axis=(1, 2)) > 0.1 * spread).all()


def test_rollout_map_refuses_rows_beyond_the_prefix_tokens():
    grid = rollout_module.TokenGrid(2, 2, 1, "given")
    with pytest.raises(InputError, match="rows=2"):
        rollout_module.rollout_map(np.eye(5)[None], grid, rows=2)


def test_rollout_refuses_a_model_without_attention():
    x_in = keras.Input((8, 8, 3))
    c = layers.Conv2D(4, 3, name="conv")(x_in)
    model = keras.Model(x_in, layers.Dense(2)(layers.GlobalAveragePooling2D()(c)))
    with pytest.raises(GraphError, match="no keras.layers.MultiHeadAttention.*none"):
        cc.cam(model, _images(1, 8), method="rollout")


def test_rollout_refuses_swin_naming_its_windowed_attention():
    hub = pytest.importorskip("keras_hub")
    backbone = hub.models.SwinTransformerBackbone(
        image_shape=(32, 32, 3), embed_dim=8, depths=(1,), num_heads=(1,), window_size=4
    )
    model = hub.models.SwinTransformerImageClassifier(backbone=backbone, num_classes=3)
    with pytest.raises(GraphError, match="WindowAttention"):
        cc.cam(model, _images(1, 32), method="rollout")


def test_rollout_refuses_a_class_a_layer_and_method_options():
    model, _ = _attention_model(True)
    with pytest.raises(InputError, match="class-agnostic.*'class_index': 1"):
        cc.cam(model, _images(1), method="rollout", class_index=1)
    with pytest.raises(InputError, match="'layer': 'att1'"):
        cc.cam(model, _images(1), method="rollout", layer="att1")
    with pytest.raises(InputError, match="'max_channels': 4"):
        cc.cam(model, _images(1), method="rollout", max_channels=4)
    with pytest.raises(GraphError, match=r"token_grid=\(3, 3, 0\) does not fit"):
        cc.cam(model, _images(1), method="rollout", token_grid=(3, 3, 0))


def test_the_fixture_passes_rollout_and_token_grid_through(convviz):
    model, _ = _attention_model(True)
    x = _images(2)
    direct = cc.cam(model, x, method="rollout")
    via = convviz.cam(model, x, method="rollout")
    np.testing.assert_allclose(via.raw, direct.raw, rtol=1e-6)
    cam = convviz.gradcam(model, x, layer="res1", token_grid=(2, 8, 1))
    assert cam.heatmap.shape == (2, 2, 8) and "token_grid=" in cam.note
