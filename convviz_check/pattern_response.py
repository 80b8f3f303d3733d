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

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import InputError, describe_array
from .types import MetricResult, Outcome

# A channel is kept when the golden pattern drives its match to at least this many
# times the match's mean activation on the check's images. A channel whose detector is
# gone responds at its ordinary level or not at all: measured 1.00 (a zeroed kernel
# channel behind batch normalization: a constant channel) and 0.00 (zeroed, ReLU after).
# Measured on the shortcut example's conv1_relu (12 channels, 30 ascent steps) between
# honest and its retrain (another seed): the lowest matched ratio 4.21 (32 biased scenes,
# pattern seed 0) and 2.47 (64 scenes of another seed, pattern seed 1); 1.5 sits between.
# At conv2_relu the same retrain drives 4 of 24 matches to x1.06 or less: the judgment
# suits only layers where retrains converge (docs/reference.md has the numbers).
DEFAULT_MIN_RATIO = 1.5
# Every judged channel must be kept: one destroyed channel of a 24-channel layer is a
# share of 0.958, and a retrain's share on a layer where its channels converge is 1.0
# (conv1_relu above); any bound below 1 lets a lost channel through on a wide layer.
DEFAULT_MIN_SHARE = 1.0
# A channel's mean activation on the images below this fraction of the layer's largest
# mean counts as "silent": its ratio is measured against this floor instead (a ReLU
# channel that never fires on the images would otherwise divide by zero).
SILENT_FRACTION = 1e-3

__all__ = [
    "DEFAULT_MIN_RATIO",
    "DEFAULT_MIN_SHARE",
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
    channels: Sequence[int] | None = None,
    matches: Sequence[int] | None = None,
    layer: str = "",
    min_ratio: float = DEFAULT_MIN_RATIO,
    min_share: float = DEFAULT_MIN_SHARE,
) -> Outcome:
    """Judge whether the golden model's filter patterns still excite the new model.

    A channel is judged when its golden pattern excites it in the golden model
    (golden ratio >= ``min_ratio``; a pattern that does not, after too few ascent
    steps, carries nothing to lose); it is kept when the new ratio is >= ``min_ratio``.

    Args:
        golden_response: ``(F,)`` the golden model's :func:`response_ratio` of each
            channel to its own pattern.
        new_response: ``(F,)`` the new model's ratio of the matched channel to the
            same golden pattern.
        matched_corr: ``(F,)`` the correlation of each golden channel with its match.
        channels: the golden channels (default ``0..F-1``), for the text.
        matches: the new channel matched to each (default: equal to ``channels``).
        layer: the layer's name, for the text.
        min_ratio: the ratio a channel must keep (default :data:`DEFAULT_MIN_RATIO`,
            1.5).
        min_share: the judgment passes when the share of judged channels kept is >=
            this (default :data:`DEFAULT_MIN_SHARE`, 1.0: every one).

    Returns:
        An :class:`~convviz_check.types.Outcome` (judgment ``"pattern_response"``):
        metric ``kept_share`` against ``min_share``, ``worst_ratio`` reported; one item
        per channel (its match, correlation, both ratios, judged, kept); the lead names
        the judged channel that lost most. Failed when no channel could be judged.

    Raises:
        InputError: arrays of different lengths, NaN, or bounds out of range.

    Example:
        >>> out = judge_pattern_response([6.3, 4.0], [1.1, 3.9], [0.82, 0.9])
        >>> out.status, out.lead.split(":")[0]
        ('failed', 'golden pattern of channel 0 no longer excites its match (channel 0, correlation 0.82)')
    """
    gold = _vector(golden_response, "golden_response")
    new = _vector(new_response, "new_response", len(gold))
    corr = _vector(matched_corr, "matched_corr", len(gold))
    chans = [int(c) for c in (range(len(gold)) if channels is None else channels)]
    found = chans if matches is None else [int(m) for m in matches]
    if len(chans) != len(gold) or len(found) != len(gold):
        raise InputError(
            f"channels and matches must name {len(gold)} channels. Received: "
            f"channels={chans}, matches={found}."
        )
    min_ratio = _bound(min_ratio, "min_ratio", 0.0, np.inf)
    min_share = _bound(min_share, "min_share", 0.0, 1.0)
    judged, kept = gold >= min_ratio, new >= min_ratio
    share = float(kept[judged].mean()) if judged.any() else 0.0
    metric = MetricResult.judge("kept_share", share, min_share, "min")
    lead, message = _texts(gold, new, corr, (chans, found), (judged, kept), layer, metric)
    items = {
        f"channel {c}": {
            "match": m,
            "correlation": round(float(r), 4),
            "golden_ratio": round(float(g), 4),
            "new_ratio": round(float(n), 4),
            "judged": bool(j),
            "ok": bool(k) or not bool(j),
        }
        for c, m, r, g, n, j, k in zip(chans, found, corr, gold, new, judged, kept, strict=True)
    }
    worst_new = float(new[judged].min()) if judged.any() else float("nan")
    return Outcome(
        judgment="pattern_response",
        status="passed" if metric.ok else "failed",
        lead=lead,
        message=message,
        metrics={
            "kept_share": metric,
            "worst_ratio": MetricResult.judge("worst_ratio", worst_new, None, "min"),
        },
        items=items,
        facts={"layer": layer, "min_ratio": min_ratio, "judged": int(judged.sum())},
    )


def _texts(
    gold: np.ndarray,
    new: np.ndarray,
    corr: np.ndarray,
    names: tuple[list[int], list[int]],
    flags: tuple[np.ndarray, np.ndarray],
    layer: str,
    metric: MetricResult,
) -> tuple[str, str]:
    """The lead (the judged channel that lost most, relative to its golden ratio) and
    the message (every channel not kept)."""
    (chans, found), (judged, kept) = names, flags
    where = f"layer {layer!r}: " if layer else ""
    if not judged.any():
        text = (
            f"{where}no golden pattern excites its own channel in the golden model: "
            "nothing to judge (more ascent steps, or another layer)"
        )
        return text, text
    loss = np.where(judged, new / np.maximum(gold, 1e-12), np.inf)
    worst = int(np.argmin(loss))
    what = (
        f"golden pattern of channel {chans[worst]} "
        f"{'still excites' if kept[worst] else 'no longer excites'} its match "
        f"(channel {found[worst]}, correlation {corr[worst]:.2f}): response "
        f"x{new[worst]:.1f} vs x{gold[worst]:.1f} in the golden model"
    )
    tally = f"{int(kept[judged].sum())} of {int(judged.sum())} channels kept"
    skipped = int((~judged).sum())
    if skipped:
        tally += f" ({skipped} not judged: too weak in the golden model)"
    if metric.ok:
        return f"{where}{tally}; weakest: {what}", ""
    lead = f"{where}{what}; {tally}"
    lost = [
        f"channel {c} -> {m} (x{n:.1f} vs x{g:.1f})"
        for c, m, n, g, j, k in zip(chans, found, new, gold, judged, kept, strict=True)
        if j and not k
    ]
    return lead, f"{lead}\nnot kept: " + ", ".join(lost)
