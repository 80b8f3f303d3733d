"""Cross-backend agreement (convviz_check/crossbackend/agreement.py), the ``agree``
command and the ``convviz.assert_backends_agree`` fixture method.

Tests that run several backends are marked ``crossbackend`` (the crossbackend tox env:
``pytest -m crossbackend``); they share one session pool of warm workers with
tests/test_worker.py and tests/test_pool.py (``tests._worker_ops.shared_pool``, whose
workers also serve the test ops), because each worker start costs seconds of imports. A missing backend skips them with a reason naming it (the per-backend envs),
or fails them where ``CONVVIZ_REQUIRE_BACKENDS=1`` (the crossbackend env). The bundled
models (convnet, xception as ``.keras`` and as a keras-hub preset) are checked on a few
fresh scenes with few filters and ascent steps, which keeps the whole ``-m
crossbackend`` run to a few minutes; the mechanics (planted disagreement, crash, hang)
use a tiny model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from convviz_check import cli, examples
from convviz_check.artifacts import Artifact
from convviz_check.crossbackend import agreement as ag
from convviz_check.crossbackend import pool as pool_mod
from convviz_check.errors import InputError, WorkerError
from convviz_check.types import TECHNIQUES, GradCAM, Tolerance
from tests import _models, _worker_ops

ALL = ("tensorflow", "torch", "jax")
IMAGE_SHAPE = (24, 24, 3)


require_or_skip = _worker_ops.require_or_skip


def tiny_convnet(seed: int = 0):
    """Tiny convnet with NumPy-seeded weights (Keras seeds differ across backends)."""
    return _models.sequential(IMAGE_SHAPE, seed=seed, name="tiny")


def torch_shifted_convnet():
    """The tiny convnet, with layer c2's weights moved by 1e-6 of their std under torch
    only: a planted cross-backend difference far inside the default bounds but above
    a zero bound (the backends may well compute the unchanged model bit-identically)."""
    import keras

    model = tiny_convnet()
    if keras.config.backend() == "torch":
        _worker_ops.perturb_weights(model, "c2", 1e-6, seed=0)
    return model


@pytest.fixture(scope="session")
def pool(request: pytest.FixtureRequest) -> pool_mod.WorkerPool:
    return _worker_ops.shared_pool(request.config)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agreement") / "tiny.keras"
    tiny_convnet().save(path)
    return path


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1, (3, *IMAGE_SHAPE)).astype(np.float32)


# -- synthetic results (also used by tests/test_export.py and test_report_agreement.py) --
def synthetic_results(
    shift: float = 0.0, degenerate: bool = False, classes: tuple[int, int] = (0, 2)
) -> tuple[ag.Results, ag.Results]:
    """Per-backend results as the workers return them, with an optional planted change
    (``shift`` added to layer ``b`` of the second)."""
    rng = np.random.default_rng(0)
    acts = {"a": rng.normal(size=(2, 6, 6, 3)).astype(np.float32)}
    acts["b"] = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    heat = rng.uniform(0, 1, (2, 5, 5)).astype(np.float32)
    heat /= heat.max(axis=(1, 2), keepdims=True)
    cam = GradCAM(
        heatmap=np.zeros_like(heat) if degenerate else heat,
        raw=heat,
        class_index=np.array(classes),
        score=np.ones(2, np.float32),
        score_kind="logit",
        layer="b",
        degenerate=np.full(2, degenerate),
        image_shape=(12, 12),
    )
    patterns = rng.uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    base = {
        "activations": Artifact.from_value(acts, "activation"),
        "gradcam": Artifact.from_value(cam, attrs={"top_class": list(classes)}),
        "filters": Artifact.from_value(
            patterns, "pattern", attrs={"layer": "b", "filters": [0, 1, 2]}
        ),
    }
    changed = {**base, "activations": Artifact.from_value({**acts, "b": acts["b"] + shift})}
    return base, changed


# -- framework-free parent -----------------------------------------------------------------
BLOCKER = textwrap.dedent(
    """
    import sys
    BLOCKED = ("keras", "keras_hub", "tensorflow", "torch", "jax", "jaxlib")
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import: {name}")
            return None
    sys.meta_path.insert(0, Block())
    """
)


def test_parent_side_runs_with_keras_and_frameworks_blocked(tmp_path: Path) -> None:
    from convviz_check.crossbackend.export import export_artifacts

    base, _ = synthetic_results()
    for backend in ("tensorflow", "jax"):
        export_artifacts(tmp_path, backend, "tests/x.py::test_y[p]", base, info={})
    code = BLOCKER + textwrap.dedent(
        f"""
        import convviz_check, convviz_check.cli.agree, convviz_check.metrics
        import convviz_check.crossbackend.agreement, convviz_check.crossbackend.export
        import convviz_check.report.agreement
        from convviz_check.crossbackend.pool import WorkerPool
        from convviz_check import cli
        cli.build_parser()
        pool = WorkerPool()
        pool.close()
        code = cli.main(["agree", "--exported", {str(tmp_path)!r}])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print("EXIT", code, "LOADED", loaded)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "EXIT 0 LOADED []" in proc.stdout
    assert "1 check(s) agree across backends" in proc.stdout


