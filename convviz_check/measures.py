"""Measures of one array or one pair of arrays: Pearson r, Spearman rank correlation,
SSIM, peak cell and where it lies, top-k regions; and the check of object boxes.
Pure NumPy, SciPy and scikit-image; :mod:`convviz_check.metrics` builds comparisons
from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ComparisonError, LocalizationError, describe_array
from .types import Box, GradCAM

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
    """Spearman rank correlation: :func:`pearson` of the two arrays' ranks; the one
    Spearman of the package (every judgment that ranks cells uses it).

    Tied values share their average rank, as in ``scipy.stats.spearmanr``, and values
    equal within ``RANK_RESOLUTION`` are ties (the zero cells of a ReLU'd heatmap are
    one tie, not an order made by rounding noise), so two maps agree when they order
    their cells alike, whatever their scales: what two independently trained models'
    heatmaps can be asked to share. Constant arrays follow :func:`pearson` (both
    constant 1.0, one constant 0.0), where ``spearmanr`` gives NaN.

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


_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "middle", "right")


def region_name(peak: tuple[int, int] | None, shape: tuple[int, ...]) -> str:
    """Where a peak cell lies, in words: the image cut in thirds each way gives four
    corners, four edges and the centre.

    Example:
        >>> region_name((0, 0), (8, 8)), region_name((4, 7), (8, 8)), region_name((3, 4), (8, 8))
        ('the top-left corner', 'the right edge', 'the centre')
    """
    if peak is None:
        return "nowhere"
    third = [min(2, int(3 * (p + 0.5) / n)) for p, n in zip(peak, shape[:2], strict=True)]
    row, col = _ROWS[third[0]], _COLS[third[1]]
    if row == col == "middle":
        return "the centre"
    if row == "middle":
        return f"the {col} edge"
    if col == "middle":
        return f"the {row} edge"
    return f"the {row}-{col} corner"


# --------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------


def check_boxes(boxes: Any, n: int, image_shape: Any, source: str = "boxes") -> np.ndarray:
    """One object box per heatmap as an ``(n, 4)`` int64 array (y0, x0, y1, x1, half-open,
    input-image pixels), checked.

    Args:
        boxes: a sequence of :class:`~convviz_check.types.Box` (or of 4 ints), one per
            image, or an ``(n, 4)`` integer array.
        n: the number of heatmaps.
        image_shape: ``(H, W)`` the boxes refer to (a GradCAM's ``image_shape``; for
            bare maps their own ``(h, w)``: such maps are taken to be at image
            resolution, as :mod:`convviz_check.localization` does).
        source: how the caller names the argument, for messages.

    Raises:
        LocalizationError: not one box per image, not integers, an empty box, or a box
            (partly) outside the image.

    Example:
        >>> check_boxes([Box(0, 0, 4, 4)], 1, (8, 8)).tolist()
        [[0, 0, 4, 4]]
    """
    rows: Any = boxes
    if isinstance(boxes, Box):
        raise LocalizationError(
            f"{source} takes one box per image ({n}): a list of Box or an ({n}, 4) array. "
            f"Received: one {boxes}."
        )
    if isinstance(boxes, list | tuple):
        rows = [b.to_tuple() if isinstance(b, Box) else b for b in boxes]
    try:
        arr = np.asarray(rows)
    except ValueError:
        arr = np.asarray(rows, dtype=object)
    if arr.ndim != 2 or arr.shape[1:] != (4,) or arr.dtype.kind not in "iu":
        raise LocalizationError(
            f"{source} must be a list of Box or an (N, 4) integer array y0, x0, y1, x1 in "
            f"input-image pixels. Received: {describe_array(source, arr)}"
        )
    if arr.shape[0] != n:
        raise LocalizationError(
            f"{source} needs one box per image: {n} heatmap(s), {arr.shape[0]} box(es). "
            f"Received: {describe_array(source, arr)}"
        )
    height, width = (int(v) for v in tuple(image_shape)[:2])
    for i, (y0, x0, y1, x1) in enumerate(arr.tolist()):
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise LocalizationError(
                f"{source}[{i}] must be a non-empty box inside the {height}x{width} image "
                f"(0 <= y0 < y1 <= {height}, 0 <= x0 < x1 <= {width}; half-open, input-image "
                f"pixels). Received: (y0={y0}, x0={x0}, y1={y1}, x1={x1})"
            )
    return np.ascontiguousarray(arr, dtype=np.int64)


