"""Measures of one array or one pair of arrays: Pearson r, Spearman rank correlation,
SSIM, peak cell, top-k regions. Pure NumPy, SciPy and scikit-image;
:mod:`convviz_check.metrics` builds comparisons from them.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ComparisonError

# Relative resolution below which values are treated as equal when ranking cells
# (peak, top-k) and when deciding that a map is constant: 1e-6 of the map's largest
# |value|. Heatmaps are normalized to max 1, and float32 noise between thread counts or
# backends is ~1e-7 relative (measured), so cells tied in exact arithmetic stay
# tied instead of being ordered by rounding noise.
RANK_RESOLUTION = 1e-6

# SSIM's window: the largest odd size <= min(7, h, w) (7 is scikit-image's default);
# a 3x3 window is the smallest that measures structure at all.
SSIM_MAX_WINDOW = 7
SSIM_MIN_WINDOW = 3

# Share of cells in the "top region" whose overlap is measured (the top 10%).
TOPK_NUMERATOR, TOPK_DENOMINATOR = 1, 10


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped arrays, defined for constant ones.

    Two constant arrays give 1.0 (neither has any structure, so none differs; their
    levels are judged by the error metrics), a constant against a non-constant one
    gives 0.0. "Constant" means a spread below ``RANK_RESOLUTION`` of the array's
    largest |value| (float32 noise does not count as structure).

    Example:
        >>> pearson(np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 4.0]))
        1.0
    """
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    const_a, const_b = is_constant(a), is_constant(b)
    if const_a or const_b:
        return 1.0 if const_a and const_b else 0.0
    # Centred and rescaled to max 1 first so that squares cannot overflow.
    a = a - a.mean()
    b = b - b.mean()
    a /= np.max(np.abs(a))
    b /= np.max(np.abs(b))
    # dot / sqrt(aa * bb) (not dot / (|a| |b|)) makes an array against itself exactly 1.
    r = float(np.dot(a, b) / math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b))))
    return min(1.0, max(-1.0, r))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: :func:`pearson` of the two arrays' ranks.

    Values equal within ``RANK_RESOLUTION`` share their average rank (the zero cells
    of a ReLU'd heatmap are one tie, not an order made by rounding noise), so two maps
    agree when they order their cells alike, whatever their scales: what two
    independently trained models' heatmaps can be asked to share. Constant arrays
    follow :func:`pearson` (both constant 1.0, one constant 0.0).

    Example:
        >>> spearman(np.array([0.0, 1.0, 5.0]), np.array([0.0, 2.0, 3.0]))
        1.0
    """
    from scipy.stats import rankdata

    ra = rankdata(quantized(a).ravel(), method="average")
    rb = rankdata(quantized(b).ravel(), method="average")
    return pearson(ra, rb)


def ssim_window(h: int, w: int) -> int | None:
    """Largest odd SSIM window <= min(7, h, w), or None when the map is under 3x3.

    Example:
        >>> ssim_window(7, 7), ssim_window(6, 9), ssim_window(4, 4), ssim_window(2, 5)
        (7, 5, 3, None)
    """
    size = min(SSIM_MAX_WINDOW, h, w)
    if size % 2 == 0:
        size -= 1
    return size if size >= SSIM_MIN_WINDOW else None


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM (scikit-image) with the window of :func:`ssim_window`; ``(H, W)`` or
    ``(H, W, C)`` (channels averaged).

    Raises:
        ComparisonError: the images are smaller than 3x3.
    """
    value, note = ssim_or_note(np.asarray(a), np.asarray(b), data_range)
    if value is None:
        raise ComparisonError(note)
    return value


def ssim_or_note(a: np.ndarray, b: np.ndarray, data_range: float) -> tuple[float | None, str]:
    from skimage.metrics import structural_similarity

    h, w = a.shape[:2]
    win = ssim_window(h, w)
    if win is None:
        return None, (
            f"ssim skipped: {h}x{w} maps are smaller than SSIM's {SSIM_MIN_WINDOW}x"
            f"{SSIM_MIN_WINDOW} minimum window"
        )
    channel_axis = -1 if a.ndim == 3 else None
    value = structural_similarity(
        np.asarray(a, np.float64),
        np.asarray(b, np.float64),
        win_size=win,
        data_range=data_range,
        channel_axis=channel_axis,
    )
    return min(1.0, max(-1.0, float(value))), ""


def peak_cell(heatmap: np.ndarray) -> tuple[int, int]:
    """``(row, col)`` of the hottest cell; ties (within ``RANK_RESOLUTION``) go to the
    first cell in row-major order.

    Example:
        >>> peak_cell(np.array([[0.0, 1.0], [1.0, 0.5]]))
        (0, 1)
    """
    q = quantized(heatmap)
    row, col = np.unravel_index(int(np.argmax(q)), q.shape)
    return int(row), int(col)


def topk_count(cells: int) -> int:
    """k = ceil(10% of the cells), computed in integers (``0.1 * 30`` is 3.0000000000000004
    in floating point, whose ceiling would be 4).

    Example:
        >>> topk_count(30), topk_count(31), topk_count(49), topk_count(1)
        (3, 4, 5, 1)
    """
    return -(-cells * TOPK_NUMERATOR // TOPK_DENOMINATOR)


def topk_mask(heatmap: np.ndarray) -> np.ndarray:
    """Boolean mask of the map's hot region: its k = ceil(10% of cells) hottest cells.

    Values equal within ``RANK_RESOLUTION`` of the map's max are ties; ties are broken
    by row-major position (earlier first), so the choice is always the same. Cells at
    the map's minimum are background and never join the region (unless the whole map
    is constant): a ReLU'd heatmap whose positive part covers fewer than k cells would
    otherwise be padded with arbitrary zero cells, the same ones in both maps, and two
    disjoint hot spots would overlap.
    """
    q = quantized(heatmap).ravel()
    k = topk_count(q.size)
    order = np.argsort(-q, kind="stable")[:k]  # stable: equal values keep row-major order
    if q.max() > q.min():
        order = order[q[order] > q.min()]
    mask = np.zeros(q.size, dtype=bool)
    mask[order] = True
    return mask.reshape(np.shape(heatmap))


def topk_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the two maps' top-10% regions (see :func:`topk_mask`).

    Example:
        >>> a = np.arange(10.0).reshape(2, 5)
        >>> topk_iou(a, a), topk_iou(a, -a)
        (1.0, 0.0)
    """
    ma, mb = topk_mask(a), topk_mask(b)
    union = int(np.count_nonzero(ma | mb))
    return int(np.count_nonzero(ma & mb)) / union


def quantized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    scale = float(np.max(np.abs(x))) if x.size else 0.0
    if scale == 0.0:
        return np.zeros_like(x)
    return np.rint(x / (scale * RANK_RESOLUTION))


def is_constant(x: np.ndarray) -> bool:
    q = quantized(x)
    return bool(q.max() == q.min())


# --------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------
