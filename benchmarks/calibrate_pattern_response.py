"""Calibrate the pattern-response judgment (``convviz_check.pattern_response``) on honest
retrains against sabotaged channels.

Models: the shortcut example's ``honest`` and ``retrain`` (seeds 11 and 12) and more
trainings of the same recipe (``--seeds``, default 21 22 23; trained once with
``shortcut.train`` and cached in ``--cache``, default a temporary directory, about a
minute each on a 2-core CPU).
Every model is golden once and new against every other: the ordered honest pairs. Then
each channel of a layer (every second one past 12 channels) of ``honest`` and
``retrain`` is sabotaged alone, four ways: zeroed, re-drawn at random (normal, the
layer's kernel spread), made a copy of another channel (kernel and batch
normalization), its own weights shuffled.

Per layer it prints the honest pairs' largest ``pattern_gap`` (the statistic the bound
``DEFAULT_MAX_GAP`` bounds), and for each bound in ``--bounds`` how many honest pairs
pass and how many sabotaged channels are caught: the numbers in
docs/reference.md and the comment next to the constant.

Run (about 10 minutes with the default three extra seeds, TensorFlow)::

    OMP_NUM_THREADS=1 KERAS_BACKEND=tensorflow python benchmarks/calibrate_pattern_response.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import load_line, prepare_process

KINDS = ("zero", "redraw", "copy", "shuffle")


def _models(seeds: list[int], cache: Path) -> dict[str, Any]:
    import convviz_check as cc
    from convviz_check.examples import shortcut

    models = {"honest": shortcut.load("honest"), "retrain": shortcut.load("retrain")}
    for seed in seeds:
        name = f"honest{seed}"
        path = cache / f"{name}.keras"
        if not path.exists():
            shortcut.SEEDS[name], shortcut.TRAINING_CUE[name] = seed, "random"
            cache.mkdir(parents=True, exist_ok=True)
            shortcut.train(name, verbose=0).save(path)
        models[name] = cc.load_model(path)
    return models


def _sabotaged(base: Any, kind: str, layer: str, channel: int) -> Any:
    import keras

    model = keras.models.clone_model(base)
    model.set_weights(base.get_weights())
    conv = model.get_layer(layer.replace("_relu", ""))
    kernel = np.array(conv.kernel.numpy())
    rng = np.random.default_rng(channel)
    width = kernel.shape[-1]
    if kind == "zero":
        kernel[..., channel] = 0.0
    elif kind == "redraw":
        kernel[..., channel] = rng.normal(0.0, kernel.std(), kernel[..., channel].shape)
    elif kind == "copy":
        other = (channel + 1 + int(rng.integers(width - 1))) % width
        kernel[..., channel] = kernel[..., other]
        bn = model.get_layer(conv.name + "_bn")
        weights = [np.array(w.numpy()) for w in bn.weights]
        for w in weights:
            w[channel] = w[other]
        bn.set_weights(weights)
    else:
        flat = kernel[..., channel].reshape(-1).copy()
        rng.shuffle(flat)
        kernel[..., channel] = flat.reshape(kernel[..., channel].shape)
    conv.kernel.assign(kernel)
    return model


def _record(model: Any, layer: str, images: np.ndarray, args: argparse.Namespace) -> dict:
    from convviz_check.explain.pattern_response import golden_record

    return golden_record(
        model, layer, images, steps=args.steps, parameterization=args.param, seed=0
    )


def _outcome(record: dict, model: Any, images: np.ndarray) -> Any:
    from convviz_check.explain.pattern_response import pattern_response_from_golden

    # max_gap=2 (never fails): the statistic itself is read, then judged per bound here.
    return pattern_response_from_golden(record, model, images, max_gap=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="conv1_relu,conv2_relu,conv3_relu")
    parser.add_argument("--seeds", type=int, nargs="*", default=[21, 22, 23])
    cache = Path(tempfile.gettempdir()) / "convviz_pattern_response"
    parser.add_argument("--cache", type=Path, default=cache)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--param", default="pixel", choices=("pixel", "fft"))
    parser.add_argument("--bounds", type=float, nargs="*", default=[0.6, 0.65, 0.7])
    args = parser.parse_args()
    prepare_process(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from convviz_check.examples import shortcut

    print(load_line())
    images = shortcut.biased_eval_set(args.images).floats
    models = _models(args.seeds, args.cache)
    for layer in args.layers.split(","):
        honest: list[float] = []
        sabotage: dict[str, list[float]] = {k: [] for k in KINDS}
        for golden_name, golden in models.items():
            record = _record(golden, layer, images, args)
            for new_name, new in models.items():
                if new_name != golden_name:
                    honest.append(_outcome(record, new, images).metrics["pattern_gap"].value)
            if golden_name not in ("honest", "retrain"):
                continue
            width = len(record["response_level"])
            for channel in range(0, width, 1 if width <= 12 else 2):
                if record["response_self"][channel] < 1.5:
                    continue  # not judged in the golden model
                for kind in KINDS:
                    out = _outcome(record, _sabotaged(golden, kind, layer, channel), images)
                    item = out.items[f"channel {channel}"]
                    weak = item["response_kept"] < 1.0
                    sabotage[kind].append(item["gap"] if weak else -1.0)
        gaps = np.array(honest)
        print(
            f"{layer} ({args.param}, {args.steps} steps, {args.images} images): "
            f"{len(gaps)} honest pairs, largest pattern_gap {gaps.max():.2f} "
            f"(median {np.median(gaps):.2f})"
        )
        for bound in args.bounds:
            caught = ", ".join(
                f"{k} {int((np.array(v) > bound).sum())}/{len(v)}" for k, v in sabotage.items()
            )
            print(f"  bound {bound}: honest pass {int((gaps <= bound).sum())}/{len(gaps)}; "
                  f"caught: {caught}")  # fmt: skip


if __name__ == "__main__":
    main()
