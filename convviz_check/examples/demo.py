"""``convviz-check demo``: the README's main job on the bundled example models.

For each bundled model (the chapter-style convnet and the tiny keras-hub Xception) it
loads the committed file under the running backend, prints its accuracy and Grad-CAM
pointing rate on fresh scenes and the Grad-CAM layer it chose, and writes a few scenes
and their heatmap overlays as PNGs.

Importing this module is light (argparse only): Keras is imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

# PNGs are upscaled (nearest) so that a 64x64 scene is visible at a glance.
_UPSCALE = 4


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on the ``convviz-check`` argparse tree."""
    parser = subparsers.add_parser(
        "demo",
        help="run the bundled example models: accuracy, Grad-CAM layer, overlays as PNGs",
        description="Load the bundled example models, print accuracy on fresh scenes and "
        "the chosen Grad-CAM layer for each, and write scenes and heatmap overlays as PNGs.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory")
    parser.add_argument("--n", type=int, default=200, help="fresh scenes for accuracy (200)")
    parser.add_argument("--images", type=int, default=4, help="scenes written as PNGs (4)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the fresh scenes (default: the acceptance seed)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="NAME",
        help="which bundled models (default: convnet xception)",
    )
    parser.set_defaults(func=run)
    return parser


def _upscale(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(image, _UPSCALE, axis=0), _UPSCALE, axis=1)


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 (errors surface as ConvvizError from the loaders)."""
    from ..errors import InputError
    from ..explain.gradcam import gradcam
    from ..localization import pointing_game
    from ..render import overlay
    from ..storage import write_png
    from . import CLASS_NAMES, MODEL_NAMES, load_example_model, make_scenes
    from .train import ACCEPT_SEED

    names = args.models or list(MODEL_NAMES)
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown or args.n < 1 or args.images < 0:
        raise InputError(
            f"Bad demo arguments. Received: models={names}, n={args.n}, images={args.images}. "
            f"Expected models among {MODEL_NAMES}, n >= 1, images >= 0."
        )
    import keras

    seed = ACCEPT_SEED if args.seed is None else args.seed
    scenes = make_scenes(args.n, seed=seed)
    shown = min(args.images, len(scenes))
    out: Path = args.out
    print(f"backend: {keras.config.backend()}; {len(scenes)} fresh scenes (seed {seed})")
    for i in range(shown):
        path = write_png(out / f"scene_{i}.png", _upscale(scenes.images[i]))
        print(f"  wrote {path} ({CLASS_NAMES[scenes.labels[i]]}, box {scenes.boxes[i][0]})")
    for name in names:
        model = load_example_model(name)
        probs = np.asarray(model.predict(scenes.floats, verbose=0))
        accuracy = float((probs.argmax(axis=1) == scenes.labels).mean())
        cam = gradcam(model, scenes.floats)
        hits = [pointing_game(cam[i], boxes[0]) for i, boxes in enumerate(scenes.boxes)]
        print(
            f"{name}: accuracy {accuracy:.3f}, Grad-CAM layer {cam.layer!r} "
            f"(score {cam.score_kind}), peak inside the object box {np.mean(hits):.3f}"
        )
        for i in range(shown):
            picture = overlay(_upscale(scenes.images[i]), cam.heatmap[i])
            path = write_png(out / f"{name}_gradcam_{i}.png", picture)
            print(f"  wrote {path} (class {CLASS_NAMES[int(cam.class_index[i])]})")
    return 0