def test_model_objects_are_refused_never_pickled() -> None:
    with pytest.raises(InputError, match="never pickled"):
        ag.model_spec(object())
    with pytest.raises(InputError, match="importable module names"):
        ag.model_spec("m.keras", custom_objects={"Layer": object})


def test_unknown_or_no_techniques_are_refused_before_any_worker_starts() -> None:
    for what in (("activations", "saliency"), ()):
        with pytest.raises(InputError, match="Unknown technique"):
            ag.agreement("m.keras", np.zeros((1, 8, 8, 3), np.float32), what=what)


def test_images_must_be_a_numeric_batch() -> None:
    assert ag.as_images(np.zeros((8, 8, 3))).shape == (1, 8, 8, 3)
    for bad in (np.zeros((8, 8)), np.zeros((0, 8, 8, 3)), np.array([["a"]])):
        with pytest.raises(InputError, match="Images must be"):
            ag.as_images(bad)


def test_artifact_params_are_json_ready() -> None:
    params = ag.artifact_params(class_index=np.array([3, 1]), filters=(0, 2), filter_size=(8, 8))
    assert json.loads(json.dumps(params)) == params
    assert params["gradcam"]["class_index"] == [3, 1]
    assert params["filters"]["filters"] == [0, 2] and params["filters"]["size"] == [8, 8]
    assert ag.artifact_params(class_index=np.int64(2))["gradcam"]["class_index"] == 2


def test_report_names_the_worst_layer_and_fills_a_symmetric_matrix() -> None:
    base, changed = synthetic_results(shift=0.5)
    results = {"tensorflow": base, "torch": base, "jax": changed}
    report = ag.build_report("m.keras", ALL, TECHNIQUES, results)
    assert not report.passed and not report
    pair, item = report.worst("activations")
    assert item == "b" and pair.obtained == "jax"
    matrix = report.matrix("activations", "max_rel")
    assert matrix["torch"]["jax"] is matrix["jax"]["torch"]
    assert matrix["tensorflow"]["torch"].value == 0.0 and matrix["tensorflow"]["torch"].ok
    assert not matrix["tensorflow"]["jax"].ok and matrix["tensorflow"]["tensorflow"] is None
    assert report.notes[0] == "activations disagree: worst layer b (tensorflow vs jax)"
    assert str(report).startswith("cross-backend agreement FAILED")
    # gradcam and filters were identical: their pairs pass
    assert all(p.passed for p in report.pairs if p.artifact != "activations")


def test_worst_pair_is_the_one_farthest_from_its_bounds_even_when_all_pass() -> None:
    base, small = synthetic_results(shift=1e-6)
    _, larger = synthetic_results(shift=3e-6)
    results = {"tensorflow": base, "torch": small, "jax": larger}
    report = ag.build_report("m", ALL, ("activations",), results)
    assert report.passed
    distances = {p.pair: p.distance for p in report.pairs}
    assert 0 < distances["tensorflow|torch"] < distances["tensorflow|jax"] <= 1
    pair, item = report.worst("activations")
    assert pair.pair == "tensorflow|jax" and item == "b"
    assert report.worst("gradcam") is None  # not compared


