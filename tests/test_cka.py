"""Linear CKA (measures.linear_cka) and the retrain profile's activation judgment."""

from __future__ import annotations

import numpy as np
import pytest

from convviz_check import tolerances
from convviz_check.errors import ComparisonError
from convviz_check.measures import cka_features, layer_cka, linear_cka
from convviz_check.metrics import compare


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019) through HSIC of the Gram matrices: tr(K H L H) /
    sqrt(tr(K H K H) tr(L H L H)) with H the centering matrix (another route than the
    feature-space formula linear_cka takes)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, m = x @ x.T, y @ y.T
    hsic = np.trace(k @ h @ m @ h)
    return float(hsic / np.sqrt(np.trace(k @ h @ k @ h) * np.trace(m @ h @ m @ h)))


def test_a_hand_computed_value():
    # Centered x = [-1, 0, 1] (one feature); y's columns centered: [-1, 0, 1] and
    # [0, 1, -1]. y^T x = [2, -1], squared norm 5; ||x^T x|| = 2; y^T y = [[2, -1],
    # [-1, 2]], Frobenius norm sqrt(10). CKA = 5 / (2 sqrt(10)).
    x = np.array([[0.0], [1.0], [2.0]])
    y = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]])
    assert linear_cka(x, y) == pytest.approx(5 / (2 * np.sqrt(10)), rel=1e-12)


@pytest.mark.parametrize(("n", "p1", "p2"), [(40, 5, 7), (6, 10, 12)])  # both routes
def test_it_agrees_with_the_hsic_reference(n, p1, p2):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, p1))
    y = x @ rng.normal(size=(p1, p2)) + rng.normal(size=(n, p2))
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), rel=1e-10)


def test_invariances_of_a_retrain_and_what_it_is_not_invariant_to():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([3.0, 2.0, 1.0, 1.0, 0.5, 0.1])
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x[:, rng.permutation(6)]) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-12)  # orthogonal
    assert linear_cka(x, 7.5 * x + 3.0) == pytest.approx(1.0, abs=1e-12)  # scale, offset
    assert linear_cka(x, x * np.array([1.0, 1.0, 1.0, 1.0, 1.0, 30.0])) < 0.9  # anisotropic
    assert linear_cka(x, rng.normal(size=(200, 6))) < 0.1  # unrelated features


def test_constant_features_and_bad_shapes():
    x = np.arange(8.0).reshape(4, 2)
    assert linear_cka(np.ones((4, 2)), np.zeros((4, 3))) == 1.0
    assert linear_cka(x, np.ones((4, 2))) == 0.0
    with pytest.raises(ComparisonError, match=r"same number \(>= 2\) of rows.*\(4, 2\).*\(3, 2\)"):
        linear_cka(x, x[:3])
    with pytest.raises(ComparisonError, match="2-D"):
        linear_cka(x.ravel(), x.ravel())


def test_activations_are_read_as_positions_by_channels():
    acts = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    rows = cka_features(acts)
    assert rows.shape == (24, 5)
    assert np.array_equal(rows[13], acts[1, 0, 1])  # image 1, row 0, column 1
    one = np.random.default_rng(1).normal(size=(1, 6, 6, 4))
    # One image is enough (36 positions), and a channel permutation is no change.
    assert layer_cka(one, one[..., ::-1]) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ComparisonError, match=r"at least 2 positions.*\(1, 8\)"):
        layer_cka(np.ones((1, 8)), np.ones((1, 8)), "dense")


def test_retrain_judges_activations_by_the_worst_layer():
    rng = np.random.default_rng(2)
    golden = {"a": rng.normal(size=(2, 8, 8, 4)), "b": rng.normal(size=(4, 16, 16, 3))}
    permuted = {"a": golden["a"][..., [2, 0, 3, 1]] * 2.0, "b": golden["b"][..., ::-1]}
    same = compare(golden, permuted, "activation", profile="retrain")
    assert same.passed and same.metrics["cka"].value == pytest.approx(1.0)
    assert not compare(golden, permuted, "activation").passed  # exact fails a permutation
    other = {"a": golden["a"], "b": rng.normal(size=(4, 16, 16, 3))}  # unrelated: CKA ~0.003
    changed = compare(golden, other, "activation", profile="retrain")
    assert not changed.passed
    assert changed.metrics["cka"].bound == tolerances.RETRAIN["activation"]["activation_cka_min"]
    assert changed.metrics["cka"].note == "worst at b"
    assert changed.details["per_item"]["a"]["cka"] == pytest.approx(1.0)


def test_the_bound_sits_between_honest_retrains_and_the_contrasts():
    bound = tolerances.RETRAIN["activation"]["activation_cka_min"]
    honest_16, honest_one, shuffled, shortcut = tolerances.RETRAIN_CKA_MEASURED[
        "activation_cka_min"
    ]
    assert bound <= 0.6 * min(honest_16, honest_one)  # no honest retrain measured fails it
    assert bound > shortcut  # the shortcut model fails it
    # A shuffled layer is not caught on this narrow convnet: honest retrains move its
    # first layers as far (documented beside the bound).
    assert shuffled > bound


def test_a_float16_golden_is_judged_by_cka_under_retrain():
    # float16 storage widens the exact profile's relative bounds; retrain has none of
    # them and CKA does not see a rounding of 2**-11.
    acts = {"c": np.random.default_rng(3).normal(size=(1, 6, 6, 4)).astype(np.float32)}
    stored = {"c": acts["c"].astype(np.float16)}
    result = compare(stored, acts, "activation", profile="retrain")
    assert result.passed and result.metrics["cka"].value == pytest.approx(1.0, abs=1e-5)
    assert "float16 storage" in compare(stored, acts, "activation").details["notes"][0]
