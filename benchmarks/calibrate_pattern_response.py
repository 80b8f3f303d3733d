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

Then why honest pairs fail: each honest channel whose gap passes the middle bound (a
false alarm), with its best correlation with *any* new channel (not only its one-to-one
match): a best correlation well above the match's means the assignment gave that
channel's counterpart to another golden channel (the retrain merged two detectors).
Each table also judges at the honest pairs' largest value (the bound that passes them
all), for the gap and for the *best-match gap* (the layer's median minus that best
correlation, many-to-one): the variant that forgives a merge.

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


def _outcome(record: dict, model: Any, images: np.ndarray, layer: str) -> tuple[Any, np.ndarray]:
    """The judgment (``max_gap=2``: it never fails; the statistic itself is read, then
    judged per bound here) and each golden channel's best correlation with any new one."""
    from convviz_check.explain.activations import activations
    from convviz_check.explain.pattern_response import pattern_response_from_golden
    from convviz_check.pattern_response import (
        RECORD_SAMPLES,
        channel_correlations,
        sample_positions,
    )

    out = pattern_response_from_golden(record, model, images, max_gap=2.0)
    new = sample_positions(np.asarray(activations(model, images, layer)[layer]))
    golden = np.asarray(record[RECORD_SAMPLES], np.float64)
    corr = channel_correlations(golden[:, None, None, :], new[:, None, None, :])
    return out, corr.max(axis=1)


Weak = tuple[int, float, float, float, float]


def _weak(out: Any, best: np.ndarray) -> list[Weak]:
    """``(channel, gap, best-match gap, matched correlation, best correlation)`` of each
    judged channel whose golden pattern drives its match less than it drove the channel."""
    level = out.facts["layer_median_correlation"]
    found = []
    for name, item in out.items.items():
        if item["judged"] and item["response_kept"] < 1.0:
            channel = int(name.split()[1])
            found.append(
                (channel, item["gap"], level - best[channel], item["correlation"], best[channel])
            )
    return found


def _largest(weak: list[Weak], which: int) -> float:
    return float(max((w[which] for w in weak), default=0.0))


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
    middle = sorted(args.bounds)[len(args.bounds) // 2]
    for layer in args.layers.split(","):
        # per honest pair and per sabotaged channel: (gap, best-match gap); -1: not weak
        honest: list[tuple[float, float]] = []
        alarms: list[str] = []
        sabotage: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
        for golden_name, golden in models.items():
            record = _record(golden, layer, images, args)
            for new_name, new in models.items():
                if new_name == golden_name:
                    continue
                weak = _weak(*_outcome(record, new, images, layer))
                honest.append((_largest(weak, 1), _largest(weak, 2)))
                alarms += [
                    f"{golden_name}->{new_name} channel {c}: gap {g:.2f}, matched correlation "
                    f"{m:.2f}, best correlation with any new channel {r:.2f}"
                    for c, g, _, m, r in weak
                    if g > middle
                ]
            if golden_name not in ("honest", "retrain"):
                continue
            width = len(record["response_level"])
            for channel in range(0, width, 1 if width <= 12 else 2):
                if record["response_self"][channel] < 1.5:
                    continue  # not judged in the golden model
                for kind in KINDS:
                    sabotaged = _sabotaged(golden, kind, layer, channel)
                    weak = _weak(*_outcome(record, sabotaged, images, layer))
                    own = [(g, b) for c, g, b, _, _ in weak if c == channel]
                    sabotage[kind].append(own[0] if own else (-1.0, -1.0))
        _print_layer(layer, args, honest, sabotage, alarms, middle)


def _print_layer(
    layer: str,
    args: argparse.Namespace,
    honest: list[tuple[float, float]],
    sabotage: dict[str, list[tuple[float, float]]],
    alarms: list[str],
    middle: float,
) -> None:
    gaps = np.array(honest)
    print(
        f"{layer} ({args.param}, {args.steps} steps, {args.images} images): "
        f"{len(gaps)} honest pairs, largest pattern_gap {gaps[:, 0].max():.2f} "
        f"(median {np.median(gaps[:, 0]):.2f})"
    )
    for which, name in ((0, "gap"), (1, "best-match gap")):
        largest = float(gaps[:, which].max())
        for bound in (*args.bounds, largest):  # the last: the honest pairs' largest
            caught = ", ".join(
                f"{k} {int((np.array(v)[:, which] > bound).sum())}/{len(v)}"
                for k, v in sabotage.items()
            )
            passed = int((gaps[:, which] <= bound).sum())
            print(f"  {name} bound {bound:.2f}: honest pass {passed}/{len(gaps)}; caught: {caught}")
    print(f"  honest channels past {middle}: {len(alarms)}")
    for alarm in alarms:
        print(f"    {alarm}")


if __name__ == "__main__":
    main()
