"""The backend worker process and its protocol (convviz_check/crossbackend/worker.py).

The protocol test talks JSON lines to a real ``python -m
convviz_check.crossbackend.worker`` process, as the pool does; the other live tests go
through the session pool shared with the other cross-backend test modules
(``tests._worker_ops.shared_pool``), since each worker start costs seconds of imports.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convviz_check import errors, storage
from convviz_check.artifacts import Artifact
from convviz_check.crossbackend import worker as worker_mod
from convviz_check.crossbackend.pool import WorkerPool
from convviz_check.crossbackend.requests import model_spec
from convviz_check.errors import BackendError, GraphError, ModelLoadError
from tests import _models, _worker_ops

# The worker used by the single-backend tests: the backend this pytest process runs.
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
ROOT = Path(__file__).resolve().parents[1]
LINE_TIMEOUT_S = 300.0


def tiny_convnet(input_shape: tuple[int, int, int] = (24, 24, 3), seed: int = 0):
    """A tiny convnet whose weights come from NumPy (identical on every backend)."""
    return _models.sequential(input_shape, seed=seed, name="tiny")


def noisy_factory():
    """A model factory that prints to stdout while building (must not break the protocol)."""
    print("hello from a factory that prints to stdout")
    sys.stdout.flush()
    os.write(1, b"raw bytes on file descriptor 1\n")
    return tiny_convnet()


@pytest.fixture(scope="session")
def pool(request: pytest.FixtureRequest) -> WorkerPool:
    return _worker_ops.shared_pool(request.config)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny convnet with NumPy-seeded weights saved as .keras (loaded by the workers)."""
    path = tmp_path_factory.mktemp("worker_models") / "tiny.keras"
    tiny_convnet().save(path)
    return path


# -- without a process -------------------------------------------------------------------
def test_model_key_ignores_nothing_that_changes_the_model() -> None:
    base = {"source": "m.keras", "safe_mode": True, "custom_objects": []}
    assert worker_mod.model_key(base) == worker_mod.model_key(dict(base))
    assert worker_mod.model_key(base) != worker_mod.model_key({**base, "safe_mode": False})
    assert worker_mod.model_key(base) != worker_mod.model_key({**base, "custom_objects": ["m"]})


def test_unknown_ops_and_model_less_requests_are_refused(tmp_path: Path) -> None:
    w = worker_mod.Worker(BACKEND, tmp_path)
    with pytest.raises(BackendError, match="Unknown worker op. Received: op='sleep'"):
        w.handle({"id": 1, "op": "sleep", "params": {"seconds": 0}})  # a test op, not loaded
    with pytest.raises(BackendError, match="needs a model spec"):
        w.handle({"id": 2, "op": "load", "params": {}})
    assert w.handle({"id": 3, "op": "ping"}).result["backend"] == BACKEND


def test_ops_modules_add_ops_that_run_before_next_actions(tmp_path: Path) -> None:
    w = worker_mod.Worker(BACKEND, tmp_path, worker_mod.load_ops("tests._worker_ops"))
    seen: list[str] = []
    assert w.handle({"id": 1, "op": "sleep", "params": {"seconds": 0}}).result == {"slept": 0.0}
    w.before_next(lambda: seen.append("before"))
    assert not seen
    assert w.handle({"id": 2, "op": "ping"}).result["pong"] is True
    assert seen == ["before"]
    w.handle({"id": 3, "op": "ping"})
    assert seen == ["before"]  # once


def test_load_ops_refuses_a_module_without_ops_or_replacing_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "no_ops.py").write_text("OPS = ['sleep']\n")
    (tmp_path / "clash_ops.py").write_text("OPS = {'load': print, 'extra': print}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendError, match="needs a dict OPS"):
        worker_mod.load_ops("no_ops")
    with pytest.raises(BackendError, match=r"cannot replace built-in ops.*\['load'\]"):
        worker_mod.load_ops("clash_ops")


def test_replies_carry_the_artifact_in_a_file_and_its_description_in_json(
    tmp_path: Path,
) -> None:
    w = worker_mod.Worker(BACKEND, tmp_path)
    artifact = Artifact.from_value(
        np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3), "pattern", attrs={"layer": "c"}
    )
    message = w.answer(7, worker_mod.Reply({"x": 1}, artifact))
    assert json.loads(json.dumps(message)) == message
    described = message["artifact"]
    assert described["kind"] == "pattern" and described["layout"] == "array"
    back = Artifact.decode(
        storage.read_npz(described["path"]),
        described["kind"],
        described["layout"],
        described["attrs"],
    )
    assert back.attrs == {"layer": "c"}
    np.testing.assert_array_equal(back.arrays["value"], artifact.arrays["value"])
    # A worker that has run no op yet reports no timing.
    assert w.answer(8, worker_mod.Reply({"y": 2})) == {
        "id": 8,
        "ok": True,
        "result": {"y": 2},
        "timing": {},
    }


