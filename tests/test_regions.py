"""Suspect regions: checked names and boxes (NumPy), stored with the golden and
inherited like object boxes, passed to the comparison, and chosen check(regions=) >
marker convviz(regions=...) > ini convviz_regions, each refused at start-up when bad
(pytester)."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import numpy as np
import pytest

from convviz_check import checks, golden
from convviz_check import regions as rg
from convviz_check.artifacts import Artifact
from convviz_check.checks import CheckRequest, Settings, run_check
from convviz_check.errors import LocalizationError, StorageError
from convviz_check.types import Box

REL = PurePosixPath("tests/test_x.py/test_cam/cam")
WATERMARK = {"watermark": Box(0, 10, 4, 16)}


def _heat(n: int = 2) -> np.ndarray:
    maps = np.zeros((n, 16, 16), np.float32)
    maps[:, 8, 8] = 1.0
    maps[:, 2, 12] = 0.5
    return maps


# ------------------------------------------------------------------ names and boxes
def test_regions_are_checked_and_kept_in_order():
    got = rg.check_regions({"logo": (1, 2, 3, 4), "watermark": Box(0, 10, 4, 16)})
    assert list(got) == ["logo", "watermark"]
    assert got["logo"] == Box(1, 2, 3, 4)
    assert rg.check_regions(None) is None and rg.check_regions({}) is None
    assert rg.check_regions({"strip": np.array([0, 0, 2, 16])}) == {"strip": Box(0, 0, 2, 16)}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([(0, 0, 1, 1)], "must be a mapping name -> Box"),
        ({"my-logo": (0, 0, 1, 1)}, "must be a Python identifier"),
        ({"2nd": (0, 0, 1, 1)}, "must be a Python identifier"),
        ({"class": (0, 0, 1, 1)}, "must be a Python identifier"),
        ({3: (0, 0, 1, 1)}, "must be a Python identifier"),
        ({"box": (0, 0, 1, 1)}, "taken by the comparison's own places"),
        ({"top_left": (0, 0, 1, 1)}, "taken by the comparison's own places"),
        ({"logo": (0, 0, 1)}, r"must be a Box or 4 ints.*Received: \(0, 0, 1\)"),
        ({"logo": (0.0, 0, 1, 1)}, "must be a Box or 4 ints"),
        ({"logo": (0, 0, 0, 1)}, "0 <= y0 < y1"),
        ({"logo": (-1, 0, 2, 2)}, "0 <= y0 < y1"),
        ({"logo": "0, 0, 1, 1"}, "must be a Box or 4 ints"),
        ({"logo": (True, 0, 1, 1)}, "must be a Box or 4 ints"),
    ],
)
def test_each_bad_region_is_refused_naming_what_was_received(value, says):
    with pytest.raises(LocalizationError, match=says) as info:
        rg.check_regions(value, "convviz.check(regions=...)")
    assert "convviz.check(regions=...)" in str(info.value)
    assert "Received" in str(info.value)


def test_a_region_outside_the_image_is_refused():
    rg.regions_inside({"logo": Box(0, 0, 16, 16)}, (16, 16))
    with pytest.raises(LocalizationError, match=r"\['logo'\] must lie inside the 16x12 image"):
        rg.regions_inside({"logo": Box(0, 0, 16, 16)}, (16, 12), "regions")


def test_ini_lines_parse_and_bad_lines_name_themselves():
    lines = ["", "watermark = 0, 10, 4, 16  # the stock-photo mark", "logo=1,2,3,4"]
    assert rg.parse_region_lines(lines) == {**WATERMARK, "logo": Box(1, 2, 3, 4)}
    with pytest.raises(LocalizationError, match="'name = y0, x0, y1, x1'.*'logo 1, 2, 3, 4'"):
        rg.parse_region_lines(["logo 1, 2, 3, 4"])
    with pytest.raises(LocalizationError, match="given twice"):
        rg.parse_region_lines(["logo = 1, 2, 3, 4", "logo = 1, 2, 3, 5"])
    with pytest.raises(LocalizationError, match="taken by the comparison"):
        rg.parse_region_lines(["border = 1, 2, 3, 4"])


# ------------------------------------------------------------------ storage
def test_regions_are_stored_with_a_heatmap_golden_and_read_back(tmp_path):
    artifact = rg.attach_regions(Artifact.from_value(_heat()), WATERMARK, "regions")
    golden.save(tmp_path / "g", artifact, {"backend": "tensorflow"})
    side = json.loads((tmp_path / "g.json").read_text())
    assert side["attrs"]["regions"] == {"watermark": [0, 10, 4, 16]}
    assert golden.load(tmp_path / "g").artifact.regions == WATERMARK
    with pytest.raises(LocalizationError, match="inside the 16x16 image"):
        rg.attach_regions(Artifact.from_value(_heat()), {"logo": (0, 0, 4, 17)})
    acts = Artifact.from_value({"conv": np.ones((1, 4, 4, 2), np.float32)})
    with pytest.raises(LocalizationError, match="go with heatmap checks"):
        rg.attach_regions(acts, WATERMARK, "convviz.check(regions=...)")


def test_a_golden_without_regions_keeps_its_bytes(tmp_path):
    plain = Artifact.from_value(_heat())
    golden.save(tmp_path / "a", plain, {"backend": "tensorflow"})
    golden.save(
        tmp_path / "b", plain.with_regions(WATERMARK).with_regions(None), {"backend": "tensorflow"}
    )
    for suffix in (".npz", ".json"):
        assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
    assert golden.load(tmp_path / "a").artifact.regions is None


def test_a_malformed_stored_region_is_a_storage_error():
    arrays = Artifact.from_value(_heat()).arrays
    with pytest.raises(StorageError, match="stored attribute 'regions'"):
        Artifact.decode(arrays, "heatmap", "array", {"regions": {"box": [0, 0, 1, 1]}})


# ------------------------------------------------------------------ the check
def _request(regions=None) -> CheckRequest:
    artifact = rg.attach_regions(Artifact.from_value(_heat()), regions)
    return CheckRequest(name="cam", rel=REL, obtained=artifact, backend="tensorflow")


def _settings(tmp_path, **kwargs) -> Settings:
    return Settings(golden_dir=tmp_path / "golden", reference="tensorflow", **kwargs)


def test_later_runs_inherit_the_golden_regions_and_changed_ones_fail(tmp_path, monkeypatch):
    assert run_check(_settings(tmp_path, update="missing"), _request(WATERMARK), None).status == (
        "written"
    )
    seen: list = []
    real = checks.compare

    def compare(*args, regions=None, **kwargs):
        seen.append(regions)
        return real(*args, **kwargs)

    monkeypatch.setattr(checks, "compare", compare)
    results = tmp_path / "results"
    omitted = run_check(_settings(tmp_path, results_dir=results), _request(None), None)
    assert omitted.status == "passed" and seen == [WATERMARK]
    obtained = golden.load(results / "obtained" / omitted.golden).artifact
    assert obtained.regions == WATERMARK  # the result a person may accept keeps them
    other = {"watermark": Box(0, 0, 4, 6)}
    changed = run_check(_settings(tmp_path), _request(other), None)
    assert changed.status == "failed"
    assert "suspect regions changed" in changed.message
    assert "watermark (0, 10, 4, 16)" in changed.message and len(seen) == 1


def test_a_golden_without_regions_is_measured_in_the_check_regions(tmp_path, monkeypatch):
    run_check(_settings(tmp_path, update="missing"), _request(None), None)
    seen: list = []
    real = checks.compare
    monkeypatch.setattr(
        checks, "compare", lambda *a, regions=None, **k: seen.append(regions) or real(*a, **k)
    )
    assert run_check(_settings(tmp_path), _request(WATERMARK), None).status == "passed"
    assert seen == [WATERMARK]


# ------------------------------------------------------------------ pytest: precedence
INNER = """
import numpy as np
import pytest
from convviz_check.types import Box

