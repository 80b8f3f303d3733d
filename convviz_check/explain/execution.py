"""Running a CAM's compiled function over a batch: chunks, padding, caches.

:func:`convviz_check.explain.cam.cam` hands a :class:`Runner` the model-layout images
and gets back the target layer's maps ``A``, their gradient ``dy/dA`` (gradient methods)
and the head values, however many compiled calls that took. The compiled functions come
from :func:`convviz_check.graph.rewire` (a zero input added to ``A``: ``d y / d zero = d
y / d A``) and :mod:`convviz_check.backends`, and are cached with the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import graph as graph_lib
from .inputs import to_channels_last, to_model_layout
from .layer import layer_output_shape
from .targets import Target, callable_loss, class_loss, num_classes

# Images per compiled call (default of ``batch_size``). Measured 2026-11-26, Xception-41
# at 299x299, 16 images, 2-core CPU, s/image at 1 / 2 / 4 / 8 / 16 images per call:
# TF 0.188 / 0.194 / 0.176 / 0.191 / 0.217; torch 0.496 / 0.381 / 0.380 / 0.356 / 0.425
# (32 in one call: 0.94, peak RSS 10.9 GB); JAX 1.068 / 1.143 / 1.030 / 1.007 / 1.008.
# Larger batches buy nothing on a CPU and cost memory (~0.3 GB per image on torch);
# on an accelerator pass a larger batch_size. Identical heatmaps whatever the split.
DEFAULT_BATCH_SIZE = 8

# Masked inputs per forward call of Score-CAM when batch_size is None (an explicit
# batch_size sets both). Forward-only calls hold no gradient state, so larger chunks
# pay. Measured 2026-12-01, bundled convnet (64 px, 510 masks for 8 scenes), 2-core
# CPU, warm s per cam() call at 8 / 16 / 32 / 64 / 128 masks per call: TF 0.425 /
# 0.349 / 0.265 / 0.279 / 0.353; JAX 0.565 / 0.576 / 0.577 / 0.777 / 0.834; torch
# 7.06 / 6.50 / 3.45 / 2.22 / 1.59 (its per-call overhead dominates: on torch pass
# batch_size=128 for Score-CAM). 32 is the best compromise of the three.
DEFAULT_MASK_BATCH_SIZE = 32

# Masked inputs per call of Score-CAM where the backend sizes its own passes (torch on a
# CPU: see backends.torch.PASS_MAP_BYTES) and batch_size is None: the masks of a call
# are built in NumPy at once (float64, H x W each: 128 masks of 224 x 224 take 51 MB).
# Measured 2026-12-01 with the table above: torch was fastest at 128.
WHOLE_BATCH_MASKS = 128

# Compiled functions kept per model for callable targets (each callable compiles its
# own loss); the oldest is dropped beyond this many.
_MAX_CALLABLE_TARGETS = 8


def compiled_cache(model: Any) -> dict:
    """The compiled class-target CAM functions of ``model``: ``{(layer, bypass,
    backend): (rewired, fn)}`` (freed with the model)."""
    return graph_lib.model_cache(model, "gradcam")


def _compiled(model: Any, layer: str, bypass: bool, target: Target) -> tuple[Any, Any]:
    """``(rewired, value_and_grad fn)`` for (model, layer, head bypass, target), cached."""
    from .. import backends

    n_inputs = len(graph_lib.flatten(model).inputs)
    if target.fn is None:
        per_model = compiled_cache(model)
        key: tuple = (layer, bypass, backends.current_backend())
        if key not in per_model:
            rewired = graph_lib.rewire(model, layer, bypass_head_activation=bypass)
            fn = backends.make_value_and_grad(
                rewired.model, class_loss(num_classes(model)), wrt=n_inputs
            )
            per_model[key] = (rewired, fn)
        return per_model[key]
    # Callables are keyed by identity and kept alive with their entry (an id is unique
    # only while its object lives).
    per_callable = graph_lib.model_cache(model, "cam_callables")
    key = (layer, bypass, backends.current_backend(), id(target.fn))
    hit = per_callable.get(key)
    if hit is None or hit[2] is not target.fn:
        rewired = graph_lib.rewire(model, layer, bypass_head_activation=bypass)
        fn = backends.make_value_and_grad(rewired.model, callable_loss(target.fn), wrt=n_inputs)
        while len(per_callable) >= _MAX_CALLABLE_TARGETS:
            per_callable.pop(next(iter(per_callable)))
        hit = per_callable[key] = (rewired, fn, target.fn)
    return hit[0], hit[1]


def _forward(model: Any, layer: str, bypass: bool) -> tuple[Any, Any]:
    """``(rewired, forward fn)``: ``fn([x, zero]) -> [A, head]``, cached with the model."""
    from .. import backends

    rewired = graph_lib.rewire(model, layer, bypass_head_activation=bypass)
    return rewired, backends.make_forward(rewired.model)


def padded(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` grown to ``size`` rows by repeating its last row.

    A short last chunk runs the program already compiled for ``size`` (a JAX compile of
    Xception-41 took ~30 s here, more than the padded rows cost); callers drop the
    padding from the results.
    """
    pad = size - array.shape[0]
    return array if pad <= 0 else np.concatenate([array, np.repeat(array[-1:], pad, axis=0)])


