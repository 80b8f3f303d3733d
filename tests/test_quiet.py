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