MAPS = np.zeros((2, 16, 16), np.float32)
MAPS[:, 8, 8] = 1.0

def test_ini(convviz):
    convviz.check("cam", MAPS)

@pytest.mark.convviz(regions={"logo": (1, 1, 5, 5)})
def test_marker(convviz):
    convviz.check("cam", MAPS)

@pytest.mark.convviz(regions={"logo": (1, 1, 5, 5)})
def test_argument(convviz):
    convviz.check("cam", MAPS, regions={"caption": Box(12, 0, 16, 16)})

@pytest.mark.convviz(regions={"logo": (1, 1, 5, 5)})
def test_activations_ignore_marker_regions(convviz):
    convviz.check("acts", {"conv": np.ones((1, 4, 4, 2), np.float32)})
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(
        f"[pytest]\nconvviz_golden_backend = {current_backend()}\n"
        "convviz_regions =\n    watermark = 0, 10, 4, 16\n"
    )
    return pytester


def _stored(p: pytest.Pytester, test: str, name: str = "cam") -> dict:
    side = json.loads((p.path / "golden" / "test_inner.py" / test / f"{name}.json").read_text())
    return side["attrs"].get("regions")


def test_argument_over_marker_over_ini(project):
    project.makepyfile(test_inner=INNER)
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=4)
    assert _stored(project, "test_ini") == {"watermark": [0, 10, 4, 16]}
    assert _stored(project, "test_marker") == {"logo": [1, 1, 5, 5]}
    assert _stored(project, "test_argument") == {"caption": [12, 0, 16, 16]}
    assert _stored(project, "test_activations_ignore_marker_regions", "acts") is None
    project.runpytest().assert_outcomes(passed=4)


def test_a_bad_ini_line_stops_the_session_at_start_up(project):
    project.makeini("[pytest]\nconvviz_regions =\n    watermark = 0, 10, 4\n")
    project.makepyfile(test_inner="def test_nothing():\n    pass\n")
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ini key convviz_regions: each line is 'name = y0, x0, y1, x1'*'watermark = 0, 10, 4'*"]
    )


def test_a_bad_marker_stops_the_session_at_collection(project):
    project.makepyfile(
        test_inner="import pytest\n\n"
        "@pytest.mark.convviz(regions={'outside': (0, 0, 2, 2)})\n"
        "def test_marked(convviz):\n    pass\n"
    )
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*convviz(...) of test_inner.py::test_marked is invalid*'outside' is taken*"]
    )


def test_a_bad_argument_fails_its_test_before_anything_is_written(project):
    project.makepyfile(
        test_inner="import numpy as np\n\n"
        "def test_bad(convviz):\n"
        "    convviz.check('cam', np.ones((2, 16, 16), np.float32) * np.arange(16),"
        " regions={'logo': (0, 0, 4, 20)})\n"
    )
    result = project.runpytest("--convviz-update=missing")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*LocalizationError: convviz.check(regions=...)*must lie inside the 16x16 image*"]
    )
    assert not (project.path / "golden").exists()