def chunk_sizes(batch_size: int | None, n: int) -> tuple[int, int]:
    """``(images, masked inputs)`` per compiled call. Without ``batch_size``: where the
    backend splits a call into memory-sized passes itself (torch on a CPU), the whole
    batch and ``WHOLE_BATCH_MASKS``; else ``DEFAULT_BATCH_SIZE`` and
    ``DEFAULT_MASK_BATCH_SIZE``."""
    from .. import backends

    if batch_size:
        return int(batch_size), int(batch_size)
    if backends.whole_batches():
        return max(n, 1), WHOLE_BATCH_MASKS
    return DEFAULT_BATCH_SIZE, DEFAULT_MASK_BATCH_SIZE


class Runner:
    """The compiled function of one (model, layer, head bypass, target) and the chunked,
    padded calls through it, for model-layout inputs of one shape (``input_shape``, no
    batch axis)."""

    def __init__(
        self,
        model: Any,
        layer: str,
        bypass: bool,
        target: Target,
        gradient: bool,
        input_shape: tuple,
    ) -> None:
        self.target = target
        if gradient:
            self.rewired, self.step = _compiled(model, layer, bypass, target)
            self.forward = None
        else:
            self.rewired, self.forward = _forward(model, layer, bypass)
            self.step = None
        self.data_format: str = self.rewired.data_format
        # The zero input added to A: the layer's output shape at this input size.
        self.zero_item = layer_output_shape(model, layer, self.rewired.zero_shape, input_shape)
        # A short last chunk is padded to the chunk size only where the backend compiles
        # per shape (TF, JAX); torch on a CPU would compute the padding for nothing.
        from .. import backends

        self.pad = not backends.whole_batches()

    def _channels_last(self, array: Any) -> np.ndarray:
        # A token sequence (N, tokens, features) has no channel axis to move.
        return to_channels_last(np.asarray(array, np.float32), self.data_format)

    def batches(
        self, x: np.ndarray, wanted: np.ndarray, chunk: int
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """``(A, dy/dA or None, head)`` of the model-layout batch ``x``, channels-last,
        ``chunk`` images per call (``A`` and ``dy/dA`` in float64: a channel sum adds up
        to thousands of terms, 2048 for Xception)."""
        acts, grads, heads = [], [], []
        n = x.shape[0]
        size = min(chunk, n)
        zero = np.zeros((size, *self.zero_item), np.float32)
        for start in range(0, n, size):
            k = min(size, n - start)
            xs, cls = x[start : start + k], wanted[start : start + k]
            if self.pad:
                xs, cls = padded(xs, size), padded(cls, size)
            else:
                zero = zero[:k]
            if self.step is not None:
                _, outputs, grad = self.step([xs, zero], cls)
                grads.append(self._channels_last(grad[:k]))
            else:
                assert self.forward is not None
                outputs = self.forward([xs, zero])
            acts.append(self._channels_last(outputs[0][:k]))
            heads.append(np.asarray(outputs[1][:k], np.float32))
        gradient = np.concatenate(grads).astype(np.float64) if grads else None
        return np.concatenate(acts).astype(np.float64), gradient, np.concatenate(heads)

    def masked_scorer(
        self, model: Any, classes: np.ndarray, chunk: int
    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``fn(masked (M, H, W, C) channels-last, owner (M,)) -> target scores (M,)``
        for ``M <= chunk``: the cached compiled forward, ``chunk`` inputs per call (a
        short chunk padded), each scored for its owner image's target."""
        assert self.forward is not None, "masked inputs run forward only"
        forward, pad = self.forward, self.pad
        zeros = np.zeros((chunk, *self.zero_item), np.float32)

        def scores(masked: np.ndarray, owner: np.ndarray) -> np.ndarray:
            m = masked.shape[0]
            inputs = to_model_layout(masked, model)
            if pad:
                outputs = forward([padded(inputs, chunk), zeros])
            else:
                outputs = forward([inputs, zeros[:m]])
            head = np.asarray(outputs[1][:m], np.float32)
            return self.target.values(head, classes[owner])

        return scores


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MASK_BATCH_SIZE",
    "WHOLE_BATCH_MASKS",
    "Runner",
    "chunk_sizes",
    "compiled_cache",
    "padded",
]
