"""Benchmark: do Grad-CAM on a transformer's token grid and attention rollout land on the
objects? The example transformers next to the convnets, on the scenes' boxes.

Rows: the bundled convnet (Grad-CAM, automatic layer), the shortcut example's honest and
shortcut convnets (Grad-CAM), the vision-transformer example's honest and shortcut
models with either head (class token: Grad-CAM on ``vit.TOKEN_LAYER``, and attention
rollout; on TensorFlow also Grad-CAM and HiResCAM at the output of the last block's
first LayerNormalization, the tensor pytorch-grad-cam hooks for ViT,
``blocks[-1].norm1``: :func:`_norm_tap`; mean of the patch tokens: Grad-CAM and
HiResCAM on the automatic layer, the encoder's final norm ``ln``, Grad-CAM on the last
block's output before that norm and its input, and rollout), and a seeded uniform random 8x8 map.
Two image sets:

- **scenes**: ``make_scenes(N, seed=--seed)`` (no corner mark; the bundled convnet's
  kind of images): accuracy, pointing (the peak in the object's box,
  ``cc.localization.pointing_game``) and energy (the map's share of mass in the box,
  ``cc.localization.energy_in_box``);
- **biased**: the shortcut example's biased evaluation set (the corner mark follows the
  class): accuracy, pointing and energy on the object, energy in the cue's corner
  (``shortcut.CUE_CORNER``).

Run (TensorFlow or any backend; one process)::

    python benchmarks/vit_localization.py              # 200 scenes, 400 biased
    python benchmarks/vit_localization.py --images 32  # quick
    # the mean-head rows: its models are not committed (they do not localize with
    # Grad-CAM, docs/transformers.md); train them first (about 7 min wall each, one thread)
    python -m convviz_check.examples.vit --head mean --out /tmp/vit_mean
    python benchmarks/vit_localization.py --heads mean --models-dir /tmp/vit_mean --no-convnets

It prints a markdown table (the one in docs/transformers.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _random_maps(n: int, seed: int) -> Any:
    from convviz_check.types import GradCAM

    maps = np.random.default_rng(seed).random((n, 8, 8)).astype(np.float32)
    zeros = np.zeros(n, np.int64)
    return GradCAM(
        heatmap=maps,
        raw=maps,
        class_index=zeros,
        score=zeros.astype(np.float32),
        score_kind="logit",
        layer="random",
        degenerate=np.zeros(n, bool),
        image_shape=(64, 64),
        method="random",
    )


def _norm_tap(method: str) -> Callable[[Any, np.ndarray], Any]:
    """``explain(model, x)``: the CAM ``method`` of an example transformer at the output
    of its last block's first LayerNormalization (``ln_1``), a tensor inside the block
    that no layer outputs.

    The block's tail is recomputed from its own sublayers (keras-hub's
    ``ViTEncoderBlock.call``: ``t = ln_1(x); h = x + dropout(mha(t, t)); h + mlp(ln_2(h))``)
    under a GradientTape that watches ``t``, then the encoder's final norm, the class
    token and the head's logit; the recomputed block output must equal the block's own
    (checked per batch). The maps are the package's own: the method's weighting rule on
    the token grid and its normalisation. TensorFlow only.
    """
    import tensorflow as tf

    from convviz_check import graph
    from convviz_check.examples import vit
    from convviz_check.explain.cam_methods import METHODS, CamInputs
    from convviz_check.explain.normalisation import normalise
    from convviz_check.graph.tokens import infer_grid
    from convviz_check.types import GradCAM

    def explain(model: Any, x: np.ndarray) -> Any:
        flat = graph.flatten(model)
        block = flat.record(f"transformer_block_{vit.BLOCKS}").operation
        final_norm = next(r.operation for r in flat.records if r.path[-1] == "ln")
        head = flat.record("predictions").operation
        grid = infer_grid(model, vit.TOKEN_LAYER, x.shape[1:3])
        block_input = graph.submodel(model, [vit.TOKEN_LAYER])
        block_output = graph.submodel(model, [block.name])
        parts: list[tuple[np.ndarray, ...]] = []
        for start in range(0, len(x), 50):
            xs = x[start : start + 50]
            tokens = tf.convert_to_tensor(np.asarray(block_input(xs)))
            with tf.GradientTape() as tape:
                t = block.layer_norm_1(tokens)
                tape.watch(t)
                h = tokens + block.dropout(block.mha(t, t))
                out = h + block.mlp(block.layer_norm_2(h))
                logits = tf.matmul(final_norm(out)[:, 0], head.kernel) + head.bias
                score = tf.reduce_max(logits, axis=1)
                total = tf.reduce_sum(score)
            gradient = tape.gradient(total, t)
            expected = np.asarray(block_output(xs))
            if not np.allclose(out.numpy(), expected, rtol=0, atol=1e-5 * np.abs(expected).max()):
                raise SystemExit(f"the recomputed {block.name!r} differs from the block's output")
            classes = np.argmax(logits.numpy(), axis=1)
            parts.append((t.numpy(), gradient.numpy(), score.numpy(), classes))
        a, g, y, classes = (np.concatenate(p) for p in zip(*parts, strict=True))
        activation, grad = grid.to_map(a).astype(np.float64), grid.to_map(g).astype(np.float64)
        raw = METHODS[method]().raw(CamInputs(activation, grad, x, None, 0))
        heatmap, raw32, degenerate = normalise(raw, y)
        return GradCAM(
            heatmap=heatmap,
            raw=raw32,
            class_index=classes,
            score=y.astype(np.float32),
            score_kind="logit",
            layer=f"{block.name}/{block.layer_norm_1.name}",
            degenerate=degenerate,
            image_shape=tuple(x.shape[1:3]),
            method=method,
        )

    return explain


def _scores(cam: Any, labels: np.ndarray, boxes: list, corner: Any) -> dict[str, float]:
    from convviz_check.localization import energy_in_box, pointing_game

    n = len(labels)
    return {
        "accuracy": float((np.asarray(cam.class_index) == labels).mean()),
        "pointing": float(np.mean([pointing_game(cam[i], boxes[i]) for i in range(n)])),
        "energy": float(np.mean([energy_in_box(cam[i], boxes[i]) for i in range(n)])),
        "corner": float(np.mean([energy_in_box(cam[i], corner) for i in range(n)])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="plain scenes")
    parser.add_argument("--biased", type=int, default=400, help="biased evaluation scenes")
    parser.add_argument("--seed", type=int, default=31, help="seed of the plain scenes")
    parser.add_argument(
        "--heads",
        nargs="+",
        choices=("class_token", "mean"),
        default=["class_token"],
        help="the ViT example's heads to measure (mean: needs --models-dir)",
    )
    parser.add_argument("--models-dir", default=None, help="the ViT models' folder")
    parser.add_argument("--no-convnets", action="store_true", help="skip the convnet rows")
    args = parser.parse_args(argv)

    import keras
    import keras_hub  # noqa: F401 - the example transformers are keras-hub models

    import convviz_check as cc
    from convviz_check.examples import load_example_model, make_scenes, shortcut, vit
    from convviz_check.models import load_model

    scenes = make_scenes(args.images, seed=args.seed)
    biased = shortcut.biased_eval_set(args.biased)
    sets: dict[str, Any] = {"scenes": scenes, "biased": biased}
    labels = {"scenes": scenes.labels, "biased": biased.labels}
    boxes = {"scenes": [b[0] for b in scenes.boxes], "biased": biased.boxes}

    def gradcam(layer: str | None = None) -> Callable[[Any, np.ndarray], Any]:
        return lambda model, x: cc.gradcam(model, x, layer=layer)

    def hirescam(layer: str | None = None) -> Callable[[Any, np.ndarray], Any]:
        return lambda model, x: cc.cam(model, x, method="hirescam", layer=layer)

    def rollout(model: Any, x: np.ndarray) -> Any:
        return cc.cam(model, x, method="rollout")

    rows: list[tuple[str, str, Any, Callable[[Any, np.ndarray], Any]]] = []
    if not args.no_convnets:
        rows += [
            ("bundled convnet", "Grad-CAM (8x8 map)", load_example_model("convnet"), gradcam()),
            ("shortcut example: honest convnet", "Grad-CAM", shortcut.load("honest"), gradcam()),
            (
                "shortcut example: shortcut convnet",
                "Grad-CAM",
                shortcut.load("shortcut"),
                gradcam(),
            ),
        ]
    folder = vit.MODELS_DIR if args.models_dir is None else Path(args.models_dir)
    for head, name in ((h, n) for h in args.heads for n in vit.MODEL_NAMES):
        path = vit.model_path(name, folder, head)
        if not path.is_file():
            raise SystemExit(
                f"no {path}: train it with python -m convviz_check.examples.vit --head "
                f"{head} --out DIR and pass --models-dir DIR"
            )
        model = load_model(path)
        if head == "mean":
            label, last = f"ViT example, mean head: {name}", f"transformer_block_{vit.BLOCKS}"
            rows += [
                (label, "Grad-CAM (token grid, `ln`)", model, gradcam()),
                (label, "HiResCAM (token grid, `ln`)", model, hirescam()),
                (label, f"Grad-CAM (`{last}`, before `ln`)", model, gradcam(last)),
                (label, "Grad-CAM (`transformer_block_1`)", model, gradcam("transformer_block_1")),
                (label, "rollout", model, rollout),
            ]
            continue
        rows.append(
            (f"ViT example: {name}", "Grad-CAM (token grid)", model, gradcam(vit.TOKEN_LAYER))
        )
        rows.append((f"ViT example: {name}", "rollout", model, rollout))
        if keras.config.backend() == "tensorflow":
            for method, label in (("gradcam", "Grad-CAM"), ("hirescam", "HiResCAM")):
                rows.append(
                    (
                        f"ViT example: {name}",
                        f"{label} (last block's `ln_1`)",
                        model,
                        _norm_tap(method),
                    )
                )
    print(f"keras {keras.__version__}, backend {keras.config.backend()}", file=sys.stderr)
    lines = [
        "| model | map | scenes: accuracy | pointing | energy | biased: accuracy | pointing "
        "| energy | energy in the corner |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model_name, method, model, explain in rows:
        cells = []
        start = time.perf_counter()
        for key, images in sets.items():
            s = _scores(explain(model, images.floats), labels[key], boxes[key], shortcut.CUE_CORNER)
            cells.append(s)
        print(f"{model_name} / {method}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        a, b = cells
        lines.append(
            f"| {model_name} | {method} | {a['accuracy']:.3f} | {a['pointing']:.3f} | "
            f"{a['energy']:.3f} | {b['accuracy']:.3f} | {b['pointing']:.3f} | "
            f"{b['energy']:.3f} | {b['corner']:.3f} |"
        )
    rand = [
        _scores(_random_maps(len(labels[k]), 0), labels[k], boxes[k], shortcut.CUE_CORNER)
        for k in sets
    ]
    lines.append(
        f"| random 8x8 map | (seed 0) | - | {rand[0]['pointing']:.3f} | {rand[0]['energy']:.3f} "
        f"| - | {rand[1]['pointing']:.3f} | {rand[1]['energy']:.3f} | {rand[1]['corner']:.3f} |"
    )
    print(f"\n{args.images} scenes of seed {args.seed}; {args.biased} biased scenes\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
