"""Goldens are never written where no later run could pass them: a value a comparison
refuses (NaN, inf, an empty batch) or bounds that fail even identical arrays are
refused before anything is written (pytester, plain NumPy maps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convviz_check import golden
from convviz_check.artifacts import Artifact
from convviz_check.errors import ComparisonError
from convviz_check.tolerances import as_tolerance, check_bounds
from convviz_check.types import Tolerance

SAFETY_TESTS = """
import numpy as np
import convviz_check as cc

def _map():
    hm = np.zeros((7, 7), np.float32)
    hm[3, 3] = 1.0
    return hm

def test_nan(convviz):
    hm = _map()
    hm[0, 0] = np.nan
    convviz.check("cam", hm)

def test_inf(convviz):
    hm = _map()
    hm[0, 0] = np.inf
    convviz.check("cam", hm)

def test_empty_batch(convviz):
    convviz.check("cam", np.zeros((0, 8, 8), np.float32))

def test_nan_activation(convviz):
    convviz.check("acts", {"conv": np.full((1, 2, 2, 3), np.nan, np.float32)})

def test_nan_bound(convviz):
    convviz.check("cam", _map(), tolerance={"heatmap_rms": float("nan")})

def test_negative_bound(convviz):
    convviz.check("cam", _map(), tolerance={"heatmap_rms": -1e-3})

def test_similarity_above_one(convviz):
    convviz.check("cam", _map(), tolerance=cc.Tolerance(heatmap_pearson_min=1.5))

def test_fine(convviz):
    convviz.check("cam", _map())
"""


@pytest.fixture(scope="module")
def backend() -> str:
    from convviz_check.backends import current_backend

    return current_backend()


@pytest.fixture
def project(pytester: pytest.Pytester, backend: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {backend}\n")
    return pytester


def _stored(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_an_update_refuses_goldens_no_later_run_could_pass(project):
    project.makepyfile(test_safety=SAFETY_TESTS)
    result = project.runpytest("--convviz-update=missing")
    result.assert_outcomes(passed=1, failed=7)
    out = result.stdout.str()
    assert out.count("refusing to write its golden: no later run could compare") == 4
    for line in (
        "*'cam': refusing to write its golden: no later run could compare with it*NaN*",
        "*'cam': refusing to write its golden*empty*",
        "*the bound heatmap_rms must be a finite number. Received: heatmap_rms=nan",
        "*the bound heatmap_rms must be >= 0*Received: heatmap_rms=-0.001",
        "*the bound heatmap_pearson_min must be <= 1*Received: heatmap_pearson_min=1.5",
    ):
        result.stdout.fnmatch_lines([line])
    # Only the fine check was written: every later run passes.
    assert _stored(project.path / "golden") == [
        f"test_safety.py/test_fine/cam{s}" for s in (".json", ".npz", ".png")
    ]
    project.runpytest("-k", "test_fine").assert_outcomes(passed=1)


def test_accepting_a_non_finite_result_is_refused_and_writes_nothing(project, capsys):
    from convviz_check.cli import main

    project.makepyfile(test_safety=SAFETY_TESTS)
    project.runpytest("-k", "test_nan and not bound", "--convviz-results-dir=res")
    (project.path / "golden").mkdir(exist_ok=True)
    capsys.readouterr()
    import os

    cwd = os.getcwd()
    os.chdir(project.path)
    try:
        code = main(["golden", "accept", "res"])
    finally:
        os.chdir(cwd)
    assert code == 1  # asked to accept, nothing could be
    assert "refusing to write its golden" in capsys.readouterr().err
    assert _stored(project.path / "golden") == []


@pytest.mark.parametrize(
    "value",
    [
        np.array([[np.nan, 1.0], [0.0, 0.0]], np.float32),
        np.array([[np.inf, 1.0], [0.0, 0.0]], np.float32),
        np.zeros((0, 8, 8), np.float32),
    ],
)
def test_unwritable_names_what_a_comparison_refuses(value):
    assert "no later run could compare" in golden.unwritable(Artifact.from_value(value))
    assert golden.unwritable(Artifact.from_value(np.eye(4, dtype=np.float32))) == ""


@pytest.mark.parametrize(
    "bounds, problem",
    [
        ({"heatmap_rms": float("nan")}, "must be a finite number"),
        ({"heatmap_max_abs": float("inf")}, "must be a finite number"),
        ({"heatmap_rms": -1e-9}, "must be >= 0"),
        ({"heatmap_peak_shift_cells": -1}, "must be >= 0"),
        ({"activation_max_rel": -1.0}, "must be >= 0"),
        ({"heatmap_box_energy_drop": -0.1}, "must be >= 0"),
        ({"pixel_atol": -1.0}, "must be >= 0"),
        ({"pattern_ssim_min": 1.01}, "must be <= 1"),
        ({"heatmap_class_agreement_min": 2.0}, "must be <= 1"),
        ({"activation_scale_floor": 0.0}, "must be > 0"),
    ],
)
def test_bounds_no_comparison_could_pass_are_refused(bounds, problem):
    with pytest.raises(ComparisonError, match=problem) as info:
        as_tolerance(bounds, "check(tolerance=...)")
    assert "check(tolerance=...)" in str(info.value) and next(iter(bounds)) in str(info.value)
    with pytest.raises(ComparisonError, match=problem):
        as_tolerance(Tolerance(**bounds))


def test_bounds_that_pass_identical_arrays_are_kept():
    tol = Tolerance(heatmap_rms=0.0, heatmap_pearson_min=-1.0, heatmap_ssim_min=1.0)
    assert check_bounds(tol) is tol


# ------------------------------------------------------------------ agree --tolerance
def test_agree_tolerance_takes_field_value_pairs_or_json():
    from convviz_check.cli.agree import parse_tolerance

    assert parse_tolerance(None) is None
    assert parse_tolerance("heatmap_rms=1e-3").heatmap_rms == 1e-3
    both = parse_tolerance("heatmap_rms=1e-3, heatmap_max_abs=0.01")
    assert (both.heatmap_rms, both.heatmap_max_abs) == (1e-3, 0.01)
    assert parse_tolerance('{"heatmap_rms": 0.001}').heatmap_rms == 1e-3


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"heatmap_rms": 0.001', "--tolerance is not valid JSON"),
        ("heatmap_rms", "--tolerance takes field=value pairs"),
        ("heatmap_rms=abc", "--tolerance: heatmap_rms must be a number"),
        ("heatmap_rmss=1", "Unknown tolerance field"),
        ("heatmap_rms=-1", "heatmap_rms must be >= 0"),
    ],
)
def test_a_bad_agree_tolerance_names_the_flag_and_what_it_takes(tmp_path, capsys, text, problem):
    from convviz_check.cli import main

    assert main(["agree", "--exported", str(tmp_path), "--tolerance", text]) == 2
    err = capsys.readouterr().err
    assert problem in err and "--tolerance" in err
    assert "JSONDecodeError" not in err and "Traceback" not in err
