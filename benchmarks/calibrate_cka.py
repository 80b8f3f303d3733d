"""Measure the linear CKA of activations between honest retrains, to calibrate the
``retrain`` profile's activation bound (``activation_cka_min`` in
``convviz_check/tolerances.py``).

Models: the shortcut example's ``honest`` and ``retrain`` (one recipe, seeds 11 and 12;
``convviz_check/examples/shortcut.py``) plus ``--seeds`` more retrains of that recipe
(default 21 and 22), trained here and cached outside the repository (``--cache``,
default ``$TMPDIR/convviz_cka_cache``). A retrain counts only when it is as accurate as
the recipe's acceptance asks (``shortcut.MIN_ACCURACY`` on the biased evaluation set).

Images: the gate's (``biased_eval_set``, its first ``--n`` images). For every unordered
pair of honest models the script computes ``measures.layer_cka`` of every default
activation layer (``cc.activations`` without ``layers``) over the ``--n`` images, and of
the first convolution on each single image (the gate's ``first_layer`` check runs on
one image). It prints the worst layer per pair and the worst overall next to the bound
in ``tolerances.RETRAIN``.

Contrasts: the shortcut model (same recipe, trained to read a corner cue) against the
honest one, which the bound must fail; and the honest model with one layer's kernel
shuffled (its values permuted at random, seeded: the same weights, no longer a trained
filter bank), for every convolution, reported at that layer and at the worst layer.
Exit status 1 when the bound fails an honest pair or passes the shortcut model.

Usage::

    KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/calibrate_cka.py
    KERAS_BACKEND=tensorflow python benchmarks/calibrate_cka.py --seeds "" --json /tmp/cka.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN crashes in convolution weight gradients on some CPUs (training the retrains).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from convviz_check.measures import layer_cka  # noqa: E402
from convviz_check.tolerances import RETRAIN  # noqa: E402

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "convviz_cka_cache"
SHUFFLE_SEED = 2019


def retrain_model(seed: int, cache: Path) -> Any:
    """The shortcut recipe's honest model trained with ``seed`` (cached)."""
    import keras

    from convviz_check.examples import shortcut

    path = cache / f"shortcut_honest_s{seed}.keras"
    if path.is_file():
        return keras.saving.load_model(path, compile=False)
    name = f"honest_s{seed}"
    shortcut.SEEDS[name] = seed
    shortcut.TRAINING_CUE[name] = "random"
    model = shortcut.train(name, verbose=0)
    cache.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


def accuracy(model: Any, scenes: Any) -> float:
    probabilities = np.asarray(model.predict(scenes.floats, verbose=0))
    return float((probabilities.argmax(axis=-1) == scenes.labels).mean())


