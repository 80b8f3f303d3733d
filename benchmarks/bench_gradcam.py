"""Benchmark: batched Grad-CAM of Xception-41 vs the chapter's per-image routine.

Subject: ``cc.gradcam(model, images)`` -- one compiled forward/backward through the
rewired graph per ``batch_size`` images (8 by default; ``--batch-size``), top class,
logit score, auto target layer.

Baselines, same backend, same process, pinned threads, interleaved repeats:

- ``chapter``: our own faithful re-implementation of the reference chapter's routine
  (Deep Learning with Python, 3rd ed., ch. 10): two eager sub-models (input -> last
  conv layer, and a classifier model rebuilt from the head layers), one image at a
  time, the backend's own gradient (``tf.GradientTape`` / ``jax.grad`` /
  ``.backward()``), the heatmap in NumPy. Targets (this CPU): ours >= 3x
  faster on JAX, >= 1.2x on TensorFlow, >= 1.0x on torch.
- ``floor``: what any Grad-CAM must at least do: the compiled backbone forward
  (``predict_on_batch``) plus a compiled value-and-grad of the head alone on the
  resulting maps, with the same images per call as ours. Target: ours <= 1.1x the floor.

Measured 2026-11-26 on the idle 2-core CPU box, 32 images at 299 px (the full run), 2
threads, ours at its default of 8 images per call (wall seconds, one timed round after
a first untimed one):

==========  ======  =======  ======  ============  ==========
backend     ours    chapter  floor   chapter/ours  ours/floor
==========  ======  =======  ======  ============  ==========
TF 2.21     5.56    41.71    6.40    7.50x         0.87x
torch       11.03   16.03    12.39   1.45x         0.89x
JAX         31.07   36.60    33.38   1.18x         0.93x
==========  ======  =======  ======  ============  ==========

- The same run with all 32 images in one call (before ``batch_size``): TF 5.69x / 1.07x,
  torch 0.61x (ours 30.2 s, peak RSS 10.9 GB) / 0.79x, JAX 0.97x / 0.89x. One large
  batch is slower per image than chunks of 8 on this CPU, hence the default (the
  per-size table is next to ``gradcam.DEFAULT_BATCH_SIZE``).
- JAX misses its >= 3x target, and no implementation can meet it here: the chapter's
  eager routine runs the same XLA CPU kernels as a jitted program (a jitted forward of
  this model: 0.96 s/image at batch 1 to 8; eager, warm: 1.25 s/image), so even the
  floor is only 1.10x faster than the chapter (36.60 / 33.38 s). The issue's premise
  (jitted 0.82 s vs eager 3.3 s) did not reproduce; eager's *first* call took 7.6 s
  (per-op compilation), which a warm-up excludes. XLA's CPU flags tried
  (``--xla_cpu_experimental_onednn_custom_call``, XNN graph fusion) changed the forward
  by -11% to +9%.
- No accelerator was lent to this task, so the batching factor on a GPU is not measured.

Usage::

    KERAS_BACKEND=jax python benchmarks/bench_gradcam.py --quick
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
from _common import base_parser, prepare_process

TARGET_VS_CHAPTER = {"jax": 3.0, "tensorflow": 1.2, "torch": 1.0}
TARGET_VS_FLOOR = 1.1


def _head_layers(model: Any) -> list[Any]:
    """The classifier layers after the backbone, in order (the chapter's
    ``classifier_layer_names``: here keras-hub's ``pooler``, ``output_dropout``,
    ``predictions``)."""
    names = [layer.name for layer in model.layers]
    after = names[names.index(model.backbone.name) + 1 :]
    return [model.get_layer(n) for n in after]


def _classifier_model(model: Any) -> Any:
    import keras

    feature_shape = tuple(model.backbone.output.shape[1:])
    x_in = keras.Input(feature_shape)
    x = x_in
    for layer in _head_layers(model):
        x = layer(x)
    return keras.Model(x_in, x, name="classifier_head")


def _chapter_gradients(backend: str, last_conv_model: Any, classifier_model: Any) -> Any:
    """``fn(image (1, H, W, C)) -> (grads, last_conv_output)`` in the chapter's style for
    the running backend: eager, per image, the top class of that image."""
    from keras import ops

    if backend == "tensorflow":
        import tensorflow as tf

        def grads_tf(img):
            with tf.GradientTape() as tape:
                last = last_conv_model(img)
                tape.watch(last)
                preds = classifier_model(last)
                top = tf.argmax(preds[0])
                channel = preds[:, top]
            return tape.gradient(channel, last).numpy(), last.numpy()

        return grads_tf
    if backend == "jax":
        import jax

        def loss_fn(last):
            preds = classifier_model(last)
            top = ops.argmax(preds[0])
            return preds[:, top][0]

        grad_fn = jax.grad(loss_fn)

        def grads_jax(img):
            last = last_conv_model(img)
            return np.asarray(grad_fn(last)), np.asarray(last)

        return grads_jax
    if backend == "torch":

        def grads_torch(img):
            last = last_conv_model(img)
            last = last.clone().detach().requires_grad_(True)
            preds = classifier_model(last)
            top = ops.argmax(preds[0])
            channel = preds[:, top]
            channel.backward()
            return last.grad.detach().cpu().numpy(), last.detach().cpu().numpy()

        return grads_torch
    raise SystemExit(f"unsupported backend {backend!r}")


def _chapter_heatmap(grads: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The chapter's NumPy part: channel weights = mean gradient, weighted sum, ReLU,
    divide by the max (our sum instead of its channel mean: the same after dividing)."""
    pooled = grads.mean(axis=(0, 1, 2))
    heatmap = (last[0] * pooled).sum(axis=-1)
    heatmap = np.maximum(heatmap, 0)
    peak = heatmap.max()
    return heatmap / peak if peak > 0 else heatmap


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="images (default 32, quick 8)")
    parser.add_argument("--size", type=int, default=299, help="image side")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per call (ours and floor)"
    )
    parser.add_argument("--weights", default=None, help="existing .weights.h5 to load")
    parser.set_defaults(warmup=1)
    args = parser.parse_args(argv)
    batch = args.batch or (8 if args.quick else 32)
    repeats = args.repeats or (2 if args.quick else 3)

    threads = prepare_process(args.threads)

    from _common import (
        build_xception41,
        header,
        interleaved_median_times,
        peak_rss_mb,
        pin_framework_threads,
        random_images,
    )

    import convviz_check as cc
    from convviz_check import backends

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    pinned = pin_framework_threads(threads)
    print(header(pinned))
    t0 = time.perf_counter()
    model, weights = build_xception41(image_size=args.size, weights_path=args.weights)
    print(f"built Xception-41 in {time.perf_counter() - t0:.1f}s, weights {weights}")
    images = random_images(batch, args.size, seed=0)

    # --- chapter: eager sub-models, one image at a time
    last_conv_model = model.backbone  # input -> block14_sepconv2_act
    classifier_model = _classifier_model(model)
    chapter_grads = _chapter_gradients(backend, last_conv_model, classifier_model)

    def chapter():
        return np.stack([_chapter_heatmap(*chapter_grads(images[i : i + 1])) for i in range(batch)])

    # --- floor: compiled backbone forward + compiled head value-and-grad
    num_classes = int(model.output.shape[-1])

    def head_loss(outputs, aux):
        from keras import ops

        head = outputs[0]
        top = ops.argmax(ops.stop_gradient(head), axis=-1)
        return ops.sum(head * ops.one_hot(top, num_classes, dtype=head.dtype))

    head_grad = backends.make_value_and_grad(classifier_model, head_loss, wrt=0)

    from convviz_check.explain.gradcam import DEFAULT_BATCH_SIZE

    chunk = args.batch_size or DEFAULT_BATCH_SIZE

    def floor():
        out = []
        for i in range(0, batch, chunk):  # the same images per call as ours
            feats = np.asarray(last_conv_model.predict_on_batch(images[i : i + chunk]))
            out.append(head_grad([feats], None)[2])
        return out

    def ours():
        return cc.gradcam(model, images, batch_size=chunk)

    # First calls compile (jit / tf.function) and check that the three agree.
    t0 = time.perf_counter()
    cam = ours()
    print(
        f"first gradcam (rewire + compile) {time.perf_counter() - t0:.1f}s, layer "
        f"{cam.layer!r}, {chunk} images per call"
    )
    t0 = time.perf_counter()
    reference = chapter()
    print(f"first chapter run {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    floor()
    print(f"first floor run {time.perf_counter() - t0:.1f}s")
    diff = float(np.abs(reference - cam.heatmap).max())
    print(f"max |heatmap ours - chapter| = {diff:.2e} (degenerate: {int(cam.degenerate.sum())})")

    timings = interleaved_median_times(
        {"ours": ours, "chapter": chapter, "floor": floor}, repeats=repeats, warmup=0
    )
    for name, (median, runs) in timings.items():
        print(f"{name:8s} median {median:.3f}s  runs " + " ".join(f"{t:.3f}" for t in runs))
    ours_t, chapter_t, floor_t = (timings[k][0] for k in ("ours", "chapter", "floor"))
    speedup = chapter_t / ours_t
    vs_floor = ours_t / floor_t
    target = TARGET_VS_CHAPTER.get(backend, 1.0)
    print(f"peak RSS {peak_rss_mb():.0f} MiB")
    print(
        f"RESULT backend={backend} batch={batch} size={args.size} threads={threads} "
        f"chapter/ours = {speedup:.2f}x (target >= {target}x) "
        f"{'OK' if speedup >= target else 'BELOW TARGET'}; "
        f"ours/floor = {vs_floor:.2f}x (target <= {TARGET_VS_FLOOR}x) "
        f"{'OK' if vs_floor <= TARGET_VS_FLOOR else 'ABOVE TARGET'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
