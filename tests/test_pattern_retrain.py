"""Filter-pattern goldens under the retrain profile, end to end through the plugin: a
golden written with the check's images keeps a response record and is judged (an
honest retrain passes, a model with one channel's weights shuffled fails); one written
without them is "not judged" with how to re-accept it."""

from __future__ import annotations

import numpy as np
import pytest

TEST = """
import os

import numpy as np

from convviz_check.examples import shortcut


def _model():
    model = shortcut.load(os.environ["MODEL"])
    channel = int(os.environ.get("SHUFFLE", "-1"))
    if channel >= 0:  # one channel's own weights shuffled
        conv = model.get_layer("conv1")
        kernel = np.array(conv.kernel.numpy())
        flat = kernel[..., channel].reshape(-1).copy()
        np.random.default_rng(channel).shuffle(flat)
        kernel[..., channel] = flat.reshape(kernel[..., channel].shape)
        conv.kernel.assign(kernel)
    return model


def test_patterns(convviz):
    patterns = convviz.filter_patterns(_model(), "conv1_relu", steps=30)
    images = shortcut.biased_eval_set(16).floats if os.environ.get("IMAGES") else None
    convviz.check("patterns", patterns, kind="pattern", images=images)
"""


@pytest.fixture
def project(pytester, monkeypatch):  # type: ignore[no-untyped-def]
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {current_backend()}\n")
    pytester.makepyfile(test_patterns=TEST)
    monkeypatch.setenv("MODEL", "honest")
    return pytester


def test_a_pattern_golden_with_its_record_is_judged_across_retrains(project, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("IMAGES", "1")
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    stored = np.load(next(project.path.rglob("patterns.npz")))
    assert "response_samples" in stored.files and "response_self" in stored.files
    monkeypatch.setenv("MODEL", "retrain")  # an honest retrain (another seed)
    project.runpytest("--convviz-profile=retrain").assert_outcomes(passed=1)
    monkeypatch.setenv("MODEL", "honest")
    monkeypatch.setenv("SHUFFLE", "0")
    failed = project.runpytest("--convviz-profile=retrain")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(
        ["*lost a detector: layer 'conv1_relu': golden pattern of channel 0 drives its match*"]
    )


def test_a_pattern_golden_without_a_record_is_not_judged(project, monkeypatch):  # type: ignore[no-untyped-def]
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    stored = np.load(next(project.path.rglob("patterns.npz")))
    assert stored.files == ["value"]  # an older golden's entries: its bytes as before
    monkeypatch.setenv("IMAGES", "1")
    skipped = project.runpytest("--convviz-profile=retrain", "-rs")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(["*without a response record: the golden has none*"])


# A tiny model built in the test: CHANNELS channels at layer "conv"; channel 1 (when
# there are 2 or more) sums its inputs minus BIAS, so that with BIAS > 16.2 no start in
# [0.4, 0.6] fires it (a dead start) and with BIAS 100 no restart does either.
TINY = """
import os

import keras
import numpy as np


def _model():
    channels = int(os.environ.get("CHANNELS", "2"))
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(channels, 3, activation="relu", name="conv")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(conv(inputs)))
    seed = int(os.environ.get("SEED", "0"))
    kernel = np.random.default_rng(seed).normal(0.0, 0.3, (3, 3, 3, channels))
    kernel[..., 1] = 1.0
    bias = np.zeros(channels)
    bias[1] = -float(os.environ.get("BIAS", "0"))
    conv.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return model


def test_patterns(convviz):
    patterns = convviz.filter_patterns(_model(), "conv", filters=[0, 1], steps=5)
    images = np.random.default_rng(1).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    given = images if os.environ.get("IMAGES") else None
    convviz.check("patterns", patterns, kind="pattern", images=given)
"""


@pytest.fixture
def tiny(pytester, monkeypatch):  # type: ignore[no-untyped-def]
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {current_backend()}\n")
    pytester.makepyfile(test_patterns=TINY)
    return pytester


def test_a_failed_pattern_check_says_its_dead_starts(tiny, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BIAS", "100")
    tiny.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    monkeypatch.setenv("SEED", "1")  # filter 0 detects something else: its pattern moves
    failed = tiny.runpytest()
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(
        [
            "*note: the filter-pattern ascent had dead starts: filter 1: dead start (its "
            "channel is constant on the start image: zero gradient); no start of 3 restarts "
            "fires it: the start image is returned"
        ]
    )


def test_a_layer_that_lost_channels_fails_as_a_judged_check(tiny, monkeypatch):  # type: ignore[no-untyped-def]
    import json

    monkeypatch.setenv("IMAGES", "1")
    monkeypatch.setenv("CHANNELS", "4")
    tiny.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    monkeypatch.setenv("CHANNELS", "3")
    failed = tiny.runpytest("--convviz-profile=retrain", "--convviz-results-dir=out")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(
        ["*lost channels: layer 'conv' had 4 channels in the golden, now 3"]
    )
    report = json.loads((tiny.path / "out" / "report.json").read_text())
    (entry,) = [e for e in report["entries"] if e.get("judgment") == "golden"]
    assert entry["status"] == "failed" and entry["profile"] == "retrain"
    assert entry["metrics"]["lost_channels"]["value"] == 1.0
