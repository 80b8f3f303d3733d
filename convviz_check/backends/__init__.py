"""Backend gradient layer: the ONLY module that branches on ``keras.config.backend()``.

Every backend module (``tensorflow.py``, ``torch.py``, ``jax.py``) provides the same
functions with the same signatures, NumPy at the boundary:

- ``make_value_and_grad(model, loss_fn, wrt)`` -> ``fn(inputs, aux)`` returning
  ``(loss: float, outputs: list[np.ndarray], grad: np.ndarray)``; compiled once and
  reused for every call (no retrace per call: ``aux`` is a tensor, never a Python int).
- ``make_ascent(model, loss_fn, model_takes_aux=False)`` -> ``fn(image, aux, steps,
  learning_rate)`` returning the image after ``steps`` steps of L2-normalized gradient
  ascent (per sample). With ``model_takes_aux`` the model is called on ``[image, aux]``
  (a model that computes only the channels named by ``aux``).
- ``make_forward(model)`` -> ``fn(inputs) -> list[np.ndarray]``: a compiled inference
  call (tf.function / jax.jit / torch no_grad). Preferred to ``predict_on_batch`` for
  many large outputs: on TF, predict_on_batch's ``.numpy()`` copies cost ~0.7x a forward
  pass for Xception-41's 44 activation maps (measured: forward 11.3 s, 44-output graph
  13.9 s, through predict_on_batch 22.2 s, batch 8 at 299x299).
- ``pin_threads(n)``: pin the framework's thread pools.
- ``whole_batches()``: whether callers should pass whole batches, unpadded (the backend
  splits a call into memory-sized passes itself and compiles nothing per shape: torch
  on a CPU), rather than fixed-size padded chunks (TF and JAX trace or compile per shape).

Defined here once for every backend: ``prepare_import(backend, threads)``, the steps
that must precede ``import keras`` in a fresh process (the backend worker's first step).

``loss_fn(outputs, aux)`` is written with ``keras.ops`` so that one definition serves
all three backends; it returns a scalar (a sum over the batch, so that each sample's
gradient is its own).
"""

from __future__ import annotations

import importlib
import os
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import BackendError
from ..types import BACKENDS

# The persistent JAX compilation cache directory travels to backend workers in this
# environment variable (they inherit the parent's environment); backends/jax.py applies
# it when it is imported, before any of our programs compile.
JAX_CACHE_ENV = "CONVVIZ_JAX_CACHE_DIR"


def current_backend() -> str:
    import keras

    return keras.config.backend()


def _module() -> ModuleType:
    name = current_backend()
    if name not in BACKENDS:
        raise BackendError(
            f"Unsupported Keras backend. Received: keras.config.backend()={name!r}. "
            f"Expected one of {BACKENDS}."
        )
    return importlib.import_module(f"{__name__}.{name}")


def make_value_and_grad(model: Any, loss_fn: Any, wrt: int = 0) -> Any:
    """Compiled ``fn(inputs, aux) -> (loss, outputs, grad wrt inputs[wrt])``."""
    return _module().make_value_and_grad(model, loss_fn, wrt)


def make_forward(model: Any) -> Any:
    """Compiled ``fn(inputs: list[np.ndarray]) -> list[np.ndarray]`` (cached per model,
    for as long as the model lives)."""
    from ..graph import model_cache

    cache = model_cache(model, "backends.forward")
    if "fn" not in cache:
        cache["fn"] = _module().make_forward(model)
    return cache["fn"]


def whole_batches() -> bool:
    """Whether callers should pass a whole batch per call, unpadded: the running
    backend splits a call into memory-sized passes itself and compiles nothing per
    shape (torch on a CPU). Otherwise fixed-size chunks with a padded last chunk reuse
    one compiled program (TensorFlow, JAX)."""
    return bool(_module().whole_batches())


def make_ascent(model: Any, loss_fn: Any, model_takes_aux: bool = False) -> Any:
    """Compiled ``fn(image, aux, steps, learning_rate) -> image`` (gradient ascent)."""
    return _module().make_ascent(model, loss_fn, model_takes_aux)


def make_param_ascent(
    model: Any, loss_fn: Any, render_fn: Any, model_takes_aux: bool, coupled: bool = False
) -> Any:
    """Compiled Adam ascent ``fn(params, aux, schedule, steps, learning_rate) -> params``.

    Step ``i`` maximizes ``loss_fn([model(image)], aux) - penalty`` where ``(image,
    penalty) = render_fn(params, schedule[i])`` (``keras.ops`` code: the robust feature
    visualization's parameterization and transforms), with Adam (per element, so each
    image of the batch ascends on its own). ``coupled``: the loss couples the images
    of the batch (a diversity term), so a backend must not split the batch."""
    return _module().make_param_ascent(model, loss_fn, render_fn, model_takes_aux, coupled)


