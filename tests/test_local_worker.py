"""The running backend computed in this process (convviz_check/crossbackend/local.py)
instead of in a worker: same ops, same artifacts, same errors."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from convviz_check.crossbackend import pool as pool_mod
from convviz_check.crossbackend.compute import compute_gradcam
from convviz_check.crossbackend.local import LocalWorker, running_backend
from convviz_check.crossbackend.requests import artifact_params, model_spec
from convviz_check.errors import GraphError
from convviz_check.models import load_model
from tests import _models, _worker_ops

BACKEND = keras.backend.backend()
IMAGES = np.random.default_rng(3).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("local") / "tiny.keras"
    _models.sequential((24, 24, 3), seed=0, name="tiny").save(path)
    return path


def _gradcam_request(path) -> dict:
    return {**artifact_params(filters=2, filter_steps=3)["gradcam"], "model": model_spec(path)}


def test_running_backend_is_the_imported_keras_one() -> None:
    assert running_backend() == BACKEND


def test_an_in_process_pool_computes_its_own_backend_here(tiny_path) -> None:
    with pool_mod.WorkerPool(in_process=True) as pool:
        assert pool.is_local(BACKEND)
        assert not any(pool.is_local(b) for b in pool_mod.BACKENDS if b != BACKEND)
        _, artifact = pool.request(
            BACKEND, "gradcam", _gradcam_request(tiny_path), {"images": IMAGES}
        )
        worker = pool.worker(BACKEND)
        assert isinstance(worker, LocalWorker) and pool.pid(BACKEND) == os.getpid()
        assert worker.info["in_process"] is True and worker.info["backend"] == BACKEND
        assert [t["op"] for t in worker.timings] == ["gradcam"] and worker.timings[0]["load_s"] > 0
    # The same op on a model loaded here gives the same heatmaps.
    request = {k: v for k, v in _gradcam_request(tiny_path).items() if k != "model"}
    expected = compute_gradcam(load_model(tiny_path), IMAGES, request)
    assert artifact is not None and artifact.kind == expected.kind
    assert sorted(artifact.arrays) == sorted(expected.arrays)
    for key, value in expected.arrays.items():
        np.testing.assert_array_equal(artifact.arrays[key], value, err_msg=key)
    assert artifact.attrs["top_class"] == expected.attrs["top_class"]


def test_plain_and_test_ops_pools_keep_every_backend_in_a_worker() -> None:
    assert not pool_mod.WorkerPool().is_local(BACKEND)
    assert not pool_mod.WorkerPool(in_process=True, ops_module="tests._worker_ops").is_local(
        BACKEND
    )


def test_an_in_process_error_is_the_same_class_and_names_where(tiny_path) -> None:
    request = {**_gradcam_request(tiny_path), "layer": "no_such_layer"}
    with pool_mod.WorkerPool(in_process=True) as pool, pytest.raises(GraphError) as info:
        pool.request(BACKEND, "gradcam", request, {"images": IMAGES})
    assert f"[{BACKEND} in this process, gradcam]" in str(info.value)
    assert "no_such_layer" in str(info.value)


@pytest.mark.crossbackend
def test_in_process_and_worker_artifacts_are_identical(tiny_path, request) -> None:
    shared = _worker_ops.shared_pool(request.config)  # every backend in a worker
    params = artifact_params(filters=2, filter_steps=3)
    with pool_mod.WorkerPool(in_process=True) as local:
        for technique in ("activations", "gradcam", "filters"):
            req = {**params[technique], "model": model_spec(tiny_path)}
            arrays = None if technique == "filters" else {"images": IMAGES}
            _, here = local.request(BACKEND, technique, req, arrays)
            _, there = shared.request(BACKEND, technique, req, arrays)
            assert here is not None and there is not None
            assert here.attrs == there.attrs, technique
            assert sorted(here.arrays) == sorted(there.arrays), technique
            for key in here.arrays:
                np.testing.assert_allclose(
                    here.arrays[key], there.arrays[key], rtol=1e-5, atol=1e-6, err_msg=technique
                )
