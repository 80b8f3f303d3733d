"""A quiet terminal: the package's own calls emit no DeprecationWarning.

The project's pytest configuration hides Keras' deprecation warnings (they are not
ours to fix), so this test turns every warning back on and attributes each
DeprecationWarning to the innermost frame of the package on the stack when it was
raised: a warning raised inside Keras *because of a call we make* counts.
"""

from __future__ import annotations

import traceback
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

PACKAGE_DIR = str(Path(__file__).resolve().parents[1] / "convviz_check")


def _our_frame() -> traceback.FrameSummary | None:
    frames = [f for f in traceback.extract_stack() if f.filename.startswith(PACKAGE_DIR)]
    return frames[-1] if frames else None


def _run_with_deprecations_recorded(work: Any) -> list[str]:
    found: list[str] = []

    def hook(message: Any, category: type, filename: str, lineno: int, *args: Any) -> None:
        frame = _our_frame()
        if issubclass(category, DeprecationWarning) and frame is not None:
            found.append(f"{frame.filename}:{frame.lineno}: {str(message)[:120]}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = hook
        work()
    return found


def test_the_attribution_sees_a_warning_raised_below_a_package_call(monkeypatch):
    import convviz_check.storage as storage

    def noisy(data: bytes) -> None:
        warnings.warn("planted", DeprecationWarning, stacklevel=1)

    monkeypatch.setattr(storage, "_write_chunks", lambda f, data: noisy(data))
    found = _run_with_deprecations_recorded(
        lambda: storage.write_bytes(Path(__import__("tempfile").mkdtemp()) / "x", b"1")
    )
    assert len(found) == 1 and "storage.py" in found[0]


def test_the_package_calls_on_the_bundled_models_emit_no_deprecation_warning(tmp_path):
    import convviz_check as cc
    from convviz_check import checks
    from convviz_check.artifacts import Artifact
    from convviz_check.backends import current_backend
    from convviz_check.examples import load_example_model, make_scenes, model_path

    images = make_scenes(2, seed=5).floats

    def work() -> None:
        for name in ("convnet", "xception"):
            model = load_example_model(name)
            cc.model_fingerprint(model)
            acts = cc.activations(model, images)
            cam = cc.gradcam(model, images)
            cc.filter_patterns(model, cc.conv_layers(model)[1], filters=[0], steps=2)
            cc.compare(cam, cam, "heatmap")
            settings = checks.Settings(tmp_path / name, current_backend(), "missing")
            for check, value in (("cam", cam), ("acts", acts)):
                request = checks.CheckRequest(
                    check, PurePosixPath(name, check), Artifact.from_value(value),
                    current_backend(), inputs=images,
                )  # fmt: skip
                assert checks.run_check(settings, request, None).status == "written"
        cc.load_model(model_path("convnet"))
        np.asarray(cc.overlay(make_scenes(1, seed=1).images[0], cam[0]))

    assert _run_with_deprecations_recorded(work) == []


NOISY_TEST = """
import logging

import numpy as np


def test_noisy():
    import keras  # TensorFlow's start-up logs land in this test's capture

    import convviz_check as cc

    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D(),
         keras.layers.Dense(3)]
    )
    for n, k in ((1, 0), (2, 1), (3, 2)):
        cc.gradcam(model, np.random.default_rng(n).random((n, 8, 8, 1), np.float32), class_index=k)
    # what tf.function prints on a retrace (planted: it depends on the call pattern)
    # (the text is built here: pytest prints this source with the failure)
    logging.getLogger("tensorflow").warning("5 calls " + "triggered tf." + "function retracing")
    import sys
    print("the test's own line", file=sys.stderr)
    assert False
"""


def test_a_failing_test_shows_no_tensorflow_start_up_logs_nor_retracing_warnings(pytester):
    import os
    import subprocess
    import sys

    pytester.makepyfile(test_noisy=NOISY_TEST)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_noisy.py"],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = run.stdout + run.stderr
    assert "1 failed" in out, out[-3000:]
    assert "the test's own line" in out  # the test's own stderr is kept
    noises = ("absl::InitializeLog", "oneDNN custom operations", "cuda_", "triggered tf.function")
    for noise in noises:
        assert noise not in out, (noise, out[-3000:])
    # a user's own level is kept: the plugin sets a default only
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    code = "import os, convviz_check.plugin; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert shown.stdout.strip() == "0"
    del env["TF_CPP_MIN_LOG_LEVEL"]
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert shown.stdout.strip() == "2"
