"""Pattern response: channel matching, the response ratio, the judge, and the Keras side
on a tiny model built here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from convviz_check.artifacts import Artifact
from convviz_check.checks import CheckRequest
from convviz_check.errors import ConvvizError, InputError
from convviz_check.judge.patterns import NO_PROBE, NO_RECORD, judge_retrain, narrowed
from convviz_check.pattern_response import (
    RECORD_ENTRIES,
    RECORD_FILTERS,
    RECORD_LEVEL,
    RECORD_SAMPLES,
    RECORD_SELF,
    channel_correlations,
    judge_pattern_response,
    judge_records,
    match_channels,
    response_ratio,
    response_record,
    sample_positions,
)
from convviz_check.report.outcomes import entry_of, judgment_card
from convviz_check.types import Tolerance


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
def test_a_channel_is_lost_when_its_pattern_weakens_and_its_match_falls_behind() -> None:
    # Channel 0: response kept 0.1/6.3, correlation 0.05 against the layer's median
    # 0.96 (gap 0.91): lost. Channel 3: response kept 0.04 too, but its match is as good
    # as the layer's (gap 0.01): kept.
    out = judge_pattern_response(
        [6.3, 4.0, 5.0, 5.0],
        [0.1, 3.9, 9.0, 0.2],
        [0.05, 0.97, 0.99, 0.95],
        channels=[3, 4, 5, 6],
        matches=[7, 1, 2, 0],
    )
    assert out.status == "failed"
    assert out.lead.startswith(
        "lost a detector: golden pattern of channel 3 drives its match (channel 7) 0.02 of "
        "what it drove in the golden model (x0.1 vs x6.3); the match correlates 0.05, the "
        "layer's median 0.96; 3 of 4 channels kept"
    )
    assert out.metrics["pattern_gap"].value == pytest.approx(0.96 - 0.05)
    assert out.metrics["lost_channels"].value == 1
    assert [v["ok"] for v in out.items.values()] == [False, True, True, True]
    assert "lost: channel 3 -> 7" in out.message


def test_a_layer_that_moved_as_a_whole_passes() -> None:
    # A retrain re-draws a whole layer: every match is mediocre, responses fall, yet no
    # channel falls far behind the others.
    out = judge_pattern_response([6.0, 8.0, 5.0], [0.2, 0.1, 4.0], [0.2, 0.35, 0.3])
    assert out.status == "passed", out.text
    assert out.metrics["pattern_gap"].value == pytest.approx(0.3 - 0.2)
    assert out.lead.startswith("3 of 3 channels kept; closest to lost: golden pattern of channel 0")


def test_a_channel_whose_pattern_still_excites_its_match_is_kept() -> None:
    out = judge_pattern_response([6.0, 8.0, 5.0], [7.0, 8.0, 5.0], [0.0, 1.0, 1.0])
    assert out.status == "passed" and out.metrics["pattern_gap"].value == 0.0


def test_a_pattern_too_weak_in_the_golden_model_is_not_judged() -> None:
    out = judge_pattern_response([1.2, 8.0], [0.0, 8.0], [0.0, 1.0], layer_corr=[0.0, 1.0, 1.0])
    assert out.status == "passed" and out.items["channel 0"]["judged"] is False
    assert "(1 not judged: too weak in the golden model)" in out.lead
    nothing = judge_pattern_response([1.2], [0.0], [0.0])
    assert nothing.status == "failed" and "nothing to judge" in nothing.lead


@pytest.mark.parametrize(
    "kwargs",
    [{"max_gap": 2.5}, {"min_ratio": -1.0}, {"min_kept": "2"}, {"channels": [0]}],
)
def test_the_judge_refuses_bad_bounds(kwargs: dict) -> None:
    with pytest.raises(InputError, match="Received"):
        judge_pattern_response([2.0, 3.0], [2.0, 3.0], [1.0, 1.0], **kwargs)


def test_the_report_shows_a_pattern_response_card(tmp_path: Path) -> None:
    out = judge_pattern_response([6.3, 5.0], [0.1, 5.0], [0.0, 1.0], layer_corr=[0.0, 1.0, 1.0])
    entry = entry_of(out, nodeid="t::x", name="pattern-1", rel=PurePosixPath("x"), results_dir=None)
    card = judgment_card(entry, tmp_path, "a")
    assert "per channel (2)" in card and "pattern_gap" in card and "failed" in card


# --------------------------------------------------------------------------- the record
def test_sample_positions_are_evenly_spaced_and_all_when_few() -> None:
    acts = np.arange(2 * 3 * 4 * 2, dtype=float).reshape(2, 3, 4, 2)
    np.testing.assert_array_equal(sample_positions(acts, limit=100), acts.reshape(-1, 2))
    picked = sample_positions(acts, limit=4)
    np.testing.assert_array_equal(picked[:, 0], [0.0, 16.0, 30.0, 46.0])  # rows 0, 8, 15, 23


def test_response_record_on_hand_values() -> None:
    images = np.zeros((1, 2, 2, 2))
    images[..., 0] = 2.0
    images[..., 1] = 1.0
    patterns = np.zeros((2, 2, 2, 2))
    patterns[0, ..., 1] = 5.0
    patterns[1, ..., 0] = 3.0
    record = response_record(images, patterns, [1, 0])
    np.testing.assert_allclose(record[RECORD_LEVEL], [2.0, 1.0])
    np.testing.assert_allclose(record[RECORD_SELF], [5.0, 1.5])
    assert record[RECORD_SAMPLES].shape == (4, 2) and record[RECORD_FILTERS].tolist() == [1, 0]


def _records(seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = np.maximum(rng.normal(size=(4, 6, 6, 5)), 0.0)
    patterns = np.maximum(rng.normal(size=(5, 6, 6, 5)), 0.0)
    for f in range(5):
        patterns[f, ..., f] += 6.0  # each golden pattern drives its own channel
    return response_record(images, patterns, range(5)), patterns


def test_a_permuted_rescaled_model_keeps_every_pattern() -> None:
    golden, patterns = _records()
    perm = np.array([2, 0, 4, 1, 3])  # new channel j is golden channel perm[j]
    scale = np.array([2.0, 0.5, 3.0, 1.0, 4.0])
    rng = np.random.default_rng(0)
    images = np.maximum(rng.normal(size=(4, 6, 6, 5)), 0.0)  # the same draws as _records
    new = response_record(images[..., perm] * scale, patterns[..., perm], range(5))
    out = judge_records(golden, new, patterns[..., perm] * scale)
    assert out.status == "passed", out.text
    assert [v["match"] for v in out.items.values()] == np.argsort(perm).tolist()


def test_a_model_with_one_channel_replaced_loses_it() -> None:
    golden, patterns = _records()
    rng = np.random.default_rng(0)
    images = np.maximum(rng.normal(size=(4, 6, 6, 5)), 0.0)
    other = np.random.default_rng(9)
    new_images, new_patterns = images.copy(), patterns.copy()
    new_images[..., 2] = np.maximum(other.normal(size=(4, 6, 6)), 0.0)  # another detector
    new_patterns[..., 2] = np.maximum(other.normal(size=(5, 6, 6)), 0.0)
    new = response_record(new_images, new_patterns, range(5))
    out = judge_records(golden, new, new_patterns, layer="conv")
    assert out.status == "failed"
    assert out.lead.startswith("lost a detector: layer 'conv': golden pattern of channel 2")


class _Golden:
    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact


@dataclass
class _Run:
    request: CheckRequest
    unjudged: str
    tolerance: Tolerance = field(default_factory=Tolerance)


def test_judge_retrain_says_why_a_pattern_golden_is_not_judged() -> None:
    reason = "filter patterns are not judged under the retrain profile: ..."
    plain = Artifact.from_value(np.zeros((2, 8, 8, 3), np.float32), "pattern")
    record, _ = _records()
    kept = Artifact("pattern", "array", {**plain.arrays, **record}, {})
    request = CheckRequest("p", PurePosixPath("x"), kept, "tensorflow")
    assert judge_retrain(_Golden(plain), _Run(request, reason)) == (None, NO_RECORD)
    assert NO_RECORD.startswith("filter patterns are not judged under the retrain profile")
    assert judge_retrain(_Golden(kept), _Run(request, reason)) == (None, NO_PROBE)
    assert judge_retrain(_Golden(kept), _Run(request, "")) == (None, "")  # a judged kind
    assert judge_retrain(None, _Run(request, reason)) == (None, reason)  # missing: written


def _judged_pair(new_channels: int, tolerance: Tolerance) -> tuple[_Golden, _Run]:
    """A golden with its record (5 channels) and a run whose layer has
    ``new_channels`` channels (the golden's first ones: the same detectors)."""
    record, patterns = _records()
    rng = np.random.default_rng(0)
    images = np.maximum(rng.normal(size=(4, 6, 6, 5)), 0.0)  # the draws of _records
    value = np.zeros((5, 8, 8, 3), np.float32)
    attrs = {"response_layer": "conv", "response_images": "x", "response_map": [6, 6]}
    golden = Artifact("pattern", "array", {"value": value, **record}, attrs)
    new = response_record(images[..., :new_channels], patterns[..., :new_channels], [0] * 5)
    obtained = Artifact("pattern", "array", {"value": value, **new}, attrs)
    probe = lambda _patterns: patterns[..., :new_channels]  # noqa: E731
    request = CheckRequest("p", PurePosixPath("x"), obtained, "tensorflow", probe=probe)
    return _Golden(golden), _Run(request, "not judged: ...", tolerance)


def test_judge_retrain_reads_the_runs_resolved_bound() -> None:
    golden, run = _judged_pair(5, Tolerance())
    comparison, reason = judge_retrain(golden, run)
    assert reason == "" and comparison is not None and comparison.passed
    assert comparison.metrics["pattern_gap"].bound == pytest.approx(0.65)  # the default
    golden, run = _judged_pair(5, Tolerance(pattern_response_gap_max=0.3))  # calibrated
    comparison, _ = judge_retrain(golden, run)
    assert comparison is not None and comparison.metrics["pattern_gap"].bound == 0.3


def test_a_layer_that_lost_channels_fails_as_a_judged_check() -> None:
    golden, run = _judged_pair(3, Tolerance())  # 5 channels in the golden, now 3
    comparison, reason = judge_retrain(golden, run)
    assert reason == "" and comparison is not None and not comparison.passed
    lead = comparison.text.splitlines()[0]
    assert lead == "lost channels: layer 'conv' had 5 channels in the golden, now 3"
    lost = comparison.metrics["lost_channels"]
    assert (lost.value, lost.bound, lost.ok) == (2.0, 0.0, False)
    assert comparison.details["pattern_response"]["golden_channels"] == 5
    assert narrowed("c", 2, 1).metrics["lost_channels"].value == 1.0


def test_a_pattern_golden_keeps_its_record_through_storage(tmp_path: Path) -> None:
    from convviz_check import golden as golden_lib

    record, _ = _records()
    patterns = np.random.default_rng(1).uniform(size=(5, 8, 8, 3)).astype(np.float32)
    artifact = Artifact("pattern", "array", {"value": patterns, **record}, {})
    golden_lib.save(tmp_path / "p", artifact, {"backend": "tensorflow"})
    loaded = golden_lib.load(tmp_path / "p").artifact
    assert sorted(loaded.arrays) == sorted(["value", *RECORD_ENTRIES])
    np.testing.assert_array_equal(loaded.arrays[RECORD_SELF], record[RECORD_SELF])


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
    assert [v["match"] for v in out.items.values()] == [0, 1, 2, 3]


def test_attach_record_keeps_the_patterns_and_adds_the_record(tiny) -> None:  # type: ignore[no-untyped-def]
    from convviz_check.explain.pattern_response import attach_record

    model, images, record = tiny
    artifact = Artifact.from_value(record["patterns"], "pattern")
    with_record, probe = attach_record(artifact, model, "conv", None, images)
    np.testing.assert_array_equal(with_record.arrays["value"], record["patterns"])
    np.testing.assert_allclose(with_record.arrays[RECORD_SELF], record[RECORD_SELF], rtol=1e-5)
    assert with_record.attrs["response_layer"] == "conv"
    assert with_record.attrs["response_map"] == [16, 16]
    assert probe(images).shape == (4, 16, 16, 4)
    with pytest.raises(InputError, match="not deprocessed images"):
        attach_record(Artifact.from_value(np.zeros((4, 8, 8, 3), np.uint8), "pattern"), model,
                      "conv", None, images)  # fmt: skip


def test_pattern_response_takes_two_models(tiny) -> None:  # type: ignore[no-untyped-def]
    from convviz_check.explain.pattern_response import pattern_response

    model, images, _ = tiny
    out = pattern_response(model, model, "conv", images, filters=[1, 3], steps=20)
    assert out.ok and list(out.items) == ["channel 1", "channel 3"]


# The shortcut example's honest model and its retrain (another seed): the bound's own
# measurement, on 16 of its images (docs/feature-visualization.md has the 32-image run).
@pytest.fixture(scope="module")
def shortcut_record():  # type: ignore[no-untyped-def]
    from convviz_check.examples import shortcut
    from convviz_check.explain.pattern_response import golden_record

    honest = shortcut.load("honest")
    images = shortcut.biased_eval_set(16).floats
    return honest, images, golden_record(honest, "conv1_relu", images, steps=30)


def _sabotaged(model, how: str, channel: int):  # type: ignore[no-untyped-def]
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    conv = copy.get_layer("conv1")
    kernel = np.array(conv.kernel.numpy())
    rng = np.random.default_rng(channel)
    if how == "redraw":  # re-initialised: a random filter of the layer's spread
        kernel[..., channel] = rng.normal(0.0, kernel.std(), kernel[..., channel].shape)
    else:  # its own weights shuffled
        flat = kernel[..., channel].reshape(-1).copy()
        rng.shuffle(flat)
        kernel[..., channel] = flat.reshape(kernel[..., channel].shape)
    conv.kernel.assign(kernel)
    return copy


def test_an_honest_retrain_keeps_its_patterns(shortcut_record) -> None:  # type: ignore[no-untyped-def]
    from convviz_check.examples import shortcut
    from convviz_check.explain.pattern_response import pattern_response_from_golden

    _, images, record = shortcut_record
    out = pattern_response_from_golden(record, shortcut.load("retrain"), images)
    assert out.status == "passed", out.text


@pytest.mark.parametrize("how, channel", [("redraw", 3), ("shuffle", 0)])
def test_a_redrawn_or_shuffled_channel_is_lost(shortcut_record, how, channel) -> None:  # type: ignore[no-untyped-def]
    from convviz_check.explain.pattern_response import pattern_response_from_golden

    honest, images, record = shortcut_record
    out = pattern_response_from_golden(record, _sabotaged(honest, how, channel), images)
    assert out.status == "failed"
    assert out.lead.startswith(
        f"lost a detector: layer 'conv1_relu': golden pattern of channel {channel} "
    )


def test_with_record_needs_patterns_that_filter_patterns_returned(tiny) -> None:  # type: ignore[no-untyped-def]
    import convviz_check as cc
    from convviz_check.explain.filters import pattern_call, pattern_note
    from convviz_check.explain.pattern_response import with_record

    model, images, _ = tiny
    patterns = cc.filter_patterns(model, "conv", filters=[2, 0], steps=2)
    assert pattern_call(patterns) == (model, "conv", [2, 0])
    request = CheckRequest("p", PurePosixPath("x"), Artifact.from_value(patterns, "pattern"), "tf")
    # No images: the request as it is, but for the ascent's note (a backend's tiny model
    # may have a dead start, measured on JAX: the note names it).
    plain = with_record(request, patterns, None, None)
    assert plain.obtained is request.obtained and plain.probe is None
    note = pattern_note(patterns)
    assert plain.note == (f"the filter-pattern ascent had dead starts: {note}" if note else "")
    judged = with_record(request, patterns, None, images)
    assert judged.obtained.arrays[RECORD_FILTERS].tolist() == [2, 0] and judged.probe is not None
    with pytest.raises(InputError, match="no filter_patterns call returned"):
        with_record(request, patterns.copy(), None, images)


def test_a_retrain_pattern_check_lists_its_channels_in_the_report() -> None:
    from convviz_check.report.checks import _items_table

    out = judge_pattern_response([6.3, 5.0], [0.1, 5.0], [0.0, 1.0], layer_corr=[0.0, 1.0, 1.0])
    entry = {"kind": "pattern", "profile": "retrain", "per_item": out.items}
    table = _items_table(entry)
    assert "per channel (2;" in table and "response kept" in table
    assert "<tr class=bad><td>channel 0</td><td>0</td><td>0.00</td><td>1.00</td>" in table
    assert "<tr class=ok><td>channel 1</td>" in table


def test_the_gap_bound_is_a_retrain_default_that_the_ini_key_may_set():
    from convviz_check import pattern_response, tolerances

    retrain = tolerances.default_tolerance("pattern", profile="retrain")
    assert retrain.pattern_response_gap_max == pattern_response.DEFAULT_MAX_GAP
    tol = tolerances.parse_fields(
        "pattern_response_gap_max=0.5", "convviz_tolerance_pattern", kind="pattern"
    )
    assert tol.pattern_response_gap_max == 0.5
    with pytest.raises(ConvvizError, match="another kind"):
        tolerances.parse_fields(
            "pattern_response_gap_max=0.5", "convviz_tolerance_heatmap", kind="heatmap"
        )
