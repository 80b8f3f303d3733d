"""pytest plugin (entry point ``pytest11``): options, ini keys, markers, the fixture.

Thin on purpose: it imports nothing heavy at collection; Keras and the frameworks are
imported the first time a test uses the ``convviz`` fixture's compute shortcuts.
Disable with ``-p no:convviz_check``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from typing import Any

import pytest

from .types import DEFAULT_REFERENCE_BACKEND

# TensorFlow reads its C++ log level once, when it is imported: set it before any test
# module or conftest imports it (this module loads first, as an entry point), unless the
# user chose one. "2" keeps errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    (
        "convviz-prestart",
        "auto (default): when a selected test runs a cross-backend check (its code calls "
        "assert_backends_agree, or a convviz(backends=...) marker), start the other "
        "backends' workers when collection ends, so that they import their frameworks "
        "while the first tests run; no: start each on first use",
        None,
        ("auto", "no"),
    ),
    (
        "convviz-profile",
        "gate profile of golden checks: exact (default; bounds at numerical noise, for "
        "refactors and upgrades) or retrain (heatmaps judged on what survives a retrain); "
        "a marker convviz(profile=...) overrides it",
        None,
        ("exact", "retrain"),  # convviz_check.types.PROFILES (not imported at collection)
    ),
    (
        "convviz-gradcam-layer",
        "the Grad-CAM layer of the fixture's gradcam / cam when a call passes no layer= "
        "(e.g. the map before an all-convolutional head's class-score convolution); a "
        "marker convviz(gradcam_layer=...) overrides it",
        None,
        None,
    ),
    (
        "convviz-model",
        "the model a gate checks (a .keras path or another cc.load_model source; "
        "read by the gate's conftest through convviz_check.plugin.gate_model)",
        None,
        None,
    ),
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
    "convviz_golden_backend": DEFAULT_REFERENCE_BACKEND,
    "convviz_unused": "warn",
    "convviz_backends": "tensorflow,torch,jax",
    "convviz_prestart": "auto",
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
    jax_cache_help = (
        "persistent JAX compilation cache directory, shared by later runs and by JAX "
        "cross-backend workers (ignored by TensorFlow and torch, which do not compile "
        "through it)"
    )
    group.addoption("--convviz-jax-cache", metavar="DIR", default=None, help=jax_cache_help)
    group.addoption(  # a flag only, never an ini key: a gate must not stop failing by config
        "--convviz-measure",
        action="store_true",
        default=False,
        help="record every golden check's metrics in --convviz-results-dir and fail none "
        "(what `convviz-check calibrate` runs on each retrain; never a gate)",
    )
    parser.addini("convviz_jax_cache_dir", help=jax_cache_help, default=None)
    parser.addini(
        "convviz_class_names",
        help="a file of the model's class names (one per line, or a JSON list) that golden "
        "failure messages print next to class indices (relative to the ini file)",
        default=None,
    )
    parser.addini(
        "convviz_regions",
        help="suspect regions of heatmap checks, one 'name = y0, x0, y1, x1' per line "
        "(input-image pixels, half-open; e.g. 'watermark = 0, 48, 12, 64'): the retrain "
        "profile measures each map's mass in them; a marker convviz(regions=...) or "
        "check(regions=...) overrides them",
        type="linelist",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "convviz(tolerance=None, backends=None, profile=None, gradcam_layer=None, "
        "regions=None): per-test convviz_check settings (a Tolerance or dict of bounds; "
        "the backends of cross-backend checks; the gate profile of golden checks, 'exact' "
        "or 'retrain'; the layer of the fixture's gradcam / cam when a call passes no "
        "layer=; the suspect regions of heatmap checks, name -> Box or (y0, x0, y1, x1))",
    )
    config.addinivalue_line(
        "markers",
        "convviz_slow: larger models or many samples; deselected by default, run with -m convviz_slow",
    )
    from . import plugin_options, plugin_session

    plugin_options.check_bool_options(config, [name.replace("-", "_") for name, _ in FLAGS])
    plugin_options.check_region_options(config)
    plugin_session.configure(config)
    _configure_jax_cache(config)
    _quiet_tensorflow()


def _quiet_tensorflow() -> None:
    """TensorFlow's Python warnings (``WARNING:tensorflow:... triggered tf.function
    retracing`` when Grad-CAM runs for other classes or batch shapes) go through the
    ``tensorflow`` logger: keep them out of test output, as the CLI does, unless the
    user set that logger's level."""
    tf_logger = logging.getLogger("tensorflow")
    if tf_logger.level == logging.NOTSET:
        tf_logger.setLevel(logging.ERROR)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, Any]:
    """Drop the frameworks' native start-up log lines (absl writes them to stderr
    before its log is initialized, whatever ``TF_CPP_MIN_LOG_LEVEL`` says) from a
    test's captured stderr, so a failure shows what the test printed."""
    report = yield
    from .cli import _NATIVE_NOISE

    sections = []
    for title, content in report.sections:
        if title.startswith("Captured stderr"):
            kept = [line for line in content.splitlines(True) if not _NATIVE_NOISE.match(line)]
            content = "".join(kept)
            if not content.strip():
                continue
        sections.append((title, content))
    report.sections = sections
    return report


