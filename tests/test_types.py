import numpy as np
import pytest

from convviz_check import Box, ConvvizError, GradCAM, LocalizationError, Tolerance


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
