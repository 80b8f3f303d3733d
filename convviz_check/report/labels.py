"""Text drawn on the report's pictures, so that a picture says what it shows when it is
opened on its own: rows labelled on the left under a title (the backends of an
agreement picture), and an index in a tile's corner (which image, which channel).

Pillow's bundled font; NumPy and Pillow only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Text of the labelled pictures (Pillow's bundled font; 13 px reads at 100% zoom).
LABEL_SIZE = 13
LABEL_PAD = 6
# Dark text on white, grey frames (a white tile stays visible in its frame).
INK = (40, 44, 52)
FRAME = (150, 157, 168)


def text_size(text: str, size: int = LABEL_SIZE) -> tuple[int, int]:
    """(width, height) in px of ``text`` in the labels' font at ``size`` px."""
    left, top, right, bottom = ImageFont.load_default(size=size).getbbox(text)
    return int(right - left), int(bottom - top)


def corner_label(tile: np.ndarray, text: str) -> np.ndarray:
    """``text`` white on black in the tile's bottom-left corner (which image it is)."""
    font = ImageFont.load_default(size=LABEL_SIZE - 2)
    canvas = Image.fromarray(np.ascontiguousarray(tile[..., :3]))
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    h = canvas.size[1]
    draw.rectangle((0, h - (bottom - top) - 5, right - left + 4, h), fill=(0, 0, 0))
    draw.text((2 - left, h - (bottom - top) - 3 - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def labelled_rows(rows: list[tuple[str, np.ndarray]], title: str = "") -> np.ndarray:
    """Pictures (uint8, grey or RGB) stacked top to bottom on white, each framed in grey
    (a white tile stays visible) with its label on the left (one or more lines, e.g. a
    backend's name), under an optional one-line ``title``: a picture that says what it
    shows when opened on its own. uint8 RGB."""
    font = ImageFont.load_default(size=LABEL_SIZE)
    line_h = text_size("Hg|")[1] + 4
    widest = max((text_size(t)[0] for label, _ in rows for t in label.splitlines()), default=0)
    left = widest + 2 * LABEL_PAD if widest else LABEL_PAD
    pictures = [img if img.ndim == 3 else np.stack([img] * 3, axis=-1) for _, img in rows]
    title_h = line_h + LABEL_PAD if title else 0
    width = LABEL_PAD + max(
        [left + p.shape[1] + 2 for p in pictures] + [text_size(title)[0] + LABEL_PAD]
    )
    heights = [
        max(p.shape[0] + 2, line_h * len(label.splitlines()))
        for (label, _), p in zip(rows, pictures, strict=True)
    ]
    height = title_h + sum(heights) + LABEL_PAD * (len(rows) + 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((LABEL_PAD, LABEL_PAD), title, fill=INK, font=font)
    y = title_h + LABEL_PAD
    for (label, _), p, h in zip(rows, pictures, heights, strict=True):
        ph, pw = p.shape[:2]
        draw.rectangle((left, y, left + pw + 1, y + ph + 1), outline=FRAME)
        canvas.paste(Image.fromarray(np.ascontiguousarray(p[..., :3])), (left + 1, y + 1))
        lines = label.splitlines()
        top = y + max(0, (h - line_h * len(lines)) // 2)
        for k, line in enumerate(lines):
            draw.text((LABEL_PAD, top + k * line_h), line, fill=INK, font=font)
        y += h + LABEL_PAD
    return np.asarray(canvas)
