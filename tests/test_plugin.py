"""The plugin's golden lifecycle, end to end with pytester.

Inner tests check plain NumPy arrays (no model), so each inner run is quick; the
running backend is whatever KERAS_BACKEND says, and the reference backend is set with
the ``convviz_golden_backend`` ini key (to it, or to another backend's name to act
as a non-reference backend) so that no test needs a second framework.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from convviz_check import golden

CAM_TEST = """
import numpy as np

def test_cam(convviz):
    hm = np.zeros((7, 7), np.float32)
    hm[{y}, {x}] = 1.0
    hm[{y}, {x} - 1] = 0.5
    hm[1, 1] += {bump}
    convviz.check("cam", hm)
"""


@pytest.fixture(scope="module")
def backend() -> str:
    from convviz_check.backends import current_backend

    return current_backend()


@pytest.fixture
def project(pytester: pytest.Pytester, backend: str, monkeypatch: pytest.MonkeyPatch):
    """A pytester project whose reference backend is the running one; CI unset."""
    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {backend}\n")
    return pytester


def _cam_test(p: pytest.Pytester, y: int = 2, x: int = 3, bump: float = 0.0) -> None:
    p.makepyfile(test_life=CAM_TEST.format(y=y, x=x, bump=bump))


def _golden_files(p: pytest.Pytester) -> dict[str, bytes]:
    root = p.path / "golden"
    return (
        {
            f.relative_to(root).as_posix(): f.read_bytes()
            for f in sorted(root.rglob("*"))
            if f.is_file()
        }
        if root.exists()
        else {}
    )


def _npz(p: pytest.Pytester, rel: str = "test_life.py/test_cam/cam") -> Path:
    return p.path / "golden" / (rel + ".npz")


def _value(base: Path):
    return golden.load(base).artifact.to_value()


# ------------------------------------------------------------------ the lifecycle
def test_missing_golden_fails_and_prints_the_command_that_writes_it(project):
    _cam_test(project)
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*convviz check 'cam': golden file missing: *test_life.py/test_cam/cam.npz*",
         "*pytest --convviz-update=missing test_life.py::test_cam"]
    )  # fmt: skip
    assert _golden_files(project) == {}


def test_header_names_golden_dir_owner_and_mode(project, backend):
    _cam_test(project)
    result = project.runpytest("--convviz-update=missing", "--convviz-unused=fail")
    result.stdout.fnmatch_lines(
        [f"convviz: goldens */golden (owned by {backend}), update=missing, unused=fail"]
    )


def test_update_missing_writes_the_files_and_passes_then_verify_passes(project):
    _cam_test(project)
    result = project.runpytest("--convviz-update=missing")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*convviz: wrote 1 golden file(s)*", "*test_life.py/test_cam/cam.npz"]
    )
    files = _golden_files(project)
    assert set(files) == {f"test_life.py/test_cam/cam{s}" for s in (".npz", ".json", ".png")}
    assert _value(_npz(project).with_suffix(""))[2, 3] == 1.0
    project.runpytest().assert_outcomes(passed=1)
    # --convviz-update=all with unchanged values rewrites nothing (byte-stable).
    result = project.runpytest("--convviz-update=all")
    result.assert_outcomes(passed=1)
    assert "wrote" not in result.stdout.str()
    assert _golden_files(project) == files


def test_moved_hot_spot_fails_naming_the_peak_shift_then_update_failed_accepts(project):
    _cam_test(project, y=2, x=3)
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    _cam_test(project, y=5, x=5)
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*convviz check 'cam' (heatmap) does not match its golden.",
            "*peak moved * cells: (row 2, col 3) -> (row 5, col 5)",
            "*heatmap_peak_shift_cells * > max 0 *FAIL",
            "*peak expected (row 2, col 3), obtained (row 5, col 5)",
            "*share of values out of pixel_atol*",
            "*same-backend bounds*",
            "*pytest --convviz-update=failed test_life.py::test_cam",
        ]
    )
    # The metric lines follow the plainest change, which leads.
    text = result.stdout.str()
    assert text.index("peak moved") < text.index("topk_iou")
    result = project.runpytest("--convviz-update=failed")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*convviz: wrote 1 golden file(s)*"])
    assert _value(_npz(project).with_suffix(""))[5, 5] == 1.0
    project.runpytest().assert_outcomes(passed=1)


def test_failure_lists_images_in_the_results_dir(project):
    _cam_test(project, y=2, x=3)
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    _cam_test(project, y=5, x=5)
    result = project.runpytest("--convviz-results-dir=res")
    result.assert_outcomes(failed=1)
    line = next(ln for ln in result.outlines if "images: expected" in ln)
    paths = [part.split()[-1] for part in line.split("images:")[1].split(",")]
    assert [Path(p).name for p in paths] == ["cam.expected.png", "cam.obtained.png", "cam.diff.png"]
    assert all(Path(p).read_bytes().startswith(b"\x89PNG") for p in paths)
    report = json.loads((project.path / "res" / "report.json").read_text())
    assert report["summary"] == {"failed": 1}
    assert report["entries"][0]["metrics"]["peak_shift"]["ok"] is False
    obtained = project.path / "res" / report["entries"][0]["obtained"]
    assert _value(obtained)[5, 5] == 1.0


def test_update_is_refused_when_ci_is_set(project, monkeypatch):
    _cam_test(project)
    monkeypatch.setenv("CI", "true")
    result = project.runpytest("--convviz-update=missing")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*refused because the CI environment variable is set*"])
    assert _golden_files(project) == {}
    result = project.runpytest("--convviz-update=missing", "--convviz-allow-ci-update")
    result.assert_outcomes(passed=1)
    assert _npz(project).exists()


@pytest.mark.parametrize("value", ["false", "0", "No", ""])
def test_ci_set_to_an_explicit_no_is_not_ci(project, monkeypatch, value):
    _cam_test(project)
    monkeypatch.setenv("CI", value)
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)


def test_override_flag_needs_an_update_mode(project):
    _cam_test(project)
    result = project.runpytest("--convviz-update-override")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs an update mode*"])


# ------------------------------------------------------------ golden ownership
def _other(backend: str) -> str:
    """A real backend name that is not the running one (the reference of a project
    checked under a non-reference backend; names are checked at start-up)."""
    return next(b for b in ("tensorflow", "torch", "jax") if b != backend)


def _as_non_reference(p: pytest.Pytester) -> None:
    from convviz_check.backends import current_backend

    p.makeini(f"[pytest]\nconvviz_golden_backend = {_other(current_backend())}\n")


def test_non_reference_backend_refuses_updates_and_writes_overrides_only_with_the_flag(
    project, backend
):
    _cam_test(project)
    _as_non_reference(project)
    result = project.runpytest("--convviz-update=missing")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*refusing to write the golden under backend '{backend}'*",
            f"*owned by the reference backend '{_other(backend)}'*",
            f"*KERAS_BACKEND={_other(backend)} pytest --convviz-update=missing test_life.py::test_cam",
            "*--convviz-update-override test_life.py::test_cam",
        ]
    )
    assert _golden_files(project) == {}
    result = project.runpytest("--convviz-update=missing", "--convviz-update-override")
    result.assert_outcomes(passed=1)
    assert set(_golden_files(project)) == {
        f"_backend/{backend}/test_life.py/test_cam/cam{s}" for s in (".npz", ".json", ".png")
    }
    project.runpytest().assert_outcomes(passed=1)


def test_missing_golden_under_non_reference_backend_names_the_reference(project, backend):
    _cam_test(project)
    _as_non_reference(project)
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*KERAS_BACKEND={_other(backend)} pytest --convviz-update=missing test_life.py::test_cam"]
    )


def test_non_reference_backend_compares_with_cross_backend_bounds(project):
    # 5e-5 on one cell: over the same-backend bounds (max_abs 1e-5, rms 2e-6), within
    # the cross-backend ones (1e-4, 2e-5).
    _cam_test(project)
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    _cam_test(project, bump=5e-5)
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*max_abs*FAIL*", "*same-backend bounds*"])
    _as_non_reference(project)
    project.runpytest().assert_outcomes(passed=1)


def test_backend_override_is_looked_up_before_the_neutral_golden(project, backend):
    _cam_test(project, y=2, x=3)
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    _cam_test(project, y=5, x=5)
    _as_non_reference(project)
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    # A non-reference backend cannot accept the new result into the reference's golden:
    # the first hint regenerates it under the reference backend, the second forks it.
    result.stdout.fnmatch_lines(
        [
            "*(written by *; compared with cross-backend bounds)",
            "*if the model or the code changed, regenerate the golden under the reference "
            f"backend: KERAS_BACKEND={_other(backend)} pytest --convviz-update=failed "
            "test_life.py::test_cam",
            f"*only if {backend} legitimately differs, keep a {backend}-only override: "
            f"KERAS_BACKEND={backend} pytest --convviz-update=failed --convviz-update-override "
            "test_life.py::test_cam",
        ]
    )
    assert "accept the new result" not in result.stdout.str()
    result = project.runpytest("--convviz-update=failed", "--convviz-update-override")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*_backend/{backend}/test_life.py/test_cam/cam.npz"])
    project.runpytest().assert_outcomes(passed=1)
    # The neutral golden was not changed by the non-reference backend.
    assert _value(_npz(project).with_suffix(""))[2, 3] == 1.0


# --------------------------------------------------------------------- settings
def test_marker_tolerance_applies_and_check_argument_overrides_it(project):
    project.makepyfile(
        test_tol="""
        import numpy as np
        import pytest

        def value(bump):
            hm = np.zeros((7, 7), np.float32)
            hm[3, 3] = 1.0
            hm[0, 0] = bump
            return hm

        @pytest.mark.convviz(tolerance={"heatmap_max_abs": 0.5, "heatmap_rms": 0.5,
                                        "heatmap_pearson_min": 0.0, "heatmap_ssim_min": 0.0,
                                        "heatmap_topk_iou_min": 0.0})
        def test_loose(convviz, request):
            convviz.check("m", value(request.config.getoption("--bump", 0.0)))

        @pytest.mark.convviz(tolerance={"heatmap_max_abs": 0.5, "heatmap_rms": 0.5,
                                        "heatmap_pearson_min": 0.0, "heatmap_ssim_min": 0.0,
                                        "heatmap_topk_iou_min": 0.0})
        def test_tight_argument_wins(convviz, request):
            convviz.check("m", value(request.config.getoption("--bump", 0.0)),
                          tolerance={"heatmap_max_abs": 1e-3})
        """
    )
    project.makeconftest(
        "def pytest_addoption(parser):\n    parser.addoption('--bump', type=float, default=0.0)\n"
    )
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=2)
    result = project.runpytest("--bump=0.2")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_tight_argument_wins*", "*max_abs*> max 0.001*FAIL*"])


def test_model_fingerprint_change_leads_the_failure(project):
    project.makepyfile(
        test_fp="""
        import numpy as np

        def test_fp(convviz, request):
            fp = request.config.getoption("--fp")
            hm = np.zeros((5, 5), np.float32)
            hm[1 if fp == "aaaa" else 3, 2] = 1.0
            convviz.check("m", hm, model=fp)
        """
    )
    project.makeconftest("def pytest_addoption(parser):\n    parser.addoption('--fp')\n")
    project.runpytest("--convviz-update=missing", "--fp=aaaa").assert_outcomes(passed=1)
    side = json.loads((project.path / "golden/test_fp.py/test_fp/m.json").read_text())
    assert side["model_fingerprint"] == "aaaa"
    result = project.runpytest("--fp=bbbb")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*does not match its golden.", "*model fingerprint changed: golden aaaa, now bbbb*"]
    )


GRADCAM_TEST = """
import numpy as np
import keras
from keras import layers
from convviz_check.models import model_fingerprint


