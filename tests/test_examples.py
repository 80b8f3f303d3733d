"""The bundled example models: files, loading, acceptance bounds, presets, backends."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import convviz_check as cc
from convviz_check import examples
from convviz_check.errors import InputError
from convviz_check.examples import train

BACKENDS = ("tensorflow", "torch", "jax")


@pytest.fixture(scope="module")
def accept_scenes():
    return examples.make_scenes(train.ACCEPT_N, seed=train.ACCEPT_SEED)


@functools.cache
def _model(name: str):
    """Each bundled model loaded once per test process under the running backend."""
    return examples.load_example_model(name)


@pytest.fixture(scope="module", params=examples.MODEL_NAMES)
def loaded(request):
    return request.param, _model(request.param)


@pytest.fixture(scope="module")
def evaluations(loaded, accept_scenes):
    name, model = loaded
    return name, train.evaluate(model, accept_scenes)


def test_model_files_match_the_recorded_sha256():
    files = train.model_files()
    assert set(examples.MODEL_SHA256) == set(files)
    for key, path in files.items():
        assert path.exists(), f"{path} is missing: run python -m convviz_check.examples.train"
        assert train.tree_sha256(path) == examples.MODEL_SHA256[key], (
            f"{path} differs from MODEL_SHA256[{key!r}]: a retrained model must be recorded "
            "deliberately (paste the sums printed by the training script)."
        )


def test_model_files_together_are_under_10_mb():
    total = 0
    for path in train.model_files().values():
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    assert total < 10 * 2**20, f"model files total {total} bytes"


def test_model_loads_under_the_running_backend_with_the_documented_interface(loaded):
    name, model = loaded
    assert tuple(model.input_shape[1:]) == examples.IMAGE_SHAPE
    probs = np.asarray(model.predict(examples.make_scenes(3, seed=99).floats, verbose=0))
    assert probs.shape == (3, len(examples.CLASS_NAMES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # softmax head


def test_convnet_is_chapter_style_with_an_8x8_gradcam_layer():
    model = _model("convnet")
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Conv2D", "MaxPooling2D", "GlobalAveragePooling2D", "Dense"} <= kinds
    layer = train.gradcam_layer(model)
    assert model.get_layer(layer).output.shape[1:3] == (8, 8)


def test_xception_is_a_keras_hub_classifier_with_pooler_and_predictions():
    import keras_hub

    model = _model("xception")
    assert isinstance(model, keras_hub.models.XceptionImageClassifier)
    assert isinstance(model.backbone, keras_hub.models.XceptionBackbone)
    names = [layer.name for layer in model.layers]
    assert "pooler" in names and "predictions" in names
    assert train.gradcam_layer(model) == model.backbone.layers[-1].name
    assert tuple(model.backbone.output.shape[1:3]) == (8, 8)


def test_model_meets_accuracy_bound_on_fresh_scenes(evaluations):
    name, ev = evaluations
    assert ev.n == 200
    assert ev.accuracy >= train.MIN_ACCURACY, f"{name}: {ev}"


def test_model_gradcam_points_inside_the_object_box_on_fresh_scenes(evaluations):
    name, ev = evaluations
    assert ev.pointing >= train.MIN_POINTING, f"{name}: {ev}"


def test_acceptance_scenes_were_not_used_for_training():
    assert train.ACCEPT_SEED != train.TRAIN_SEED


def test_preset_dir_loads_with_keras_hub_from_preset_and_predicts_like_the_keras_file():
    import keras_hub

    from_preset = keras_hub.models.ImageClassifier.from_preset(str(examples.preset_dir("xception")))
    via_cc = cc.load_model(examples.preset_dir("xception"))
    keras_file = _model("xception")
    x = examples.make_scenes(4, seed=123).floats
    expected = np.asarray(keras_file.predict(x, verbose=0))
    for model in (from_preset, via_cc):
        np.testing.assert_allclose(np.asarray(model.predict(x, verbose=0)), expected, atol=1e-6)


def test_importing_examples_and_scenes_does_not_import_keras():
    code = (
        "import sys, convviz_check.examples as e; e.make_scenes(1); "
        "import convviz_check.examples.demo; print('keras' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_unknown_example_names_are_refused_with_the_received_name():
    with pytest.raises(InputError, match="Received: name='resnet'"):
        examples.model_path("resnet")
    with pytest.raises(InputError, match="Received: name='convnet'"):
        examples.preset_dir("convnet")


def test_demo_runs_the_whole_harness_and_links_it_from_one_page(tmp_path, capsys):
    import re

    from PIL import Image

    from convviz_check.cli import main

    assert main(["demo", "--out", str(tmp_path), "--n", "20", "--images", "2"]) == 0
    out = capsys.readouterr().out
    layers = dict(re.findall(r"^(\w+): accuracy [0-9.]+, Grad-CAM layer '([^']+)'", out, re.M))
    assert layers == {"convnet": "conv4_relu", "xception": "block4_sepconv1_act"}
    accuracies = [float(a) for a in re.findall(r"accuracy ([0-9.]+)", out)]
    assert len(accuracies) == 2 and min(accuracies) >= 0.9
    # the golden check: written, then passes, then the planted change fails with its report
    statuses = re.findall(r"^golden check, [^:]+: (\w+)$", out, re.M)
    assert statuses == ["written", "passed", "failed"]
    assert "model fingerprint changed" in out
    assert (tmp_path / "report" / "report.html").exists()
    assert (tmp_path / "golden" / "demo" / "convnet" / "gradcam.npz").exists()
    # one page links everything, every link resolves, and it is the last line printed
    index = tmp_path / "index.html"
    assert out.strip().splitlines()[-1] == f"open {index.resolve()}"
    page = index.read_text()
    links = re.findall(r"(?:src|href)='([^']+)'", page)
    assert all(not link.startswith("/") for link in links)
    missing = [link for link in links if not (tmp_path / link).exists()]
    assert not missing
    pngs = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")}
    shown = {link for link in links if link.endswith(".png")}
    assert {f"convnet/gradcam_{i}.png" for i in range(2)} <= shown
    assert any(link.startswith("chapter/activations_") for link in shown)
    assert any(link.startswith("chapter/filters_") for link in shown)
    assert shown <= pngs
    assert np.asarray(Image.open(tmp_path / "scenes" / "scene_0.png")).shape == (256, 256, 3)


def test_demo_refuses_unknown_models_saying_what_was_received(tmp_path):
    from convviz_check.cli import build_parser
    from convviz_check.examples.demo import run

    args = build_parser().parse_args(["demo", "--out", str(tmp_path), "--models", "resnet"])
    with pytest.raises(InputError, match="Received: models=\\['resnet'\\]"):
        run(args)


# ----------------------------------------------------------------- cross-backend

_PREDICT = """
import json, sys
try:
    import torch  # noqa: F401  (before tensorflow, which keras-hub imports)
