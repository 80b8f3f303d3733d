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
