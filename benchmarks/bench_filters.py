"""Benchmark: filter patterns (gradient ascent) vs the chapter's loop and vs the floor.

Xception-41 (keras-hub's architecture, weights from a NumPy-seeded ``.weights.h5`` file), layer
``block3_sepconv1``, 200x200x3, 30 steps; 4 filters by default (``--filters N``,
``--full``: 64). Subjects, interleaved in one process with pinned threads:

- ``ours``: ``cc.filter_patterns`` (one compiled ascent program per batch of 4; the
  filter index is a tensor; only the asked channels of the layer are computed).
- ``chapter``: the reference chapter's listing (Deep Learning with Python, 3rd ed.,
  ch. 10, "Visualizing convnet filters") in its order, on the same backend:
  ``feature_extractor = keras.Model(inputs=backbone.input, outputs=layer.output)``,
  ``compute_loss``, the backend's ``gradient_ascent_step`` -- TensorFlow: a
  ``tf.function`` with a ``GradientTape`` and the filter index as a Python int (one
  retrace per new filter); torch: an eager step, ``.clone().detach().requires_grad_``,
  ``loss.backward()`` (which also computes the weights' gradients), ``image.grad``;
  JAX: ``jax.jit`` of ``jax.grad(compute_loss)`` + normalize + update, the model's
  weights closed over (constants of the program) -- then ``generate_filter_pattern``
  (a ``keras.random.uniform`` start in [0.4, 0.6], 30 steps of learning rate 10) and
  ``deprocess_image``, one filter at a time. As written, the step normalizes with
  ``ops.normalize(grads)`` (Keras' default: along the last, channel axis), not over
  the whole image as ours does: the patterns differ, the work is the same.
- ``floor``: 30 x (forward + backward to the input) of the truncated model, compiled
  (TF ``tf.function``; JAX one ``jax.jit`` of a ``fori_loop``, as ours; torch eager
  autograd), with the kernels ours runs (``backends.fast_kernels``), at ours' batch size,
  on ours' start image: the work itself, with no loss, normalization or update.

Each timed round uses filter indices the chapter's ``tf.function`` has not seen (its
retrace is a per-filter cost, ours a per-call-shape one). "First call": a fresh model
object in this process (ours compiles again; the chapter builds its sub-model and, on
TF and JAX, traces/compiles its step). Targets on this 2-core CPU: chapter/ours >= 1.15x
(TF), >= 1.5x (JAX), >= 1.0x (torch); ours/floor <= 1.15x; first call no slower.

Measured 2026-12-01, 2-core CPU shared with other jobs (load average 1.3-1.7; torch
re-measured after its CPU sub-batches, load 1.4-1.6), 2 threads, 4 filters, 2 interleaved rounds (wall-clock medians, CPU-time ratio in
brackets):

=========  ===========  ============  ================  ===============  ========
backend    ours         chapter       chapter/ours      first call:      ours/
           s/filter     s/filter                        ours / chapter   floor
=========  ===========  ============  ================  ===============  ========
TF 2.21    0.25         0.41          1.65x (1.34x)     1.16 / 1.55 s    0.95x
torch      0.34         0.96          2.80x (2.80x)     1.32 / 3.79 s    0.84x
JAX 0.10   1.25         3.63          2.90x (2.05x)     5.65 / 14.08 s   1.00x
=========  ===========  ============  ================  ===============  ========

Peak RSS (``--memory``: a fresh process per row, 2 steps -- a step's peak whatever the
steps; growth over the RSS after the model build, MiB), 8 / 32 filters: TF ours +103 /
+114, chapter +66 / +244 (its retraces accumulate); torch ours +133 / +140, chapter
+100 / +172; JAX ours +295 / +317, chapter +118 / +124. Ours runs 4 filters at once.

Earlier notes (2026-11-26, the idle box, the previous chapter baseline -- whole-image
normalization, our own sub-model -- and before the torch/JAX kernel changes in
``convviz_check/backends``): TF 1.18-1.51x, torch 1.39-1.53x, JAX 1.82-1.94x;
``--torch-compile`` (inductor) was no faster (1.07x / 0.94x) for a first call ~26 s
longer, so it is not used; ``--batch-sizes 1,4`` gave TF 1.59 vs 1.36, torch 2.06 vs
1.81, JAX 5.01 vs 5.06 s/filter, hence ``DEFAULT_BATCH_SIZE = 4``.

Usage::

    KERAS_BACKEND=jax python benchmarks/bench_filters.py
    KERAS_BACKEND=torch python benchmarks/bench_filters.py --torch-compile
    KERAS_BACKEND=tensorflow python benchmarks/bench_filters.py --memory
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import add_memory_flags, base_parser, prepare_process

LAYER = "block3_sepconv1"
SIZE = 200
STEPS = 30
TARGET_SPEEDUP = {"tensorflow": 1.15, "jax": 1.5, "torch": 1.0}
TARGET_FLOOR_RATIO = 1.15


def chapter_routine(backend: str, model: Any) -> Callable[[int], np.ndarray]:
    """The chapter's listing on ``backend``, in its order: ``feature_extractor`` (the
    backbone's input -> ``block3_sepconv1``), ``compute_loss``, the backend's
    ``gradient_ascent_step``, ``generate_filter_pattern`` and ``deprocess_image``.
    Returns ``pattern(filter_index) -> uint8 image``."""
    import keras
    from keras import ops

    backbone = model.backbone
    layer = backbone.get_layer(name=LAYER)
    feature_extractor = keras.Model(inputs=backbone.input, outputs=layer.output)

    def compute_loss(image: Any, filter_index: Any) -> Any:
        activation = feature_extractor(image)
        filter_activation = activation[:, 2:-2, 2:-2, filter_index]
        return ops.mean(filter_activation)

    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def gradient_ascent_step(image: Any, filter_index: Any, learning_rate: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(image)
                loss = compute_loss(image, filter_index)
            grads = tape.gradient(loss, image)
            grads = ops.normalize(grads)
            image += learning_rate * grads
            return image

    elif backend == "torch":

        def gradient_ascent_step(image: Any, filter_index: Any, learning_rate: Any) -> Any:
            image = image.clone().detach().requires_grad_(True)
            loss = compute_loss(image, filter_index)
            loss.backward()
            grads = image.grad
            grads = ops.normalize(grads)
            image = image + learning_rate * grads
            return image

    else:
        import jax

        grad_fn = jax.grad(compute_loss)

        @jax.jit
        def gradient_ascent_step(image: Any, filter_index: Any, learning_rate: Any) -> Any:
            grads = grad_fn(image, filter_index)
            grads = ops.normalize(grads)
            image += learning_rate * grads
            return image

    img_width = SIZE
    img_height = SIZE

    def generate_filter_pattern(filter_index: int) -> Any:
        iterations = STEPS
        learning_rate = 10.0
        image = keras.random.uniform(minval=0.4, maxval=0.6, shape=(1, img_width, img_height, 3))
        for _ in range(iterations):
            image = gradient_ascent_step(image, filter_index, learning_rate)
        return image[0]

    def deprocess_image(image: Any) -> np.ndarray:
        image -= ops.mean(image)
        image /= ops.std(image)
        image *= 64
        image += 128
        image = ops.clip(image, 0, 255)
        image = image[25:-25, 25:-25, :]
        image = ops.cast(image, dtype="uint8")
        return ops.convert_to_numpy(image)

    def pattern(filter_index: int) -> np.ndarray:
        return deprocess_image(generate_filter_pattern(filter_index))

    return pattern


def _floor(backend: str, extractor, batch: int, start: np.ndarray):
    """``run()``: 30 x compiled forward + backward to the input at ``batch``.

    The input is ours' start image: the work's speed depends on the data here (measured,
    TF 2.21: 30 steps on a constant 0.5 image took 1.34-1.58 s, on the seeded start
    image 1.65-1.96 s; no subnormal values on either), so a constant input made the
    floor ~15% cheaper than the same work on the images the ascent sees."""
    x_np = np.broadcast_to(start, (batch, *start.shape)).copy()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x_np)

        @tf.function
        def fwd_bwd(image):
            with tf.GradientTape() as tape:
                tape.watch(image)
                loss = tf.reduce_sum(extractor(image))
            return tape.gradient(loss, image)

        def run():
            for _ in range(STEPS):
                g = fwd_bwd(x)
            return g.numpy()

    elif backend == "torch":
        import torch

        x = torch.as_tensor(x_np)

        def run():
            for _ in range(STEPS):
                img = x.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(torch.sum(extractor(img)), img)
            return g.numpy()

    else:
        import jax
        import jax.numpy as jnp

        def loss_of(image, trainable, non_trainable):
            out, _ = extractor.stateless_call(trainable, non_trainable, image)
            return jnp.sum(out)

        grad_of = jax.grad(loss_of)

        # One jitted loop, as ours. A floor that called a jitted step 30 times from
        # Python measured 7.8 s/filter, ours (one fori_loop) 4.7 s: that floor measured
        # the per-call cost, not the work. The gradient is fed back (times a runtime
        # zero) so XLA cannot hoist the loop-invariant work out of the loop.
        @jax.jit
        def loop(image, trainable, non_trainable, zero):
            def body(_, img):
                return img + zero * grad_of(img, trainable, non_trainable)

            return jax.lax.fori_loop(0, STEPS, body, image)

        x = jnp.asarray(x_np)

        def run():
            trainable = [v.value for v in extractor.trainable_variables]
            non_trainable = [v.value for v in extractor.non_trainable_variables]
            return np.asarray(loop(x, trainable, non_trainable, jnp.float32(0.0)))

    return run


def _memory_child(args: argparse.Namespace) -> None:
    """Child process: one run of a subject on ``--batch`` filters, ``--memory-steps``
    steps each (the peak is one step's, whatever the steps); prints the peaks as JSON."""
    from _common import build_xception41, memory_report, reset_peak_rss

    import convviz_check as cc
    from convviz_check import backends

    model, _ = build_xception41(image_size=SIZE, weights_path=args.weights)
    n = args.batch
    base = reset_peak_rss()
    t0 = time.perf_counter()
    if args.memory_child == "ours":
        cc.filter_patterns(model, LAYER, filters=range(n), steps=args.memory_steps)
    else:
        global STEPS
        STEPS = args.memory_steps
        pattern = chapter_routine(backends.current_backend(), model)
        [pattern(f) for f in range(n)]
    memory_report(
        subject=args.memory_child, images=n, base_mb=base, seconds=time.perf_counter() - t0
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="64 filters instead of 4")
    parser.add_argument("--filters", type=int, default=None, help="filters per round")
    parser.add_argument("--batch-size", type=int, default=None, help="ours and floor batch")
    parser.add_argument("--batch-sizes", default=None, help="e.g. 1,4: time ours per batch size")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor")
    add_memory_flags(parser, "filters")
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--torch-compile", action="store_true", help="also torch.compile'd ours")
    args = parser.parse_args(argv)
    threads = prepare_process(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    from _common import (
        build_xception41,
        child_memory_rows,
        first_calls,
        header,
        interleaved_median_times,
        interleaved_times,
        load_line,
        pin_framework_threads,
        print_memory_rows,
        timed,
        verdict,
    )

    pinned = pin_framework_threads(threads)
    if args.memory_child is not None:
        _memory_child(args)
        return 0

    import convviz_check as cc
    from convviz_check import backends, graph
    from convviz_check.explain import filters as filters_mod

    backend = backends.current_backend()
    print(header(pinned))
    print(load_line())
    n_filters = args.filters or (64 if args.full else 4)
    repeats = args.repeats or (1 if args.full else 2)
    batch = args.batch_size or min(filters_mod.DEFAULT_BATCH_SIZE, n_filters)
    t0 = time.perf_counter()
    model, weights = build_xception41(image_size=SIZE, weights_path=args.weights)
    print(f"built Xception-41 in {time.perf_counter() - t0:.1f}s, weights {weights}")
    start = filters_mod.start_image(SIZE, SIZE, 3, seed=0)
    chapter = chapter_routine(backend, model)
    floor = None if args.no_floor else _floor(backend, graph.submodel(model, [LAYER]), batch, start)
    channels = filters_mod._resolve_target(model, LAYER).channels
    restricted = filters_mod._restricted_conv(graph.flatten(model).record(LAYER).operation)
    print(f"ours computes only the asked channels of {LAYER}: {restricted}")
    rounds = iter(range(10**6))
    current: dict[str, list[int]] = {}

    def next_filters() -> list[int]:
        # Filter indices the chapter's tf.function has not traced yet: its retrace is a
        # per-filter cost of its code, ours a per-call-shape one.
        k = next(rounds)
        return [(k * n_filters + i) % channels for i in range(n_filters)]

    def ours() -> Any:
        current["filters"] = next_filters()
        return cc.filter_patterns(model, LAYER, filters=current["filters"], batch_size=batch)

    def chapter_run() -> Any:
        return np.stack([chapter(f) for f in current["filters"]])

    def floor_run() -> None:
        assert floor is not None
        with backends.fast_kernels():  # the kernels ours runs
            for _ in range(0, n_filters, batch):
                floor()

    subjects = {"ours": ours, "chapter": chapter_run}
    if floor is not None:
        subjects["floor"] = floor_run
    if args.torch_compile and backend == "torch":
        subjects["ours+torch.compile"] = _torch_compiled_ours(
            model, start, filters_mod.default_learning_rate(SIZE, SIZE, 3), current, batch
        )
    print(
        f"{backend}: {LAYER} {SIZE}x{SIZE}, {STEPS} steps, {n_filters} filters, batch {batch}, "
        f"{repeats} timed round(s) after {args.warmup} warm-up(s)"
    )
    for i in range(args.warmup):
        for name, fn in subjects.items():
            wall, _, _ = timed(fn)
            print(f"  warm-up {i + 1} {name}: {wall:.2f}s (compiles)")
    timings = interleaved_times(subjects, repeats=repeats)
    for name, t in timings.items():
        print(
            f"  {name:>20}: wall {t.median:8.2f}s ({t.median / n_filters:.2f}s/filter), "
            f"cpu {t.median_cpu:8.2f}s  runs {t.runs()}"
        )
    speedup = timings["chapter"].median / timings["ours"].median
    cpu_speedup = timings["chapter"].median_cpu / timings["ours"].median_cpu

    # First calls, a fresh model object each (built from the same file, not timed).
    def chapter_first(subject: tuple[Any, list[int]]) -> list[np.ndarray]:
        fresh, filters = subject
        pattern = chapter_routine(backend, fresh)  # its sub-model is part of it
        return [pattern(f) for f in filters]

    first = first_calls(
        lambda: (build_xception41(image_size=SIZE, weights_path=weights)[0], next_filters()),
        lambda s: cc.filter_patterns(s[0], LAYER, filters=s[1], batch_size=batch),
        chapter_first,
    )

    memory_rows = []
    if args.memory:
        extra = ["--weights", str(weights), "--threads", str(threads)]
        extra += ["--memory-steps", str(args.memory_steps)]
        counts = [int(c) for c in args.memory_filters.split(",")]
        memory_rows = child_memory_rows(__file__, ("ours", "chapter"), counts, extra)

    target = TARGET_SPEEDUP[backend]
    print(f"\n{load_line()}")
    print(
        f"filter patterns, Xception-41 {LAYER}, {SIZE} px, {STEPS} steps, {n_filters} filters, "
        f"{backend}, {threads} threads, ours {batch} filters per call"
    )
    print("| run | ours s/filter | chapter s/filter | chapter/ours | target | cpu-time ratio |")
    print("|---|---|---|---|---|---|")
    print(
        f"| warm | {timings['ours'].median / n_filters:.2f} | "
        f"{timings['chapter'].median / n_filters:.2f} | {speedup:.2f}x | >= {target}x "
        f"{verdict(speedup >= target)} | {cpu_speedup:.2f}x |"
    )
    print(
        f"| first call | {first.ours / n_filters:.2f} | {first.chapter / n_filters:.2f} | "
        f"{first.chapter / first.ours:.2f}x | ours <= chapter {verdict(first.ok)} | "
        f"{first.chapter_cpu / first.ours_cpu:.2f}x |"
    )
    if "floor" in timings:
        floor_ratio = timings["ours"].median / timings["floor"].median
        print(
            f"ours/floor = {floor_ratio:.2f}x (target <= {TARGET_FLOOR_RATIO}) "
            f"{verdict(floor_ratio <= TARGET_FLOOR_RATIO)}; cpu "
            f"{timings['ours'].median_cpu / timings['floor'].median_cpu:.2f}x"
        )
    if "ours+torch.compile" in timings:
        tc = timings["ours+torch.compile"].median
        print(
            f"torch.compile: chapter/compiled = {timings['chapter'].median / tc:.2f}x, "
            f"ours/compiled = {timings['ours'].median / tc:.2f}x"
        )
    print_memory_rows(memory_rows, unit="filters")

    if args.batch_sizes:
        sizes = [int(s) for s in args.batch_sizes.split(",")]
        n = max(sizes)
        fns = {
            f"batch {b}": (
                lambda b=b: cc.filter_patterns(model, LAYER, filters=range(n), batch_size=b)
            )
            for b in sizes
        }
        res = interleaved_median_times(fns, repeats=repeats, warmup=1)
        print(f"\nours per filter vs batch size ({n} filters):")
        for name, (median, _) in res.items():
            print(f"  {name:>9}: {median / n:.2f}s/filter")
    print(
        f"RESULT backend={backend} filters={n_filters} chapter/ours = {speedup:.2f}x "
        f"(target >= {target}x) {verdict(speedup >= target)}"
    )
    print(
        f"RESULT backend={backend} first call ({n_filters} filters, fresh model): ours "
        f"{first.ours:.2f}s, chapter {first.chapter:.2f}s (target: ours <= chapter) {verdict(first.ok)}"
    )
    return 0


def _torch_compiled_ours(model, start, lr, current, batch):
    """Our batched ascent (the same channel-restricted model and loss as ours) with the
    model's forward under ``torch.compile`` (inductor; gcc is on this machine)."""
    import torch

    from convviz_check.explain import filters as filters_mod

    channel_model = filters_mod._channel_model(model, LAYER)
    loss_fn = filters_mod._make_diagonal_loss("channels_last")
    compiled = torch.compile(lambda img, aux: channel_model([img, aux], training=False))

    def run():
        out = []
        for b0 in range(0, len(current["filters"]), batch):
            chunk = current["filters"][b0 : b0 + batch]
            aux = torch.as_tensor(np.asarray(chunk, np.int32))
            img = torch.as_tensor(np.broadcast_to(start, (len(chunk), *start.shape)).copy())
            for _ in range(STEPS):
                img = img.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(loss_fn([compiled(img, aux)], aux), img)
                with torch.no_grad():
                    norm = torch.sqrt(torch.sum(g * g, dim=(1, 2, 3), keepdim=True))
                    img = img + lr * g / torch.clamp(norm, min=1e-6)
            out.append(img.detach().numpy())
        return np.concatenate(out)

    return run


if __name__ == "__main__":
    sys.exit(main())