def test_report_to_dict_is_json_ready_with_every_metric() -> None:
    base, changed = synthetic_results(shift=0.5)
    report = ag.build_report(
        "m", ("tensorflow", "jax"), TECHNIQUES, {"tensorflow": base, "jax": changed}
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is False and data["backends"] == ["tensorflow", "jax"]
    (acts,) = [p for p in data["pairs"] if p["artifact"] == "activations"]
    assert acts["worst_item"] == "b" and acts["passed"] is False
    assert set(acts["metrics"]["max_rel"]) == {"value", "bound", "ok", "direction", "note"}
    assert acts["metrics"]["max_rel"]["ok"] is False


def test_degenerate_maps_are_reported_as_degenerate() -> None:
    deg, _ = synthetic_results(degenerate=True)
    report = ag.build_report(
        "m.keras", ("tensorflow", "jax"), ("gradcam",), {"tensorflow": deg, "jax": deg}
    )
    assert report.passed
    assert "degenerate on every backend" in str(report)
    ok, _ = synthetic_results()
    mixed = ag.build_report(
        "m.keras", ("tensorflow", "jax"), ("gradcam",), {"tensorflow": ok, "jax": deg}
    )
    assert not mixed.passed
    assert "degenerate on jax only" in str(mixed)


def test_top_class_notes_tell_aligned_classes_from_different_ones() -> None:
    ref, _ = synthetic_results()
    aligned, _ = synthetic_results()
    aligned["gradcam"] = Artifact.decode(
        aligned["gradcam"].arrays,
        "heatmap",
        "gradcam",
        {**aligned["gradcam"].attrs, "top_class": [1, 2]},
    )
    report = ag.build_report(
        "m", ("tensorflow", "torch"), ("gradcam",), {"tensorflow": ref, "torch": aligned}
    )
    assert report.passed
    assert report.notes == [
        "top class differs on image 0: tensorflow=0, torch=1 (Grad-CAM compared for "
        "tensorflow's class 0 on both)"
    ]


def test_missing_results_and_differing_layers_are_problems() -> None:
    base, _ = synthetic_results()
    other = {k: v for k, v in base.items() if k != "activations"}
    other["filters"] = Artifact.decode(
        base["filters"].arrays, "pattern", "array", {**base["filters"].attrs, "layer": "a"}
    )
    report = ag.build_report(
        "m", ("tensorflow", "jax"), TECHNIQUES, {"tensorflow": base, "jax": other}
    )
    assert not report.passed
    assert "activations: no result from jax" in report.problems
    assert any(p.startswith("filters layer differs across backends") for p in report.problems)


def test_fingerprint_difference_is_a_note() -> None:
    base, _ = synthetic_results()
    info = {"tensorflow": {"fingerprint": "a" * 64}, "jax": {"fingerprint": "b" * 64}}
    report = ag.build_report(
        "m", ("tensorflow", "jax"), ("activations",), {"tensorflow": base, "jax": base}, info=info
    )
    assert report.passed
    assert report.notes == [
        "model fingerprint differs (the backends did not run the same weights): "
        "tensorflow=aaaaaaaaaaaa, jax=bbbbbbbbbbbb"
    ]


def test_a_mixed_precision_model_is_named_with_how_to_widen_the_bounds() -> None:
    import keras

    from convviz_check.crossbackend.compute import describe_model

    base, _ = synthetic_results()
    plain = {"tensorflow": {}, "jax": {"reduced_precision": []}}
    results = {"tensorflow": base, "jax": base}
    report = ag.build_report("m", ("tensorflow", "jax"), ("activations",), results, info=plain)
    assert not [n for n in report.notes if "mixed precision" in n]
    mixed = {"tensorflow": {"reduced_precision": ["float16"]}, "jax": {}}
    report = ag.build_report("m", ("tensorflow", "jax"), ("activations",), results, info=mixed)
    assert [n for n in report.notes if n.startswith("the model computes in float16 (mixed")]
    # What a worker reports of a model built under the mixed_float16 policy.
    x_in = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(2, 3, dtype="mixed_float16", name="c")(x_in)
    out = keras.layers.Dense(2, dtype="float32")(keras.layers.GlobalAveragePooling2D()(conv))
    assert describe_model(keras.Model(x_in, out))["reduced_precision"] == ["float16"]
    x_in = keras.Input((8, 8, 3))
    plain_model = keras.Model(x_in, keras.layers.Conv2D(2, 3)(x_in))
    assert describe_model(plain_model)["reduced_precision"] == []


def test_tolerance_objects_pass_through_to_compare() -> None:
    base, changed = synthetic_results(shift=1e-3)
    results = {"tensorflow": base, "jax": changed}
    strict = ag.build_report("m", ("tensorflow", "jax"), ("activations",), results)
    loose = ag.build_report(
        "m",
        ("tensorflow", "jax"),
        ("activations",),
        results,
        Tolerance(activation_max_rel=1.0, activation_mean_rel=1.0),
    )
    assert not strict.passed and loose.passed


# -- the real thing: three backends ----------------------------------------------------------
# The bundled models, as .keras files and as a keras-hub preset directory (the same
# xception weights through keras-hub's preset loader).
BUNDLED_SOURCES = {
    "convnet": examples.model_path("convnet"),
    "xception": examples.model_path("xception"),
    "xception-preset": examples.preset_dir("xception"),
}
# graph_targets.default_filters_layer: the deepest conv layer whose map is wider than 8 cells
# (convnet: conv3 16x16; xception: block3_sepconv2 16x16).
BUNDLED_FILTERS_LAYER = {
    "convnet": "conv3",
    "xception": "block3_sepconv2",
    "xception-preset": "block3_sepconv2",
}
# Fresh scenes: the bundled models were trained on seed 1 and accepted on seed 20240.
BUNDLED_SCENES_SEED = 8
# A few filters and ascent steps bound the runtime (the ascent is the costly artifact).
# The full setting also agrees, measured (16 scenes, 8 filters x 30 steps, a 2-core
# CPU): worst pattern SSIM / Pearson 0.894 / 0.928 (xception, tensorflow vs torch,
# filter 2; convnet 0.99999994 / 0.9999998); activations max_rel <= 7.7e-7, heatmaps
# max_abs <= 3.3e-7, peak shift 0, top-10% IoU 1 on both models.
BUNDLED_FILTERS = {"filters": 3, "filter_steps": 10}


@pytest.fixture(scope="session")
def bundled_scenes():
    return examples.make_scenes(3, seed=BUNDLED_SCENES_SEED)


@pytest.mark.crossbackend
@pytest.mark.parametrize("name", list(BUNDLED_SOURCES))
def test_bundled_models_agree_across_all_three_backends(pool, bundled_scenes, name) -> None:
    require_or_skip()
    report = ag.agreement(
        BUNDLED_SOURCES[name], bundled_scenes.floats, pool=pool, **BUNDLED_FILTERS
    )
    assert report.passed, str(report)
    assert len(report.pairs) == 3 * 3  # three techniques x three backend pairs
    assert {p.artifact for p in report.pairs} == set(TECHNIQUES)
    assert len({info["fingerprint"] for info in report.info.values()}) == 1, report.info
    # Trained models: meaningful heatmaps of the object's class on every backend, so the
    # heatmap metrics measured something (not degenerate-vs-degenerate).
    assert not [n for n in report.notes if "degenerate" in n or "top class" in n], report.notes
    text = str(report)
    assert f"class per image {bundled_scenes.labels.tolist()}" in text
    assert f"filters: layer {BUNDLED_FILTERS_LAYER[name]!r}, filters [0, 1, 2]" in text


@pytest.mark.crossbackend
def test_module_factory_source_agrees(pool, images) -> None:
    require_or_skip(("tensorflow", "jax"))
    report = ag.agreement(
        f"{__name__}:tiny_convnet",
        images,
        what=("activations", "gradcam"),
        backends="tensorflow,jax",
        pool=pool,
    )
    assert report.passed, str(report)
    fingerprints = {info["fingerprint"] for info in report.info.values()}
    assert len(fingerprints) == 1


@pytest.mark.crossbackend
def test_planted_disagreement_is_caught_and_named(pool, tiny_path, images) -> None:
    require_or_skip()
    spec = ag.model_spec(tiny_path)
    pool.request("torch", "perturb", {"model": spec, "layer": "c2", "scale": 0.05, "seed": 3})
    try:
        report = ag.agreement(tiny_path, images, what=("activations",), pool=pool)
    finally:
        pool.request("torch", "evict", {"model": spec})
    assert not report.passed
    pair, item = report.worst("activations")
    assert item == "c2" and "torch" in (pair.expected, pair.obtained)
    text = str(report)
    assert "model fingerprint differs" in text
    assert "activations disagree: worst layer c2" in text
    assert "details of the failing pairs:" in text and "FAIL" in text
    # the untouched pair still agrees
    assert [
        p.passed for p in report.pairs if {p.expected, p.obtained} == {"tensorflow", "jax"}
    ] == [True]


@pytest.mark.crossbackend
def test_gradcam_compares_every_backend_on_the_reference_class(pool, tiny_path, images) -> None:
    require_or_skip(("tensorflow", "jax"))
    spec = ag.model_spec(tiny_path)
    # A large change of the head flips top classes on jax only.
    pool.request("jax", "perturb", {"model": spec, "layer": "head", "scale": 3.0, "seed": 0})
    try:
        report = ag.agreement(
            tiny_path, images, what=("gradcam",), backends=("tensorflow", "jax"), pool=pool
        )
    finally:
        pool.request("jax", "evict", {"model": spec})
    (pair,) = report.pairs
    details = pair.comparison.details
    assert details["class_index_expected"] == details["class_index_obtained"]
    notes = [n for n in report.notes if n.startswith("top class differs")]
    assert notes, str(report)
    assert "Grad-CAM compared for tensorflow's class" in notes[0]


@pytest.mark.crossbackend
def test_hung_backend_fails_the_check_clearly_and_the_next_one_succeeds(
    pool, tiny_path, images
) -> None:
    require_or_skip(("tensorflow", "jax"))
    pool.request("jax", "delay_next", {"seconds": 120})
    with pytest.raises(WorkerError, match=r"jax worker .* did not answer within 3 s"):
        ag.agreement(
            tiny_path,
            images,
            what=("activations",),
            backends=("tensorflow", "jax"),
            pool=pool,
            timeout=3,
        )
    report = ag.agreement(
        tiny_path, images, what=("activations",), backends=("tensorflow", "jax"), pool=pool
    )
    assert report.passed, str(report)


@pytest.mark.crossbackend
def test_backend_killed_mid_check_fails_it_clearly_and_the_next_one_succeeds(
    pool, tiny_path, images
) -> None:
    require_or_skip(("tensorflow", "torch"))
    pool.request("torch", "crash_next")
    with pytest.raises(WorkerError, match="killed by signal SIGKILL") as info:
        ag.agreement(
            tiny_path, images, what=("activations",), backends=("tensorflow", "torch"), pool=pool
        )
    assert "torch worker" in str(info.value) and "stderr" in str(info.value)
    report = ag.agreement(
        tiny_path, images, what=("activations",), backends=("tensorflow", "torch"), pool=pool
    )
    assert report.passed, str(report)


@pytest.mark.crossbackend
def test_cli_runs_the_workers_for_a_model_and_images(
    pool, tiny_path, images, tmp_path, capsys, monkeypatch
) -> None:
    require_or_skip(("tensorflow", "jax"))
    np.save(tmp_path / "images.npy", images)
    # The CLI uses the process-wide default pool; point it at the warm session pool.
    monkeypatch.setattr(ag, "default_pool", lambda: pool)
    argv = ["agree", str(tiny_path), "--images", str(tmp_path / "images.npy")]
    argv += ["--backends", "tensorflow,jax", "--what", "activations"]
    assert cli.main(argv) == 0
    assert "cross-backend agreement passed" in capsys.readouterr().out


@pytest.mark.crossbackend
def test_cli_agree_with_scenes_on_the_bundled_convnet(pool, tmp_path, capsys, monkeypatch) -> None:
    require_or_skip()
    monkeypatch.setattr(ag, "default_pool", lambda: pool)
    json_path = tmp_path / "report.json"
    convnet = examples.model_path("convnet")
    argv = ["agree", str(convnet), "--scenes", "4", "--filters", "2", "--filter-steps", "5"]
    assert cli.main([*argv, "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "cross-backend agreement passed" in out and "1 check(s) agree across backends" in out
    assert "4 image(s) (64, 64, 3) float32" in out
    (report,) = json.loads(json_path.read_text()).values()
    assert report["passed"] is True and report["backends"] == list(ALL)
    assert report["what"] == list(TECHNIQUES) and len(report["pairs"]) == 9
    # The seeded scenes (seed 0 by default) reached the model: it names their classes.
    labels = examples.make_scenes(4, seed=0).labels.tolist()
    assert f"class per image {labels}" in report["subjects"]["gradcam"]


def test_cli_scenes_pass_the_seeded_bundled_scenes_to_agreement(monkeypatch, capsys) -> None:
    calls = []

    def fake_agreement(model, images, **kwargs):
        calls.append((model, images, kwargs))
        return ag.AgreementReport(model=model, backends=ALL, what=kwargs["what"])

    monkeypatch.setattr(ag, "agreement", fake_agreement)
    argv = ["agree", "m.keras", "--scenes", "3", "--scene-seed", "5", "--what", "activations"]
    assert cli.main(argv) == 0
    ((model, images, kwargs),) = calls
    assert model == "m.keras" and kwargs["what"] == ("activations",)
    np.testing.assert_array_equal(images, examples.make_scenes(3, seed=5).floats)
    assert "1 check(s) agree across backends" in capsys.readouterr().out


def test_cli_takes_image_files_after_the_model_as_explain_does(
    monkeypatch, tmp_path, capsys
) -> None:
    calls = []

    def fake_agreement(model, images, **kwargs):
        calls.append((images, kwargs))
        return ag.AgreementReport(model=model, backends=ALL, what=kwargs["what"])

    monkeypatch.setattr(ag, "agreement", fake_agreement)
    model = str(tmp_path / "m.keras")  # the files are read for the model, as explain does
    tiny_convnet().save(model)
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, np.zeros(IMAGE_SHAPE, np.float32))
    np.save(b, np.ones(IMAGE_SHAPE, np.float32))
    tail = ["--what", "gradcam", "--class", "2", "--steps", "3"]
    assert cli.main(["agree", model, str(a), str(b), *tail]) == 0
    assert cli.main(["agree", model, "--images", str(a), str(b), *tail]) == 0
    (first, kw1), (second, kw2) = calls
    np.testing.assert_array_equal(first, second)
    assert first.shape == (2, *IMAGE_SHAPE) and first[1].min() == 1.0
    assert kw1["class_index"] == kw2["class_index"] == 2
    assert kw1["filter_steps"] == kw2["filter_steps"] == 3
    # Files and --scenes together are refused, naming both routes.
    capsys.readouterr()
    assert cli.main(["agree", "m.keras", str(a), "--scenes", "2"]) == 2
    assert "exactly one of IMAGE files (or --images FILE...) or --scenes N" in (
        capsys.readouterr().err
    )


def test_cli_cam_method_and_options_reach_every_backend(monkeypatch, capsys) -> None:
    calls = []

    def fake_agreement(model, images, **kwargs):
        calls.append(kwargs)
        return ag.AgreementReport(model=model, backends=ALL, what=kwargs["what"])

    monkeypatch.setattr(ag, "agreement", fake_agreement)
    argv = ["agree", "m.keras", "--scenes", "2", "--what", "gradcam", "--cam", "scorecam"]
    argv += ["--cam-option", "max_channels=16", "--cam-option", "note=text"]
    assert cli.main(argv) == 0
    assert cli.main(["agree", "m.keras", "--scenes", "2"]) == 0
    assert calls[0]["cam_method"] == "scorecam"
    assert calls[0]["cam_options"] == {"max_channels": 16, "note": "text"}
    assert calls[1]["cam_method"] == "gradcam" and calls[1]["cam_options"] == {}


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--scenes", "2", "--cam", "nosuch"], "Unknown CAM method. Received: --cam 'nosuch'"),
        (["--scenes", "2", "--cam-option", "max_channels"], "A CAM option is NAME=VALUE"),
        (
            ["--scenes", "2", "--images", "x.npy"],
            "exactly one of IMAGE files (or --images FILE...) or --scenes N",
        ),
        ([], "exactly one of IMAGE files (or --images FILE...) or --scenes N"),
        (["--scenes", "0"], "n must be a positive int. Received: n=0"),
        (["--scenes", "2", "--rescale", "0.5"], "--rescale applies to --images only"),
    ],
)
def test_cli_refuses_bad_scene_arguments(monkeypatch, capsys, extra, expected) -> None:
    monkeypatch.setattr(ag, "agreement", lambda *a, **k: pytest.fail("must not run"))
    assert cli.main(["agree", "m.keras", *extra]) == 2
    assert expected in capsys.readouterr().err


