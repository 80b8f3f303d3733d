"""Benchmark: every conv/pool activation of Xception-41 vs one forward pass.

Subject: ``cc.activations(model, images)`` (44 layers: every Conv2D, SeparableConv2D
and MaxPooling2D of the backbone), which runs one cached multi-output model.
Baseline: ``model.predict_on_batch(images)`` of the full classifier (one compiled
forward pass). Both in one process, threads pinned, warm-up first, then the median of
interleaved repeats. Target: ratio <= 1.3.

Measured 2026-11-25 on the 2-core CPU box, batch 8, 299x299, 2 threads, --quick, after
activations moved from ``predict_on_batch`` to ``backends.make_forward`` (median ratio;
ratio of minima in brackets; peak RSS forward only -> with activations):
- tensorflow: 1.06x (1.16x); forward 2.8 s; 1254 -> 1899 MiB;
- torch: 0.90x (1.02x); forward 6.5 s; 3235 -> 3576 MiB;
- jax: 1.06x (1.01x); forward 9.7 s; 1613 -> 2153 MiB.
Before that change TF measured 1.92x-2.52x: ``predict_on_batch`` calls ``.numpy()``,
which copies the 688 MiB of maps (forward 11.3 s, the 44-output graph returning tensors
13.9 s, through predict_on_batch 22.2 s, on a loaded machine); ``np.asarray`` on an
EagerTensor does not copy.

Usage::

    KERAS_BACKEND=jax python benchmarks/bench_activations.py --quick
"""

from __future__ import annotations

import os
import sys
import time

from _common import base_parser, prepare_process

TARGET_RATIO = 1.3


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per batch")
    parser.add_argument("--size", type=int, default=299, help="image side")
    parser.add_argument("--weights", default=None, help="existing .weights.h5 to load")
    parser.set_defaults(warmup=0)  # the first (compiling) calls are the warm-up
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)

    threads = prepare_process(args.threads)

    from _common import (
        build_xception41,
        header,
        interleaved_median_times,
        peak_rss_mb,
        pin_framework_threads,
        random_images,
        traced_peak_mb,
    )

    import convviz_check as cc
    from convviz_check import graph

    pinned = pin_framework_threads(threads)
    print(header(pinned))
    t0 = time.perf_counter()
    model, weights = build_xception41(image_size=args.size, weights_path=args.weights)
    print(f"built Xception-41 in {time.perf_counter() - t0:.1f}s, weights {weights}")
    images = random_images(args.batch, args.size, seed=0)
    layers = graph.default_activation_layers(model)

    def forward():
        return model.predict_on_batch(images)

    def all_activations():
        return cc.activations(model, images, batch_size=args.batch)

    # The first call of each compiles (jit / tf.function) and is the warm-up.
    t0 = time.perf_counter()
    forward()
    rss_forward = peak_rss_mb()
    print(
        f"first forward (compile) {time.perf_counter() - t0:.1f}s, peak RSS {rss_forward:.0f} MiB"
    )
    t0 = time.perf_counter()
    traced_acts = traced_peak_mb(all_activations)
    rss_acts = peak_rss_mb()
    print(
        f"first activations (build + compile) {time.perf_counter() - t0:.1f}s, "
        f"peak RSS {rss_acts:.0f} MiB, traced NumPy peak {traced_acts:.0f} MiB"
    )
    acts = all_activations()
    total_mb = sum(a.nbytes for a in acts.values()) / 2**20
    print(f"{len(acts)} layers, {total_mb:.0f} MiB of float32 maps")
    assert list(acts) == layers
    del acts

    timings = interleaved_median_times(
        {"forward": forward, "activations": all_activations}, repeats=repeats, warmup=args.warmup
    )
    fwd, acts_t = timings["forward"][0], timings["activations"][0]
    ratio = acts_t / fwd
    # The minimum is the run least disturbed by other processes on a shared machine;
    # printed next to the median (the target is judged on the median).
    ratio_min = min(timings["activations"][1]) / min(timings["forward"][1])
    print(
        f"forward (predict_on_batch) median {fwd:.3f}s  runs "
        + " ".join(f"{t:.3f}" for t in timings["forward"][1])
    )
    print(
        f"activations ({len(layers)} layers) median {acts_t:.3f}s  runs "
        + " ".join(f"{t:.3f}" for t in timings["activations"][1])
    )
    print(
        f"peak RSS after forward only {rss_forward:.0f} MiB, after activations "
        f"{rss_acts:.0f} MiB, at the end {peak_rss_mb():.0f} MiB"
    )
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    verdict = "OK" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(
        f"RESULT backend={backend} batch={args.batch} size={args.size} threads={threads} "
        f"ratio activations/forward = {ratio:.2f}x (target <= {TARGET_RATIO}x) {verdict}; "
        f"ratio of minima {ratio_min:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
