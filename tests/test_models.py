import os
import time

import keras
import numpy as np
import pytest

import convviz_check as cc
from convviz_check import ModelLoadError
from tests import _models

X = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype("float32")


def _same_predictions(a, b, x=X):
    np.testing.assert_allclose(a.predict_on_batch(x), b.predict_on_batch(x), rtol=1e-6, atol=1e-7)


def test_keras_model_passes_through():
    model = _models.sequential()
    assert cc.load_model(model) is model


def test_dot_keras_round_trip(tmp_path):
    model = _models.sequential()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = cc.load_model(path)
    _same_predictions(model, loaded)
    assert cc.model_fingerprint(loaded) == cc.model_fingerprint(model)


@pytest.mark.parametrize("suffix", [".h5", ".hdf5"])
def test_legacy_hdf5_round_trip(tmp_path, suffix):
    # Keras 3 writes the legacy tf.keras 2 HDF5 layout for these suffixes.
    model = _models.sequential()
    path = tmp_path / f"m{suffix}"
    model.save(path)
    _same_predictions(model, cc.load_model(str(path)))


def test_keras_hub_preset_directory(tmp_path):
    pytest.importorskip("keras_hub")
    model = _models.tiny_xception()
    preset = tmp_path / "preset"
    model.save_to_preset(str(preset))
    loaded = cc.load_model(preset)
    assert type(loaded).__name__ == "XceptionImageClassifier"
    x = np.random.default_rng(1).uniform(0, 1, (1, 32, 32, 3)).astype("float32")
    _same_predictions(model, loaded, x)


def test_hub_preset_offline_fails_fast_and_clearly(monkeypatch):
    pytest.importorskip("keras_hub")
    monkeypatch.setenv("CONVVIZ_HUB_TIMEOUT", "60")
    with pytest.raises(ModelLoadError, match="hub:no_such_preset_for_convviz") as info:
        cc.load_model("hub:no_such_preset_for_convviz")
    # the failure itself, not the timeout that bounds a hanging download
    assert "timed out" not in str(info.value)


def test_hub_timeout_bounds_a_hanging_download(monkeypatch):
    from convviz_check import models

    monkeypatch.setattr(models, "_load_preset", lambda *a: time.sleep(30))
    monkeypatch.setenv("CONVVIZ_HUB_TIMEOUT", "0.5")
    with pytest.raises(ModelLoadError, match="timed out after 0.5 s"):
        cc.load_model("hub:anything")


def test_factory_source():
    model = cc.load_model("tests._models:sequential")
    assert model.name == "seq"


@pytest.mark.parametrize(
    "source, reason",
    [
        ("tests._models:no_such_factory", "has no callable 'no_such_factory'"),
        ("tests.no_such_module:f", "cannot import module 'tests.no_such_module'"),
        ("os.path:sep", "has no callable 'sep'"),
        ("numpy:zeros", "the factory raised TypeError"),
        ("builtins:dict", "expected a keras.Model, received 'dict'"),
    ],
)
def test_factory_failures_name_the_source_and_reason(source, reason):
    with pytest.raises(ModelLoadError, match=f"{source!r}.*" + reason.replace("(", r"\(")):
        cc.load_model(source)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        cc.load_model(tmp_path / "absent.keras")


def test_unknown_extension(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unknown extension '.onnx'"):
        cc.load_model(path)


def test_corrupt_keras_file(tmp_path):
    path = tmp_path / "bad.keras"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(ModelLoadError, match="bad.keras"):
        cc.load_model(path)


def test_directory_without_preset_config(tmp_path):
    with pytest.raises(ModelLoadError, match="not a keras-hub preset"):
        cc.load_model(tmp_path)


def test_lambda_layer_is_refused_by_safe_mode(tmp_path):
    x_in = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2.0)(x_in)
    path = tmp_path / "lambda.keras"
    keras.Model(x_in, out).save(path)
    with pytest.raises(ModelLoadError, match="safe_mode"):
        cc.load_model(path)
    loaded = cc.load_model(path, safe_mode=False)  # trusted on purpose: it runs the lambda
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(np.ones((1, 4)))), 2.0)