def test_transport_keeps_slashes_in_layer_names_and_never_unpickles(tmp_path: Path) -> None:
    w = worker_mod.Worker(BACKEND, tmp_path)
    acts = {
        "backbone/conv": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3),
        "c1": np.ones((1, 2, 2, 1), np.float32),
    }
    described = w.answer(1, worker_mod.Reply(artifact=Artifact.from_value(acts)))["artifact"]
    back = storage.read_npz(described["path"])
    assert list(back) == list(acts)
    for name, value in acts.items():
        np.testing.assert_array_equal(back[name], value)
    evil = tmp_path / "evil.npz"
    np.savez(evil, a0=np.array([{"x": 1}], dtype=object), __names__=np.array(["x"]))
    with pytest.raises(errors.StorageError, match="object"):
        w.handle({"id": 2, "op": "ping", "arrays": str(evil)})


def test_worker_main_rejects_unknown_backends(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        worker_mod.main(["--backend", "mxnet", "--workdir", "/tmp"])
    assert "invalid choice" in capsys.readouterr().err


def test_prepare_import_refuses_unknown_or_already_imported_other_backends() -> None:
    import keras

    from convviz_check.backends import prepare_import

    with pytest.raises(BackendError, match="Unknown backend"):
        prepare_import("mxnet")
    other = next(b for b in ("tensorflow", "jax") if b != keras.config.backend())
    with pytest.raises(BackendError, match="already imported"):
        prepare_import(other)


# -- the line protocol over a real process -----------------------------------------------
class Lines:
    """The worker's stdout, read line by line with a timeout (a reader thread)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def next(self) -> str | None:
        return self._queue.get(timeout=LINE_TIMEOUT_S)


def _send(proc: subprocess.Popen[str], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()


def test_line_protocol_of_a_real_worker_process(tmp_path: Path) -> None:
    env = {**os.environ, "CONVVIZ_WORKER_SYS_PATH": json.dumps(sys.path)}
    env.pop("KERAS_BACKEND", None)  # the worker sets its own
    cmd = [sys.executable, "-m", "convviz_check.crossbackend.worker", "--backend", BACKEND]
    cmd += ["--workdir", str(tmp_path), "--ops-module", "tests._worker_ops"]
    stderr = open(tmp_path / "stderr.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=ROOT,
        env=env,
    )
    lines = Lines(proc)
    try:
        ready = json.loads(lines.next() or "null")
        assert ready["ready"] is True and ready["backend"] == BACKEND and ready["protocol"] == 2
        assert "raise" in ready["ops"] and ready["pid"] == proc.pid
        # ok reply with arrays; the factory prints to stdout while the model loads
        images = np.random.default_rng(0).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)
        storage.write_bytes(tmp_path / "req-1.npz", storage.encode_npz({"images": images}))
        spec = model_spec(f"{__name__}:noisy_factory")
        _send(
            proc,
            {
                "id": 1,
                "op": "activations",
                "params": {"model": spec},
                "arrays": str(tmp_path / "req-1.npz"),
            },
        )
        reply = json.loads(lines.next() or "null")  # the very next line: no stray output
        assert reply["id"] == 1 and reply["ok"] is True and reply["result"] == {}
        described = reply["artifact"]
        assert (described["kind"], described["layout"]) == ("activation", "activations")
        artifact = Artifact.decode(
            storage.read_npz(described["path"]), "activation", "activations", described["attrs"]
        )
        import convviz_check as cc

        here = cc.activations(tiny_convnet(), images)
        assert list(artifact.arrays) == list(here) == ["c1", "p1", "c2"]
        for name in here:
            np.testing.assert_allclose(artifact.arrays[name], here[name], rtol=1e-5, atol=1e-6)
        # error reply: the same class once rebuilt
        params = {"model": spec, "layers": ["no_such_layer"]}
        _send(
            proc,
            {"id": 2, "op": "activations", "params": params, "arrays": str(tmp_path / "req-1.npz")},
        )
        reply = json.loads(lines.next() or "null")
        assert reply["id"] == 2 and reply["ok"] is False and "artifact" not in reply
        assert reply["error"]["type"] == "GraphError" and "Traceback" in reply["error"]["traceback"]
        rebuilt = errors.rebuild(reply["error"], f"[{BACKEND} worker, activations]")
        assert type(rebuilt) is GraphError and "no_such_layer" in str(rebuilt)
        _send(proc, {"id": 3, "op": "raise", "params": {"type": "MissingBackendError"}})
        reply = json.loads(lines.next() or "null")
        rebuilt = errors.rebuild(reply["error"], "[ctx]")
        assert reply["id"] == 3 and type(rebuilt) is errors.MissingBackendError
        # not JSON: an error reply without an id, and the worker keeps serving
        assert proc.stdin is not None
        proc.stdin.write("this is not json\n")
        proc.stdin.flush()
        reply = json.loads(lines.next() or "null")
        assert reply["id"] is None and reply["ok"] is False
        assert reply["error"]["type"] == "JSONDecodeError"
        _send(proc, {"id": 4, "op": "shutdown"})
        bye = json.loads(lines.next() or "null")
        timing = bye.pop("timing")
        assert bye == {"id": 4, "ok": True, "result": {"bye": True}}
        assert set(timing) >= {"op_s", "load_s"}
        assert all(isinstance(v, float) and v >= 0 for v in timing.values()), timing
        assert lines.next() is None  # nothing else ever reached the protocol stream
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stderr.close()
    log = (tmp_path / "stderr.log").read_text(errors="replace")
    assert "hello from a factory that prints to stdout" in log
    assert "raw bytes on file descriptor 1" in log


# -- through the pool ------------------------------------------------------------------------
def test_worker_computes_activations_like_this_process(
    pool: WorkerPool, tiny_model_path: Path
) -> None:
    import convviz_check as cc

    images = np.random.default_rng(0).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)
    spec = model_spec(tiny_model_path)
    _, artifact = pool.request(BACKEND, "activations", {"model": spec}, {"images": images})
    here = cc.activations(cc.load_model(tiny_model_path), images)
    assert artifact is not None and artifact.kind == "activation"
    assert list(artifact.arrays) == list(here)
    for name in here:
        np.testing.assert_allclose(artifact.arrays[name], here[name], rtol=1e-5, atol=1e-6)


def test_worker_computes_gradcam_and_filters_as_artifacts(
    pool: WorkerPool, tiny_model_path: Path
) -> None:
    images = np.random.default_rng(0).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)
    spec = model_spec(tiny_model_path)
    _, cam = pool.request(BACKEND, "gradcam", {"model": spec}, {"images": images})
    assert cam is not None and (cam.kind, cam.layout) == ("heatmap", "gradcam")
    assert cam.attrs["top_class"] == cam.arrays["class_index"].tolist()  # no class given
    assert cam.attrs["layer"] == "c2" and cam.to_value().heatmap.shape[0] == 2
    params = {"model": spec, "class_index": [1, 1]}
    _, forced = pool.request(BACKEND, "gradcam", params, {"images": images})
    assert forced.arrays["class_index"].tolist() == [1, 1]
    assert forced.attrs["top_class"] == cam.attrs["top_class"]  # the model's own classes
    params = {"model": spec, "filters": 2, "steps": 2}
    _, patterns = pool.request(BACKEND, "filters", params)
    assert (patterns.kind, patterns.layout) == ("pattern", "array")
    assert patterns.attrs == {"layer": "c2", "filters": [0, 1]}
    assert patterns.arrays["value"].shape[0] == 2


def test_worker_caches_models_by_source_until_evicted(
    pool: WorkerPool, tiny_model_path: Path
) -> None:
    spec = model_spec(tiny_model_path)
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


def test_worker_loads_a_module_factory_that_prints_to_stdout(pool: WorkerPool) -> None:
    spec = model_spec(f"{__name__}:noisy_factory")
    described, _ = pool.request(BACKEND, "load", {"model": spec})
    assert described["conv_layers"] == ["c1", "c2"]
    assert "hello from a factory" in pool.worker(BACKEND).stderr_tail(200)
    assert pool.request(BACKEND, "ping")[0]["pong"] is True


def test_worker_errors_keep_their_class_and_name_the_backend(
    pool: WorkerPool, tiny_model_path: Path
) -> None:
    spec = model_spec(tiny_model_path)
    images = np.zeros((1, 24, 24, 3), np.float32)
    with pytest.raises(GraphError, match=rf"\[{BACKEND} worker, activations\].*no_such_layer"):
        pool.request(
            BACKEND,
            "activations",
            {"model": spec, "layers": ["no_such_layer"]},
            {"images": images},
        )
    with pytest.raises(ModelLoadError, match="no such file"):
        pool.request(BACKEND, "load", {"model": model_spec("/nonexistent/model.keras")})
    assert pool.request(BACKEND, "ping")[0]["pong"] is True  # still serving
