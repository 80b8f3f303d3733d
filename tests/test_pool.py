"""Backend worker processes, parent side (convviz_check/crossbackend/pool.py).

The live tests run a worker of the backend this pytest process runs (one backend: no
``crossbackend`` marker) from the session pool shared with the other cross-backend test
modules (``tests._worker_ops.shared_pool``; its workers also serve the test ops of
tests/_worker_ops.py). Only the crash and hang tests pay for a restart.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from convviz_check.crossbackend import pool as pool_mod
from convviz_check.crossbackend.pool import WorkerPool, WorkerProcess
from convviz_check.errors import (
    BackendError,
    GraphError,
    InputError,
    MissingBackendError,
    WorkerError,
)
from tests import _worker_ops

ALL = ("tensorflow", "torch", "jax")
# The worker used by the single-backend tests: the backend this pytest process runs.
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


@pytest.fixture(scope="session")
def pool(request: pytest.FixtureRequest) -> WorkerPool:
    return _worker_ops.shared_pool(request.config)


# -- backend availability ----------------------------------------------------------------
def test_parse_backends_keeps_order_and_refuses_unknown_or_single() -> None:
    assert pool_mod.parse_backends("jax, torch") == ("jax", "torch")
    assert pool_mod.parse_backends(["torch", "torch", "jax"]) == ("torch", "jax")
    assert pool_mod.parse_backends(None) == ALL
    for bad in ("tensorflow", []):
        with pytest.raises(InputError, match="at least two distinct backends.*Received: backends="):
            pool_mod.parse_backends(bad)
    # A misspelt name is named as such, not counted as a missing second backend.
    with pytest.raises(InputError, match=r"Unknown backend 'mxnet'\. Received"):
        pool_mod.parse_backends("tensorflow,mxnet")
    with pytest.raises(InputError, match=r"Unknown backend 'pytorch' \(did you mean 'torch'\?\)"):
        pool_mod.parse_backends("tensorflow,pytorch,jax")


def test_missing_backend_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # Independent of what this env has installed: only jax is "missing".
    installed = object()
    monkeypatch.setattr(
        pool_mod.importlib.util, "find_spec", lambda name: None if name == "jax" else installed
    )
    assert pool_mod.missing_backends(ALL) == ["jax"]
    with pytest.raises(MissingBackendError, match=r"backend\(s\) jax, not installed"):
        pool_mod.require_backends(ALL)
    pool_mod.require_backends(("tensorflow", "torch"))  # nothing missing: no error


def test_a_missing_backend_is_refused_before_a_worker_starts(monkeypatch) -> None:
    monkeypatch.setattr(pool_mod, "missing_backends", lambda backends: list(backends))
    spare = WorkerPool()
    try:
        with pytest.raises(MissingBackendError, match=f"needs backend\\(s\\) {BACKEND}"):
            spare.request(BACKEND, "ping")
        assert spare.pid(BACKEND) is None
    finally:
        spare.close()


# -- the command line -----------------------------------------------------------------------
def test_worker_command_runs_the_package_module_with_the_ops_module(tmp_path) -> None:
    plain = WorkerProcess("jax", threads=2, start_timeout=1.0)
    assert plain.command(tmp_path) == [
        sys.executable,
        "-m",
        "convviz_check.crossbackend.worker",
        "--backend",
        "jax",
        "--threads",
        "2",
        "--workdir",
        str(tmp_path),
    ]
    with_ops = WorkerPool(ops_module="tests._worker_ops", threads=3).worker("torch")
    assert with_ops.command(tmp_path)[-2:] == ["--ops-module", "tests._worker_ops"]
    assert with_ops.threads == 3


def test_pool_refuses_unknown_backends_and_requests_after_close() -> None:
    spare = WorkerPool()
    with pytest.raises(InputError, match="Unknown backend"):
        spare.worker("mxnet")
    spare.close()
    with pytest.raises(BackendError, match="closed"):
        spare.request(BACKEND, "ping")
    spare.close()  # idempotent


def test_default_pool_is_shared_until_closed() -> None:
    first = pool_mod.default_pool()
    assert pool_mod.default_pool() is first
    first.close()
    second = pool_mod.default_pool()
    assert second is not first and not second.closed


# -- a live worker -----------------------------------------------------------------------
def test_worker_reports_ready_with_its_backend_threads_and_ops(pool: WorkerPool) -> None:
    result, artifact = pool.request(BACKEND, "ping")
    assert result["pong"] is True and result["backend"] == BACKEND
    assert artifact is None
    info = pool.worker(BACKEND).info
    assert info["backend"] == BACKEND and info["protocol"] == 2
    assert info["versions"]["backend"] == BACKEND
    assert info["threads"]["intra_op"] == pool.threads
    assert {"ping", "load", "activations", "gradcam", "filters", "shutdown"} <= set(info["ops"])
    assert set(_worker_ops.OPS) <= set(info["ops"])
    assert result["pid"] == pool.pid(BACKEND) != os.getpid()


@pytest.mark.parametrize(
    "name, cls", [("GraphError", GraphError), ("MissingBackendError", MissingBackendError)]
)
def test_errors_raised_in_a_worker_come_back_as_their_class(pool: WorkerPool, name, cls) -> None:
    with pytest.raises(cls, match=rf"^\[{BACKEND} worker, raise\] planted {name}$") as info:
        pool.request(BACKEND, "raise", {"type": name, "message": f"planted {name}"})
    assert type(info.value) is cls
    assert pool.request(BACKEND, "ping")[0]["pong"] is True  # still serving


def test_other_worker_exceptions_become_worker_errors_with_the_traceback(pool) -> None:
    with pytest.raises(WorkerError) as info:
        pool.request(BACKEND, "raise", {"type": "ZeroDivisionError", "message": "planted"})
    message = str(info.value)
    assert message.startswith(f"[{BACKEND} worker, raise] planted (ZeroDivisionError)")
    assert "Worker traceback (last lines):" in message and "raise_error" in message


def test_unknown_ops_are_refused_by_the_worker(pool: WorkerPool) -> None:
    with pytest.raises(BackendError, match="Unknown worker op. Received: op='fly'"):
        pool.request(BACKEND, "fly")


def test_hung_worker_times_out_with_its_stderr_and_the_next_request_succeeds(
    pool: WorkerPool,
) -> None:
    pool.request(BACKEND, "ping")
    old_pid = pool.pid(BACKEND)
    with pytest.raises(WorkerError) as info:
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
    pool: WorkerPool,
) -> None:
    pool.request(BACKEND, "ping")
    pid = pool.pid(BACKEND)
    assert pid is not None
    killer = threading.Timer(1.0, os.kill, args=(pid, signal.SIGKILL))
    killer.start()
    try:
        with pytest.raises(WorkerError) as info:
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
    broken = WorkerPool(env={"CONVVIZ_WORKER_SYS_PATH": "not json"}, start_timeout=120)
    try:
        with pytest.raises(WorkerError) as info:
            broken.request(BACKEND, "ping")
    finally:
        broken.close()
    message = str(info.value)
    assert "exited while starting" in message and "exit code 1" in message
    assert "JSONDecodeError" in message


def test_an_ops_module_that_replaces_a_builtin_op_stops_the_worker_at_start(tmp_path) -> None:
    (tmp_path / "clashing_ops.py").write_text("OPS = {'ping': print}\n")
    env = {"CONVVIZ_WORKER_SYS_PATH": f'["{tmp_path}"]'}
    broken = WorkerPool(ops_module="clashing_ops", env=env, start_timeout=120)
    try:
        with pytest.raises(WorkerError) as info:
            broken.request(BACKEND, "ping")
    finally:
        broken.close()
    message = str(info.value)
    assert "exited while starting" in message
    assert "cannot replace built-in ops" in message and "['ping']" in message


# -- starting in the background ----------------------------------------------------------
def test_prestart_returns_at_once_and_the_first_request_waits_for_the_start(monkeypatch) -> None:
    # The start is held until released: prestart must return while it is still held
    # (no timing involved), and the first request must wait for it.
    release = threading.Event()
    original = pool_mod.WorkerProcess.start

    def held_start(self, *args, **kwargs):
        assert release.wait(120), "the test never released the start"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pool_mod.WorkerProcess, "start", held_start)
    spare = WorkerPool()
    try:
        assert spare.prestart([BACKEND, BACKEND]) == [BACKEND]
        starter = spare.worker(BACKEND)._starter
        assert starter is not None and starter.is_alive()  # returned; the start goes on
        assert spare.pid(BACKEND) is None
        release.set()
        result, _ = spare.request(BACKEND, "ping")
        assert result["pong"] is True and result["pid"] == spare.pid(BACKEND)
        ops = [t["op"] for t in spare.timings()[BACKEND]]
        assert ops == ["start", "ping"]  # one start, done by the background thread
    finally:
        spare.close()


def test_prestart_skips_backends_that_are_not_installed(monkeypatch) -> None:
    monkeypatch.setattr(pool_mod, "missing_backends", lambda backends: list(backends))
    spare = WorkerPool()
    try:
        assert spare.prestart(["jax", "torch"]) == []
        assert spare.pid("jax") is None and spare.pid("torch") is None
    finally:
        spare.close()


def test_a_failed_background_start_is_reported_by_the_next_request() -> None:
    broken = WorkerPool(env={"CONVVIZ_WORKER_SYS_PATH": "not json"}, start_timeout=120)
    try:
        broken.prestart([BACKEND])  # raises nothing
        with pytest.raises(WorkerError, match="exited while starting"):
            broken.request(BACKEND, "ping")
    finally:
        broken.close()


def test_closing_the_pool_during_a_background_start_leaves_no_process() -> None:
    spare = WorkerPool()
    worker = spare.worker(BACKEND)
    spare.prestart([BACKEND])
    deadline = time.monotonic() + 30
    while worker._proc is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker._proc is not None, "the background start spawned no process"
    pid = worker._proc.pid
    spare.close()
    assert worker._starter is not None and not worker._starter.is_alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped


def test_requests_record_the_workers_own_op_and_model_load_seconds(pool: WorkerPool) -> None:
    pool.request(BACKEND, "ping")
    last = pool.timings()[BACKEND][-1]
    assert last["op"] == "ping" and last["load_s"] == 0.0
    assert 0.0 <= last["op_s"] <= last["seconds"]


# -- what the plugin prestarts -----------------------------------------------------------
# Records what the session's pool is asked to prestart (and whether Keras was imported
# by then) instead of starting workers; a subprocess, so that no test imported Keras.
RECORDING_CONFTEST = """
import json
import sys

