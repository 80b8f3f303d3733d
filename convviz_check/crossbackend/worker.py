"""The backend worker: ``python -m convviz_check.crossbackend.worker --backend B``.

Child side. The parent (:class:`convviz_check.crossbackend.pool.WorkerPool`, which
imports no framework) keeps one persistent worker per backend and talks to it over a
line protocol:

- The parent writes one JSON object per line on the worker's stdin:
  ``{"id": 7, "op": "activations", "params": {...}, "arrays": "/tmp/.../req-7.npz"}``.
- The worker answers with one JSON line on its (private) stdout:
  ``{"id": 7, "ok": true, "result": {...}, "artifact": {"path": ..., "kind": ...,
  "layout": ..., "attrs": {...}}, "timing": {"op_s": ..., "load_s": ...}}``
  (``artifact`` only for ops that compute one; ``timing``: the op's seconds and, within
  them, the model load's, 0 when the model was cached), or
  ``{"id": 7, "ok": false, "error": {"type": "GraphError", "message": ..., "traceback":
  ...}}`` (:func:`convviz_check.errors.to_wire`; the parent rebuilds the same class).
- Arrays travel as ``.npz`` files in the worker's private directory, written by
  :mod:`convviz_check.storage` and read with its checks (nothing is ever unpickled).
  Models are loaded by the worker from their source (path, preset directory,
  ``module:factory``) and cached by that source.

The first line the worker writes is a ``ready`` message (backend, versions, threads,
ops), sent after Keras and the framework are imported, so the parent can tell a slow
start from a hung request. Everything else the process prints (TF banners, Python
warnings, C++ logs, a model factory's ``print``) goes to stderr: file descriptor 1 is
pointed at stderr right after the protocol stream is split off.

Ops: ``ping``, ``load`` (describe a model), ``activations``, ``gradcam``, ``filters``
(compute an artifact, see :mod:`convviz_check.crossbackend.compute`) and ``shutdown``.
More ops come from ``--ops-module MODULE`` (``WorkerPool(ops_module=...)``): an
importable module with a dict ``OPS`` of op name -> ``op(worker, params, arrays) ->
Reply``, where ``worker`` is the running :class:`Worker` (its model cache, its backend,
:meth:`Worker.before_next`), ``params`` the request's JSON parameters and ``arrays`` the
request's arrays. They cannot replace the built-in ops.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .. import storage
from ..artifacts import Artifact
from ..errors import BackendError, to_wire
from ..types import BACKENDS
from .compute import COMPUTE, describe_model

PROTOCOL_VERSION = 2


@dataclass
class Reply:
    """What an op returns: a JSON-ready result and, optionally, an artifact."""

    result: dict[str, Any] = field(default_factory=dict)
    artifact: Artifact | None = None
    exit: bool = False


Op = Callable[["Worker", dict[str, Any], dict[str, np.ndarray]], Reply]


# -- model cache ----------------------------------------------------------------------
def model_key(spec: Mapping[str, Any]) -> str:
    """Cache key of a model spec (source, safe_mode, custom_objects modules)."""
    return json.dumps(
        {
            "source": str(spec["source"]),
            "safe_mode": bool(spec.get("safe_mode", True)),
            "custom_objects": list(spec.get("custom_objects") or []),
        },
        sort_keys=True,
    )


class ModelCache:
    """Models loaded once per worker, keyed by their source (never by object)."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}

    def get(self, spec: Mapping[str, Any]) -> Any:
        key = model_key(spec)
        if key not in self._models:
            from ..models import load_model

            custom = spec.get("custom_objects") or None
            self._models[key] = load_model(
                str(spec["source"]),
                safe_mode=bool(spec.get("safe_mode", True)),
                custom_objects=list(custom) if custom else None,
            )
        return self._models[key]

    def evict(self, spec: Mapping[str, Any] | None) -> int:
        """Forget one model (or all with None); returns how many were dropped."""
        if spec is None:
            n = len(self._models)
            self._models.clear()
            return n
        return 1 if self._models.pop(model_key(spec), None) is not None else 0


