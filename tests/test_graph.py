import keras
import numpy as np
import pytest

from convviz_check import GraphError, conv_layers, graph
from tests import _models


def test_sequential_layers_in_depth_order():
    model = _models.sequential()
    assert conv_layers(model) == ["c1", "c2"]
    assert graph.default_activation_layers(model) == ["c1", "p1", "c2"]
    assert graph.spatial_layers(model) == ["c1", "p1", "c2"]
    assert graph.head_activation(model) == "softmax"


def test_residual_model_lists_every_conv():
    model = _models.residual()
    assert conv_layers(model) == ["first", "mid", "after"]


def test_nested_model_names_collisions_by_path_and_flattens_backbone():
    model = _models.nested_with_rescaling()
    names = graph.flatten(model).names
    assert names[0] == "rescale"
    assert "backbone/conv" in names and "outer/conv" in names  # "conv" collides
    assert "conv_b" in names and "pool" in names  # unique names stay plain
    assert conv_layers(model) == ["backbone/conv", "conv_b", "outer/conv"]


def test_flattened_outputs_equal_the_original_model():
    model = _models.nested_with_rescaling()
    x = np.random.default_rng(0).uniform(0, 255, (2, 12, 12, 3)).astype("float32")
    head = graph.flatten(model).head_record().name
    replayed = graph.submodel(model, [head]).predict_on_batch(x)
    np.testing.assert_allclose(replayed, model.predict_on_batch(x), rtol=1e-6)


def test_submodel_returns_inner_layer_outputs_and_is_cached():
    model = _models.nested_with_rescaling()
    sub = graph.submodel(model, ["conv_b"])
    assert sub is graph.submodel(model, ["conv_b"])
    x = np.random.default_rng(1).uniform(0, 255, (1, 12, 12, 3)).astype("float32")
    backbone = model.get_layer("backbone")
    expected = backbone.predict_on_batch(x / 255.0)
    np.testing.assert_allclose(sub.predict_on_batch(x), expected, rtol=1e-5, atol=1e-6)


def test_submodel_stops_at_its_last_wanted_layer():
    """Layers after the wanted one are not run (eager torch would run them otherwise)."""
    calls = []

    class Counting(keras.layers.Layer):
        def call(self, x):
            calls.append(1)
            return x

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="early")(inp)
    x = Counting(name="late")(x)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D(name="gap")(x))
    x_np = np.ones((1, 8, 8, 3), "float32")
    early, late = graph.submodel(model, ["early"]), graph.submodel(model, ["late"])
    calls.clear()  # flattening the graph ran every layer symbolically once
    early(x_np)
    assert calls == []
    late(x_np)
    assert calls  # the counter does count


