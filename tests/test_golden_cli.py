"""``convviz-check golden list|show|diff|accept|prune``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convviz_check import golden
from convviz_check.artifacts import Artifact
from convviz_check.cli import main


def _store(root: Path, rel: str, value, kind=None, backend="tensorflow") -> Path:
    base = root / rel
    golden.save(base, Artifact.from_value(value, kind), {"backend": backend})
    return base


def _value(base: Path):
    return golden.load(base).artifact.to_value()


def _tree(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _peak(y: int, x: int) -> np.ndarray:
    hm = np.zeros((7, 7), np.float32)
    hm[y, x] = 1.0
    return hm


def test_list_shows_every_check_with_kind_and_flags_invalid_ones(tmp_path, capsys):
    _store(tmp_path, "t.py/test_a/cam", _peak(1, 1))
    _store(tmp_path, "_backend/torch/t.py/test_a/cam", _peak(1, 1), backend="torch")
    bad = _store(tmp_path, "t.py/test_b/acts", {"c": np.ones((1, 2, 2, 1))})
    golden.files_of(bad)[".json"].write_text("{")
    assert main(["golden", "list", "--golden-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("_backend/torch/t.py/test_a/cam  heatmap")
    assert out[1].startswith("t.py/test_a/cam  heatmap    7x7")
    assert "INVALID" in out[2] and out[2].startswith("t.py/test_b/acts")
    assert main(["golden", "list", "--golden-dir", str(tmp_path), "--backend", "torch"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    # A truncated .npz with a valid sidecar is flagged too (show would refuse it).
    npz = golden.files_of(tmp_path / "t.py/test_a/cam")[".npz"]
    npz.write_bytes(npz.read_bytes()[:100])
    assert main(["golden", "list", "--golden-dir", str(tmp_path)]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.startswith("t.py/test_a/cam  INVALID: the .npz is not a readable archive"), row


def test_show_prints_the_sidecar_and_verifies_the_content(tmp_path, capsys):
    _store(tmp_path, "t.py/test_a/cam", _peak(1, 1))
    assert main(["golden", "show", "t.py/test_a/cam.npz", "--golden-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '"kind": "heatmap"' in out and "verified: 1 array(s)" in out


def test_show_images_draws_the_heatmap_over_its_inputs_thumbnail(tmp_path, capsys):
    from PIL import Image

    from convviz_check.report.pictures import inputs_thumbnail

    base = _store(tmp_path, "t.py/test_a/cam", _peak(1, 1))
    out_dir = tmp_path / "pics"
    args = ["golden", "show", "t.py/test_a/cam", "--golden-dir", str(tmp_path), "--images"]
    assert main([*args, str(out_dir)]) == 0
    bare = np.asarray(Image.open(out_dir / "cam.png"))
    white = inputs_thumbnail(np.ones((1, 8, 8, 3), np.float32))
    Image.fromarray(white).save(golden.files_of(base)[".inputs.png"])
    assert main([*args, str(out_dir)]) == 0
    over = np.asarray(Image.open(out_dir / "cam.png"))
    assert "picture: " in capsys.readouterr().out
    assert over.mean() > bare.mean() + 50  # the white image shows under the map


def test_show_reports_a_broken_golden_as_an_error(tmp_path, capsys):
    base = _store(tmp_path, "t.py/test_a/cam", _peak(1, 1))
    golden.files_of(base)[".npz"].write_text("version https://git-lfs.github.com/spec/v1\n")
    assert main(["golden", "show", str(base), "--golden-dir", str(tmp_path)]) == 2
    assert "git lfs pull" in capsys.readouterr().err


def test_show_of_a_check_that_is_not_there_names_the_closest_stored_ones(tmp_path, capsys):
    _store(tmp_path, "t.py/test_a/cam", _peak(1, 1))
    root = ["--golden-dir", str(tmp_path)]
    assert main(["golden", "show", "t.py/test_a/cams", *root]) == 2
    err = capsys.readouterr().err
    assert "No golden for 't.py/test_a/cams'" in err and "sidecar exists" not in err
    assert "Did you mean: t.py/test_a/cam?" in err
    assert main(["golden", "show", "nothing/like/it", *root]) == 2
    assert "golden list --golden-dir" in capsys.readouterr().err
    missing = ["--golden-dir", str(tmp_path / "nowhere")]
    assert main(["golden", "diff", "t.py/test_a/cam", "t.py/test_a/cam", *missing]) == 2
    assert f"The golden directory {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    # Only the .json of a check left: the .npz is named as the missing half.
    golden.files_of(tmp_path / "t.py/test_a/cam")[".npz"].unlink()
    assert main(["golden", "show", "t.py/test_a/cam", *root]) == 2
    assert "is missing (its sidecar exists)" in capsys.readouterr().err


def test_diff_exits_1_and_names_the_peak_shift(tmp_path, capsys):
    _store(tmp_path, "a/cam", _peak(1, 1))
    _store(tmp_path, "b/cam", _peak(5, 4))
    _store(tmp_path, "c/cam", _peak(1, 1))
    args = ["--golden-dir", str(tmp_path)]
    assert main(["golden", "diff", "a/cam", "c/cam", *args]) == 0
    assert "passed" in capsys.readouterr().out
    assert main(["golden", "diff", "a/cam", "b/cam", "--images", str(tmp_path / "img"), *args]) == 1
    out = capsys.readouterr().out
    assert "peak moved" in out and "(row 1, col 1) -> (row 5, col 4)" in out
    assert (tmp_path / "img" / "check.diff.png").exists()


def _results_dir(tmp_path: Path, entries: list[dict], golden_backend="tensorflow") -> Path:
    res = tmp_path / "res"
    for e in entries:
        _store(res, e["obtained"], e.pop("_value"), backend=e["backend"])
    (res / "report.json").parent.mkdir(parents=True, exist_ok=True)
    (res / "report.json").write_text(
        json.dumps({"golden_backend": golden_backend, "entries": entries})
    )
    return res


def _entry(test: str, status: str, value, backend="tensorflow") -> dict:
    rel = f"t.py/{test}/cam"
    return {
        "nodeid": f"t.py::{test}", "check": "cam", "kind": "heatmap", "status": status,
        "golden": rel, "rel": rel, "obtained": f"obtained/{rel}", "backend": backend,
        "_value": value,
    }  # fmt: skip


def test_accept_promotes_failed_and_missing_obtained_files(tmp_path, capsys):
    gdir = tmp_path / "golden"
    _store(gdir, "t.py/test_a/cam", _peak(1, 1))
    res = _results_dir(
        tmp_path,
        [
            _entry("test_a", "failed", _peak(4, 4)),
            _entry("test_b", "missing", _peak(2, 2)),
            _entry("test_c", "passed", _peak(3, 3)),
        ],
    )
    assert main(["golden", "accept", str(res), "--golden-dir", str(gdir), "--dry-run"]) == 0
    assert "would write" in capsys.readouterr().out
    assert not (gdir / "t.py/test_b").exists()
    assert main(["golden", "accept", str(res), "--golden-dir", str(gdir)]) == 0
    assert _value(gdir / "t.py/test_a/cam")[4, 4] == 1.0
    assert _value(gdir / "t.py/test_b/cam")[2, 2] == 1.0
    assert not (gdir / "t.py/test_c").exists()  # passed checks only with --all
    assert golden.files_of(gdir / "t.py/test_b/cam")[".png"].exists()


def test_accept_writes_the_same_preview_as_a_pytest_update(tmp_path):
    from convviz_check.report.pictures import inputs_thumbnail

    thumb = inputs_thumbnail(np.full((1, 7, 7, 3), 0.8, np.float32))
    res = _results_dir(tmp_path, [_entry("test_a", "missing", _peak(3, 3))])
    obtained = res / "obtained/t.py/test_a/cam"
    for path in golden.files_of(obtained).values():
        path.unlink(missing_ok=True)
    golden.save(obtained, Artifact.from_value(_peak(3, 3)), {"backend": "tensorflow"}, inputs=thumb)
    gdir = tmp_path / "golden"
    gdir.mkdir()
    assert main(["golden", "accept", str(res), "--golden-dir", str(gdir)]) == 0
    files = golden.files_of(gdir / "t.py/test_a/cam")
    # The heatmap over its images, as the obtained preview (not a bare colour map).
    assert (
        files[".inputs.png"].read_bytes() == golden.files_of(obtained)[".inputs.png"].read_bytes()
    )
    assert files[".png"].read_bytes() == golden.files_of(obtained)[".png"].read_bytes()


def test_accept_of_a_non_reference_backend_skips_with_the_ownership_reason(tmp_path, capsys):
    gdir = tmp_path / "golden"
    res = _results_dir(tmp_path, [_entry("test_a", "failed", _peak(4, 4), backend="torch")])
    for dry in ([], ["--dry-run"]):
        # Nothing it was asked to accept could be: exit 1, not a silent success.
        assert main(["golden", "accept", str(res), "--golden-dir", str(gdir), *dry]) == 1
        err = capsys.readouterr().err
        skipped = [ln for ln in err.splitlines() if ln.startswith("skipped ")]
        assert len(skipped) == 1, err
        assert skipped[0].startswith("skipped t.py::test_a :: cam: ")
        assert "owned by the reference backend 'tensorflow'" in skipped[0].lower()
        assert skipped[0].endswith("pass --override to keep it as an override")
        assert "0 check(s)" in err
        assert not gdir.exists()


def test_accept_of_a_non_reference_backend_with_override_writes_its_tree(tmp_path, capsys):
    gdir = tmp_path / "golden"
    _store(gdir, "t.py/test_a/cam", _peak(1, 1))
    neutral = _tree(gdir)
    res = _results_dir(tmp_path, [_entry("test_a", "failed", _peak(4, 4), backend="torch")])
    assert main(["golden", "accept", str(res), "--golden-dir", str(gdir), "--override"]) == 0
    assert "accepted" in capsys.readouterr().out
    assert _value(gdir / "_backend/torch/t.py/test_a/cam")[4, 4] == 1.0
    assert {k: v for k, v in _tree(gdir).items() if not k.startswith("_backend/")} == neutral


def test_accept_refuses_a_broken_obtained_file_and_writes_nothing(tmp_path, capsys):
    gdir = tmp_path / "golden"
    res = _results_dir(tmp_path, [_entry("test_a", "failed", _peak(4, 4))])
    (res / "obtained/t.py/test_a/cam.npz").write_bytes(b"junk")
    assert main(["golden", "accept", str(res), "--golden-dir", str(gdir)]) == 2
    assert "is not a .npz (zip) archive" in capsys.readouterr().err
    assert not gdir.exists()


def test_accept_over_a_broken_golden_names_the_problem_and_rewrites_nothing(tmp_path, capsys):
    gdir = tmp_path / "golden"
    base = _store(gdir, "t.py/test_a/cam", _peak(1, 1))
    golden.files_of(base)[".json"].write_text("{ broken")
    before = _tree(gdir)
    res = _results_dir(tmp_path, [_entry("test_a", "failed", _peak(4, 4))])
    assert main(["golden", "accept", str(res), "--golden-dir", str(gdir)]) == 1
    err = capsys.readouterr().err
    skipped = next(ln for ln in err.splitlines() if ln.startswith("skipped "))
    assert "not valid JSON" in skipped
    # --override changes nothing under the reference backend: not the advice to give.
    assert "--override" not in skipped
    assert _tree(gdir) == before


def test_accept_writes_into_the_golden_dir_the_run_used_not_a_new_tree(
    tmp_path, capsys, monkeypatch
):
    res = _results_dir(tmp_path, [_entry("test_a", "failed", _peak(4, 4))])
    report = json.loads((res / "report.json").read_text())
    # A CI artifact: the run's rootdir and absolute golden dir are not on this machine.
    report |= {
        "golden_dir": "/ci/work/proj/tests/goldens",
        "golden_dir_in_project": "tests/goldens",
        "rootdir": "/ci/work/proj",
        "rootdir_from_invocation": ".",
    }
    (res / "report.json").write_text(json.dumps(report))
    project = tmp_path / "proj"
    gdir = project / "tests" / "goldens"
    _store(gdir, "t.py/test_a/cam", _peak(1, 1))
    (project / "t.py").write_text("")
    monkeypatch.chdir(project)
    assert main(["golden", "accept", str(res)]) == 0
    assert _value(gdir / "t.py/test_a/cam")[4, 4] == 1.0
    assert not (project / "golden").exists()  # no stray ./golden tree
    assert f"into {project / 'tests' / 'goldens'}" in capsys.readouterr().err
    # From a subfolder on the machine that ran it: the recorded rootdir.
    report |= {"golden_dir": str(gdir), "rootdir": str(project)}
    (res / "report.json").write_text(json.dumps(report))
    monkeypatch.chdir(project / "tests")
    assert main(["golden", "accept", str(res), "--all"]) == 0
    assert not (project / "tests" / "golden").exists()
    # Not the project (its test file is not here): refused, naming the run's rootdir and
    # golden dir, and nothing is created.
    report |= {"golden_dir": "/ci/work/proj/tests/goldens", "rootdir": "/ci/work/proj"}
    (res / "report.json").write_text(json.dumps(report))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["golden", "accept", str(res)]) == 2
    err = capsys.readouterr().err
    assert "this is not the project the results come from" in err
    assert "/ci/work/proj" in err and "/ci/work/proj/tests/goldens" in err
    assert "t.py" in err and "--golden-dir" in err
    assert not (tmp_path / "golden").exists() and not (tmp_path / "tests").exists()


def test_accept_from_another_project_is_refused_naming_both(tmp_path, capsys, monkeypatch):
    """The run's project is on this machine, but the current directory is another
    project: its goldens must not land in the other project's golden/."""
    project_a, other = tmp_path / "projectA", tmp_path / "other_project"
    (project_a / "golden").mkdir(parents=True)
    (project_a / "t.py").write_text("")
    (other / "golden").mkdir(parents=True)
    (other / "t.py").write_text("")  # even a test file of the same name
    res = _results_dir(project_a, [_entry("test_a", "missing", _peak(4, 4))])
    report = json.loads((res / "report.json").read_text())
    report |= {
        "golden_dir": str(project_a / "golden"),
        "golden_dir_in_project": "golden",
        "rootdir": str(project_a),
        "rootdir_from_invocation": ".",
    }
    (res / "report.json").write_text(json.dumps(report))
    monkeypatch.chdir(other)
    assert main(["golden", "accept", "../projectA/res"]) == 2
    err = capsys.readouterr().err
    assert str(project_a) in err and str(other) in err
    assert _tree(other / "golden") == {} and _tree(project_a / "golden") == {}
    # From inside projectA it goes exactly into projectA's golden dir.
    monkeypatch.chdir(project_a)
    assert main(["golden", "accept", "res"]) == 0
    assert _value(project_a / "golden" / "t.py/test_a/cam")[4, 4] == 1.0