def fast_kernels() -> AbstractContextManager[Any]:
    """The running backend's kernel replacements (torch: channels-last views without the
    NCHW copies; JAX: depthwise convolutions as multiply-adds), as a context manager.
    Our compiled functions enter it themselves; benchmarks and code that call a model
    directly enter it to run the same kernels. TensorFlow has none (a no-op)."""
    return _module().fast_kernels()


def pin_threads(n: int | None = None) -> dict[str, int]:
    """Pin the running framework's thread pools to ``n`` (default ``CONVVIZ_THREADS``
    or the CPU count) and return what was set, for sidecars and benchmark headers."""
    if n is None:
        n = int(os.environ.get("CONVVIZ_THREADS", "0")) or (os.cpu_count() or 1)
    return _module().pin_threads(int(n))


def framework_versions() -> dict[str, str]:
    """Versions of keras and the running framework (for sidecars and reports)."""
    import keras

    versions = {"keras": keras.__version__, "backend": current_backend()}
    versions.update(_module().framework_version())
    return versions


def prepare_import(backend: str, threads: int | None = None) -> None:
    """Make the next ``import keras`` run ``backend``, in the one import order that works.

    Sets ``KERAS_BACKEND`` (Keras reads it once, at import) and, for JAX, ``XLA_FLAGS``
    pinning the XLA CPU client to ``threads`` (read when the client starts). For torch,
    imports torch now: keras-hub imports tensorflow under every backend, and where torch
    and tensorflow share a process torch must be imported first (the other order can
    segfault). Call it before anything imports Keras (the backend worker does, first
    thing).

    Raises:
        BackendError: an unknown backend, or Keras already imported under another one.
    """
    if backend not in BACKENDS:
        raise BackendError(
            f"Unknown backend. Received: backend={backend!r}. Expected one of {BACKENDS}."
        )
    keras = sys.modules.get("keras")
    if keras is not None and keras.config.backend() != backend:
        raise BackendError(
            f"Keras is already imported under {keras.config.backend()!r}; the backend is "
            f"fixed at import. Received: backend={backend!r}. Expected prepare_import to "
            "run before Keras is imported."
        )
    os.environ["KERAS_BACKEND"] = backend
    if backend == "jax" and threads is not None:
        existing = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (existing + " " + xla_thread_flags(threads)).strip()
    if backend == "torch":
        importlib.import_module("torch")


def xla_thread_flags(n: int) -> str:
    """XLA_FLAGS value pinning the XLA CPU client to ``n`` threads. Must be in the
    environment before jax is imported (workers and benchmarks set it)."""
    return f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'} intra_op_parallelism_threads={n}"


def enable_determinism() -> None:
    """Make the running framework's kernels deterministic (training the bundled
    examples: the same seed must give the same weights on a machine)."""
    _module().enable_determinism()


def to_numpy(x: Any) -> np.ndarray:
    """A Keras variable or a framework tensor as a NumPy array, without the NumPy 2
    ``copy=`` deprecation warning that ``keras.ops.convert_to_numpy`` raises on
    TensorFlow variables and torch tensors (one per weight: hundreds per run)."""
    return _module().to_numpy(getattr(x, "value", x))


def set_jax_compilation_cache(path: str | os.PathLike[str] | None) -> str | None:
    """Use a persistent JAX compilation cache in directory ``path`` (``None``: no change).

    Compiled programs are written there and read back by later processes (a CI run
    after the previous one, the JAX worker of a cross-backend check), keyed by JAX on
    the program, the jax/jaxlib versions and the machine, so one directory can be shared
    by runs of different versions. Every program is cached, however small or quick to
    compile. Sets ``CONVVIZ_JAX_CACHE_DIR`` (inherited by backend workers) and JAX's own
    ``JAX_COMPILATION_CACHE_DIR`` family (read when jax is imported), and configures a
    jax already imported. Costs nothing under TensorFlow or torch: only JAX compiles
    through it. The cache holds executable code: keep the directory out of reach of
    anyone you would not let run code on the machine.

    Returns:
        The absolute directory, or ``None``.
    """
    if path is None or str(path) == "":
        return None
    directory = str(Path(path).expanduser().resolve())
    os.environ[JAX_CACHE_ENV] = directory
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    if "jax" in sys.modules:
        importlib.import_module(f"{__name__}.jax").enable_compilation_cache(directory)
    return directory