# -- per-backend envs: the crossbackend tests skip, naming what is missing -------------------
def _run_crossbackend_tests_without(pytester, monkeypatch, hidden: list[str]):
    """Run this module's ``crossbackend`` tests in an inner session where ``hidden``
    backends look uninstalled (as in a per-backend tox env); returns the reports."""
    real = pool_mod.missing_backends

    def missing_here(backends):
        backends = tuple(backends)
        really = real(backends)
        return [b for b in backends if b in hidden or b in really]

    monkeypatch.setattr(pool_mod, "missing_backends", missing_here)
    pytester.makeini(
        "[pytest]\nmarkers =\n    crossbackend: needs several backends\n"
        "filterwarnings =\n    ignore::DeprecationWarning\n"
    )
    # The inner module is this one, except that the tiny model is never built: the skip
    # must come before any model is needed, and inline_run drops the modules first
    # imported inside it, which TensorFlow does not survive (re-import: SIGABRT, measured).
    pytester.makepyfile(
        test_inner=f"""
        import pytest
        from {__name__} import *  # noqa: F403

        @pytest.fixture(scope="session")
        def tiny_path(tmp_path_factory):
            return tmp_path_factory.mktemp("never_built") / "tiny.keras"
        """
    )
    reprec = pytester.inline_run("-m", "crossbackend", "-p", "pytester", "-p", "no:cacheprovider")
    return reprec.listoutcomes()


