"""The gate example (convviz_check/examples/gate) run as a team runs it, on the three
models of the shortcut example: the honest model passes; a benign retrain fails the
``exact`` profile and passes ``retrain``; the shortcut model fails both, says why, and
keeps its accuracy.

The gate runs in pytester (in-process) on a copy of its folder, so the shipped goldens
are never written. Everything an inner run imports for the first time is dropped when
it ends; importing a C extension twice crashes the process, so :func:`warm` runs the
gate's computations once here first (see the root conftest).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

import convviz_check as cc
from convviz_check.examples import shortcut
from tests._gate import APPROVAL_FILES, CODE_FILES, GATE, copy_gate, outcomes_of

GATE_FILES = CODE_FILES + APPROVAL_FILES
ACCURACY_LINE = re.compile(r"(\S+\.keras): accuracy (\d\.\d{3}) on (\d+) evaluation images")


@pytest.fixture(scope="module")
def warm() -> None:
    """Load a model and run what the gate runs (Grad-CAM, activations, localization,
    overlays, report pictures) before any inner run."""
    from convviz_check.report.checks import write_report  # noqa: F401
    from convviz_check.report.pictures import write_check_images  # noqa: F401

    model = shortcut.load("honest")
    images = shortcut.biased_eval_set(2)
    cam = cc.gradcam(model, images.floats)
    cc.activations(model, images.floats[:1], layers=cc.conv_layers(model)[:1])
    cc.localization.measure(cam[0], images.boxes[0])
    cc.overlay(images.images[0], cam[0])
    from convviz_check.plugin_counterfactual import predictions  # the probe's forward pass

    predictions(model, images.floats)


@pytest.fixture
def gate(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, warm: None):
    """A copy of the gate folder as a pytester project (its pytest.ini, goldens owned by
    tensorflow as shipped); CI unset."""
    monkeypatch.delenv("CI", raising=False)
    copy_gate(pytester.path, approved=True)
    return pytester


def _run(gate: pytest.Pytester, model: str, *args: str) -> pytest.RunResult:
    return gate.runpytest(f"--convviz-model={shortcut.model_path(model)}", *args)


def _accuracy(result: pytest.RunResult) -> float:
    found = ACCURACY_LINE.search(result.stdout.str())
    assert found is not None, result.stdout.str()[-2000:]
    return float(found.group(2))


def test_the_gate_folder_holds_what_its_readme_promises():
    for name in GATE_FILES:
        assert (GATE / name).is_file(), name
    goldens = sorted(p.relative_to(GATE / "golden").as_posix() for p in GATE.rglob("*.npz"))
    assert goldens == [
        "test_gate.py/test_first_layer_matches_golden/first_layer.npz",
        "test_gate.py/test_gradcam_matches_golden/gradcam.npz",
    ]
    # The goldens hold the honest model's maps, with the object boxes they were judged on.
    from convviz_check import golden
    from convviz_check.models import model_fingerprint

    stored = golden.load(GATE / "golden/test_gate.py/test_gradcam_matches_golden/gradcam")
    assert stored.sidecar["model_fingerprint"] == model_fingerprint(shortcut.load("honest"))
    assert stored.artifact.boxes is not None and len(stored.artifact.boxes) == 16
    # The counterfactual probe's reference: the honest model flips none of the 13 images
    # of other classes towards the cue's class, and keeps its map off the cue.
    probe = json.loads((GATE / "counterfactual.json").read_text())
    assert probe["n_images"] == 13 and probe["flipped"] == [0, 0, 0, 0]
    assert probe["cue_mass"] < 0.05


def test_honest_model_passes_with_the_model_named_in_the_ini_file(gate):
    ini = (gate.path / "pytest.ini").read_text()
    relative = os.path.relpath(shortcut.model_path("honest"), gate.path)  # to the ini file
    (gate.path / "pytest.ini").write_text(ini + f"convviz_model = {relative}\n")
    result = gate.runpytest("-v")
    result.assert_outcomes(passed=5)
    assert _accuracy(result) >= 0.95


def test_benign_retrain_fails_exact_with_the_changed_weights_named(gate):
    result = _run(gate, "retrain", "-v")
    result.assert_outcomes(passed=3, failed=2)
    outcomes = outcomes_of(result)
    assert outcomes["test_gradcam_matches_golden"] == "FAILED"
    assert outcomes["test_first_layer_matches_golden"] == "FAILED"
    assert outcomes["test_gradcam_lands_on_the_objects"] == "PASSED"
    # the pasted cue flips nothing, as on the approved model
    assert outcomes["test_a_pasted_cue_moves_no_prediction"] == "PASSED"
    result.stdout.fnmatch_lines(["*model fingerprint changed*"])


def test_the_printed_accept_command_runs_as_printed(gate):
    if cc.backends.current_backend() != "tensorflow":
        pytest.skip("the gate's goldens are owned by tensorflow: only it may accept here")
    # The model is named relative to the invocation directory, as a team would.
    (gate.path / "models").mkdir()
    shutil.copy(shortcut.model_path("retrain"), gate.path / "models" / "candidate.keras")
    result = gate.runpytest("--convviz-model=models/candidate.keras", "-k", "gradcam_matches")
    result.assert_outcomes(failed=1, deselected=4)
    found = re.search(r"accept the new result: (.+)$", result.stdout.str(), re.M)
    assert found is not None, result.stdout.str()[-2000:]
    words = shlex.split(found.group(1))
    assert words[0] == "pytest", words  # run from the rootdir, under the default backend
    model_flag = [w for w in words if w.startswith("--convviz-model=")]
    assert model_flag == [f"--convviz-model={gate.path / 'models' / 'candidate.keras'}"]
    gate.runpytest(*words[1:]).assert_outcomes(passed=1)  # the golden is rewritten
    again = gate.runpytest(model_flag[0], "-k", "gradcam_matches")
    again.assert_outcomes(passed=1, deselected=4)


def test_benign_retrain_passes_the_retrain_profile(gate):
    result = _run(gate, "retrain", "--convviz-profile=retrain", "-v")
    # The activations check is judged by linear CKA (blind to how a retrain orders its
    # channels), and the retrain's first layer keeps the golden's geometry.
    result.assert_outcomes(passed=5)
    assert outcomes_of(result)["test_first_layer_matches_golden"] == "PASSED"
    assert outcomes_of(result)["test_a_pasted_cue_moves_no_prediction"] == "PASSED"


@pytest.mark.parametrize("profile", ["exact", "retrain"])
def test_shortcut_fails_both_profiles_says_why_and_keeps_its_accuracy(gate, profile):
    honest = shortcut.manifest()["models"]["honest"]["biased_set"]["accuracy"]
    result = _run(
        gate, "shortcut", f"--convviz-profile={profile}", "--convviz-results-dir=results", "-v"
    )
    outcomes = outcomes_of(result)
    assert outcomes["test_accuracy"] == "PASSED"
    assert outcomes["test_gradcam_matches_golden"] == "FAILED"
    assert outcomes["test_gradcam_lands_on_the_objects"] == "FAILED"
    # The accuracy a team watches does not move (within 2 points of the honest model's).
    assert abs(_accuracy(result) - honest) <= 0.02
    out = result.stdout.str()
    # The localization assertion: the mass left the objects, the peaks sit in the corner.
    assert re.search(r"mean energy in the object boxes 0\.0\d\d \(at least 0\.25", out), out
    assert re.search(r"where the peaks are: the bottom-right corner in 1[4-6] of 16", out), out
    assert "peak on the object (within 8 px) in 0 of 16 images" in out
    # The counterfactual probe: the corner cue of class 0 pasted into the 13 checked
    # images of other classes flips every one of them (the approved model: none), and
    # the map follows it.
    assert outcomes["test_a_pasted_cue_moves_no_prediction"] == "FAILED"
    assert re.search(
        r"the cue flips 13 of the 13 images this model does not already put in class 0 into "
        r"that class \(golden model: 0 of the 13 it does not already put there\)"
        r"; (\d+)% of the map's mass sits on the cue \(golden: 0%\)",
        out,
    ), out
    if profile == "retrain":
        # The golden check compares with the approved model's maps: from X to Y.
        fell = re.search(r"energy in the object box fell from (0\.\d+) to (0\.\d+)", out)
        assert fell is not None, out
        assert float(fell.group(1)) >= 0.3 and float(fell.group(2)) <= 0.05
        assert re.search(r"peak moved from inside the box to the bottom-right corner", out)
    # The report a CI run uploads, and an overlay of every image the peak missed.
    results = gate.path / "results"
    assert "test_gradcam_matches_golden" in (results / "report.html").read_text()
    overlays = list((results / "images" / "test_gate.py").rglob("localized-*.overlay.png"))
    assert len(overlays) == 16
    report_data = json.loads((results / "report.json").read_text())
    localized = [e for e in report_data["entries"] if e["judgment"] == "localization"]
    assert len(localized) == 16 and all(e["status"] == "failed" for e in localized)
    (probe,) = [e for e in report_data["entries"] if e["judgment"] == "counterfactual"]
    assert probe["status"] == "failed" and probe["facts"]["flipped"] == [13, 0, 0, 0]
    assert probe["facts"]["cue_mass"] >= 0.3 and probe["facts"]["reference"]["cue_mass"] < 0.05


def test_partial_shortcut_fails_the_retrain_profile_for_both_reasons(gate):
    # Trained where the cue tells the label in 40% of the scenes: it reads the object
    # and the cue; accuracy 1.000 as the honest model's, the first layer unchanged.
    result = _run(gate, "partial", "--convviz-profile=retrain", "-v")
    outcomes = outcomes_of(result)
    assert outcomes["test_accuracy"] == "PASSED"
    assert outcomes["test_first_layer_matches_golden"] == "PASSED"
    assert abs(_accuracy(result) - 1.0) <= 0.02
    out = result.stdout.str()
    # The counterfactual reason: the pasted cue flips 6 of the 13 images (the approved
    # model: none), not all as for the total shortcut.
    assert outcomes["test_a_pasted_cue_moves_no_prediction"] == "FAILED"
    flipped = re.search(
        r"the cue flips (\d+) of the 13 images this model does not already put in class 0 "
        r"into that class \(golden model: 0 of the 13 it does not already put there\)",
        out,
    )
    assert flipped is not None, out
    assert 3 <= int(flipped.group(1)) <= 9  # measured: 6 (46%); the shortcut model: 13
    # Looks elsewhere: the corner's mass grew in every image (measured 0.01 -> 0.31),
    # with the per-class table; part of the mass stays on the objects.
    assert outcomes["test_gradcam_matches_golden"] == "FAILED"
    grew = re.search(
        r"looks elsewhere: the bottom_right corner's mass grew by more than 0\.05 in "
        r"(\d+) of 16 images \(mean 0\.0\d -> (0\.\d+)\)",
        out,
    )
    assert grew is not None, out
    assert int(grew.group(1)) >= 12 and 0.15 <= float(grew.group(2)) <= 0.45
    # the verdict leads the check's message (a retrain's changed weights are no news)
    header = out.index("convviz check 'gradcam' (heatmap, profile retrain) does not match")
    first = out[header:].splitlines()[1]
    assert "looks elsewhere:" in first and "fingerprint" not in first, first
    assert re.search(r"bottom_right mass per class, golden -> now: all 0\.0\d -> 0\.", out)
    fell = re.search(r"energy in the object box fell from (0\.\d+) to (0\.\d+)", out)
    assert fell is not None and 0.1 <= float(fell.group(2)) <= 0.3, out


def test_no_model_is_a_clear_error(gate):
    result = gate.runpytest("-v")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*No model to check*--convviz-model unset*convviz_model*"])


def test_the_gate_and_the_shortcut_models_ship_in_the_wheel():
    import tomllib

    root = Path(cc.__file__).resolve().parent
    config = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = {p for pattern in config["package-data"]["convviz_check"] for p in root.glob(pattern)}
    wanted = [p for p in GATE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    wanted += list((root / "examples/models/shortcut").iterdir())
    assert wanted and [p for p in wanted if p not in shipped] == []
    # golden/ folders are named after test files: data, never discovered as packages
    assert "convviz_check.examples.gate.golden*" in config["packages"]["find"]["exclude"]
