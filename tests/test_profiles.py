"""Gate profiles: ``exact`` (bounds at numerical noise) and ``retrain`` (heatmaps judged on
what survives a retraining: rank agreement, the hot region, the explained class, the
energy in the object box and the pointing game).

Most tests use synthetic Grad-CAM-like maps (8x8 maps over 64x64 images, one object
box per image): a *golden* blob on each box, a *retrain* of it (the blob a third of a
cell off, a little seeded noise) and a *shortcut* (the mass in the top-left corner).
One test retrains the bundled convnet's recipe for real (TensorFlow, ~20 s).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import scipy.stats  # noqa: F401 - imported before pytester's inner runs (see conftest.py)

from convviz_check import golden, tolerances
from convviz_check.artifacts import Artifact
from convviz_check.checks import CheckRequest, Settings, attach_boxes, run_check
from convviz_check.errors import ComparisonError, LocalizationError
from convviz_check.measures import spearman
from convviz_check.metrics import check_boxes, compare, region_name
from convviz_check.types import METRICS, PROFILES, RETRAIN_METRICS, Box

# The synthetic maps, as source: the pytester projects below run the same code.
SYNTH = '''
import numpy as np

from convviz_check.types import Box, GradCAM

N = 8
# one object box per 64x64 image, near the middle (input-image pixels)
BOXES = [
    Box(16 + 2 * (i % 4), 20 + 2 * (i // 4), 40 + 2 * (i % 4), 44 - 2 * (i // 4))
    for i in range(N)
]


def maps(variant, classes=None):
    """8x8 maps over 64x64 images: "golden" a blob on each box; "retrain" the blob a
    third of a cell off, plus seeded noise (what a retrain does to a map); "shortcut"
    the mass in the top-left corner."""
    yy, xx = np.mgrid[0:8, 0:8] + 0.5
    rng = np.random.default_rng(7)
    out = []
    for b in BOXES:
        cy, cx = (b.y0 + b.y1) / 16, (b.x0 + b.x1) / 16
        if variant == "golden":
            m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.9)
        elif variant == "retrain":
            m = np.exp(-((yy - cy - 0.3) ** 2 + (xx - cx + 0.3) ** 2) / 3.2)
            m = m + 0.02 * rng.random((8, 8))
        else:
            m = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 2.0)
        out.append(m / m.max())
    hm = np.array(out, np.float32)
    n = len(hm)
    return GradCAM(
        heatmap=hm,
        raw=hm.copy(),
        class_index=np.zeros(n, np.int64) if classes is None else np.asarray(classes),
        score=np.ones(n, np.float32),
        score_kind="logit",
        layer="conv",
        degenerate=np.zeros(n, bool),
        image_shape=(64, 64),
    )
'''
_ns: dict = {}
exec(SYNTH, _ns)  # noqa: S102 - our own source, shared with the inner projects
N: int = _ns["N"]
BOXES: list[Box] = _ns["BOXES"]
maps = _ns["maps"]

REL = PurePosixPath("tests/test_x.py/test_cam/cam")


def _retrain(golden_cam, obtained_cam, **kwargs):
    return compare(golden_cam, obtained_cam, "heatmap", profile="retrain", **kwargs)


# ------------------------------------------------------------------ the profile name
@pytest.mark.parametrize("bad", ["Retrain", "retrained", "", None, 1])
def test_an_unknown_profile_is_refused_naming_the_valid_ones(bad):
    with pytest.raises(ComparisonError) as info:
        tolerances.check_profile(bad, "convviz(profile=...)")
    text = str(info.value)
    assert "('exact', 'retrain')" in text and f"Received: {bad!r}" in text
    assert "convviz(profile=...)" in text
    with pytest.raises(ComparisonError, match="Expected one of"):
        compare(maps("golden"), maps("golden"), "heatmap", profile=bad)


def test_the_exact_profile_is_the_default_and_its_report_is_unchanged():
    g, r = maps("golden"), maps("retrain")
    default = compare(g, r, "heatmap")
    exact = compare(g, r, "heatmap", profile="exact", boxes=BOXES)  # boxes: ignored
    assert default.text == exact.text and default.details == exact.details
    names = {name for name, _f, _d in METRICS["heatmap"]}
    assert set(exact.metrics) == names | {"degenerate_changed", "class_changed"}
    assert "profile" not in exact.details and "profile" not in exact.text


# ------------------------------------------------------------------ heatmaps under retrain
def test_a_retrain_like_change_fails_exact_and_passes_retrain():
    g, r = maps("golden"), maps("retrain")
    assert not compare(g, r, "heatmap").passed
    result = _retrain(g, r, boxes=BOXES)
    assert result.passed, result.text
    assert set(result.metrics) == {n for n, _f, _d in RETRAIN_METRICS["heatmap"]} | {
        "degenerate_changed"
    }
    assert result.details["profile"] == "retrain"
    assert "heatmap comparison passed (8 images, profile retrain)" in result.text


def test_a_shortcut_map_fails_retrain_naming_the_box_energy_and_where_the_peak_went():
    result = _retrain(maps("golden"), maps("shortcut"), boxes=BOXES)
    assert not result.passed
    lines = result.text.splitlines()
    energy = [ln for ln in lines if ln.startswith("energy in the object box fell from")]
    assert energy, result.text
    assert energy[0].endswith("(mean over 8 images; bound: drop <= 0.1)")
    before, after = (float(v) for v in energy[0].split("from ")[1].split(" (")[0].split(" to "))
    assert before > 0.4 and after < 0.05  # measured by energy_in_box, not echoed
    assert "peak moved from inside the box to the top-left corner in 8/8 images" in lines
    assert "pointing game: 8/8 hits in the golden, 0/8 now" in lines
    # the plain cause leads; the metric lines follow the summary
    assert lines.index(energy[0]) < lines.index(
        "heatmap comparison FAILED (8 images, profile retrain)"
    )
    failed = {k for k, m in result.metrics.items() if not m.ok}
    assert failed == {
        "spearman_mean",
        "topk_iou_mean",
        "box_energy_drop_mean",
        "box_energy_drop",
        "pointing_drop",
        "region_shift",
    }
    # the verdict leads, with the corner the mass went to (not the border around it)
    assert lines[0].startswith(
        "looks elsewhere: the top_left corner's mass grew by more than 0.05 in 8 of 8 images"
    ), result.text
    assert result.details["verdicts"]["predicts differently"]["failed"] is False


def test_a_shortcut_in_one_image_fails_the_per_image_energy_bound_only():
    golden_cam, shortcut = maps("golden"), maps("shortcut")
    mixed = maps("golden").heatmap.copy()
    mixed[5] = shortcut.heatmap[5]
    result = _retrain(golden_cam, replace(golden_cam, heatmap=mixed), boxes=BOXES)
    failed = {k for k, m in result.metrics.items() if not m.ok}
    assert failed == {"box_energy_drop"}, result.text
    assert result.metrics["box_energy_drop"].note.startswith("worst at image 5:")
    assert result.details["worst_item"] == "image 5"
    assert "peak moved from inside the box to the top-left corner in 1/8 images" in result.text


def test_without_boxes_the_box_metrics_are_not_judged_and_the_text_says_so():
    result = _retrain(maps("golden"), maps("shortcut"))
    assert not result.passed  # the rank and top-k metrics still see it
    assert not {"box_energy_drop_mean", "box_energy_drop", "pointing_drop"} & set(result.metrics)
    assert "no object boxes: energy in the box and the pointing game not judged" in result.text


def test_class_agreement_counts_images_explaining_another_class():
    g = maps("golden")
    one_changed = maps("golden", classes=[0, 0, 0, 2, 0, 0, 0, 0])
    result = _retrain(g, one_changed, boxes=BOXES)
    assert result.metrics["class_agreement"].value == pytest.approx(7 / 8)
    assert not result.metrics["class_agreement"].ok  # bound 0.9: one of 8 is too many
    assert result.text.splitlines()[:2] == [
        "predicts differently: 1 of 8 images changed class, to class 2",
        "the explained class changed in 1/8 images (agreement 0.875; bound >= 0.9)",
    ]
    assert "top class changed: 0 -> 2 (image 3)" in result.text
    assert _retrain(g, maps("golden"), boxes=BOXES).metrics["class_agreement"].value == 1.0


def test_a_tolerance_overrides_a_retrain_bound():
    g, s = maps("golden"), maps("shortcut")
    loose = {"heatmap_box_energy_drop_mean": 0.9}
    result = _retrain(g, s, boxes=BOXES, tolerance=loose)
    assert result.metrics["box_energy_drop_mean"].ok
    assert result.metrics["box_energy_drop_mean"].bound == 0.9
    assert not result.metrics["pointing_drop"].ok


def test_patterns_are_not_comparable_under_retrain_activations_are():
    value = np.ones((2, 8, 8, 3), np.uint8)
    with pytest.raises(ComparisonError, match="not judged under the retrain profile") as info:
        compare(value, value, "pattern", profile="retrain")
    assert "do not correspond" in str(info.value)
    assert compare(value, value, "pattern").passed  # exact still judges them
    acts = {"c": np.arange(12.0).reshape(1, 2, 2, 3)}
    judged = compare(acts, {"c": acts["c"][..., ::-1]}, "activation", profile="retrain")
    assert judged.passed and judged.metrics["cka"].value == pytest.approx(1.0)


# ------------------------------------------------------------------ measures
def test_spearman_is_rank_agreement_with_ties_shared():
    a = np.array([[0.0, 0.0, 0.2], [0.5, 0.9, 1.0]])
    assert spearman(a, a**3) == pytest.approx(1.0)  # any increasing map of the values
    assert spearman(a, -a) == pytest.approx(-1.0)
    ties = np.array([0.0, 0.0, 0.0, 1.0])
    assert spearman(ties, np.array([0.0, 0.1, 0.2, 1.0])) == pytest.approx(0.7745966692)
    # values within RANK_RESOLUTION are one tie, not an order made by rounding noise
    assert spearman(ties + np.array([0, 1e-9, 2e-9, 0]), ties) == 1.0
    assert spearman(np.zeros(4), np.zeros(4)) == 1.0
    assert spearman(np.zeros(4), ties) == 0.0


def test_region_names_cut_the_image_in_thirds():
    shape = (8, 8)
    assert region_name((0, 0), shape) == "the top-left corner"
    assert region_name((7, 7), shape) == "the bottom-right corner"
    assert region_name((0, 4), shape) == "the top edge"
    assert region_name((4, 0), shape) == "the left edge"
    assert region_name((3, 3), shape) == "the centre"
    assert region_name(None, shape) == "nowhere"


# ------------------------------------------------------------------ boxes
def test_boxes_are_a_list_of_box_or_an_int_array_alike():
    as_boxes = check_boxes(BOXES, N, (64, 64))
    as_array = check_boxes(np.array([b.to_tuple() for b in BOXES]), N, (64, 64))
    as_lists = check_boxes([list(b.to_tuple()) for b in BOXES], N, (64, 64))
    assert as_boxes.dtype == np.int64 and as_boxes.shape == (N, 4)
    assert np.array_equal(as_boxes, as_array) and np.array_equal(as_boxes, as_lists)


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        (BOXES[:7], "needs one box per image: 8 heatmap(s), 7 box(es)"),
        (BOXES[0], "takes one box per image (8)"),
        (np.zeros((8, 4), np.float32), "integer array"),
        (np.zeros((8, 3), np.int64), "(N, 4) integer array"),
        ([(0, 0, 70, 10)] * 8, "boxes[0] must be a non-empty box inside the 64x64 image"),
        ([(5, 5, 5, 10)] * 8, "Received: (y0=5, x0=5, y1=5, x1=10)"),
        ([(-1, 0, 5, 5)] * 8, "0 <= y0 < y1 <= 64"),
        ("boxes", "list of Box"),
    ],
)
def test_bad_boxes_are_refused_saying_what_was_received(boxes, expected):
    with pytest.raises(LocalizationError) as info:
        _retrain(maps("golden"), maps("retrain"), boxes=boxes)
    assert expected in str(info.value)


def test_boxes_refer_to_input_pixels_of_a_gradcam_and_to_the_map_of_a_bare_array():
    cam = Artifact.from_value(maps("golden"))
    assert attach_boxes(cam, BOXES).boxes.shape == (N, 4)
    bare = Artifact.from_value(maps("golden").heatmap)  # (8, 8, 8): maps at "image" size
    with pytest.raises(LocalizationError, match="inside the 8x8 image"):
        attach_boxes(bare, BOXES, "convviz.check(boxes=...)")
    assert attach_boxes(bare, [(0, 0, 4, 4)] * N).boxes.tolist()[0] == [0, 0, 4, 4]
    acts = Artifact.from_value({"c": np.ones((1, 2, 2, 3))})
    with pytest.raises(LocalizationError, match="go with heatmap checks.*activation"):
        attach_boxes(acts, BOXES, "convviz.check(boxes=...)")


# ------------------------------------------------------------------ the calibrated table
def test_retrain_defaults_set_exactly_the_retrain_fields():
    tol = tolerances.default_tolerance("heatmap", profile="retrain")
    fields = {f for _n, f, _d in RETRAIN_METRICS["heatmap"]}
    # heatmap_region_growth is the per-image growth region_shift counts, not a bound
    assert set(tol.to_dict()) == fields | {"pixel_atol", "heatmap_region_growth"}
    assert set(tolerances.RETRAIN_MEASURED) == fields
    # one column: the cross-backend flag does not change the retrain bounds
    assert tolerances.default_tolerance("heatmap", True, "retrain") == tol


def test_every_retrain_bound_covers_the_measured_retrains_and_fails_the_corner_shortcut():
    # Similarities keep >= 1.5x the worst measured gap to 1 (or are exactly 1 measured);
    # drops keep >= 2x the worst measured drop; the share of a group whose region grew
    # keeps 1.5x and stays below 1 (a shift in every image of a group fails). The corner
    # shortcut fails every bound but those of "predicts differently" (it keeps the class).
    from convviz_check.evidence import VERDICT_OF

    for name, field, direction in RETRAIN_METRICS["heatmap"]:
        bound = tolerances.RETRAIN["heatmap"][field]
        worst64, worst16, corner, one_class = tolerances.RETRAIN_MEASURED[field]
        worst = min(worst64, worst16) if direction == "min" else max(worst64, worst16)
        if VERDICT_OF[name] == "predicts differently":
            assert corner == worst == (1.0 if direction == "min" else 0.0), field
        if direction == "min":
            assert 1 - bound >= 1.5 * (1 - worst), (field, bound, worst)
            assert corner < bound or field == "heatmap_class_agreement_min", field
        elif field == "heatmap_region_shift_share_max":
            assert 1.5 * worst <= bound < 1.0, (field, bound, worst)
            assert corner > bound and one_class > bound, (field, bound, corner, one_class)
        elif field == "heatmap_class_flip_share_max":
            # called out, not judged by default: an honest retrain of a hesitant model
            # sent 13 of 14 changed images to one class (docs/gate-validation.md)
            assert bound == 1.0 and worst == 0.0, (field, bound, worst)
        else:
            assert bound >= 2 * worst, (field, bound, worst)
            assert corner > bound, (field, bound, corner)


def test_retrain_fields_are_project_tolerance_fields_of_heatmaps_only():
    tol = tolerances.parse_fields("heatmap_box_energy_drop_mean=0.2", "ini", "heatmap")
    assert tol.heatmap_box_energy_drop_mean == 0.2
    with pytest.raises(ComparisonError, match="fields of another kind"):
        tolerances.parse_fields("heatmap_spearman_mean_min=0.2", "ini", "activation")


# ------------------------------------------------------------------ run_check
def _request(value, profile=None, boxes=None, meta=None) -> CheckRequest:
    artifact = attach_boxes(Artifact.from_value(value), boxes)
    return CheckRequest("cam", REL, artifact, "tensorflow", meta=dict(meta or {}), profile=profile)


def _settings(tmp_path: Path, **kwargs) -> Settings:
    return Settings(golden_dir=tmp_path / "golden", reference="tensorflow", **kwargs)


def _base(tmp_path: Path) -> Path:
    return tmp_path / "golden" / REL


@pytest.mark.parametrize("profile", PROFILES)
def test_the_profile_is_recorded_in_the_sidecar_and_the_report_entry(tmp_path, profile):
    outcome = run_check(
        _settings(tmp_path, update="missing"), _request(maps("golden"), profile, BOXES), None
    )
    assert outcome.status == "written" and outcome.entry["profile"] == profile
    side = golden.load(_base(tmp_path)).sidecar
    assert side["profile"] == profile
    assert set(side["tolerance"]) == set(
        tolerances.default_tolerance("heatmap", profile=profile).to_dict()
    )


def test_boxes_are_stored_with_the_golden_byte_stably_and_inherited_by_later_checks(tmp_path):
    run_check(
        _settings(tmp_path, update="missing"), _request(maps("golden"), "retrain", BOXES), None
    )
    files = golden.files_of(_base(tmp_path))
    first = files[".npz"].read_bytes(), files[".json"].read_bytes()
    stored = golden.load(_base(tmp_path))
    assert stored.artifact.boxes.tolist() == [list(b.to_tuple()) for b in BOXES]
    assert stored.sidecar["shape"]["boxes"] == [N, 4]
    # rewriting the same content leaves the same bytes
    again = run_check(
        _settings(tmp_path, update="all"), _request(maps("golden"), "retrain", BOXES), None
    )
    assert again.status == "passed"
    assert (files[".npz"].read_bytes(), files[".json"].read_bytes()) == first
    # a later check without boxes is measured in the golden's boxes
    later = run_check(_settings(tmp_path), _request(maps("shortcut"), "retrain"), None)
    assert later.status == "failed"
    assert "energy in the object box fell from" in later.message
    assert "(heatmap, profile retrain) does not match its golden." in later.message
    assert "compared with the retrain profile's built-in bounds" in later.message
    assert later.entry["profile"] == "retrain"


def test_other_boxes_than_the_goldens_are_a_plain_mismatch(tmp_path):
    run_check(_settings(tmp_path, update="missing"), _request(maps("golden"), None, BOXES), None)
    moved = [Box(b.y0 + 1, b.x0, b.y1 + 1, b.x1) for b in BOXES]
    for profile in PROFILES:
        outcome = run_check(_settings(tmp_path), _request(maps("golden"), profile, moved), None)
        assert outcome.status == "failed" and outcome.comparison is None
        assert "object boxes changed: the golden holds 8 box(es) (16, 20, 40, 44)" in (
            outcome.message
        )
        assert "the check gives 8 box(es) (17, 20, 41, 44)" in outcome.message


def test_a_kind_retrain_does_not_judge_is_skipped_with_the_reason_or_written_when_missing(
    tmp_path,
):
    acts = np.ones((2, 8, 8, 3), np.uint8)  # filter patterns

    def request(value):
        return CheckRequest(
            "acts", REL, Artifact.from_value(value, "pattern"), "tensorflow", profile="retrain"
        )

    assert run_check(_settings(tmp_path), request(acts), None).status == "missing"
    written = run_check(_settings(tmp_path, update="missing"), request(acts), None)
    assert written.status == "written"
    assert golden.load(_base(tmp_path)).sidecar["tolerance"] == (
        tolerances.default_tolerance("pattern").to_dict()  # the bounds that judge it
    )
    changed = np.full((2, 8, 8, 3), 7, np.uint8)
    for update in (None, "failed"):
        outcome = run_check(_settings(tmp_path, update=update), request(changed), None)
        assert outcome.status == "skipped" and outcome.ok and outcome.comparison is None
        assert outcome.message.startswith(
            "convviz check 'acts' (pattern) not judged: filter patterns are not judged under "
            "the retrain profile"
        )
    stored = golden.load(_base(tmp_path)).artifact.arrays
    assert next(iter(stored.values()))[0, 0, 0, 0] == 1
    rewritten = run_check(_settings(tmp_path, update="all"), request(changed), None)
    assert rewritten.status == "written"


def test_an_exact_failure_of_a_changed_model_suggests_the_retrain_profile(tmp_path):
    class Commands:
        def update(self, mode, *, backend=None, override=False):
            return f"<update {mode}>"

        def ci_route(self):
            return None

    run_check(
        _settings(tmp_path, update="missing"),
        _request(maps("golden"), meta={"model_fingerprint": "a" * 64}),
        None,
    )
    same = run_check(
        _settings(tmp_path),
        _request(maps("retrain"), meta={"model_fingerprint": "a" * 64}),
        Commands(),
    )
    changed = run_check(
        _settings(tmp_path),
        _request(maps("retrain"), meta={"model_fingerprint": "b" * 64}),
        Commands(),
    )
    hint = "if the model was retrained on purpose, judge this check with the retrain profile"
    assert same.status == changed.status == "failed"
    assert hint not in same.message and hint in changed.message


def test_accept_of_a_retrain_check_keeps_its_profile_and_boxes(tmp_path, capsys):
    from convviz_check.cli import main

    run_check(_settings(tmp_path, update="missing"), _request(maps("golden"), None, BOXES), None)
    results = tmp_path / "results"
    failed = run_check(
        _settings(tmp_path, results_dir=results), _request(maps("shortcut"), "retrain"), None
    )
    assert failed.status == "failed"
    entry = {**failed.entry, "nodeid": "tests/test_x.py::test_cam"}
    (results / "report.json").write_text(
        json.dumps({"golden_backend": "tensorflow", "entries": [entry]})
    )
    assert main(["golden", "accept", str(results), "--golden-dir", str(tmp_path / "golden")]) == 0
    assert "1 check(s) accepted" in capsys.readouterr().err
    accepted = golden.load(_base(tmp_path))
    assert accepted.sidecar["profile"] == "retrain"
    assert accepted.artifact.boxes.tolist() == [list(b.to_tuple()) for b in BOXES]
    assert np.array_equal(accepted.artifact.arrays["heatmap"], maps("shortcut").heatmap)
    again = run_check(_settings(tmp_path), _request(maps("shortcut"), "retrain"), None)
    assert again.status == "passed"


# ------------------------------------------------------------------ the plugin
INNER = (
    SYNTH
    + """
