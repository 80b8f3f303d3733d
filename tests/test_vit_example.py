"""The vision-transformer example (convviz_check/examples/vit.py): the committed models
match their manifest, attention rollout tells the honest model from the shortcut one
(Grad-CAM on the token grid does not land on the objects), and the gate example (its judgments unchanged, goldens
written for the honest transformer in a temporary copy) passes the honest transformer
and fails the shortcut one under the retrain profile. (A retrain of the honest recipe
with another seed fails the Grad-CAM judgments too, docs/transformers.md: the probe's
flip count, 13 of 13 against none, is what separates the shortcut here.)

The gate runs in pytester (in-process), as in tests/test_gate_example.py: everything the
inner runs import is imported once first (:func:`warm`).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import convviz_check as cc
from convviz_check.examples import shortcut, vit
from convviz_check.models import file_sha256
from tests._gate import copy_gate, outcomes_of

pytest.importorskip("keras_hub")

N_CHECKED = 16  # the gate's images (conftest.N_CHECKED)


def test_committed_models_match_their_manifest():
    data = vit.manifest()
    assert data["token_layer"] == vit.TOKEN_LAYER
    for name in vit.MODEL_NAMES:
        path = vit.model_path(name)
        entry = data["models"][name]
        assert file_sha256(path) == entry["sha256"], name
        assert path.stat().st_size == entry["bytes"] < 1_000_000
    with pytest.raises(cc.InputError, match="Unknown vision-transformer example model"):
        vit.model_path("retrain")


def test_the_mean_head_reads_patch_tokens_only_and_its_final_norm_is_the_cam_layer():
    from convviz_check.graph import targets, tokens

    model = vit.build_model(head="mean")
    # No class token: 64 patch tokens of the 8x8 grid, averaged by the head.
    assert model.get_layer("vit_backbone").use_class_token is False
    auto = targets.target_layer(model)
    assert auto == vit.TOKEN_LAYERS["mean"] == "ln"
    grid = tokens.infer_grid(model, auto, (64, 64))
    assert (grid.height, grid.width, grid.prefix) == (8, 8, 0)
    assert vit.head_of(model) == "mean" and vit.head_of(vit.build_model()) == "class_token"
    assert vit.model_path("honest", head="mean").name == "honest_mean.keras"
    with pytest.raises(cc.InputError, match="Unknown vision-transformer example head"):
        vit.build_model(head="cls")


@pytest.fixture(scope="module")
def models() -> dict:
    return {name: vit.load(name) for name in vit.MODEL_NAMES}


def test_rollout_tells_the_honest_model_from_the_shortcut(models):
    images = shortcut.biased_eval_set(N_CHECKED)
    honest = vit.measure(models["honest"], images)
    cheat = vit.measure(models["shortcut"], images)
    # Rollout: the honest model's flow sits on the object, the shortcut model's in the
    # corner, as the acceptance requires (400 images: 0.27 / 0.08 and 0.07 / 0.37).
    assert honest["rollout"].object_energy > 2 * honest["rollout"].cue_energy
    assert cheat["rollout"].cue_energy > 2 * cheat["rollout"].object_energy
    assert cheat["rollout"].cue_pointing > 0.9 and honest["rollout"].cue_pointing < 0.1
    # Grad-CAM on the token grid does not separate them by the boxes (docs/transformers.md):
    # the peak sits off the object for most images of both models.
    assert honest["gradcam"].object_pointing < 0.5 and cheat["gradcam"].object_pointing < 0.5
    # Both as accurate on the biased set, where the corner follows the class.
    assert honest["rollout"].accuracy >= 0.9 and cheat["rollout"].accuracy >= 0.9
    # The token grid is the 8x8 grid of 8-px cells, read at the named token layer.
    cam = cc.gradcam(models["honest"], images.floats[:1], layer=vit.TOKEN_LAYER)
    assert cam.heatmap.shape == (1, 8, 8) and "8x8 grid after 1 prefix" in cam.note


def test_the_automatic_layer_of_the_hybrid_is_its_token_layer(models):
    # The head reads the class token, so the rule explains tokens, not the stem's last
    # map (stem2_pool, 16x16) before the transformer.
    images = shortcut.biased_eval_set(2).floats
    auto = cc.gradcam(models["honest"], images)
    named = cc.gradcam(models["honest"], images, layer=vit.TOKEN_LAYER)
    assert auto.layer == vit.TOKEN_LAYER
    np.testing.assert_array_equal(auto.heatmap, named.heatmap)


@pytest.fixture(scope="module")
def warm(models) -> None:
    """What the gate runs, once, before any inner run (see the root conftest)."""
    from convviz_check.plugin_counterfactual import predictions
    from convviz_check.report.checks import write_report  # noqa: F401
    from convviz_check.report.pictures import write_check_images  # noqa: F401

    model = models["honest"]
    images = shortcut.biased_eval_set(2)
    cam = cc.gradcam(model, images.floats, layer=vit.TOKEN_LAYER)
    cc.activations(model, images.floats[:1], layers=cc.conv_layers(model)[:1])
    cc.localization.measure(cam[0], images.boxes[0])
    cc.overlay(images.images[0], cam[0])
    predictions(model, images.floats)


@pytest.fixture
def gate(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, warm: None):
    """The gate folder without goldens; Grad-CAM on the transformer's token layer."""
    monkeypatch.delenv("CI", raising=False)
    # Without the convnet's goldens and probe: the update run writes the transformer's.
    copy_gate(pytester.path, approved=False)
    ini = (pytester.path / "pytest.ini").read_text()
    # The goldens are written here by the running backend, so it owns them.
    ini += f"convviz_gradcam_layer = {vit.TOKEN_LAYER}\n"
    ini += f"convviz_golden_backend = {cc.backends.current_backend()}\n"
    (pytester.path / "pytest.ini").write_text(ini)
    return pytester


