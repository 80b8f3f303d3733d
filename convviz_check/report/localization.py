"""Localization figures and failure text (what ``assert_localized`` shows).

NumPy and Pillow only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..render import as_rgb, overlay
from ..types import Box, Localization


def failure_text(result: Localization, failures: list[str], tol: float, box_target: bool) -> str:
    """The ``AssertionError`` text of a failed localization assertion."""
    peaks = result.peaks
    if len(peaks) == 0:
        peak_text = "none (no positive value)"
    elif len(peaks) == 1:
        peak_text = f"(y={int(peaks[0, 0])}, x={int(peaks[0, 1])})"
    else:
        shown = ", ".join(f"(y={int(r)}, x={int(c)})" for r, c in peaks[:5])
        more = f" ... {len(peaks) - 5} more" if len(peaks) > 5 else ""
        peak_text = f"{len(peaks)} tied pixels: {shown}{more}"
    kind = "box" if box_target else "mask (bounding box)"
    h, w = result.image_shape
    lines = [
        "Heatmap is not localized on the target: " + "; ".join(failures) + ".",
        f"  peak: {peak_text} in {h}x{w} image pixels",
        f"  target {kind}: rows [{result.target_box.y0}, {result.target_box.y1}), "
        f"cols [{result.target_box.x0}, {result.target_box.x1})"
        + (f", tolerance {tol} px" if tol else ""),
        f"  pointing game: {'hit' if result.pointing else 'miss'}",
        f"  energy in target: {result.energy:.3f}",
        f"  IoU (region >= threshold x max vs target): {result.iou:.3f}",
        f"  heatmap box (Grad-CAM paper): {_box_text(result.heatmap_box)}",
    ]
    if result.degenerate:
        lines.append(
            "  degenerate: True (the class score barely depends on the layer; metrics treat the map as all zero)"
        )
    return "\n".join(lines)


def _box_text(box: Box | None) -> str:
    if box is None:
        return "none"
    return f"rows [{box.y0}, {box.y1}), cols [{box.x0}, {box.x1})"


def overlay_figure(
    values: np.ndarray,
    result: Localization,
    mask: np.ndarray | None,
    image: np.ndarray | None,
) -> np.ndarray:
    """The heatmap ``values`` over ``image`` (or grey) with the target in green (its
    box, or the outline of ``mask``), the heatmap's own box in cyan and the peak in
    magenta; uint8 ``(H, W, 3)`` at the measuring resolution."""
    h, w = result.image_shape
    peak = float(values.max())
    scaled = values / peak if peak > 0 else np.zeros_like(values)
    picture = overlay(_base_image(image, (h, w)), np.clip(scaled, 0.0, 1.0))
    # heatmap box first, so that the target (what the reader checks against) is on top
    if result.heatmap_box is not None:
        _draw_box(picture, result.heatmap_box, (0, 255, 255))
    if mask is None:
        _draw_box(picture, result.target_box, (0, 255, 0))
    else:
        _draw_outline(picture, mask, (0, 255, 0))
    for r, c in result.peaks[:50]:
        _draw_cross(picture, int(r), int(c), (255, 0, 255))
    return picture


def _base_image(image: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The image at the measuring resolution as uint8 RGB (mid grey when absent)."""
    if image is None:
        return np.full((*shape, 3), 128, dtype=np.uint8)
    img = np.asarray(image)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    img = np.clip(as_rgb(img, "assert_localized"), 0, 255).astype(np.uint8)
    if img.shape[:2] != tuple(shape):
        img = np.asarray(
            Image.fromarray(img).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
        )
    return img


def _draw_box(picture: np.ndarray, box: Box, colour: tuple[int, int, int]) -> None:
    h, w = picture.shape[:2]
    y0, x0 = max(box.y0, 0), max(box.x0, 0)
    y1, x1 = min(box.y1, h) - 1, min(box.x1, w) - 1
    if y1 < y0 or x1 < x0:
        return
    picture[y0, x0 : x1 + 1] = colour
    picture[y1, x0 : x1 + 1] = colour
    picture[y0 : y1 + 1, x0] = colour
    picture[y0 : y1 + 1, x1] = colour


def _draw_outline(picture: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    if mask.shape != picture.shape[:2]:
        return
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    picture[mask & ~interior] = colour


def _draw_cross(picture: np.ndarray, r: int, c: int, colour: tuple[int, int, int]) -> None:
    h, w = picture.shape[:2]
    picture[max(r - 2, 0) : min(r + 3, h), c] = colour
    picture[r, max(c - 2, 0) : min(c + 3, w)] = colour
