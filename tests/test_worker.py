"""The backend worker process and its protocol (convviz_check/worker.py, spoken to by
agreement.WorkerPool).

One session-wide pool (test hooks on) is shared with tests/test_agreement.py: each
worker start costs 11-14 s of imports here, so the tests reuse warm workers and only
the crash and hang tests pay for a restart.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from convviz_check import worker as worker_mod
from convviz_check.errors import BackendError, GraphError, ModelLoadError
from tests import _models

# `convviz_check.agreement` is also the name of the public function (cc.agreement), so
# the module is taken from importlib, never as a package attribute.
ag = importlib.import_module("convviz_check.agreement")

# The worker used by the single-backend tests: the backend this pytest process runs.
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
# A real request answers well within this on the tiny models (seconds); the hang test
# uses a much shorter one.
REQUEST_TIMEOUT_S = 300.0


def tiny_convnet(input_shape: tuple[int, int, int] = (24, 24, 3), seed: int = 0):
    """A tiny convnet whose weights come from NumPy (identical on every backend)."""
    return _models.sequential(input_shape, seed=seed, name="tiny")


@pytest.fixture(scope="session")
def pool(request: pytest.FixtureRequest) -> ag.WorkerPool:
    # Shared with tests/test_agreement.py through config.stash (one pool per session).
    return ag.session_pool(request.config, test_hooks=True, timeout=REQUEST_TIMEOUT_S)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny convnet with NumPy-seeded weights saved as .keras (loaded by the workers)."""
    path = tmp_path_factory.mktemp("agreement_models") / "tiny.keras"
    tiny_convnet().save(path)
    return path


def noisy_factory():
    """A model factory that prints to stdout while building (must not break the protocol)."""
    print("hello from a factory that prints to stdout")
    sys.stdout.flush()
    os.write(1, b"raw bytes on file descriptor 1\n")
    return tiny_convnet()


# -- transport ---------------------------------------------------------------------------
def test_arrays_round_trip_with_slashes_in_names(tmp_path: Path) -> None:
    arrays = {
        "backbone/conv": np.arange(6, dtype=np.float32).reshape(2, 3),
        "c1": np.ones((1, 2, 2, 1), np.float16),
        "flags": np.array([True, False]),
    }
    worker_mod.save_arrays(tmp_path / "a.npz", arrays)
    back = worker_mod.load_arrays(tmp_path / "a.npz")
    assert list(back) == list(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype
        np.testing.assert_array_equal(back[name], value)


def test_load_arrays_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, a0=np.array([{"x": 1}], dtype=object), __names__=np.array(["x"]))
    with pytest.raises(ValueError, match="allow_pickle"):
        worker_mod.load_arrays(path)


def test_test_hook_ops_are_refused_unless_enabled(tmp_path: Path) -> None:
    w = worker_mod.Worker(BACKEND, tmp_path, test_hooks=False)
    with pytest.raises(BackendError, match="test hook"):
        w.handle({"id": 1, "op": "sleep", "params": {"seconds": 0}})


def test_model_key_ignores_nothing_that_changes_the_model() -> None:
    base = {"source": "m.keras", "safe_mode": True, "custom_objects": []}
    assert worker_mod.model_key(base) == worker_mod.model_key(dict(base))
    assert worker_mod.model_key(base) != worker_mod.model_key({**base, "safe_mode": False})
    assert worker_mod.model_key(base) != worker_mod.model_key({**base, "custom_objects": ["m"]})


# -- a live worker -----------------------------------------------------------------------
def test_worker_reports_ready_with_its_backend_and_pinned_threads(pool: ag.WorkerPool) -> None:
    result, arrays = pool.request(BACKEND, "ping")
    assert result["pong"] is True and result["backend"] == BACKEND
    assert arrays == {}
    info = pool.worker(BACKEND).info
    assert info["backend"] == BACKEND
    assert info["versions"]["backend"] == BACKEND
    assert info["threads"]["intra_op"] == pool.threads
    assert result["pid"] == pool.pid(BACKEND) != os.getpid()


def test_worker_computes_activations_like_this_process(
    pool: ag.WorkerPool, tiny_model_path: Path
) -> None:
    import convviz_check as cc

    images = np.random.default_rng(0).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)
    spec = ag.model_spec(tiny_model_path)
    meta, arrays = pool.request(BACKEND, "activations", {"model": spec}, {"images": images})
    here = cc.activations(cc.load_model(tiny_model_path), images)
    assert meta["layers"] == list(here) == list(arrays)
    for name in here:
        np.testing.assert_allclose(arrays[name], here[name], rtol=1e-5, atol=1e-6)


