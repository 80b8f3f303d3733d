"""Benchmark: the robust feature visualization vs the chapter's ascent vs a plain loop.

On the running backend (``KERAS_BACKEND``), the bundled convnet (64x64 RGB), layer
``conv3``, 4 filters in one batch:

- ``chapter``: ``cc.filter_patterns`` by default (pixel space, L2-normalized gradient
  steps, 30 steps);
- ``plain``: the loop a user writes from the chapter when asked for the same robust
  transforms (:func:`plain_loop`): pixel space, each step pads the images with grey,
  shifts them by whole pixels, zooms and rotates them (``keras.ops.image.
  affine_transform``, bilinear), crops the centre back, takes the channel's mean inside
  the border and moves the pixels by the L2-normalized gradient (the backend's own
  autodiff: a ``tf.function`` step with ``tf.GradientTape``, ``jax.jit(jax.grad)``,
  torch autograd). The same ranges and the same seeded draws as the robust preset
  (``fviz.transform_schedule``); ``--robust-steps`` steps;
- ``robust``: ``parameterization="fft"`` (spectrum, colour, the same transforms, TV,
  Adam; 128 steps by default, ``--robust-steps``).

"First call": each subject on a freshly loaded model (it compiles its program: a
``tf.function`` trace, a ``jax.jit`` compile; torch runs eagerly). "Warm": the median
of ``--repeats`` rounds that alternate the three subjects on their warm models, so that
load from other processes hits them alike: read the ratios (printed against the
robust ascent), not the absolute times; the load average is printed with them.
``--memory``: the peak RSS of one call per subject and filter count
(``--memory-filters``), each in a fresh process, per filter.

    OMP_NUM_THREADS=1 KERAS_BACKEND=jax python benchmarks/bench_fviz.py --threads 1 --memory
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import add_memory_flags, base_parser, prepare_process

LAYER = "conv3"
FILTERS = [0, 1, 2, 3]
BORDER = 2
SUBJECTS = ("chapter", "plain", "robust")


def plain_loop(model: Any, layer: str, filters: list[int], steps: int, seed: int = 0) -> Any:
    """The pixel-space ascent with the robust preset's transforms, written plainly.

    Returns ``run() -> (F, H, W, C)`` patterns; compiled (where the backend compiles)
    on its first call."""
    import keras
    from keras import ops

    from convviz_check.explain.filters import default_learning_rate, start_image
    from convviz_check.explain.fviz import preset_transforms, transform_schedule

    extractor = keras.Model(model.inputs, model.get_layer(layer).output)
    h, w, c = (int(d) for d in model.inputs[0].shape[1:])
    transforms = preset_transforms(h, w)
    pad = int(transforms.pad)
    draws = np.asarray(transform_schedule(transforms, steps, seed), np.float32)
    lr = default_learning_rate(h, w, c)
    index = np.asarray(filters, np.int32)

    def loss(images: Any, draw: Any) -> Any:
        big = ops.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=0.5)
        scale, angle, dy, dx = draw[0], draw[1], draw[2], draw[3]
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        cy, cx = (h + 2 * pad - 1) / 2.0, (w + 2 * pad - 1) / 2.0
        # output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2)
        matrix = ops.stack(
            [
                cos, -sin, cx - cos * cx + sin * cy - dx,
                sin, cos, cy - sin * cx - cos * cy - dy,
                ops.zeros_like(cos), ops.zeros_like(cos),
            ]
        )  # fmt: skip
        moved = ops.image.affine_transform(
            big, ops.tile(matrix[None], (len(filters), 1)), fill_value=0.5
        )
        act = extractor(moved[:, pad : pad + h, pad : pad + w, :])
        inner = act[:, BORDER:-BORDER, BORDER:-BORDER, :]
        picked = ops.take_along_axis(inner, ops.reshape(index, (-1, 1, 1, 1)), axis=3)
        return ops.sum(ops.mean(picked, axis=(1, 2, 3)))

    def normalized(grad: Any) -> Any:
        norm = ops.sqrt(ops.sum(grad * grad, axis=(1, 2, 3), keepdims=True))
        return grad / ops.maximum(norm, 1e-6)

    start = np.broadcast_to(start_image(h, w, c, seed), (len(filters), h, w, c)).copy()
    step = _backend_step(loss, normalized, lr)

    def run() -> Any:
        images = start
        for i in range(steps):
            images = step(images, draws[i])
        return ops.convert_to_numpy(images)

    return run


def _backend_step(
    loss: Callable[[Any, Any], Any], normalized: Callable[[Any], Any], lr: float
) -> Callable[[Any, Any], Any]:
    """``step(images, draw) -> images + lr * normalized gradient``, in the backend's own
    autodiff, as the chapter writes it per backend."""
    import keras

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def tf_step(images: Any, draw: Any) -> Any:
            images = tf.convert_to_tensor(images)
            with tf.GradientTape() as tape:
                tape.watch(images)
                value = loss(images, draw)
            return images + lr * normalized(tape.gradient(value, images))

        return tf_step
    if backend == "jax":
        import jax

        grad = jax.grad(loss)
        return jax.jit(lambda images, draw: images + lr * normalized(grad(images, draw)))
    import torch

    def torch_step(images: Any, draw: Any) -> Any:
        x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
        x = x.detach().requires_grad_(True)
        loss(x, torch.as_tensor(draw)).backward()
        with torch.no_grad():
            return x + lr * normalized(x.grad)

    return torch_step


def _subjects(robust_steps: int) -> dict[str, Callable[[Any], Callable[[], Any]]]:
    """Subject name -> ``bind(model) -> call()``."""
    import convviz_check as cc

    def chapter(model: Any) -> Callable[[], Any]:
        return lambda: cc.filter_patterns(model, LAYER, FILTERS, steps=30, batch_size=4)

    def robust(model: Any) -> Callable[[], Any]:
        return lambda: cc.filter_patterns(
            model, LAYER, FILTERS, steps=robust_steps, batch_size=4, parameterization="fft"
        )

    def plain(model: Any) -> Callable[[], Any]:
        return plain_loop(model, LAYER, FILTERS, robust_steps)

    return {"chapter": chapter, "plain": plain, "robust": robust}


def _memory_child(args: argparse.Namespace) -> None:
    from _common import memory_report, reset_peak_rss

    import convviz_check as cc

    global FILTERS
    FILTERS = list(range(args.batch))
    model = cc.examples.load_example_model("convnet")
    call = _subjects(args.robust_steps)[args.memory_child](model)
    base = reset_peak_rss()
    t0 = time.perf_counter()
    call()
    memory_report(
        subject=args.memory_child,
        images=args.batch,
        base_mb=base,
        seconds=time.perf_counter() - t0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--robust-steps", type=int, default=128)
    add_memory_flags(parser, unit="filters")
    args = parser.parse_args(argv)
    threads = prepare_process(args.threads)
    from _common import (
        child_memory_rows,
        interleaved_times,
        load_line,
        pin_framework_threads,
        print_memory_rows,
    )

    pin_framework_threads(threads)
    if args.memory_child:
        _memory_child(args)
        return 0
    import keras

    import convviz_check as cc

    backend = keras.config.backend()
    print(f"keras {keras.__version__}, backend {backend}, threads {threads}")
    print(load_line())
    subjects = _subjects(args.robust_steps)
    calls, first = {}, {}
    for name, bind in subjects.items():  # each on its own fresh model
        call = bind(cc.examples.load_example_model("convnet"))
        t0 = time.perf_counter()
        call()
        first[name] = time.perf_counter() - t0
        calls[name] = call
    repeats = args.repeats or (2 if args.quick else 3)
    warm = interleaved_times(calls, repeats)
    print(load_line())
    steps = {"chapter": 30, "plain": args.robust_steps, "robust": args.robust_steps}
    print("| backend | subject | steps | first call, s | warm, s | warm ms/step | warm / robust |")
    print("|---|---|---|---|---|---|---|")
    for name in SUBJECTS:
        median = warm[name].median
        print(
            f"| {backend} | {name} | {steps[name]} | {first[name]:.2f} | {median:.2f} | "
            f"{1000 * median / steps[name]:.1f} | {median / warm['robust'].median:.2f} |"
        )
    if args.memory:
        counts = [int(n) for n in args.memory_filters.split(",")]
        extra = ["--robust-steps", str(args.robust_steps), "--threads", str(threads)]
        rows = child_memory_rows(__file__, SUBJECTS, counts, extra)
        print_memory_rows(rows, unit="filters")
        for r in rows:
            growth = (r["peak_mb"] - r["base_mb"]) / r["images"]
            print(f"{r['subject']} at {r['images']} filters: +{growth:.1f} MiB per filter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
