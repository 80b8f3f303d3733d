"""The retrain evidence: region masses, the per-image count of a consistent shift, class
changes on confident images, and the two verdicts a failing retrain comparison leads
with ("predicts differently", "looks elsewhere").

Small arrays against hand-computed values; synthetic 8x8 Grad-CAM-like maps over 64x64
images (a blob on each object box) for the comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convviz_check import evidence as ev
from convviz_check.errors import ComparisonError, LocalizationError
from convviz_check.localization import energy_in_box
from convviz_check.metrics import compare
from convviz_check.tolerances import RETRAIN, default_tolerance
from convviz_check.types import Box, GradCAM, Tolerance

N = 12
CLASSES = np.repeat([0, 1, 2], 4)
BOXES = [
    Box(18 + 2 * (i % 3), 20 + 2 * (i % 4), 42 + 2 * (i % 3), 44 - 2 * (i % 4)) for i in range(N)
]
TOL = default_tolerance("heatmap", profile="retrain")
BOUND = RETRAIN["heatmap"]["heatmap_region_shift_share_max"]
GROWTH = RETRAIN["heatmap"]["heatmap_region_growth"]


def _cam(maps: np.ndarray, classes=CLASSES) -> GradCAM:
    n = len(maps)
    return GradCAM(
        heatmap=np.asarray(maps, np.float32),
        raw=np.asarray(maps, np.float32),
        class_index=np.asarray(classes, np.int64),
        score=np.ones(n, np.float32),
        score_kind="logit",
        layer="conv",
        degenerate=np.zeros(n, bool),
        image_shape=(64, 64),
    )


def _golden() -> np.ndarray:
    yy, xx = np.mgrid[0:8, 0:8] + 0.5
    out = []
    for b in BOXES:
        cy, cx = (b.y0 + b.y1) / 16, (b.x0 + b.x1) / 16
        m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.9)
        out.append(m / m.max())
    return np.array(out)


def _corner_bump(maps: np.ndarray, rows: np.ndarray, value: float) -> np.ndarray:
    """The bottom-right 2x2 cells (the 16-px corner of a 64-px image) raised by
    ``value`` in the images ``rows``: part of the mass moves there, the blob stays."""
    out = maps.copy()
    out[rows, 6:, 6:] += value
    return out / out.max(axis=(1, 2), keepdims=True)


# ------------------------------------------------------------------ regions
def test_builtin_regions_are_the_border_ring_and_four_corner_squares():
    regions = {r.name: r for r in ev.regions_for((64, 64))}
    assert list(regions) == list(ev.BUILTIN_REGIONS)
    # border: everything outside the inner box 8 px (1/8 of 64) from each edge
    assert regions["border"].box.to_tuple() == (8, 8, 56, 56) and regions["border"].complement
    assert regions["top_left"].box.to_tuple() == (0, 0, 16, 16)
    assert regions["top_right"].box.to_tuple() == (0, 48, 16, 64)
    assert regions["bottom_left"].box.to_tuple() == (48, 0, 64, 16)
    assert regions["bottom_right"].box.to_tuple() == (48, 48, 64, 64)
    # a non-square image: each side its own fraction
    wide = {r.name: r.box for r in ev.regions_for((32, 64))}
    assert wide["border"].to_tuple() == (4, 8, 28, 56)
    assert wide["bottom_right"].to_tuple() == (24, 48, 32, 64)


def test_boxes_add_box_and_outside_and_user_regions_come_last():
    regions = ev.regions_for((64, 64), boxes=True, user={"logo": Box(0, 40, 8, 64)})
    names = [r.name for r in regions]
    assert names == [*ev.BUILTIN_REGIONS, "box", "outside", "logo"]
    assert regions[-3].box is None and regions[-2].box is None and regions[-2].complement
    assert regions[-1].box == Box(0, 40, 8, 64)
    assert ev.regions_for((64, 64), user={"t": (1, 2, 3, 4)})[-1].box == Box(1, 2, 3, 4)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"border": Box(0, 0, 4, 4)}, "names other than the built-in ones"),
        ({"": Box(0, 0, 4, 4)}, "Received: ''"),
        ({"logo": Box(0, 60, 8, 70)}, "regions['logo'] lies outside the 64x64 image"),
        ({"logo": "corner"}, "regions['logo'] must be a Box"),
        ({"logo": (5, 5, 5, 9)}, "must be a Box"),
    ],
)
def test_a_bad_user_region_is_refused_saying_what_was_received(user, expected):
    with pytest.raises(LocalizationError) as info:
        ev.regions_for((64, 64), user=user)
    assert expected in str(info.value)
    with pytest.raises(LocalizationError, match="regions"):  # and through compare
        g = _cam(_golden())
        compare(g, g, "heatmap", profile="retrain", boxes=BOXES, regions=user)


def test_region_masses_by_hand():
    m = np.zeros((1, 4, 4))
    m[0, 0, 0], m[0, 3, 3] = 1.0, 3.0  # total 4: one corner 1/4, the other 3/4
    regions = ev.regions_for((4, 4), boxes=True)
    got = ev.region_masses(m, np.zeros(1, bool), (4, 4), regions, np.array([[1, 1, 4, 4]]))
    by_name = dict(zip([r.name for r in regions], got[0].tolist(), strict=True))
    assert by_name == {
        "border": 1.0,  # nothing in the inner 2x2
        "top_left": 0.25,
        "top_right": 0.0,
        "bottom_left": 0.0,
        "bottom_right": 0.75,
        "box": 0.75,
        "outside": 0.25,
    }
    # a degenerate map is not measured; a map without positive mass has none anywhere
    flat = ev.region_masses(np.zeros((2, 4, 4)), np.array([True, False]), (4, 4), regions[:2])
    assert np.isnan(flat[0]).all() and flat[1].tolist() == [0.0, 0.0]


def test_a_7x7_map_and_a_64px_box_agree_with_energy_in_box():
    rng = np.random.default_rng(3)
    m = rng.random((7, 7))
    box = Box(10, 20, 45, 60)
    regions = ev.regions_for((64, 64), boxes=True)
    got = ev.region_masses(
        m[None], np.zeros(1, bool), (64, 64), regions, np.array([box.to_tuple()])
    )
    names = [r.name for r in regions]
    assert got[0, names.index("box")] == pytest.approx(energy_in_box(m, box, (64, 64)), abs=1e-12)
    assert got[0, names.index("outside")] == pytest.approx(1 - got[0, names.index("box")])
    corner = Box(48, 48, 64, 64)
    assert got[0, names.index("bottom_right")] == pytest.approx(energy_in_box(m, corner, (64, 64)))
    inner = Box(8, 8, 56, 56)
    assert got[0, names.index("border")] == pytest.approx(1 - energy_in_box(m, inner, (64, 64)))


def test_growth_counts_from_the_corner_threshold_scaled_by_the_square_root_of_the_area():
    areas = ev.region_areas(1, (64, 64), ev.regions_for((64, 64)))[0]
    assert areas.tolist() == [1 - 0.75**2, 1 / 16, 1 / 16, 1 / 16, 1 / 16]
    limits = ev.growth_thresholds(0.05, areas)
    assert limits[1:].tolist() == [0.05] * 4  # corners: the growth itself
    assert limits[0] == pytest.approx(0.05 * np.sqrt(7))  # border: 7/16 of the image


# ------------------------------------------------------------------ the count rule
def test_region_shifts_count_images_per_region_and_group_by_hand():
    e = np.array([[0.1, 0.5]] * 6)
    o = e + np.array([[0.06, 0.0]] * 3 + [[0.0, 0.06]] + [[0.04, 0.0]] * 2)
    groups = {"all": np.arange(6), "class 0": np.arange(3), "class 1": np.arange(3, 6)}
    rows = ev.region_shifts(e, o, ["top_left", "box"], groups, 0.05)
    assert [r["region"] for r in rows] == ["top_left"] * 3  # "box" growth is not judged
    worst = rows[0]
    assert (worst["group"], worst["k"], worst["n"], worst["share"]) == ("class 0", 3, 3, 1.0)
    assert worst["mean"] == pytest.approx([0.1, 0.16])
    everyone = next(r for r in rows if r["group"] == "all")
    assert (everyone["k"], everyone["n"]) == (3, 6)  # 0.04 does not count, > 0.05 does
    # a group with fewer than MIN_GROUP measured images is not judged; NaN rows are out
    e[0] = np.nan
    rows = ev.region_shifts(e, o, ["top_left", "box"], groups, 0.05)
    assert {r["group"] for r in rows} == {"all", "class 1"}
    assert next(r for r in rows if r["group"] == "all")["n"] == 5


def test_groups_are_all_images_and_each_class_with_at_least_three():
    groups = ev.groups_of(np.array([0, 0, 0, 1, 1, 2, 2, 2, 2]), 9)
    assert list(groups) == ["all", "class 0", "class 2"]
    assert groups["class 2"].tolist() == [5, 6, 7, 8]
    assert list(ev.groups_of(None, 9)) == ["all"]
    assert list(ev.groups_of(np.zeros(5, np.int64), 5)) == ["all"]  # one class: all


@settings(max_examples=40, deadline=None)
@given(
    n_class=st.integers(min_value=3, max_value=8),
    others_per_class_image=st.integers(min_value=3, max_value=6),
    shift=st.floats(min_value=0.06, max_value=0.18),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_a_consistent_shift_on_one_class_fails_scattered_noise_of_the_same_mean_passes(
    n_class, others_per_class_image, shift, seed
):
    rng = np.random.default_rng(seed)
    n_other = others_per_class_image * n_class
    n = n_class + n_other
    classes = np.array([1] * n_class + list(rng.integers(2, 5, n_other)))
    e = rng.uniform(0.0, 0.05, (n, 1))
    groups = ev.groups_of(classes, n)
    # a small shift in every image of class 1
    consistent = e.copy()
    consistent[classes == 1] += shift
    rows = ev.region_shifts(e, consistent, ["bottom_right"], groups, GROWTH)
    assert rows[0]["share"] == 1.0 > BOUND and rows[0]["group"] == "class 1"
    # the same added mass scattered over every image as noise around the same mean
    mean = shift * n_class / n
    assert mean < GROWTH  # a shift of at most 0.18 on at most a quarter of the images
    width = min(mean, GROWTH - mean)
    scattered = e + rng.uniform(mean - width, mean + width, (n, 1))
    assert float((scattered - e).mean()) == pytest.approx(mean, abs=width)
    rows = ev.region_shifts(e, scattered, ["bottom_right"], groups, GROWTH)
    assert rows[0]["k"] == 0 and rows[0]["share"] <= BOUND
    # or all of it in one image of each of two classes: no group past the bound
    few = e.copy()
    picks = [int(np.flatnonzero(classes == c)[0]) for c in sorted(set(classes.tolist()))][:2]
    few[picks] += shift * n_class / len(picks)
    rows = ev.region_shifts(e, np.minimum(few, 1.0), ["bottom_right"], groups, GROWTH)
    assert rows[0]["share"] <= BOUND


# ------------------------------------------------------------------ classes
def test_class_flips_count_confident_images_and_where_the_changes_went():
    expected = np.array([0, 1, 2, 3, 0, 1])
    obtained = np.array([5, 5, 2, 5, 1, 1])
    flips = ev.class_flips(expected, obtained)
    assert (flips["n"], flips["changed"], flips["towards"]) == (6, 4, [[5, 3], [1, 1]])
    assert flips["confident"] is None and flips["classes"] == 5
    sure = ev.class_flips(expected, obtained, np.array([0.9, 0.9, 0.9, 0.4, 0.3, 0.8]))
    assert (sure["n"], sure["changed"], sure["towards"]) == (4, 2, [[5, 2]])
    assert sure["confident"] == ev.CONFIDENT_PROBABILITY


@dataclass(frozen=True)
class _WithProbability:
    """Heatmaps with the golden's probability of its class (what retrain_evidence reads
    through getattr)."""

    maps: np.ndarray
    degenerate: np.ndarray
    class_index: np.ndarray
    probability: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.maps)


def test_class_agreement_counts_only_images_the_golden_was_sure_of():
    maps = _golden()
    obtained_classes = CLASSES.copy()
    obtained_classes[[0, 4]] = 2  # two changes, both where the golden hesitated
    probability = np.full(N, 0.9)
    probability[[0, 4]] = 0.4
    golden = _WithProbability(maps, np.zeros(N, bool), CLASSES, probability)
    now = _WithProbability(maps, np.zeros(N, bool), obtained_classes)
    metrics, details = ev.retrain_evidence(golden, now, TOL, (64, 64))
    assert metrics["class_agreement"].value == 1.0 and metrics["class_agreement"].ok
    assert "10 of 10 confident images (golden probability >= 0.5; 12 in all)" in (
        metrics["class_agreement"].note
    )
    unknown = _WithProbability(maps, np.zeros(N, bool), CLASSES)
    metrics, _ = ev.retrain_evidence(unknown, now, TOL, (64, 64))
    assert metrics["class_agreement"].value == pytest.approx(10 / 12)  # every image counts
    assert not metrics["class_agreement"].ok
    assert details["class_flips"]["towards"] == []


# class_flip_share is reported only by default; these tests judge it as a user may
JUDGE_FLIPS = {"heatmap_class_flip_share_max": 0.75}


def test_a_class_change_towards_one_class_fails_predicts_differently_naming_it():
    golden = _cam(_golden(), np.array([0, 1, 2, 3] * 3))
    obtained_classes = np.array([0, 1, 2, 3] * 3)
    obtained_classes[[0, 1, 6]] = 3  # three changes, all to class 3
    by_default = compare(golden, _cam(_golden(), obtained_classes), "heatmap",
                         profile="retrain", boxes=BOXES)  # fmt: skip
    # called out in the lead, judged only on request (an honest retrain may move its
    # class prior: its changes then go one way too)
    flip = by_default.metrics["class_flip_share"]
    assert flip.value == 1.0 and flip.ok and flip.bound is None
    assert flip.note == "3 of 3 changed images now explain class 3; reported, not judged"
    assert by_default.text.splitlines()[0] == (
        "predicts differently: 3 of 12 images changed class, all 3 to class 3"
    )
    assert by_default.details["verdicts"]["predicts differently"]["metrics"] == ["class_agreement"]
    result = compare(golden, _cam(_golden(), obtained_classes), "heatmap", profile="retrain",
                     boxes=BOXES, tolerance=JUDGE_FLIPS)  # fmt: skip
    assert not result.passed
    assert result.metrics["class_flip_share"].value == 1.0
    assert not result.metrics["class_flip_share"].ok
    assert result.metrics["class_flip_share"].note == "3 of 3 changed images now explain class 3"
    lines = result.text.splitlines()
    assert lines[0] == "predicts differently: 3 of 12 images changed class, all 3 to class 3"
    assert not any(line.startswith("looks elsewhere") for line in lines)
    verdicts = result.details["verdicts"]
    assert verdicts["predicts differently"] == {
        "failed": True,
        "metrics": ["class_agreement", "class_flip_share"],
    }
    assert verdicts["looks elsewhere"]["failed"] is False


def test_scattered_class_changes_or_too_few_are_not_a_direction():
    base = np.array([0, 1, 2, 3] * 3)
    scattered = base.copy()
    scattered[[0, 1, 2, 3]] = [1, 2, 3, 0]  # four changes to four classes
    result = compare(_cam(_golden(), base), _cam(_golden(), scattered), "heatmap",
                     profile="retrain", boxes=BOXES)  # fmt: skip
    assert (
        result.metrics["class_flip_share"].ok and result.metrics["class_flip_share"].value == 0.25
    )
    assert result.text.splitlines()[0].startswith(
        "predicts differently: 4 of 12 images changed class, 1 of them to class 0, the rest "
        "to 3 other classes"
    )
    two = base.copy()
    two[[0, 1]] = 3
    flip = compare(_cam(_golden(), base), _cam(_golden(), two), "heatmap", profile="retrain",
                   boxes=BOXES, tolerance=JUDGE_FLIPS).metrics["class_flip_share"]  # fmt: skip
    assert flip.value == 1.0 and flip.ok and flip.bound is None
    assert "not judged: fewer than 3 changed images" in flip.note
    binary = np.array([0, 1] * 6)
    flipped = 1 - binary
    flipped[6:] = binary[6:]  # six changes, each to the other class
    flip = compare(_cam(_golden(), binary), _cam(_golden(), flipped), "heatmap",
                   profile="retrain", boxes=BOXES,
                   tolerance=JUDGE_FLIPS).metrics["class_flip_share"]  # fmt: skip
    assert flip.ok and "two classes" in flip.note


# ------------------------------------------------------------------ compare
def test_a_partial_corner_shift_on_one_class_fails_looks_elsewhere_only():
    golden = _golden()
    shifted = _corner_bump(golden, CLASSES == 2, 0.3)
    result = compare(_cam(golden), _cam(shifted), "heatmap", profile="retrain", boxes=BOXES)
    failed = {k for k, m in result.metrics.items() if not m.ok}
    # every metric of before misses it: the box keeps most of its mass, the peak stays
    assert failed == {"region_shift"}, result.text
    row = next(r for r in result.details["by_class"] if r["class"] == 2)
    before, after = row["mass"]["bottom_right"]
    assert 0.06 < after - before < 0.15  # a partial shift, measured
    assert row["grown"]["bottom_right"] == row["n"] == 4
    lines = result.text.splitlines()
    assert lines[0] == (
        "looks elsewhere: the bottom_right corner's mass grew by more than 0.05 in 4 of 4 "
        f"images of class 2 (mean {before:.2f} -> {after:.2f})"
    )
    assert lines[1].startswith("  bottom_right mass per class, golden -> now: all ")
    assert "class 2 " in lines[1] and "4 of 4 grew" in lines[1]
    assert result.details["verdicts"]["looks elsewhere"]["metrics"] == ["region_shift"]
    # the same corner bump in one image of each class is scattered: it passes
    one_each = np.zeros(N, bool)
    one_each[[0, 4, 8]] = True
    scattered = compare(_cam(golden), _cam(_corner_bump(golden, one_each, 0.3)), "heatmap",
                        profile="retrain", boxes=BOXES)  # fmt: skip
    assert scattered.passed, scattered.text


def test_a_user_region_is_watched_and_named():
    golden = _golden()
    shifted = _corner_bump(golden, CLASSES == 2, 0.3)
    result = compare(_cam(golden), _cam(shifted), "heatmap", profile="retrain", boxes=BOXES,
                     regions={"stamp": Box(48, 48, 64, 64)})  # fmt: skip
    assert "stamp" in result.details["regions"]
    assert result.details["regions"]["stamp"] == {"box": [48, 48, 64, 64], "outside": False}
    assert result.details["by_class"][-1]["grown"]["stamp"] == 4


def test_a_growth_override_and_its_validation():
    golden = _golden()
    shifted = _corner_bump(golden, CLASSES == 2, 0.3)
    loose = compare(_cam(golden), _cam(shifted), "heatmap", profile="retrain", boxes=BOXES,
                    tolerance=Tolerance(heatmap_region_growth=0.2))  # fmt: skip
    assert loose.passed and loose.details["region_growth"] == 0.2
    with pytest.raises(ComparisonError, match="heatmap_region_growth"):
        compare(_cam(golden), _cam(shifted), "heatmap", profile="retrain",
                tolerance={"heatmap_region_growth": -1.0})  # fmt: skip


def test_every_retrain_metric_has_one_verdict():
    from convviz_check.tolerances import PROFILE_SPECS

    names = {spec.name for spec in PROFILE_SPECS["retrain"]["heatmap"]}
    assert names <= set(ev.VERDICT_OF)
    assert set(ev.VERDICT_OF.values()) == set(ev.VERDICTS)
    passing = compare(_cam(_golden()), _cam(_golden()), "heatmap", profile="retrain", boxes=BOXES)
    assert passing.passed and not any(v["failed"] for v in passing.details["verdicts"].values())
    assert not passing.text.startswith(ev.VERDICTS)


def test_compare_reads_the_goldens_probability_and_judges_confident_images_only():
    from dataclasses import replace

    probability = np.full(N, 0.9, np.float32)
    probability[[0, 4]] = 0.4  # the golden hesitated on these two
    golden = replace(_cam(_golden()), probability=probability)
    unsure_changed = CLASSES.copy()
    unsure_changed[[0, 4]] = 2
    result = compare(golden, _cam(_golden(), unsure_changed), "heatmap", profile="retrain",
                     boxes=BOXES)  # fmt: skip
    assert result.passed, result.text
    assert result.metrics["class_agreement"].value == 1.0
    assert result.details["class_flips"]["n"] == 10
    sure_changed = unsure_changed.copy()
    sure_changed[[1, 5]] = 2  # and two it was sure of
    result = compare(golden, _cam(_golden(), sure_changed), "heatmap", profile="retrain",
                     boxes=BOXES)  # fmt: skip
    assert result.metrics["class_agreement"].value == pytest.approx(0.8)
    lines = result.text.splitlines()
    assert (
        lines[0] == "predicts differently: 2 of 10 confident images changed class, all 2 to class 2"
    )
    assert lines[1] == (
        "the explained class changed in 2/10 confident images (agreement 0.8; bound >= 0.9)"
    )
