"""Measure how far ``assert_faithful``'s leads keep a good map from a bad one, to choose
its default metric and margin (``DEFAULT_ASSERT_METRIC``, ``DEFAULT_MARGIN`` in
``convviz_check/faithfulness.py``).

For each bundled model, scene seed and batch size, Grad-CAM's map is scored with each
metric (``deletion`` or ``insertion``, optionally ``:baseline``, e.g. ``deletion:blur``)
against the random map and the least likely class's map, and the inverted map
(``1 - map``) against the random map. A metric is a good default when every good map
leads by the margin and no inverted map does.

Measured (TF, seeds 0-11, 4 and 8 images, margin 0.05): insertion passes every good
map (leads >= 0.095 over random, >= 0.26 over the wrong class) and no inverted one
(<= -0.30); deletion to black misses 15 of 48 good batches and lets inverted maps lead
by up to 0.22; deletion to a blur separates well (>= 0.18 / <= -0.15).

Usage::

    KERAS_BACKEND=tensorflow python benchmarks/calibrate_faithful.py
    KERAS_BACKEND=tensorflow python benchmarks/calibrate_faithful.py --models convnet \\
        --images 4 --seeds 3 --metrics insertion,deletion:blur
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

LEADS = re.compile(r"leads: (-?[\d.]+) over the random map(?:, (-?[\d.]+) over the wrong)?")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="convnet,xception")
    parser.add_argument("--images", default="4,8", help="batch sizes")
    parser.add_argument("--seeds", type=int, default=12, help="scene seeds 0..N-1")
    parser.add_argument("--metrics", default="insertion,deletion,deletion:blur")
    parser.add_argument("--margin", type=float, default=None, help="default: the library's")
    args = parser.parse_args(argv)

    import convviz_check as cc
    from convviz_check import faithfulness as ff
    from convviz_check.errors import FaithfulnessError
    from convviz_check.examples import load_example_model, make_scenes

    margin = ff.DEFAULT_MARGIN if args.margin is None else args.margin

    def leads(model, x, cam, metric: str, **kwargs) -> tuple[float, float]:
        name, _, baseline = metric.partition(":")
        if baseline:
            kwargs["baseline"] = baseline
        try:  # an impossible margin: the error message carries every lead
            ff.assert_faithful(model, x, cam, metric=name, margin=10.0, **kwargs)
        except FaithfulnessError as e:
            found = LEADS.search(str(e))
            if found:
                return float(found.group(1)), float(found.group(2) or "nan")
            raise
        raise AssertionError("a margin of 10 cannot pass")

    bad = 0
    for name in args.models.split(","):
        model = load_example_model(name)
        side = model.input_shape[1]
        for n in (int(i) for i in args.images.split(",")):
            rows: dict[str, list[tuple[float, float, float]]] = {
                m: [] for m in args.metrics.split(",")
            }
            for seed in range(args.seeds):
                x = make_scenes(n, seed=seed, image_size=side).floats
                cam = cc.gradcam(model, x)
                inverted = 1.0 - cam.heatmap
                for metric in rows:
                    random_lead, wrong_lead = leads(model, x, cam, metric)
                    inverted_lead, _ = leads(
                        model, x, inverted, metric, class_index=cam.class_index, against="random"
                    )
                    rows[metric].append((random_lead, wrong_lead, inverted_lead))
            for metric, values in rows.items():
                v = np.asarray(values)
                misses = int((v[:, :2].min(axis=1) < margin).sum())
                passes = int((v[:, 2] >= margin).sum())
                bad += misses + passes
                print(
                    f"{name:9s} {n:2d} images {metric:14s} good map leads random >= "
                    f"{v[:, 0].min():+.3f}, wrong class >= {v[:, 1].min():+.3f}; inverted "
                    f"<= {v[:, 2].max():+.3f}; good maps missing {margin:g}: {misses}/"
                    f"{len(v)}, inverted maps passing: {passes}/{len(v)}"
                )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