import os

import pytest

{marker}
def test_cam(convviz):
    convviz.check("cam", maps(os.environ["CONVVIZ_TEST_VARIANT"]), boxes=BOXES)
"""
)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """A project with the golden maps written under the running backend."""
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {current_backend()}\n")
    pytester.makepyfile(test_gate=INNER.format(marker=""))
    monkeypatch.setenv("CONVVIZ_TEST_VARIANT", "golden")
    pytester.runpytest("--convviz-update=missing").assert_outcomes(passed=1)
    monkeypatch.setenv("CONVVIZ_TEST_VARIANT", "retrain")
    return pytester


def _ini(p: pytest.Pytester, profile: str | None) -> None:
    from convviz_check.backends import current_backend

    lines = ["[pytest]", f"convviz_golden_backend = {current_backend()}"]
    p.makeini("\n".join(lines + ([f"convviz_profile = {profile}"] if profile else [])) + "\n")


@pytest.mark.parametrize(
    ("marker", "flag", "ini", "judged_by"),
    [
        (None, None, None, "exact"),
        (None, None, "retrain", "retrain"),
        (None, "retrain", "exact", "retrain"),  # flag > ini
        (None, "exact", "retrain", "exact"),
        ("retrain", "exact", "exact", "retrain"),  # marker > flag > ini
        ("exact", "retrain", "retrain", "exact"),
    ],
)
def test_the_profile_is_the_markers_else_the_flags_else_the_inis(
    project, marker, flag, ini, judged_by
):
    mark = f'@pytest.mark.convviz(profile="{marker}")' if marker else ""
    project.makepyfile(test_gate=INNER.format(marker=mark))
    _ini(project, ini)
    results = project.path / "results"
    args = [f"--convviz-results-dir={results}"] + ([f"--convviz-profile={flag}"] if flag else [])
    outcome = project.runpytest(*args)
    # a retrain-like change: the exact profile fails it, the retrain profile passes it
    outcome.assert_outcomes(**({"passed": 1} if judged_by == "retrain" else {"failed": 1}))
    entry = json.loads((results / "report.json").read_text())["entries"][0]
    assert entry["profile"] == judged_by
    header = "*, profile retrain" if (flag or ini) == "retrain" and flag != "exact" else None
    if header:
        outcome.stdout.fnmatch_lines([f"convviz: goldens *{header}"])


def _backend_prefix() -> str:
    """How a printed command names the running backend (Keras' default goes unnamed)."""
    from convviz_check.backends import current_backend

    backend = current_backend()
    return "" if backend == "tensorflow" else f"KERAS_BACKEND={backend} "


def test_a_shortcut_fails_the_retrain_profile_in_pytest_with_the_plain_cause(project, monkeypatch):
    monkeypatch.setenv("CONVVIZ_TEST_VARIANT", "shortcut")
    results = project.path / "results"
    outcome = project.runpytest("--convviz-profile=retrain", f"--convviz-results-dir={results}")
    outcome.assert_outcomes(failed=1)
    outcome.stdout.fnmatch_lines(
        [
            "*convviz check 'cam' (heatmap, profile retrain) does not match its golden.",
            "*energy in the object box fell from 0.55 to 0.00 (mean over 8 images; bound: "
            "drop <= 0.1)",
            "*peak moved from inside the box to the top-left corner in 8/8 images",
            f"*accept the new result: {_backend_prefix()}pytest --convviz-update=failed "
            "--convviz-profile=retrain test_gate.py::test_cam",
        ]
    )
    page = (results / "report.html").read_text()
    assert "cam <small>(heatmap, profile retrain)</small>" in page
    assert "<th>energy in box</th>" in page and "the top-left corner" in page
    assert "<td class=bad>hit \u2192 miss</td>" in page


def test_a_bad_profile_is_a_usage_error_or_a_failed_check_naming_the_valid_ones(project):
    flag = project.runpytest("--convviz-profile=retrained")
    assert flag.ret == pytest.ExitCode.USAGE_ERROR
    flag.stderr.fnmatch_lines(["*--convviz-profile*invalid choice*'retrained'*"])
    _ini(project, "Retrain")
    ini = project.runpytest()
    assert ini.ret == pytest.ExitCode.USAGE_ERROR
    ini.stderr.fnmatch_lines(["*Expected one of ('exact', 'retrain'). Received: 'Retrain'"])
    _ini(project, None)
    project.makepyfile(test_gate=INNER.format(marker='@pytest.mark.convviz(profile="loose")'))
    marker = project.runpytest()
    marker.assert_outcomes(failed=1)
    marker.stdout.fnmatch_lines(
        ["*Unknown gate profile in convviz(profile=...). Expected one of ('exact', 'retrain'). "
         "Received: 'loose'"]
    )  # fmt: skip


ACTS = """
import os

import numpy as np
import pytest

{synth}

def test_acts_only(convviz):
    convviz.check("acts", np.full((1, 8, 8, 3), int(os.environ["V"]), np.uint8), kind="pattern")


def test_acts_then_a_shortcut(convviz):
    convviz.check("acts", np.full((1, 8, 8, 3), int(os.environ["V"]), np.uint8), kind="pattern")
    convviz.check("cam", maps(os.environ["CAM"]), boxes=BOXES)
"""


def test_checks_retrain_does_not_judge_skip_the_test_once_it_has_run(pytester, monkeypatch):
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {current_backend()}\n")
    pytester.makepyfile(test_acts=ACTS.format(synth=SYNTH))
    monkeypatch.setenv("V", "1")
    monkeypatch.setenv("CAM", "golden")
    pytester.runpytest("--convviz-update=missing").assert_outcomes(passed=2)
    monkeypatch.setenv("V", "2")  # every channel changed: a retrain, say
    skipped = pytester.runpytest("--convviz-profile=retrain", "-rs")
    skipped.assert_outcomes(skipped=2)
    skipped.stdout.fnmatch_lines(
        ["SKIPPED [[]1[]] test_acts.py:*: convviz check 'acts' (pattern) not judged: "
         "filter patterns are not judged under the retrain profile*"]
    )  # fmt: skip
    monkeypatch.setenv("CAM", "shortcut")  # the heatmap check after it still judges
    failed = pytester.runpytest("--convviz-profile=retrain")
    failed.assert_outcomes(skipped=1, failed=1)
    failed.stdout.fnmatch_lines(["*energy in the object box fell from*"])


# ------------------------------------------------------------------ a real retrain
@pytest.fixture(scope="module")
def real_retrain():
    """The committed convnet and the bundled recipe retrained with another seed, shortened
    to 300 steps (1600 scenes, 6 epochs) so the test takes ~20 s: a shorter run gives a
    model that misclassifies (150 steps: 3 of 16 scenes), which the gate rightly fails."""
    from convviz_check.backends import current_backend

    if current_backend() != "tensorflow":
        pytest.skip("the example recipe trains on the TensorFlow backend")
    from convviz_check.backends import enable_determinism
    from convviz_check.examples import load_example_model
    from convviz_check.examples.scenes import make_scenes
    from convviz_check.examples.train import TRAIN_SEED, train

    enable_determinism()
    retrained = train("convnet", make_scenes(1600, seed=TRAIN_SEED), verbose=0, seed=2)
    return load_example_model("convnet"), retrained


def test_a_real_retrain_fails_exact_and_passes_retrain(tmp_path, real_retrain):
    from convviz_check.examples.scenes import make_scenes
    from convviz_check.explain.gradcam import gradcam
    from convviz_check.models import model_fingerprint

    committed, retrained = real_retrain
    scenes = make_scenes(16, seed=4242)  # fresh: no training or calibration used them
    boxes = [b[0] for b in scenes.boxes]

    def request(model, profile):
        meta = {"model_fingerprint": model_fingerprint(model)}
        return _request(gradcam(model, scenes.floats), profile, boxes, meta)

    run_check(_settings(tmp_path, update="missing"), request(committed, None), None)
    exact = run_check(_settings(tmp_path), request(retrained, None), None)
    assert exact.status == "failed"
    assert "model fingerprint changed" in exact.message
    retrain = run_check(_settings(tmp_path), request(retrained, "retrain"), None)
    assert retrain.status == "passed", retrain.comparison.text
    metrics = retrain.comparison.metrics
    assert metrics["class_agreement"].value == 1.0
    assert metrics["box_energy_drop_mean"].value < 0.05
    assert math.isfinite(metrics["spearman_mean"].value)
