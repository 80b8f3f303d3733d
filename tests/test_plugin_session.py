"""Session-wide settings of the plugin: project tolerances (ini and command line) and
their precedence, and the hints a CI run gives. End to end with pytester; the inner
tests check plain NumPy maps (no model)."""

from __future__ import annotations

import json

import pytest

# A hot spot moved by one cell after the golden was written: RMS ~0.27, Pearson ~0.
CAM_TEST = """
import numpy as np
import pytest

def _map(shift):
    hm = np.zeros((7, 7), np.float32)
    hm[3, 3 + shift] = 1.0
    return hm

SHIFT = {shift}

def test_cam(convviz):
    convviz.check("cam", _map(SHIFT))

{marked}
"""
MARKED = """
@pytest.mark.convviz(tolerance={{"heatmap_max_abs": 2.0, "heatmap_rms": 2.0,
    "heatmap_pearson_min": -1.0, "heatmap_ssim_min": -1.0,
    "heatmap_peak_shift_cells": 9.0, "heatmap_topk_iou_min": 0.0}})
def test_marked(convviz):
    convviz.check("cam", _map({shift}))
"""
# Bounds loose enough that the moved hot spot passes.
LOOSE = (
    "heatmap_max_abs=2, heatmap_rms=2, heatmap_pearson_min=-1, heatmap_ssim_min=-1, "
    "heatmap_peak_shift_cells=9, heatmap_topk_iou_min=0"
)


@pytest.fixture(scope="module")
def backend() -> str:
    """The running backend, its framework imported before any pytester snapshot:
    pytester drops the modules an inner run imported, and a framework's C extension
    cannot be imported twice in one process."""
    from convviz_check.backends import current_backend, framework_versions

    framework_versions()
    return current_backend()