def test_layer_input_model_returns_what_the_layer_receives():
    model = _models.nested_with_rescaling()
    x = np.random.default_rng(2).uniform(0, 255, (1, 12, 12, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(graph.layer_input_model(model, "conv_b")(x))
    names = graph.flatten(model).names
    before = names[names.index("conv_b") - 1]  # conv_b's input is the previous layer's output
    want = keras.ops.convert_to_numpy(graph.submodel(model, [before])(x))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_keras_hub_task_is_flattened_through_its_backbone():
    pytest.importorskip("keras_hub")
    model = _models.tiny_xception()
    names = graph.flatten(model).names
    assert names[0] == "block1_conv1"
    assert names[-2:] == ["output_dropout", "predictions"] or names[-1] == "predictions"
    assert "pooler" in names
    assert graph.spatial_layers(model)[-1].startswith("block")
    assert graph.head_activation(model) == "linear"


def test_unknown_layer_lists_valid_ones():
    model = _models.sequential()
    with pytest.raises(GraphError, match=r"Received: layer='nope'.*'c1'"):
        graph.submodel(model, ["nope"])


def test_subclassed_model_is_refused():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(GraphError, match="Subclassed models.*Sub"):
        graph.flatten(Sub())


def test_unbuilt_sequential_is_refused():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(GraphError, match="not built"):
        graph.flatten(model)


def test_rewire_adds_zero_input_without_changing_outputs():
    model = _models.residual()
    rw = graph.rewire(model, "mid")
    x = np.random.default_rng(2).normal(size=(2, 12, 12, 3)).astype("float32")
    zero = np.zeros((2, *rw.zero_shape), "float32")
    a, head = rw.model.predict_on_batch([x, zero])
    np.testing.assert_allclose(head, model.predict_on_batch(x), rtol=1e-5, atol=1e-7)
    mid = graph.submodel(model, ["mid"]).predict_on_batch(x)
    np.testing.assert_allclose(a, mid, rtol=1e-5, atol=1e-7)
    assert rw.head_kind == "output"


def test_rewire_bypasses_softmax_for_logits():
    model = _models.residual()
    rw = graph.rewire(model, "mid", bypass_head_activation=True)
    x = np.random.default_rng(3).normal(size=(2, 12, 12, 3)).astype("float32")
    _, logits = rw.model.predict_on_batch([x, np.zeros((2, *rw.zero_shape), "float32")])
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, model.predict_on_batch(x), rtol=1e-5, atol=1e-6)
    assert rw.head_kind == "logit"
    # the original model keeps its softmax
    assert graph.head_activation(model) == "softmax"


def test_rewire_refuses_unbypassable_head():
    x_in = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(2, 3, name="c")(x_in)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(2, activation="relu", name="head")(h)
    model = keras.Model(x_in, out)
    with pytest.raises(GraphError, match="Received: final activation 'relu'"):
        graph.rewire(model, "c", bypass_head_activation=True)


def test_rewire_refuses_the_head_itself():
    model = _models.sequential()
    with pytest.raises(GraphError, match="output layer"):
        graph.rewire(model, "head")


def test_records_know_their_parents_across_nested_model_boundaries():
    model = _models.nested_with_rescaling()
    flat = graph.flatten(model)
    index = {r.name: i for i, r in enumerate(flat.records)}
    rescale = flat.record("rescale")
    assert rescale.parents == () and rescale.reads_input
    # The nested backbone's first layer reads the outer Rescaling's output.
    assert flat.record("backbone/conv").parents == (index["rescale"],)
    assert not flat.record("backbone/conv").reads_input
    assert flat.record("outer/conv").parents == (index["conv_b"],)


def test_nested_sequential_stem_keeps_the_graph_connected():
    """A Normalization before a nested Sequential stem (ConvNeXt's layout): the
    normalization still feeds the head, and is found as the leading preprocessing."""
    from convviz_check.explain.inputs import infer_input_range
    from convviz_check.graph import targets as graph_targets

    stem = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 2, strides=2, name="stem_conv")],
        name="stem",
    )
    x_in = keras.Input((8, 8, 3))
    x = keras.layers.Normalization(mean=127.5, variance=127.5**2, name="prestem")(x_in)
    x = stem(x)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(x_in, keras.layers.Dense(2, name="head")(g))
    structure = graph_targets.structure(model)
    names = graph.flatten(model).names
    assert structure.feeds_head[names.index("prestem")]
    assert graph_targets.head_pooling_input(model) == "stem_conv"
    assert infer_input_range(model) == (0.0, 255.0)


def test_map_rule_on_a_pooled_head_with_a_1x1_convolution():
    """MobileNet's head: GAP(keepdims) -> Conv2D 1x1 -> Reshape. The 1x1 convolution is
    4-D but after the head's pooling; the automatic layer is the map before it."""
    from convviz_check.graph import targets as graph_targets

    x_in = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(4, 3, strides=2, name="features")(x_in)
    g = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(a)
    c = keras.layers.Conv2D(3, 1, name="preds")(g)
    out = keras.layers.Activation("softmax", name="act")(keras.layers.Reshape((3,))(c))
    model = keras.Model(x_in, out)
    assert graph_targets.head_pooling_input(model) == "features"
    assert graph_targets.map_layers(model) == ["features"]
    assert graph.default_activation_layers(model) == ["features"]
    assert graph.spatial_layers(model) == ["features", "gap", "preds"]


def test_short_list_abbreviates_long_layer_lists():
    from convviz_check.graph.targets import short_list

    assert short_list(["a", "b"]) == "['a', 'b']"
    long = short_list([f"l{i}" for i in range(100)], limit=8)
    assert long.startswith("['l0', 'l1']") and "'l99'" in long and "(100 layers)" in long
