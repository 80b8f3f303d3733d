"""Benchmark: the CAM family on torch vs pytorch-grad-cam on the same Keras model.

Subject: ``cc.cam(model, images, method=...)`` under ``KERAS_BACKEND=torch``, top class,
logit score (``"auto"`` on a softmax head), the target layer named explicitly.

Peer: pytorch-grad-cam 1.5.7 (PyPI ``grad-cam``, an optional benchmark dependency:
``pip install --no-deps grad-cam==1.5.7 ttach opencv-python-headless scikit-learn``). Under
torch a Keras model is a ``torch.nn.Module`` and each Keras layer fires torch's forward
hooks, so pytorch-grad-cam hooks the same Keras layer of the same architecture:

- its model is a copy of ours (same builder, ``set_weights`` from ours) that outputs the
  logits (the same score ours differentiates), wrapped in a module that takes NCHW
  images and permutes them to the channels-last layout the Keras model expects; a
  ``reshape_transform`` permutes the hooked channels-last maps back to NCHW;
- the copy's weights are frozen and the wrapper makes its input require a gradient
  (the cheapest set-up that lets the hooked maps carry one: with trainable weights the
  backward would compute every weight's gradient too);
- each image's target is ``ClassifierOutputTarget`` of the class ours explained;
- Score-CAM runs 64 masked inputs per forward on both sides (its ``batch_size = 64``,
  ours ``batch_size=64``), on every channel.

Models: a mini-Xception (Arriaga et al. 2017: two 3x3 convolutions, four residual
blocks of separable convolutions, 16 to 128 channels) on 64x64x1 inputs with 7 classes,
target layer its last block's output (4x4x128), NumPy-seeded weights; and
``keras.applications.ResNet50(weights=None)`` at 224x224 (seeded by Keras), target
``conv5_block3_out`` (7x7x2048).

Printed: per model, image count and method the warm medians (interleaved rounds after
a warm-up; Score-CAM on ResNet50: one call each) and ``theirs/ours`` against its target
(>= 1.2x for the gradient methods and Score-CAM, >= 1.0x for Eigen-CAM), the split of
one warm 16-image ``cc.cam`` call, the first call on a fresh model object (ours no
slower than theirs), with ``--memory`` the peak RSS of each side in a fresh process,
and with ``--profile`` where a warm 1-image call goes (on one thread: with two, the
OpenMP threads of a 1-image call on this loaded 2-core box spend most of its wall time
waiting for each other): its split, cProfile's own time by category with the plain
layer calls (below) on and off, and both timed interleaved.

Where the time goes. Before 2026-12-07 a torch call ran its batch in passes of 2, each
paying Keras' per-layer Python again (16 images: 8 passes, ~10 ms of Python each); it
now runs passes sized to the model's largest map (``backends.torch.PASS_MAP_BYTES``: one
pass for the mini-Xception, 9 images for ResNet50 at 224 px). That left a fixed cost
per forward, which at 1 image was the whole call. ``--profile`` on 2026-12-08 (1
thread, mini-Xception, 1 image): the forward was 98-99% of the wall time (backward
0.2 ms, host copies, the NumPy rule and normalisation under 0.1 ms each, setup 0.58 ms,
what follows the call 0.37 ms); under cProfile, with every layer called through
``Layer.__call__``, its machinery was 22-24% of the own time and Keras' tree
utilities (most of them called by it) 16-27%, the torch kernels 17-29%, Keras' ops in
Python 12-15%. Now the replayed layers run ``layer.call`` directly where
``Layer.__call__`` would change nothing (``backends._torch_calls``, bit-identical), the
weights to freeze are kept per compiled function and the checked layer and its note are
cached with the model. Warm 1-image Grad-CAM on one thread, interleaved in one process
(load 2-3): 11.7 ms through ``Layer.__call__``, 7.2 ms plainly, pytorch-grad-cam
16.8 ms; setup 0.58 -> 0.13 ms; under cProfile the machinery fell to 1-7%. ResNet50 at
1 image gains ~7% (its kernels are 70-80% of the call).

Measured 2026-12-08 after that change, 2 threads, load 3.3-4.2 (runs of one subject
varied up to 5x at 1 image: read the ratios), theirs/ours warm:

- mini-Xception, 1 / 16 / 64 images: gradient methods 1.68-4.02x / 2.87-8.48x /
  3.73-4.21x; Score-CAM (64 masks per forward) 1.55x / 6.33x; Eigen-CAM 1.87x / 2.61x /
  1.90x. Rerun at 1 image at load 0.9 (11 rounds): gradient methods 2.10-2.18x (ours
  7-8 ms, theirs 14-17 ms), Eigen-CAM 1.93x; in one process at that load, interleaved,
  the same call through ``Layer.__call__`` took 11.4-12.0 ms (1.39-1.44x), plainly
  7.1-7.6 ms (2.21-2.30x), pytorch-grad-cam 16.4-16.8 ms. Before the change (load
  1.4-1.8): 1 image 1.01-1.27x (about 16 ms per call on both sides), 16 images
  2.11-2.51x, 64 images 2.55-3.37x; before 2026-12-07 (16 images, idle box)
  0.47-0.55x, Score-CAM 0.43x, Eigen-CAM 0.85x.
- ResNet50 at 224 px, 1 / 8 images: gradient methods 1.14-1.87x / 1.85-5.35x
  (Grad-CAM++ 1.14x at 1 image: its rounds spread 1.07-1.68 s ours, 0.84-2.60 s
  theirs); Eigen-CAM 2.40x / 3.02x. Rerun at 1 image at load 0.9-1.2 (5 rounds):
  gradient methods 1.82-1.95x (0.13 s vs 0.23-0.25 s), Eigen-CAM 2.83x.
- first call (fresh model, Grad-CAM), ours / theirs: mini-Xception 16 images 0.024 /
  0.100 s (0.033 / 0.124 s at load 0.9), ResNet50 8 images 0.49 / 1.71 s (0.54 / 1.57 s
  at load 1.2).

Re-measured 2026-12-08 at load 0.5-2, before the plain layer calls, ResNet50 at 224 px:
1 image: Grad-CAM 1.60x, Grad-CAM++ 1.53x, LayerCAM 1.59x, Eigen-CAM 2.37x; 8 images:
2.45x, 2.15x, 2.05x, 3.43x; 64 images (theirs 8 per call, below): 2.14x, 2.11x, 2.30x,
2.80x; first call (8 images) 1.03 s vs 2.62 s. Where one warm 16-image Grad-CAM goes:
1.43 s in 2 passes, forward 99%, backward 0.4%, everything else under 1%.

ResNet50 at 64 images (2026-12-08, load 8): one pytorch-grad-cam call records the whole
backbone of all 64 images for autograd and passed 10 GB of resident memory (a watchdog
killed it there; the first full run of this script was OOM-killed at 24 GB), while
``cc.cam`` peaked at 2.5 GB (1.24 GB after the model build) in passes of 9 images. To
time that size, ``--peer-chunk 8`` calls pytorch-grad-cam on 8 images at a time, as its
user would have to.

Score-CAM on ResNet50 (2048 masked inputs for one image) runs only with
``--resnet-scorecam``, at 1 image, one call each. Measured 2026-12-08, 2 threads, load
2.2-5 (the load changed between the two calls: read the CPU-time ratio): ours (64
masked inputs per forward, run in passes of 9) 411 s, the process's peak RSS 2.65 GB;
pytorch-grad-cam with its Score-CAM ``batch_size`` lowered to 16 (``--peer-masks 16``;
an earlier run at 64 passed 10 GB within 15 s and was stopped) 670 s, the RSS growing
to 7.3 GB during its call (it builds all 2048 masked images at once, 1.2 GB, and its
hook keeps the hooked maps of every masked forward, 0.8 GB). theirs/ours 1.63x wall,
1.28x CPU time: a compute-bound call (2048 ResNet50 forwards), where the per-call
savings above matter little.

Usage::

    KERAS_BACKEND=torch python benchmarks/bench_torch_peer.py --quick
    KERAS_BACKEND=torch python benchmarks/bench_torch_peer.py --images 1,16,64 --memory
"""

