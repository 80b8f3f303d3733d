"""Benchmark: the CAM family on the bundled convnet; Score-CAM batched vs a per-mask loop.

Subjects, same backend, same process, pinned threads:

- ``scorecam``: ``cc.cam(model, images, method="scorecam")``: the masked inputs of all
  images go through the cached compiled forward, ``batch_size`` per call (8 by
  default; ``--batch-size``), the last chunk padded.
- ``loop`` (the baseline, written plainly): per image, the target layer's activations
  from a Keras sub-model; per channel, the map upsampled (PIL bilinear), min-max
  normalised, multiplied into the image, and one ``predict_on_batch`` of that single
  masked image through a feature sub-model; the logit of the explained class from
  the Dense head's weights in NumPy; softmax over channels in NumPy. Same weights,
  same score (the logit), so the maps must agree (printed).

Printed: first calls (compilation included) and warm medians of both, their ratio,
then seconds per image of every method (warm median; Score-CAM's masked forwards
dominate its cost: one forward per non-constant channel per image).

Measured 2026-12-01 on the 2-core CPU box shared with other jobs (runs of one subject
varied by up to 1.6x), TensorFlow 2.21, Keras 3.15, 8 scenes of ``make_scenes(8,
seed=777)`` at 64 px, 2 threads, default batch sizes (510 masked forwards; maps equal
to 1.1e-7):

- Score-CAM warm median: ours 0.56 s, loop 1.76 s: loop/ours 3.1x; first call
  (compilation included): ours 1.03 s, loop 1.79 s: 1.7x. With 8 masks per call (the
  image default) ours was 0.77 s (3.5x against a loop of 2.70 s in that run): hence
  32 masked inputs per call by default (``cam.DEFAULT_MASK_BATCH_SIZE``).
- Warm seconds per image: gradcam 1.4 ms, gradcam++ 1.1 ms, xgradcam 1.5 ms,
  hirescam 0.7 ms, layercam 0.6 ms, scorecam 73.9 ms, eigencam 4.5 ms (the gradient
  methods differ only by noise: one forward/backward each; Eigen-CAM adds an SVD per
  image; Score-CAM one forward per non-constant channel).

Usage::

    KERAS_BACKEND=tensorflow python benchmarks/bench_cam.py --quick
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from _common import base_parser, prepare_process

LAYER = "conv4_relu"  # the bundled convnet's map that feeds its global pooling
FEATURES = "gap"
HEAD = "predictions"


def per_mask_loop(model: Any, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Score-CAM heatmaps the plain way: one forward per masked image."""
    import keras

    from convviz_check.render import resize_bilinear

    activations = keras.Model(model.inputs, model.get_layer(LAYER).output)
    features = keras.Model(model.inputs, model.get_layer(FEATURES).output)
    kernel, bias = model.get_layer(HEAD).get_weights()
    heatmaps = []
    for n in range(len(images)):
        a = np.asarray(activations.predict_on_batch(images[n : n + 1]))[0]
        scores, kept = [], []
        for k in range(a.shape[-1]):
            channel = a[:, :, k]
            if channel.max() == channel.min():
                continue  # no spatial information: no mask (as cc.cam)
            up = resize_bilinear(channel, images.shape[1:3])
            mask = (up - up.min()) / (up.max() - up.min())
            masked = images[n] * mask[:, :, None]
            feats = np.asarray(features.predict_on_batch(masked[None]))
            scores.append(float((feats @ kernel + bias)[0, classes[n]]))
            kept.append(k)
        raw = np.zeros(a.shape[:2])
        if kept:
            e = np.exp(np.array(scores) - max(scores))
            for k, w in zip(kept, e / e.sum(), strict=True):
                raw += w * a[:, :, k]
        relu = np.maximum(raw, 0)
        heatmaps.append(relu / relu.max() if relu.max() > 0 else relu)
    return np.stack(heatmaps)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="scenes (default 8, quick 4)")
    parser.add_argument("--batch-size", type=int, default=None, help="inputs per call (ours)")
    parser.set_defaults(warmup=0)
    args = parser.parse_args(argv)
    n = args.images or (4 if args.quick else 8)
    repeats = args.repeats or (2 if args.quick else 3)

    threads = prepare_process(args.threads)

    from _common import header, interleaved_median_times, median_time, pin_framework_threads

    import convviz_check as cc
    from convviz_check import backends, examples
    from convviz_check.explain.cam import METHODS

    backend = backends.current_backend()
    pinned = pin_framework_threads(threads)
    print(header(pinned))
    model = examples.load_example_model("convnet")
    images = examples.make_scenes(n, seed=777).floats

    def ours() -> Any:
        return cc.cam(model, images, method="scorecam", batch_size=args.batch_size)

    t0 = time.perf_counter()
    result = ours()
    first_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference = per_mask_loop(model, images, result.class_index)
    first_loop = time.perf_counter() - t0
    masks = int(
        sum(
            (a.reshape(-1, a.shape[-1]).max(0) > a.reshape(-1, a.shape[-1]).min(0)).sum()
            for a in cc.activations(model, images, layers=[LAYER])[LAYER]
        )
    )
    diff = float(np.abs(reference - result.heatmap).max())
    print(f"{n} images, {masks} masked forwards; max |heatmap ours - loop| = {diff:.2e}")
    print(f"first call: ours {first_ours:.2f}s, loop {first_loop:.2f}s")
    timings = interleaved_median_times(
        {"ours": ours, "loop": lambda: per_mask_loop(model, images, result.class_index)},
        repeats=repeats,
        warmup=0,
    )
    for name, (median, runs) in timings.items():
        print(f"{name:5s} median {median:.3f}s  runs " + " ".join(f"{t:.3f}" for t in runs))
    ratio = timings["loop"][0] / timings["ours"][0]
    print(
        f"RESULT backend={backend} scorecam images={n} masks={masks} batch_size="
        f"{args.batch_size or 'default'} loop/ours warm = {ratio:.2f}x, first call = "
        f"{first_loop / first_ours:.2f}x"
    )

    per_image = {}
    for method in METHODS:
        median, _ = median_time(
            lambda m=method: cc.cam(model, images, method=m, batch_size=args.batch_size),
            repeats=repeats,
            warmup=1,
        )
        per_image[method] = median / n
    print(
        f"RESULT backend={backend} s/image (warm, {n} images, convnet 64 px): "
        + ", ".join(f"{m} {t * 1e3:.1f} ms" for m, t in per_image.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
