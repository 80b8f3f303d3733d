"""Token grids: a vision transformer's (batch, tokens, features) layer read as a map.

Grid inference on keras-hub ViT and DeiT built from config (with and without a class
token, with a distillation token), the automatic layer, the explicit ``token_grid=``
option and its errors, and Grad-CAM on a token grid against a NumPy reference whose
gradient is known in closed form. Runs on the running backend.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import convviz_check as cc
from convviz_check import GraphError, InputError
from convviz_check import graph as cc_graph
from convviz_check.errors import ConvvizError
from convviz_check.graph import tokens as graph_tokens
from tests._models import seeded_weights, tiny_deit, tiny_vit


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3)).astype("float32")


def _tokens_model() -> keras.Model:
    """8x8 images cut into 16 tokens of 12 values by a Reshape (no patch embedding to
    infer a grid from), a token-wise Dense, a mean over tokens and a linear head: the
    class score's gradient w.r.t. the ``embed`` tokens is ``W_head[:, c] / 16`` for
    every token, in closed form."""
    x_in = keras.Input((8, 8, 3))
    t = keras.layers.Reshape((16, 12), name="tokens")(x_in)
    e = keras.layers.Dense(6, activation="tanh", name="embed")(t)
    g = keras.layers.GlobalAveragePooling1D(name="pool")(e)
    out = keras.layers.Dense(3, name="logits")(g)
    model = keras.Model(x_in, out, name="token_mlp")
    seeded_weights(model, 3, scale=0.5)
    return model


# ------------------------------------------------------------------ grid inference
def test_vit_with_class_token_grid_and_automatic_layer():
    model = tiny_vit(class_token=True)
    assert graph_tokens.token_layers(model)[-1] == "ln"
    # The class-token head reads token 0 only: the last block's input is the layer.
    assert cc_graph.structure(model) is not None
    assert graph_tokens.auto_token_layer(model) == "transformer_block_1"
    grid = graph_tokens.infer_grid(model, "transformer_block_2", (32, 32))
    assert (grid.height, grid.width, grid.prefix) == (4, 4, 1)
    cam = cc.gradcam(model, _images(2, 32))
    assert cam.layer == "transformer_block_1"
    assert cam.heatmap.shape == (2, 4, 4)
    assert not cam.degenerate.any() and np.isfinite(cam.heatmap).all()
    assert "4x4 grid after 1 prefix token" in cam.note


def test_the_final_norm_of_a_class_token_head_gives_degenerate_maps_which_is_why_it_is_skipped():
    model = tiny_vit(class_token=True)
    cam = cc.gradcam(model, _images(2, 32), layer="ln")
    assert cam.degenerate.all()


def _raw_is_not_zero(cam) -> bool:
    return bool((np.abs(cam.raw).max(axis=(1, 2)) > 1e-3 * np.abs(cam.score)).all())


def test_vit_without_class_token_uses_the_tensor_the_mean_reads():
    model = tiny_vit(class_token=False)
    assert graph_tokens.auto_token_layer(model) == "ln"
    grid = graph_tokens.infer_grid(model, "ln", (32, 32))
    assert (grid.height, grid.width, grid.prefix) == (4, 4, 0)
    cam = cc.cam(model, _images(2, 32), method="hirescam")
    assert cam.layer == "ln" and cam.heatmap.shape == (2, 4, 4)
    assert _raw_is_not_zero(cam)
    # Before the final LayerNormalization (scale-invariant per token) HiResCAM is zero.
    before = cc.cam(model, _images(2, 32), method="hirescam", layer="transformer_block_2")
    assert not _raw_is_not_zero(before)


def test_deit_grid_drops_class_and_distillation_tokens():
    pytest.importorskip("keras_hub")
    model = tiny_deit(seed=12)
    cam = cc.gradcam(model, _images(1, 32))
    grid = graph_tokens.infer_grid(model, cam.layer, (32, 32))
    assert cam.layer == "transformer_block_1"
    assert (grid.height, grid.width, grid.prefix) == (4, 4, 2)
    assert cam.heatmap.shape == (1, 4, 4) and not cam.degenerate.any()


@pytest.mark.parametrize("method", ["gradcam++", "xgradcam", "hirescam", "scorecam", "eigencam"])
def test_every_cam_method_runs_on_the_grid(method):
    cam = cc.cam(tiny_vit(), _images(2, 32), method=method)
    assert cam.heatmap.shape == (2, 4, 4) and cam.method == method
    assert np.isfinite(cam.heatmap).all()


# ------------------------------------------------------------------ token_grid=
def test_ambiguous_grid_is_refused_naming_tokens_image_and_candidates():
    model = _tokens_model()
    assert graph_tokens.auto_token_layer(model) == "embed"
    with pytest.raises(GraphError) as info:
        cc.gradcam(model, _images(1, 8))
    message = str(info.value)
    assert "16 tokens" in message and "8x8" in message
    assert "4x4 + 0 prefix" in message and "3x3 + 7 prefix" in message
    assert "token_grid=" in message


def test_token_grid_errors():
    model = _tokens_model()
    with pytest.raises(GraphError, match=r"token_grid=\(5, 5, 0\) does not fit.*16 tokens"):
        cc.gradcam(model, _images(1, 8), token_grid=(5, 5, 0))
    with pytest.raises(InputError, match=r"Received: token_grid=\(4, 4\)"):
        cc.cam(model, _images(1, 8), token_grid=(4, 4))
    with pytest.raises(InputError, match="token_grid applies to a token layer"):
        cc.gradcam(_conv_model(), _images(1, 8), token_grid=(4, 4, 0))
    assert issubclass(GraphError, ConvvizError) and issubclass(InputError, ConvvizError)


def _conv_model() -> keras.Model:
    x_in = keras.Input((8, 8, 3))
    c = keras.layers.Conv2D(4, 3, name="conv")(x_in)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(c))
    return keras.Model(x_in, out)


def _reference(model: keras.Model, x: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    """Grad-CAM raw maps of the top class in NumPy: A from the model, dy/dA in closed
    form (``W_head[:, c] / tokens``), prefix tokens dropped, the paper's weighting."""
    h, w, prefix = grid
    a = np.asarray(cc_graph.submodel(model, ["embed"]).predict(x, verbose=0), np.float64)
    logits = np.asarray(model.predict(x, verbose=0), np.float64)
    kernel = np.asarray(model.get_layer("logits").kernel, np.float64)  # (6, 3)
    raws = []
    for i, c in enumerate(np.argmax(logits, axis=1)):
        grad = np.broadcast_to(kernel[:, c] / a.shape[1], a[i].shape)  # (tokens, 6)
        maps, grads = a[i, prefix:].reshape(h, w, -1), grad[prefix:].reshape(h, w, -1)
        alpha = grads.mean(axis=(0, 1))
        raws.append(maps @ alpha)
    return np.stack(raws)


