"""Every CAM method across backends: ``cc.agreement(..., cam_method=, cam_options=)``
and the ``convviz`` fixture's ``assert_backends_agree`` (which forwards them).

The ``crossbackend`` tests (the crossbackend tox env: ``pytest -m crossbackend``) share
the session's pool of warm workers with tests/test_agreement.py
(``tests._worker_ops.shared_pool``): one worker per backend serves all seven methods,
the bundled convnet loaded once in each. A missing backend skips them with a reason
naming it, or fails them where ``CONVVIZ_REQUIRE_BACKENDS=1``. The other tests check
the parent side (bad options refused before any worker starts) and the export route
of the fixture, in every backend env.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convviz_check import cam, examples
from convviz_check.backends import current_backend
from convviz_check.crossbackend import agreement as ag
from convviz_check.crossbackend import pool as pool_mod
from convviz_check.crossbackend.export import load_exported
from convviz_check.errors import ConvvizError, InputError
from convviz_check.explain.cam_methods import METHODS
from tests import _worker_ops

ALL = ("tensorflow", "torch", "jax")
ALL_METHODS = tuple(METHODS)
CONVNET = examples.model_path("convnet")
# Score-CAM on every channel costs 64 masked forwards per image and backend; 16 keep
# the module quick and still weigh most of the map.
OPTIONS: dict[str, dict[str, int]] = {"scorecam": {"max_channels": 16}}
# Fresh scenes (the convnet was trained on seed 1, accepted on seed 20240).
SCENES_SEED, N = 8, 3


require_or_skip = _worker_ops.require_or_skip


@pytest.fixture(scope="module")
def pool(request: pytest.FixtureRequest) -> pool_mod.WorkerPool:
    return _worker_ops.shared_pool(request.config)


@pytest.fixture(scope="module")
def scenes() -> examples.Scenes:
    return examples.make_scenes(N, seed=SCENES_SEED)


@pytest.fixture(scope="module")
def model():
    return examples.load_example_model("convnet")


@pytest.mark.crossbackend
@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_agrees_across_the_three_backends(pool, scenes, model, method) -> None:
    require_or_skip()
    options = OPTIONS.get(method, {})
    report = ag.agreement(
        CONVNET,
        scenes.floats,
        what=("gradcam",),
        pool=pool,
        cam_method=method,
        cam_options=options,
    )
    # The default cross-backend heatmap bounds, unchanged, for every method.
    assert report.passed, str(report)
    assert len(report.pairs) == 3
    # A trained model: meaningful maps of the object's class on every backend (so the
    # metrics measured something, not degenerate-vs-degenerate).
    assert not [n for n in report.notes if "degenerate" in n or "top class" in n], report.notes
    assert f"class per image {scenes.labels.tolist()}" in report.subjects["gradcam"]
    if method != "gradcam":
        assert report.subjects["gradcam"].startswith(f"method {method!r}, ")
    for backend in ALL:
        assert report.results[backend]["gradcam"].attrs["method"] == method
    # The workers computed this method *with its options*: the running backend's worker
    # gives the maps of an in-process cc.cam call (same backend, same float32 graph).
    expected = cam(model, scenes.floats, method=method, **options)
    obtained = report.results[current_backend()]["gradcam"].to_value()
    np.testing.assert_allclose(obtained.heatmap, expected.heatmap, atol=1e-6)


@pytest.mark.crossbackend
def test_an_unknown_method_fails_in_the_workers_listing_the_methods(pool, scenes) -> None:
    require_or_skip(("tensorflow", "jax"))
    with pytest.raises(ConvvizError, match="Unknown CAM method") as info:
        ag.agreement(
            CONVNET,
            scenes.floats,
            what=("gradcam",),
            backends="tensorflow,jax",
            pool=pool,
            cam_method="gradcam+++",
        )
    assert "'gradcam+++'" in str(info.value) and "'scorecam'" in str(info.value)


# --------------------------------------------------------------------------- parent side
class _NoPool:
    """A pool that fails the test if any request reaches it."""

    def request(self, *args, **kwargs):
        raise AssertionError("a worker was asked although the arguments were refused")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"cam_method": 3}, r"cam_method must be a CAM method name\. Received: cam_method=3"),
        ({"cam_options": [("max_channels", 4)]}, r"cam_options must be a mapping"),
        ({"cam_options": {"max_channels": object()}}, r"cam_options must be JSON-ready"),
    ],
)
def test_bad_cam_arguments_are_refused_before_any_worker_starts(kwargs, pattern) -> None:
    images = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(InputError, match=pattern):
        ag.agreement(CONVNET, images, what=("gradcam",), pool=_NoPool(), **kwargs)


def test_numpy_option_values_travel_as_plain_json_numbers() -> None:
    options = ag._cam_options("scorecam", {"max_channels": np.int64(8)})
    assert options == {"max_channels": 8} and type(options["max_channels"]) is int
    assert json.loads(json.dumps(options)) == options


def test_the_fixture_forwards_the_method_and_its_options_to_the_export(
    pytester, tmp_path: Path, scenes, model
) -> None:
    """``convviz.assert_backends_agree(..., cam_method=, cam_options=)`` under
    ``--convviz-export``: the running backend computes that method with its options."""
    out = tmp_path / "export"
    pytester.makepyfile(
        test_fx=f"""
        from convviz_check import examples

        def test_export(convviz):
            images = examples.make_scenes({N}, seed={SCENES_SEED}).floats
            assert convviz.assert_backends_agree(
                {str(CONVNET)!r}, images, what=("gradcam",), cam_method="scorecam",
                cam_options={{"max_channels": 4}},
            ) is None
        """
    )
    pytester.runpytest_inprocess(f"--convviz-export={out}").assert_outcomes(passed=1)
    ((infos, results),) = load_exported(out).values()
    exported = results[current_backend()]["gradcam"]
    assert exported.attrs["method"] == "scorecam"
    expected = cam(model, scenes.floats, method="scorecam", max_channels=4)
    np.testing.assert_allclose(exported.to_value().raw, expected.raw, rtol=1e-6, atol=1e-9)
    # max_channels reached the method: every channel gives another map.
    every = cam(model, scenes.floats, method="scorecam")
    assert not np.allclose(every.raw, expected.raw, rtol=1e-3)