def test_worker_caches_models_by_source_until_evicted(
    pool: ag.WorkerPool, tiny_model_path: Path
) -> None:
    spec = ag.model_spec(tiny_model_path)
    before, _ = pool.request(BACKEND, "load", {"model": spec})
    perturbed = pool.request(BACKEND, "perturb", {"model": spec, "layer": "c2", "scale": 0.5})[0]
    try:
        assert perturbed["layer"] == "c2"
        cached, _ = pool.request(BACKEND, "load", {"model": spec})
        assert cached["fingerprint"] != before["fingerprint"]  # the same cached object
    finally:
        evicted, _ = pool.request(BACKEND, "evict", {"model": spec})
    assert evicted["evicted"] == 1
    reloaded, _ = pool.request(BACKEND, "load", {"model": spec})
    assert reloaded["fingerprint"] == before["fingerprint"]


def test_worker_loads_a_module_factory_that_prints_to_stdout(pool: ag.WorkerPool) -> None:
    spec = ag.model_spec(f"{__name__}:noisy_factory")
    described, _ = pool.request(BACKEND, "load", {"model": spec})
    assert described["conv_layers"] == ["c1", "c2"]
    assert "hello from a factory" in pool.worker(BACKEND).stderr_tail(200)
    assert pool.request(BACKEND, "ping")[0]["pong"] is True


def test_worker_errors_keep_their_class_and_name_the_backend(
    pool: ag.WorkerPool, tiny_model_path: Path
) -> None:
    spec = ag.model_spec(tiny_model_path)
    images = np.zeros((1, 24, 24, 3), np.float32)
    with pytest.raises(GraphError, match=rf"\[{BACKEND} worker, activations\].*no_such_layer"):
        pool.request(
            BACKEND,
            "activations",
            {"model": spec, "layers": ["no_such_layer"]},
            {"images": images},
        )
    with pytest.raises(ModelLoadError, match="no such file"):
        pool.request(BACKEND, "load", {"model": ag.model_spec("/nonexistent/model.keras")})
    assert pool.request(BACKEND, "ping")[0]["pong"] is True  # still serving


def test_hung_worker_times_out_with_its_stderr_and_the_next_request_succeeds(
    pool: ag.WorkerPool,
) -> None:
    pool.request(BACKEND, "ping")
    old_pid = pool.pid(BACKEND)
    with pytest.raises(ag.WorkerError) as info:
        pool.request(BACKEND, "sleep", {"seconds": 120}, timeout=2.0)
    message = str(info.value)
    assert f"{BACKEND} worker (pid {old_pid})" in message
    assert "did not answer within 2 s" in message and "'sleep'" in message
    assert "restarted for the next one" in message
    assert "stderr" in message
    assert pool.pid(BACKEND) is None  # killed
    result, _ = pool.request(BACKEND, "ping")
    assert result["pong"] is True and result["pid"] != old_pid


def test_worker_killed_mid_request_fails_that_request_and_is_restarted(
    pool: ag.WorkerPool,
) -> None:
    pool.request(BACKEND, "ping")
    pid = pool.pid(BACKEND)
    assert pid is not None
    killer = threading.Timer(1.0, os.kill, args=(pid, signal.SIGKILL))
    killer.start()
    try:
        with pytest.raises(ag.WorkerError) as info:
            pool.request(BACKEND, "sleep", {"seconds": 60}, timeout=120)
    finally:
        killer.cancel()
    message = str(info.value)
    assert f"(pid {pid}) died during request 'sleep'" in message
    assert "killed by signal SIGKILL" in message
    result, _ = pool.request(BACKEND, "ping")
    assert result["pong"] is True and result["pid"] != pid


def test_worker_that_cannot_start_reports_its_stderr() -> None:
    # A broken environment makes the worker fail before importing any framework.
    broken = ag.WorkerPool(env={"CONVVIZ_WORKER_SYS_PATH": "not json"}, start_timeout=120)
    try:
        with pytest.raises(ag.WorkerError) as info:
            broken.request(BACKEND, "ping")
    finally:
        broken.close()
    message = str(info.value)
    assert "exited while starting" in message and "exit code 1" in message
    assert "JSONDecodeError" in message


def test_closed_pool_refuses_requests_and_stops_its_workers() -> None:
    spare = ag.WorkerPool()
    spare.close()
    with pytest.raises(BackendError, match="closed"):
        spare.request(BACKEND, "ping")


def test_worker_main_rejects_unknown_backends(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        worker_mod.main(["--backend", "mxnet", "--workdir", "/tmp"])
    assert "invalid choice" in capsys.readouterr().err


def test_protocol_messages_are_json_lines(tmp_path: Path) -> None:
    # The parent relies on one JSON object per line; arrays never inline.
    w = worker_mod.Worker(BACKEND, tmp_path, test_hooks=True)
    reply = w.handle({"id": 3, "op": "sleep", "params": {"seconds": 0}})
    assert json.loads(json.dumps(reply)) == {"result": {"slept": 0.0}}
