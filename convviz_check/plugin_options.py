"""The plugin's options: read once (CLI > ini; markers are applied by their callers)
and checked at start-up, so that a typo never loosens a check or loses a golden.

Only pytest and the package's core: imported when the plugin configures a session.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .calibration import Calibration, load_for
from .errors import ConvvizError
from .types import BACKEND_ALIASES, BACKENDS

UNUSED_MODES = ("warn", "fail", "delete")


def option(config: pytest.Config, name: str) -> Any:
    """CLI value if given, else the ini value (marker values are applied by callers)."""
    cli = config.getoption("--" + name.replace("_", "-"), default=None)
    if cli not in (None, False):
        return cli
    try:
        return config.getini(name.replace("-", "_"))
    except ValueError:
        return None


def str_option(config: pytest.Config, name: str) -> str | None:
    value = option(config, name)
    return str(value) if value not in (None, "", False) else None


def bool_option(config: pytest.Config, name: str) -> bool:
    value = option(config, name)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def path_option(config: pytest.Config, name: str, default: Path | None) -> Path | None:
    """A directory option: CLI paths are relative to the invocation directory, ini
    paths to the ini file's directory (so both mean what they say)."""
    cli = config.getoption("--" + name.replace("_", "-"), default=None)
    if cli:
        return (Path(config.invocation_params.dir) / cli).resolve()
    try:
        ini = config.getini(name)
    except ValueError:
        ini = None
    if ini:
        base = config.inipath.parent if config.inipath else config.rootpath
        return (base / str(ini)).resolve()
    return default


# Names Keras itself accepts in KERAS_BACKEND (convviz_check runs under BACKENDS only;
# the others are refused when a check needs the backend, not at start-up).
KERAS_NAMES = (*BACKENDS, "numpy", "openvino")


def _backend_usage(key: str, value: Any) -> pytest.UsageError:
    hint = BACKEND_ALIASES.get(str(value).strip().lower())
    return pytest.UsageError(
        f"{key} names an unknown backend. Received: {value!r}"
        + (f" (did you mean {hint!r}?)" if hint else "")
        + f". Expected one of {BACKENDS} (Keras' own names)."
    )


def check_backend_options(config: pytest.Config) -> None:
    """Every backend name of the configuration, checked once at start-up: a misspelt
    reference backend would make every backend "not the reference" and compare every
    golden with the far looser cross-backend bounds.

    Raises:
        pytest.UsageError: naming the key, the value and the valid names.
    """
    reference = str_option(config, "convviz_golden_backend")
    if reference is not None and reference not in BACKENDS:
        raise _backend_usage("--convviz-golden-backend / ini convviz_golden_backend", reference)
    backends = str_option(config, "convviz_backends")
    if backends is not None:
        from .crossbackend.pool import parse_backends

        try:
            parse_backends(backends)
        except ConvvizError as e:
            raise pytest.UsageError(f"--convviz-backends / ini convviz_backends: {e}") from None
    env = os.environ.get("KERAS_BACKEND")
    if env is not None and env.strip() and env.strip() not in KERAS_NAMES:
        raise _backend_usage("The environment variable KERAS_BACKEND", env)


def check_bool_options(config: pytest.Config, keys: list[str]) -> None:
    """An ini boolean (``keys``) that is neither true nor false (``maybe``) is refused
    with its key (pytest's own reader raises a ValueError naming no key; read quietly,
    it was taken as false)."""
    for key in keys:
        try:
            config.getini(key)
        except (ValueError, pytest.UsageError) as e:  # pytest 9.1+ raises the latter
            raise pytest.UsageError(
                f"ini key {key} must be a boolean. Received: {e}. Expected true or false "
                "(also yes/no, on/off, 1/0)."
            ) from None


def check_markers(items: list[pytest.Item]) -> None:
    """The ``backends=`` names and ``regions=`` of the selected tests' ``convviz``
    markers, checked when collection ends (a bad ``profile=`` or ``tolerance=`` fails its test, naming it).

    Raises:
        pytest.UsageError: naming the test, the marker argument and the value.
    """
    from .crossbackend.pool import parse_backends
    from .regions import check_regions

    for item in items:
        marker = item.get_closest_marker("convviz")
        if marker is None:
            continue
        try:
            if marker.kwargs.get("backends") is not None:
                parse_backends(marker.kwargs["backends"])
            check_regions(marker.kwargs.get("regions"), "convviz(regions=...)")
        except ConvvizError as e:
            raise pytest.UsageError(
                f"The marker convviz(...) of {item.nodeid} is invalid: {e}"
            ) from None


REGIONS_INI = "convviz_regions"


def ini_regions(config: pytest.Config) -> dict[str, Any]:
    """The suspect regions of the ini key ``convviz_regions`` (``name = y0, x0, y1,
    x1`` per line), checked; ``{}`` when unset.

    Raises:
        LocalizationError: a malformed line, name or box (naming the line).
    """
    from .regions import parse_region_lines

    return parse_region_lines(config.getini(REGIONS_INI) or [], f"ini key {REGIONS_INI}")


def check_region_options(config: pytest.Config) -> None:
    """The ini key ``convviz_regions``, checked once at start-up.

    Raises:
        pytest.UsageError: naming the key, the line and what a line looks like.
    """
    try:
        ini_regions(config)
    except ConvvizError as e:
        raise pytest.UsageError(str(e)) from None


def chosen_regions(config: pytest.Config, node: pytest.Item, given: Any) -> tuple[Any, str]:
    """``(regions, source)`` of a heatmap check: ``check(regions=)`` > the marker
    ``convviz(regions=...)`` > ini ``convviz_regions``; ``(None, "")`` when none is
    set (an empty mapping is a choice: no regions, the golden's are used)."""
    if given is not None:
        return given, "convviz.check(regions=...)"
    marker = node.get_closest_marker("convviz")
    if marker is not None and marker.kwargs.get("regions") is not None:
        return marker.kwargs["regions"], "convviz(regions=...)"
    ini = ini_regions(config)
    return (ini, f"ini key {REGIONS_INI}") if ini else (None, "")


def calibration_options(
    config: pytest.Config, golden_dir: Path, update: str | None
) -> tuple[Calibration | None, bool]:
    """``(calibration, measuring)``: the golden dir's retrain profile file, read and
    validated now (a malformed one stops the run before any test), and
    ``--convviz-measure`` (it needs a results dir to record into and writes no golden).

    Raises:
        pytest.UsageError: either problem, naming the file and field or the options.
    """
    try:
        calibration = load_for(golden_dir)
    except ConvvizError as e:
        hint = "fix or delete it, or rerun convviz-check calibrate"
        raise pytest.UsageError(f"{e} ({hint})") from None
    measuring = bool(config.getoption("--convviz-measure", default=False))
    if measuring and (path_option(config, "convviz_results_dir", None) is None or update):
        raise pytest.UsageError(
            "--convviz-measure records every check's metrics into --convviz-results-dir and "
            "writes no golden: it needs a results dir and no --convviz-update."
        )
    return calibration, measuring