from __future__ import annotations

import os
import sys
import time
import types
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import add_memory_flags, base_parser, prepare_process
from _torch_call_split import print_profile, print_split, split

GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
ALL_METHODS = (*GRADIENT_METHODS, "scorecam", "eigencam")
TARGET = {m: 1.2 for m in (*GRADIENT_METHODS, "scorecam")} | {"eigencam": 1.0}
MASKS_PER_FORWARD = 64
MODELS = {
    # name: (input shape, target layer)
    "mini": ((64, 64, 1), "add_128"),
    "resnet50": ((224, 224, 3), "conv5_block3_out"),
}


def import_peer() -> Any:
    """``pytorch_grad_cam``, imported with a stand-in ``torchvision``.

    Its package ``__init__`` imports modules (ablation layers, metrics) that import
    torchvision at module level, and no torchvision build matches the CPU torch here;
    the CAM classes measured never call it. Real torchvision, where installed, is used.
    """
    try:
        import torchvision  # noqa: F401
    except ImportError:

        class Stub(types.ModuleType):
            def __getattr__(self, name: str) -> Any:
                return object  # a name imported at module level, never called here

        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            stub = Stub(name)
            stub.__path__ = []  # a package: its submodules can be imported
            sys.modules[name] = stub
    import pytorch_grad_cam
    import pytorch_grad_cam.score_cam

    # Its Score-CAM wraps every image's batches in a tqdm progress bar: silenced (and
    # its cost taken off theirs).
    pytorch_grad_cam.score_cam.tqdm.tqdm = lambda iterable, *a, **k: iterable
    return pytorch_grad_cam


