"""What a user trips on: small activation strips, labelled fviz pictures, the explain
command's output folder on a failure, the report's per-image table."""

from __future__ import annotations

import numpy as np
import pytest

from convviz_check.report import pictures


@pytest.mark.parametrize("shape", [(4, 4, 2), (3, 3, 4), (1, 1, 3)])
def test_a_layer_of_few_channels_is_drawn_as_large_numbered_tiles(shape) -> None:
    act = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    strip = pictures.activation_preview(act)
    c = shape[-1]
    # one row of tiles of at least FEW_CHANNEL_TILE px (a 4x4x2 map was 36x16 px)
    assert strip.shape[0] >= pictures.FEW_CHANNEL_TILE
    assert strip.shape[1] >= c * pictures.FEW_CHANNEL_TILE
    # each tile is numbered: white label text in its bottom-left corner
    side = pictures.FEW_CHANNEL_TILE
    for q in range(c):
        x0 = q * (strip.shape[1] + pictures._GAP) // c
        label = strip[-3:, x0 : x0 + 8]  # the black box the number is written on
        text = strip[-12:-4, x0 + 3 : x0 + 9, 0]
        assert (label == 0).all() and (text > 200).any() and (text < 50).any(), q
    # channels differ from each other even when each is one value (not all flat grey)
    tiles = [strip[: side - 16, i * (strip.shape[1] // c) + 20] for i in range(c)]
    assert len({int(t.mean()) for t in tiles}) > 1
    diff, scale = pictures.activation_diff_preview(act, act + 0.25)
    assert diff.shape == strip.shape and scale == pytest.approx(0.25)
