"""Benchmark: every CAM method on the bundled models, measured against the objects and
the model itself, next to a random map.

For each method of ``cc.cam`` on each bundled model (``convnet``, ``xception``), on
``--images`` fresh scenes (``make_scenes(N, seed=--seed)``; the models were trained on
seed 1 and accepted on seed 20240) with their object boxes:

- **pointing**: share of images whose heatmap peak lies in the object's box
  (:func:`convviz_check.localization.pointing_game`, no tolerance);
- **energy**: mean share of the heatmap's mass inside the box
  (:func:`~convviz_check.localization.energy_in_box`);
- **deletion / insertion AUC**: :mod:`convviz_check.faithfulness` with its defaults
  (32 steps; deletion to black, insertion from the blur), tracking the explained class
  (each image's top class); deletion lower is better, insertion higher;
- **seconds**: the first ``cc.cam`` call on a freshly loaded model (graph rewiring and
  tracing/compilation included) and the warm median per image over ``--repeats`` more
  calls, both on the first ``--time-images`` scenes (Score-CAM on torch is what bounds
  how many can be timed).

The row ``random`` is a seeded uniform map of the same ``(N, h, w)`` shape, scored for
the same classes: a method is worth its cost only where it beats it.

One backend per process (``KERAS_BACKEND``)::

    KERAS_BACKEND=jax python benchmarks/cam_methods.py --quick

``--merge`` runs that under tensorflow, torch and jax in turn (one child process each)
and prints one markdown table: the quality columns once, after checking that every
backend gave the same pointing result on every image and the same means (within
:data:`MEAN_ATOL`; it says so, or names what differs), and the seconds per backend::

    nice -n 10 python benchmarks/cam_methods.py --merge           # 96 scenes, 32 timed
    nice -n 10 python benchmarks/cam_methods.py --merge --quick   # 8 scenes, 1 repeat

Measured 2026-12-01 (2-core CPU shared with other jobs, load average 4-6; 96 scenes of
seed 31; tensorflow 2.21, torch 2.13, jax 0.10, Keras 3.15): the table is in the
README's "Beyond Grad-CAM: the CAM family"; the ``--merge`` took 18 min (TF 2 min,
torch 14 min, JAX 1.5 min: torch runs Score-CAM's masked inputs at 0.2-0.7 s per
image). Found on the way:

- Quality: identical pointing on every image, means within 2e-4; single-image deletion
  AUCs up to 0.02 apart (:data:`MEAN_ATOL`'s comment says why).
- Grad-CAM, XGrad-CAM and HiResCAM give the same maps on both models: their target
  layer feeds global average pooling and a dense layer, so ``dy/dA`` is the same at
  every position and all three reduce to ``sum_k w_k A_k``.
- Deletion to black barely separates the methods from the random map (xception: 0.226
  to 0.284 against 0.268); insertion does (0.957 against 0.672). A shape painted black
  (its mask set to 0) keeps its class: probability 0.998 (convnet) and 0.958
  (xception) over 32 scenes, against 0.26 and 0.32 when painted the image's mean.
- On 32 scenes Grad-CAM's pointing on xception was 0.72 (9 misses), on 96 it is 0.86
  and on 200 0.905: 32 scenes are too few for this column, hence 96.
- Eigen-CAM's warm time varies 10-100x between calls (TF, JAX): NumPy's SVD of a 64x64
  matrix, 0.4 ms alone, took 100-140 ms right after framework work with two OpenBLAS
  threads on the two cores, 0.4 ms with ``OPENBLAS_NUM_THREADS=1``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import base_parser, load_line, prepare_process

BACKENDS = ("tensorflow", "torch", "jax")
LABEL = {"tensorflow": "TF", "torch": "torch", "jax": "JAX"}
MODELS = ("convnet", "xception")
# Fresh scenes: neither the training seed (1) nor the acceptance seed (20240) of the
# bundled models, nor the seeds the tests use.
DEFAULT_SEED = 31
RANDOM = "random"
QUALITY = ("pointing", "energy", "deletion", "insertion")
# The quality columns are printed once, so every backend must give the same numbers:
# the same pointing result on every image and means within MEAN_ATOL. Per-image AUCs
# are only reported: the maps agree to 3e-7 across backends, but a map upsampled to
# 64x64 holds many exactly tied pixels (1566 of 4096 in the worst image), which
# deletion and insertion take in row-major order, and a 3e-7 difference reorders some
# of them (84 pixels there). Which pixels fall in the first k changes at one step, and
# the convnet's probability with it: measured 2026-12-01, convnet Grad-CAM, scene 9 of
# seed 31, deletion AUC 0.0792 with TF's map vs 0.0739 with torch's, *both run through
# TF's model*. Over 96 scenes: single images up to 0.02 apart, means <= 2e-4.
MEAN_ATOL = 1e-3


# --------------------------------------------------------------------------- one backend
def _quality(
    model: Any,
    images: np.ndarray,
    maps: Any,
    classes: np.ndarray,
    boxes: list[Any],
    deletion_baseline: str | None = None,
) -> dict[str, list[float]]:
    """Per-image pointing, energy, deletion and insertion AUC of ``maps`` (a GradCAM,
    whose degenerate flags count, or an ``(N, h, w)`` array)."""
    from convviz_check import faithfulness as ff
    from convviz_check.localization import energy_in_box, pointing_game

    shape = images.shape[1:3]
    pointing = [
        float(pointing_game(maps[i], box, image_shape=shape)) for i, box in enumerate(boxes)
    ]
    energy = [energy_in_box(maps[i], box, image_shape=shape) for i, box in enumerate(boxes)]
    extra = {"baseline": deletion_baseline} if deletion_baseline else {}
    deletion = ff.deletion(model, images, maps, class_index=classes, **extra).auc
    insertion = ff.insertion(model, images, maps, class_index=classes).auc
    return {
        "pointing": pointing,
        "energy": [float(e) for e in energy],
        "deletion": [float(v) for v in deletion],
        "insertion": [float(v) for v in insertion],
    }


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_backend(args: Any) -> dict[str, Any]:
    """Measure every (model, method) under the running backend; returns the JSON rows."""
    threads = prepare_process(args.threads)

    from _common import header, pin_framework_threads

    import convviz_check as cc
    from convviz_check import backends, examples
    from convviz_check.explain.cam import METHODS

    pinned = pin_framework_threads(threads)
    backend = backends.current_backend()
    n = args.images or (8 if args.quick else 96)
    timed_n = min(n, args.time_images or (8 if args.quick else 32))
    repeats = args.repeats or (1 if args.quick else 3)
    methods = args.methods.split(",") if args.methods else list(METHODS)
    options = {"scorecam": {"max_channels": args.max_channels}} if args.max_channels else {}
    print(header(pinned))
    print(load_line())
    scenes = examples.make_scenes(n, seed=args.seed)
    images = scenes.floats
    timed_images = images[:timed_n]
    boxes = [b[0] for b in scenes.boxes]
    # The framework's own start-up (first op, thread pools) is paid here, not by the
    # first method measured.
    examples.load_example_model("convnet").predict(images[:1], verbose=0)

    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for name in args.models.split(","):
        model = examples.load_example_model(name)
        classes: np.ndarray | None = None
        shape: tuple[int, ...] | None = None
        for method in methods:
            # A freshly loaded model: its caches (rewired graph, compiled functions)
            # are empty, so the first call pays what a test's first call pays.
            fresh = examples.load_example_model(name)

            def call(m: Any = fresh, meth: str = method, x: np.ndarray = timed_images) -> Any:
                return cc.cam(m, x, method=meth, **options.get(meth, {}))

            first, result = _timed(call)
            warm = [_timed(call)[0] for _ in range(repeats)]
            if timed_n < n:
                result = call(x=images)
            classes = result.class_index if classes is None else classes
            shape = result.heatmap.shape
            quality = _quality(
                model, images, result, result.class_index, boxes, args.deletion_baseline
            )
            rows.append(
                {
                    "model": name,
                    "method": method,
                    "layer": result.layer,
                    "map": list(result.heatmap.shape[1:]),
                    "degenerate": int(result.degenerate.sum()),
                    "classes_match_labels": float(np.mean(result.class_index == scenes.labels)),
                    "first_s": first,
                    "warm_s": warm,
                    "warm_s_per_image": statistics.median(warm) / timed_n,
                    **quality,
                }
            )
            _print_row(rows[-1])
        assert classes is not None and shape is not None
        noise = np.random.default_rng(args.seed).random(shape).astype(np.float32)
        rows.append(
            {
                "model": name,
                "method": RANDOM,
                **_quality(model, images, noise, classes, boxes, args.deletion_baseline),
            }
        )
        _print_row(rows[-1])
    return {
        "backend": backend,
        "versions": backends.framework_versions(),
        "threads": pinned,
        "images": n,
        "time_images": timed_n,
        "seed": args.seed,
        "repeats": repeats,
        "options": options,
        "deletion_baseline": args.deletion_baseline or "zero",
        "load": load_line(),
        "seconds": time.perf_counter() - t_start,
        "rows": rows,
    }


def _print_row(row: dict[str, Any]) -> None:
    means = " ".join(f"{q} {np.mean(row[q]):.3f}" for q in QUALITY)
    speed = (
        f" | first {row['first_s']:.2f} s, warm {row['warm_s_per_image'] * 1e3:.1f} ms/image"
        if "first_s" in row
        else ""
    )
    print(f"{row['model']:8s} {row['method']:9s} {means}{speed}", flush=True)


# --------------------------------------------------------------------------- merge
def run_merge(args: Any) -> int:
    """Run one child per backend, then print the merged table."""
    child_args = ["--json", "--seed", str(args.seed), "--models", args.models]
    for flag, value in (
        ("--images", args.images),
        ("--time-images", args.time_images),
        ("--repeats", args.repeats),
        ("--threads", args.threads),
        ("--methods", args.methods),
        ("--max-channels", args.max_channels),
        ("--deletion-baseline", args.deletion_baseline),
    ):
        if value:
            child_args += [flag, str(value)]
    if args.quick:
        child_args.append("--quick")
    results = []
    print(load_line())
    for backend in args.backends.split(","):
        from _common import run_child

        # The child reads KERAS_BACKEND at import; this process imports no framework.
        os.environ["KERAS_BACKEND"] = backend
        t0 = time.perf_counter()
        results.append(run_child(__file__, child_args, timeout=3600))
        print(f"{backend}: {time.perf_counter() - t0:.0f} s; {results[-1]['load']}", flush=True)
    if args.save:
        Path(args.save).write_text(json.dumps(results), encoding="utf-8")
    print()
    print(merged_table(results))
    return 0


def _agreement(results: list[dict[str, Any]]) -> list[str]:
    """Lines saying whether every backend gave the same quality numbers (see
    :data:`MEAN_ATOL`)."""
    ref = results[0]
    worst_mean = dict.fromkeys(QUALITY, 0.0)
    worst_image = dict.fromkeys(QUALITY, 0.0)
    differing: list[str] = []
    for other in results[1:]:
        for a, b in zip(ref["rows"], other["rows"], strict=True):
            for q in QUALITY:
                mean = abs(float(np.mean(a[q]) - np.mean(b[q])))
                worst_mean[q] = max(worst_mean[q], mean)
                worst_image[q] = max(worst_image[q], float(np.max(np.abs(np.subtract(a[q], b[q])))))
                if (q == "pointing" and a[q] != b[q]) or mean > MEAN_ATOL:
                    differing.append(
                        f"{a['model']} {a['method']} {q}: {ref['backend']} "
                        f"{np.mean(a[q]):.4f} vs {other['backend']} {np.mean(b[q]):.4f}"
                    )
    names = ", ".join(r["backend"] for r in results)
    text = (
        "max |diff| of the means: "
        + ", ".join(f"{q} {worst_mean[q]:.1g}" for q in QUALITY)
        + "; per image: "
        + ", ".join(f"{q} {worst_image[q]:.1g}" for q in QUALITY)
        + "; single-image AUCs move with the order of tied pixels"
    )
    if not differing:
        return [f"Quality agrees across {names} ({text})."]
    return [f"Quality DIFFERS across {names} ({text}):", *differing]


def merged_table(results: list[dict[str, Any]]) -> str:
    """One markdown table: quality from the first backend, seconds from each."""
    ref = results[0]
    n = ref["images"]
    labels = [LABEL.get(r["backend"], r["backend"]) for r in results]
    head = (
        "| model | method | pointing | energy in box | deletion AUC (lower) | insertion AUC "
        "(higher) | " + " | ".join(f"{lab} ms/image (first call s)" for lab in labels) + " |"
    )
    lines = [head, "|" + "---|" * (6 + len(results))]
    for i, row in enumerate(ref["rows"]):
        cells = [
            row["model"],
            f"`{row['method']}`" if row["method"] != RANDOM else "random map",
            f"{np.mean(row['pointing']):.2f}",
            f"{np.mean(row['energy']):.2f}",
            f"{np.mean(row['deletion']):.3f}",
            f"{np.mean(row['insertion']):.3f}",
        ]
        for r in results:
            other = r["rows"][i]
            if "first_s" in other:
                cells.append(f"{other['warm_s_per_image'] * 1e3:.1f} ({other['first_s']:.1f})")
            else:
                cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    degenerate = [
        f"{r['model']} {r['method']}: {r['degenerate']}" for r in ref["rows"] if r.get("degenerate")
    ]
    versions = " ".join(
        dict.fromkeys(
            f"{k}={v}" for r in results for k, v in r["versions"].items() if k != "backend"
        )
    )
    footer = [
        "",
        f"{n} scenes of seed {ref['seed']}; seconds on the first "
        f"{ref.get('time_images', n)}: warm = median of {ref['repeats']} calls; "
        f"options {ref['options'] or 'defaults'}; deletion baseline "
        f"{ref.get('deletion_baseline', 'zero')}; {versions}",
        *_agreement(results),
        "degenerate maps: " + (", ".join(degenerate) if degenerate else "none"),
        *(f"{r['backend']}: {r['seconds']:.0f} s measuring; {r['load']}" for r in results),
    ]
    return "\n".join(lines + footer)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="scenes (default 96, quick 8)")
    parser.add_argument(
        "--time-images", type=int, default=None, help="scenes timed (default 32, quick 8)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="scene seed")
    parser.add_argument("--models", default=",".join(MODELS), help="bundled models")
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    parser.add_argument(
        "--max-channels", type=int, default=None, help="Score-CAM max_channels (default: all)"
    )
    parser.add_argument(
        "--deletion-baseline",
        default=None,
        help="deletion's baseline (default: faithfulness' own, zero); e.g. mean",
    )
    parser.add_argument("--merge", action="store_true", help="run every backend, one table")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="for --merge")
    parser.add_argument("--save", default=None, help="--merge: write the children's JSON here")
    parser.add_argument("--load", default=None, help="print the table of a --save file")
    parser.add_argument("--json", action="store_true", help="end with one JSON line (children)")
    args = parser.parse_args(argv)
    if args.load:
        print(merged_table(json.loads(Path(args.load).read_text(encoding="utf-8"))))
        return 0
    if args.merge:
        return run_merge(args)
    result = run_backend(args)
    if args.json:
        print(json.dumps(result))
    else:
        print()
        print(merged_table([result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
