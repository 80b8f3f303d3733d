"""A golden's sidecar: the JSON next to its ``.npz`` that describes the arrays (names,
shapes, dtypes, stats, the content's sha256) and the facts of the write (backend,
versions, CPU, model fingerprint, tolerance, profile). Built, serialized and validated
here; :mod:`convviz_check.golden` reads and writes it with the arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import storage
from .artifacts import Artifact
from .errors import GoldenError, StorageError
from .types import KINDS, LAYOUTS

FORMAT_VERSION = 1


def _stats(a: np.ndarray) -> dict[str, float | int]:
    if a.size == 0:
        return {"size": 0}
    f = a.astype(np.float64)
    finite = np.isfinite(f)
    vals = f[finite]
    out: dict[str, float | int] = {"size": int(a.size), "nonfinite": int((~finite).sum())}
    if vals.size:
        out.update(
            min=float(vals.min()),
            max=float(vals.max()),
            mean=float(vals.mean()),
            std=float(vals.std()),
        )
    return out


def build_sidecar(artifact: Artifact, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sidecar of ``artifact``.

    Keys (written sorted): ``format_version``, ``kind``, ``layout``, ``names``,
    ``shape``, ``dtype``, ``stats`` (per entry), ``sha256`` (of the array contents),
    ``attrs`` and, from ``meta``: ``backend`` (the writing backend), ``versions``
    (keras and framework), ``cpu`` (instruction set, thread count),
    ``model_fingerprint``, ``tolerance`` and any other key given (a golden check adds
    ``profile``: the gate profile it ran under when written, ``exact`` or ``retrain``;
    a fact, never what later runs are judged by); for a GradCAM also ``method`` and
    ``target`` (copied from its attrs). A heatmap checked with object boxes keeps them
    as its ``boxes`` entry, listed with the other arrays.
    """
    meta = dict(meta or {})
    side: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": artifact.kind,
        "layout": artifact.layout,
        "names": list(artifact.arrays),
        "shape": {k: list(v.shape) for k, v in artifact.arrays.items()},
        "dtype": {k: v.dtype.name for k, v in artifact.arrays.items()},
        "stats": {k: _stats(v) for k, v in artifact.arrays.items()},
        "sha256": artifact.content_sha256(),
        "attrs": artifact.attrs,
        "backend": meta.pop("backend", None),
        "versions": meta.pop("versions", {}),
        "cpu": meta.pop("cpu", {}),
        "model_fingerprint": meta.pop("model_fingerprint", None),
        "tolerance": meta.pop("tolerance", {}),
    }
    # Which CAM method made the maps, for what target: copied when the artifact records
    # them (every new one does), never invented for a golden written before they existed,
    # so that re-encoding an old golden gives its bytes back.
    for key in ("method", "target"):
        if artifact.layout == "gradcam" and key in artifact.attrs:
            side[key] = artifact.attrs[key]
    side.update(meta)
    return side


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and validate a sidecar; every problem is a :class:`GoldenError`."""
    path = Path(path)
    if not path.exists():
        raise GoldenError(
            f"The sidecar {path} is missing next to its .npz. Restore it from version "
            "control, or delete the .npz and rewrite it with --convviz-update=missing."
        )
    try:
        side = storage.read_json(path)
    except StorageError as e:
        raise GoldenError(
            f"The sidecar cannot be used: {e} Restore it from version control, or delete "
            "the check's files and rewrite them with --convviz-update=missing."
        ) from None
    if not isinstance(side, dict):
        raise GoldenError(
            f"The sidecar {path} must hold a JSON object. Received: {type(side).__name__}."
        )
    required = ("format_version", "kind", "layout", "shape", "dtype", "sha256")
    missing = [k for k in required if k not in side]
    if missing:
        raise GoldenError(f"The sidecar {path} lacks required keys {missing}.")
    if side["format_version"] != FORMAT_VERSION:
        raise GoldenError(
            f"The sidecar {path} has format_version={side['format_version']!r}; this "
            f"convviz_check reads format_version={FORMAT_VERSION}."
        )
    if side["kind"] not in KINDS or side["layout"] not in LAYOUTS:
        raise GoldenError(
            f"The sidecar {path} has kind={side['kind']!r}, layout={side['layout']!r}; "
            f"expected kind in {KINDS} and layout in {LAYOUTS}."
        )
    _check_sidecar_types(path, side)
    return side


def _check_sidecar_types(path: Path, side: dict[str, Any]) -> None:
    """Every field the loader reads has the type it is read as (a hand-edited sidecar
    is a GoldenError, never a TypeError)."""

    def malformed(key: str) -> GoldenError:
        return GoldenError(f"The sidecar {path} has a malformed {key!r}: {side.get(key)!r}.")

    names = side.get("names")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise malformed("names")
    shape, dtype = side["shape"], side["dtype"]
    if not isinstance(shape, dict) or not all(
        isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in v)
        for v in shape.values()
    ):
        raise malformed("shape")
    if not isinstance(dtype, dict) or not all(isinstance(v, str) for v in dtype.values()):
        raise malformed("dtype")
    if not isinstance(side.get("attrs") or {}, dict):
        raise malformed("attrs")
    # the report and messages print these next to class indices
    names = side.get("class_names")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) and n.strip() for n in names)
    ):
        raise malformed("class_names")
    if not isinstance(side["sha256"], str):
        raise malformed("sha256")


def sidecar_bytes(sidecar: Mapping[str, Any]) -> bytes:
    return (json.dumps(sidecar, sort_keys=True, indent=2, allow_nan=True) + "\n").encode()


def with_class_names(meta: Mapping[str, Any], sidecar: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` (a check's sidecar facts) with the golden's ``class_names`` where it
    gives none: a run without names configured still names the classes its golden was
    written with, in its message and report, and a rewrite of the golden keeps them.

    Example:
        >>> with_class_names({"backend": "jax"}, {"class_names": ["cat", "dog"]})
        {'backend': 'jax', 'class_names': ['cat', 'dog']}
    """
    out = dict(meta)
    stored = sidecar.get("class_names")
    if not out.get("class_names") and stored:
        out["class_names"] = list(stored)
    return out
