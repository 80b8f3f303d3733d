"""Model sources: ``cc.load_model`` and the model fingerprint.

Sources: a ``.keras`` file; a legacy HDF5 ``.h5``/``.hdf5`` file saved by
tf.keras 2; a keras-hub preset directory (made with ``save_to_preset``); ``hub:<name>``
(a keras-hub preset through its cache, bounded by a timeout so that an offline machine
fails fast); ``package.module:factory`` (a callable returning a model that loads its
weights from files); or a ``keras.Model``, which passes through.

Loading never executes untrusted code: ``safe_mode=True`` by default (Lambda layers
are refused), ``compile=False`` (no optimizer state or custom losses needed).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GraphError, ModelLoadError

FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
HUB_TIMEOUT_DEFAULT_S = 30.0


def resolve_custom_objects(custom_objects: Mapping[str, Any] | Sequence[str] | None) -> dict:
    """A dict of custom objects from a dict, or from importable module names (each
    module is imported, which runs its ``register_keras_serializable`` decorators, and
    its public Keras layer classes are added by name)."""
    if custom_objects is None:
        return {}
    if isinstance(custom_objects, Mapping):
        return dict(custom_objects)
    import keras

    found: dict[str, Any] = {}
    for mod_name in custom_objects:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise ModelLoadError(
                f"Cannot import custom_objects module. Received: {mod_name!r} ({e}). "
                "Expected an importable module name."
            ) from e
        for attr, value in vars(mod).items():
            if (
                not attr.startswith("_")
                and isinstance(value, type)
                and issubclass(value, keras.layers.Layer | keras.Model)
            ):
                found[attr] = value
    return found


def _fail(source: Any, reason: str) -> ModelLoadError:
    return ModelLoadError(f"Cannot load model from source {str(source)!r}: {reason}")


def _check_graph(model: Any, source: Any) -> Any:
    import keras

    from .graph import functional_of

    if not isinstance(model, keras.Model):
        raise _fail(source, f"expected a keras.Model, received {type(model).__name__!r}.")
    try:
        functional_of(model)
    except GraphError as e:
        raise _fail(source, str(e)) from e
    return model


def _load_file(path: Path, safe_mode: bool, custom_objects: dict) -> Any:
    import keras

    from ._fastload import initializers_deferred

    try:
        with initializers_deferred():  # the file overwrites every initial value
            return keras.saving.load_model(
                str(path), compile=False, safe_mode=safe_mode, custom_objects=custom_objects
            )
    except ValueError as e:
        msg = str(e)
        if "safe_mode" in msg or "Lambda" in msg:
            raise _fail(
                path,
                "refused by safe_mode=True (it would deserialize executable code, e.g. "
                "a Lambda layer). Load it with safe_mode=False only if you trust the file. "
                f"Keras said: {msg.splitlines()[0]}",
            ) from e
        raise _fail(path, f"{type(e).__name__}: {msg}") from e
    except Exception as e:  # corrupt zips, bad HDF5, unknown classes...
        raise _fail(path, f"{type(e).__name__}: {e}") from e


def _task_class(preset: str) -> Any:
    """The keras-hub class recorded in a local preset's ``task.json`` (None if absent)."""
    import json

    import keras

    task_json = Path(preset) / "task.json"
    if not task_json.is_file():
        return None
    try:
        name = json.loads(task_json.read_text())["registered_name"]
    except (ValueError, KeyError) as e:
        raise ModelLoadError(f"Invalid keras-hub preset task.json in {preset!r}: {e}") from e
    return keras.saving.get_registered_object(name)


def _load_preset(preset: str, source: Any) -> Any:
    try:
        import keras_hub
    except ImportError as e:
        raise _fail(source, "keras-hub is not installed (pip install 'convviz_check[hub]').") from e
    # Task.from_preset cannot be called on the base class: use the task class the preset
    # names (local presets), else the image classifier, else the bare backbone.
    candidates = [
        c
        for c in (_task_class(preset), keras_hub.models.ImageClassifier, keras_hub.models.Backbone)
        if c is not None
    ]
    errors = []
    for cls in candidates:
        try:
            return cls.from_preset(preset)
        except Exception as e:  # noqa: BLE001 - try the next loader, report all
            errors.append(f"{cls.__name__}.from_preset: {type(e).__name__}: {e}")
            if "NameResolution" in str(e) or "ConnectionError" in type(e).__name__:
                break  # offline: the next loader would only wait for the network again
    raise _fail(source, "keras-hub could not load it. " + " | ".join(errors))