def paired_arrays(expected: Any, obtained: Any, kind: str) -> dict[str, Pair]:
    """Key -> expected/obtained float arrays of an activation or pattern comparison,
    after every structural check (a single array has the key ``""``)."""
    if isinstance(expected, GradCAM) or isinstance(obtained, GradCAM):
        raise ComparisonError(
            f"A GradCAM result can only be compared as kind='heatmap'. Received: kind={kind!r}"
        )
    e_is_map, o_is_map = isinstance(expected, Mapping), isinstance(obtained, Mapping)
    if e_is_map != o_is_map:
        raise ComparisonError(
            f"Cannot compare a dict of arrays with a single array ({kind}). Received: "
            f"expected type {type(expected).__name__}, obtained type {type(obtained).__name__}"
        )
    if not e_is_map:
        return {"": checked_pair(expected, obtained, kind, "expected", "obtained")}
    e_keys, o_keys = [str(k) for k in expected], [str(k) for k in obtained]
    if set(e_keys) != set(o_keys):
        missing = sorted(set(e_keys) - set(o_keys))
        extra = sorted(set(o_keys) - set(e_keys))
        raise ComparisonError(
            f"Cannot compare {kind}s: the keys differ. Missing from obtained: {missing}; "
            f"not in expected: {extra}. Received: expected keys={sorted(e_keys)}, "
            f"obtained keys={sorted(o_keys)}"
        )
    if not e_keys:
        raise ComparisonError(f"Nothing to compare: both {kind} dicts are empty.")
    return {
        str(k): checked_pair(expected[k], obtained[k], kind, f"expected[{k!r}]", f"obtained[{k!r}]")
        for k in expected
    }


@dataclass
class Pair:
    """Expected and obtained values of one key as float64, after every check."""

    e: np.ndarray
    o: np.ndarray
    uint8: bool = False
    float16: bool = False


def checked_pair(e: Any, o: Any, kind: str, e_name: str, o_name: str) -> Pair:
    e_raw, o_raw = np.asarray(e), np.asarray(o)
    check_same_shape(e_raw, o_raw, kind, e_name, o_name)
    fe, fo = dtype_family(e_raw, e_name), dtype_family(o_raw, o_name)
    if fe != fo:
        raise ComparisonError(
            f"Cannot compare {kind}: dtype families differ ({fe} vs {fo}). Received: "
            f"{describe_array(e_name, e_raw)}; {describe_array(o_name, o_raw)}"
        )
    ef, of = as_float_array(e_raw, e_name), as_float_array(o_raw, o_name)
    return Pair(
        ef,
        of,
        uint8=e_raw.dtype == np.uint8 and o_raw.dtype == np.uint8,
        float16=np.float16 in (e_raw.dtype, o_raw.dtype),
    )


def check_same_shape(e: np.ndarray, o: np.ndarray, kind: str, e_name: str, o_name: str) -> None:
    if np.shape(e) != np.shape(o):
        raise ComparisonError(
            f"Cannot compare {kind}: shapes differ. Received: {e_name}.shape="
            f"{tuple(np.shape(e))}, {o_name}.shape={tuple(np.shape(o))}"
        )


def dtype_family(arr: np.ndarray, name: str) -> str:
    families = {"f": "float", "i": "integer", "u": "integer", "b": "bool"}
    if arr.dtype.kind not in families:
        raise ComparisonError(
            f"Only numeric arrays can be compared. Received: {describe_array(name, arr)}"
        )
    return families[arr.dtype.kind]


def as_float_array(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value)
    dtype_family(arr, name)
    if arr.size == 0:
        raise ComparisonError(
            f"Nothing to compare: the array is empty. Received: {describe_array(name, arr)}"
        )
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        n_nan = int(np.count_nonzero(np.isnan(out)))
        n_inf = int(np.count_nonzero(np.isinf(out)))
        raise ComparisonError(
            f"Cannot compare arrays holding NaN or infinite values: {n_nan} NaN and {n_inf} "
            f"infinite value(s) in {name}. Received: {describe_array(name, arr)}"
        )
    return out


