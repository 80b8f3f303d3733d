"""Filter patterns across retrains: does the golden pattern still excite its channel?

Under the ``"retrain"`` profile two models' channels do not correspond (a retrain
permutes and rescales them), so their patterns cannot be compared image to image. What
does survive a benign retrain is *what a channel detects*. This module judges that:

1. **Matching.** The channels of one layer of the golden and the new model are paired
   one to one by the Pearson correlation of their activations over the same images
   (:func:`match_channels`), as Li, Yosinski, Clune, Lipson and Hopcroft (2016,
   "Convergent Learning: Do different neural networks learn the same
   representations?") pair the units of two trainings.
2. **Response.** Golden channel ``k``'s pattern (the image that maximizes ``k`` in the
   golden model) is fed to the new model; its matched channel ``m(k)`` must respond
   to it far above its ordinary level (:func:`response_ratio`).
3. **Judgment.** A channel is *kept* when that ratio stays at or above a bound; the
   judgment fails when the share of kept channels falls below a bound
   (:func:`judge_pattern_response`).

NumPy and SciPy only: no Keras, no framework, no pytest. The Keras side
(computing patterns and activations) is :mod:`convviz_check.explain.pattern_response`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import InputError, describe_array
from .types import MetricResult, Outcome

# A channel is *judged* when its golden pattern drives it to at least this many times its
# mean activation on the check's images in the golden model (a pattern that does not,
# after too few ascent steps, has nothing to lose). 30 chapter steps reach x13-x180 on
# the shortcut example's conv1_relu / conv2_relu, and leave a few deep channels below.
DEFAULT_MIN_RATIO = 1.5
# A channel is *lost* when both (a) its golden pattern drives its match less than it
# drove the golden channel (response kept, new ratio / golden ratio, below
# DEFAULT_MIN_KEPT: the pattern no longer excites its match as it excited its channel)
# and (b) its match correlates far below the rest of the layer (the layer's median
# matched correlation minus the channel's: its *gap*, above DEFAULT_MAX_GAP). Why
# both: between two honest trainings of the shortcut example whole layers re-draw
# their channels (median matched correlation 0.32-0.48 at conv1_relu), a golden
# pattern may drive its match 50x less and a channel may match at 0.03, so no bound on
# either alone passes honest retrains and fails a destroyed channel. What a retrain
# does not do is keep every channel but one: a destroyed, re-drawn or repurposed
# channel of an otherwise unchanged layer sits at a gap near 1 (the others match 1.0).
# Measured (benchmarks/calibrate_pattern_response.py, tensorflow, 32 biased scenes,
# 30 chapter steps; 5 honest trainings of the recipe, seeds 11, 12, 21, 22, 23: 20
# ordered pairs): the largest pattern_gap of an honest pair 0.49 at conv1_relu and 0.59
# at conv2_relu (0.92 at conv3_relu, where 7 of 20 honest pairs exceed 0.65). Channels
# sabotaged one at a time in the golden model (every channel of conv1_relu, every
# second of conv2_relu) and caught at 0.65, conv1_relu / conv2_relu: zeroed 24/24 and
# 23/23, re-drawn at random 18/24 and 16/23, a copy of another channel 20/24 and 9/23,
# its own weights shuffled 19/24 and 20/23 (the misses: a re-drawn or copied channel
# the golden pattern still drives as much as it drove the original). 0.65 sits above
# every honest pair of the two first layers with a margin of 0.06. At conv3_relu the
# honest alarms are channels a retrain merged with another (the one-to-one match pairs
# the loser with a leftover): no bound, and no many-to-one match, separates those from
# a destroyed channel there (the numbers: docs/reference.md, pattern response).
DEFAULT_MIN_KEPT = 1.0
# The same number is the retrain profile's default bound (tolerances.RETRAIN), so
# convviz_tolerance_pattern / markers may set pattern_response_gap_max like any bound.
DEFAULT_MAX_GAP = 0.65
# A channel's mean activation on the images below this fraction of the layer's largest
# mean counts as "silent": its ratio is measured against this floor instead (a ReLU
# channel that never fires on the images would otherwise divide by zero).
SILENT_FRACTION = 1e-3
# The golden keeps the layer's activations on the check's images at this many
# positions at most (evenly spaced over images x rows x columns), not the whole maps:
# matching correlates channels position by position, and 4096 positions estimate a
# correlation to about +-0.016 (1/sqrt(4096)) at 16 KB per 4 channels (float32).
# Block-averaging the maps instead (8x8) blurs what a channel detects: two retrains'
# matched correlations then fall apart (gap 0.89 between honest retrains at conv2_relu
# against 0.55 on the full maps).
RECORD_POSITIONS = 4096
# The entries a filter-pattern golden may keep beside its patterns ("value"): its
# response record, written by a check given the images (convviz.check(images=...)).
# A golden without them (an older one, or a check without images) keeps its bytes and
# is "not judged" under the retrain profile.
RECORD_SAMPLES = "response_samples"  # (P, C) float32: the layer at RECORD_POSITIONS
RECORD_LEVEL = "response_level"  # (C,) float32: each channel's mean over the images
RECORD_SELF = "response_self"  # (F,) float32: each pattern's ratio on its own channel
RECORD_FILTERS = "response_filters"  # (F,) int64: the channel of each pattern
RECORD_ENTRIES = (RECORD_SAMPLES, RECORD_LEVEL, RECORD_SELF, RECORD_FILTERS)
RECORD_ATTRS = ("response_layer", "response_images", "response_map")

__all__ = [
    "DEFAULT_MAX_GAP",
    "DEFAULT_MIN_KEPT",
    "DEFAULT_MIN_RATIO",
    "RECORD_ENTRIES",
    "channel_correlations",
    "judge_pattern_response",
    "match_channels",
    "response_ratio",
]


def _as_acts(acts: Any, name: str) -> np.ndarray:
    arr = np.asarray(acts, dtype=np.float64)
    if arr.ndim != 4 or arr.shape[0] < 1 or arr.shape[-1] < 1:
        raise InputError(
            f"{name} must be activations (N, h, w, C) with N >= 1 and C >= 1. Received: "
            f"{describe_array(name, arr)}."
        )
    if not np.isfinite(arr).all():
        raise InputError(f"{name} has non-finite values. Received: {describe_array(name, arr)}.")
    return arr


def channel_correlations(golden_acts: Any, new_acts: Any) -> np.ndarray:
    """Pearson correlation of every golden channel with every new channel.

    Args:
        golden_acts: ``(N, h, w, C)`` the golden model's activations of one layer.
        new_acts: ``(N, h, w, C')`` the new model's, on the same images (same map size).

    Returns:
        ``(C, C')`` float64: entry ``[k, j]`` correlates golden channel ``k`` with new
        channel ``j`` over all ``N*h*w`` positions; 0 where a channel is constant (it
        carries nothing to match).

    Raises:
        InputError: not 4-D, non-finite, or the two differ in images or map size.
    """
    g = _as_acts(golden_acts, "golden_acts")
    n = _as_acts(new_acts, "new_acts")
    if g.shape[:3] != n.shape[:3]:
        raise InputError(
            "golden_acts and new_acts must come from the same images and map size. "
            f"Received: {g.shape} and {n.shape}. Expected equal (N, h, w)."
        )
    a = g.reshape(-1, g.shape[-1])
    b = n.reshape(-1, n.shape[-1])
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    # A constant channel has norm 0 (up to rounding): it correlates with nothing.
    sa = na > 1e-12 * max(float(na.max()), 1.0)
    sb = nb > 1e-12 * max(float(nb.max()), 1.0)
    corr = (a.T @ b) / np.outer(np.where(sa, na, 1.0), np.where(sb, nb, 1.0))
    corr[~sa, :] = 0.0
    corr[:, ~sb] = 0.0
    return np.asarray(np.clip(corr, -1.0, 1.0))


def match_channels(golden_acts: Any, new_acts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pair the channels of one layer of two models one to one.

    The pairing maximizes the total Pearson correlation (:func:`channel_correlations`)
    with the Hungarian method (``scipy.optimize.linear_sum_assignment``). One to one,
    not each golden channel's best match: two golden channels may both correlate most
    with one new channel, and a greedy pick would then judge one new channel twice and
    leave a channel unjudged; the assignment that is best overall is the one a retrain's
    permutation is recovered by (a permuted, rescaled copy of a layer is matched back
    exactly).

    Args:
        golden_acts: ``(N, h, w, C)`` the golden model's activations of one layer.
        new_acts: ``(N, h, w, C')`` the new model's on the same images, ``C' >= C``.

    Returns:
        ``(assignment, correlations)``: ``assignment[k]`` is the new channel matched to
        golden channel ``k`` (``(C,)`` int64), ``correlations[k]`` their correlation
        (``(C,)`` float64).

    Raises:
        InputError: bad activations, or fewer new channels than golden ones.

    Example:
        >>> golden = np.random.default_rng(0).normal(size=(2, 3, 3, 3))
        >>> assignment, corr = match_channels(golden, golden[..., ::-1] * 3.0)
        >>> assignment.tolist(), corr.round(6).tolist()
        ([2, 1, 0], [1.0, 1.0, 1.0])
    """
    corr = channel_correlations(golden_acts, new_acts)
    if corr.shape[1] < corr.shape[0]:
        raise InputError(
            "new_acts has fewer channels than golden_acts: not every golden channel can be "
            f"matched. Received: {corr.shape[0]} golden and {corr.shape[1]} new channels."
        )
    rows, cols = linear_sum_assignment(corr, maximize=True)
    assignment = np.empty(corr.shape[0], np.int64)
    assignment[rows] = cols
    return assignment, corr[np.arange(corr.shape[0]), assignment]


def response_ratio(
    pattern_acts: Any, image_acts: Any, channels: Sequence[int] | np.ndarray
) -> np.ndarray:
    """How strongly each pattern drives its channel, relative to the channel's usual level.

    ``ratio[f] = mean over the map of channel channels[f] on pattern f`` divided by
    ``mean of that channel over the images and positions``. The ratio is scale-free:
    a channel multiplied by any positive factor (a retrain rescales channels; batch
    normalization shifts their scale) gives the same ratio, so the golden and the new
    model's ratios are comparable although their activations are not. The ordinary
    images are the baseline, not a grey image: a ReLU channel is often silent on grey,
    and the images are the data the check is about. A channel silent on the images
    (mean below :data:`SILENT_FRACTION` of the layer's largest channel mean) is measured
    against that floor.

    Args:
        pattern_acts: ``(F, h, w, C)`` one model's activations of the layer on the F
            patterns.
        image_acts: ``(N, h', w', C)`` the same model's activations on the images.
        channels: the channel each pattern is judged on (F indices).

    Returns:
        ``(F,)`` float64 ratios (1: the pattern drives the channel no more than an
        ordinary image; 0 or less: not at all).

    Raises:
        InputError: bad activations, a channel count mismatch, or a channel out of range.
    """
    p = _as_acts(pattern_acts, "pattern_acts")
    a = _as_acts(image_acts, "image_acts")
    idx = np.asarray(channels, dtype=np.int64).reshape(-1)
    if p.shape[-1] != a.shape[-1] or len(idx) != p.shape[0]:
        raise InputError(
            "pattern_acts, image_acts and channels must agree. Received: "
            f"{p.shape}, {a.shape} and {len(idx)} channels. Expected one channel per "
            "pattern and the same channel count."
        )
    if ((idx < 0) | (idx >= a.shape[-1])).any():
        raise InputError(
            f"channels out of range. Received: {idx.tolist()}. Expected 0..{a.shape[-1] - 1}."
        )
    level = a.mean(axis=(0, 1, 2))
    floor = SILENT_FRACTION * max(float(np.abs(level).max()), 1e-12)
    drive = p[np.arange(len(idx)), :, :, idx].mean(axis=(1, 2))
    return np.asarray(drive / np.maximum(level[idx], floor))


def _vector(values: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if (n is not None and len(arr) != n) or len(arr) == 0 or np.isnan(arr).any():
        expected = f"{n} values" if n is not None else "at least one value"
        raise InputError(
            f"{name} must hold {expected}, no NaN. Received: {describe_array(name, arr)}."
        )
    return arr


def _bound(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise InputError(f"{name} must be a number. Received: {name}={value!r}.")
    if not low <= float(value) <= high:
        raise InputError(f"{name} must be in [{low}, {high}]. Received: {name}={value!r}.")
    return float(value)


def judge_pattern_response(
    golden_response: Any,
    new_response: Any,
    matched_corr: Any,
    *,
    layer_corr: Any = None,
    channels: Sequence[int] | None = None,
    matches: Sequence[int] | None = None,
    layer: str = "",
    min_ratio: float = DEFAULT_MIN_RATIO,
    min_kept: float = DEFAULT_MIN_KEPT,
    max_gap: float = DEFAULT_MAX_GAP,
) -> Outcome:
    """Judge whether the golden model's filter patterns still excite the new model.

    Per golden channel ``k``: it is *judged* when its golden pattern excites it in the
    golden model (golden ratio >= ``min_ratio``); it is *lost* when its pattern drives
    its match less than it drove ``k`` (new ratio / golden ratio < ``min_kept``) **and**
    its match correlates far below the rest of the layer (the layer's median matched
    correlation minus its own, the *gap*, > ``max_gap``). See the module's constants
    for why both.

    Args:
        golden_response: ``(F,)`` the golden model's :func:`response_ratio` of each
            channel to its own pattern.
        new_response: ``(F,)`` the new model's ratio of the matched channel to the
            same golden pattern.
        matched_corr: ``(F,)`` the correlation of each golden channel with its match.
        layer_corr: the matched correlation of every channel of the layer (its median
            is the layer's level); default ``matched_corr``.
        channels: the golden channels (default ``0..F-1``), for the text.
        matches: the new channel matched to each (default: equal to ``channels``).
        layer: the layer's name, for the text.
        min_ratio: the golden ratio a channel needs to be judged (default 1.5).
        min_kept: a pattern keeps its channel while new / golden ratio >= this
            (default :data:`DEFAULT_MIN_KEPT`).
        max_gap: the largest gap a channel whose pattern lost its response may have
            (default :data:`DEFAULT_MAX_GAP`).

    Returns:
        An :class:`~convviz_check.types.Outcome` (judgment ``"pattern_response"``):
        metric ``pattern_gap`` (the largest gap among judged channels whose response
        fell below ``min_kept``; 0 when none) against ``max_gap``; ``lost_channels``
        and ``kept_share`` reported; one item per channel (its match, correlation,
        gap, both ratios, response kept, judged, ok); the lead names the worst channel.
        Failed when no channel could be judged.

    Raises:
        InputError: arrays of different lengths, NaN, or bounds out of range.

    Example:
        >>> out = judge_pattern_response([6.3, 4.0, 5.0], [0.1, 3.9, 9.0], [0.05, 0.97, 0.99])
        >>> out.status, out.lead.split(":")[0]
        ('failed', 'lost a detector')
    """
    gold = _vector(golden_response, "golden_response")
    new = _vector(new_response, "new_response", len(gold))
    corr = _vector(matched_corr, "matched_corr", len(gold))
    level = float(np.median(corr if layer_corr is None else _vector(layer_corr, "layer_corr")))
    chans = [int(c) for c in (range(len(gold)) if channels is None else channels)]
    found = chans if matches is None else [int(m) for m in matches]
    if len(chans) != len(gold) or len(found) != len(gold):
        raise InputError(
            f"channels and matches must name {len(gold)} channels. Received: "
            f"channels={chans}, matches={found}."
        )
    min_ratio = _bound(min_ratio, "min_ratio", 0.0, np.inf)
    min_kept = _bound(min_kept, "min_kept", 0.0, np.inf)
    max_gap = _bound(max_gap, "max_gap", 0.0, 2.0)
    judged = gold >= min_ratio
    kept_resp = new / np.maximum(gold, 1e-12)
    gap = level - corr
    weak = judged & (kept_resp < min_kept)
    lost = weak & (gap > max_gap)
    worst_gap = float(gap[weak].max()) if weak.any() else 0.0
    metric = MetricResult.judge("pattern_gap", max(worst_gap, 0.0), max_gap, "max")
    if not judged.any():
        metric = MetricResult("pattern_gap", float("nan"), max_gap, False, "max", "nothing judged")
    share = float((~lost[judged]).mean()) if judged.any() else 0.0
    flags = (judged, weak, lost, kept_resp, gap)
    lead, message = _texts(gold, new, corr, (chans, found), flags, layer, level, metric.ok)
    items = {
        f"channel {c}": {
            "match": m,
            "correlation": round(float(r), 4),
            "gap": round(float(d), 4),
            "golden_ratio": round(float(g), 4),
            "new_ratio": round(float(n), 4),
            "response_kept": round(float(q), 4),
            "judged": bool(j),
            "ok": not bool(x),
        }
        for c, m, r, d, g, n, q, j, x in zip(
            chans, found, corr, gap, gold, new, kept_resp, judged, lost, strict=True
        )
    }
    return Outcome(
        judgment="pattern_response",
        status="passed" if metric.ok else "failed",
        lead=lead,
        message=message,
        metrics={
            "pattern_gap": metric,
            "lost_channels": MetricResult.judge("lost_channels", int(lost.sum()), None, "max"),
            "kept_share": MetricResult.judge("kept_share", share, None, "min"),
        },
        items=items,
        facts={
            "layer": layer,
            "min_ratio": min_ratio,
            "min_kept": min_kept,
            "layer_median_correlation": round(level, 4),
            "judged": int(judged.sum()),
        },
    )


def _texts(
    gold: np.ndarray,
    new: np.ndarray,
    corr: np.ndarray,
    names: tuple[list[int], list[int]],
    flags: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    layer: str,
    level: float,
    ok: bool,
) -> tuple[str, str]:
    """The lead (the judged channel closest to lost: weakest response among the
    largest gaps) and the message (every channel lost)."""
    (chans, found), (judged, weak, lost, kept_resp, gap) = names, flags
    where = f"layer {layer!r}: " if layer else ""
    if not judged.any():
        text = (
            f"{where}no golden pattern excites its own channel in the golden model: "
            "nothing to judge (more ascent steps, or another layer)"
        )
        return text, text
    # The channel nearest to lost: a lost one, else a weakened response, then the gap.
    score = gap + np.where(lost, 10.0, 0.0) + np.where(weak, 5.0, 0.0)
    worst = int(np.argmax(np.where(judged, score, -np.inf)))

    def what(i: int) -> str:
        return (
            f"golden pattern of channel {chans[i]} drives its match (channel {found[i]}) "
            f"{kept_resp[i]:.2f} of what it drove in the golden model (x{new[i]:.1f} vs "
            f"x{gold[i]:.1f}); the match correlates {corr[i]:.2f}, the layer's median "
            f"{level:.2f}"
        )

    tally = f"{int((~lost[judged]).sum())} of {int(judged.sum())} channels kept"
    skipped = int((~judged).sum())
    if skipped:
        tally += f" ({skipped} not judged: too weak in the golden model)"
    if ok:
        return f"{where}{tally}; closest to lost: {what(worst)}", ""
    lead = f"lost a detector: {where}{what(worst)}; {tally}"
    gone = [
        f"channel {c} -> {m} (response kept {q:.2f}, correlation {r:.2f})"
        for c, m, q, r, x in zip(chans, found, kept_resp, corr, lost, strict=True)
        if x
    ]
    return lead, f"{lead}\nlost: " + ", ".join(gone)


# --------------------------------------------------------------------------- the record
def sample_positions(acts: Any, limit: int = RECORD_POSITIONS) -> np.ndarray:
    """The layer's activations at ``limit`` positions at most, evenly spaced over
    images x rows x columns (every position when there are fewer): ``(P, C)``.

    No random draw: both sides of a comparison take the same positions from maps of the
    same shape, on any NumPy.

    Example:
        >>> sample_positions(np.arange(24.0).reshape(1, 3, 4, 2), limit=3).tolist()
        [[0.0, 1.0], [12.0, 13.0], [22.0, 23.0]]
    """
    arr = _as_acts(acts, "acts")
    flat = arr.reshape(-1, arr.shape[-1])
    idx = np.linspace(0, len(flat) - 1, min(int(limit), len(flat))).round().astype(np.int64)
    return np.ascontiguousarray(flat[idx])


def response_record(image_acts: Any, pattern_acts: Any, filters: Sequence[int]) -> dict:
    """The arrays a pattern golden keeps to be judged across retrains.

    Args:
        image_acts: ``(N, h, w, C)`` the layer on the check's images.
        pattern_acts: ``(F, h', w', C)`` the layer on the model's own patterns.
        filters: the channel of each pattern.

    Returns:
        ``{RECORD_SAMPLES: (P, C) float32, RECORD_LEVEL: (C,) float32, RECORD_SELF:
        (F,) float32, RECORD_FILTERS: (F,) int64}`` (see :data:`RECORD_ENTRIES`).
    """
    acts = _as_acts(image_acts, "image_acts")
    chans = np.asarray(filters, dtype=np.int64).reshape(-1)
    return {
        RECORD_SAMPLES: sample_positions(acts).astype(np.float32),
        RECORD_LEVEL: acts.mean(axis=(0, 1, 2)).astype(np.float32),
        RECORD_SELF: response_ratio(pattern_acts, acts, chans).astype(np.float32),
        RECORD_FILTERS: chans,
    }


def _ratio_on_level(pattern_acts: Any, level: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """:func:`response_ratio` with the channels' mean level given (as a record keeps it)."""
    p = _as_acts(pattern_acts, "pattern_acts")
    floor = SILENT_FRACTION * max(float(np.abs(level).max()), 1e-12)
    drive = p[np.arange(len(channels)), :, :, channels].mean(axis=(1, 2))
    return np.asarray(drive / np.maximum(level[channels], floor))


def judge_records(
    golden: Mapping[str, Any],
    new: Mapping[str, Any],
    new_on_golden_patterns: Any,
    *,
    layer: str = "",
    min_ratio: float = DEFAULT_MIN_RATIO,
    min_kept: float = DEFAULT_MIN_KEPT,
    max_gap: float = DEFAULT_MAX_GAP,
) -> Outcome:
    """Judge a new model's record against the golden's (:func:`response_record`).

    Args:
        golden: the golden model's record (on the check's images).
        new: the new model's record on the same images.
        new_on_golden_patterns: ``(F, h, w, C)`` the new model's layer on the golden's
            patterns.
        layer, min_ratio, min_kept, max_gap: see :func:`judge_pattern_response`.

    Returns:
        The :func:`judge_pattern_response` Outcome: channels matched on the samples
        (Hungarian), each golden pattern's ratio on its match.

    Raises:
        InputError: records of different positions or a record without its entries.
    """
    for name, record in (("golden", golden), ("new", new)):
        missing = [k for k in (RECORD_SAMPLES, RECORD_LEVEL) if k not in record]
        if missing or (name == "golden" and RECORD_SELF not in record):
            raise InputError(
                f"The {name} response record lacks entries. Received keys: {sorted(record)}. "
                f"Expected {list(RECORD_ENTRIES)}."
            )
    g = np.asarray(golden[RECORD_SAMPLES], np.float64)
    n = np.asarray(new[RECORD_SAMPLES], np.float64)
    assignment, corr = match_channels(g[:, None, None, :], n[:, None, None, :])
    chans = np.asarray(golden[RECORD_FILTERS], np.int64).reshape(-1)
    level = np.asarray(new[RECORD_LEVEL], np.float64)
    new_ratio = _ratio_on_level(new_on_golden_patterns, level, assignment[chans])
    return judge_pattern_response(
        golden[RECORD_SELF],
        new_ratio,
        corr[chans],
        layer_corr=corr,
        channels=chans.tolist(),
        matches=assignment[chans].tolist(),
        layer=layer,
        min_ratio=min_ratio,
        min_kept=min_kept,
        max_gap=max_gap,
    )
