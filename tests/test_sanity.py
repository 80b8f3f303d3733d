"""convviz_check.sanity: the randomized clone never touches the user's model, the
chosen layers are re-initialized reproducibly, and the check fails where Grad-CAM
cannot depend on the weights. (The check on the bundled trained models, and its
measured bound, is in tests/test_properties.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from convviz_check import sanity
from convviz_check.errors import GraphError, InputError
from convviz_check.explain.cam import METHODS
from convviz_check.models import model_fingerprint
from tests import _models


def weights_by_path(model) -> dict[str, np.ndarray]:
    return {v.path: np.asarray(w) for v, w in zip(model.weights, model.get_weights(), strict=True)}


@pytest.fixture(scope="module")
def seq():
    return _models.sequential()


def test_randomized_clone_leaves_the_model_untouched_and_copies_other_layers(seq):
    before = model_fingerprint(seq)
    original = weights_by_path(seq)
    head = [r for r in sanity._weighted_records(seq) if r.name == "head"]
    clone = sanity.randomized_clone(seq, head, seed=3)
    assert model_fingerprint(seq) == before
    assert clone is not seq and not any(v is w for v in clone.weights for w in seq.weights)
    cloned = weights_by_path(clone)
    assert cloned.keys() == original.keys()
    for path, value in original.items():
        if "/head/" in path:
            assert not np.array_equal(cloned[path], value), path
        else:
            np.testing.assert_array_equal(cloned[path], value, err_msg=path)


def test_reinitialization_is_glorot_for_kernels_and_a_permutation_for_vectors(seq):
    head = [r for r in sanity._weighted_records(seq) if r.name == "head"]
    kernel_path = next(v.path for v in head[0].operation.weights if len(v.shape) == 2)
    bias_path = next(v.path for v in head[0].operation.weights if len(v.shape) == 1)
    a = weights_by_path(sanity.randomized_clone(seq, head, seed=5))
    b = weights_by_path(sanity.randomized_clone(seq, head, seed=5))
    c = weights_by_path(sanity.randomized_clone(seq, head, seed=6))
    np.testing.assert_array_equal(a[kernel_path], b[kernel_path])  # reproducible
    assert not np.array_equal(a[kernel_path], c[kernel_path])
    fan_in, fan_out = a[kernel_path].shape
    assert np.abs(a[kernel_path]).max() <= np.sqrt(6 / (fan_in + fan_out))
    original_bias = weights_by_path(seq)[bias_path]
    np.testing.assert_array_equal(np.sort(a[bias_path]), np.sort(original_bias))


def test_default_layers_are_the_head_above_the_gradcam_layer(seq):
    assert [r.name for r in sanity._choose_layers(seq, "c2", None)] == ["head"]
    assert [r.name for r in sanity._choose_layers(seq, "c1", None)] == ["c2", "head"]
    assert [r.name for r in sanity._choose_layers(seq, "c1", 1)] == ["head"]
    assert [r.name for r in sanity._choose_layers(seq, "c1", 3)] == ["c1", "c2", "head"]
    assert [r.name for r in sanity._choose_layers(seq, "c1", ["c1"])] == ["c1"]


@pytest.mark.parametrize(
    "layers, error, match",
    [
        (0, InputError, r"\[1, 3\]"),
        (4, InputError, r"\[1, 3\]"),
        ("head", InputError, "list of layer names"),
        (["nope"], GraphError, "Unknown layer"),
        (["p1"], GraphError, "has no weights"),
        ([], InputError, "empty"),
    ],
)
def test_invalid_layers_to_reinit_are_refused(seq, layers, error, match):
    with pytest.raises(error, match=match):
        sanity._choose_layers(seq, "c2", layers)


def test_nothing_above_the_gradcam_layer_is_refused():
    import keras

    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(2, 3, name="only")(x)
    model = keras.Model(x, keras.layers.GlobalAveragePooling2D(name="gap")(y))
    with pytest.raises(GraphError, match="no head to re-initialize"):
        sanity._choose_layers(model, "only", None)


def test_clone_of_a_keras_hub_task_model_keeps_its_structure():
    model = _models.tiny_xception()
    records = sanity._weighted_records(model)
    clone = sanity.randomized_clone(model, records[-1:], seed=0)
    assert type(clone).__name__ == type(model).__name__
    original, cloned = weights_by_path(model), weights_by_path(clone)
    changed = {p for p in original if not np.array_equal(original[p], cloned[p])}
    assert changed == {v.path for v in records[-1].operation.weights}


def one_channel_model(head_kernel):
    """Grad-CAM at a 1-channel layer is ReLU(alpha * A): the same map for any positive
    alpha, i.e. for any head weights of the same sign - it cannot reflect the head."""
    import keras

    x = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="one")(x)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(a)
    out = keras.layers.Dense(2, activation="softmax", name="head")(g)
    model = keras.Model(x, out)
    rng = np.random.default_rng(0)
    model.get_layer("one").set_weights([rng.uniform(0, 0.5, (3, 3, 3, 1)), np.full(1, 0.1)])
    model.get_layer("head").set_weights([np.asarray(head_kernel, np.float32), np.zeros(2)])
    return model


def images8(n=4):
    return np.random.default_rng(1).uniform(0, 1, (n, 8, 8, 3)).astype(np.float32)


def test_check_fails_when_the_map_cannot_depend_on_the_head():
    model = one_channel_model([[1.0, 0.5]])
    head = [r for r in sanity._weighted_records(model) if r.name == "head"]
    # a seed whose re-initialized head keeps both class weights positive
    seed = next(
        s
        for s in range(50)
        if (
            sanity.randomized_clone(model, head, seed=s).get_layer("head").get_weights()[0] > 0
        ).all()
    )
    with pytest.raises(AssertionError, match=r"(?s)explains the input.*1\.000 \(>= bound"):
        sanity.sanity_check_randomization(model, images8(), seed=seed, repeats=1)


def test_check_refuses_a_degenerate_trained_map():
    model = one_channel_model([[0.0, 0.0]])
    with pytest.raises(InputError, match="degenerate"):
        sanity.sanity_check_randomization(model, images8())


def test_check_reports_the_same_classes_and_layer_for_both_models(seq):
    images = np.random.default_rng(2).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    result = sanity.randomization_correlation(seq, images, seed=1)
    assert result.target_layer == "c2" and result.layers == ("head",)
    # the trained model's top classes, also explained on the randomized clone
    np.testing.assert_array_equal(result.class_index, np.argmax(seq.predict(images, verbose=0), -1))
    assert result.correlations.shape == (3,) and result.per_repeat.shape == (3,)
    assert result.mean_correlation == pytest.approx(result.per_repeat.mean())
    assert np.all(np.abs(result.correlations) <= 1.0)
    assert result.passed == (result.mean_correlation < result.max_correlation)
    with pytest.raises(AssertionError, match="Model-randomization check"):
        sanity.sanity_check_randomization(seq, images, max_correlation=-1.0)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_randomization_check_runs_for_every_cam_method(seq, method):
    images = np.random.default_rng(2).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    options = {"max_channels": 4} if method == "scorecam" else {}
    result = sanity.randomization_correlation(
        seq, images, seed=1, repeats=2, method=method, method_options=options
    )
    assert result.method == method and result.target_layer == "c2"
    assert result.correlations.shape == (3,) and result.per_repeat.shape == (2,)
    assert np.isfinite(result.correlations).all() and np.all(np.abs(result.correlations) <= 1)
    assert method in result.text
    if method == "eigencam":
        # Class-agnostic: the head does not enter the map, so nothing changes.
        assert result.mean_correlation == pytest.approx(1.0) and not result.passed
        with pytest.raises(AssertionError, match="eigencam map barely changes"):
            sanity.sanity_check_randomization(seq, images, method="eigencam", repeats=1)
    else:
        assert result.mean_correlation < 0.99  # the head's re-initialization shows


def test_randomization_check_keeps_a_callable_target_for_the_clone(seq):
    images = np.random.default_rng(2).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    top = np.argmax(seq.predict(images, verbose=0), -1)
    images, k = images[top == top[0]], int(top[0])  # images whose top class is k
    calls = []

    def class_k(y):
        calls.append(1)
        return y[:, k]

    result = sanity.randomization_correlation(seq, images, repeats=2, class_index=class_k)
    by_class = sanity.randomization_correlation(seq, images, repeats=2, class_index=k)
    assert result.class_index.tolist() == [-1] * len(images)
    # the clone explained the callable too, i.e. class k again
    np.testing.assert_allclose(result.correlations, by_class.correlations, atol=1e-6)
    assert len(calls) >= 3  # called for the trained model and for each clone


@pytest.mark.parametrize(
    "method, options, match",
    [("gradcam3", None, "Unknown CAM method"), ("scorecam", {"top": 3}, r"\['max_channels'\]")],
)
def test_randomization_check_refuses_an_unknown_method_or_option(seq, method, options, match):
    with pytest.raises(InputError, match=match):
        sanity.randomization_correlation(
            seq, np.zeros((1, 16, 16, 3), np.float32), method=method, method_options=options
        )


# --------------------------------------------------------------------------- outcomes
def _result(correlations, bound=0.5, per_repeat=(0.2, 0.4)) -> sanity.RandomizationResult:
    rhos = np.asarray(correlations, np.float64)
    return sanity.RandomizationResult(
        correlations=rhos,
        mean_correlation=float(rhos.mean()),
        max_correlation=bound,
        passed=bool(rhos.mean() < bound),
        layers=("head",),
        target_layer="c2",
        class_index=np.arange(len(rhos)),
        randomized_degenerate=np.array([False] * (len(rhos) - 1) + [True]),
        per_repeat=np.asarray(per_repeat),
        text="Model-randomization check (details)",
    )


@pytest.mark.parametrize(
    "correlations, status",
    [
        ([0.1, 0.3], "passed"),
        ([0.6, 0.8], "failed"),
        ([0.5, 0.5], "failed"),
        ([0.2, np.nan], "failed"),
    ],
    ids=["below", "above", "at-the-bound", "nan"],
)
def test_judge_randomization_passes_strictly_below_the_bound(correlations, status):
    outcome = sanity.judge_randomization(_result(correlations))
    assert outcome.judgment == "randomization" and outcome.status == status
    metric = outcome.metrics["mean_correlation"]
    assert metric.bound == 0.5 and metric.direction == "max" and metric.ok == (status == "passed")
    assert outcome.items["image 1"]["randomized_degenerate"] is True
    assert outcome.items["image 0"] == {
        "correlation": pytest.approx(correlations[0]),
        "class_index": 0,
        "randomized_degenerate": False,
    }
    assert outcome.facts["layers"] == ["head"] and outcome.facts["repeats"] == 2
    assert outcome.facts["per_repeat"] == [0.2, 0.4]
    if status == "failed":
        assert outcome.lead.startswith("The gradcam map barely changes")
        assert outcome.message == outcome.lead + "\n  Model-randomization check (details)"
    else:
        assert "0.200 < 0.500" in outcome.lead and outcome.message == ""


def test_check_randomization_returns_the_outcome_the_assertion_raises(seq):
    images = np.random.default_rng(2).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    outcome = sanity.check_randomization(seq, images, seed=1, repeats=2, max_correlation=-1.0)
    assert outcome.status == "failed" and not outcome.ok
    measured = sanity.randomization_correlation(seq, images, seed=1, repeats=2)
    assert outcome.metrics["mean_correlation"].value == pytest.approx(measured.mean_correlation)
    with pytest.raises(AssertionError) as info:
        sanity.sanity_check_randomization(seq, images, seed=1, repeats=2, max_correlation=-1.0)
    assert str(info.value) == outcome.message
    passed = sanity.check_randomization(seq, images, seed=1, repeats=2, max_correlation=1.0)
    assert passed.ok and passed.to_entry()["status"] == "passed"
