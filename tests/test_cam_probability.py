"""A GradCAM's ``probability``: the model's probability of the explained class, from
the head values the CAM computed (checked against a NumPy softmax of the model's own
logits), stored with heatmap goldens, absent (None) in older ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convviz_check import golden
from convviz_check.artifacts import GRADCAM_ARRAYS, PROBABILITY, Artifact
from convviz_check.errors import GoldenError, InputError, StorageError
from convviz_check.explain.probabilities import explained_probability
from convviz_check.heatmaps import Heatmaps
from tests._models import gradcam_result, seeded_weights

IMAGES = np.random.default_rng(7).random((3, 12, 12, 3)).astype(np.float32)


def _model(activation: str, classes: int = 4):
    import keras
    from keras import layers

    x_in = keras.Input((12, 12, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x_in)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    logits = layers.Dense(classes, name="logits")(x)
    out = layers.Activation(activation, name="head")(logits) if activation else logits
    model = keras.Model(x_in, out)
    seeded_weights(model, seed=5, scale=0.8)
    return model


def _logits(model) -> np.ndarray:
    import keras

    inner = keras.Model(model.inputs, model.get_layer("logits").output)
    return np.asarray(inner.predict(IMAGES, verbose=0), np.float64)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_softmax_head_logit_score_gives_softmax_of_the_logits():
    from convviz_check.explain.cam import cam

    model = _model("softmax")
    result = cam(model, IMAGES, layer="conv")
    assert result.score_kind == "logit"
    reference = _softmax(_logits(model))[np.arange(3), result.class_index]
    assert result.probability is not None and result.probability.dtype == np.float32
    np.testing.assert_allclose(result.probability, reference, rtol=1e-5)
    # The top class's probability is the largest of its row, and the rows differ.
    assert np.all(result.probability >= 1 / 4)


def test_output_score_under_softmax_is_the_output_itself():
    from convviz_check.explain.cam import cam

    model = _model("softmax")
    result = cam(model, IMAGES, layer="conv", score="output", class_index=[0, 1, 2])
    output = np.asarray(model.predict(IMAGES, verbose=0), np.float64)
    np.testing.assert_allclose(result.probability, output[np.arange(3), [0, 1, 2]], rtol=1e-5)


def test_sigmoid_head_gives_each_class_sigmoid_and_linear_head_the_softmax():
    from convviz_check.explain.cam import cam

    sigmoid = _model("sigmoid")
    result = cam(sigmoid, IMAGES, layer="conv", class_index=2)
    z = _logits(sigmoid)[:, 2]
    np.testing.assert_allclose(result.probability, 1 / (1 + np.exp(-z)), rtol=1e-5)
    linear = _model("")
    result = cam(linear, IMAGES, layer="conv")
    reference = _softmax(_logits(linear))[np.arange(3), result.class_index]
    np.testing.assert_allclose(result.probability, reference, rtol=1e-5)


def test_callable_target_and_other_heads_have_no_probability():
    from convviz_check.explain.cam import cam

    result = cam(_model("softmax"), IMAGES, layer="conv", class_index=lambda y: y[:, 1])
    assert result.probability is None
    assert explained_probability(np.ones((2, 3)), np.array([0, 1]), "output", "relu") is None
    assert explained_probability(np.ones((2, 3)), np.array([-1, 1]), "logit", "softmax") is None


def test_probability_slices_and_reaches_heatmaps():
    cam = _with_probability(gradcam_result(3))
    assert cam[1].probability.tolist() == pytest.approx([0.5])
    maps = Heatmaps.of(cam)
    assert maps.probability.tolist() == pytest.approx([0.25, 0.5, 0.75])
    assert maps[2].probability.tolist() == pytest.approx([0.75])
    from_mapping = Heatmaps.of({"heatmap": cam.heatmap, "probability": [0.1, 0.2, 0.3]})
    assert from_mapping.probability.dtype == np.float32
    assert Heatmaps.of(cam.heatmap).probability is None
    with pytest.raises(InputError, match=r"probability in \[0, 1\]"):
        Heatmaps.of({"heatmap": cam.heatmap, "probability": [0.1, 2.0, 0.3]})
    with pytest.raises(InputError, match="one value per heatmap"):
        Heatmaps.of({"heatmap": cam.heatmap, "probability": [0.1]})


def _with_probability(cam):
    import dataclasses

    return dataclasses.replace(cam, probability=np.array([0.25, 0.5, 0.75], np.float32))


def test_probability_is_stored_after_the_maps_and_read_back(tmp_path):
    cam = _with_probability(gradcam_result(3))
    artifact = Artifact.from_value(cam)
    assert tuple(artifact.arrays) == (*GRADCAM_ARRAYS, PROBABILITY)
    golden.save(tmp_path / "g", artifact, {"backend": "tensorflow"})
    back = golden.load(tmp_path / "g").artifact.to_value()
    np.testing.assert_array_equal(back.probability, cam.probability)
    with pytest.raises(InputError, match="probability in"):
        Artifact.from_value(dataclasses_replace(cam, probability=np.array([0.1, 0.2])))


def dataclasses_replace(cam, **changes):
    import dataclasses

    return dataclasses.replace(cam, **changes)


def test_golden_without_probability_loads_as_none_with_its_bytes(tmp_path):
    artifact = Artifact.from_value(gradcam_result(2))
    assert PROBABILITY not in artifact.arrays
    golden.save(tmp_path / "old", artifact, {"backend": "tensorflow"})
    loaded = golden.load(tmp_path / "old").artifact
    assert loaded.to_value().probability is None
    assert Heatmaps.of(loaded.to_value()).probability is None
    assert loaded.encode() == artifact.encode()
    side = json.loads((tmp_path / "old.json").read_text())
    assert PROBABILITY not in side["names"]


def test_bad_stored_probability_is_refused(tmp_path):
    arrays = Artifact.from_value(gradcam_result(2)).arrays
    bad = {**arrays, PROBABILITY: np.array([0.5, 1.5], np.float32)}
    with pytest.raises(StorageError, match="probability in"):
        Artifact.decode(bad, "heatmap", "gradcam", {"image_shape": [32, 40]})
    extra = {**arrays, "other": np.ones(2)}
    with pytest.raises(StorageError, match="optionally"):
        Artifact.decode(extra, "heatmap", "gradcam", {"image_shape": [32, 40]})
    assert issubclass(GoldenError, StorageError)


def test_an_output_rounded_past_one_is_clipped_into_a_probability():
    head = np.array([[1.0000001, 0.0], [0.2, 0.8]], np.float32)
    got = explained_probability(head, np.array([0, 1]), "output", "softmax")
    assert got.dtype == np.float32 and got.tolist() == pytest.approx([1.0, 0.8])
    assert float(got.max()) <= 1.0