def _model():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(4, 3, activation="relu", name="c1"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def test_cam(convviz, request):
    seed = int(request.config.getoption("--seed"))
    model = _model()
    images = np.random.default_rng(seed).random((2, 8, 8, 3)).astype("float32")
    cam = convviz.gradcam(model, images, class_index=0)
    with open("model_fingerprint.txt", "w") as f:
        f.write(model_fingerprint(model))
    convviz.check("cam", cam)
"""


def _gradcam_project(p: pytest.Pytester) -> Path:
    p.makepyfile(test_fp=GRADCAM_TEST)
    p.makeconftest("def pytest_addoption(parser):\n    parser.addoption('--seed', default='0')\n")
    return p.path / "golden/test_fp.py/test_cam/cam.json"


def test_sidecar_records_the_model_and_input_fingerprints_of_the_shortcuts(project):
    sidecar = _gradcam_project(project)
    project.runpytest("--convviz-update=missing", "--seed=0").assert_outcomes(passed=1)
    side = json.loads(sidecar.read_text())
    # No model= in the check: the model given to convviz.gradcam is fingerprinted.
    assert side["model_fingerprint"] == (project.path / "model_fingerprint.txt").read_text()
    assert len(side["input_fingerprint"]) == 64
    int(side["input_fingerprint"], 16)
    project.runpytest("--seed=0").assert_outcomes(passed=1)
    # Other images: the failure says so first.
    result = project.runpytest("--seed=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*convviz check 'cam' (heatmap) does not match its golden.",
            f"*input fingerprint changed: golden {side['input_fingerprint'][:12]}, now *"
            "(the images are not those the golden was written with)",
        ]
    )
    assert "model fingerprint changed" not in result.stdout.str()
    result = project.runpytest("--convviz-update=failed", "--seed=1")
    result.assert_outcomes(passed=1)
    assert json.loads(sidecar.read_text())["input_fingerprint"] != side["input_fingerprint"]


@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["plain", "verbose"])
def test_pytest_fixtures_lists_the_methods_of_the_fixture(project, verbose):
    result = project.runpytest("--fixtures", *verbose)
    assert result.ret == 0
    lines = result.stdout.str().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("convviz -- "))
    block = "\n".join(itertools.takewhile(lambda ln: ln.startswith("    "), lines[start + 1 :]))
    for method in (
        "convviz.check(",
        "convviz.assert_localized(",
        "convviz.assert_backends_agree(",
        "convviz.activations(",
        "convviz.gradcam(",
        "convviz.filter_patterns(",
    ):
        assert method in block, f"{method} not in:\n{block}"


def test_check_arguments_are_validated(project):
    project.makepyfile(
        test_args="""
        import numpy as np
        import pytest
        from convviz_check.errors import InputError

        def test_duplicate_names(convviz):
            convviz.check("a", np.ones((3, 3)))
            with pytest.raises(InputError, match="unique within a test"):
                convviz.check("a", np.ones((3, 3)))

        def test_empty_name(convviz):
            with pytest.raises(InputError, match="non-empty name"):
                convviz.check("", np.ones((3, 3)))

        def test_4d_needs_kind(convviz):
            with pytest.raises(InputError, match="kind= is required"):
                convviz.check("x", np.ones((1, 4, 4, 3)))
        """
    )
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=3)


def test_names_that_collide_or_hide_are_refused_before_anything_is_written(project):
    project.makepyfile(
        test_names="""
        import numpy as np
        import pytest
        from convviz_check.errors import InputError

        def test_thumbnail_clash(convviz):
            convviz.check("cam", np.eye(3, dtype=np.float32))
            with pytest.raises(InputError, match=r"ends with '.inputs'.*cam.inputs.png"):
                convviz.check("cam.inputs", np.eye(3, dtype=np.float32))

        def test_hidden(convviz):
            with pytest.raises(InputError, match="starts with '.'.*never see"):
                convviz.check(".hidden", np.eye(3, dtype=np.float32))

        def test_suffix(convviz):
            with pytest.raises(InputError, match="ends with '.json'"):
                convviz.check("cam.JSON", np.eye(3, dtype=np.float32))

        def test_case(convviz):
            convviz.check("Cam", np.eye(3, dtype=np.float32))
            with pytest.raises(InputError, match="unique within a test.*up to case"):
                convviz.check("cam", np.eye(3, dtype=np.float32))
        """
    )
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=4)
    files = sorted(_golden_files(project))
    assert files == [
        f"test_names.py/{test}/{name}{s}"
        for test, name in (("test_case", "Cam"), ("test_thumbnail_clash", "cam"))
        for s in (".json", ".npz", ".png")
    ]
    # every stored check is listed (no dot-file hides from golden list or unused judging)
    assert [r.as_posix() for r in golden.iter_checks(project.path / "golden")] == [
        "test_names.py/test_case/Cam",
        "test_names.py/test_thumbnail_clash/cam",
    ]


def test_activation_dict_with_float16_and_layer_subset(project):
    project.makepyfile(
        test_acts="""
        import numpy as np

        def test_acts(convviz):
            rng = np.random.default_rng(0)
            acts = {n: rng.normal(size=(1, 4, 4, 3)).astype(np.float32) for n in ("c1", "m/c2", "c3")}
            convviz.check("acts", acts, dtype="float16", layers=["c1", "m/c2"],
                          tolerance={"activation_max_rel": 1e-3, "activation_mean_rel": 1e-3})
        """
    )
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    g = golden.load(project.path / "golden/test_acts.py/test_acts/acts")
    assert list(g.artifact.arrays) == ["c1", "m/c2"] and g.artifact.arrays["c1"].dtype == np.float16
    project.runpytest().assert_outcomes(passed=1)


def test_class_methods_and_parameters_get_their_own_directories(project):
    project.makepyfile(
        test_cls="""
        import numpy as np
        import pytest

        class TestGroup:
            @pytest.mark.parametrize("k", [1, "a/b"])
            def test_p(self, convviz, k):
                convviz.check("v", np.full((3, 3), 1.0 if k == 1 else 0.5, np.float32))
        """
    )
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=2)
    names = sorted(p.parent.name for p in (project.path / "golden").rglob("v.npz"))
    assert names == ["TestGroup.test_p[1]", "TestGroup.test_p[a_b]"]


# ---------------------------------------------------------------- broken goldens
def _break_object_array(base: Path) -> None:
    with open(golden.files_of(base)[".npz"], "wb") as f:
        np.savez(f, value=np.array([object()], dtype=object))


def _edit(base: Path, **changes) -> None:
    path = golden.files_of(base)[".json"]
    side = json.loads(path.read_text())
    side.update(changes)
    path.write_text(json.dumps(side))


BREAKAGES = {
    "not a zip": (
        lambda b: golden.files_of(b)[".npz"].write_bytes(b"\x00garbage"),
        "is not a .npz (zip) archive",
    ),
    "corrupt npz": (
        lambda b: golden.files_of(b)[".npz"].write_bytes(b"PK\x03\x04garbage"),
        "is corrupt",
    ),
    "object array": (_break_object_array, "object arrays"),
    "invalid sidecar": (
        lambda b: golden.files_of(b)[".json"].write_text("{oops"),
        "not valid JSON",
    ),
    "lfs pointer": (
        lambda b: golden.files_of(b)[".npz"].write_text(
            "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n"
        ),
        "git lfs pull",
    ),
    "shape mismatch": (lambda b: _edit(b, shape={"value": [2, 2]}), "Shape mismatch"),
    "dtype mismatch": (lambda b: _edit(b, dtype={"value": "float64"}), "Dtype mismatch"),
    "kind mismatch": (lambda b: _edit(b, kind="pattern"), "Kind mismatch"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_golden_is_a_clear_failure_and_no_file_changes(project, breakage):
    _cam_test(project)
    project.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    breaker, message = BREAKAGES[breakage]
    breaker(_npz(project).with_suffix(""))
    before = _golden_files(project)
    for args in ((), ("--convviz-update=all",)):
        result = project.runpytest(*args)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            ["*convviz check 'cam': the golden cannot be used.", f"*{message}*"]
        )
        assert _golden_files(project) == before


# -------------------------------------------------------------------- unused
UNUSED_TESTS = """
import numpy as np
import pytest

def test_cam(convviz):
    convviz.check("cam", np.eye(4, dtype=np.float32))

@pytest.mark.skip(reason="off today")
def test_skipped(convviz):
    convviz.check("cam", np.eye(4, dtype=np.float32))

def test_other(convviz):
    convviz.check("cam", np.eye(4, dtype=np.float32))
"""


def _unused_project(p: pytest.Pytester) -> dict[str, bytes]:
    p.makepyfile(test_life=UNUSED_TESTS)
    p.runpytest("--convviz-update=missing").assert_outcomes(passed=2, skipped=1)
    # a golden of the skipped test (kept) and one whose test is gone (unused)
    root = p.path / "golden" / "test_life.py"
    for name in ("test_skipped", "test_gone"):
        (root / name).mkdir()
        for f in (root / "test_cam").iterdir():
            (root / name / f.name).write_bytes(f.read_bytes())
    return _golden_files(p)


def test_unused_golden_warns_by_default_and_skipped_tests_do_not_count(project):
    before = _unused_project(project)
    result = project.runpytest()
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*convviz: 1 golden(s) unused*",
            "  test_life.py/test_gone/cam",
            "*--convviz-unused=delete*",
        ]
    )
    assert "test_skipped/cam" not in result.stdout.str()
    assert _golden_files(project) == before


def test_unused_golden_fails_the_run_with_fail(project):
    _unused_project(project)
    result = project.runpytest("--convviz-unused=fail")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*1 golden(s) unused (failing the run)*", "  test_life.py/test_gone/cam"]
    )
    # The closing line says why the run failed.
    assert re.search(r"=+ 2 passed, 1 skipped, (.+, )?1 unused golden in ", result.stdout.str())


def test_unused_golden_is_deleted_with_delete(project):
    _unused_project(project)
    result = project.runpytest("--convviz-unused=delete")
    assert result.ret == 0
    files = _golden_files(project)
    assert not any("test_gone" in f for f in files)
    assert any("test_skipped" in f for f in files) and any("test_other" in f for f in files)


def test_unused_goldens_are_not_judged_after_a_failure_or_of_deselected_tests(project):
    before = _unused_project(project)
    project.makepyfile(test_life=UNUSED_TESTS + "\ndef test_broken():\n    assert False\n")
    result = project.runpytest("--convviz-unused=delete")
    result.assert_outcomes(passed=2, skipped=1, failed=1)
    assert _golden_files(project) == before
    # -k deselects test_other: its golden is not unused; test_gone's still is.
    project.makepyfile(test_life=UNUSED_TESTS)
    result = project.runpytest("-k", "test_cam", "--convviz-unused=fail")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "test_other/cam" not in result.stdout.str()
    result.stdout.fnmatch_lines(["  test_life.py/test_gone/cam"])


def test_unused_judging_with_explicit_paths_covers_only_collected_files(project):
    _unused_project(project)
    project.makepyfile(test_more="import numpy as np\n\ndef test_x(convviz):\n    pass\n")
    result = project.runpytest("test_more.py", "--convviz-unused=fail")
    assert result.ret == 0  # test_life.py's goldens are out of this run's reach


def test_a_run_of_named_tests_judges_only_their_goldens(project):
    _unused_project(project)
    # test_life.py::test_cam collects one test of the file: test_other's golden (and
    # test_gone's) are out of this run's reach, not unused; nothing is deleted.
    before = _golden_files(project)
    result = project.runpytest("test_life.py::test_cam", "--convviz-unused=delete")
    assert result.ret == 0
    assert "golden(s) unused" not in result.stdout.str()
    assert "deleted" not in result.stdout.str()
    assert _golden_files(project) == before
    # The whole file, named as a path, is judged as a whole: test_gone's golden is unused.
    result = project.runpytest("test_life.py", "--convviz-unused=fail")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["  test_life.py/test_gone/cam"])
    assert "test_other/cam" not in result.stdout.str()


def test_unused_judges_only_the_running_backends_scope(project, backend):
    before = _unused_project(project)
    _as_non_reference(project)
    result = project.runpytest("--convviz-unused=delete")
    assert result.ret == 0
    assert _golden_files(project) == before  # neutral goldens belong to the reference


# -------------------------------------------------------------------- xdist
XDIST_TESTS = """
import numpy as np
import pytest

@pytest.mark.parametrize("k", range(6))
def test_many(convviz, k):
    rng = np.random.default_rng(k)
    convviz.check("cam", rng.random((6, 6)).astype(np.float32))
    convviz.check("acts", {"c": rng.normal(size=(1, 3, 3, 2)).astype(np.float32)})
"""


def test_xdist_update_then_verify_writes_each_file_once_and_merges(project):
    pytest.importorskip("xdist")
    project.makepyfile(test_x=XDIST_TESTS)
    result = project.runpytest_subprocess("-n", "2", "--convviz-update=missing", "-p", "xdist")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*convviz: wrote 12 golden file(s)*"])
    files = _golden_files(project)
    assert len([f for f in files if f.endswith(".npz")]) == 12
    for f in files:
        if f.endswith(".npz"):
            golden.load(project.path / "golden" / f[: -len(".npz")])  # every file intact
    # a stale golden to find; the report merges both workers' parts
    stale = project.path / "golden/test_x.py/test_many[9]"
    stale.mkdir()
    for f in (project.path / "golden/test_x.py/test_many[0]").iterdir():
        (stale / f.name).write_bytes(f.read_bytes())
    result = project.runpytest_subprocess(
        "-n", "2", "-p", "xdist", "--convviz-unused=fail", "--convviz-results-dir=res"
    )
    result.assert_outcomes(passed=6)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*2 golden(s) unused*", "  test_x.py/test_many[9]/acts", "  test_x.py/test_many[9]/cam"]
    )
    report = json.loads((project.path / "res/report.json").read_text())
    assert report["summary"] == {"passed": 12}
    assert report["unused"]["files"] == [
        "test_x.py/test_many[9]/acts",
        "test_x.py/test_many[9]/cam",
    ]


@pytest.mark.parametrize(
    "args",
    [("--fixtures",), ("--fixtures", "-q"), ("--fixtures-per-test",), ("--setup-only",)],
)
def test_commands_that_run_no_test_never_judge_unused_goldens(project, args):
    before = _unused_project(project)
    result = project.runpytest(*args, "--convviz-unused=delete")
    assert "golden(s) unused" not in result.stdout.str()
    assert "golden(s) deleted" not in result.stdout.str()
    assert _golden_files(project) == before
    # the ini key says the same as the flag
    project.makeini(project.path.joinpath("tox.ini").read_text() + "convviz_unused = delete\n")
    project.runpytest(*args)
    assert _golden_files(project) == before


# ------------------------------------------------------------------ the fixture's documentation
def _documented_calls() -> dict[str, list[str]]:
    """Each public name of the fixture, and the parameters its documentation must list:
    a shortcut's are the library function's; an assertion's are those of the function
    it passes its keyword arguments to, plus ``name``."""
    import inspect

    from convviz_check.crossbackend.agreement import agreement
    from convviz_check.faithfulness import assert_faithful
    from convviz_check.localization import assert_localized
    from convviz_check.plugin_counterfactual import run_counterfactual
    from convviz_check.plugin_fixture import ConvvizFixture
    from convviz_check.sanity import check_randomization

    forwarded = {
        "assert_localized": (assert_localized, {"results_dir"}),
        "assert_randomization": (check_randomization, set()),
        "assert_faithful": (assert_faithful, set()),
        "assert_backends_agree": (agreement, {"model_source"}),
        # the fixture passes its own cam, model loader, class names and update mode
        "check_counterfactual": (
            run_counterfactual,
            {"cam", "load_model", "class_names", "update", "model", "images"},
        ),
    }
    calls: dict[str, list[str]] = {}
    for name in (n for n in dir(ConvvizFixture) if not n.startswith("_")):
        member = getattr(ConvvizFixture, name)
        if not callable(member):
            calls[name] = []
            continue
        fn, skip = forwarded.get(name, (member, set()))
        params = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.name not in ("self", *skip) and p.kind is not p.VAR_KEYWORD
        ]
        if name == "check_counterfactual":
            params = ["name", "model", "images", *params, "classes"]
        elif name in forwarded:
            params += ["name"] + (["backends", "pool"] if name == "assert_backends_agree" else [])
        if name == "cam":
            params.append("**method_options")
        calls[name] = params
    return calls


def _entry(doc: str, name: str) -> str:
    """The documented signature of ``name``: from ``name(`` to the closing ``)``."""
    found = re.search(rf"(?<!\w){name}\(", doc)
    assert found, f"{name}( is not in the docstring"
    start = found.start()
    depth, i = 0, start + len(name)
    while True:
        depth += {"(": 1, ")": -1}.get(doc[i], 0)
        if depth == 0:
            return doc[start : i + 1]
        i += 1


@pytest.mark.parametrize("where", ["class", "fixture"])
def test_the_fixture_documentation_lists_every_public_method_with_its_keywords(where):
    from convviz_check import plugin
    from convviz_check.plugin_fixture import ConvvizFixture

    doc = ConvvizFixture.__doc__ if where == "class" else plugin.convviz.__doc__
    assert doc
    calls = _documented_calls()
    assert {"check", "cam", "gradcam", "assert_faithful", "class_names"} <= set(calls)
    for name, params in calls.items():
        if not params:  # a fact or an attribute: named
            assert re.search(rf"\b{name}\b", doc), f"{name} is not in the {where} docstring"
            continue
        entry = _entry(doc, name)
        missing = [p for p in params if not re.search(rf"(?<![\w.]){re.escape(p)}\b", entry)]
        assert not missing, f"{where} docstring: {name} lacks {missing}: {entry}"


def test_pytest_fixtures_shows_cam_assert_faithful_and_check_boxes(pytester):
    pytester.makepyfile(test_x="def test_x(convviz):\n    pass\n")
    result = pytester.runpytest("--fixtures")  # not verbose: what people see first
    text = result.stdout.str()
    for shown in ("convviz.cam(", "convviz.assert_faithful(", "boxes=None", "class_names=None"):
        assert shown in text, shown
