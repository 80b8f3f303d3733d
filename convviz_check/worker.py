"""Child process for one Keras backend: ``python -m convviz_check.worker --backend B``.

The parent (:mod:`convviz_check.agreement`, framework-free) keeps one persistent worker
per backend and talks to it over a line protocol:

- The parent writes one JSON object per line on the worker's stdin:
  ``{"id": 7, "op": "activations", "params": {...}, "arrays": "/tmp/.../req-7.npz"}``.
- The worker answers with one JSON line on its (private) stdout:
  ``{"id": 7, "ok": true, "result": {...}, "arrays": "/tmp/.../resp-7.npz"}`` or
  ``{"id": 7, "ok": false, "error": {"type": "GraphError", "message": ..., "traceback": ...}}``.
- Arrays travel in ``.npz`` files in the worker's private temp dir, read with
  ``allow_pickle=False``. Nothing is ever pickled: models are loaded by the worker from
  their source (path, preset dir, ``module:factory``) and cached by that source.

The first line the worker writes is a ``ready`` message (backend, versions, threads),
sent after Keras and the framework are imported, so the parent can tell a slow start
from a hung request. Everything else the process prints (TF banners, Python warnings,
C++ logs) goes to stderr: file descriptor 1 is pointed at stderr right after the
protocol stream is split off, so a stray ``print`` can never corrupt the protocol.

Environment is fixed before Keras is imported (``KERAS_BACKEND`` is read once):
``KERAS_BACKEND``, ``XLA_FLAGS`` (JAX's CPU thread pool reads them at client start),
``TF_CPP_MIN_LOG_LEVEL``; torch is imported before anything that may import
tensorflow (keras-hub imports tensorflow under every backend; the other order can
segfault). Thread pools are pinned with :func:`convviz_check.backends.pin_threads`.

This module also holds :func:`compute_artifacts`, the in-process computation used both
by the worker and by ``--convviz-export`` in a per-backend pytest run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

PROTOCOL_VERSION = 1
BACKENDS = ("tensorflow", "torch", "jax")
# Ops only served when the parent starts the worker with test hooks enabled.
TEST_HOOK_OPS = ("sleep", "perturb", "delay_next", "crash_next")


# -- array transport ------------------------------------------------------------------
def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` (an ``.npz``) atomically.

    Keys are stored as ``a0, a1, ...`` with the real names in a ``__names__`` entry,
    because layer names may contain ``/`` (nested models), which zip members and
    ``np.load`` handle poorly."""
    names = list(arrays)
    payload = {f"a{i}": np.asarray(arrays[name]) for i, name in enumerate(names)}
    payload["__names__"] = np.asarray(names, dtype=np.str_) if names else np.zeros(0, np.str_)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **payload)
    os.replace(tmp, path)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an ``.npz`` written by :func:`save_arrays` (never unpickles)."""
    with np.load(path, allow_pickle=False) as data:
        names = [str(n) for n in data["__names__"]]
        return {name: np.array(data[f"a{i}"]) for i, name in enumerate(names)}


# -- model cache ----------------------------------------------------------------------
def model_key(spec: dict[str, Any]) -> str:
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

    def get(self, spec: dict[str, Any]) -> Any:
        key = model_key(spec)
        if key not in self._models:
            from .models import load_model

            custom = spec.get("custom_objects") or None
            self._models[key] = load_model(
                str(spec["source"]),
                safe_mode=bool(spec.get("safe_mode", True)),
                custom_objects=list(custom) if custom else None,
            )
        return self._models[key]

    def evict(self, spec: dict[str, Any] | None) -> int:
        if spec is None:
            n = len(self._models)
            self._models.clear()
            return n
        return 1 if self._models.pop(model_key(spec), None) is not None else 0


# -- the computations (keras side; also used in-process by --convviz-export) -----------
def _spatial_side(model: Any, layer: str) -> int | None:
    """Smallest spatial side of ``layer``'s output, or None when unknown."""
    from .graph import flatten

    record = flatten(model).by_name[layer]
    shape = tuple(record.output.shape)
    if len(shape) != 4:
        return None
    dims = shape[2:4] if record.data_format == "channels_first" else shape[1:3]
    known = [d for d in dims if d is not None]
    return min(known) if len(known) == 2 else None