def shuffled(model: Any, layer: str, seed: int = SHUFFLE_SEED) -> Any:
    """A copy of ``model`` whose ``layer`` kernel holds its own values in random order."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    weights = copy.get_layer(layer).get_weights()
    kernel = weights[0]
    flat = kernel.ravel().copy()
    np.random.default_rng(seed).shuffle(flat)
    weights[0] = flat.reshape(kernel.shape)
    copy.get_layer(layer).set_weights(weights)
    return copy


def pair_ckas(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: layer_cka(a[name], b[name], name) for name in a}


def single_image_ckas(a: np.ndarray, b: np.ndarray) -> list[float]:
    return [layer_cka(a[i : i + 1], b[i : i + 1]) for i in range(len(a))]


def measure(models: dict[str, Any], images: np.ndarray) -> dict[str, Any]:
    import convviz_check as cc

    first = cc.conv_layers(next(iter(models.values())))[0]
    acts = {name: cc.activations(m, images) for name, m in models.items()}
    firsts = {name: cc.activations(m, images, layers=[first])[first] for name, m in models.items()}
    pairs = {}
    for x, y in itertools.combinations(models, 2):
        per_layer = pair_ckas(acts[x], acts[y])
        singles = single_image_ckas(firsts[x], firsts[y])
        pairs[f"{x}~{y}"] = {
            "per_layer": per_layer,
            "worst_layer": min(per_layer, key=per_layer.__getitem__),
            "worst": min(per_layer.values()),
            "first_layer_single_images": {"min": min(singles), "max": max(singles)},
        }
    return {"first_layer": first, "pairs": pairs}


def contrasts(honest: Any, shortcut_model: Any, images: np.ndarray) -> dict[str, Any]:
    import convviz_check as cc

    base = cc.activations(honest, images)
    out: dict[str, Any] = {"shuffled": {}}
    for conv in cc.conv_layers(honest):
        acts = cc.activations(shuffled(honest, conv), images)
        per_layer = pair_ckas(base, acts)
        first = cc.activations(honest, images[:1], layers=[conv])[conv]
        first_s = cc.activations(shuffled(honest, conv), images[:1], layers=[conv])[conv]
        out["shuffled"][conv] = {
            "at_layer": per_layer[conv],
            "worst": min(per_layer.values()),
            "single_image_at_layer": layer_cka(first, first_s),
        }
    per_layer = pair_ckas(base, cc.activations(shortcut_model, images))
    out["shortcut_vs_honest"] = {"per_layer": per_layer, "worst": min(per_layer.values())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="21,22", help="extra retrain seeds ('' for none)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--n", type=int, default=16, help="images (the gate checks 16)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from convviz_check.examples import shortcut

    scenes = shortcut.biased_eval_set()
    models = {"honest": shortcut.load("honest"), "retrain": shortcut.load("retrain")}
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        model = retrain_model(seed, args.cache)
        acc = accuracy(model, scenes)
        print(f"retrain seed {seed}: accuracy {acc:.4f}")
        if acc < shortcut.MIN_ACCURACY:
            print(f"  left out: below the recipe's acceptance {shortcut.MIN_ACCURACY}")
            continue
        models[f"s{seed}"] = model
    images = scenes.floats[: args.n]
    result = measure(models, images)
    result["contrasts"] = contrasts(models["honest"], shortcut.load("shortcut"), images)
    bound = RETRAIN["activation"].get("activation_cka_min")
    result["bound"] = bound
    print(f"{len(models)} honest models, {len(result['pairs'])} pairs, {args.n} images")
    for name, pair in result["pairs"].items():
        singles = pair["first_layer_single_images"]
        print(
            f"  {name}: worst {pair['worst']:.3f} at {pair['worst_layer']}; first layer on "
            f"one image {singles['min']:.3f}-{singles['max']:.3f}"
        )
        print("    " + ", ".join(f"{k} {v:.3f}" for k, v in pair["per_layer"].items()))
    worst = min(p["worst"] for p in result["pairs"].values())
    worst_single = min(p["first_layer_single_images"]["min"] for p in result["pairs"].values())
    print(f"worst honest: {worst:.3f} ({args.n} images), first layer one image {worst_single:.3f}")
    for conv, found in result["contrasts"]["shuffled"].items():
        print(
            f"  {conv} shuffled: at the layer {found['at_layer']:.3f} (one image "
            f"{found['single_image_at_layer']:.3f}), worst layer {found['worst']:.3f}"
        )
    print(f"  shortcut vs honest: worst {result['contrasts']['shortcut_vs_honest']['worst']:.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True))
    if bound is None:
        print("no activation_cka_min bound in tolerances.RETRAIN yet")
        return 0
    # The shortcut model must fail; shuffled layers are reported (on the narrow example
    # convnet honest retrains move the first layers as far, see tolerances.py).
    bad = (
        min(worst, worst_single) < bound
        or result["contrasts"]["shortcut_vs_honest"]["worst"] >= bound
    )
    print(f"bound {bound}: " + ("FAILS a measurement" if bad else "covers every honest pair"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