def _crossbackend_test_count() -> int:
    """How many crossbackend test items this module defines (parametrized ones expanded)."""
    count = 0
    for name, obj in list(globals().items()):
        marks = getattr(obj, "pytestmark", [])
        if name.startswith("test_") and any(m.name == "crossbackend" for m in marks):
            params = [len(m.args[1]) for m in marks if m.name == "parametrize"]
            count += int(np.prod(params)) if params else 1
    return count


@pytest.mark.parametrize("installed", ALL)
def test_crossbackend_tests_skip_naming_the_missing_backends_in_a_per_backend_env(
    pytester, monkeypatch, installed
) -> None:
    monkeypatch.delenv("CONVVIZ_REQUIRE_BACKENDS", raising=False)
    hidden = [b for b in ALL if b != installed]
    # In a per-backend tox env the other backends are really missing too.
    absent = set(hidden) | set(pool_mod.missing_backends(ALL))
    passed, skipped, failed = _run_crossbackend_tests_without(pytester, monkeypatch, hidden)
    assert not passed and not failed
    assert len(skipped) == _crossbackend_test_count() >= 11  # all of them
    for report in skipped:
        reason = report.longrepr[2]
        named = reason.split("needs backend(s) ")[1].split(", not installed")[0].split(", ")
        assert named and set(named) <= absent, (report.nodeid, reason)


