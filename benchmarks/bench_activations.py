"""Benchmark: every conv/pool activation vs the chapter's routine and vs one forward pass.

Subject ``ours``: ``cc.activations(model, images)`` -- one cached multi-output model,
compiled (``backends.make_forward``), 32 images per call by default.

Baseline ``chapter``: the reference chapter's listing (Deep Learning with Python, 3rd
ed., ch. 10, "Visualizing intermediate activations") in its order: loop over
``model.layers`` collecting ``layer.output`` of the layers of interest, one
``activation_model = keras.Model(inputs=model.input, outputs=layer_outputs)``, then
``activation_model.predict(img_tensor)`` on one image (``img_tensor`` is one image in
the listing; here one ``predict`` per image, ``verbose=0`` instead of a progress bar
per image). For the chapter's own kind of model (``--model convnet``, the bundled
Conv2D/MaxPooling2D stack) the listing runs as written, ``(Conv2D, MaxPooling2D)``.
For Xception-41 (the default) the listing's loop runs over ``model.backbone.layers``
(keras-hub nests the backbone) with the classes ours reports by default --
``Conv2D, SeparableConv2D, DepthwiseConv2D, MaxPooling2D, AveragePooling2D`` -- so both
compute the same 44 maps (checked).

Also ``forward``: ``model.predict_on_batch(images)`` of the whole classifier, the floor
of any activation routine.

Targets (wall-clock medians of interleaved warm runs): chapter/ours >= 1.0x at every
image count; ours/forward <= 1.3x; ours' first call (a fresh model object in this
process: building the multi-output model and its trace/compile count) no slower than
the chapter's first loop on a fresh model. ``--memory``: peak RSS of each subject at 8
and 32 images, each in a fresh process (see ``_common.memory_report``).

Measured 2026-12-01, 2-core CPU shared with other jobs (load average 1.7-4.2; torch
re-measured after its CPU sub-batches, load 1.0-1.4), 2 threads, Xception-41 at 299 px, 44 layers (wall-clock medians of 3 interleaved runs,
CPU-time ratio in brackets; "forward" runs Keras' own kernels, so on torch and JAX --
whose kernels ours replaces, see ``convviz_check/backends`` -- ours is faster than it):

========  ==============  ==============  ==============  ===============  ==============
backend   1 image         8 images        32 images       first call, 8:   ours/forward
          chapter/ours    chapter/ours    chapter/ours    ours / chapter   (1 / 8 / 32)
========  ==============  ==============  ==============  ===============  ==============
TF 2.21   3.02x (1.61x)   3.35x (2.37x)   3.02x (2.22x)   1.18 / 3.04 s    0.92/0.99/1.05
torch     1.81x (1.82x)   1.92x (1.97x)   1.62x (1.79x)   0.79 / 1.33 s    0.70/0.48/0.17
JAX 0.10  4.62x (3.30x)   2.12x (2.13x)   1.62x (1.51x)   2.21 / 3.67 s    0.24/0.44/0.54
========  ==============  ==============  ==============  ===============  ==============

Peak RSS growth over the RSS after the model build (MiB, a fresh process each), 8 / 32
images; the 44 float32 maps alone are 86 MiB per image, and both keep them all: TF
ours +796 / +3085, chapter +772 / +2827; torch ours +1381 / +3476, chapter +829 /
+2976; JAX ours +939 / +3607, chapter +842 / +2885. Ours runs 32 images per call by
default (``batch_size``), so on TF and JAX its peak holds 32 images' intermediate maps
at once; torch runs a call in sub-batches of 2 on the CPU and writes them into the
outputs (before that: +7680 MiB at 32 images).

Usage::

    KERAS_BACKEND=jax python benchmarks/bench_activations.py --quick
    KERAS_BACKEND=torch python benchmarks/bench_activations.py --images 1,8,32 --memory
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

TARGET_VS_CHAPTER = 1.0
TARGET_VS_FORWARD = 1.3
CHAPTER_CLASSES = ("Conv2D", "MaxPooling2D")
OUR_CLASSES = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D")


def _load(name: str, size: int, weights: str | None) -> tuple[Any, Any, tuple[str, ...], int]:
    """``(model, graph whose .layers the listing loops over, layer classes, image side)``."""
    if name == "convnet":
        from convviz_check.examples import load_example_model

        model = load_example_model("convnet")
        return model, model, CHAPTER_CLASSES, int(model.input_shape[1])
    from _common import build_xception41

    model, _ = build_xception41(image_size=size, weights_path=weights)
    return model, model.backbone, OUR_CLASSES, size


def chapter_routine(
    model: Any, graph: Any, classes: tuple[str, ...]
) -> tuple[Callable[[np.ndarray], list], list[str]]:
    """The chapter's listing on ``graph``: builds ``activation_model`` now and returns
    ``(run, layer_names)``, ``run(images) -> [activations of image 0, ...]`` calling
    ``predict`` once per image."""
    import keras
    from keras import layers

    wanted = tuple(getattr(layers, c) for c in classes)
    layer_outputs = []
    layer_names = []
    for layer in graph.layers:
        if isinstance(layer, wanted):
            layer_outputs.append(layer.output)
            layer_names.append(layer.name)
    activation_model = keras.Model(inputs=graph.input, outputs=layer_outputs)

    def run(images: np.ndarray) -> list:
        return [activation_model.predict(images[i : i + 1], verbose=0) for i in range(len(images))]

    return run, layer_names


def _memory_child(args: argparse.Namespace) -> None:
    from _common import memory_report, random_images, reset_peak_rss

    import convviz_check as cc

    model, graph, classes, side = _load(args.model, args.size, args.weights)
    images = random_images(args.batch, side, seed=0)
    base = reset_peak_rss()
    t0 = time.perf_counter()
    if args.memory_child == "ours":
        cc.activations(model, images)
    else:
        chapter_routine(model, graph, classes)[0](images)
    memory_report(
        subject=args.memory_child, images=args.batch, base_mb=base, seconds=time.perf_counter() - t0
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("xception41", "convnet"), default="xception41")
    parser.add_argument("--images", default=None, help="image counts, e.g. 1,8,32 (quick: 8)")
    parser.add_argument("--size", type=int, default=299, help="Xception-41's image side")
    parser.add_argument("--first-images", type=int, default=8, help="images of the first call")
    add_memory_flags(parser)
    args = parser.parse_args(argv)
    counts = [int(c) for c in (args.images or ("8" if args.quick else "1,8,32")).split(",")]
    repeats = args.repeats or (2 if args.quick else 3)
    threads = prepare_process(args.threads)
    warnings.filterwarnings("ignore", message="The structure of `inputs`")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    from _common import (
        child_memory_rows,
        first_calls,
        header,
        interleaved_times,
        load_line,
        pin_framework_threads,
        print_memory_rows,
        random_images,
        verdict,
    )

    pinned = pin_framework_threads(threads)
    if args.memory_child:
        _memory_child(args)
        return 0

    import convviz_check as cc
    from convviz_check import backends, graph

    backend = backends.current_backend()
    print(header(pinned))
    print(load_line())
    t0 = time.perf_counter()
    model, layer_graph, classes, side = _load(args.model, args.size, args.weights)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f}s")
    chapter, chapter_layers = chapter_routine(model, layer_graph, classes)
    ours_layers = graph.default_activation_layers(model)
    if chapter_layers != ours_layers:
        raise SystemExit(f"layer sets differ: {chapter_layers} vs {ours_layers}")
    print(f"{len(ours_layers)} layers, the same in both")
    rows = []
    for n in counts:
        images = random_images(n, side, seed=0)
        subjects: dict[str, Callable[[], Any]] = {
            "ours": lambda images=images: cc.activations(model, images),
            "chapter": lambda images=images: chapter(images),
            "forward": lambda images=images: model.predict_on_batch(images),
        }
        for fn in subjects.values():
            fn()  # warm-up: traces and compiles for this call size
        timings = interleaved_times(subjects, repeats=repeats)
        ratio = timings["chapter"].median / timings["ours"].median
        vs_forward = timings["ours"].median / timings["forward"].median
        rows.append((n, timings, ratio, vs_forward))
        print(
            f"{n:3d} images: ours {timings['ours'].median:.2f}s chapter "
            f"{timings['chapter'].median:.2f}s forward {timings['forward'].median:.2f}s; runs "
            + "; ".join(f"{k} {t.runs()}" for k, t in timings.items())
        )

    first_images = random_images(args.first_images, side, seed=1)

    first = first_calls(
        lambda: _load(args.model, args.size, args.weights)[:2],
        lambda fresh: cc.activations(fresh[0], first_images),
        lambda fresh: chapter_routine(fresh[0], fresh[1], classes)[0](first_images),
    )

    memory_rows = []
    if args.memory:
        extra = ["--model", args.model, "--size", str(args.size), "--threads", str(threads)]
        if args.weights:
            extra += ["--weights", args.weights]
        memory_counts = [int(c) for c in args.memory_images.split(",")]
        memory_rows = child_memory_rows(__file__, ("ours", "chapter"), memory_counts, extra)

    print(f"\n{load_line()}")
    print(f"activations, {args.model} ({len(ours_layers)} layers), {backend}, {threads} threads")
    print(
        "| images | ours warm s | chapter warm s | chapter/ours | target | cpu-time ratio | "
        "ours/forward (<= 1.3x) |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, timings, ratio, vs_forward in rows:
        cpu_ratio = timings["chapter"].median_cpu / timings["ours"].median_cpu
        print(
            f"| {n} | {timings['ours'].median:.3f} | {timings['chapter'].median:.3f} | "
            f"{ratio:.2f}x | >= {TARGET_VS_CHAPTER}x {verdict(ratio >= TARGET_VS_CHAPTER)} | "
            f"{cpu_ratio:.2f}x | {vs_forward:.2f}x {verdict(vs_forward <= TARGET_VS_FORWARD)} |"
        )
    print(
        f"| first call, {args.first_images} | {first.ours:.2f} | {first.chapter:.2f} | "
        f"{first.chapter / first.ours:.2f}x | ours <= chapter {verdict(first.ok)} | "
        f"{first.chapter_cpu / first.ours_cpu:.2f}x | |"
    )
    print_memory_rows(memory_rows)
    for n, _, ratio, vs_forward in rows:
        print(
            f"RESULT backend={backend} model={args.model} images={n} chapter/ours = {ratio:.2f}x "
            f"(target >= {TARGET_VS_CHAPTER}x) {verdict(ratio >= TARGET_VS_CHAPTER)}; "
            f"ours/forward = {vs_forward:.2f}x (target <= {TARGET_VS_FORWARD}x) "
            f"{verdict(vs_forward <= TARGET_VS_FORWARD)}"
        )
    print(
        f"RESULT backend={backend} first call ({args.first_images} images, fresh model): ours "
        f"{first.ours:.2f}s, chapter {first.chapter:.2f}s (target: ours <= chapter) {verdict(first.ok)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
