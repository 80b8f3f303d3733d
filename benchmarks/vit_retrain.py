"""Benchmark: does a golden of the ViT example's honest model pass its honest retrains and
fail its shortcut model under the ``retrain`` profile, with Grad-CAM on the token grid and
with attention rollout?

The gate's case (``convviz_check/examples/gate``): the golden is the honest transformer's
map of each of the gate's checked images (the first 16 of the shortcut example's biased
evaluation set, with their object boxes); every other model's maps are compared with it
by the package's own retrain judge (``cc.compare(golden, obtained, "heatmap",
profile="retrain", boxes=...)``, the metrics of ``types.RETRAIN_METRICS["heatmap"]``
under the bounds of ``tolerances.RETRAIN``), as ``convviz.check`` does under
``--convviz-profile=retrain``. Two maps per model:

- **Grad-CAM** on ``vit.TOKEN_LAYER`` (``transformer_block_1``, the 8x8 token grid: the
  layer the gate's ``pytest.ini`` names for a transformer);
- **rollout**: ``cc.cam(model, x, method="rollout")``.

Table 1: golden = ``--golden`` (default: the committed honest model), one row per model
and map, each metric's value (``!`` where it fails its bound) and the verdict. Table 2
(with ``--pairs``): every ordered pair of the honest models (the golden and the
retrains) against the shortcut model judged with every honest model's golden: per
metric the worst honest value, the shortcut's value nearest to passing, whether a bound
can sit between them, and how many honest pairs pass and shortcut comparisons fail.
Table 3 (with ``--calibrate``): the bounds ``convviz-check calibrate`` would write from
the retrains' values against the golden (``calibration.choose_bound``, default margin),
and the shortcut model's values against them. ``--bound FIELD=VALUE`` (repeatable)
judges every table with that bound in place of the retrain profile's.

Train retrains first (the honest recipe with another seed; the model is written only if
it passes the example's acceptance), e.g. with a two-line wrapper that sets
``vit.SEEDS["honest"]`` and calls ``vit.main(["--only", "honest", "--out", DIR])``.

Run (TensorFlow; about 10 s per model and map on 16 images)::

    python benchmarks/vit_retrain.py seed24=/tmp/vit24/honest.keras seed26=/tmp/vit26/honest.keras
    python benchmarks/vit_retrain.py --pairs --calibrate --images 64 seed24=... seed26=...
    python benchmarks/vit_retrain.py --pairs --bound heatmap_topk_iou_mean_min=0.111 ...

It prints markdown tables (the ones in docs/transformers.md).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

METHODS = ("gradcam", "rollout")
# The gate's images: conftest.N_CHECKED checked, conftest.N_ACCURACY for the accuracy.
GATE_CHECKED = 16
GATE_ACCURACY = 200


def _model_arg(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH, received {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"no model file at {path!r}")
    return label, Path(path)


def maps(path: Path, inputs: np.ndarray, accuracy_set: Any) -> tuple[dict[str, Any], float]:
    """The model's Grad-CAM (token grid) and rollout maps of ``inputs``, and its accuracy
    on ``accuracy_set``; the model is dropped afterwards (memory)."""
    import keras

    import convviz_check as cc
    from convviz_check.examples import vit

    model = cc.load_model(path)
    out = {
        "gradcam": cc.gradcam(model, inputs, layer=vit.TOKEN_LAYER),
        "rollout": cc.cam(model, inputs, method="rollout"),
    }
    probabilities = np.asarray(model.predict(accuracy_set.floats, verbose=0))
    accuracy = float((probabilities.argmax(axis=-1) == accuracy_set.labels).mean())
    del model
    keras.backend.clear_session()
    return out, accuracy


# Bounds that replace the retrain profile's (--bound FIELD=VALUE); empty: tolerances.RETRAIN.
BOUNDS: dict[str, float] = {}


def _bound_arg(text: str) -> tuple[str, float]:
    from convviz_check.tolerances import RETRAIN

    name, sep, value = text.partition("=")
    if not sep or name not in RETRAIN["heatmap"]:
        raise argparse.ArgumentTypeError(
            f"expected FIELD=VALUE with FIELD one of {sorted(RETRAIN['heatmap'])}, "
            f"received {text!r}"
        )
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r} in {text!r}") from None


def judged(golden: Any, obtained: Any, boxes: list) -> Any:
    """The retrain profile's comparison under its bounds (tolerances.RETRAIN, with
    :data:`BOUNDS` in their place)."""
    import convviz_check as cc

    return cc.compare(golden, obtained, "heatmap", BOUNDS or None, profile="retrain", boxes=boxes)


def _cell(result: Any) -> str:
    return f"{result.value:.3f}" + ("" if result.ok else " !")


def _bound(result: Any) -> str:
    if result.bound is None:
        return "-"
    return (">= " if result.direction == "min" else "<= ") + f"{result.bound:g}"


def table_against_golden(
    golden: str, cams: dict[str, dict[str, Any]], accuracy: dict[str, float], boxes: list
) -> list[str]:
    from convviz_check.types import RETRAIN_METRICS

    names = [n for n, _f, _d in RETRAIN_METRICS["heatmap"]]
    lines = [
        f"Golden: {golden} (accuracy {accuracy[golden]:.3f} on the gate's "
        f"{GATE_ACCURACY} images). `!`: fails the retrain bound.",
        "",
        "| model | accuracy | map | " + " | ".join(names) + " | verdict |",
        "|---|---|---|" + "---|" * len(names) + "---|",
    ]
    bounds: dict[str, str] = {}
    for method in METHODS:
        for label in cams:
            if label == golden:
                continue
            result = judged(cams[golden][method], cams[label][method], boxes)
            bounds.update({n: _bound(result.metrics[n]) for n in names})
            cells = [_cell(result.metrics[n]) for n in names]
            verdict = "passes" if result.passed else "fails"
            lines.append(
                f"| {label} | {accuracy[label]:.3f} | {method} | "
                + " | ".join(cells)
                + f" | {verdict} |"
            )
    lines.append("| bound | | | " + " | ".join(bounds[n] for n in names) + " | |")
    return lines


def table_of_pairs(honest: list[str], cheats: list[str], cams: dict, boxes: list) -> list[str]:
    """Per map and metric: the worst value over every ordered pair of honest models, the
    shortcut models' value nearest to passing over every honest golden, and whether a
    bound fits between them."""
    from convviz_check.types import RETRAIN_METRICS

    lines = [
        f"Honest: {', '.join(honest)} ({len(honest) * (len(honest) - 1)} ordered pairs); "
        f"shortcut: {', '.join(cheats)} against each honest golden.",
        "",
        "| map | metric | bound | worst honest pair | shortcut, nearest to passing | separable |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for method in METHODS:
        pairs = [
            judged(cams[a][method], cams[b][method], boxes)
            for a, b in itertools.permutations(honest, 2)
        ]
        contrasts = [
            judged(cams[a][method], cams[c][method], boxes) for a in honest for c in cheats
        ]
        for name, _field, direction in RETRAIN_METRICS["heatmap"]:
            worse = min if direction == "min" else max
            better = max if direction == "min" else min
            honest_worst = worse(r.metrics[name].value for r in pairs)
            cheat_best = better(r.metrics[name].value for r in contrasts)
            apart = honest_worst > cheat_best if direction == "min" else honest_worst < cheat_best
            if pairs[0].metrics[name].bound is None:
                verdict = "report only"
            elif apart:  # any bound strictly between the two separates them
                low, high = sorted((honest_worst, cheat_best))
                verdict = f"yes: a bound in ({low:.3f}, {high:.3f})"
            else:
                verdict = "no"
            lines.append(
                f"| {method} | {name} | {_bound(pairs[0].metrics[name])} | {honest_worst:.3f} "
                f"| {cheat_best:.3f} | {verdict} |"
            )
        verdicts.append(
            f"{method}: {sum(r.passed for r in pairs)} of {len(pairs)} honest pairs pass, "
            f"{sum(not r.passed for r in contrasts)} of {len(contrasts)} shortcut "
            "comparisons fail"
        )
    return [*lines, "", *verdicts]


def table_calibrated(
    golden: str, retrains: list[str], cheats: list[str], cams: dict, boxes: list
) -> list[str]:
    """What ``convviz-check calibrate`` would write from these retrains (the package's
    rule, :func:`convviz_check.calibration.choose_bound`: per field the retrains' worst
    widened by the default margin times their spread), and the shortcut models' values
    against those bounds (against ``golden``, as the gate)."""
    from convviz_check.calibration import DEFAULT_MARGIN, choose_bound, retrain_fields

    lines = [
        f"Calibrated on {len(retrains)} retrains against {golden} (margin {DEFAULT_MARGIN}); "
        "`!`: a shortcut value that fails the calibrated bound.",
        "",
        "| map | field | retrains' values | worst | spread | calibrated bound | informative | "
        + " | ".join(cheats)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(cheats),
    ]
    specs = [spec for spec in retrain_fields().values() if spec.kind == "heatmap"]
    for method in METHODS:
        honest = [judged(cams[golden][method], cams[r][method], boxes) for r in retrains]
        cheat = [judged(cams[golden][method], cams[c][method], boxes) for c in cheats]
        for spec in specs:
            if spec.field == "heatmap_class_flip_share_max":
                continue  # called out, not judged: calibrate keeps its built-in bound
            values = [r.metrics[spec.metric].value for r in honest]
            found = choose_bound(values, spec.direction, DEFAULT_MARGIN, spec.metric)
            bound = found["bound"]
            cells = []
            for r in cheat:
                value = r.metrics[spec.metric].value
                fails = value < bound if spec.direction == "min" else value > bound
                cells.append(f"{value:.3f}" + (" !" if fails else ""))
            lines.append(
                f"| {method} | {spec.field} | "
                + ", ".join(f"{v:.3f}" for v in values)
                + f" | {found['worst']:.3f} | {found['spread']:.3f} | {bound:.3f} | "
                + ("yes" if found["informative"] else "no")
                + " | "
                + " | ".join(cells)
                + " |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "retrains", nargs="+", type=_model_arg, help="honest retrains, as LABEL=PATH"
    )
    parser.add_argument("--golden", type=Path, default=None, help="default: committed honest")
    parser.add_argument(
        "--shortcut",
        type=_model_arg,
        action="append",
        default=None,
        help="shortcut models, LABEL=PATH (default: the committed shortcut model)",
    )
    parser.add_argument("--images", type=int, default=GATE_CHECKED, help="checked images")
    parser.add_argument("--pairs", action="store_true", help="also every honest pair")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="also the bounds convviz-check calibrate would write from the retrains",
    )
    parser.add_argument(
        "--bound",
        type=_bound_arg,
        action="append",
        default=[],
        help="judge with this retrain bound instead of the default, FIELD=VALUE "
        "(e.g. heatmap_spearman_mean_min=0.15); repeatable",
    )
    args = parser.parse_args(argv)
    BOUNDS.update(args.bound)

    import keras

    if keras.config.backend() != "tensorflow":
        print(f"runs on TensorFlow; KERAS_BACKEND={keras.config.backend()}", file=sys.stderr)
        return 2
    import keras_hub  # noqa: F401 - registers the keras-hub layers for loading

    from convviz_check.examples import shortcut, vit

    evaluation = shortcut.biased_eval_set(max(GATE_ACCURACY, args.images))
    accuracy_set = shortcut.biased_eval_set(GATE_ACCURACY)
    inputs = evaluation.floats[: args.images]
    boxes = list(evaluation.boxes[: args.images])
    golden = ("honest", args.golden or vit.model_path("honest"))
    cheats = args.shortcut or [("shortcut", vit.model_path("shortcut"))]
    cams: dict[str, dict[str, Any]] = {}
    accuracy: dict[str, float] = {}
    for label, path in [golden, *args.retrains, *cheats]:
        if label in cams:
            parser.error(f"label {label!r} given twice")
        cams[label], accuracy[label] = maps(path, inputs, accuracy_set)
    print(f"{args.images} images of the shortcut example's biased evaluation set, TensorFlow")
    changed = ", ".join(f"{k} = {v:g}" for k, v in BOUNDS.items())
    print(f"Bounds: tolerances.RETRAIN{' with ' + changed if changed else ''}\n")
    print("\n".join(table_against_golden(golden[0], cams, accuracy, boxes)))
    if args.pairs:
        honest = [golden[0], *(label for label, _ in args.retrains)]
        print()
        print("\n".join(table_of_pairs(honest, [c for c, _ in cheats], cams, boxes)))
    if args.calibrate:
        retrains = [label for label, _ in args.retrains]
        print()
        print("\n".join(table_calibrated(golden[0], retrains, [c for c, _ in cheats], cams, boxes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
