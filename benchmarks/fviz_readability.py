"""Readability of filter patterns: the chapter's pixel-space ascent vs the robust one.

For the same channels of the bundled models (``convviz_check.examples``: the convnet
and the tiny Xception, 64x64 RGB in [0, 1]) it computes both patterns and prints, per
layer, the median over the channels of:

- ``high_frequency_share`` (``convviz_check.spectral``): share of spectral energy above
  half the Nyquist frequency (lower = less pixel noise);
- the channel's activation reached: its mean inside the 2-pixel border (the chapter's
  loss), for the chapter's pattern as returned (its pixels leave the input range), the
  same pattern clipped to the input range (what a user can feed back as an image), the
  robust pattern (always inside the range), and the robust ascent's start image.

It writes the side-by-side PNG ``docs/images/fviz_<model>.png`` (per layer, top row the
chapter's patterns through ``cc.deprocess_image``, bottom row the robust ones as they
are, each enlarged 2x, each row labelled on its left with its layer and "chapter" or
"robust") and prints a Markdown table for docs/feature-visualization.md.

``--sweep`` prints the activation and high-frequency share of the robust ascent for a
grid of (learning rate, steps, TV weight) on the convnet, the measurement behind the
constants in ``convviz_check/explain/fviz.py``.

Run (about 2 minutes on a 2-core CPU, TensorFlow)::

    OMP_NUM_THREADS=1 KERAS_BACKEND=tensorflow python benchmarks/fviz_readability.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _common import prepare_process

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "convnet": ("conv2", "conv3", "conv4"),
    "xception": ("block2_sepconv1", "block3_sepconv1", "block4_sepconv1"),
}
FILTERS = list(range(6))


def _channel_means(model: Any, layer: str, images: np.ndarray, filters: list[int]) -> np.ndarray:
    from convviz_check import backends
    from convviz_check import graph as graph_lib

    act = backends.make_forward(graph_lib.submodel(model, [layer]))([images.astype(np.float32)])[0]
    return np.array([act[i, 2:-2, 2:-2, f].mean() for i, f in enumerate(filters)])


def _row(images: list[np.ndarray]) -> np.ndarray:
    gap = np.full((images[0].shape[0], 4, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for im in images:
        parts += [im, gap]
    return np.concatenate(parts[:-1], axis=1)


# The label column left of each row: the layer and which ascent drew the row (13 px
# text of Pillow's bundled font reads at 100% zoom).
LABEL_WIDTH = 150
LABEL_SIZE = 13


def labelled(row: np.ndarray, text: str) -> np.ndarray:
    """``row`` (uint8 RGB) with a white ``LABEL_WIDTH`` px column on its left holding
    ``text`` (lines), centred vertically: which layer, which ascent."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=LABEL_SIZE)
    canvas = Image.new("RGB", (LABEL_WIDTH + row.shape[1], row.shape[0]), "white")
    canvas.paste(Image.fromarray(np.ascontiguousarray(row)), (LABEL_WIDTH, 0))
    draw = ImageDraw.Draw(canvas)
    lines = text.splitlines()
    line_h = LABEL_SIZE + 4
    top = max(0, (row.shape[0] - line_h * len(lines)) // 2)
    for k, line in enumerate(lines):
        draw.text((6, top + k * line_h), line, fill=(40, 44, 52), font=font)
    return np.asarray(canvas)


def _enlarge(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)


def measure(name: str, seed: int) -> tuple[list[str], list[np.ndarray]]:
    import convviz_check as cc
    from convviz_check.explain import fviz
    from convviz_check.spectral import high_frequency_share

    model = cc.examples.load_example_model(name)
    lines, rows = [], []
    for layer in CASES[name]:
        chapter = cc.filter_patterns(model, layer, filters=FILTERS, seed=seed)
        robust = cc.filter_patterns(
            model, layer, filters=FILTERS, seed=seed, parameterization="fft"
        )
        config = fviz.resolve_config("fft", None, None, None, "channel", 64, 64)
        assert config is not None
        start = fviz.params_to_unit(
            config, fviz.initial_params("fft", len(FILTERS), 64, 64, 3, seed), 64
        )
        hf_c = np.median([high_frequency_share(p) for p in chapter])
        hf_r = np.median([high_frequency_share(p) for p in robust])
        act = {
            "chapter": _channel_means(model, layer, chapter, FILTERS),
            "clipped": _channel_means(model, layer, np.clip(chapter, 0, 1), FILTERS),
            "robust": _channel_means(model, layer, robust, FILTERS),
            "start": _channel_means(model, layer, start, FILTERS),
        }
        med = {k: float(np.median(v)) for k, v in act.items()}
        lines.append(
            f"| {name} | {layer} | {hf_c:.2f} | {hf_r:.2f} | {med['chapter']:.2f} | "
            f"{med['clipped']:.2f} | {med['robust']:.2f} | {med['start']:.2f} |"
        )
        print(lines[-1], flush=True)
        top = [_enlarge(cc.deprocess_image(p, crop=0)) for p in chapter]
        bottom = [_enlarge(np.round(255 * np.clip(p, 0, 1)).astype(np.uint8)) for p in robust]
        rows += [
            labelled(_row(top), f"{layer}\nchapter (pixel ascent)"),
            labelled(_row(bottom), f"{layer}\nrobust (fft)"),
            np.full((12, LABEL_WIDTH + _row(top).shape[1], 3), 255, np.uint8),
        ]
    return lines, rows


def sweep(seed: int) -> None:
    import convviz_check as cc
    from convviz_check.spectral import high_frequency_share

    model = cc.examples.load_example_model("convnet")
    filters = [0, 1, 2, 3]
    grid = [(0.1, 128, 0.05), (0.1, 256, 0.05), (0.2, 128, 0.05), (0.1, 128, 0.0), (0.1, 128, 0.5)]
    for lr, steps, tv in grid:
        for layer in ("conv2", "conv3_relu"):
            p = cc.filter_patterns(
                model,
                layer,
                filters=filters,
                seed=seed,
                parameterization="fft",
                steps=steps,
                learning_rate=lr,
                penalties={"tv": tv},
            )
            act = _channel_means(model, layer, p, filters)
            hf = [high_frequency_share(x) for x in p]
            print(f"lr {lr} steps {steps} tv {tv} {layer}: activation {np.round(act, 2)} "
                  f"hf {np.round(hf, 3)}", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sweep", action="store_true", help="the constants' sweep only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    prepare_process(args.threads)
    import keras

    from convviz_check.storage import write_png

    print(f"keras {keras.__version__}, backend {keras.config.backend()}")
    if args.sweep:
        sweep(args.seed)
        return 0
    print("| model | layer | HF share, chapter | HF share, robust | activation, chapter | "
          "chapter clipped to range | robust | start image |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name in CASES:
        _, rows = measure(name, args.seed)
        path = write_png(args.out / f"fviz_{name}.png", np.concatenate(rows[:-1], axis=0))
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
