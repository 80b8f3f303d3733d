"""Measure how far ``assert_faithful``'s leads keep a good map from a bad one, to choose
its default metric, margin and number of random draws (``DEFAULT_ASSERT_METRIC``,
``DEFAULT_MARGIN``, ``RANDOM_DRAWS`` in ``convviz_check/judge/faithfulness.py``).

For each bundled model, scene seed and batch size, Grad-CAM's map is judged with each
metric (``deletion`` or ``insertion``, optionally ``:baseline``, e.g. ``deletion:blur``)
by ``check_faithful`` against the random maps (the mean of ``RANDOM_DRAWS`` draws) and
the least likely class's map, and the inverted map (``1 - map``) against the random
maps. A metric is a good default when every good map leads by the margin and no
inverted map does. Each line also gives the spread of *one* random draw's lead (its
standard deviation over the draws of a check: the noise a single draw would put on
the verdict) and, with ``--draw-seeds K``, how far the judged lead moves when the
draws come from seeds 0..K-1 (the noise left on the verdict).

Measured (TF, RISE's blur, 16 draws, seeds 0-11, 4 and 8 images, margin 0.05;
``--draw-seeds 4`` for insertion): insertion passes every good map (leads >= 0.204
over the random mean, >= 0.271 over the wrong class) and no inverted one (<= -0.270);
one draw's lead has a standard deviation of 0.031-0.098, the judged lead moved by at
most 0.074 across draw seeds; deletion to black misses 16 of 48 good batches and
passes 3 inverted ones (up to +0.197); deletion to the blur separates well (>= 0.275 /
<= -0.201). A check took 3.4-3.8 s at 4 images and about 6 s at 8 (2 shared cores).

Usage::

    KERAS_BACKEND=tensorflow python benchmarks/calibrate_faithful.py
    KERAS_BACKEND=tensorflow python benchmarks/calibrate_faithful.py --models convnet \\
        --images 4 --seeds 3 --metrics insertion,deletion:blur --draw-seeds 5
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="convnet,xception")
    parser.add_argument("--images", default="4,8", help="batch sizes")
    parser.add_argument("--seeds", type=int, default=12, help="scene seeds 0..N-1")
    parser.add_argument("--metrics", default="insertion,deletion,deletion:blur")
    parser.add_argument("--margin", type=float, default=None, help="default: the library's")
    parser.add_argument(
        "--draw-seeds", type=int, default=1, help="seeds of the random draws per good map"
    )
    args = parser.parse_args(argv)

    import convviz_check as cc
    from convviz_check import faithfulness as ff
    from convviz_check.examples import load_example_model, make_scenes

    margin = ff.DEFAULT_MARGIN if args.margin is None else args.margin

    def judged(model, x, cam, metric: str, **kwargs):
        name, _, baseline = metric.partition(":")
        if baseline:
            kwargs["baseline"] = baseline
        return ff.check_faithful(model, x, cam, metric=name, margin=margin, **kwargs)

    bad = 0
    print(f"random draws per check: {ff.RANDOM_DRAWS}; margin {margin:g}")
    for name in args.models.split(","):
        model = load_example_model(name)
        side = model.input_shape[1]
        for n in (int(i) for i in args.images.split(",")):
            rows: dict[str, list[tuple[float, ...]]] = {m: [] for m in args.metrics.split(",")}
            seconds = 0.0
            for seed in range(args.seeds):
                x = make_scenes(n, seed=seed, image_size=side).floats
                cam = cc.gradcam(model, x)
                inverted = 1.0 - cam.heatmap
                for metric in rows:
                    start = time.perf_counter()
                    good = judged(model, x, cam, metric)
                    seconds += time.perf_counter() - start
                    by_seed = [good.metrics["lead_over_random"].value] + [
                        judged(model, x, cam, metric, seed=s, against="random")
                        .metrics["lead_over_random"]
                        .value
                        for s in range(1, args.draw_seeds)
                    ]
                    worse = judged(
                        model, x, inverted, metric, class_index=cam.class_index, against="random"
                    )
                    rows[metric].append(
                        (
                            good.metrics["lead_over_random"].value,
                            good.metrics["lead_over_wrong_class"].value,
                            worse.metrics["lead_over_random"].value,
                            good.facts["one_draw_lead"]["std"],
                            max(by_seed) - min(by_seed),
                        )
                    )
            for metric, values in rows.items():
                v = np.asarray(values)
                misses = int((v[:, :2].min(axis=1) < margin).sum())
                passes = int((v[:, 2] >= margin).sum())
                bad += misses + passes
                print(
                    f"{name:9s} {n:2d} images {metric:14s} good map leads random >= "
                    f"{v[:, 0].min():+.3f}, wrong class >= {v[:, 1].min():+.3f}; inverted "
                    f"<= {v[:, 2].max():+.3f}; good maps missing {margin:g}: {misses}/"
                    f"{len(v)}, inverted maps passing: {passes}/{len(v)}; one draw's lead "
                    f"std {v[:, 3].min():.3f}-{v[:, 3].max():.3f}"
                    + (
                        f"; judged lead across {args.draw_seeds} draw seeds moves <= "
                        f"{v[:, 4].max():.3f}"
                        if args.draw_seeds > 1
                        else ""
                    )
                )
            checks = args.seeds * len(rows)
            print(f"{name:9s} {n:2d} images: {seconds / checks:.2f} s per check_faithful")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
