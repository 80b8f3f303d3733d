"""Heatmaps: the one heatmap value every judgment reads, with one degenerate rule
(flagged by its producer, or constant: all zeros included), whatever form it came in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convviz_check.errors import ComparisonError, InputError
from convviz_check.heatmaps import Heatmaps
from convviz_check.localization import judge_localized
from convviz_check.metrics import compare
from convviz_check.types import Box, GradCAM


def _cam(maps: np.ndarray, degenerate: np.ndarray | None = None) -> GradCAM:
    n = maps.shape[0]
    return GradCAM(
        heatmap=maps.astype(np.float32),
        raw=maps.astype(np.float32),
        class_index=np.arange(n, dtype=np.int64),
        score=np.ones(n, np.float32),
        score_kind="logit",
        layer="conv",
        degenerate=np.zeros(n, bool) if degenerate is None else degenerate,
        image_shape=(14, 14),
    )


def test_every_form_gives_the_same_maps_and_flags():
    maps = np.random.default_rng(0).random((3, 7, 7)).astype(np.float32)
    maps[1] = 0.0  # all zero: degenerate
    maps[2] = 0.25  # constant: degenerate too
    forms = {
        "array": maps,
        "gradcam": _cam(maps),
        "mapping": {"heatmap": maps, "degenerate": np.zeros(3, bool)},
        "heatmaps": Heatmaps.of(maps),
    }
    for name, form in forms.items():
        hm = Heatmaps.of(form)
        np.testing.assert_array_equal(hm.degenerate, [False, True, True], err_msg=name)
        np.testing.assert_array_equal(hm.maps[0], maps[0], err_msg=name)
        assert not hm.maps[1:].any(), name  # degenerate maps read as zeros


def test_a_flag_from_the_producer_is_kept_and_zeroes_the_map():
    maps = np.random.default_rng(1).random((2, 5, 5))
    hm = Heatmaps.of(_cam(maps, degenerate=np.array([True, False])))
    assert hm.degenerate.tolist() == [True, False] and not hm.maps[0].any()
    assert hm.layer == "conv" and hm.image_shape == (14, 14) and hm.method == "gradcam"


@pytest.mark.parametrize(
    "value, pattern",
    [
        (np.full((2, 3, 3), np.nan), "NaN or inf"),
        (np.zeros((0, 3, 3)), "non-empty"),
        (np.zeros((2, 3, 3, 1)), "non-empty heatmaps"),
        (np.array([["a"]]), "numeric"),
        ({"maps": np.zeros((3, 3))}, "'heatmap' entry"),
    ],
)
def test_what_is_not_a_heatmap_is_refused_saying_what_was_received(value, pattern):
    with pytest.raises(InputError, match=pattern):
        Heatmaps.of(value)
    with pytest.raises(ComparisonError, match=pattern):
        Heatmaps.of(value, error=ComparisonError)


def test_the_count_is_checked_when_one_map_per_image_is_expected():
    with pytest.raises(InputError, match=r"one map per image \(3\)"):
        Heatmaps.of(np.zeros((2, 4, 4)), n=3)


_MAP = arrays(
    np.float32,
    (1, 6, 6),
    elements=st.sampled_from([0.0, 0.25, 0.5, 1.0]),  # ties and flat maps are common
)


@settings(max_examples=60, deadline=None)
@given(maps=_MAP, y=st.integers(0, 5), x=st.integers(0, 5))
def test_every_judge_gives_the_same_verdict_whatever_form_the_map_came_in(maps, y, x):
    target = Box(y, x, min(y + 3, 6), min(x + 3, 6))
    forms = [maps[0], maps, _cam(maps), Heatmaps.of(maps), {"heatmap": maps}]
    outcomes = [judge_localized(f, target, min_energy=0.3, image_shape=(6, 6)) for f in forms]
    first = outcomes[0]
    for other in outcomes[1:]:
        assert other.status == first.status
        assert {k: m.to_dict() for k, m in other.metrics.items()} == {
            k: m.to_dict() for k, m in first.metrics.items()
        }
    # a golden comparison sees the same degenerate flag in every form
    flat = bool(maps.max() == maps.min())
    for f in forms[1:]:
        comparison = compare(f, maps, "heatmap")
        assert comparison.degenerate == (flat, flat)
        assert comparison.passed