# -- the built-in ops -----------------------------------------------------------------
def _ping(worker: Worker, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
    return Reply({"pong": True, "pid": os.getpid(), "backend": worker.backend})


def _load(worker: Worker, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
    return Reply(describe_model(worker.model(params)))


def _shutdown(worker: Worker, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
    return Reply({"bye": True}, exit=True)


def _compute_op(technique: str) -> Op:
    compute = COMPUTE[technique]

    def op(worker: Worker, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
        # The request carries the model spec beside the technique's parameters.
        technique_params = {k: v for k, v in params.items() if k != "model"}
        artifact = compute(worker.model(params), arrays.get("images"), technique_params)
        return Reply(artifact=artifact)

    op.__name__ = f"compute_{technique}"
    return op


BUILTIN_OPS: dict[str, Op] = {
    "ping": _ping,
    "load": _load,
    "shutdown": _shutdown,
    **{technique: _compute_op(technique) for technique in COMPUTE},
}


def load_ops(module_name: str) -> dict[str, Op]:
    """The ``OPS`` of an ops module (see the module docstring).

    Raises:
        BackendError: no ``OPS`` dict, a value that is not callable, or an op that
            would replace a built-in one.
    """
    module = importlib.import_module(module_name)
    ops = getattr(module, "OPS", None)
    if not isinstance(ops, Mapping) or not all(
        isinstance(k, str) and callable(v) for k, v in ops.items()
    ):
        raise BackendError(
            f"An ops module needs a dict OPS of op name -> callable. Received: "
            f"{module_name}.OPS={ops!r}."
        )
    clashes = sorted(set(ops) & set(BUILTIN_OPS))
    if clashes:
        raise BackendError(
            f"An ops module cannot replace built-in ops. Received: {module_name}.OPS "
            f"defines {clashes}; the built-in ops are {sorted(BUILTIN_OPS)}."
        )
    return dict(ops)


# -- the worker -------------------------------------------------------------------------
class Worker:
    """Serves requests for one backend until stdin closes or ``shutdown`` arrives."""

    def __init__(self, backend: str, workdir: Path, ops: Mapping[str, Op] | None = None) -> None:
        self.backend = backend
        self.workdir = workdir
        self.cache = ModelCache()
        self.ops: dict[str, Op] = {**BUILTIN_OPS, **dict(ops or {})}
        self._before_next: list[Callable[[], None]] = []
        # Seconds of the last request: the whole op and, within it, loading the model
        # (0 when cached). Two clock reads per request, sent back with the answer.
        self._load_s = 0.0
        self.last_timing: dict[str, float] = {}

    def model(self, params: Mapping[str, Any]) -> Any:
        """The cached model of the request's ``params["model"]`` spec."""
        spec = params.get("model")
        if not isinstance(spec, Mapping) or "source" not in spec:
            raise BackendError(
                f"This op needs a model spec. Received: params['model']={spec!r}. "
                "Expected {'source': ..., 'safe_mode': ..., 'custom_objects': [...]}."
            )
        started = time.perf_counter()
        model = self.cache.get(spec)
        self._load_s += time.perf_counter() - started
        return model

    def before_next(self, action: Callable[[], None]) -> None:
        """Run ``action`` when the next request arrives, before it is handled (e.g. an
        ops module that makes that request hang or crash)."""
        self._before_next.append(action)

    def handle(self, request: Mapping[str, Any]) -> Reply:
        """Run one request and return its reply; raises what the op raised."""
        arrays = storage.read_npz(request["arrays"]) if request.get("arrays") else {}
        return self.run(request.get("op"), dict(request.get("params") or {}), arrays)

    def run(self, op_name: Any, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
        """Run one op on in-memory arrays (what :meth:`handle` does once the request's
        arrays are read; the parent's in-process backend calls it directly)."""
        pending, self._before_next = self._before_next, []
        for action in pending:
            action()
        op = self.ops.get(str(op_name))
        if op is None:
            raise BackendError(
                f"Unknown worker op. Received: op={op_name!r}. Expected one of {sorted(self.ops)}."
            )
        self._load_s = 0.0
        started = time.perf_counter()
        reply = op(self, params, arrays)
        self.last_timing = {
            "op_s": round(time.perf_counter() - started, 4),
            "load_s": round(self._load_s, 4),
        }
        return reply

    def answer(self, request_id: Any, reply: Reply) -> dict[str, Any]:
        """The protocol message of a successful reply (its artifact written to a file)."""
        message: dict[str, Any] = {"id": request_id, "ok": True, "result": reply.result}
        message["timing"] = self.last_timing
        if reply.artifact is not None:
            path = self.workdir / f"resp-{request_id}.npz"
            storage.write_bytes(path, reply.artifact.encode())
            message["artifact"] = {
                "path": str(path),
                "kind": reply.artifact.kind,
                "layout": reply.artifact.layout,
                "attrs": reply.artifact.attrs,
            }
        return message


# -- the process --------------------------------------------------------------------------
def _extend_sys_path() -> None:
    """Add the parent's import path (e.g. pytest's rootdir insertion), so that
    ``module:factory`` sources, custom_objects and ops modules import the same here."""
    extra = os.environ.get("CONVVIZ_WORKER_SYS_PATH")
    if extra:
        for entry in json.loads(extra):
            if entry not in sys.path:
                sys.path.append(entry)


def _split_protocol_stream() -> TextIO:
    """Return a private stream on the original stdout and point fd 1 at stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "w", buffering=1, encoding="utf-8")


def _send(stream: TextIO, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def _start(
    backend: str, threads: int, ops_module: str | None
) -> tuple[dict[str, Any], dict[str, Op]]:
    """Import Keras under ``backend`` and the ops module; returns (ready facts, ops)."""
    started = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["CONVVIZ_THREADS"] = str(threads)
    from ..backends import prepare_import

    prepare_import(backend, threads)
    import keras  # noqa: F401 - reads KERAS_BACKEND now

    from ..backends import JAX_CACHE_ENV, current_backend, framework_versions, pin_threads

    # pin_threads imports the backend module; for JAX that applies the persistent
    # compilation cache the parent passed in CONVVIZ_JAX_CACHE_DIR, before any compile.
    pinned = pin_threads(threads)
    ops = load_ops(ops_module) if ops_module else {}
    ready = {
        "ready": True,
        "protocol": PROTOCOL_VERSION,
        "backend": current_backend(),
        "versions": framework_versions(),
        "threads": pinned,
        "pid": os.getpid(),
        "ops": sorted({*BUILTIN_OPS, *ops}),
        "startup_s": round(time.perf_counter() - started, 3),
        "jax_cache": os.environ.get(JAX_CACHE_ENV) if backend == "jax" else None,
    }
    return ready, ops


def serve(backend: str, threads: int, workdir: Path, ops_module: str | None = None) -> int:
    """Run the worker loop (the body of ``python -m convviz_check.crossbackend.worker``)."""
    proto = _split_protocol_stream()
    _extend_sys_path()
    ready, ops = _start(backend, threads, ops_module)
    _send(proto, ready)
    worker = Worker(backend, workdir, ops)
    for line in sys.stdin:
        if not line.strip():
            continue
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            reply = worker.handle(request)
            message = worker.answer(request_id, reply)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the parent
            wire = to_wire(e, traceback.format_exc(limit=12))
            _send(proto, {"id": request_id, "ok": False, "error": wire})
            continue
        _send(proto, message)
        if reply.exit:
            break
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convviz_check.crossbackend.worker",
        description="convviz_check backend worker (spoken to by "
        "convviz_check.crossbackend.pool.WorkerPool over JSON lines).",
    )
    parser.add_argument("--backend", required=True, choices=BACKENDS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", required=True, help="private directory for .npz files")
    parser.add_argument(
        "--ops-module",
        default=None,
        metavar="MODULE",
        help="importable module whose OPS dict (op name -> callable) adds ops",
    )
    args = parser.parse_args(argv)
    return serve(args.backend, max(1, args.threads), Path(args.workdir), args.ops_module)


def _exit_now(code: int) -> None:
    """End the worker without the interpreter's teardown.

    Every reply has been written and flushed by then, and the worker keeps nothing
    else: its arrays went to the parent's work directory, JAX writes a persistent
    compilation-cache entry when it compiles. What the teardown would add is the
    frameworks' own finalization (TensorFlow, torch and JAX each take about a second
    on a 2-core machine), which the parent's session end would wait for.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
