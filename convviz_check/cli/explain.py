"""``convviz-check explain``: the three techniques on any model, written as PNGs.

    convviz-check explain MODEL (--images FILE... | --scenes N) --out DIR
        [--what activations gradcam filters] [--layer LAYER] [--filters K]

MODEL is any ``cc.load_model`` source. Images are passed to the model as given (use
``--rescale 0.00392`` for a model that expects [0, 1] from uint8 files). Writes
``activations/<i>_<layer>.png`` (channel grids of the first image),
``gradcam/<i>_overlay.png`` (one per image) and ``filters/<layer>.png`` (a filter grid),
and prints what it chose (Grad-CAM layer, classes, score kind). Keras is imported when
the command runs, not when ``--help`` is built.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

WHAT = ("activations", "gradcam", "filters")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "explain",
        help="activations, Grad-CAM overlays and filter patterns of a model, as PNGs",
        description="Compute activations, Grad-CAM and filter patterns for MODEL and write "
        "them as PNGs.",
    )
    parser.add_argument("model", help="a .keras/.h5 file, preset dir, hub:NAME or pkg.mod:factory")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="FILE", help=".npy/.npz/.png/.jpg inputs")
    src.add_argument("--scenes", type=int, metavar="N", help="N bundled synthetic scenes")
    parser.add_argument("--rescale", type=float, default=None, help="multiply --images by this")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--what", nargs="+", choices=WHAT, default=list(WHAT))
    parser.add_argument("--layer", default=None, help="filters: layer (default: last conv)")
    parser.add_argument("--filters", type=int, default=8, help="filters: how many (8)")
    parser.add_argument("--steps", type=int, default=30, help="filters: ascent steps (30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --scenes and filters")
    parser.set_defaults(func=run)
    return parser


def _images(args: argparse.Namespace) -> Any:
    if args.scenes is not None:
        from ..errors import InputError
        from ..examples import make_scenes

        if args.scenes < 1:
            raise InputError(f"--scenes must be >= 1. Received: --scenes {args.scenes}")
        return make_scenes(args.scenes, seed=args.seed).floats
    from .agree import load_images

    return load_images(args.images, rescale=args.rescale)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import convviz_check as cc

    from ..explain.activations import save_activation_grids
    from ..storage import write_png

    model = cc.load_model(args.model)
    images = _images(args)
    out: Path = args.out
    if "activations" in args.what:
        acts = cc.activations(model, images)
        paths = save_activation_grids(acts, out / "activations")
        print(f"activations: {len(acts)} layers -> {out / 'activations'} ({len(paths)} PNGs)")
    if "gradcam" in args.what:
        cam = cc.gradcam(model, images)
        for i in range(len(cam)):
            write_png(out / "gradcam" / f"{i}_overlay.png", cc.overlay(images[i], cam[i]))
        print(
            f"gradcam: layer {cam.layer!r}, score {cam.score_kind}, classes "
            f"{cam.class_index.tolist()}, degenerate {int(cam.degenerate.sum())}/{len(cam)}"
        )
    if "filters" in args.what:
        layer = args.layer or cc.conv_layers(model)[-1]
        patterns = cc.filter_patterns(
            model, layer, filters=range(args.filters), steps=args.steps, seed=args.seed
        )
        grid = cc.filter_grid(np.stack([cc.deprocess_image(p) for p in patterns]))
        path = write_png(out / "filters" / f"{layer.replace('/', '__')}.png", grid)
        print(f"filters: {len(patterns)} patterns of {layer!r} -> {path}")
    return 0