def _configure_jax_cache(config: pytest.Config) -> None:
    """``--convviz-jax-cache`` (relative to the invocation directory) or the ini key
    ``convviz_jax_cache_dir`` (relative to the ini file): see
    :func:`convviz_check.backends.set_jax_compilation_cache`."""
    from pathlib import Path

    from .backends import set_jax_compilation_cache

    cli = config.getoption("--convviz-jax-cache", default=None)
    ini = None if cli else (config.getini("convviz_jax_cache_dir") or None)
    if cli:
        set_jax_compilation_cache(Path(config.invocation_params.dir) / str(cli))
    elif ini:
        base = config.inipath.parent if config.inipath else config.rootpath
        set_jax_compilation_cache(base / str(ini))


def pytest_report_header(config: pytest.Config) -> str | None:
    from .plugin_session import SESSION

    state = config.stash.get(SESSION, None)
    if state is None:
        return None
    mode = f"update={state.update}" + (" (override)" if state.override else "")
    profile = f", profile {state.profile}" if state.profile != "exact" else ""
    lines = [
        f"convviz: goldens {state.golden_dir} (owned by {state.reference}), "
        f"{mode if state.update else 'verify'}, unused={state.unused_mode}{profile}"
    ]
    if state.profile == "retrain" or state.calibration is not None:
        from .calibration import bounds_facts

        lines.append(f"convviz: retrain profile: {bounds_facts(state.calibration)['text']}")
    from .backends import JAX_CACHE_ENV

    if os.environ.get(JAX_CACHE_ENV):
        lines.append(
            f"convviz: JAX compilation cache {os.environ[JAX_CACHE_ENV]} (used where JAX "
            "compiles: the jax backend and JAX workers; TensorFlow and torch ignore it)"
        )
    return "\n".join(lines)


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


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the cross-backend workers in the background when a selected test will need
    them (see ``--convviz-prestart``). Not in pytest-xdist workers (each would start its
    own three) nor with ``--convviz-export`` (no workers then). A worker that fails to
    start is started again, with its error, by the check that needs it.

    Only workers that will be used: the backends a test's marker names, else those of
    ``--convviz-backends`` / ini ``convviz_backends`` for a test whose code calls
    ``assert_backends_agree`` without ``backends=`` (a call that passes them is left to
    start its own on first use: its names are not known here). Never the backend this
    session runs (read the way Keras reads it, before any test imports Keras): it is
    computed in this process.
    """
    from .plugin_options import option

    config = session.config
    if (
        option(config, "convviz_prestart") == "no"
        or option(config, "convviz_export")
        or hasattr(config, "workerinput")
    ):
        return
    from .crossbackend.pool import expected_backend, parse_backends
    from .errors import InputError
    from .types import BACKENDS

    default = option(config, "convviz_backends")
    wanted: set[str] = set()
    try:
        for item in session.items:
            for names in _prestart_backends(item, default):
                wanted.update(parse_backends(names))
    except InputError:
        return  # the check itself reports the bad value
    running = expected_backend()
    others = [b for b in BACKENDS if b in wanted and b != running]
    if not others:
        return
    from .plugin_fixture import session_pool

    pool = session_pool(config)
    pool.prestart([b for b in others if not pool.is_local(b)])


def _prestart_backends(item: pytest.Item, default: Any) -> list[Any]:
    """The backend lists ``item`` will run cross-backend checks on, as far as they are
    known before it runs: ``[]`` when it runs none or passes ``backends=`` to its call."""
    marker = item.get_closest_marker("convviz")
    marked = marker.kwargs.get("backends") if marker is not None else None
    calls = _agreement_calls(item)
    if calls is None:  # its code names other backends than the configured ones
        return []
    if marked:
        return [marked]
    return [default] if calls and default else []


def _agreement_calls(item: pytest.Item) -> int | None:
    """How many ``assert_backends_agree`` calls the test function's code makes; None
    when one of them passes ``backends=`` (or ``**kwargs``, which may hold it)."""
    function = getattr(item, "function", None)
    if function is None:
        return 0
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return 0
    count = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
        if name != "assert_backends_agree":
            continue
        if any(k.arg in ("backends", None) for k in node.keywords):
            return None
        count += 1
    return count


def gate_model(config: pytest.Config) -> str:
    """The model source of ``--convviz-model`` (a path relative to the invocation
    directory) or of the ini key ``convviz_model`` (relative to the ini file); other
    sources (``"hub:<preset>"``, ``"pkg.module:factory"``) are returned as given.

    Raises:
        InputError: neither is set (the message says how to set them).
    """
    from pathlib import Path

    from .errors import InputError

    cli = config.getoption("--convviz-model", default=None)
    ini = None if cli else (config.getini("convviz_model") or None)
    if not cli and not ini:
        raise InputError(
            "No model to check. Received: --convviz-model unset and ini key convviz_model "
            "unset. Expected one of them, e.g. `pytest --convviz-model=models/classifier.keras` "
            "or `convviz_model = models/classifier.keras` in pytest.ini."
        )
    value = str(cli or ini)
    if cli:
        base = Path(config.invocation_params.dir)
    else:
        base = config.inipath.parent if config.inipath else config.rootpath
    path = base / value
    if ":" in value and not path.exists():
        return value  # "hub:<preset>" or "pkg.module:factory"
    return str(path.resolve())


@pytest.fixture
def convviz(request: pytest.FixtureRequest) -> Any:
    """convviz_check for this test: compute under the running backend, golden checks,
    assertions (the ``ConvvizFixture`` object; one paragraph, so that plain
    ``pytest --fixtures`` shows all of it).
    Compute (the library's functions; the model and images they see are fingerprinted
    into the next check's sidecar):
      convviz.gradcam(model, images, class_index=None, layer=None, score="auto",
        preprocess=False, batch_size=None, output=None, token_grid=None)
      convviz.cam(model, images, method="gradcam", class_index=None, layer=None,
        score="auto", preprocess=False, batch_size=None, output=None, token_grid=None,
        **method_options) (token_grid: a vision transformer's (h, w, prefix tokens);
        method="rollout": attention rollout)
        (without layer=: marker convviz(gradcam_layer=...) > --convviz-gradcam-layer >
        ini convviz_gradcam_layer > the automatic layer)
      convviz.activations(model, images, layers=None, batch_size=32)
      convviz.filter_patterns(model, layer, filters=None, steps=None, learning_rate=None,
        size=None, seed=0, batch_size=None, input_range=None, progress=None,
        parameterization="pixel", decorrelate=None, transforms=None, penalties=None,
        objective="channel") (parameterization="fft": readable, robust patterns)
      convviz.load_model(source, safe_mode=True, custom_objects=None)
    Golden checks:
      convviz.check(name, value, kind=None, tolerance=None, *, dtype=None, layers=None,
        model=None, boxes=None, class_names=None, regions=None, images=None): a
        GradCAM (kind "heatmap"), a dict of activations (kind "activation") or an array
        (a bare 4-D array needs kind=, e.g. kind="pattern"); --convviz-update=missing|
        failed|all writes goldens; regions: marker convviz(regions=...) > ini
        convviz_regions; images: filter patterns' response record (judged by retrain).
      convviz.class_names = [...]: class names for the test's failure messages
        (default: ini convviz_class_names, a file).
    Assertions (recorded in the report; name= names each):
      convviz.assert_localized(cam_or_heatmap, target, pointing=True, min_energy=None,
        min_iou=None, *, image=None, image_shape=None, tolerance_px=0, threshold=0.15,
        name=None)
      convviz.assert_faithful(model, images, cam, *, metric="insertion", margin=0.05,
        seed=0, baseline=None, steps=32, class_index=None,
        against=("random", "wrong_class"), wrong_map=None, batch_size=None,
        output=None, name=None)
      convviz.assert_randomization(model, images, *, layers_to_reinit=None,
        max_correlation=0.5, class_index=None, layer=None, score="auto", seed=0,
        repeats=3, method="gradcam", method_options=None, name=None)
      convviz.assert_backends_agree(model_source, images, *, backends=None,
        tolerance=None, what=("activations", "gradcam", "filters"), layers=None,
        class_index=None, gradcam_layer=None, score="auto", preprocess=False,
        cam_method="gradcam", cam_options=None, filters_layer=None, filters=8,
        filter_steps=30, filter_size=None, learning_rate=None, seed=0,
        input_range=None, safe_mode=True, custom_objects=None, timeout=None,
        token_grid=None, pool=None, name=None)
      convviz.check_counterfactual(name, model, images, *, cue, at="bottom_right",
        margin=0, reference=None, classes=None, max_rate_increase=0.2,
        max_mass_increase=0.15, cell_margin=1, method="gradcam", **cam_kwargs)
    Facts: convviz.backend (the running Keras backend), convviz.results_dir.
    The reference: docs/reference.md in the project's repository.
    """
    from .plugin_fixture import ConvvizFixture

    return ConvvizFixture(request)
