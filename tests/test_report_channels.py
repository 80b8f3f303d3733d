"""A layer's channels drawn numbered (convviz_check/report/channels.py): every tile
under its channel index, the same rule for a layer of 2 channels and one of 40."""

from __future__ import annotations

import numpy as np
import pytest

from convviz_check.errors import InputError
from convviz_check.render import activation_grid
from convviz_check.report.channels import GAP, MIN_TILE, numbered_channel_grid


def _label_height(grid: np.ndarray, tile: int, rows: int) -> int:
    return (grid.shape[0] + GAP) // rows - tile - GAP


@pytest.mark.parametrize(
    ("shape", "per_row"), [((4, 4, 2), 16), ((13, 13, 40), 16), ((6, 9, 5), 2)]
)
def test_every_channel_is_a_tile_under_its_number(shape, per_row) -> None:
    h, w, c = shape
    act = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    grid = numbered_channel_grid(act, images_per_row=per_row)
    k = -(-MIN_TILE // min(h, w))  # the whole factor that makes a tile MIN_TILE px at least
    th, tw = h * k, w * k
    cols = min(per_row, c)
    rows = -(-c // cols)
    assert grid.shape[1] == cols * (tw + GAP) - GAP and grid.shape[2] == 3
    assert (grid.shape[0] + GAP) % rows == 0  # rows of equal height: numbers, then a tile
    label = _label_height(grid, th, rows)
    assert 10 <= label <= 20  # a line of 11 px numbers
    one_row = activation_grid(act, images_per_row=c)  # each channel standardized
    inks = []
    for q in range(c):
        r, col = divmod(q, cols)
        x, y = col * (tw + GAP), r * (label + th + GAP)
        tile = grid[y + label : y + label + th, x : x + tw, 0]
        expected = np.repeat(np.repeat(one_row[:, q * (w + 1) : q * (w + 1) + w], k, 0), k, 1)
        np.testing.assert_array_equal(tile, expected)
        number = grid[y : y + label, x : x + tw, 0]
        assert (number < 128).any(), f"channel {q} has no number above it"
        inks.append(number < 128)
    # the numbers differ: 0 and 1 are not the same mark
    assert not np.array_equal(inks[0], inks[1])


def test_numbers_grow_with_large_tiles_so_a_shrunk_page_keeps_them_readable() -> None:
    small = numbered_channel_grid(np.random.default_rng(0).random((8, 8, 3)))
    large = numbered_channel_grid(np.random.default_rng(0).random((224, 224, 3)))
    assert _label_height(large, 224, 1) > _label_height(small, MIN_TILE, 1) + 10


@pytest.mark.parametrize(
    ("act", "per_row"),
    [(np.zeros((4, 4)), 16), (np.zeros((2, 4, 4, 3)), 16), (np.zeros((4, 4, 3)), 0)],
)
def test_bad_input_names_what_was_received(act, per_row) -> None:
    with pytest.raises(InputError, match="Received"):
        numbered_channel_grid(act, images_per_row=per_row)