def test_crossbackend_tests_fail_naming_the_missing_backends_when_required(
    pytester, monkeypatch
) -> None:
    monkeypatch.setenv("CONVVIZ_REQUIRE_BACKENDS", "1")
    hidden = ["torch", "jax"]  # a tensorflow-only env: every crossbackend test misses one
    passed, skipped, failed = _run_crossbackend_tests_without(pytester, monkeypatch, hidden)
    assert not passed and not skipped and len(failed) == _crossbackend_test_count()
    for report in failed:
        text = report.longrepr.reprcrash.message  # "Failed: <the pytest.fail message>"
        assert "CONVVIZ_REQUIRE_BACKENDS=1" in text, (report.nodeid, text)
        named = text.split("needs backend(s) ")[1].split(", not installed")[0].split(", ")
        assert named and set(named) <= set(hidden), (report.nodeid, text)


# -- the pytest fixture ----------------------------------------------------------------------
FIXTURE_TEST = """
import numpy as np
import pytest

from convviz_check.crossbackend import pool as pool_mod

def test_agree(convviz, monkeypatch):
    monkeypatch.setattr(pool_mod, "missing_backends", lambda backends: list(backends))
    convviz.assert_backends_agree("m.keras", np.zeros((1, 8, 8, 3), np.float32))

@pytest.mark.convviz(backends="torch,jax")
def test_marked(convviz, monkeypatch):
    monkeypatch.setattr(pool_mod, "missing_backends", lambda backends: list(backends))
    convviz.assert_backends_agree("m.keras", np.zeros((1, 8, 8, 3), np.float32))
"""