def default_filters_layer(model: Any) -> str:
    """The deepest 2-D conv layer whose output map is wider than 8 cells.

    Why: the filter-pattern loss crops a 2-cell border (SPEC 1.2), so the map must be
    larger than 4; deeper layers amplify backend differences the most, so they make
    the strictest agreement check, but a 5x5 map leaves a 1x1 loss window that is
    pure border noise. More than 8 cells keeps at least a 5x5 window. When no size is
    known (no fixed input size), the deepest conv layer is used."""
    from .errors import GraphError
    from .graph import conv_layers

    names = conv_layers(model)
    if not names:
        raise GraphError(
            f"Model {getattr(model, 'name', '?')!r} has no 2-D convolution layer, so "
            "filter patterns cannot be computed. Received: conv_layers(model)=[]. "
            "Expected a model with at least one Conv2D/SeparableConv2D/DepthwiseConv2D."
        )
    sides = [(name, _spatial_side(model, name)) for name in names]
    if all(side is None for _, side in sides):
        return names[-1]
    wide = [name for name, side in sides if side is not None and side > 8]
    return wide[-1] if wide else names[0]


def top_classes(model: Any, images: np.ndarray) -> np.ndarray | None:
    """Arg-max class per image of the model output (None unless the output is (N, K))."""
    import keras

    out = model(keras.ops.convert_to_tensor(images), training=False)
    if isinstance(out, list | tuple | dict):
        return None
    arr = keras.ops.convert_to_numpy(out)
    if arr.ndim != 2:
        return None
    return np.argmax(arr, axis=-1).astype(np.int64)


def compute_activations(model: Any, images: np.ndarray, params: dict[str, Any]) -> tuple:
    from .explain.activations import activations

    acts = activations(
        model, images, layers=params.get("layers"), batch_size=int(params.get("batch_size", 32))
    )
    return {"layers": list(acts)}, {k: np.asarray(v, np.float32) for k, v in acts.items()}


def compute_gradcam(model: Any, images: np.ndarray, params: dict[str, Any]) -> tuple:
    from .explain.gradcam import gradcam

    class_index = params.get("class_index")
    if isinstance(class_index, list):
        class_index = np.asarray(class_index, np.int64)
    cam = gradcam(
        model,
        images,
        class_index=class_index,
        layer=params.get("layer"),
        score=params.get("score", "auto"),
        preprocess=bool(params.get("preprocess", False)),
    )
    top = top_classes(model, images)
    arrays = {
        "heatmap": np.asarray(cam.heatmap, np.float32),
        "raw": np.asarray(cam.raw, np.float32),
        "class_index": np.asarray(cam.class_index, np.int64),
        "score": np.asarray(cam.score, np.float32),
        "degenerate": np.asarray(cam.degenerate, bool),
    }
    if top is not None:
        arrays["top_class"] = top
    meta = {
        "layer": cam.layer,
        "score_kind": cam.score_kind,
        "image_shape": [int(s) for s in cam.image_shape],
    }
    return meta, arrays


def compute_filters(model: Any, images: np.ndarray | None, params: dict[str, Any]) -> tuple:
    from .explain.filters import filter_patterns

    layer = params.get("layer") or default_filters_layer(model)
    filters = params.get("filters", 8)
    if isinstance(filters, int):
        filters = list(range(filters))
    patterns = filter_patterns(
        model,
        layer,
        filters=filters,
        steps=int(params.get("steps", 30)),
        learning_rate=params.get("learning_rate"),
        size=tuple(params["size"]) if params.get("size") else None,
        seed=int(params.get("seed", 0)),
        batch_size=params.get("batch_size"),
        input_range=tuple(params.get("input_range", (0.0, 1.0))),
    )
    meta = {"layer": layer, "filters": [int(f) for f in filters]}
    return meta, {"patterns": np.asarray(patterns, np.float32)}