def _with_timeout(fn: Any, timeout: float, source: Any) -> Any:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise _fail(
            source,
            f"timed out after {timeout:g} s (no network? set CONVVIZ_HUB_TIMEOUT, or "
            "save the preset locally with save_to_preset and pass its directory).",
        )
    if "error" in box:
        err = box["error"]
        if isinstance(err, ModelLoadError):
            raise err
        raise _fail(source, f"{type(err).__name__}: {err}") from err
    return box["value"]


def _load_factory(spec: str, source: Any) -> Any:
    mod_name, func_name = spec.rsplit(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise _fail(source, f"cannot import module {mod_name!r} ({e}).") from e
    factory = getattr(mod, func_name, None)
    if not callable(factory):
        raise _fail(source, f"module {mod_name!r} has no callable {func_name!r}.")
    try:
        return factory()
    except Exception as e:
        raise _fail(source, f"the factory raised {type(e).__name__}: {e}") from e


def load_model(
    source: Any,
    safe_mode: bool = True,
    custom_objects: Mapping[str, Any] | Sequence[str] | None = None,
) -> Any:
    """Load a Keras model from any supported source.

    Args:
        source: a ``keras.Model``; a path to ``.keras``, ``.h5``/``.hdf5`` or a
            keras-hub preset directory; ``"hub:<preset>"``; or ``"pkg.module:factory"``.
        safe_mode: refuse files that would execute code on load (Keras ``safe_mode``).
        custom_objects: a dict, or a list of importable module names that define them.

    Returns:
        A functional (or Sequential) ``keras.Model``.

    Raises:
        ModelLoadError: naming the source and the reason.

    Example:
        >>> model = cc.load_model("models/scenes_convnet.keras")
    """
    import keras

    if isinstance(source, keras.Model):
        return _check_graph(source, f"<{type(source).__name__} {source.name}>")
    if not isinstance(source, str | os.PathLike):
        raise ModelLoadError(
            f"Unsupported model source. Received: source of type {type(source).__name__!r}. "
            "Expected a keras.Model, a path (.keras, .h5, .hdf5, preset directory), "
            "'hub:<preset>' or 'pkg.module:factory'."
        )
    text = os.fspath(source)
    objects = resolve_custom_objects(custom_objects)
    if text.startswith("hub:"):
        timeout = float(os.environ.get("CONVVIZ_HUB_TIMEOUT", HUB_TIMEOUT_DEFAULT_S))
        model = _with_timeout(lambda: _load_preset(text[4:], text), timeout, text)
        return _check_graph(model, text)
    path = Path(text)
    if not path.exists() and FACTORY_RE.match(text):
        with keras.saving.custom_object_scope(objects):
            return _check_graph(_load_factory(text, text), text)
    if not path.exists():
        raise _fail(text, "no such file or directory.")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _fail(text, "a directory, but not a keras-hub preset (no config.json).")
        return _check_graph(_load_preset(str(path), text), text)
    suffix = path.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise _fail(
            text,
            f"unknown extension {suffix!r}. Expected .keras, .h5, .hdf5 or a preset directory.",
        )
    return _check_graph(_load_file(path, safe_mode, objects), text)


def model_fingerprint(model: Any) -> str:
    """sha256 over the model's weights (shapes and float32 values, in weight order).

    Backend-neutral: the same weights file gives the same fingerprint on TensorFlow,
    PyTorch and JAX, so goldens can key on it. Variable *paths* are left out on purpose:
    they carry auto-generated unique names that change between loads of one file.
    """
    h = hashlib.sha256()
    for v in model.weights:
        arr = np.ascontiguousarray(np.asarray(keras_to_numpy(v)), dtype=np.float32)
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def keras_to_numpy(x: Any) -> np.ndarray:
    from .backends import to_numpy

    return to_numpy(x)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
