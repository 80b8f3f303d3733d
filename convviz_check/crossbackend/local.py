"""The running process's own backend, computed here instead of in a worker.

A cross-backend check started from a process that already runs Keras (a pytest session
under ``KERAS_BACKEND=tensorflow``, a notebook) does not need a worker for that
backend: the same ops (:class:`~convviz_check.crossbackend.worker.Worker`, the same
model loading and compute functions) run in this process, and the check waits for two
workers instead of three. On a 2-core machine this saves a framework import (4-5 s of
CPU competing with the other two workers' imports) and a model load; see
``benchmarks/bench_gate.py`` for the measurements.

What differs from a worker: the op runs on the caller's thread pool (one thread of
:func:`~convviz_check.crossbackend.agreement.agreement` per backend), with this
process's framework threads; it cannot be timed out or killed (a worker can); and the
artifact comes back as the worker's would, attributes through JSON, so that both
routes give the parent identical objects. Models are loaded from their source into
this object's own cache, never taken from the caller.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..artifacts import Artifact
from ..errors import ConvvizError, rebuild, to_wire


def running_backend() -> str | None:
    """The backend of the Keras this process has already imported, or None when Keras
    is not imported (never imports it)."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return str(keras.backend.backend())
    except AttributeError:  # pragma: no cover - a half-imported keras
        return None


class LocalWorker:
    """The in-process stand-in for a :class:`~.pool.WorkerProcess` of the running
    backend: the same ``request`` / ``info`` / ``timings`` surface."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.info: dict[str, Any] = {}
        self.timings: list[dict[str, Any]] = []
        self._worker: Any = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def alive(self) -> bool:
        return True

    def start_in_background(self) -> None:
        """Nothing to start."""

    def ask_to_exit(self) -> None:
        """Nothing to stop: see :meth:`stop`."""

    def stop(self, timeout: float = 10.0) -> None:
        """Drop the cached models."""
        with self._lock:
            self._worker = None

    def _start(self) -> Any:
        from ..backends import JAX_CACHE_ENV, framework_versions
        from .worker import BUILTIN_OPS, PROTOCOL_VERSION, Worker

        self._worker = Worker(self.backend, workdir=None)  # type: ignore[arg-type]
        self.info = {
            "protocol": PROTOCOL_VERSION,
            "backend": self.backend,
            "versions": framework_versions(),
            "threads": {"in_process": True},
            "pid": os.getpid(),
            "ops": sorted(BUILTIN_OPS),
            "startup_s": 0.0,
            "jax_cache": os.environ.get(JAX_CACHE_ENV) if self.backend == "jax" else None,
            "in_process": True,
        }
        return self._worker

    def request(
        self,
        op: str,
        params: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        timeout: float | None = None,
    ) -> tuple[dict[str, Any], Artifact | None]:
        """Run one op here; ``timeout`` is not enforced (nothing to kill)."""
        with self._lock:
            worker = self._worker or self._start()
            started = time.monotonic()
            try:
                reply = worker.run(op, dict(params or {}), dict(arrays or {}))
            except Exception as e:  # noqa: BLE001 - reported as a worker's error would be
                wire = to_wire(e, traceback.format_exc(limit=12))
                error = rebuild(wire, f"[{self.backend} in this process, {op}]")
                if isinstance(e, ConvvizError):
                    raise error from None
                raise error from e
            self.timings.append(
                {"op": op, "seconds": round(time.monotonic() - started, 4), **worker.last_timing}
            )
            artifact = reply.artifact
            if artifact is not None:  # attributes as a worker's JSON line carries them
                attrs = json.loads(json.dumps(artifact.attrs))
                artifact = Artifact.decode(
                    dict(artifact.arrays), artifact.kind, artifact.layout, attrs
                )
            return json.loads(json.dumps(reply.result)), artifact
