"""The cross-backend side of the ``convviz`` fixture: which backends a test compares,
the session's worker pool, the export route, and the verdict with its pictures.

:meth:`convviz_check.plugin_fixture.ConvvizFixture.assert_backends_agree` is the
public entry (its docstring is the user's); it calls :func:`compare_backends` here and
records what comes back. Imported the first time a test compares backends, never at
collection.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import tolerances
from .backends import current_backend
from .errors import MissingBackendError
from .plugin_options import option
from .plugin_session import session_state

if TYPE_CHECKING:
    from .crossbackend.agreement import AgreementReport
    from .types import Outcome

_POOL = pytest.StashKey[Any]()


def session_pool(config: pytest.Config) -> Any:
    """The session's worker pool (one per pytest process), closed at session end. The
    backend this process runs is computed here, without a worker (``in_process``)."""
    from .crossbackend.pool import WorkerPool

    pool = config.stash.get(_POOL, None)
    if pool is None or pool.closed:
        pool = WorkerPool(in_process=True)
        config.stash[_POOL] = pool
        config.add_cleanup(pool.close)
    return pool


def backends_required(config: pytest.Config) -> bool:
    """``--convviz-require-backends`` (CLI > ini) or ``CONVVIZ_REQUIRE_BACKENDS`` set
    (not empty, not ``0``): a missing backend fails the test instead of skipping it."""
    return bool(option(config, "convviz_require_backends")) or (
        os.environ.get("CONVVIZ_REQUIRE_BACKENDS", "") not in ("", "0")
    )


def compare_backends(
    node: pytest.Item,
    model_source: Any,
    images: Any,
    kwargs: dict[str, Any],
    class_names: Sequence[str] | None = None,
) -> tuple[AgreementReport, Outcome] | None:
    """Compare the backends on ``model_source`` for ``images`` as the test ``node``
    asks (see ``ConvvizFixture.assert_backends_agree``), or export the running
    backend's results with ``--convviz-export``.

    Args:
        node: the test (its marker ``convviz(backends=..., tolerance=...)``).
        model_source, images: what to compare.
        kwargs: the call's keyword arguments for :func:`convviz_check.agreement`
            (``backends``, ``tolerance`` and ``pool`` are taken out here; ``name`` must
            already be).
        class_names: the model's class names; the Grad-CAM picture names the explained
            classes with them (``happy (3) x2``).

    Returns:
        (the report, its judged Outcome with the pictures where the session has a
        results dir), or None when exporting.

    Raises:
        pytest.skip.Exception / pytest.fail.Exception: a backend is not installed
            (fails with ``--convviz-require-backends``).
    """
    __tracebackhide__ = True
    from .crossbackend.agreement import agreement
    from .crossbackend.pool import expected_backend, parse_backends, require_backends

    config = node.config
    marker = node.get_closest_marker("convviz")
    marked = marker.kwargs if marker else {}
    backends = parse_backends(
        kwargs.pop("backends", None)
        or marked.get("backends")
        or option(config, "convviz_backends")
        or None
    )
    tolerance = tolerances.merge(marked.get("tolerance"), kwargs.pop("tolerance", None))
    export_dir = option(config, "convviz_export")
    if export_dir:
        root = Path(config.invocation_params.dir) / str(export_dir)
        _export(root, node.nodeid, model_source, images, kwargs)
        return None
    try:
        require_backends(backends)
    except MissingBackendError as e:
        if backends_required(config):
            pytest.fail(
                f"{e} (required: CONVVIZ_REQUIRE_BACKENDS / --convviz-require-backends)",
                pytrace=False,
            )
        pytest.skip(str(e))
    pool = kwargs.pop("pool", None) or session_pool(config)
    if expected_backend() in backends:
        # The backend this session runs computes here, never in a worker: a test
        # that has not imported Keras yet has it imported now (a worker would import
        # it all the same, in another process, and hold a second copy of the model).
        current_backend()
    report = agreement(
        model_source, images, backends=backends, tolerance=tolerance, pool=pool, **kwargs
    )
    from .judge.agreement import judge_agreement
    from .report.agreement import pictures

    outcome = judge_agreement(report)
    if session_state(config).results_dir is not None:
        outcome = dataclasses.replace(outcome, pictures=pictures(report, class_names))
    return report, outcome


def _export(
    root: Path, nodeid: str, model_source: Any, images: Any, kwargs: dict[str, Any]
) -> None:
    from .crossbackend.export import export_current_backend

    for ignored in ("pool", "timeout"):
        kwargs.pop(ignored, None)
    export_current_backend(root, nodeid, model_source, images, **kwargs)