def test_accept_without_a_report_says_what_it_expected(tmp_path, capsys):
    assert main(["golden", "accept", str(tmp_path)]) == 2
    assert "No report.json" in capsys.readouterr().err


def test_prune_deletes_reported_unused_orphans_and_temp_files(tmp_path, capsys):
    gdir = tmp_path / "golden"
    keep = _store(gdir, "t.py/test_a/cam", _peak(1, 1))
    gone = _store(gdir, "t.py/test_old/cam", _peak(1, 1))
    orphan = gdir / "t.py/test_x/cam.png"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"png")
    tmp_file = gdir / "t.py/test_a/.cam.npz.abc.tmp"
    tmp_file.write_bytes(b"half")
    rep = tmp_path / "report.json"
    rep.write_text(json.dumps({"unused": {"files": ["t.py/test_old/cam"], "judged": True}}))
    args = ["golden", "prune", "--golden-dir", str(gdir), "--report", str(rep)]
    assert main([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("would delete") == 5
    assert orphan.exists()
    assert main(args) == 0
    assert _value(keep)[1, 1] == 1.0
    assert not golden.files_of(gone)[".npz"].exists() and not (gdir / "t.py/test_old").exists()
    assert not orphan.exists() and not tmp_file.exists()


@pytest.mark.parametrize(
    "unused",
    [
        {
            "files": ["t.py/test_old/cam"],
            "judged": False,
            "note": "the run failed or was interrupted",
        },
        {"files": ["t.py/test_old/cam"], "judged": False, "note": ""},
        {"files": ["t.py/test_old/cam"]},
        None,
    ],
)
def test_prune_refuses_the_report_of_a_failed_run_and_deletes_nothing(tmp_path, capsys, unused):
    gdir = tmp_path / "golden"
    _store(gdir, "t.py/test_a/cam", _peak(1, 1))
    _store(gdir, "t.py/test_old/cam", _peak(1, 1))
    orphan = gdir / "t.py/test_x/cam.png"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"png")
    before = _tree(gdir)
    rep = tmp_path / "report.json"
    rep.write_text(json.dumps({"unused": unused} if unused is not None else {}))
    for dry in ([], ["--dry-run"]):
        code = main(["golden", "prune", "--golden-dir", str(gdir), "--report", str(rep), *dry])
        assert code == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        err = captured.err.strip().splitlines()
        assert len(err) == 1, captured.err
        assert err[0].startswith("convviz-check: error: ")
        assert "cannot tell which goldens are unused" in err[0]
        if unused and unused.get("note"):
            assert unused["note"] in err[0]
        assert _tree(gdir) == before


def test_prune_with_an_unreadable_report_exits_2(tmp_path, capsys):
    rep = tmp_path / "report.json"
    rep.write_text("{ not json")
    assert main(["golden", "prune", "--golden-dir", str(tmp_path), "--report", str(rep)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_accept_round_trip_from_a_failing_pytest_run(pytester, monkeypatch):
    """The CI story: a run fails with a results dir; accepting it makes the next run pass."""
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {current_backend()}\n")
    src = "import numpy as np\n\ndef test_cam(convviz):\n    hm = np.zeros((6, 6), np.float32)\n    hm[{}] = 1.0\n    convviz.check('cam', hm)\n"
    pytester.makepyfile(test_ci=src.format("1, 1"))
    pytester.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    pytester.makepyfile(test_ci=src.format("4, 4"))
    monkeypatch.setenv("CI", "1")
    pytester.runpytest("--convviz-results-dir=artifact").assert_outcomes(failed=1)
    res, gdir = pytester.path / "artifact", pytester.path / "golden"
    assert main(["golden", "accept", str(res), "--golden-dir", str(gdir)]) == 0
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize("action", ["list", "show", "diff", "accept", "prune"])
def test_every_action_has_help(action, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["golden", action, "--help"])
    assert exc.value.code == 0
    assert "--golden-dir" in capsys.readouterr().out


GATE_TEST = (
    "import numpy as np\n\ndef test_cam(convviz):\n    hm = np.zeros((6, 6), np.float32)\n"
    "    hm[{}] = 1.0\n    convviz.check('cam', hm)\n"
)


def test_accept_of_a_gate_with_its_own_ini_writes_into_the_gate_goldens(
    pytester, monkeypatch, capsys
):
    """A gate copied to tests/convviz_gate/ with its own pytest.ini, run and accepted
    from the repository root: its goldens are tests/convviz_gate/golden, never ./golden."""
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    gate = pytester.path / "tests" / "convviz_gate"
    gate.mkdir(parents=True)
    (gate / "pytest.ini").write_text(f"[pytest]\nconvviz_golden_backend = {current_backend()}\n")
    (gate / "test_gate.py").write_text(GATE_TEST.format("1, 1"))
    pytester.runpytest("tests/convviz_gate", "--convviz-results-dir=convviz-results")
    report = json.loads((pytester.path / "convviz-results" / "report.json").read_text())
    assert report["rootdir"] == str(gate.resolve())
    assert report["rootdir_from_invocation"] == "tests/convviz_gate"
    monkeypatch.chdir(pytester.path)
    assert main(["golden", "accept", "convviz-results"]) == 0
    assert (gate / "golden" / "test_gate.py" / "test_cam" / "cam.npz").exists()
    assert not (pytester.path / "golden").exists()
    pytester.runpytest("tests/convviz_gate").assert_outcomes(passed=1)
    # The same artifact from CI (the rootdir is not on this machine): found from where
    # pytest was invoked.
    (gate / "test_gate.py").write_text(GATE_TEST.format("4, 4"))
    pytester.runpytest("tests/convviz_gate", "--convviz-results-dir=convviz-results")
    report = json.loads((pytester.path / "convviz-results" / "report.json").read_text())
    report |= {"rootdir": "/ci/work/repo/tests/convviz_gate"}
    (pytester.path / "convviz-results" / "report.json").write_text(json.dumps(report))
    assert main(["golden", "accept", "convviz-results"]) == 0
    assert not (pytester.path / "golden").exists()
    pytester.runpytest("tests/convviz_gate").assert_outcomes(passed=1)