def test_the_gate_judges_the_transformers(gate):
    honest = f"--convviz-model={vit.model_path('honest')}"
    skip_localization = ("-k", "not lands_on_the_objects")
    # The team's first step: goldens and the probe's reference from the approved model.
    gate.runpytest(honest, "--convviz-update=missing", *skip_localization).assert_outcomes(
        passed=4, deselected=1
    )
    reference = json.loads((gate.path / "counterfactual.json").read_text())
    others = int(np.sum(shortcut.biased_eval_set(N_CHECKED).labels != 0))
    assert reference["n_images"] == others and reference["flipped"] == [0, 0, 0, 0]
    passed = gate.runpytest(honest, "--convviz-profile=retrain", *skip_localization)
    passed.assert_outcomes(passed=4, deselected=1)
    # The gate's localization bound (peaks on the object in 90% of the images) fails the
    # honest transformer: Grad-CAM on its token grid does not land on the objects.
    located = gate.runpytest(honest, "-k", "lands_on_the_objects")
    located.assert_outcomes(failed=1, deselected=4)
    located.stdout.fnmatch_lines(["*Grad-CAM does not land on the objects*"])
    # The shortcut transformer: as accurate, but its maps left the golden's and the
    # pasted cue flips every image of another class.
    result = gate.runpytest(
        f"--convviz-model={vit.model_path('shortcut')}",
        "--convviz-profile=retrain",
        "-v",
        *skip_localization,
    )
    outcomes = outcomes_of(result)
    out = result.stdout.str()
    assert outcomes["test_accuracy"] == "PASSED", out[-3000:]
    assert outcomes["test_gradcam_matches_golden"] == "FAILED", out[-3000:]
    assert outcomes["test_a_pasted_cue_moves_no_prediction"] == "FAILED"
    # (the golden model's count leaves out the images it already called class 0)
    flips = (
        rf"the cue flips {others} of the {others} images this model does not already put in "
        r"class 0 into that class "
    )
    assert re.search(
        flips + r"\(golden model: 0 of the \d+ it does not already put there\)", out
    ), out[-3000:]
    assert re.search(r"looks elsewhere: .*energy in the object box fell", out), out[-3000:]


def _measured(accuracy: float, on_object: float, in_corner: float) -> shortcut.Measured:
    return shortcut.Measured(accuracy, on_object, in_corner, 0.5, 0.5, 400)


def test_accept_judges_accuracy_and_where_rollout_lands():
    good = {
        "honest": {"rollout": _measured(0.95, 0.27, 0.08)},
        "shortcut": {"rollout": _measured(1.0, 0.07, 0.37)},
    }
    assert vit.accept(good) == []
    # Grad-CAM's numbers are recorded, never judged.
    assert (
        vit.accept({n: {**m, "gradcam": _measured(0.0, 0.0, 1.0)} for n, m in good.items()}) == []
    )
    swapped = {"honest": good["shortcut"], "shortcut": good["honest"]}
    assert vit.accept(swapped) == [
        "honest: rollout energy on the object 0.070, in the corner 0.370",
        "shortcut: rollout energy on the object 0.270, in the corner 0.080",
    ]
    weak = {**good, "honest": {"rollout": _measured(0.93, 0.27, 0.08)}}
    assert vit.accept(weak) == [
        "honest: accuracy 0.930 < 0.94",
        "accuracies [0.93, 1.0] differ by more than 0.06",
    ]


@pytest.mark.parametrize("argv", [["--seed", "24"], ["--only", "honest", "--seed", "-1"]])
def test_a_retrain_seed_needs_one_model_and_a_valid_seed(argv, capsys):
    # Checked before anything is trained or imported: the parser stops the command.
    with pytest.raises(SystemExit) as stopped:
        vit.main(argv)
    assert stopped.value.code == 2
    assert "--seed needs --only and a non-negative int" in capsys.readouterr().err
