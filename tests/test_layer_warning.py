"""The automatic Grad-CAM layer of an all-convolutional head is a class-score map: it
warns (ClassScoreLayerWarning), the note reaches golden failure messages, and a
project can choose the layer once (ini / flag / marker) for the fixture's shortcuts.
A changed target layer leads the failure message, before the fingerprint verdicts."""

from __future__ import annotations

import re
import warnings

import pytest

from convviz_check.errors import ClassScoreLayerWarning, ConvvizWarning, GraphError
from convviz_check.explain.gradcam import gradcam

# An all-convolutional head as people ship it: features -> a conv with one channel per
# class -> ReLU -> global pooling -> softmax; and the same features under a Dense head.
MODELS = """
import keras
import numpy as np


def _seeded(model, seed):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign((0.5 * rng.standard_normal(tuple(v.shape))).astype("float32"))
    return model


def all_conv(seed=4):
    layers = keras.layers
    x_in = keras.Input((12, 12, 1))
    f = layers.Conv2D(6, 3, padding="same", activation="tanh", name="features")(x_in)
    c = layers.Conv2D(3, 1, name="class_conv")(f)
    r = layers.ReLU(name="class_relu")(c)
    out = layers.Softmax(name="probs")(layers.GlobalAveragePooling2D(name="gap")(r))
    return _seeded(keras.Model(x_in, out, name="all_conv"), seed)


def dense_head(seed=5):
    layers = keras.layers
    x_in = keras.Input((12, 12, 1))
    f = layers.Conv2D(6, 3, padding="same", activation="tanh", name="features")(x_in)
    g = layers.GlobalAveragePooling2D(name="gap")(f)
    out = layers.Dense(3, activation="softmax", name="probs")(g)
    return _seeded(keras.Model(x_in, out, name="dense_head"), seed)


def images(n=2):
    return np.random.default_rng(0).uniform(-1, 1, (n, 12, 12, 1)).astype("float32")
"""


def _models():
    space: dict = {}
    exec(MODELS, space)  # noqa: S102 - the inner projects import the same source
    return space


def test_the_automatic_class_score_layer_warns_with_the_note_and_how_to_choose():
    m = _models()
    model, x = m["all_conv"](), m["images"]()
    with pytest.warns(ClassScoreLayerWarning) as record:
        cam = gradcam(model, x)
    assert cam.layer == "class_relu"
    message = str(record[0].message)
    assert message.startswith(cam.note) and "class-score map" in message
    assert "layer='features'" in message and "convviz_gradcam_layer" in message
    assert issubclass(ClassScoreLayerWarning, ConvvizWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvvizWarning)
        # a layer passed on purpose warns nowhere, even the same class-score map
        assert gradcam(model, x, layer="class_relu").note == cam.note
        assert gradcam(model, x, layer="features").note == ""
        assert gradcam(m["dense_head"](), x).note == ""  # a Dense head: no class scores


def backend() -> str:
    from convviz_check.backends import current_backend

    return current_backend()


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(models_src=MODELS)
    pytester.syspathinsert()
    # the outer run turns ConvvizWarning into errors; an inner project shows them
    pytester.makeini(
        f"[pytest]\nconvviz_golden_backend = {backend()}\n"
        "filterwarnings = always::convviz_check.errors.ConvvizWarning\n"
    )
    return pytester


INNER = """
import pytest
from models_src import all_conv, images


def test_auto(convviz):
    cam = convviz.gradcam(all_conv(), images())
    print("LAYER", cam.layer)


@pytest.mark.convviz(gradcam_layer="class_conv")
def test_marked(convviz):
    print("LAYER", convviz.cam(all_conv(), images()).layer)


def test_explicit(convviz):
    print("LAYER", convviz.gradcam(all_conv(), images(), layer="class_relu").layer)
"""


def _layers(result: pytest.RunResult) -> list[str]:
    return re.findall(r"LAYER (\w+)", result.stdout.str())


def test_without_a_setting_the_warning_reaches_the_pytest_summary(project):
    project.makepyfile(test_inner=INNER)
    result = project.runpytest("-s", "-k", "auto")
    result.assert_outcomes(passed=1)
    assert _layers(result) == ["class_relu"]
    # pointing at the test's line, not at a frame of convviz_check
    result.stdout.fnmatch_lines(["*test_inner.py:*: ClassScoreLayerWarning*class-score map*"])


def test_the_project_layer_ini_flag_marker_and_an_explicit_layer(project):
    project.makeini(
        f"[pytest]\nconvviz_gradcam_layer = features\nconvviz_golden_backend = {backend()}\n"
        "filterwarnings = error::convviz_check.errors.ConvvizWarning\n"
    )
    project.makepyfile(test_inner=INNER)
    result = project.runpytest("-s", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    # ini for the automatic call; the marker over it; a call's layer= over both
    assert _layers(result) == ["features", "class_conv", "class_relu"]
    result = project.runpytest("-s", "--convviz-gradcam-layer=class_conv", "-k", "auto")
    result.assert_outcomes(passed=1)
    assert _layers(result) == ["class_conv"]  # the flag over the ini


def test_a_project_layer_the_model_lacks_is_refused_naming_the_layers_that_fit(project):
    project.makepyfile(test_inner=INNER)
    result = project.runpytest("--convviz-gradcam-layer=featurez", "-k", "auto")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "GraphError" in text and "--convviz-gradcam-layer" in text
    assert "'featurez'" in text and "no layer of that name" in text
    assert "['features', 'class_conv', 'class_relu']" in text
    m = _models()
    from convviz_check.graph.targets import check_chosen_layer

    with pytest.raises(GraphError, match="no spatial map before the head"):
        check_chosen_layer(m["all_conv"](), "gap", "the ini key convviz_gradcam_layer")


LAYER_CHANGE = """
import os
from models_src import all_conv, images


def test_cam(convviz):
    cam = convviz.gradcam(all_conv(), images(), layer=os.environ.get("INNER_LAYER") or None)
    convviz.check("cam", cam)
"""


def test_a_changed_target_layer_leads_the_failure_message(project, monkeypatch):
    project.makepyfile(test_inner=LAYER_CHANGE)
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)  # automatic
    monkeypatch.setenv("INNER_LAYER", "features")
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    lines = [line.lstrip("E ").rstrip() for line in result.outlines if line.startswith("E ")]
    head = lines.index(next(line for line in lines if "does not match its golden" in line))
    assert lines[head + 1] == "target layer changed: 'class_relu' -> 'features'", lines
    assert lines[head + 2].startswith("same model and inputs:"), lines
    assert "the code or a library changed" not in "\n".join(lines)
    assert "target layer changed" not in "\n".join(lines[head + 2 :])
    # and the other way: the automatic class-score layer's note is in the message
    monkeypatch.delenv("INNER_LAYER")
    project.runpytest("--convviz-update=all").assert_outcomes(passed=1)
    monkeypatch.setenv("INNER_LAYER", "features")
    project.runpytest("--convviz-update=all").assert_outcomes(passed=1)
    monkeypatch.delenv("INNER_LAYER")
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "target layer changed: 'features' -> 'class_relu'" in text
    assert "note: Grad-CAM layer 'class_relu' is a class-score map" in text
