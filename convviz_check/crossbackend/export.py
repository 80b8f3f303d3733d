"""The export route: each backend environment writes its artifacts, one place compares.

For teams whose backends cannot share one environment: under each backend,
``pytest --convviz-export DIR`` calls :func:`export_current_backend` (the model is
loaded and the artifacts computed in-process, under the running backend), and
``convviz-check agree --exported DIR`` calls :func:`compare_exported`, which builds the
same :class:`~convviz_check.crossbackend.agreement.AgreementReport` as the worker route.

Layout (every file written atomically by :mod:`convviz_check.storage`, so parallel test
processes are safe)::

    DIR/<check name, sanitized>/<backend>/info.json         name, backend, format, model,
                                                             fingerprint, versions
    DIR/<check name, sanitized>/<backend>/<technique>.npz   Artifact.encode()
    DIR/<check name, sanitized>/<backend>/<technique>.json  kind, layout, attrs

Grad-CAM on this route is computed by each environment for its own top class; where
the classes differ the heatmaps explain different classes, which fails the check with
the classes named (the worker route aligns classes instead). The parent side
(:func:`export_artifacts`, :func:`load_exported`, :func:`compare_exported`) imports no
framework.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import storage
from ..artifacts import Artifact
from ..errors import InputError, StorageError
from ..types import BACKENDS, KIND_OF, TECHNIQUES, Tolerance
from .agreement import AgreementReport, Results, build_report
from .pool import parse_backends
from .requests import artifact_params, as_images, check_techniques, model_spec

EXPORT_FORMAT = 2
# How each technique's artifact is stored.
LAYOUT_OF = {"activations": "activations", "gradcam": "gradcam", "filters": "array"}
# One exported check: backend -> info, backend -> results.
Exported = tuple[dict[str, dict[str, Any]], dict[str, Results]]


def export_dirname(name: str) -> str:
    """The directory of check ``name`` (e.g. a pytest node id): the sanitized name, with
    a short hash of the original when sanitizing changed it, so that names differing
    only in unsafe characters stay in different directories."""
    safe = storage.sanitize_part(name)
    if safe == name:
        return safe
    return storage.sanitize_part(f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}")


def _as_artifact(technique: str, value: Any) -> Artifact:
    if isinstance(value, Artifact):
        artifact = value
    else:
        attrs = {"filters": list(range(len(value)))} if technique == "filters" else {}
        artifact = Artifact.from_value(value, KIND_OF[technique], attrs=attrs)
    expected = (KIND_OF[technique], LAYOUT_OF[technique])
    if (artifact.kind, artifact.layout) != expected:
        raise InputError(
            f"A {technique} artifact has kind {expected[0]!r} and layout {expected[1]!r}. "
            f"Received: kind={artifact.kind!r}, layout={artifact.layout!r}."
        )
    return artifact


def export_artifacts(
    directory: str | os.PathLike[str],
    backend: str,
    name: str,
    artifacts: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write one backend's artifacts for a later ``convviz-check agree --exported``.

    Args:
        directory: the export root (``--convviz-export DIR``).
        backend: the backend that computed them.
        name: the check's name (e.g. the pytest node id).
        artifacts: technique -> :class:`~convviz_check.artifacts.Artifact`, or the
            value itself: a dict of activations, a ``GradCAM``, an array of filter
            patterns.
        info: extra facts (versions, fingerprint, model source).

    Returns:
        The backend's directory.
    """
    if backend not in BACKENDS:
        raise InputError(
            f"Unknown backend. Received: backend={backend!r}. Expected one of {BACKENDS}."
        )
    unknown = [t for t in artifacts if t not in TECHNIQUES]
    if unknown:
        raise InputError(
            f"Unknown technique(s). Received: {unknown}. Expected some of {TECHNIQUES}."
        )
    out = Path(directory) / export_dirname(name) / backend
    for technique, value in artifacts.items():
        artifact = _as_artifact(technique, value)
        storage.write_bytes(out / f"{technique}.npz", artifact.encode())
        described = {"kind": artifact.kind, "layout": artifact.layout, "attrs": artifact.attrs}
        storage.write_json(out / f"{technique}.json", described)
    storage.write_json(
        out / "info.json",
        {**dict(info or {}), "name": name, "backend": backend, "format": EXPORT_FORMAT},
    )
    return out


def _load_backend(backend_dir: Path) -> Results:
    results: Results = {}
    for technique in TECHNIQUES:
        npz = backend_dir / f"{technique}.npz"
        if not npz.is_file():
            continue
        json_path = backend_dir / f"{technique}.json"
        described = storage.read_json(json_path)
        kind, layout = described.get("kind"), described.get("layout")
        if (kind, layout) != (KIND_OF[technique], LAYOUT_OF[technique]):
            raise StorageError(
                f"{json_path} describes kind={kind!r}, layout={layout!r}; a {technique} "
                f"export has kind {KIND_OF[technique]!r}, layout {LAYOUT_OF[technique]!r}."
            )
        results[technique] = Artifact.decode(
            storage.read_npz(npz), kind, layout, described.get("attrs") or {}
        )
    return results


