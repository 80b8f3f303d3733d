"""judge_golden: the golden comparison as a pure judgment (no file, no pytest)."""

from __future__ import annotations

import numpy as np
import pytest

from convviz_check.artifacts import Artifact
from convviz_check.errors import InputError
from convviz_check.judge.golden import judge_golden
from convviz_check.metrics import compare
from convviz_check.types import GradCAM


def _cam(peaks: list[tuple[int, int]], classes: list[int]) -> GradCAM:
    maps = np.zeros((len(peaks), 7, 7), np.float32)
    for i, (r, c) in enumerate(peaks):
        maps[i, r, c] = 1.0
        maps[i, 3, 3] = max(maps[i, 3, 3], 0.2)
    n = len(peaks)
    return GradCAM(
        heatmap=maps,
        raw=maps.copy(),
        class_index=np.array(classes, np.int64),
        score=np.ones(n, np.float32),
        score_kind="logit",
        layer="conv",
        degenerate=np.zeros(n, bool),
        image_shape=(28, 28),
    )


def test_a_moved_peak_fails_with_the_comparisons_lead_and_metrics():
    golden, now = _cam([(1, 1), (2, 2)], [0, 1]), _cam([(1, 1), (5, 5)], [0, 1])
    outcome = judge_golden(golden, now)
    comparison = compare(golden, now, "heatmap")
    assert outcome.judgment == "golden" and outcome.status == "failed"
    assert outcome.lead == comparison.text.splitlines()[0]
    assert set(outcome.metrics) == set(comparison.metrics)
    assert not outcome.metrics["peak_shift"].ok
    assert list(outcome.items) == ["image 0", "image 1"]
    assert outcome.facts == {"kind": "heatmap", "profile": "exact"}


def test_the_same_value_passes_and_a_stored_artifact_is_read_as_stored():
    golden = _cam([(1, 1)], [0])
    stored = Artifact.from_value(golden)
    assert judge_golden(stored, golden).ok
    assert judge_golden(golden, golden).status == "passed"


def test_patterns_are_compared_as_shown_and_kind_is_required_for_a_4d_array():
    rng = np.random.default_rng(0)
    patterns = rng.random((2, 16, 16, 3)).astype(np.float32)
    with pytest.raises(InputError, match="kind="):
        judge_golden(patterns, patterns)  # a bare 4-D array: kind is needed
    assert judge_golden(patterns, patterns, "pattern").status == "passed"
    flipped = patterns[:, ::-1].copy()
    assert judge_golden(patterns, flipped, "pattern").status == "failed"
