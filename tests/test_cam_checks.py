"""Every CAM method's result goes through the checks made for Grad-CAM unchanged:
``localization.assert_localized`` and the golden check (``checks.run_check``, and the
``convviz`` fixture through pytester), on the bundled convnet.

Runs in every backend env (``KERAS_BACKEND=tensorflow|torch|jax``); a few scenes only.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from convviz_check import cam, examples, golden
from convviz_check.artifacts import Artifact
from convviz_check.backends import current_backend
from convviz_check.checks import CheckRequest, Settings, attach_boxes, run_check
from convviz_check.explain.cam_methods import METHODS
from convviz_check.localization import assert_localized, measure
from convviz_check.types import Box, GradCAM

ALL_METHODS = tuple(METHODS)
# Score-CAM on every channel costs 64 forwards per image; 16 keeps the module fast.
OPTIONS: dict[str, dict[str, int]] = {"scorecam": {"max_channels": 16}}
# Fresh scenes (the convnet was trained on seed 1) with large objects (24-27 px): every
# method puts its peak in the box and 0.50-0.60 of its mass there (measured, TF); the
# boxes cover 14-18% of the image, so 0.3 is twice what a map spread evenly would get.
SEED, N = 8, 4
MIN_ENERGY = 0.3


@pytest.fixture(scope="module")
def scenes() -> examples.Scenes:
    return examples.make_scenes(N, seed=SEED)


@pytest.fixture(scope="module")
def cams(scenes: examples.Scenes) -> dict[str, GradCAM]:
    model = examples.load_example_model("convnet")
    return {m: cam(model, scenes.floats, method=m, **OPTIONS.get(m, {})) for m in ALL_METHODS}


def _far_corner(box: Box, size: int = 64, side: int = 16) -> Box:
    """The image corner (``side`` px square) farthest from ``box``: a target the
    object is not in."""
    corners = [Box(y, x, y + side, x + side) for y in (0, size - side) for x in (0, size - side)]
    cy, cx = (box.y0 + box.y1) / 2, (box.x0 + box.x1) / 2
    return max(corners, key=lambda c: (c.y0 + side / 2 - cy) ** 2 + (c.x0 + side / 2 - cx) ** 2)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_localizes_the_object_through_assert_localized(cams, scenes, method):
    result = cams[method]
    assert result.method == method and not result.degenerate.any()
    np.testing.assert_array_equal(result.class_index, scenes.labels)
    for i, boxes in enumerate(scenes.boxes):
        assert_localized(result[i], boxes[0], min_energy=MIN_ENERGY)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_fails_assert_localized_on_a_box_without_the_object(cams, scenes, method):
    result = cams[method]
    for i, boxes in enumerate(scenes.boxes):
        wrong = _far_corner(boxes[0])
        assert not measure(result[i], wrong).pointing
        with pytest.raises(AssertionError, match="pointing game missed") as info:
            assert_localized(result[i], wrong, min_energy=MIN_ENERGY)
        assert "energy in target" in str(info.value)


# --------------------------------------------------------------------------- goldens
REL = PurePosixPath("tests/test_cam_checks.py/test_golden/cam")


def _request(result: GradCAM, boxes: list[Box], **kwargs) -> CheckRequest:
    artifact = attach_boxes(Artifact.from_value(result), boxes)
    return CheckRequest(name="cam", rel=REL, obtained=artifact, backend=current_backend(), **kwargs)


def _settings(root: Path, **kwargs) -> Settings:
    return Settings(golden_dir=root / "golden", reference=current_backend(), **kwargs)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_writes_and_passes_a_golden_check_and_keeps_its_method(
    cams, scenes, method, tmp_path
):
    boxes = [b[0] for b in scenes.boxes]
    written = run_check(_settings(tmp_path, update="missing"), _request(cams[method], boxes), None)
    assert written.status == "written", written.message
    stored = golden.load(tmp_path / "golden" / REL)
    assert stored.sidecar["method"] == method and stored.sidecar["target"] == "class:top"
    assert stored.artifact.to_value().method == method
    for profile in ("exact", "retrain"):
        again = run_check(_settings(tmp_path), _request(cams[method], boxes, profile=profile), None)
        assert again.status == "passed", (profile, again.message)
    # Another method's maps of the same images are another explanation, never "close".
    other = ALL_METHODS[(ALL_METHODS.index(method) + 1) % len(ALL_METHODS)]
    changed = run_check(_settings(tmp_path), _request(cams[other], boxes), None)
    assert not changed.ok
    assert f"method changed: golden {method}, obtained {other}" in changed.message


def test_the_fixture_checks_and_localizes_every_method(pytester, monkeypatch) -> None:
    """``convviz.cam`` + ``convviz.check`` + ``convviz.assert_localized``: written in
    an update run, passed in the next, failed when the method changes."""
    monkeypatch.delenv("CI", raising=False)  # CI refuses --convviz-update; not tested here
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {current_backend()}\n")
    pytester.makepyfile(
        test_fx=f"""
        import os

        import pytest

        from convviz_check import examples

        METHODS = {ALL_METHODS!r}
        OPTIONS = {OPTIONS!r}
        SCENES = examples.make_scenes({N}, seed={SEED})
        MODEL = examples.load_example_model("convnet")

        @pytest.mark.parametrize("method", METHODS)
        def test_method(convviz, method):
            used = os.environ.get("SWAP_METHOD") or method
            result = convviz.cam(MODEL, SCENES.floats, method=used, **OPTIONS.get(used, {{}}))
            boxes = [b[0] for b in SCENES.boxes]
            convviz.check("cam", result, boxes=boxes)
            for i, box in enumerate(boxes):
                convviz.assert_localized(result[i], box, min_energy={MIN_ENERGY})
        """
    )
    pytester.runpytest_inprocess("--convviz-update=missing").assert_outcomes(
        passed=len(ALL_METHODS)
    )
    assert len(list(pytester.path.joinpath("golden").rglob("*.npz"))) == len(ALL_METHODS)
    pytester.runpytest_inprocess().assert_outcomes(passed=len(ALL_METHODS))
    monkeypatch.setenv("SWAP_METHOD", "gradcam")
    swapped = pytester.runpytest_inprocess()
    swapped.assert_outcomes(passed=1, failed=len(ALL_METHODS) - 1)
    swapped.stdout.fnmatch_lines(["*method changed: golden layercam, obtained gradcam*"])
