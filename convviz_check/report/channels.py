"""A layer's channels as a picture a reader can name: every channel of one image's
activation in a grid, each tile with its channel index written above it.

``convviz-check explain`` draws each layer so. A layer of 4 channels and one of 512
get the same layout: the same tile size rule, the same numbers, on the same white
ground; a reader who sees something in a tile can say which channel it is.

NumPy and Pillow only.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..render import activation_grid, one_activation
from .labels import INK

# Tiles are enlarged (nearest, a whole factor) to at least this many px a side: a 4x4
# map's cells read as cells (12 px each), a 13x13 map's at 4 px, and the number above
# the narrowest tile fits it ("511" at 11 px is 21 px wide). The page shows the grid at
# this size, every layer alike (it zoomed a small layer's grid 8x before, numbers too).
MIN_TILE = 48
# Size of the channel numbers at least; larger tiles get larger numbers (an eighth of
# the tile), so a 224 px map's numbers stay readable where a page shrinks the grid to
# its width (16 tiles of 224 px shown 1300 px wide: 28 px numbers read as 10 px).
NUMBER_SIZE = 11
# Pixels between tiles (white).
GAP = 4
_WHITE = 255


def numbered_channel_grid(activation: np.ndarray, images_per_row: int = 16) -> np.ndarray:
    """Every channel of one activation in a grid of numbered tiles (uint8 RGB).

    Each channel is standardized on its own, as :func:`convviz_check.activation_grid`
    does (bright is high, a constant channel flat grey), enlarged (nearest, a whole
    factor) to at least :data:`MIN_TILE` px a side, and written under its index
    (0, 1, ...); tiles are laid ``images_per_row`` per row, left to right then down,
    :data:`GAP` px apart on white.

    Args:
        activation: ``(H, W, C)``, or ``(1, H, W, C)`` for one image of a batch.
        images_per_row: tiles per row.

    Returns:
        ``(rows * (label + tile + GAP) - GAP, cols * (tile + GAP) - GAP, 3)`` uint8.

    Raises:
        InputError: not one activation, or ``images_per_row`` not a positive int.

    Example:
        >>> grid = numbered_channel_grid(np.random.rand(4, 4, 3))
        >>> grid.shape  # 3 tiles of 48 px, 4 px apart, under 12 px of numbers
        (60, 152, 3)
    """
    a = one_activation("numbered_channel_grid", activation, images_per_row)
    h, w, c = a.shape
    row = activation_grid(a, images_per_row=c)  # one row: each channel standardized
    k = max(1, math.ceil(MIN_TILE / max(1, min(h, w))))
    th, tw = h * k, w * k
    font = ImageFont.load_default(size=max(NUMBER_SIZE, min(th, tw) // 8))
    left, top, _, bottom = font.getbbox("0123456789")
    label = bottom - top + 4
    cols = min(int(images_per_row), c)
    rows = math.ceil(c / cols)
    canvas = Image.new(
        "RGB", (cols * (tw + GAP) - GAP, rows * (label + th + GAP) - GAP), (_WHITE,) * 3
    )
    draw = ImageDraw.Draw(canvas)
    for q in range(c):
        r, col = divmod(q, cols)
        x, y = col * (tw + GAP), r * (label + th + GAP)
        tile = row[:, q * (w + 1) : q * (w + 1) + w]
        tile = np.repeat(np.repeat(tile, k, axis=0), k, axis=1)
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile)).convert("RGB"), (x, y + label))
        draw.text((x - left, y + 1 - top), str(q), fill=INK, font=font)
    return np.asarray(canvas)