def test_fixture_skips_on_a_missing_backend_naming_it(pytester, monkeypatch) -> None:
    monkeypatch.delenv("CONVVIZ_REQUIRE_BACKENDS", raising=False)
    pytester.makepyfile(test_fx=FIXTURE_TEST)
    # (no prestart: the test pretends every backend is missing, after collection)
    result = pytester.runpytest_inprocess(
        "-rs", "--convviz-backends=tensorflow,jax", "--convviz-prestart=no"
    )
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*needs backend(s) tensorflow, jax, not installed*"])
    result.stdout.fnmatch_lines(["*needs backend(s) torch, jax, not installed*"])  # marker wins


@pytest.mark.parametrize("how", ["flag", "env"])
def test_fixture_fails_on_a_missing_backend_when_required(pytester, monkeypatch, how) -> None:
    args = ["--convviz-require-backends"] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("CONVVIZ_REQUIRE_BACKENDS", "1")
    else:
        monkeypatch.delenv("CONVVIZ_REQUIRE_BACKENDS", raising=False)
    pytester.makepyfile(test_fx=FIXTURE_TEST)
    result = pytester.runpytest_inprocess(*args, "--convviz-prestart=no")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*needs backend(s) tensorflow, torch, jax*required*"])


PRESTART_TESTS = """
import pytest

def test_agrees(convviz):
    if False:  # never runs: collection reads the source
        convviz.assert_backends_agree("m.keras", None)

@pytest.mark.convviz(backends="torch,jax")
def test_marked(convviz):
    pass

def test_plain(convviz):
    pass
"""


