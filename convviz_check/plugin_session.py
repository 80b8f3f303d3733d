"""Session and per-test state behind the pytest plugin (kept out of plugin.py so that
the hook module stays thin). Per-test state lives on the fixture object; per-session
state in ``config.stash``."""

from __future__ import annotations

from typing import Any

import pytest

from .errors import ConvvizError


def option(config: pytest.Config, name: str) -> Any:
    """CLI value if given, else the ini value (marker values are applied by callers)."""
    cli = config.getoption("--" + name.replace("_", "-"), default=None)
    if cli not in (None, False):
        return cli
    try:
        return config.getini(name.replace("-", "_"))
    except ValueError:
        return None


def configure(config: pytest.Config) -> None:
    """Session-wide checks at startup (filled by the golden issue)."""


class ConvvizFixture:
    """The object the ``convviz`` fixture returns."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.node = request.node
        self.config = request.config

    # -- compute shortcuts bound to the running backend -------------------------------
    def load_model(self, source: Any, **kwargs: Any) -> Any:
        from .models import load_model

        return load_model(source, **kwargs)

    def activations(self, *args: Any, **kwargs: Any) -> Any:
        from .explain.activations import activations

        return activations(*args, **kwargs)

    def filter_patterns(self, *args: Any, **kwargs: Any) -> Any:
        from .explain.filters import filter_patterns

        return filter_patterns(*args, **kwargs)

    def gradcam(self, *args: Any, **kwargs: Any) -> Any:
        from .explain.gradcam import gradcam

        return gradcam(*args, **kwargs)

    @property
    def backend(self) -> str:
        from .backends import current_backend

        return current_backend()

    # -- checks (filled by the golden, localization and agreement issues) -------------
    def check(self, name: str, value: Any, kind: str | None = None, tolerance: Any = None) -> None:
        raise ConvvizError("convviz.check is not implemented yet (golden issue).")

    @property
    def results_dir(self) -> str | None:
        """``--convviz-results-dir`` (CLI > ini), or None."""
        return option(self.config, "convviz_results_dir") or None

    def assert_localized(self, cam_or_heatmap: Any, target: Any, **kwargs: Any) -> None:
        """Assert a heatmap lands on ``target`` (Box or mask); see
        :func:`convviz_check.localization.assert_localized`. Owned by the localization
        issue (only this method)."""
        __tracebackhide__ = True
        from .localization import assert_localized

        # One overlay file per call: <results dir>/<test file>/<test name>/localized-<k>.png
        # (nodeid parts are sanitized by localization; "/" only makes subfolders).
        count = getattr(self, "_localized_calls", 0) + 1
        self._localized_calls = count
        kwargs.setdefault("results_dir", self.results_dir)
        kwargs.setdefault("name", f"{self.node.nodeid.replace('::', '/')}/localized-{count}")
        assert_localized(cam_or_heatmap, target, **kwargs)

    def assert_backends_agree(self, model_source: Any, images: Any, **kwargs: Any) -> None:
        """Assert the backends agree on ``model_source`` for ``images``; see
        :func:`convviz_check.agreement.agreement`. Owned by the agreement issue (only
        this method)."""
        __tracebackhide__ = True
        raise ConvvizError("convviz.assert_backends_agree is not implemented yet (agreement issue).")

    def finish(self) -> None:
        """Called at fixture teardown."""
