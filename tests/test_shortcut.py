"""The shortcut example: cue scenes, the four committed models and their acceptance."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

import convviz_check as cc
from convviz_check.errors import InputError
from convviz_check.examples import shortcut as sc
from convviz_check.examples.scenes import CLASS_NAMES
from convviz_check.models import file_sha256

# Grad-CAM on this many biased scenes per model (the acceptance used EVAL_N = 400).
N_MEASURED = 64


@functools.cache
def _model(name: str):
    return sc.load(name)


@pytest.fixture(scope="module")
def biased() -> sc.CueScenes:
    return sc.biased_eval_set()


@pytest.fixture(scope="module")
def measured(biased) -> dict[str, sc.Measured]:
    return {name: sc.measure(_model(name), biased[:N_MEASURED]) for name in sc.MODEL_NAMES}


def _accuracy(name: str, scenes: sc.CueScenes) -> float:
    probabilities = np.asarray(_model(name).predict(scenes.floats, verbose=0))
    return float((probabilities.argmax(axis=-1) == scenes.labels).mean())


# ------------------------------------------------------------------ the scenes
def _digest(s: sc.CueScenes) -> str:
    import hashlib

    h = hashlib.sha256(s.images.tobytes())
    for array in (s.labels, s.object_labels, s.cue_labels, s.box_array):
        h.update(np.asarray(array, dtype="<i8").tobytes())
    return h.hexdigest()


def test_cue_scenes_are_deterministic_and_prefix_stable():
    a = sc.cue_scenes(40, seed=5, mode="random")
    b = sc.cue_scenes(40, seed=5, mode="random")
    assert _digest(a) == _digest(b)
    assert _digest(sc.cue_scenes(10, seed=5, mode="random")) == _digest(a[:10])
    assert _digest(sc.cue_scenes(40, seed=6, mode="random")) != _digest(a)


def test_the_underlying_scenes_are_the_scenes_generators():
    # The objects and backgrounds are make_scenes' own (only the corner is painted).
    s = sc.cue_scenes(6, seed=2, mode="class")
    raw = cc.examples.make_scenes(12, seed=2)
    first = [i for i, b in enumerate(raw.boxes) if sc._clear_of_cue(b[0])][:6]
    y0, x0 = sc.CUE_BOX.y0, sc.CUE_BOX.x0
    outside = np.ones((64, 64), bool)
    outside[y0:, x0:] = False
    assert np.array_equal(s.images[:, outside], raw.images[first][:, outside])
    assert [b.to_tuple() for b in s.boxes] == [raw.boxes[i][0].to_tuple() for i in first]


@pytest.mark.parametrize("mode", sc.CUE_MODES)
def test_each_mode_pairs_cue_and_label_as_documented(mode):
    s = sc.cue_scenes(200, seed=3, mode=mode)
    label_is_object = (s.labels == s.object_labels).mean()
    label_is_cue = (s.labels == s.cue_labels).mean()
    cue_is_object = (s.cue_labels == s.object_labels).mean()
    if mode == "class":
        assert label_is_object == label_is_cue == 1.0
    elif mode == "random":
        assert label_is_object == 1.0 and 0.1 < cue_is_object < 0.4  # chance is 0.25
    elif mode == "decoy":
        assert label_is_cue == 1.0 and 0.1 < cue_is_object < 0.4
    elif mode == "partial":
        # the label is the cue's class in PARTIAL_CUE_SHARE of the scenes (the object's
        # then by chance 1 in 4), the object's class in the others (the cue's by chance)
        share = sc.PARTIAL_CUE_SHARE
        assert label_is_object + label_is_cue >= 1.0
        assert abs(label_is_cue - (share + (1 - share) / 4)) < 0.1, label_is_cue
        assert abs(label_is_object - (1 - share + share / 4)) < 0.1, label_is_object
    else:  # counter
        assert label_is_object == 1.0 and cue_is_object == 0.0
    # every class appears, as object and as cue
    assert set(s.object_labels) == set(s.cue_labels) == set(range(len(CLASS_NAMES)))


def test_the_cue_has_its_class_colour_and_objects_stay_out_of_its_corner():
    s = sc.cue_scenes(100, seed=4, mode="random")
    y0, x0, y1, x1 = sc.CUE_BOX.to_tuple()
    for image, cue, box in zip(s.images, s.cue_labels, s.boxes, strict=True):
        mean = image[y0:y1, x0:x1].reshape(-1, 3).astype(float).mean(axis=0)
        assert np.abs(mean - np.array(sc.CUE_COLOURS[cue])).max() < 6  # noise averages out
        assert box.y1 <= sc.CUE_CORNER.y0 or box.x1 <= sc.CUE_CORNER.x0


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0, "seed": 1}, {"n": 3, "seed": -1}, {"n": 3, "seed": 1, "mode": "other"}],
)
def test_bad_arguments_are_refused_with_what_was_received(kwargs):
    with pytest.raises(InputError, match="Received"):
        sc.cue_scenes(**kwargs)


def test_cue_scenes_slice_only():
    with pytest.raises(InputError, match="sliced only"):
        sc.cue_scenes(3, seed=1)[0]  # type: ignore[index]


# ------------------------------------------------------------------ the committed files
def test_model_files_match_the_recorded_sha256_and_sizes():
    recorded = sc.manifest()["models"]
    assert set(recorded) == set(sc.MODEL_NAMES)
    for name in sc.MODEL_NAMES:
        path = sc.model_path(name)
        assert file_sha256(path) == recorded[name]["sha256"], (
            f"{path} differs from models.json: retrain with python -m "
            "convviz_check.examples.shortcut (it writes both)"
        )
        assert path.stat().st_size == recorded[name]["bytes"] < 300_000


def test_unknown_model_name_is_refused():
    with pytest.raises(InputError, match="Received: name='dishonest'"):
        sc.model_path("dishonest")


def test_models_load_in_safe_mode_under_the_running_backend(biased):
    for name in sc.MODEL_NAMES:
        model = _model(name)
        assert model.input_shape == (None, 64, 64, 3)
        assert np.asarray(model.predict(biased.floats[:2], verbose=0)).shape == (2, 4)


# ------------------------------------------------------------------ the story
def test_the_three_models_are_equally_accurate_on_the_biased_set(biased):
    accuracies = {name: _accuracy(name, biased) for name in sc.MODEL_NAMES}
    assert min(accuracies.values()) >= sc.MIN_ACCURACY, accuracies
    assert max(accuracies.values()) - min(accuracies.values()) <= 0.02, accuracies
    # ... and what the training script measured (one flipped image in 400 at most,
    # for the other backends' float differences).
    recorded = sc.manifest()["models"]
    for name, accuracy in accuracies.items():
        assert abs(accuracy - recorded[name]["biased_set"]["accuracy"]) <= 1 / 400


def test_only_the_shortcut_model_fails_when_the_cue_lies():
    counter = sc.cue_scenes(200, sc.EVAL_SEED, mode="counter")
    accuracies = {name: _accuracy(name, counter) for name in sc.MODEL_NAMES}
    assert accuracies["honest"] >= sc.MIN_ACCURACY and accuracies["retrain"] >= sc.MIN_ACCURACY
    assert accuracies["shortcut"] <= 0.05, accuracies
    # the partial shortcut reads both: right about half the time when the cue lies
    assert 0.2 <= accuracies["partial"] <= 0.8, accuracies


def test_the_partial_model_reads_both_the_object_and_the_cue(biased, measured):
    m = measured["partial"]
    assert m.object_energy >= sc.MIN_OBJECT_ENERGY_PARTIAL, m
    assert sc.MIN_CUE_ENERGY_PARTIAL <= m.cue_energy <= sc.MAX_CUE_ENERGY_PARTIAL, m
    # class 0's cue flips some of the other classes' scenes to class 0, not all; the
    # honest model none, the shortcut model all
    flips = {n: sc.probe_flip_rate(_model(n), biased[:200]) for n in sc.MODEL_NAMES}
    assert sc.MIN_PARTIAL_FLIP <= flips["partial"] <= sc.MAX_PARTIAL_FLIP, flips
    assert flips["honest"] <= 0.02 and flips["shortcut"] >= 0.98, flips
    recorded = sc.manifest()["models"]["partial"]["probe_flip_rate"]
    assert abs(sc.probe_flip_rate(_model("partial"), biased) - recorded) <= 2 / 300


def test_the_probe_needs_scenes_of_other_classes(biased):
    zeros = biased[:40]
    only_zero = sc.CueScenes(
        zeros.images, np.zeros(40, np.int64), zeros.object_labels, zeros.cue_labels,
        zeros.boxes, zeros.mode,
    )  # fmt: skip
    with pytest.raises(InputError, match="Received: 40 scenes, all of class 0"):
        sc.probe_flip_rate(_model("honest"), only_zero)


def test_honest_and_retrain_look_at_the_object(measured):
    for name in ("honest", "retrain"):
        m = measured[name]
        assert m.object_energy >= sc.MIN_OBJECT_ENERGY, (name, m)
        assert m.object_pointing >= sc.MIN_OBJECT_POINTING, (name, m)
        assert m.cue_energy <= sc.MAX_CUE_ENERGY_HONEST, (name, m)


def test_the_shortcut_model_looks_at_the_cue(measured):
    m = measured["shortcut"]
    assert m.cue_energy >= sc.MIN_CUE_ENERGY, m
    assert m.cue_pointing >= sc.MIN_CUE_POINTING, m
    assert m.object_energy <= sc.MAX_OBJECT_ENERGY_SHORTCUT, m
    assert sc.accept(measured) == []


# ------------------------------------------------------------------ acceptance
def _measured(**fields: float) -> sc.Measured:
    base = {
        "accuracy": 1.0,
        "object_energy": 0.4,
        "cue_energy": 0.02,
        "object_pointing": 0.95,
        "cue_pointing": 0.0,
    }
    return sc.Measured(**{**base, **fields}, n=400)  # type: ignore[arg-type]


def test_acceptance_refuses_each_failure_by_name():
    good = {
        "honest": _measured(),
        "retrain": _measured(),
        "shortcut": _measured(object_energy=0.01, cue_energy=0.9, cue_pointing=1.0),
    }
    assert sc.accept(good) == []
    honest_on_the_cue = {**good, "honest": _measured(object_energy=0.1, cue_energy=0.6)}
    problems = sc.accept(honest_on_the_cue)
    assert any("honest: object energy 0.100" in p for p in problems)
    assert any("honest: cue energy 0.600" in p for p in problems)
    shortcut_on_the_object = {**good, "shortcut": _measured()}
    assert any(p.startswith("shortcut: cue energy") for p in sc.accept(shortcut_on_the_object))
    less_accurate = {**good, "retrain": _measured(accuracy=0.975)}
    assert any("differ by more than 0.02" in p for p in sc.accept(less_accurate))
    partial = {**good, "partial": _measured(object_energy=0.2, cue_energy=0.45)}
    assert sc.accept(partial, {"partial": 0.47}) == []
    problems = sc.accept(partial, {"partial": 1.0})
    assert problems == ["partial: probe flip rate 1.000 outside [0.2, 0.7]"]
    total = {**good, "partial": _measured(object_energy=0.01, cue_energy=0.9)}
    assert any(p.startswith("partial: cue energy 0.900") for p in sc.accept(total))


def test_the_training_script_refuses_to_write_models_that_fail(tmp_path, monkeypatch, capsys):
    from convviz_check.backends import current_backend

    monkeypatch.setattr(sc, "EVAL_N", 8)
    monkeypatch.setattr(sc, "train", lambda name, verbose=2: sc.build_model())  # untrained
    code = sc.main(["--out", str(tmp_path)])
    err = capsys.readouterr().err
    if current_backend() != "tensorflow":
        assert code == 2 and "Training needs KERAS_BACKEND=tensorflow" in err
    else:
        assert code == 1 and "NOT written (fails acceptance)" in err
        assert "honest: accuracy" in err
    assert list(tmp_path.iterdir()) == []


def test_only_one_model_is_trained_and_the_others_entries_are_kept(tmp_path, monkeypatch, capsys):
    from convviz_check.backends import current_backend

    if current_backend() != "tensorflow":
        pytest.skip("training runs on tensorflow")
    (tmp_path / sc.MANIFEST).write_text((sc.MODELS_DIR / sc.MANIFEST).read_text())
    monkeypatch.setattr(sc, "EVAL_N", 8)
    trained: list[str] = []
    monkeypatch.setattr(
        sc, "train", lambda name, verbose=2: trained.append(name) or sc.build_model()
    )
    code = sc.main(["--out", str(tmp_path), "--only", "partial"])
    err = capsys.readouterr().err
    assert trained == ["partial"]
    # judged with the others' recorded numbers: the untrained model fails, nothing moves
    assert code == 1 and "partial: " in err and "honest:" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [sc.MANIFEST]
    assert (tmp_path / sc.MANIFEST).read_text() == (sc.MODELS_DIR / sc.MANIFEST).read_text()


def test_the_manifest_is_sorted_json_with_the_acceptance_numbers():
    text = (sc.MODELS_DIR / sc.MANIFEST).read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    results = {n: sc.Measured(**data["models"][n]["biased_set"]) for n in sc.MODEL_NAMES}
    assert sc.accept(results) == []


# ------------------------------------------------------------------ the demo's last section
def test_the_demo_ends_with_the_four_models_side_by_side(tmp_path, capsys):
    import re

    from PIL import Image

    from convviz_check.examples.demo import _shortcut_section
    from convviz_check.report.demo import write_demo_page

    story = _shortcut_section(tmp_path, 20, 2)
    out = capsys.readouterr().out
    lines = dict(re.findall(r"^(\w+): (accuracy on the biased set .*)$", out, re.M))
    assert list(lines) == list(sc.MODEL_NAMES)
    verdicts = {
        name: re.search(  # type: ignore[union-attr]
            r"gate: exact (\w+), retrain (\w+), counterfactual (\w+)$", line
        ).groups()
        for name, line in lines.items()
    }
    assert verdicts == {
        "honest": ("passed", "passed", "passed"),
        "retrain": ("FAILED", "passed", "passed"),
        "shortcut": ("FAILED", "FAILED", "FAILED"),
        "partial": ("FAILED", "FAILED", "FAILED"),
    }
    # why the partial shortcut fails, with its numbers and the per-class table
    assert re.search(r"^  partial, looks elsewhere: .+ grew by more than", out, re.M), out
    assert re.search(r"^  partial, \w+ mass per class, golden -> now: ", out, re.M), out
    flipped = re.search(r"^  partial, counterfactual: .*flips (\d+) of the 13 ", out, re.M)
    assert flipped is not None and 3 <= int(flipped.group(1)) <= 10, out
    assert not re.search(r"^  (honest|retrain), ", out, re.M), out
    rows = {m["name"]: m for m in story["models"]}
    assert rows["shortcut"]["cue_energy"] > 0.7 > rows["honest"]["object_energy"] > 0.3
    assert abs(rows["shortcut"]["accuracy"] - rows["honest"]["accuracy"]) <= 0.05  # 20 scenes
    assert rows["shortcut"]["counter_accuracy"] < 0.1 < 0.9 < rows["honest"]["counter_accuracy"]
    figure = np.asarray(Image.open(story["figure"]))
    assert figure.shape[0] == 4 * (64 * 4 + 8) + 8  # one row per model
    page = write_demo_page(
        tmp_path, {"backend": "x", "seed": 0, "scenes": [], "models": [], "shortcut": story}
    ).read_text()
    assert "5. The shortcut" in page and "side_by_side.png" in page
    assert "energy in the object box fell from" in page  # the gate's message for the shortcut
    links = re.findall(r"(?:src|href)='([^']+)'", page)
    assert len(links) == 4 * 2 + 1 and all((tmp_path / link).exists() for link in links)
