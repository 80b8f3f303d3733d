"""Pattern response: channel matching, the response ratio, the judge, and the Keras side
on a tiny model built here."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from convviz_check.errors import InputError
from convviz_check.pattern_response import (
    channel_correlations,
    judge_pattern_response,
    match_channels,
    response_ratio,
)
from convviz_check.report.outcomes import entry_of, judgment_card


def _acts(seed: int = 0, shape: tuple[int, ...] = (3, 4, 4, 5)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


# --------------------------------------------------------------------------- matching
def test_a_permuted_rescaled_copy_is_matched_back_exactly() -> None:
    golden = _acts()
    perm = np.array([3, 0, 4, 1, 2])  # new channel j is golden channel perm[j]
    new = golden[..., perm] * np.array([2.0, 0.5, 7.0, 1.0, 3.0]) + np.arange(5.0)
    assignment, corr = match_channels(golden, new)
    np.testing.assert_array_equal(assignment, np.argsort(perm))
    np.testing.assert_allclose(corr, 1.0, atol=1e-12)


def test_matching_is_one_to_one_where_the_best_match_is_shared() -> None:
    # Both golden channels correlate best with new channel 0; the Hungarian method gives
    # channel 1 to one of them (a greedy best match would judge channel 0 twice).
    x, y = _acts(1, (2, 3, 3, 1)), _acts(2, (2, 3, 3, 1))
    golden = np.concatenate([x, x + 0.8 * y], axis=-1)
    new = np.concatenate([x + 0.3 * y, y], axis=-1)
    corr = channel_correlations(golden, new)
    assert corr[0].argmax() == corr[1].argmax() == 0
    assignment, matched = match_channels(golden, new)
    assert sorted(assignment.tolist()) == [0, 1]
    assert matched.sum() == pytest.approx(max(corr[0, 0] + corr[1, 1], corr[0, 1] + corr[1, 0]))


def test_a_constant_channel_correlates_with_nothing() -> None:
    golden = _acts()
    new = golden.copy()
    new[..., 2] = 0.5
    corr = channel_correlations(golden, new)
    np.testing.assert_array_equal(corr[:, 2], 0.0)


@pytest.mark.parametrize(
    "golden, new",
    [
        (np.zeros((2, 3, 3)), np.zeros((2, 3, 3, 2))),  # not 4-D
        (np.zeros((2, 3, 3, 2)), np.zeros((2, 4, 3, 2))),  # map sizes differ
        (np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 2))),  # fewer new channels
    ],
)
def test_match_channels_refuses_bad_activations(golden: np.ndarray, new: np.ndarray) -> None:
    with pytest.raises(InputError, match="Received"):
        match_channels(golden, new)


# --------------------------------------------------------------------------- ratio
def test_response_ratio_on_hand_values_and_scale_free() -> None:
    images = np.zeros((2, 2, 2, 2))
    images[..., 0] = 2.0  # channel 0's usual level: 2
    images[0, ..., 1] = 4.0  # channel 1's: 2 (4 on one image, 0 on the other)
    patterns = np.zeros((2, 3, 3, 2))
    patterns[0, ..., 0] = 8.0
    patterns[1, ..., 1] = 3.0
    ratio = response_ratio(patterns, images, [0, 1])
    np.testing.assert_allclose(ratio, [4.0, 1.5])
    np.testing.assert_allclose(response_ratio(patterns * 9.0, images * 9.0, [0, 1]), ratio)


def test_a_channel_silent_on_the_images_is_measured_against_the_floor() -> None:
    images = np.zeros((1, 2, 2, 2))
    images[..., 0] = 1.0
    patterns = np.full((1, 2, 2, 2), 0.5)
    ratio = response_ratio(patterns, images, [1])
    assert ratio[0] == pytest.approx(0.5 / 1e-3)


def test_response_ratio_refuses_a_channel_out_of_range() -> None:
    with pytest.raises(InputError, match="out of range"):
        response_ratio(np.ones((1, 2, 2, 2)), np.ones((1, 2, 2, 2)), [2])


# --------------------------------------------------------------------------- judge
def test_the_judge_fails_when_a_channel_is_not_kept() -> None:
    out = judge_pattern_response(
        [6.3, 4.0, 5.0],
        [1.1, 3.9, 2.5],
        [0.82, 0.9, 0.7],
        channels=[3, 4, 5],
        matches=[7, 1, 2],
        min_ratio=2.0,
        min_share=1.0,
    )
    assert out.status == "failed"
    assert out.lead.startswith(
        "golden pattern of channel 3 no longer excites its match (channel 7, correlation "
        "0.82): response x1.1 vs x6.3 in the golden model"
    )
    assert out.metrics["kept_share"].value == pytest.approx(2 / 3)
    assert [v["ok"] for v in out.items.values()] == [False, True, True]
    assert "channel 3 -> 7" in out.message


def test_the_judge_passes_when_the_share_is_within_its_bound() -> None:
    out = judge_pattern_response(
        [6.3, 4.0, 5.0], [1.1, 3.9, 2.5], [0.82, 0.9, 0.7], min_ratio=2.0, min_share=0.6
    )
    assert out.status == "passed"
    assert out.lead.startswith("2 of 3 channels kept")


@pytest.mark.parametrize(
    "kwargs",
    [{"min_share": 1.5}, {"min_ratio": -1.0}, {"min_ratio": "2"}, {"channels": [0]}],
)
def test_the_judge_refuses_bad_bounds(kwargs: dict) -> None:
    with pytest.raises(InputError, match="Received"):
        judge_pattern_response([2.0, 3.0], [2.0, 3.0], [1.0, 1.0], **kwargs)


def test_the_report_shows_a_pattern_response_card(tmp_path: Path) -> None:
    out = judge_pattern_response([6.3], [1.1], [0.82], min_ratio=2.0)
    entry = entry_of(out, nodeid="t::x", name="pattern-1", rel=PurePosixPath("x"), results_dir=None)
    card = judgment_card(entry, tmp_path, "a")
    assert "per channel (1)" in card and "kept_share" in card and "failed" in card


# --------------------------------------------------------------------------- Keras side
def _tiny_model(seed: int = 0):  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    from convviz_check.explain.pattern_response import golden_record

    model = _tiny_model()
    images = np.random.default_rng(3).uniform(0, 1, (4, 16, 16, 3)).astype("float32")
    return model, images, golden_record(model, "conv", images, steps=20)


def test_a_model_against_itself_passes(tiny) -> None:  # type: ignore[no-untyped-def]
    from convviz_check.explain.pattern_response import pattern_response_from_golden

    model, images, record = tiny
    out = pattern_response_from_golden(record, model, images)
    assert out.status == "passed", out.text
    assert out.metrics["kept_share"].value == 1.0
    assert [v["match"] for v in out.items.values()] == [0, 1, 2, 3]


def test_a_copy_with_one_channel_destroyed_fails(tiny) -> None:  # type: ignore[no-untyped-def]
    import keras

    from convviz_check.explain.pattern_response import pattern_response_from_golden

    model, images, record = tiny
    broken = keras.models.clone_model(model)
    broken.set_weights(model.get_weights())
    kernel = broken.get_layer("conv").kernel.numpy()
    # The channel its own pattern excites most: judged whatever the backend's init.
    destroyed = int(np.argmax(record["response"]))
    kernel[..., destroyed] = 0.0
    broken.get_layer("conv").kernel.assign(kernel)
    out = pattern_response_from_golden(record, broken, images)
    assert out.status == "failed"
    assert out.lead.startswith(
        f"layer 'conv': golden pattern of channel {destroyed} no longer excites"
    )


def test_pattern_response_takes_two_models(tiny) -> None:  # type: ignore[no-untyped-def]
    from convviz_check.explain.pattern_response import pattern_response

    model, images, _ = tiny
    out = pattern_response(model, model, "conv", images, filters=[1, 3], steps=20)
    assert out.ok and list(out.items) == ["channel 1", "channel 3"]
