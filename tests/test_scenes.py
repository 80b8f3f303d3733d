"""Tests of the synthetic scenes generator (NumPy only, no Keras)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convviz_check.errors import InputError
from convviz_check.examples import CLASS_NAMES, IMAGE_SHAPE, make_scenes, render_scene
from convviz_check.examples.scenes import MAX_SIZE, MIN_SIZE, scenes_sha256

# Recorded once; any change to the generator (or to NumPy's PCG64 integer streams)
# changes it. Same seed -> byte-identical scenes on any machine: all draws are integers
# and all arithmetic is integer arithmetic.
SHA256_ONE_OBJECT_SEED0_N32 = "78a4f33cf0e99fdaa0a96e2324da506b8b43e0a6db0602c312f3779caf250865"
SHA256_TWO_OBJECTS_SEED7_N16 = "4fed51da91abefba34f307f8e5073e919ef7f0b8184adccc4659237f60aaa92f"


def test_scenes_checksum_one_object_is_stable():
    assert scenes_sha256(make_scenes(32, seed=0)) == SHA256_ONE_OBJECT_SEED0_N32


def test_scenes_checksum_two_objects_is_stable():
    assert scenes_sha256(make_scenes(16, seed=7, two_objects=True)) == SHA256_TWO_OBJECTS_SEED7_N16


def test_same_seed_gives_identical_scenes_and_other_seed_differs():
    a, b, c = make_scenes(8, seed=3), make_scenes(8, seed=3), make_scenes(8, seed=4)
    assert scenes_sha256(a) == scenes_sha256(b)
    assert not np.array_equal(a.images, c.images)


def test_scene_i_does_not_depend_on_how_many_are_drawn():
    few, many = make_scenes(3, seed=5), make_scenes(10, seed=5)
    np.testing.assert_array_equal(few.images, many.images[:3])
    assert few.boxes == many.boxes[:3]


def test_images_are_uint8_and_floats_are_float32_in_unit_range():
    s = make_scenes(6, seed=1)
    assert s.images.shape == (6, *IMAGE_SHAPE) and s.images.dtype == np.uint8
    f = s.floats
    assert f.dtype == np.float32 and f.shape == s.images.shape
    assert 0.0 <= f.min() and f.max() <= 1.0
    np.testing.assert_allclose(f * 255.0, s.images, atol=1e-4)


@pytest.mark.parametrize("two_objects", [False, True])
def test_invariants_boxes_inside_image_masks_inside_boxes_labels_in_range(two_objects):
    s = make_scenes(60, seed=11, two_objects=two_objects)
    k = 2 if two_objects else 1
    h, w = s.images.shape[1:3]
    assert s.labels.shape == (60,)
    for labels, boxes, masks, first in zip(
        s.object_labels, s.boxes, s.masks, s.labels, strict=True
    ):
        assert len(labels) == len(boxes) == masks.shape[0] == k
        assert labels[0] == first
        assert masks.shape == (k, h, w) and masks.dtype == bool
        for label, box, mask in zip(labels, boxes, masks, strict=True):
            assert 0 <= label < len(CLASS_NAMES)
            assert 0 <= box.y0 < box.y1 <= h and 0 <= box.x0 < box.x1 <= w
            inside = np.zeros_like(mask)
            inside[box.y0 : box.y1, box.x0 : box.x1] = True
            assert mask.any() and not (mask & ~inside).any()
            # Boxes are tight: the mask touches every side of its box.
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1) == box.to_tuple()
            assert MIN_SIZE - 2 <= max(box.height, box.width) <= MAX_SIZE
        if two_objects:
            assert not (masks[0] & masks[1]).any()


def test_every_class_occurs():
    s = make_scenes(80, seed=2)
    assert set(s.labels.tolist()) == set(range(len(CLASS_NAMES)))


def test_classes_argument_restricts_labels():
    s = make_scenes(20, seed=2, classes=["circle", 3])
    assert set(s.labels.tolist()) <= {CLASS_NAMES.index("circle"), 3}


def test_object_pixels_take_the_object_colour_up_to_noise():
    s = render_scene("square", (20, 20), 20, (250, 10, 120), background_seed=4)
    pixels = s.images[0][s.masks[0][0]].astype(int)
    assert np.abs(pixels - np.array([250, 10, 120])).max() <= 12


@given(
    cls=st.integers(0, len(CLASS_NAMES) - 1),
    size=st.integers(MIN_SIZE, MAX_SIZE),
    fy=st.floats(0, 1),
    fx=st.floats(0, 1),
    colour=st.tuples(*[st.integers(0, 255)] * 3),
    seed=st.integers(0, 2**16),
    flip=st.booleans(),
)
def test_render_scene_box_is_tight_and_inside_the_drawn_square(
    cls, size, fy, fx, colour, seed, flip
):
    y0, x0 = int(fy * (64 - size)), int(fx * (64 - size))
    s = render_scene(cls, (y0, x0), size, colour, background_seed=seed, flip=flip)
    box, mask = s.boxes[0][0], s.masks[0][0]
    assert s.labels.tolist() == [cls]
    assert y0 <= box.y0 and x0 <= box.x0 and box.y1 <= y0 + size and box.x1 <= x0 + size
    assert mask.sum() >= size  # a real object, not a speck
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1) == box.to_tuple()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n must be a positive int"),
        ({"n": 2, "seed": -1}, "seed must be a non-negative int"),
        ({"n": 2, "image_size": 16}, "image_size must be an int >= 32"),
        ({"n": 2, "classes": ["hexagon"]}, "Received: 'hexagon'"),
        ({"n": 2, "classes": []}, "at least one class"),
    ],
)
def test_make_scenes_rejects_bad_arguments_saying_what_was_received(kwargs, match):
    with pytest.raises(InputError, match=match):
        make_scenes(**kwargs)


def test_render_scene_rejects_an_object_outside_the_image():
    with pytest.raises(InputError, match="must fit the image"):
        render_scene("circle", (60, 0), 12, (0, 0, 0))
