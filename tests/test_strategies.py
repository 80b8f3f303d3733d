"""convviz_check.strategies: drawn scenes are valid, renderings are consistent with the
bundled generator, moves and new backgrounds change only what they should."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convviz_check import strategies as cst
from convviz_check.errors import InputError
from convviz_check.examples.scenes import CLASS_NAMES, MIN_CONTRAST, render_scene
from convviz_check.types import Box


def mask_box(mask: np.ndarray) -> Box:
    rows, cols = np.nonzero(mask)
    return Box(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)


@settings(max_examples=15)
@given(cst.scenes())
def test_drawn_scene_is_consistent(scene):
    k = len(scene.objects)
    assert k in (1, 2)
    assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.uint8
    assert scene.floats.dtype == np.float32 and 0 <= scene.floats.min() <= scene.floats.max() <= 1
    assert len(scene.labels) == len(scene.boxes) == k and scene.masks.shape == (k, 64, 64)
    assert all(0 <= c < len(CLASS_NAMES) for c in scene.labels)
    for box, mask, spec in zip(scene.boxes, scene.masks, scene.objects, strict=True):
        assert mask_box(mask) == box
        assert spec.size >= 16  # two 8-px feature-map cells
        assert spec.y0 <= box.y0 and box.y1 <= spec.y0 + spec.size
        assert spec.x0 <= box.x0 and box.x1 <= spec.x0 + spec.size
    if k == 2:
        assert scene.labels[0] != scene.labels[1]  # distinct_classes by default
        assert not (scene.masks[0] & scene.masks[1]).any()
        a, b = scene.objects
        assert cst._apart(a, b, cst.OBJECT_GAP)


@settings(max_examples=15)
@given(cst.scenes(objects=1))
def test_object_colour_contrasts_with_the_background(scene):
    background = cst._background_mean(scene.background_seed, 64)
    colour = np.array(scene.objects[0].colour)
    assert np.abs(colour - background).sum() >= MIN_CONTRAST


@settings(max_examples=10)
@given(cst.scenes(objects=1))
def test_one_object_scene_is_exactly_the_generators_rendering(scene):
    o = scene.objects[0]
    ref = render_scene(o.cls, (o.y0, o.x0), o.size, o.colour, scene.background_seed, flip=o.flip)
    np.testing.assert_array_equal(scene.image, ref.images[0])
    np.testing.assert_array_equal(scene.masks, ref.masks[0])
    assert scene.boxes == tuple(ref.boxes[0])


@settings(max_examples=10)
@given(cst.scenes(objects=2))
def test_two_object_scene_shows_each_object_as_rendered_alone(scene):
    outside = ~scene.masks.any(axis=0)
    for spec, mask in zip(scene.objects, scene.masks, strict=True):
        alone = cst.render([spec], scene.background_seed)
        np.testing.assert_array_equal(scene.image[mask], alone.image[mask])
        np.testing.assert_array_equal(scene.image[outside], alone.image[outside])


@settings(max_examples=10)
@given(cst.scenes(objects=(1, 2)), st.integers(-8, 8), st.integers(-8, 8))
def test_moving_a_scene_moves_boxes_and_masks_exactly(scene, dy, dx):
    if not scene.fits(dy, dx):
        with pytest.raises(InputError, match="leaves the 64-px image"):
            scene.moved(dy, dx)
        return
    moved = scene.moved(dy, dx)
    assert moved.labels == scene.labels and moved.background_seed == scene.background_seed
    for before, after in zip(scene.boxes, moved.boxes, strict=True):
        assert after == Box(before.y0 + dy, before.x0 + dx, before.y1 + dy, before.x1 + dx)
    shifted = np.roll(scene.masks, (dy, dx), axis=(1, 2))
    np.testing.assert_array_equal(moved.masks, shifted)
    # the background (texture and noise) stays put
    untouched = ~(scene.masks.any(axis=0) | moved.masks.any(axis=0))
    np.testing.assert_array_equal(moved.image[untouched], scene.image[untouched])


@settings(max_examples=10)
@given(cst.scenes(objects=1), st.integers(0, 2**16 - 1))
def test_new_background_keeps_the_objects(scene, seed):
    other = scene.with_background(seed)
    np.testing.assert_array_equal(other.masks, scene.masks)
    assert other.boxes == scene.boxes and other.background_seed == seed
    if seed != scene.background_seed:
        assert not np.array_equal(other.image, scene.image)


@settings(max_examples=10)
@given(cst.scenes(objects=2, classes=["circle", "cross"], min_size=20, max_size=24))
def test_scene_options_restrict_classes_and_sizes(scene):
    assert sorted(scene.labels) == [CLASS_NAMES.index("circle"), CLASS_NAMES.index("cross")]
    assert all(20 <= o.size <= 24 for o in scene.objects)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"objects": 3}, "objects must be 1 or 2"),
        ({"classes": ["hexagon"]}, "Unknown class"),
        ({"objects": 2, "classes": ["circle"]}, "distinct_classes needs 2"),
        ({"min_size": 40, "objects": 2}, "No object size fits"),
    ],
)
@settings(max_examples=1)
@given(data=st.data())
def test_invalid_scene_options_are_refused(data, kwargs, match):
    with pytest.raises(InputError, match=match):
        data.draw(cst.scenes(**kwargs))


def test_render_without_objects_is_refused():
    with pytest.raises(InputError, match="at least one object"):
        cst.render([], 0)


def test_strategies_import_without_keras():
    code = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"keras", "tensorflow", "torch", "jax", "keras_hub"}:
                    raise ImportError("blocked: " + name)

        sys.meta_path.insert(0, Block())
        from hypothesis import given, settings
        from convviz_check import strategies as cst

        @settings(max_examples=3, database=None)
        @given(cst.scenes())
        def check(scene):
            assert scene.image.shape == (64, 64, 3)

        check()
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