def load_exported(directory: str | os.PathLike[str]) -> dict[str, Exported]:
    """Read an export root: check directory -> (backend -> info, backend -> results).

    Raises:
        InputError: ``directory`` does not exist.
        StorageError: a file is unreadable, or was written in another export format.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputError(
            f"Export directory not found. Received: {str(root)!r}. Expected the DIR given "
            "to --convviz-export in each backend environment."
        )
    checks: dict[str, Exported] = {}
    for check_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        infos: dict[str, dict[str, Any]] = {}
        results: dict[str, Results] = {}
        for backend_dir in sorted(p for p in check_dir.iterdir() if p.is_dir()):
            info_path = backend_dir / "info.json"
            if backend_dir.name not in BACKENDS or not info_path.is_file():
                continue
            info = storage.read_json(info_path)
            if info.get("format") != EXPORT_FORMAT:
                raise StorageError(
                    f"{info_path} is in export format {info.get('format')!r}; this version "
                    f"reads format {EXPORT_FORMAT}. Export again with this version."
                )
            infos[backend_dir.name] = info
            results[backend_dir.name] = _load_backend(backend_dir)
        if results:
            checks[check_dir.name] = (infos, results)
    return checks


def _one_backend_report(
    name: str, order: list[str], expected: Sequence[str], results: Mapping[str, Results]
) -> AgreementReport:
    what = tuple(t for t in TECHNIQUES if any(t in results[b] for b in order))
    report = AgreementReport(model=name, backends=tuple(order) or ("-",), what=what)
    report.problems.append(
        f"exported by {order or 'no backend'} only; expected at least two of "
        f"{tuple(expected)} (missing: {[b for b in expected if b not in results]})"
    )
    return report


def compare_exported(
    directory: str | os.PathLike[str],
    backends: Sequence[str] | str | None = None,
    tolerance: Tolerance | Mapping[str, float] | None = None,
) -> dict[str, AgreementReport]:
    """Compare the backends exported under ``directory`` (one report per check).

    Args:
        directory: the export root.
        backends: restrict and order the backends (default: those exported, in the
            order tensorflow, torch, jax).
        tolerance: overrides of the cross-backend defaults.

    Returns:
        check name -> :class:`~.agreement.AgreementReport`. A check exported by fewer
        than two backends gets a report with a problem saying which backends are
        missing.
    """
    wanted = parse_backends(backends) if backends is not None else None
    checks = load_exported(directory)
    if not checks:
        raise InputError(
            f"No exported checks found. Received: {str(directory)!r} (no <check>/<backend>/"
            "info.json). Expected the DIR given to --convviz-export."
        )
    reports = {}
    for dirname, (infos, results) in checks.items():
        order = [b for b in (wanted or BACKENDS) if b in results]
        name = str(next((i.get("name") for i in infos.values() if i.get("name")), dirname))
        if len(order) < 2:
            reports[name] = _one_backend_report(name, order, wanted or BACKENDS, results)
            continue
        what = tuple(t for t in TECHNIQUES if any(t in results[b] for b in order))
        report = build_report(
            str(infos[order[0]].get("model") or name),
            order,
            what,
            {b: results[b] for b in order},
            tolerance,
            {b: infos[b] for b in order},
        )
        report.subjects["check"] = name
        reports[name] = report
    return reports


def export_current_backend(
    directory: str | os.PathLike[str],
    name: str,
    model_source: str | os.PathLike[str],
    images: Any,
    *,
    what: Sequence[str] = TECHNIQUES,
    safe_mode: bool = True,
    custom_objects: Sequence[str] | None = None,
    **params: Any,
) -> Path:
    """Load the model here, under the running Keras backend, compute and export.

    What ``pytest --convviz-export DIR`` does for each cross-backend check in each
    backend environment.

    Args:
        directory: the export root.
        name: the check's name (e.g. the pytest node id).
        model_source: as for :func:`~.agreement.agreement` (a source, never an object).
        images: ``(N, H, W, C)`` or ``(H, W, C)``.
        what: techniques among ``"activations"``, ``"gradcam"``, ``"filters"``.
        safe_mode, custom_objects: passed to :func:`convviz_check.load_model`.
        **params: the technique keyword arguments of :func:`~.agreement.agreement`
            (``layers``, ``class_index``, ``filters``, ``filter_steps``...); ``pool``
            and ``timeout`` concern workers and are ignored here.

    Returns:
        The backend's export directory.
    """
    from ..backends import current_backend, framework_versions
    from ..models import load_model, model_fingerprint
    from .compute import compute_artifacts, reduced_precision

    what = check_techniques(what)
    for ignored in ("pool", "timeout"):
        params.pop(ignored, None)
    spec = model_spec(model_source, safe_mode, custom_objects)
    unknown = sorted(set(params) - set(inspect.signature(artifact_params).parameters))
    if unknown:
        raise InputError(
            f"Unknown keyword argument(s) {unknown}. Expected technique parameters of "
            f"agreement(): {sorted(inspect.signature(artifact_params).parameters)}."
        )
    technique_params = artifact_params(**params)
    model = load_model(
        spec["source"], safe_mode=safe_mode, custom_objects=spec["custom_objects"] or None
    )
    artifacts = compute_artifacts(model, as_images(images), what, technique_params)
    info = {
        "model": str(model_source),
        "fingerprint": model_fingerprint(model),
        "versions": framework_versions(),
        "reduced_precision": reduced_precision(model),
    }
    return export_artifacts(directory, current_backend(), name, artifacts, info=info)