except ImportError:
    pass
import numpy as np
from convviz_check import examples
x = examples.make_scenes(16, seed=321).floats
out = {}
for name in examples.MODEL_NAMES:
    out[name] = np.asarray(examples.load_example_model(name).predict(x, verbose=0)).tolist()
json.dump(out, sys.stdout)
"""


def _backend_missing(backend: str) -> str | None:
    module = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[backend]
    import importlib.util

    return None if importlib.util.find_spec(module) else f"backend {backend!r} is not installed"


@pytest.mark.crossbackend
def test_same_keras_file_gives_the_same_predictions_on_all_backends():
    missing = [r for r in map(_backend_missing, BACKENDS) if r]
    if missing:
        if os.environ.get("CONVVIZ_REQUIRE_BACKENDS") == "1":
            pytest.fail("; ".join(missing) + " (CONVVIZ_REQUIRE_BACKENDS=1)")
        pytest.skip("; ".join(missing))
    results = {}
    for backend in BACKENDS:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run(
            [sys.executable, "-c", _PREDICT], env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{backend} failed:\n{proc.stderr[-3000:]}"
        results[backend] = {k: np.asarray(v) for k, v in json.loads(proc.stdout).items()}
    for name in examples.MODEL_NAMES:
        ref = results["tensorflow"][name]
        for backend in ("torch", "jax"):
            got = results[backend][name]
            # Measured: max |diff| of softmax outputs vs TensorFlow <= 3.6e-7 (torch
            # 2.4e-7/3.3e-7, jax 1.8e-7/3.6e-7 for convnet/xception on 200 scenes);
            # 1e-5 leaves room for other CPUs while a real change (a wrong weight or
            # layer) moves outputs by >1e-2.
            np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=f"{name} on {backend}")
            assert (got.argmax(1) == ref.argmax(1)).all()


_TRAIN_BRIEFLY = """
import os, sys
from convviz_check.examples.train import prepare_training
assert "tensorflow" not in sys.modules
assert prepare_training()
import numpy as np, keras
keras.utils.set_random_seed(0)  # determinism is on: random ops need a seed
model = keras.Sequential([
    keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
    keras.layers.Conv2D(8, 3), keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(4, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
model.fit(rng.random((64, 32, 32, 3), np.float32), rng.integers(0, 4, 64), epochs=1, verbose=0)
print("trained, TF_ENABLE_ONEDNN_OPTS =", os.environ["TF_ENABLE_ONEDNN_OPTS"])
"""


def test_the_training_scripts_turn_onednn_off_before_tensorflow_is_imported():
    # oneDNN's conv weight gradients crash model.fit on some CPUs ("double free or
    # corruption"); both scripts call prepare_training first, which sets
    # TF_ENABLE_ONEDNN_OPTS=0 before importing TensorFlow (unless the user set it).
    # TensorFlow announces oneDNN on its native log when it is on, whatever the log level.
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND")
    }
    proc = subprocess.run(
        [sys.executable, "-c", _TRAIN_BRIEFLY], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained, TF_ENABLE_ONEDNN_OPTS = 0" in proc.stdout
    assert "oneDNN custom operations are on" not in proc.stderr
    # the same process without the call: TensorFlow starts with oneDNN on
    plain = "import os; os.environ['KERAS_BACKEND'] = 'tensorflow'; import keras"
    proc = subprocess.run([sys.executable, "-c", plain], env=env, capture_output=True, text=True)
    assert "oneDNN custom operations are on" in proc.stderr
    import inspect

    from convviz_check.examples import shortcut

    source = inspect.getsource(shortcut.main)
    assert source.index("prepare_training(") < source.index("_train_and_measure(name")