from convviz_check.crossbackend import pool as pool_mod

def _record(self, backends):
    with open("prestarted.json", "w") as f:
        json.dump({"backends": list(backends), "keras": "keras" in sys.modules}, f)
    return list(backends)

pool_mod.WorkerPool.prestart = _record
"""
AGREEING_TESTS = """
import pytest

def test_named_in_the_call(convviz):
    if False:  # never runs: collection reads the source
        convviz.assert_backends_agree("m.keras", None, backends=("tensorflow", "torch"))

def test_configured(convviz):
    if False:
        convviz.assert_backends_agree("m.keras", None)

@pytest.mark.convviz(backends="tensorflow,torch")
def test_marked(convviz):
    if False:
        convviz.assert_backends_agree("m.keras", None)
"""


@pytest.mark.parametrize(
    ("select", "env", "ini", "expected"),
    [
        # the call names its backends: nothing is prestarted (no jax nobody asked for)
        ("named_in_the_call", {"KERAS_BACKEND": "tensorflow"}, "", None),
        # the configured backends, less the running one (KERAS_BACKEND, Keras not
        # imported yet): it is computed in the session's process
        ("configured", {"KERAS_BACKEND": "tensorflow"}, "", ["torch", "jax"]),
        ("marked", {"KERAS_BACKEND": "torch"}, "", ["tensorflow"]),
        # no KERAS_BACKEND: keras.json in KERAS_HOME, as Keras reads it
        ("configured", {"KERAS_HOME": "home"}, "tensorflow,jax", ["tensorflow"]),
    ],
)
def test_prestart_starts_only_the_workers_that_will_be_used(
    pytester, monkeypatch, select, env, ini, expected
) -> None:
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    home = pytester.path / "home"
    home.mkdir()
    (home / "keras.json").write_text('{"backend": "jax"}')
    for key, value in env.items():
        monkeypatch.setenv(key, str(pytester.path / value) if key == "KERAS_HOME" else value)
    pytester.makeini("[pytest]\n" + (f"convviz_backends = {ini}\n" if ini else ""))
    pytester.makeconftest(RECORDING_CONFTEST)
    pytester.makepyfile(test_agree=AGREEING_TESTS)
    result = pytester.runpytest_subprocess("-k", select, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    record = pytester.path / "prestarted.json"
    if expected is None:
        assert not record.exists()
        return
    import json

    data = json.loads(record.read_text())
    assert data == {"backends": expected, "keras": False}


def test_expected_backend_reads_what_keras_would(monkeypatch, tmp_path) -> None:
    import json

    monkeypatch.setattr(pool_mod, "running_backend", lambda: None)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert pool_mod.expected_backend() == "tensorflow"  # no keras.json: Keras' default
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert pool_mod.expected_backend() == "torch"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert pool_mod.expected_backend() == "jax"  # the variable beats the file
    monkeypatch.setattr(pool_mod, "running_backend", lambda: "tensorflow")
    assert pool_mod.expected_backend() == "tensorflow"  # an imported Keras beats both
