"""convviz_check.checks.run_check: the golden-check lifecycle without pytest (missing,
written, passed, failed, refused, error), its messages and what it writes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from convviz_check import golden, tolerances
from convviz_check.artifacts import Artifact
from convviz_check.checks import CheckRequest, CheckResult, Settings, run_check
from convviz_check.types import Tolerance

REL = PurePosixPath("tests/test_x.py/test_cam/cam")
OVERRIDE = PurePosixPath("_backend/torch") / REL


class FakeCommands:
    """Command lines a message may suggest, recognisable in the text."""

    def __init__(self, ci: str | None = None) -> None:
        self.ci = ci
        self.calls: list[tuple[str, str | None, bool]] = []

    def update(self, mode: str, *, backend: str | None = None, override: bool = False) -> str:
        self.calls.append((mode, backend, override))
        return f"<update {mode} backend={backend} override={override}>"

    def ci_route(self) -> str | None:
        return self.ci


def _heat(y: int = 2, x: int = 3, bump: float = 0.0) -> np.ndarray:
    hm = np.zeros((7, 7), np.float32)
    hm[y, x] = 1.0
    hm[y, x - 1] = 0.5
    hm[1, 1] += bump
    return hm


def _request(value=None, backend: str = "tensorflow", **kwargs) -> CheckRequest:
    value = _heat() if value is None else value
    return CheckRequest(
        name="cam", rel=REL, obtained=Artifact.from_value(value), backend=backend, **kwargs
    )


def _settings(tmp_path: Path, **kwargs) -> Settings:
    return Settings(golden_dir=tmp_path / "golden", reference="tensorflow", **kwargs)


def _files(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _write(tmp_path: Path, value=None, meta: dict | None = None) -> CheckResult:
    outcome = run_check(
        _settings(tmp_path, update="missing"), _request(value, meta=dict(meta or {})), None
    )
    assert outcome.status == "written", outcome.message
    return outcome


def _loaded(tmp_path: Path, rel: PurePosixPath = REL) -> golden.Golden:
    return golden.load(tmp_path / "golden" / rel)


# --------------------------------------------------------------------- the lifecycle
def test_missing_golden_is_missing_with_the_command_that_writes_it(tmp_path):
    commands = FakeCommands()
    outcome = run_check(_settings(tmp_path), _request(), commands)
    assert outcome.status == "missing" and not outcome.ok
    lines = outcome.message.splitlines()
    assert lines[0] == (
        f"convviz check 'cam': golden file missing: {tmp_path / 'golden' / REL}.npz"
    )
    assert lines[1:] == ["Write it with:", "  <update missing backend=None override=False>"]
    assert outcome.golden == REL.as_posix() and outcome.comparison is None
    assert _files(tmp_path / "golden") == {}
    assert outcome.entry["status"] == "missing" and outcome.entry["message"] == outcome.message


def test_missing_golden_without_commands_is_one_line(tmp_path):
    outcome = run_check(_settings(tmp_path), _request(), None)
    assert outcome.status == "missing" and len(outcome.message.splitlines()) == 1


def test_missing_golden_in_ci_gives_the_ci_route_first(tmp_path):
    commands = FakeCommands(ci="CI is set: accept a results dir instead.")
    outcome = run_check(_settings(tmp_path), _request(), commands)
    lines = outcome.message.splitlines()
    assert lines[1] == "CI is set: accept a results dir instead."
    assert lines[2] == "Write it on a developer machine with:"


def test_missing_golden_under_a_non_reference_backend_names_the_reference(tmp_path):
    outcome = run_check(_settings(tmp_path), _request(backend="torch"), FakeCommands())
    assert outcome.status == "missing"
    text = outcome.message
    assert "  <update missing backend=tensorflow override=False>" in text
    assert "goldens are written by the reference backend 'tensorflow'" in text
    assert "<update missing backend=None override=True>" in text
    assert text.index("backend=tensorflow") < text.index("override=True")


def test_update_missing_writes_the_golden_and_its_sidecar(tmp_path):
    meta = {"backend": "tensorflow", "model_fingerprint": "m1", "input_fingerprint": "i1"}
    outcome = _write(tmp_path, meta=meta)
    assert outcome.ok and outcome.message == ""
    assert {"cam.json", "cam.npz", "cam.png"} <= {p.name for p in outcome.written}
    assert outcome.golden == REL.as_posix() and REL.as_posix() in outcome.touched
    g = _loaded(tmp_path)
    assert np.array_equal(g.artifact.to_value(), _heat())
    assert g.sidecar["model_fingerprint"] == "m1" and g.sidecar["input_fingerprint"] == "i1"
    assert g.sidecar["backend"] == "tensorflow"


def test_outcome_written_lists_only_files_that_were_written(tmp_path):
    outcome = _write(tmp_path)  # no inputs given: no .inputs.png
    missing = [p.name for p in outcome.written if not p.exists()]
    assert not missing, f"CheckResult.written lists files that were not written: {missing}"


def test_verify_passes_and_writes_nothing(tmp_path):
    _write(tmp_path)
    before = _files(tmp_path / "golden")
    for update in (None, "missing", "failed", "all"):
        outcome = run_check(_settings(tmp_path, update=update), _request(), FakeCommands())
        assert outcome.status == "passed", (update, outcome.message)
        assert outcome.message == "" and outcome.written == []
        assert outcome.comparison is not None and outcome.comparison.passed
    assert _files(tmp_path / "golden") == before


def test_a_moved_hot_spot_fails_with_the_comparison(tmp_path):
    _write(tmp_path)
    commands = FakeCommands()
    outcome = run_check(_settings(tmp_path), _request(_heat(5, 5)), commands)
    assert outcome.status == "failed" and not outcome.ok
    assert outcome.comparison is not None and not outcome.comparison.passed
    assert outcome.comparison.metrics["peak_shift"].value > 0
    lines = outcome.message.splitlines()
    assert lines[0] == "convviz check 'cam' (heatmap) does not match its golden."
    assert lines[1].startswith("peak moved") and "(row 2, col 3) -> (row 5, col 5)" in lines[1]
    assert "heatmap comparison FAILED" in outcome.message
    assert "compared with same-backend bounds" in outcome.message
    assert lines[-1] == "accept the new result: <update failed backend=None override=False>"
    assert outcome.entry["metrics"]["peak_shift"]["ok"] is False
    assert "per_item" not in outcome.entry["details"]


def test_update_missing_does_not_rewrite_a_failing_golden(tmp_path):
    _write(tmp_path)
    before = _files(tmp_path / "golden")
    outcome = run_check(_settings(tmp_path, update="missing"), _request(_heat(5, 5)), None)
    assert outcome.status == "failed"
    assert _files(tmp_path / "golden") == before


@pytest.mark.parametrize("update", ["failed", "all"])
def test_update_failed_or_all_rewrites_a_failing_golden(tmp_path, update):
    _write(tmp_path)
    outcome = run_check(_settings(tmp_path, update=update), _request(_heat(5, 5)), None)
    assert outcome.status == "written"
    assert np.array_equal(_loaded(tmp_path).artifact.to_value(), _heat(5, 5))


def test_update_all_rewrites_a_passing_golden_only_when_its_content_changed(tmp_path):
    _write(tmp_path)
    tiny = _heat(bump=1e-7)  # within the same-backend bounds, different bytes
    assert run_check(_settings(tmp_path), _request(tiny), None).status == "passed"
    outcome = run_check(_settings(tmp_path, update="all"), _request(tiny), None)
    assert outcome.status == "written"
    assert np.array_equal(_loaded(tmp_path).artifact.to_value(), tiny)
    assert run_check(_settings(tmp_path, update="all"), _request(tiny), None).status == "passed"


# ------------------------------------------------------------------------ ownership
def test_update_under_a_non_reference_backend_is_refused_and_writes_nothing(tmp_path):
    _write(tmp_path)
    before = _files(tmp_path / "golden")
    commands = FakeCommands()
    outcome = run_check(
        _settings(tmp_path, update="failed"), _request(_heat(5, 5), backend="torch"), commands
    )
    assert outcome.status == "error" and not outcome.ok and outcome.written == []
    lines = outcome.message.splitlines()
    assert lines[0] == "convviz check 'cam': refusing to write the golden under backend 'torch'."
    assert "owned by the reference backend 'tensorflow'" in lines[1]
    assert "  <update failed backend=tensorflow override=False>" in lines
    assert f"{OVERRIDE.as_posix()}.npz" in outcome.message
    assert "  <update failed backend=None override=True>" in lines
    assert _files(tmp_path / "golden") == before


def test_update_missing_under_a_non_reference_backend_is_refused(tmp_path):
    outcome = run_check(_settings(tmp_path, update="missing"), _request(backend="torch"), None)
    assert outcome.status == "error" and "refusing to write" in outcome.message
    assert _files(tmp_path / "golden") == {}


def test_allow_override_writes_the_backends_own_tree_and_keeps_the_neutral_golden(tmp_path):
    _write(tmp_path)
    neutral = _files(tmp_path / "golden")
    settings = _settings(tmp_path, update="failed", allow_override=True)
    outcome = run_check(settings, _request(_heat(5, 5), backend="torch"), None)
    assert outcome.status == "written", outcome.message
    assert outcome.golden == OVERRIDE.as_posix()
    assert {p.parent for p in outcome.written} == {(tmp_path / "golden" / OVERRIDE).parent}
    assert np.array_equal(_loaded(tmp_path, OVERRIDE).artifact.to_value(), _heat(5, 5))
    assert {k: v for k, v in _files(tmp_path / "golden").items() if k in neutral} == neutral
    # The override is owned by torch: looked up first, compared with same-backend bounds.
    outcome = run_check(_settings(tmp_path), _request(_heat(5, 5), backend="torch"), None)
    assert outcome.status == "passed"
    assert outcome.comparison.details["cross_backend"] is False


def test_allow_override_writes_a_missing_golden_to_the_override_tree(tmp_path):
    settings = _settings(tmp_path, update="missing", allow_override=True)
    outcome = run_check(settings, _request(backend="jax"), None)
    assert outcome.status == "written"
    assert set(_files(tmp_path / "golden")) == {
        f"_backend/jax/{REL.as_posix()}{s}" for s in (".npz", ".json", ".png")
    }


def test_a_non_reference_backend_compares_with_cross_backend_bounds(tmp_path):
    # 5e-5 on one cell: over the same-backend bounds, within the cross-backend ones.
    _write(tmp_path)
    bumped = _request(_heat(bump=5e-5))
    same = run_check(_settings(tmp_path), bumped, None)
    assert same.status == "failed"
    assert same.comparison.details["cross_backend"] is False
    cross = run_check(_settings(tmp_path), replace(bumped, backend="torch"), None)
    assert cross.status == "passed", cross.message
    assert cross.comparison.details["cross_backend"] is True
    assert cross.comparison.details["tolerance"] == (
        tolerances.default_tolerance("heatmap", cross_backend=True).to_dict()
    )


def test_a_cross_backend_failure_points_first_to_the_reference_backend(tmp_path):
    _write(tmp_path, meta={"backend": "tensorflow"})
    outcome = run_check(_settings(tmp_path), _request(_heat(5, 5), backend="torch"), FakeCommands())
    assert outcome.status == "failed"
    text = outcome.message
    assert "(written by tensorflow; compared with cross-backend bounds)" in text
    regenerate = next(ln for ln in text.splitlines() if "regenerate the golden" in ln)
    assert regenerate.endswith("<update failed backend=tensorflow override=False>")
    override = next(ln for ln in text.splitlines() if "override:" in ln)
    assert "only if torch legitimately differs" in override
    assert override.endswith("<update failed backend=None override=True>")
    assert text.index("regenerate the golden") < text.index("legitimately differs")
    assert "accept the new result" not in text


# ------------------------------------------------------------------------ tolerances
def test_the_tolerance_is_resolved_once_and_recorded_in_the_written_sidecar(tmp_path):
    _write(tmp_path)
    loose = Tolerance(heatmap_max_abs=0.75, heatmap_rms=0.5)
    failing = run_check(_settings(tmp_path), _request(_heat(5, 5), tolerance=loose), None)
    used = failing.comparison.details["tolerance"]
    expected = tolerances.resolve("heatmap", loose).to_dict()
    assert used == expected and used["heatmap_max_abs"] == 0.75
    assert (
        used["heatmap_pearson_min"] == tolerances.default_tolerance("heatmap").heatmap_pearson_min
    )
    assert failing.comparison.metrics["max_abs"].bound == 0.75
    written = run_check(
        _settings(tmp_path, update="failed"), _request(_heat(5, 5), tolerance=loose), None
    )
    assert written.status == "written"
    assert _loaded(tmp_path).sidecar["tolerance"] == expected


def test_a_new_golden_records_the_default_bounds_of_its_kind(tmp_path):
    _write(tmp_path)
    assert _loaded(tmp_path).sidecar["tolerance"] == (
        tolerances.default_tolerance("heatmap").to_dict()
    )


def test_the_request_tolerance_decides_pass_or_fail(tmp_path):
    _write(tmp_path)
    bumped = _heat(bump=5e-5)
    assert run_check(_settings(tmp_path), _request(bumped), None).status == "failed"
    loose = Tolerance(heatmap_max_abs=1e-3, heatmap_rms=1e-3)
    assert run_check(_settings(tmp_path), _request(bumped, tolerance=loose), None).ok


# ---------------------------------------------------------------------- results dir
def test_a_results_dir_gets_the_obtained_arrays_and_images_and_the_message_names_them(
    tmp_path,
):
    _write(tmp_path)
    results = tmp_path / "res"
    settings = _settings(tmp_path, results_dir=results)
    outcome = run_check(settings, _request(_heat(5, 5)), FakeCommands())
    assert outcome.status == "failed"
    obtained = results / "obtained" / REL
    assert np.array_equal(golden.load(obtained).artifact.to_value(), _heat(5, 5))
    assert outcome.entry["obtained"] == f"obtained/{REL.as_posix()}"
    images = outcome.entry["images"]
    assert list(images) == ["expected", "obtained", "diff"]
    for role, path in images.items():
        assert Path(path) == results / "images" / REL.parent / f"cam.{role}.png"
        assert Path(path).read_bytes().startswith(b"\x89PNG")
    line = next(ln for ln in outcome.message.splitlines() if ln.startswith("images: "))
    assert line == "images: " + ", ".join(f"{r} {p}" for r, p in images.items())
    assert "--convviz-results-dir" not in outcome.message


def test_without_a_results_dir_the_message_says_how_to_get_images(tmp_path):
    _write(tmp_path)
    outcome = run_check(_settings(tmp_path), _request(_heat(5, 5)), None)
    assert "images: pass --convviz-results-dir=DIR" in outcome.message
    assert "images" not in outcome.entry and "obtained" not in outcome.entry


def test_a_missing_golden_leaves_the_obtained_result_in_the_results_dir(tmp_path):
    results = tmp_path / "res"
    outcome = run_check(_settings(tmp_path, results_dir=results), _request(), None)
    assert outcome.status == "missing"
    assert golden.load(results / "obtained" / REL).artifact.kind == "heatmap"
    assert list(outcome.entry["images"]) == ["obtained"]


# ---------------------------------------------------------------------- what changed
def test_changed_model_and_input_fingerprints_lead_the_failure(tmp_path):
    _write(tmp_path, meta={"model_fingerprint": "a" * 64, "input_fingerprint": "1" * 64})
    meta = {"model_fingerprint": "b" * 64, "input_fingerprint": "2" * 64}
    outcome = run_check(_settings(tmp_path), _request(_heat(5, 5), meta=meta), None)
    lines = outcome.message.splitlines()
    assert lines[1] == (
        f"model fingerprint changed: golden {'a' * 12}, now {'b' * 12} "
        "(the model's weights are not those the golden was written with)"
    )
    assert lines[2] == (
        f"input fingerprint changed: golden {'1' * 12}, now {'2' * 12} "
        "(the images are not those the golden was written with)"
    )
    assert lines[3].startswith("peak moved")


def test_only_the_fingerprint_that_changed_is_named(tmp_path):
    _write(tmp_path, meta={"model_fingerprint": "m", "input_fingerprint": "i"})
    same_model = {"model_fingerprint": "m", "input_fingerprint": "j"}
    outcome = run_check(_settings(tmp_path), _request(_heat(5, 5), meta=same_model), None)
    assert outcome.message.splitlines()[1].startswith("input fingerprint changed")
    assert "model fingerprint changed" not in outcome.message
    unknown = {"model_fingerprint": None, "input_fingerprint": None}
    outcome = run_check(_settings(tmp_path), _request(_heat(5, 5), meta=unknown), None)
    assert "fingerprint changed" not in outcome.message


def test_same_model_and_inputs_says_the_code_or_a_library_changed(tmp_path):
    before = {"model_fingerprint": "m", "input_fingerprint": "i", "versions": {"keras": "3.0"}}
    _write(tmp_path, meta=before)
    now = {**before, "versions": {"keras": "3.1", "backend": "tensorflow"}}
    outcome = run_check(_settings(tmp_path), _request(_heat(5, 5), meta=now), None)
    assert outcome.message.splitlines()[1] == (
        "same model and inputs: the code or a library changed "
        "(golden written with keras 3.0; now keras 3.1)"
    )
    unknown = {"model_fingerprint": "m", "input_fingerprint": None}
    outcome = run_check(_settings(tmp_path), _request(_heat(5, 5), meta=unknown), None)
    assert "same model and inputs" not in outcome.message


def test_the_inputs_of_a_heatmap_are_kept_as_a_thumbnail(tmp_path):
    images = np.random.default_rng(0).random((1, 14, 14, 3)).astype(np.float32)
    request = _request(inputs=images)
    assert run_check(_settings(tmp_path, update="missing"), request, None).status == "written"
    strip = golden.read_inputs(tmp_path / "golden" / REL)
    assert strip is not None and strip.dtype == np.uint8 and strip.shape[2] == 3
    outcome = run_check(_settings(tmp_path, results_dir=tmp_path / "r"), request, None)
    assert outcome.status == "passed"
    assert golden.read_inputs(tmp_path / "r" / "obtained" / REL) is not None


def test_the_entry_lists_the_commands_that_accept_the_result(tmp_path):
    _write(tmp_path)
    results = tmp_path / "r"
    request = _request(_heat(5, 5), label="tests/test_x.py::test_cam")
    outcome = run_check(_settings(tmp_path, results_dir=results), request, FakeCommands())
    commands = outcome.entry["commands"]
    assert commands[0] == "<update failed backend=None override=False>"
    assert commands[-1] == (
        f"convviz-check golden accept {results} -k 'tests/test_x.py::test_cam :: cam'"
    )
    # A non-reference backend's result is accepted as its override, never silently not.
    torch = _request(_heat(5, 5), label="tests/test_x.py::test_cam", backend="torch")
    forked = run_check(_settings(tmp_path, results_dir=results), torch, FakeCommands())
    assert forked.entry["commands"][-1].endswith(" --override")
    # no commands and no label: nothing to suggest
    bare = run_check(_settings(tmp_path, results_dir=results), _request(_heat(5, 5)), None)
    assert bare.status == "failed" and bare.entry["commands"] == []


def test_a_value_of_another_kind_is_an_error_naming_both_kinds(tmp_path):
    _write(tmp_path)
    acts = {"c": np.ones((1, 7, 7, 1), np.float32)}
    request = CheckRequest("cam", REL, Artifact.from_value(acts, "activation"), "tensorflow")
    outcome = run_check(_settings(tmp_path), request, None)
    assert outcome.status == "error"
    assert "kind='heatmap'" in outcome.message and "kind='activation'" in outcome.message


def test_a_value_of_another_layout_fails_plainly(tmp_path):
    from convviz_check.types import GradCAM

    _write(tmp_path)
    cam = GradCAM(
        heatmap=_heat()[None], raw=_heat()[None], class_index=np.array([0]),
        score=np.ones(1, np.float32), score_kind="logit", layer="conv",
        degenerate=np.array([False]), image_shape=(7, 7),
    )  # fmt: skip
    outcome = run_check(_settings(tmp_path), _request(cam), None)
    assert outcome.status == "failed" and outcome.comparison is None
    assert "value type changed: the golden holds 'array', the check got 'gradcam'" in (
        outcome.message
    )


def test_changed_layers_fail_naming_them(tmp_path):
    rel_acts = PurePosixPath("t.py/test_a/acts")
    value = {"c1": np.ones((1, 2, 2, 1)), "c2": np.ones((1, 2, 2, 1))}

    def request(v):
        return CheckRequest("acts", rel_acts, Artifact.from_value(v), "tensorflow")

    assert run_check(_settings(tmp_path, update="missing"), request(value), None).ok
    outcome = run_check(_settings(tmp_path), request({"c1": value["c1"], "c3": value["c2"]}), None)
    assert outcome.status == "failed" and outcome.comparison is None
    assert "layers changed: missing ['c2']; new ['c3']" in outcome.message


def test_a_changed_shape_fails_naming_both_shapes(tmp_path):
    _write(tmp_path)
    outcome = run_check(_settings(tmp_path), _request(np.zeros((5, 5), np.float32)), None)
    assert outcome.status == "failed" and outcome.comparison is None
    assert "shape changed: golden {'value': (7, 7)}, obtained {'value': (5, 5)}" in outcome.message


# ---------------------------------------------------------------------- broken goldens
@pytest.mark.parametrize("update", [None, "missing", "failed", "all"])
def test_a_broken_golden_is_an_error_and_nothing_is_rewritten(tmp_path, update):
    _write(tmp_path)
    base = tmp_path / "golden" / REL
    side = json.loads(golden.files_of(base)[".json"].read_text())
    side["sha256"] = "0" * 64
    golden.files_of(base)[".json"].write_text(json.dumps(side))
    before = _files(tmp_path / "golden")
    outcome = run_check(_settings(tmp_path, update=update), _request(_heat(5, 5)), None)
    assert outcome.status == "error" and outcome.written == []
    lines = outcome.message.splitlines()
    assert lines[0] == "convviz check 'cam': the golden cannot be used."
    assert "does not match its sidecar sha256" in lines[1]
    assert _files(tmp_path / "golden") == before


def test_a_corrupt_golden_file_is_an_error(tmp_path):
    _write(tmp_path)
    golden.files_of(tmp_path / "golden" / REL)[".npz"].write_bytes(b"\x00garbage")
    outcome = run_check(_settings(tmp_path, update="all"), _request(), None)
    assert outcome.status == "error" and "not a .npz (zip) archive" in outcome.message
    assert golden.files_of(tmp_path / "golden" / REL)[".npz"].read_bytes() == b"\x00garbage"


# ---------------------------------------------------------------------- the record
def test_the_report_entry_is_json_ready(tmp_path):
    _write(tmp_path)
    outcome = run_check(
        _settings(tmp_path, results_dir=tmp_path / "r"), _request(_heat(5, 5)), None
    )
    entry = json.loads(json.dumps(outcome.entry))
    assert entry["check"] == "cam" and entry["kind"] == "heatmap"
    assert entry["backend"] == "tensorflow" and entry["status"] == "failed"
    assert entry["golden"] == entry["rel"] == REL.as_posix()
    assert entry["details"]["worst_item"] == "image 0"


def test_a_golden_check_is_an_outcome_like_every_judgment(tmp_path):
    written = _write(tmp_path)
    assert written.outcome.judgment == "golden" and written.outcome.status == "written"
    moved = run_check(_settings(tmp_path), _request(_heat(5, 5)), None)  # the peak moved
    outcome = moved.outcome
    assert outcome.judgment == "golden" and outcome.status == "failed" and not outcome.ok
    assert outcome.lead == moved.message.splitlines()[0]
    assert moved.comparison is not None and outcome.metrics == moved.comparison.metrics
    assert any(not m.ok for m in outcome.metrics.values())
    assert outcome.to_entry()["metrics"] == moved.entry["metrics"]