COMPUTE = {
    "activations": compute_activations,
    "gradcam": compute_gradcam,
    "filters": compute_filters,
}


def compute_artifacts(
    model: Any, images: np.ndarray | None, what: Sequence[str], params: dict[str, dict[str, Any]]
) -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """Compute each artifact in ``what`` for ``model`` under the running backend.

    Args:
        model: a loaded ``keras.Model``.
        images: the input batch (unused by ``"filters"``).
        what: artifact names among ``"activations"``, ``"gradcam"``, ``"filters"``.
        params: per-artifact keyword parameters (see the ``compute_*`` functions).

    Returns:
        artifact name -> ``(meta, arrays)``, the same shapes the worker returns.
    """
    out = {}
    for name in what:
        out[name] = COMPUTE[name](model, images, dict(params.get(name) or {}))
    return out


def perturb_weights(model: Any, layer: str | None, scale: float, seed: int) -> dict[str, Any]:
    """Test hook: add seeded Gaussian noise (``scale`` x each weight's std) to the
    weights of ``layer`` (default: the first layer with weights), in place."""
    from .errors import GraphError
    from .graph import flatten

    records = flatten(model).records
    if layer is None:
        candidates = [r for r in records if getattr(r.operation, "weights", None)]
    else:
        candidates = [r for r in records if r.name == layer]
    if not candidates:
        raise GraphError(
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


# -- the worker loop --------------------------------------------------------------------
class Worker:
    """Serves requests for one backend until stdin closes or ``shutdown`` arrives."""

    def __init__(self, backend: str, workdir: Path, test_hooks: bool) -> None:
        self.backend = backend
        self.workdir = workdir
        self.test_hooks = test_hooks
        self.cache = ModelCache()
        # Test hooks that act on the *next* request, to fail one backend of an
        # agreement run deterministically: hang (delay) or die by SIGKILL.
        self._delay_next = 0.0
        self._crash_next = False

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        params = dict(request.get("params") or {})
        if op in TEST_HOOK_OPS and not self.test_hooks:
            raise _request_error(
                f"Op {op!r} is a test hook, disabled in this worker. Received: op={op!r}. "
                "Expected a WorkerPool started with test_hooks=True."
            )
        arrays_in = load_arrays(request["arrays"]) if request.get("arrays") else {}
        if op not in ("delay_next", "crash_next"):
            self._apply_pending_hooks()
        if op == "ping":
            return {"result": {"pong": True, "pid": os.getpid(), "backend": self.backend}}
        if op == "sleep":
            time.sleep(float(params.get("seconds", 1.0)))
            return {"result": {"slept": float(params.get("seconds", 1.0))}}
        if op == "delay_next":
            self._delay_next = float(params.get("seconds", 60.0))
            return {"result": {"delay_next": self._delay_next}}
        if op == "crash_next":
            self._crash_next = True
            return {"result": {"crash_next": True}}
        if op == "evict":
            return {"result": {"evicted": self.cache.evict(params.get("model"))}}
        if op == "shutdown":
            return {"result": {"bye": True}, "exit": True}
        model = self.cache.get(params["model"])
        if op == "load":
            return {"result": self._describe(model)}
        if op == "perturb":
            return {
                "result": perturb_weights(
                    model,
                    params.get("layer"),
                    float(params.get("scale", 0.1)),
                    int(params.get("seed", 0)),
                )
            }
        if op == "export":
            return {"result": self._export(model, arrays_in.get("images"), params)}
        if op in COMPUTE:
            meta, arrays = COMPUTE[op](model, arrays_in.get("images"), params)
            return {"result": meta, "arrays_out": arrays}
        raise _request_error(
            f"Unknown worker op. Received: op={op!r}. Expected one of "
            f"{['ping', 'load', 'evict', 'export', 'shutdown', *COMPUTE, *TEST_HOOK_OPS]}."
        )

    def _apply_pending_hooks(self) -> None:
        if self._crash_next:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if self._delay_next:
            delay, self._delay_next = self._delay_next, 0.0
            time.sleep(delay)

    def _describe(self, model: Any) -> dict[str, Any]:
        from .graph import conv_layers
        from .models import model_fingerprint

        return {
            "name": model.name,
            "fingerprint": model_fingerprint(model),
            "conv_layers": conv_layers(model),
            "input_shape": _shape_json(getattr(model, "input_shape", None)),
            "output_shape": _shape_json(getattr(model, "output_shape", None)),
        }

    def _export(self, model: Any, images: np.ndarray | None, params: dict[str, Any]) -> dict:
        from .agreement import export_artifacts

        what = list(params.get("what") or COMPUTE)
        artifacts = compute_artifacts(model, images, what, params.get("artifact_params") or {})
        path = export_artifacts(
            params["dir"],
            self.backend,
            params["name"],
            artifacts,
            info=dict(params.get("info") or {}, fingerprint=self._describe(model)["fingerprint"]),
        )
        return {"path": str(path)}


def _request_error(message: str) -> Exception:
    from .errors import BackendError

    return BackendError(message)


def _shape_json(shape: Any) -> Any:
    if shape is None:
        return None
    if isinstance(shape, list):
        return [_shape_json(s) for s in shape]
    return [None if d is None else int(d) for d in shape]


def _prepare_environment(backend: str, threads: int) -> None:
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["CONVVIZ_THREADS"] = str(threads)
    if backend == "jax":
        from .backends import xla_thread_flags  # no framework import at module level

        existing = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (existing + " " + xla_thread_flags(threads)).strip()
    extra = os.environ.get("CONVVIZ_WORKER_SYS_PATH")
    if extra:
        # The parent's import path (e.g. pytest's rootdir insertion), so that
        # ``module:factory`` sources and custom_objects modules import the same here.
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


def serve(backend: str, threads: int, workdir: Path, test_hooks: bool) -> int:
    """Run the worker loop (the body of ``python -m convviz_check.worker``)."""
    proto = _split_protocol_stream()
    _prepare_environment(backend, threads)
    started = time.perf_counter()
    if backend == "torch":
        import torch  # noqa: F401 - before anything that may import tensorflow

    import keras  # noqa: F401 - reads KERAS_BACKEND now

    from .backends import current_backend, framework_versions, pin_threads

    pinned = pin_threads(threads)
    _send(
        proto,
        {
            "ready": True,
            "protocol": PROTOCOL_VERSION,
            "backend": current_backend(),
            "versions": framework_versions(),
            "threads": pinned,
            "pid": os.getpid(),
            "startup_s": round(time.perf_counter() - started, 3),
        },
    )
    worker = Worker(backend, workdir, test_hooks)
    for line in sys.stdin:
        if not line.strip():
            continue
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            reply = worker.handle(request)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the parent
            _send(
                proto,
                {
                    "id": request_id,
                    "ok": False,
                    "error": {
                        "type": type(e).__name__,
                        "message": str(e),
                        "traceback": traceback.format_exc(limit=12),
                    },
                },
            )
            continue
        message: dict[str, Any] = {"id": request_id, "ok": True, "result": reply.get("result")}
        if reply.get("arrays_out") is not None:
            path = workdir / f"resp-{request_id}.npz"
            save_arrays(path, reply["arrays_out"])
            message["arrays"] = str(path)
        _send(proto, message)
        if reply.get("exit"):
            break
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convviz_check.worker",
        description="convviz_check backend worker (spoken to by convviz_check.agreement).",
    )
    parser.add_argument("--backend", required=True, choices=BACKENDS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", required=True, help="private temp dir for .npz files")
    parser.add_argument("--test-hooks", action="store_true", help="serve the sleep/perturb ops")
    args = parser.parse_args(argv)
    return serve(args.backend, max(1, args.threads), Path(args.workdir), args.test_hooks)


if __name__ == "__main__":
    raise SystemExit(main())
