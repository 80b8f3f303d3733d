"""Test-only worker ops, loaded by the backend workers through ``--ops-module``.

``WorkerPool(ops_module="tests._worker_ops")`` makes every worker serve these on top of
the built-in ops: hang or crash on purpose, change a cached model's weights, forget a
cached model, raise a chosen error. :func:`shared_pool` gives the test modules one
such pool per pytest session, because each worker start costs seconds of imports.
"""

from __future__ import annotations

import builtins
import os
import signal
import time
from typing import Any

import numpy as np

from convviz_check import errors
from convviz_check.crossbackend.pool import WorkerPool
from convviz_check.crossbackend.worker import Reply, Worker

OPS_MODULE = __name__
# A real request answers well within this on the tiny models (seconds); the hang tests
# use much shorter ones.
REQUEST_TIMEOUT_S = 300.0


def perturb_weights(model: Any, layer: str | None, scale: float, seed: int) -> dict[str, Any]:
    """Add seeded Gaussian noise (``scale`` x each weight's std) to the weights of
    ``layer`` (default: the first layer with weights), in place."""
    from convviz_check.graph import flatten

    records = flatten(model).records
    if layer is None:
        candidates = [r for r in records if getattr(r.operation, "weights", None)]
    else:
        candidates = [r for r in records if r.name == layer]
    if not candidates:
        raise errors.GraphError(
            f"Cannot perturb weights. Received: layer={layer!r}. Expected a layer with "
            f"weights among {[r.name for r in records]}."
        )
    record = candidates[0]
    rng = np.random.default_rng(seed)
    changed = []
    for v in record.operation.weights:
        value = np.asarray(v.numpy(), dtype=np.float32)
        std = float(value.std()) or 1.0
        v.assign(value + (scale * std * rng.standard_normal(value.shape)).astype(np.float32))
        changed.append(v.path)
    return {"layer": record.name, "weights": changed}


def sleep(worker: Worker, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
    seconds = float(params.get("seconds", 1.0))
    time.sleep(seconds)
    return Reply({"slept": seconds})


def delay_next(worker: Worker, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
    """The next request (whatever its op) hangs ``seconds`` first."""
    seconds = float(params.get("seconds", 60.0))
    worker.before_next(lambda: time.sleep(seconds))
    return Reply({"delay_next": seconds})


def crash_next(worker: Worker, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
    """The next request (whatever its op) kills the worker with SIGKILL."""
    worker.before_next(lambda: os.kill(os.getpid(), signal.SIGKILL))
    return Reply({"crash_next": True})


def perturb(worker: Worker, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
    """Change the cached model's weights (until :func:`evict`)."""
    return Reply(
        perturb_weights(
            worker.model(params),
            params.get("layer"),
            float(params.get("scale", 0.1)),
            int(params.get("seed", 0)),
        )
    )


def evict(worker: Worker, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
    """Forget the cached model (all with no ``model``): the next use reloads it."""
    return Reply({"evicted": worker.cache.evict(params.get("model"))})


def raise_error(worker: Worker, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Reply:
    """Raise ``params["type"]``: a class of :mod:`convviz_check.errors` or a builtin."""
    name, message = str(params["type"]), str(params.get("message", "raised on purpose"))
    cls = getattr(errors, name, None) or getattr(builtins, name)
    raise cls(message)


OPS = {
    "sleep": sleep,
    "delay_next": delay_next,
    "crash_next": crash_next,
    "perturb": perturb,
    "evict": evict,
    "raise": raise_error,
}


def shared_pool(config: Any) -> WorkerPool:
    """This pytest session's pool of workers serving :data:`OPS` (one per session and
    xdist worker: each has its own config), closed at session end."""
    import pytest

    global _STASH_KEY
    if _STASH_KEY is None:
        _STASH_KEY = pytest.StashKey[WorkerPool]()
    pool = config.stash.get(_STASH_KEY, None)
    if pool is None or pool.closed:
        pool = WorkerPool(ops_module=OPS_MODULE, timeout=REQUEST_TIMEOUT_S)
        config.stash[_STASH_KEY] = pool
        config.add_cleanup(pool.close)
    return pool


_STASH_KEY: Any = None


def require_or_skip(backends: tuple[str, ...] = ("tensorflow", "torch", "jax")) -> None:
    """Skip naming the missing backend(s) (a per-backend env); fail instead where
    ``CONVVIZ_REQUIRE_BACKENDS=1`` (the crossbackend env)."""
    import pytest

    from convviz_check.crossbackend import pool as pool_mod

    missing = pool_mod.missing_backends(backends)
    if missing:
        message = (
            f"cross-backend test needs backend(s) {', '.join(missing)}, not installed in "
            "this environment"
        )
        if os.environ.get("CONVVIZ_REQUIRE_BACKENDS", "") not in ("", "0"):
            pytest.fail(message + " (CONVVIZ_REQUIRE_BACKENDS=1: all three are required)")
        pytest.skip(message)