@pytest.fixture
def project(
    backend: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {backend}\n")
    return pytester


def _write_then_move(p: pytest.Pytester, ini_extra: str = "", marked: bool = False) -> None:
    """Goldens for a hot spot at column 3, then the test moves it to column 4."""
    backend = p.path.joinpath("tox.ini").read_text().split("=")[1].split()[0]
    p.makeini(f"[pytest]\nconvviz_golden_backend = {backend}\n{ini_extra}")
    body = MARKED.format(shift=0) if marked else ""
    p.makepyfile(test_cam=CAM_TEST.format(shift=0, marked=body))
    p.runpytest("--convviz-update=missing").assert_outcomes(passed=1 + marked)
    body = MARKED.format(shift=1) if marked else ""
    p.makepyfile(test_cam=CAM_TEST.format(shift=1, marked=body))


def test_the_moved_hot_spot_fails_with_the_default_bounds(project):
    _write_then_move(project)
    project.runpytest().assert_outcomes(failed=1)


def test_ini_tolerance_loosens_the_project_bounds(project):
    _write_then_move(project, f"convviz_tolerance_heatmap = {LOOSE}\n")
    project.runpytest().assert_outcomes(passed=1)


def test_command_line_tolerance_beats_the_ini(project):
    _write_then_move(project, f"convviz_tolerance_heatmap = {LOOSE}\n")
    result = project.runpytest("--convviz-tolerance-heatmap=heatmap_rms=1e-6")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*rms*"])


def test_marker_beats_the_command_line(project):
    _write_then_move(project, marked=True)
    # the command line is strict; the marker on test_marked loosens it
    result = project.runpytest("--convviz-tolerance-heatmap=heatmap_rms=1e-6", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_marked PASSED*"])


def test_the_sidecar_records_the_tolerance_the_check_used(project, backend):
    project.makeini(
        f"[pytest]\nconvviz_golden_backend = {backend}\n"
        "convviz_tolerance_heatmap = heatmap_rms=0.125\n"
    )
    project.makepyfile(test_cam=CAM_TEST.format(shift=0, marked=""))
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    sidecar = next((project.path / "golden").rglob("cam.json"))
    assert json.loads(sidecar.read_text())["tolerance"]["heatmap_rms"] == 0.125


@pytest.mark.parametrize(
    "value, problem",
    [
        ("heatmap_rms", "field=value"),
        ("heatmap_rms=abc", "must be a number"),
        ("heatmap_nonsense=1", "Unknown tolerance field"),
        ("activation_max_rel=1", "another kind"),
    ],
)
def test_a_malformed_ini_tolerance_is_a_usage_error(project, value, problem):
    project.makeini(f"[pytest]\nconvviz_tolerance_heatmap = {value}\n")
    project.makepyfile(test_cam=CAM_TEST.format(shift=0, marked=""))
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{problem}*"])


def test_missing_golden_under_ci_names_the_results_dir_route(project, monkeypatch):
    monkeypatch.setenv("CI", "1")
    project.makepyfile(test_cam=CAM_TEST.format(shift=0, marked=""))
    result = project.runpytest("--convviz-results-dir=res")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*CI is set, so --convviz-update is refused here*res*golden accept DIR*"]
    )


def test_missing_golden_outside_ci_gives_no_ci_route(project):
    project.makepyfile(test_cam=CAM_TEST.format(shift=0, marked=""))
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    assert "CI is set" not in result.stdout.str()


# -------------------------------------------------------------------- start-up checks
@pytest.mark.parametrize(
    "args, ini, problem",
    [
        (
            ["--convviz-golden-backend=tensorflw"],
            "",
            "*convviz_golden_backend names an unknown backend. Received: 'tensorflw'*"
            "Expected one of ('tensorflow', 'torch', 'jax')*",
        ),
        ([], "convviz_golden_backend = pytorch", "*convviz_golden_backend*'pytorch'*'torch'?*"),
        (["--convviz-backends=tensorflow,jaxx"], "", "*convviz_backends*'jaxx'*"),
        ([], "convviz_backends = torch,tf", "*convviz_backends*'tf'*'tensorflow'*"),
        ([], "convviz_update_override = maybe", "*convviz_update_override*'maybe'*true or false*"),
        ([], "convviz_allow_ci_update = maybe", "*convviz_allow_ci_update*'maybe'*"),
        ([], "convviz_require_backends = perhaps", "*convviz_require_backends*'perhaps'*"),
        ([], "convviz_profile = retrained", "*convviz_profile*'retrained'*"),
        ([], "convviz_unused = remove", "*convviz_unused*'remove'*"),
        ([], "convviz_update = some", "*convviz_update*'some'*"),
        ([], "convviz_prestart = yes", "*convviz_prestart*'yes'*"),
    ],
)
def test_bad_option_values_are_usage_errors_naming_key_and_value(project, args, ini, problem):
    backend = project.path.joinpath("tox.ini").read_text().split("=")[1].split()[0]
    project.makeini(
        f"[pytest]\n{ini}\n"
        if "golden_backend" in ini
        else f"[pytest]\nconvviz_golden_backend = {backend}\n{ini}\n"
    )
    project.makepyfile(test_cam=CAM_TEST.format(shift=0, marked=""))
    update = [] if "convviz_update " in ini else ["--convviz-update=missing"]
    result = project.runpytest(*update, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([problem])
    assert not (project.path / "golden").exists()


def test_a_bad_keras_backend_variable_is_a_usage_error(project, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflw")
    project.makepyfile(test_cam=CAM_TEST.format(shift=0, marked=""))
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*KERAS_BACKEND names an unknown backend*'tensorflw'*"])


@pytest.mark.parametrize(
    "marker, problem",
    [
        ("backends=('tensorflow', 'pytorch')", "*test_marked*'pytorch'*'torch'?*"),
        ("backends='tensorflow,jaxx'", "*test_marked*'jaxx'*"),
    ],
)
def test_a_bad_marker_backend_is_a_usage_error_before_any_test_runs(project, marker, problem):
    project.makepyfile(
        test_cam=CAM_TEST.format(shift=0, marked="")
        + f"\n@pytest.mark.convviz({marker})\ndef test_marked(convviz):\n"
        "    convviz.check('cam', _map(0))\n"
    )
    result = project.runpytest("--convviz-update=missing")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([problem])
    assert not (project.path / "golden").exists()


@pytest.mark.parametrize("option", ["--convviz-golden-dir", "--convviz-results-dir"])
def test_a_directory_option_naming_a_file_is_a_usage_error(project, option):
    (project.path / "taken").write_text("a file")
    project.makepyfile(test_cam=CAM_TEST.format(shift=0, marked=""))
    result = project.runpytest("--convviz-update=missing", f"{option}=taken")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option}*taken is a file, not a directory*"])
    assert (project.path / "taken").read_text() == "a file"