@pytest.mark.parametrize(
    ("args", "prestarted"),
    [
        (["-k", "agrees"], ALL),  # convviz_backends
        (["-k", "marked"], ("torch", "jax")),  # the marker's backends
        (["-k", "plain"], ()),
        (["-k", "agrees", "--convviz-prestart=no"], ()),
    ],
)
def test_workers_are_prestarted_when_a_selected_test_needs_them(
    pytester, monkeypatch, args, prestarted
) -> None:
    import keras

    calls: list[list[str]] = []
    monkeypatch.setattr(
        pool_mod.WorkerPool, "prestart", lambda self, backends: calls.append(list(backends))
    )
    pytester.makepyfile(test_px=PRESTART_TESTS)
    pytester.makeini("[pytest]\nconvviz_backends = tensorflow,torch,jax\n")
    result = pytester.runpytest_inprocess(*args)
    result.assert_outcomes(passed=1)
    # Only the backends the selected tests will use, and never the running one: it is
    # computed in this process.
    others = [b for b in prestarted if b != keras.backend.backend()]
    assert calls == ([others] if others else [])


@pytest.mark.crossbackend
def test_fixture_asserts_agreement_with_the_marker_tolerance(pytester, monkeypatch) -> None:
    require_or_skip(("tensorflow", "torch"))
    # The source plants a tiny difference on torch (1e-6 of c2's weight std): the
    # default cross-backend bounds accept it, a zero bound set by the marker does not.
    # Without it the test would rest on rounding: tensorflow and torch may compute the
    # tiny model bit-identically (they do on some CPUs), and 0 <= 0 passes.
    source = f"{__name__}:torch_shifted_convnet"
    pytester.makepyfile(
        test_fx=f"""
        import numpy as np
        import pytest

        IMAGES = np.random.default_rng(1).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)

        def test_agrees(convviz):
            report = convviz.assert_backends_agree({source!r}, IMAGES, what=("activations",))
            assert report.passed and report.backends == ("tensorflow", "torch")
            assert 0 < report.pairs[0].comparison.metrics["max_rel"].value

        @pytest.mark.convviz(tolerance={{"activation_max_rel": 0.0}})
        def test_zero_tolerance_fails(convviz):
            convviz.assert_backends_agree({source!r}, IMAGES, what=("activations",))
        """
    )
    result = pytester.runpytest_inprocess("--convviz-backends=tensorflow,torch")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*cross-backend agreement FAILED*", "*max_rel*"])


def test_fixture_exports_the_running_backend_with_convviz_export(
    pytester, tiny_path, tmp_path
) -> None:
    import keras

    out = tmp_path / "export"
    pytester.makepyfile(
        test_fx=f"""
        import numpy as np

        def test_export(convviz):
            images = np.random.default_rng(1).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)
            assert convviz.assert_backends_agree(
                {str(tiny_path)!r}, images, what=("activations", "filters"), filters=2,
                filter_steps=3,
            ) is None
        """
    )
    result = pytester.runpytest_inprocess(f"--convviz-export={out}")
    result.assert_outcomes(passed=1)
    (check_dir,) = out.iterdir()
    backend_dir = check_dir / keras.config.backend()
    info = json.loads((backend_dir / "info.json").read_text())
    assert info["name"] == "test_fx.py::test_export" and info["fingerprint"]
    assert sorted(p.name for p in backend_dir.glob("*.npz")) == ["activations.npz", "filters.npz"]
