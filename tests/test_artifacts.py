"""convviz_check.artifacts: values <-> artifacts (kinds, layouts, storage dtypes, layer
subsets), and artifacts <-> stored arrays (``decode`` refuses what does not fit)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convviz_check import storage
from convviz_check.artifacts import GRADCAM_ARRAYS, Artifact, infer_kind
from convviz_check.errors import InputError, StorageError
from convviz_check.types import GradCAM
from tests._models import gradcam_result


def _through_bytes(artifact: Artifact, tmp_path) -> Artifact:
    """encode -> file -> read_npz -> decode, as a golden, a worker or an export does."""
    path = tmp_path / "a.npz"
    path.write_bytes(artifact.encode())
    return Artifact.decode(storage.read_npz(path), artifact.kind, artifact.layout, artifact.attrs)


# ------------------------------------------------------------------ value round trips
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=4, max_side=6),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    )
)
def test_array_round_trip_is_bit_exact_for_any_float32_array(arr):
    a = Artifact.from_value(arr, "activation")
    assert (a.kind, a.layout, list(a.arrays)) == ("activation", "array", ["value"])
    back = a.to_value()
    assert isinstance(back, np.ndarray) and back.dtype == np.float32 and back.shape == arr.shape
    assert np.array_equal(back.view(np.uint32), arr.view(np.uint32))


def test_array_round_trip_through_bytes_keeps_kind_and_values(tmp_path):
    value = np.random.default_rng(0).random((3, 7, 7)).astype(np.float32)
    a = Artifact.from_value(value)
    assert a.kind == "heatmap"
    back = _through_bytes(a, tmp_path)
    assert back.kind == "heatmap" and np.array_equal(back.to_value(), value)


def test_activation_dict_round_trip_keeps_names_with_slashes_and_order(tmp_path):
    acts = {"outer/conv": np.arange(8.0).reshape(1, 2, 2, 2), "pool": np.ones((1, 1, 1, 2))}
    a = Artifact.from_value(acts)
    assert (a.kind, a.layout) == ("activation", "activations")
    for art in (a, _through_bytes(a, tmp_path)):
        back = art.to_value()
        assert isinstance(back, dict) and list(back) == ["outer/conv", "pool"]
        assert back["outer/conv"].dtype == np.float32  # float64 in, float32 stored
        assert np.array_equal(back["outer/conv"], acts["outer/conv"].astype(np.float32))


def test_gradcam_round_trip_restores_every_field(tmp_path):
    cam = gradcam_result(degenerate_second=True)
    a = Artifact.from_value(cam)
    assert (a.kind, a.layout, tuple(a.arrays)) == ("heatmap", "gradcam", GRADCAM_ARRAYS)
    assert a.attrs == {
        "score_kind": "logit",
        "layer": "block/conv",
        "image_shape": [32, 40],
        "method": "gradcam",
        "target": "",
    }
    for art in (a, _through_bytes(a, tmp_path)):
        back = art.to_value()
        assert isinstance(back, GradCAM)
        assert np.array_equal(back.heatmap, cam.heatmap) and np.array_equal(back.raw, cam.raw)
        assert back.class_index.tolist() == [0, 1] and back.class_index.dtype == np.int64
        assert np.array_equal(back.score, cam.score)
        assert back.degenerate.dtype == bool and back.degenerate.tolist() == [False, True]
        assert (back.layer, back.score_kind, back.image_shape) == ("block/conv", "logit", (32, 40))


def test_gradcam_round_trip_keeps_the_cam_method_and_target(tmp_path):
    cam = replace(gradcam_result(), method="scorecam", target="callable:score@reg")
    a = Artifact.from_value(cam)
    assert (a.attrs["method"], a.attrs["target"]) == ("scorecam", "callable:score@reg")
    for art in (a, _through_bytes(a, tmp_path)):
        back = art.to_value()
        assert (back.method, back.target) == ("scorecam", "callable:score@reg")
    assert (cam[1].method, cam[1].target) == ("scorecam", "callable:score@reg")  # slicing


def test_gradcam_artifact_without_a_method_reads_as_gradcam(tmp_path):
    # Goldens written before the CAM methods existed have neither attr.
    a = Artifact.from_value(gradcam_result())
    old = {k: v for k, v in a.attrs.items() if k not in ("method", "target")}
    back = Artifact.decode(dict(a.arrays), a.kind, a.layout, old).to_value()
    assert (back.method, back.target) == ("gradcam", "")


@pytest.mark.parametrize("key", ["method", "target"])
def test_gradcam_artifact_with_a_non_text_method_or_target_is_refused(key):
    a = Artifact.from_value(gradcam_result())
    with pytest.raises(StorageError, match=f"method and target \\(str\\).*'{key}': 3"):
        Artifact.decode(dict(a.arrays), a.kind, a.layout, {**a.attrs, key: 3})


def test_float16_gradcam_widens_maps_back_to_float32_and_keeps_scores_float32():
    cam = gradcam_result(degenerate_second=True)
    a = Artifact.from_value(cam, dtype="float16")
    assert a.arrays["heatmap"].dtype == np.float16 and a.arrays["score"].dtype == np.float32
    back = a.to_value()
    assert back.heatmap.dtype == np.float32 and back.raw.dtype == np.float32
    assert np.allclose(back.heatmap, cam.heatmap, atol=1e-3)


def test_attrs_are_kept_with_the_arrays():
    a = Artifact.from_value(np.ones((1, 4, 4, 3)), "pattern", attrs={"layer": "conv2"})
    assert a.attrs == {"layer": "conv2"} and a.to_value().shape == (1, 4, 4, 3)


def test_facts_of_an_artifact():
    a = Artifact.from_value({"a": np.ones((2, 3)), "b": np.ones(4)}, dtype="float16")
    assert a.nbytes == 2 * (6 + 4)
    assert a.shapes() == {"a": (2, 3), "b": (4,)}
    assert a.content_sha256() == storage.content_sha256(a.arrays)


def test_activations_are_always_stored_by_index():
    # Layer names are user text: never member names of the zip.
    encoded = Artifact.from_value({"plain": np.ones((1, 2))}).encode()
    assert encoded == storage.encode_npz({"plain": np.ones((1, 2), np.float32)}, indexed=True)


# ------------------------------------------------------------------ storage options
def test_float16_option_stores_half_and_keeps_it_for_compare():
    acts = {"a": np.linspace(-3, 3, 64, dtype=np.float32).reshape(1, 4, 4, 4)}
    a = Artifact.from_value(acts, dtype="float16")
    # kept float16 so that compare() knows the storage rounding (widens its bounds)
    assert a.arrays["a"].dtype == np.float16 and a.to_value()["a"].dtype == np.float16
    assert np.allclose(a.to_value()["a"], acts["a"], atol=2e-3)


def test_integer_and_bool_values_are_stored_as_they_are():
    a = Artifact.from_value(np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3), "pattern")
    assert a.arrays["value"].dtype == np.uint8
    assert Artifact.from_value(np.eye(3, dtype=bool)).arrays["value"].dtype == bool


def test_float16_refuses_values_that_overflow():
    with pytest.raises(InputError, match="does not fit float16"):
        Artifact.from_value(np.array([[1e6, 0.0]], np.float32), "heatmap", dtype="float16")


@pytest.mark.parametrize("dtype", ["int8", "float64", "nope", np.float64])
def test_unknown_storage_dtype_is_refused(dtype):
    with pytest.raises(InputError, match="float32' or 'float16"):
        Artifact.from_value(np.ones((2, 2)), dtype=dtype)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.array([[{"a": 1}]], dtype=object), "numeric arrays"),
        (np.array([[1 + 2j]]), "real numbers"),
        (np.array([["a", "b"]]), "real numbers"),
    ],
)
def test_values_that_are_not_real_numbers_are_refused(value, match):
    with pytest.raises(InputError, match=match):
        Artifact.from_value(value, "heatmap")


def test_layer_subset_keeps_only_the_named_layers_in_model_order():
    acts = {"c1": np.ones((1, 2, 2, 1)), "c2": np.ones((1, 2, 2, 1)), "c3": np.ones((1, 2, 2, 1))}
    assert list(Artifact.from_value(acts, layers=["c3", "c1"]).arrays) == ["c1", "c3"]
    with pytest.raises(InputError, match="nope"):
        Artifact.from_value(acts, layers=["nope"])


def test_layers_apply_only_to_a_dict():
    with pytest.raises(InputError, match="not to an array"):
        Artifact.from_value(np.ones((3, 3)), layers=["a"])
    with pytest.raises(InputError, match="not to a GradCAM"):
        Artifact.from_value(gradcam_result(degenerate_second=True), layers=["a"])


@pytest.mark.parametrize("acts", [{}, {"": np.ones(2)}, {3: np.ones(2)}])
def test_activation_dicts_need_named_arrays(acts):
    with pytest.raises(InputError):
        Artifact.from_value(acts)


# ------------------------------------------------------------------ kinds
def test_bare_4d_array_needs_a_kind():
    with pytest.raises(InputError, match="kind= is required"):
        Artifact.from_value(np.ones((1, 4, 4, 3)))
    assert infer_kind(np.ones((4, 4)), None) == "heatmap"
    assert infer_kind(np.ones((2, 4, 4)), None) == "heatmap"
    assert infer_kind({"a": np.ones(2)}, None) == "activation"
    assert infer_kind(gradcam_result(degenerate_second=True), None) == "heatmap"


def test_given_kinds_must_fit_the_value():
    with pytest.raises(InputError, match="GradCAM is a heatmap"):
        infer_kind(gradcam_result(degenerate_second=True), "pattern")
    with pytest.raises(InputError, match="dict of arrays is a set of activations"):
        infer_kind({"a": np.ones(2)}, "heatmap")
    with pytest.raises(InputError, match="Unknown kind"):
        infer_kind(np.ones((2, 2)), "heatmaps")
    assert infer_kind(np.ones((1, 4, 4, 3)), "pattern") == "pattern"


def test_an_artifact_of_unknown_kind_or_layout_is_refused():
    with pytest.raises(InputError, match="Unknown artifact"):
        Artifact("heatmaps", "array", {"value": np.ones(2)})
    with pytest.raises(InputError, match="Unknown artifact"):
        Artifact("heatmap", "grid", {"value": np.ones(2)})


# ------------------------------------------------------------------ decode
def test_decode_rebuilds_what_encode_stored(tmp_path):
    for value, kind in (
        (np.eye(3), None),
        ({"a/b": np.ones((1, 2))}, None),
        (gradcam_result(degenerate_second=True), None),
    ):
        a = Artifact.from_value(value, kind)
        back = _through_bytes(a, tmp_path)
        assert (back.kind, back.layout, back.attrs) == (a.kind, a.layout, a.attrs)
        assert back.content_sha256() == a.content_sha256()


@pytest.mark.parametrize(
    ("arrays", "layout", "match"),
    [
        ({"heatmap": np.ones((1, 2, 2))}, "gradcam", "GradCAM artifact holds"),
        (
            {**{k: np.ones(1) for k in GRADCAM_ARRAYS}, "extra": np.ones(1)},
            "gradcam",
            "GradCAM artifact holds",
        ),
        ({"value": np.ones(2), "more": np.ones(2)}, "array", "one entry 'value'"),
        ({"values": np.ones(2)}, "array", "one entry 'value'"),
        ({}, "array", "one entry 'value'"),
    ],
)
def test_decode_refuses_entries_that_do_not_fit_the_layout(arrays, layout, match):
    with pytest.raises(StorageError, match=match):
        Artifact.decode(arrays, "heatmap", layout, {})


@pytest.mark.parametrize(("kind", "layout"), [("heatmaps", "array"), ("heatmap", "grid")])
def test_decode_refuses_an_unknown_kind_or_layout_as_a_storage_error(kind, layout):
    with pytest.raises(StorageError, match="Unknown artifact"):
        Artifact.decode({"value": np.ones(2)}, kind, layout, {})
