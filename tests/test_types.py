"""convviz_check.types: value types and the constants that exist once."""

import dataclasses
import math

import numpy as np
import pytest

from convviz_check import Box, ConvvizError, GradCAM, LocalizationError, Tolerance
from convviz_check.types import (
    BACKENDS,
    ITEM_UNIT,
    KIND_OF,
    KINDS,
    LAYOUTS,
    METRICS,
    TECHNIQUES,
    Comparison,
    Localization,
    MetricResult,
    bound_distance,
)


def test_box_is_half_open_and_validates():
    b = Box(1, 2, 4, 6)
    assert (b.height, b.width, b.area) == (3, 4, 12)
    assert b.contains(1, 2) and b.contains(3, 5)
    assert not b.contains(4, 2) and not b.contains(1, 6)


@pytest.mark.parametrize("coords", [(3, 0, 3, 5), (0, 5, 4, 2), (0, 0, 0, 0)])
def test_box_refuses_empty_or_inverted(coords):
    with pytest.raises(LocalizationError, match="Received: Box"):
        Box(*coords)


def test_box_refuses_non_integers():
    with pytest.raises(LocalizationError, match="Received: y0=1.5"):
        Box(1.5, 0, 3, 3)


def test_box_accepts_numpy_integers():
    assert Box(np.int64(0), np.int32(1), 2, 3).to_tuple() == (0, 1, 2, 3)


def _cam(n):
    z = np.zeros((n, 4, 4), np.float32)
    return GradCAM(
        heatmap=z,
        raw=z,
        class_index=np.arange(n),
        score=np.ones(n, np.float32),
        score_kind="logit",
        layer="conv",
        degenerate=np.zeros(n, bool),
        image_shape=(32, 32),
    )


def test_gradcam_indexing_keeps_a_batch_axis():
    cam = _cam(3)
    assert len(cam[1]) == 1 and cam[1].class_index.tolist() == [1]
    assert cam[-1].class_index.tolist() == [2]
    assert cam[0:2].class_index.tolist() == [0, 1]


def test_tolerance_merge_and_round_trip():
    base = Tolerance(heatmap_rms=0.1, heatmap_ssim_min=0.9)
    merged = base.merged(Tolerance(heatmap_rms=0.2))
    assert merged.heatmap_rms == 0.2 and merged.heatmap_ssim_min == 0.9
    assert Tolerance.from_dict(merged.to_dict()) == merged
    with pytest.raises(ConvvizError, match="Unknown tolerance field"):
        Tolerance.from_dict({"nope": 1})


# ------------------------------------------------------------------ the constants
def test_the_vocabulary_constants_agree_with_each_other():
    assert KINDS == ("activation", "heatmap", "pattern")
    assert LAYOUTS == ("array", "activations", "gradcam")
    assert BACKENDS == ("tensorflow", "torch", "jax")
    assert set(KIND_OF) == set(TECHNIQUES) and set(KIND_OF.values()) == set(KINDS)
    assert set(ITEM_UNIT) == set(KINDS) == set(METRICS)


def test_every_metric_is_bounded_by_a_tolerance_field_in_a_known_direction():
    tolerance_fields = {f.name for f in dataclasses.fields(Tolerance)}
    for kind, metrics in METRICS.items():
        assert len({name for name, _, _ in metrics}) == len(metrics), kind
        for _name, field, direction in metrics:
            assert field in tolerance_fields and field.startswith(kind), (kind, field)
            assert direction in ("max", "min")
            assert field.endswith("_min") == (direction == "min"), field


# ------------------------------------------------------------------ bound distance
@pytest.mark.parametrize(
    ("value", "bound", "direction", "distance"),
    [
        (0.5, 1.0, "max", 0.5),
        (2.0, 1.0, "max", 2.0),
        (0.0, 0.0, "max", 0.0),
        (1e-9, 0.0, "max", math.inf),
        (0.95, 0.9, "min", 0.5),  # (1 - 0.95) / (1 - 0.9)
        (0.7, 0.9, "min", 3.0),
        (1.0, 1.0, "min", 0.0),
        (0.999, 1.0, "min", math.inf),
        (math.nan, 1.0, "max", math.inf),
        (3.0, None, "max", 0.0),
    ],
)
def test_bound_distance_is_in_units_of_the_allowed_slack(value, bound, direction, distance):
    assert bound_distance(value, bound, direction) == pytest.approx(distance)


def test_metric_result_distance_and_dict():
    ok = MetricResult("rms", 0.5, 1.0, True)
    assert ok.distance == pytest.approx(0.5)
    assert ok.to_dict() == {
        "value": 0.5, "bound": 1.0, "ok": True, "direction": "max", "note": ""
    }  # fmt: skip
    assert MetricResult("class_changed", 1.0, None, False).distance == math.inf
    assert MetricResult("note_only", 1.0, None, True).distance == 0.0
    assert MetricResult("ssim", 0.95, 0.9, True, "min").distance == pytest.approx(0.5)


def test_comparison_is_truthy_when_passed():
    assert Comparison("heatmap", {}, True) and not Comparison("heatmap", {}, False)


def test_localization_holds_every_fact():
    loc = Localization(
        pointing=True,
        energy=0.8,
        iou=0.5,
        peaks=np.array([[1, 2]]),
        target_box=Box(0, 0, 4, 4),
        heatmap_box=None,
        image_shape=(8, 8),
        degenerate=False,
    )
    assert loc.pointing and loc.target_box.area == 16 and loc.peaks.shape == (1, 2)
    with pytest.raises(AttributeError):
        loc.energy = 0.1  # frozen