@pytest.mark.parametrize("grid", [(4, 4, 0), (3, 3, 7)])
def test_gradcam_on_a_token_grid_equals_the_numpy_reference(grid):
    model, x = _tokens_model(), _images(3, 8, seed=5)
    cam = cc.gradcam(model, x, layer="embed", token_grid=grid)
    want = _reference(model, x, grid)
    assert cam.raw.shape == (3, grid[0], grid[1])
    np.testing.assert_allclose(cam.raw, want, rtol=1e-4, atol=1e-6)
    relu = np.maximum(want, 0.0)
    expected = relu / relu.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(cam.heatmap, expected, rtol=1e-4, atol=1e-5)


def test_explicit_token_layer_after_the_pooling_is_refused():
    model = _tokens_model()
    with pytest.raises(GraphError, match="4-D spatial output"):
        cc.gradcam(model, _images(1, 8), layer="pool", token_grid=(4, 4, 0))


def test_to_map_drops_the_prefix_row_by_row():
    grid = graph_tokens.TokenGrid(2, 3, 1, "test")
    tokens = np.arange(7 * 2, dtype=float).reshape(1, 7, 2)
    out = grid.to_map(tokens)
    assert out.shape == (1, 2, 3, 2)
    np.testing.assert_array_equal(out[0, 1, 0], tokens[0, 4])
    with pytest.raises(GraphError, match="Received: 6 tokens"):
        grid.to_map(tokens[:, :6])


def test_a_project_layer_may_be_a_token_layer():
    from convviz_check.graph.targets import check_chosen_layer

    model = tiny_vit()
    source = "the ini key convviz_gradcam_layer"
    assert check_chosen_layer(model, "transformer_block_2", source) == "transformer_block_2"
    with pytest.raises(GraphError, match="'transformer_block_1', 'transformer_block_2'"):
        check_chosen_layer(model, "get_item_x", source)


def test_a_reduction_inside_the_network_is_not_the_heads_pooling():
    # A class token made from the patches' mean (a GlobalAveragePooling1D before the
    # blocks); the head's pooling is the class token's selection at the end.
    x_in = keras.Input((8, 8, 3))
    t = keras.layers.Reshape((16, 12))(x_in)
    cls = keras.layers.Reshape((1, 12))(keras.layers.GlobalAveragePooling1D()(t))
    t = keras.layers.Concatenate(axis=1, name="with_cls")([cls, t])
    mixed = keras.layers.MultiHeadAttention(2, 4, name="att")(t, t)
    t2 = keras.layers.Add(name="res")([t, mixed])
    model = keras.Model(x_in, keras.layers.Dense(2)(t2[:, 0]))
    assert graph_tokens.token_layers(model)[-1] == "res"
    assert graph_tokens.auto_token_layer(model) == "with_cls"
