"""pytest plugin (entry point ``pytest11``): options, ini keys, markers, the fixture.

Thin on purpose: it imports nothing heavy at collection; Keras and the frameworks are
imported the first time a test uses the ``convviz`` fixture's compute shortcuts.
Disable with ``-p no:convviz_check``.
"""

from __future__ import annotations

from typing import Any

import pytest

# (name, help, default, choices) - every flag is also an ini key of the same name
# with dashes turned to underscores (marker > CLI > ini).
OPTIONS: list[tuple[str, str, Any, tuple[str, ...] | None]] = [
    ("convviz-update", "write goldens: missing, failed or all", None, ("missing", "failed", "all")),
    ("convviz-golden-dir", "root of the golden files (default: <rootdir>/golden)", None, None),
    ("convviz-results-dir", "write obtained arrays, PNGs and reports here", None, None),
    ("convviz-unused", "what to do with goldens no test used", None, ("warn", "fail", "delete")),
    ("convviz-backends", "comma-separated backends for cross-backend checks", None, None),
    (
        "convviz-export",
        "export computed artifacts to DIR for `convviz-check agree --exported`",
        None,
        None,
    ),
    ("convviz-golden-backend", "the reference backend that owns goldens", None, None),
    *[
        (
            f"convviz-tolerance-{kind}",
            f"project-wide {kind} bounds, e.g. '{fields}' (over the default table; "
            "a marker or check(tolerance=) overrides them)",
            None,
            None,
        )
        for kind, fields in (
            ("activation", "activation_max_rel=1e-4"),
            ("heatmap", "heatmap_rms=1e-5, heatmap_pearson_min=0.999"),
            ("pattern", "pattern_ssim_min=0.7"),
        )
    ],
]
FLAGS = [
    ("convviz-update-override", "write per-backend overrides under golden/_backend/<backend>/"),
    ("convviz-allow-ci-update", "allow --convviz-update when the CI variable is set"),
    ("convviz-require-backends", "fail (not skip) cross-backend checks when a backend is missing"),
]
INI_DEFAULTS = {
    "convviz_golden_backend": "tensorflow",
    "convviz_unused": "warn",
    "convviz_backends": "tensorflow,torch,jax",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("convviz", "convviz_check: golden files for what convnets look at")
    for name, help_text, default, choices in OPTIONS:
        group.addoption(
            f"--{name}", action="store", default=default, choices=choices, help=help_text
        )
        ini = name.replace("-", "_")
        parser.addini(ini, help=help_text, default=INI_DEFAULTS.get(ini))
    for name, help_text in FLAGS:
        group.addoption(f"--{name}", action="store_true", default=False, help=help_text)
        parser.addini(name.replace("-", "_"), help=help_text, type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "convviz(tolerance=None, backends=None): per-test convviz_check settings "
        "(a Tolerance or dict of bounds; the backends of cross-backend checks)",
    )
    config.addinivalue_line(
        "markers",
        "convviz_slow: larger models or many samples; deselected by default, run with -m convviz_slow",
    )
    from . import plugin_session

    plugin_session.configure(config)


def pytest_report_header(config: pytest.Config) -> str | None:
    from .plugin_session import SESSION

    state = config.stash.get(SESSION, None)
    if state is None:
        return None
    mode = f"update={state.update}" + (" (override)" if state.override else "")
    return (
        f"convviz: goldens {state.golden_dir} (owned by {state.reference}), "
        f"{mode if state.update else 'verify'}, unused={state.unused_mode}"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # convviz_slow tests are deselected unless the -m expression names them.
    markexpr = config.getoption("markexpr", "") or ""
    if "convviz_slow" in markexpr:
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if item.get_closest_marker("convviz_slow") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def convviz(request: pytest.FixtureRequest) -> Any:
    """convviz_check for this test: convviz.check(name, value, kind=None,
    tolerance=None, *, dtype=None, layers=None, model=None) compares with the golden
    file; convviz.assert_localized(cam_or_heatmap, target, ...) and
    convviz.assert_backends_agree(model_source, images, ...) assert;
    convviz.gradcam(model, images, ...), convviz.activations(model, images, ...),
    convviz.filter_patterns(model, layer, ...) and convviz.load_model(source) compute
    under the running backend (the model and images they see are fingerprinted into
    the next check's sidecar); convviz.backend and convviz.results_dir are facts.

    Values: a GradCAM (kind "heatmap"), a dict of activations (kind "activation"), or
    an array (a bare 4-D array needs kind=, e.g. kind="pattern" for filter patterns).
    ``--convviz-update=missing|failed|all`` writes goldens. The reference:
    docs/reference.md in the project's repository.
    """
    from .plugin_fixture import ConvvizFixture

    return ConvvizFixture(request)