def test_subclassed_model_without_graph_is_refused():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelLoadError, match="Subclassed models"):
        cc.load_model(Sub())


def test_unsupported_source_type():
    with pytest.raises(ModelLoadError, match="Received: source of type 'int'"):
        cc.load_model(3)


def test_custom_objects_by_module_list(tmp_path):
    from tests import _custom_layers

    x_in = keras.Input((4,))
    model = keras.Model(x_in, _custom_layers.Doubler()(x_in))
    path = tmp_path / "custom.keras"
    model.save(path)
    loaded = cc.load_model(path, custom_objects=["tests._custom_layers"])
    x = np.ones((1, 4), "float32")
    np.testing.assert_allclose(loaded.predict_on_batch(x), 2 * x)
    with pytest.raises(ModelLoadError, match="cannot import|Cannot import"):
        cc.load_model(path, custom_objects=["tests.no_such_module"])


def test_fingerprint_changes_with_weights():
    model = _models.sequential()
    before = cc.model_fingerprint(model)
    w = model.get_weights()
    w[0] = w[0] + 1e-3
    model.set_weights(w)
    assert cc.model_fingerprint(model) != before
    assert len(before) == 64 and os.path.sep not in before


def test_deferred_initializers_fill_what_the_load_leaves_alone():
    # Variables created inside the block start as zeros; one that is assigned keeps the
    # assigned value, one left alone gets its real initializer's value when the block ends.
    from convviz_check._fastload import initializers_deferred

    with initializers_deferred():
        assigned = keras.Variable(initializer="ones", shape=(3,))
        left = keras.Variable(initializer=keras.initializers.Constant(2.5), shape=(2, 2))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(left), np.zeros((2, 2)))
        assigned.assign(np.full((3,), 7.0, np.float32))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(assigned), np.full((3,), 7.0))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(left), np.full((2, 2), 2.5))
    after = keras.Variable(initializer="ones", shape=(2,))  # the patch is gone
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(after), np.ones(2))


def test_deferred_initializers_leave_other_threads_alone():
    import threading

    from convviz_check._fastload import initializers_deferred

    box = {}
    with initializers_deferred():
        t = threading.Thread(target=lambda: box.update(v=keras.Variable("ones", shape=(2,))))
        t.start()
        t.join()
        # Created by another thread: initialized at once, not deferred.
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(box["v"]), np.ones(2))


def test_load_with_batchnorm_statistics_round_trips(tmp_path):
    # Moving mean/variance are non-trainable variables: they must come from the file too.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    bn = model.layers[2]
    bn.moving_mean.assign(np.arange(4, dtype=np.float32))
    bn.moving_variance.assign(np.full((4,), 3.0, np.float32))
    model.save(tmp_path / "bn.keras")
    loaded = cc.load_model(tmp_path / "bn.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.layers[2].moving_mean), np.arange(4)
    )
    _same_predictions(model, loaded, np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)))
    assert cc.model_fingerprint(loaded) == cc.model_fingerprint(model)


def test_deferred_initializers_are_restored_after_a_failed_load_and_may_nest():
    from convviz_check import keras_private
    from convviz_check._fastload import initializers_deferred

    cls = keras_private.variables_module().Variable
    original = cls.__init__
    with pytest.raises(RuntimeError, match="corrupt"), initializers_deferred():
        raise RuntimeError("corrupt file")
    assert cls.__init__ is original  # the swap ends with the block, even on an error
    with initializers_deferred():
        with initializers_deferred():  # the same thread nests (no deadlock)
            inner = keras.Variable(initializer="ones", shape=(2,))
        outer = keras.Variable(initializer="ones", shape=(3,))
    assert cls.__init__ is original
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(inner), np.ones(2))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(outer), np.ones(3))