def mini_xception(num_classes: int = 7, size: int = 64, logits: bool = False) -> Any:
    """The mini-Xception of Arriaga et al. (emotion recognition, 64x64x1, 7 classes),
    with a Dense head after global pooling; ``logits`` leaves off the final softmax."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1))
    x = inputs
    for i in range(2):
        x = layers.Conv2D(8, 3, use_bias=False, name=f"base_conv{i}")(x)
        x = layers.BatchNormalization(name=f"base_bn{i}")(x)
        x = layers.Activation("relu", name=f"base_relu{i}")(x)
    for filters in (16, 32, 64, 128):
        residual = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x)
        residual = layers.BatchNormalization()(residual)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.Add(name=f"add_{filters}")([x, residual])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    if not logits:
        x = layers.Activation("softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="mini_xception")


def build(name: str, logits: bool = False) -> Any:
    """A fresh model ``name`` (``mini`` with seeded weights, ``resnet50`` as Keras
    initialises it); ``logits``: without the final softmax."""
    import keras

    if name == "mini":
        model = mini_xception(logits=logits)
        rng = np.random.default_rng(0)
        for v in model.weights:
            leaf = v.path.rsplit("/", 1)[-1]
            base = 1.0 if leaf in ("gamma", "moving_variance") else 0.0
            v.assign(base + 0.2 * rng.standard_normal(tuple(v.shape)).astype(np.float32))
        return model
    keras.utils.set_random_seed(0)
    return keras.applications.ResNet50(
        weights=None, classifier_activation=None if logits else "softmax"
    )


def peer_model(ours: Any, name: str) -> tuple[Any, Any]:
    """``(torch module taking NCHW images -> logits, the hooked Keras layer)``: a
    logits copy of ``ours`` with its weights, frozen."""
    import torch

    copy = build(name, logits=True)
    copy.set_weights(ours.get_weights())
    for v in copy.variables:
        value = getattr(v, "value", None)
        if isinstance(value, torch.Tensor):
            value.requires_grad_(False)

    class NCHW(torch.nn.Module):
        def __init__(self, keras_model: Any) -> None:
            super().__init__()
            self.keras_model = keras_model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled():  # the hooked maps carry a gradient
                x = x.detach().requires_grad_(True)
            return self.keras_model(x.permute(0, 2, 3, 1), training=False)

    return NCHW(copy), copy.get_layer(MODELS[name][1])


def peer_runner(
    peer: Any, module: Any, layer: Any, method: str, chunk: int = 0, masks: int = 0
) -> Callable[..., np.ndarray]:
    """``run(images NHWC, classes) -> (N, H, W)`` by pytorch-grad-cam's ``method``.

    ``chunk`` > 0 calls it on that many images at a time, as its user must where one call
    on the whole batch does not fit in memory (ResNet50 at 64 images records the whole
    backbone of every image for autograd: more than 10 GB here). ``masks``: its
    Score-CAM's masked inputs per forward (default ``MASKS_PER_FORWARD``)."""
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classes = {
        "gradcam": peer.GradCAM,
        "gradcam++": peer.GradCAMPlusPlus,
        "xgradcam": peer.XGradCAM,
        "hirescam": peer.HiResCAM,
        "layercam": peer.LayerCAM,
        "scorecam": peer.ScoreCAM,
        "eigencam": peer.EigenCAM,
    }
    explainer = classes[method](
        model=module, target_layers=[layer], reshape_transform=lambda t: t.permute(0, 3, 1, 2)
    )
    if method == "scorecam":
        explainer.batch_size = masks or MASKS_PER_FORWARD

    def call(images: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        targets = [ClassifierOutputTarget(int(c)) for c in wanted]
        return explainer(input_tensor=x, targets=targets)

    def run(images: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        if chunk <= 0 or len(images) <= chunk:
            return call(images, wanted)
        parts = [
            call(images[i : i + chunk], wanted[i : i + chunk]) for i in range(0, len(images), chunk)
        ]
        return np.concatenate(parts)

    return run


def _memory_child(subject: str, name: str, method: str, n: int) -> None:
    from _common import memory_report, random_images, reset_peak_rss

    import convviz_check as cc

    shape, layer = MODELS[name]
    model = build(name)
    images = random_images(n, shape[0], seed=0, channels=shape[2])
    classes = np.zeros(n, np.int64)
    run: Callable[[], Any]
    if subject == "ours":
        run = lambda: cc.cam(model, images, method=method, layer=layer, class_index=classes)  # noqa: E731
    else:
        module, hooked = peer_model(model, name)
        peer = peer_runner(import_peer(), module, hooked, method)
        run = lambda: peer(images, classes)  # noqa: E731
    base = reset_peak_rss()
    t0 = time.perf_counter()
    run()
    memory_report(subject=subject, images=n, base_mb=base, seconds=time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", default=None, help="image counts (default 1,16,64; quick 16)")
    parser.add_argument("--models", default="mini,resnet50", help="mini and/or resnet50")
    parser.add_argument("--methods", default=",".join(ALL_METHODS), help="CAM methods")
    parser.add_argument("--resnet-images", default=None, help="image counts for ResNet50")
    parser.add_argument(
        "--peer-chunk",
        type=int,
        default=0,
        help="pytorch-grad-cam on this many ResNet50 images per call (0: the whole batch)",
    )
    parser.add_argument(
        "--resnet-scorecam",
        action="store_true",
        help="also Score-CAM on ResNet50 at 1 image (2048 masked inputs; minutes per call)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also where a warm 1-image call goes: its split, cProfile by category with the "
        "plain layer calls on and off, and their interleaved times",
    )
    parser.add_argument(
        "--peer-masks",
        type=int,
        default=MASKS_PER_FORWARD,
        help="pytorch-grad-cam's Score-CAM batch_size on ResNet50 (masked inputs per forward)",
    )
    parser.add_argument("--model", default="mini", help=argparse_hidden())
    parser.add_argument("--method", default="gradcam", help=argparse_hidden())
    add_memory_flags(parser)
    args = parser.parse_args(argv)
    counts = [int(c) for c in (args.images or ("16" if args.quick else "1,16,64")).split(",")]
    resnet_counts = [
        int(c) for c in (args.resnet_images or ("8" if args.quick else "1,8")).split(",")
    ]
    repeats = args.repeats or 3
    methods = [m for m in args.methods.split(",") if m]
    os.environ.setdefault("KERAS_BACKEND", "torch")
    threads = prepare_process(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="The structure of `inputs`")

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
        _memory_child(args.memory_child, args.model, args.method, args.batch)
        return 0

    import convviz_check as cc
    from convviz_check import backends

    if backends.current_backend() != "torch":
        raise SystemExit("run with KERAS_BACKEND=torch (pytorch-grad-cam is torch only)")
    peer = import_peer()
    print(header(pinned))
    print(load_line())
    rows: list[tuple[str, str, str, float, float, float, float]] = []
    for name in [m for m in args.models.split(",") if m]:
        shape, layer = MODELS[name]
        model = build(name)
        module, hooked = peer_model(model, name)
        sizes = counts if name == "mini" else resnet_counts
        for n in sizes:
            images = random_images(n, shape[0], seed=0, channels=shape[2])
            for method in methods:
                kw: dict[str, Any] = {"layer": layer}
                if method == "scorecam":
                    # 2048 masks per image on ResNet50 (only with --resnet-scorecam, 1 image);
                    # n * 128 on the mini model.
                    big = n > 1 or not args.resnet_scorecam
                    if (name == "mini" and n > 16) or (name == "resnet50" and big):
                        continue
                    kw["batch_size"] = MASKS_PER_FORWARD
                chunk = args.peer_chunk if name == "resnet50" else 0
                masks = args.peer_masks if name == "resnet50" else MASKS_PER_FORWARD
                if name == "resnet50" and method == "scorecam":
                    # Minutes per call: one timed call each, no warm-up (a first call's
                    # set-up is ~1 s of them).
                    timings = one_call_each(peer, module, hooked, model, images, kw, masks)
                else:
                    ours_result = cc.cam(model, images, method=method, **kw)
                    wanted = ours_result.class_index
                    theirs = peer_runner(peer, module, hooked, method, chunk, masks)
                    theirs(images, wanted)  # warm-up
                    timings = interleaved_times(
                        {
                            "ours": lambda m=method, x=images, kw=kw, f=model: cc.cam(
                                f, x, method=m, **kw
                            ),
                            "theirs": lambda x=images, w=wanted, t=theirs: t(x, w),
                        },
                        repeats=repeats,
                        warmup=args.warmup,
                    )
                ours_s, theirs_s = timings["ours"].median, timings["theirs"].median
                cpu_ratio = timings["theirs"].median_cpu / timings["ours"].median_cpu
                label = f"{n} ({chunk} per peer call)" if 0 < chunk < n else str(n)
                rows.append((name, label, method, ours_s, theirs_s, theirs_s / ours_s, cpu_ratio))
                print(
                    f"{name} {n:3d} images {method:10s} ours {ours_s:.3f}s theirs {theirs_s:.3f}s "
                    f"theirs/ours {theirs_s / ours_s:.2f}x (>= {TARGET[method]}x "
                    f"{verdict(theirs_s / ours_s >= TARGET[method])}); runs ours "
                    f"{timings['ours'].runs()} theirs {timings['theirs'].runs()}",
                    flush=True,
                )
        sixteen = random_images(16, shape[0], seed=0, channels=shape[2])
        print_split(
            f"where one warm cc.cam(gradcam) of 16 images goes, {name}",
            split(model, sixteen, layer, "gradcam"),
        )
        if args.profile:
            one = random_images(1, shape[0], seed=0, channels=shape[2])
            print_profile(model, one, layer, repeats=max(repeats, 20))

    # First call: a fresh model object each (built outside the timing).
    firsts = {}
    for name in [m for m in args.models.split(",") if m]:
        shape, layer = MODELS[name]
        n_first = 16 if name == "mini" else 8
        x = random_images(n_first, shape[0], seed=1, channels=shape[2])
        first = first_calls(
            lambda name=name: build(name),
            lambda fresh, layer=layer, x=x: cc.cam(fresh, x, layer=layer, class_index=0),
            lambda fresh, name=name, x=x: peer_runner(peer, *peer_model(fresh, name), "gradcam")(
                x, np.zeros(len(x), np.int64)
            ),
        )
        firsts[name] = (n_first, first)

    memory_rows = []
    if args.memory:
        mem_counts = [int(c) for c in args.memory_images.split(",")]
        for name in [m for m in args.models.split(",") if m]:
            extra = ["--model", name, "--method", "gradcam", "--threads", str(threads)]
            memory_rows += child_memory_rows(__file__, ("ours", "theirs"), mem_counts, extra)

    print(f"\n{load_line()}")
    print(f"torch, {threads} threads; theirs = pytorch-grad-cam {peer_version()}")
    print(
        "| model | images | method | ours warm s | theirs warm s | theirs/ours | target | cpu ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, n, method, ours_s, theirs_s, ratio, cpu_ratio in rows:
        print(
            f"| {name} | {n} | {method} | {ours_s:.3f} | {theirs_s:.3f} | {ratio:.2f}x | "
            f">= {TARGET[method]}x {verdict(ratio >= TARGET[method])} | {cpu_ratio:.2f}x |"
        )
    for name, (n_first, first) in firsts.items():
        print(
            f"| {name} | first call, {n_first} | gradcam | {first.ours:.3f} | {first.chapter:.3f} | "
            f"{first.chapter / first.ours:.2f}x | ours <= theirs {verdict(first.ok)} | "
            f"{first.chapter_cpu / first.ours_cpu:.2f}x |"
        )
    print_memory_rows(memory_rows)
    missed = [r for r in rows if r[5] < TARGET[r[2]]]
    print(f"RESULT torch peer: {len(rows) - len(missed)}/{len(rows)} rows meet their target")
    return 0


def one_call_each(
    peer: Any, module: Any, hooked: Any, model: Any, images: np.ndarray, kw: dict, masks: int
) -> dict[str, Any]:
    """One timed Score-CAM call of each side (``{"ours": Timing, "theirs": Timing}``),
    ours first (its classes are the peer's targets); prints each side's peak RSS so far."""
    from _common import Timing, peak_rss_mb, timed

    import convviz_check as cc

    out = {"ours": Timing(), "theirs": Timing()}
    wall, cpu, result = timed(lambda: cc.cam(model, images, method="scorecam", **kw))
    out["ours"].wall.append(wall)
    out["ours"].cpu.append(cpu)
    print(f"  ours: {wall:.1f} s, peak RSS so far {peak_rss_mb():.0f} MB", flush=True)
    theirs = peer_runner(peer, module, hooked, "scorecam", 0, masks)
    wall, cpu, _ = timed(lambda: theirs(images, result.class_index))
    out["theirs"].wall.append(wall)
    out["theirs"].cpu.append(cpu)
    print(f"  theirs ({masks} per forward): {wall:.1f} s, peak RSS {peak_rss_mb():.0f} MB")
    return out


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def peer_version() -> str:
    from importlib.metadata import version

    try:
        return version("grad-cam")
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