def linear_cka(x: Any, y: Any) -> float:
    """Linear centered kernel alignment of two feature matrices (Kornblith, Norouzi,
    Lee and Hinton 2019, "Similarity of Neural Network Representations Revisited").

    ``x`` is ``(n, p1)`` and ``y`` ``(n, p2)``: the same ``n`` examples (rows) seen
    through two sets of features (columns). Columns are centered, then
    ``CKA = ||y^T x||_F^2 / (||x^T x||_F ||y^T y||_F)``, in [0, 1]. It is 1 for
    identical features and unchanged by an orthogonal transform of either side's
    features (a permutation of channels included) and by isotropic scaling: what a
    retrain may do to its channels. Two constant (zero-variance) sides give 1.0 (no
    structure, none differs), one constant side 0.0.

    Raises:
        ComparisonError: not 2-D, another number of rows, fewer than 2 rows, or
            values that are not finite.

    Example:
        >>> x = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 3.0]])
        >>> round(linear_cka(x, x[:, ::-1] * 5.0), 12)
        1.0
    """
    a, b = as_float_array(x, "x"), as_float_array(y, "y")
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ComparisonError(
            "linear_cka takes two 2-D feature matrices with the same number (>= 2) of rows. "
            f"Received: x.shape={a.shape}, y.shape={b.shape}"
        )
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    const_a, const_b = _no_variance(a, x), _no_variance(b, y)
    if const_a or const_b:
        return 1.0 if const_a and const_b else 0.0
    # Rescaled to max 1 so that fourth powers cannot overflow.
    a /= np.max(np.abs(a))
    b /= np.max(np.abs(b))
    if a.shape[0] <= a.shape[1] + b.shape[1]:
        # Few rows: the (n, n) Gram matrices are the cheaper route to the same sums
        # (||y^T x||_F^2 = <x x^T, y y^T>_F, ||x^T x||_F = ||x x^T||_F).
        ka, kb = a @ a.T, b @ b.T
        cross, norm_a, norm_b = float(np.sum(ka * kb)), _fro(ka), _fro(kb)
    else:
        cross, norm_a, norm_b = _fro(b.T @ a) ** 2, _fro(a.T @ a), _fro(b.T @ b)
    return min(1.0, max(0.0, cross / (norm_a * norm_b)))


def cka_features(activation: np.ndarray, name: str = "activation") -> np.ndarray:
    """A layer's activations ``(N, h, w, C)`` (any ``(..., C)``) as the ``(N*h*w, C)``
    feature matrix :func:`linear_cka` compares: every position of every image is an
    example, every channel a feature. This spatial form works from one image, compares
    each position with its own counterpart, and asks only what a retrain keeps (the
    same geometry over positions, up to a rotation or permutation of channels); the
    alternative ``(N, h*w*C)`` needs many more images than ``h*w*C`` columns before
    CKA stops reading high for unrelated features.

    Raises:
        ComparisonError: fewer than 2 rows (e.g. a dense layer's output for one image).
    """
    arr = np.asarray(activation)
    rows = arr.reshape(-1, arr.shape[-1]) if arr.ndim >= 2 else arr.reshape(1, -1)
    if rows.shape[0] < 2:
        raise ComparisonError(
            f"CKA compares a layer over at least 2 positions or images. Received: {name} "
            f"of shape {tuple(arr.shape)} (one row); check it on 2 or more images."
        )
    return rows


def layer_cka(expected: np.ndarray, obtained: np.ndarray, name: str = "activation") -> float:
    """:func:`linear_cka` of two activations of one layer, as :func:`cka_features` reads
    them (positions of every image as rows, channels as columns)."""
    return linear_cka(cka_features(expected, name), cka_features(obtained, name))


def _no_variance(centered: np.ndarray, raw: Any) -> bool:
    """Every column constant, within ``RANK_RESOLUTION`` of the raw values' largest |value|
    (float32 noise is no structure)."""
    scale = float(np.max(np.abs(np.asarray(raw, np.float64))))
    return scale == 0.0 or float(np.max(np.abs(centered))) <= RANK_RESOLUTION * scale


def _fro(m: np.ndarray) -> float:
    return float(np.sqrt(np.sum(m * m)))


def joint_range(e: np.ndarray, o: np.ndarray) -> float:
    """The range both arrays span together (1.0 when both hold one value)."""
    lo, hi = min(e.min(), o.min()), max(e.max(), o.max())
    return float(hi - lo) if hi > lo else 1.0
