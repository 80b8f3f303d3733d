"""Dogfooding: the bundled models' activations, filter patterns and Grad-CAM maps are
gated by golden files, the way a user's CI would gate theirs.

The goldens under golden/tests/test_bundled_goldens.py/ were written by the reference
backend (tensorflow); under torch and jax the same files are compared with the
cross-backend bounds of the tolerance table. Rewriting them is a deliberate act
(`pytest --convviz-update=failed ...` under tensorflow, with the reason on the issue).
"""

from __future__ import annotations

import numpy as np
import pytest

import convviz_check as cc
from convviz_check.examples import load_example_model, make_scenes

SCENES = make_scenes(4, seed=20261125)


@pytest.fixture(scope="module")
def convnet():
    return load_example_model("convnet")


@pytest.fixture(scope="module")
def xception():
    pytest.importorskip("keras_hub")
    return load_example_model("xception")


def test_convnet_activations_match_golden(convviz, convnet):
    acts = convviz.activations(convnet, SCENES.floats)
    assert list(acts) == cc.graph.default_activation_layers(convnet)
    convviz.check("activations", acts, dtype="float16", model=convnet)


def test_xception_activations_match_golden_on_a_layer_subset(convviz, xception):
    layers = ["block1_conv1", "block3_sepconv2", "block4_sepconv1"]
    acts = convviz.activations(xception, SCENES.floats[:2], layers=layers)
    convviz.check("activations", acts, dtype="float16", model=xception)


def test_convnet_gradcam_matches_golden(convviz, convnet):
    cam = convviz.gradcam(convnet, SCENES.floats)
    assert not cam.degenerate.any()
    convviz.check("gradcam", cam, model=convnet)


def test_xception_gradcam_matches_golden(convviz, xception):
    cam = convviz.gradcam(xception, SCENES.floats)
    assert not cam.degenerate.any()
    convviz.check("gradcam", cam, model=xception)


def test_convnet_filter_patterns_match_golden(convviz, convnet):
    layer = cc.conv_layers(convnet)[1]
    patterns = convviz.filter_patterns(convnet, layer, filters=[0, 1, 2, 3], seed=7)
    images = np.stack([cc.deprocess_image(p) for p in patterns])
    convviz.check("patterns", images, kind="pattern", model=convnet)
