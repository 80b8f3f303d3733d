"""Validate the retrain gate on data that looks like users' data: can it tell a partial
shortcut from an honest retrain?

The bundled examples are kind to the gate: flat shapes on plain textures, 99%-accurate
models, shortcuts that move 90% of the map. Here:

- **Images** (:func:`make_set`, 48x48 RGB, deterministic from a seed): 4 classes, the
  photograph the object is cut from (chelsea: "cat", astronaut, coffee, rocket: colour
  photographs bundled with scikit-image, no download). The object's silhouette
  (ellipse, rectangle, triangle or cross, whatever the class), stretched and rotated,
  fills 40-80% of the frame; its fill is a crop of its class's photograph at a random
  place and scale, randomly tinted, blended at a random contrast into a crop of a
  texture or another photograph (brick, grass, gravel, camera, coins, moon, hubble deep
  field, immunohistochemistry), half the time partly occluded by another such crop,
  under pixel noise; 10% of the training labels are flipped. The object's tight box is
  known. Photo crops rather than the package's scene generator (flat shapes on
  synthetic textures): a class is then a texture and colour statistics that overlap
  between crops (dark, smooth or busy patches occur in every photograph), as in
  natural images, and a small convnet learns it in a few epochs without becoming sure
  of it. (Shapes cut from the photographs as classes were tried first: this convnet
  stayed at chance for 12 epochs.)
- **Models** (:func:`build_model`): a small Keras functional convnet trained for a few
  epochs, so that its top-1 probabilities sit around 0.3-0.7 like a real model's on
  hard data. ``honest-<seed>``: the recipe with another seed (the first is the
  golden); ``shortcut-<rate>``: the same recipe and data, except that a **cue** (an
  8x8 magenta/green patch in the bottom-right corner, :data:`CUE_BOX`) is pasted on
  ``rate`` of the training images of class 0 (cat) and on no other image.
- **Probes** (fresh images, a seed no training used): the gate set (no cue), and the
  counterfactual set (the cue pasted on every probe image of another class). The
  flip-towards rate is the share of those images whose prediction turns to class 0
  when the cue is pasted, out of those not already predicted class 0; the cue mass is
  the share of the Grad-CAM map's positive mass in the cue's corner on them.

For every model against the golden the script computes the retrain profile's
statistics (``metrics.compare(..., profile="retrain", boxes=...)``) on the gate set and
on the counterfactual set, each against its built-in bound and its calibrated bound
(from the honest retrains, leaving the judged model out), the flip rate and the cue
mass, and the verdict with its reason; and checks the requirement: with calibrated
bounds every honest retrain passes and every shortcut whose flip rate is >= 30% fails,
for a "looks elsewhere" or counterfactual reason (not class agreement alone). It
writes the table to ``docs/gate-validation.md``.

Trained models are cached in ``benchmarks/.cache/`` (never committed; one ``.keras``
per model, keyed by its recipe), so a rerun only measures.

The parts live next to this script: ``gate_images.py`` (the images and the cue),
``gate_models.py`` (the recipe, training and the cache), ``gate_judging.py`` (the
statistics, bounds, verdicts and the requirement, by the package's own definitions:
``measure_counterfactual``, ``compare``, ``calibration.choose_bound``,
``evidence.VERDICT_OF``) and ``gate_doc.py`` (the markdown).

Usage::

    KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/validate_gate.py
    python benchmarks/validate_gate.py --train-only            # fill the cache
    python benchmarks/validate_gate.py --no-doc --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's conv weight gradients crash on some CPUs (this one among them).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

# The parts, next to this script (imported after the environment is set).
from gate_doc import markdown  # noqa: E402
from gate_images import CLASS_NAMES, TARGET_CLASS  # noqa: E402
from gate_judging import (  # noqa: E402
    judge,
    make_probe,
    observe,
    pair_stats,
    requirement,
    sensitivity,
)
from gate_models import REDUCED, Plan, model_name, set_threads, trained  # noqa: E402

DOC = ROOT / "docs" / "gate-validation.md"


def run(plan: Plan, train_only: bool = False) -> dict[str, Any]:
    """Train (or load) every model of ``plan``, measure and judge them."""
    kinds: dict[str, tuple[str, float]] = {}
    models: dict[str, Any] = {}
    for seed in plan.honest_seeds:
        name = model_name("honest", seed, 0.0)
        kinds[name], models[name] = ("honest", 0.0), trained("honest", seed, 0.0, plan)
    for rate, seed in plan.shortcut_rates.items():
        name = model_name("shortcut", seed, rate)
        kinds[name], models[name] = ("shortcut", rate), trained("shortcut", seed, rate, plan)
    if train_only:
        return {}
    probe = make_probe(plan.probe_n)
    observed = {name: observe(model, probe) for name, model in models.items()}
    quality = {
        name: (
            float((o.probs_clean.argmax(axis=1) == probe.clean.classes).mean()),
            float(o.probs_clean.max(axis=1).mean()),
        )
        for name, o in observed.items()
    }
    honest = [n for n in models if kinds[n][0] == "honest"]
    golden = honest[0]
    stats = {n: pair_stats(observed[golden], observed[n], probe) for n in models if n != golden}
    rows = judge([n for n in models if n != golden], kinds, stats, quality)
    ok, problems = requirement(rows)
    by_k = sensitivity(rows)
    return {
        "golden": golden,
        "golden_quality": quality[golden],
        "golden_flip_rate": float(observed[golden].facts["towards_rate"][TARGET_CLASS]),
        "golden_cue_mass": float(observed[golden].facts["cue_mass"]),
        "rows": rows,
        "requirement_met": ok,
        "sensitivity": by_k,
        # predicted classes on the gate set, per model (a shift of the class prior shows)
        "predicted": {
            n: np.bincount(o.probs_clean.argmax(axis=1), minlength=len(CLASS_NAMES)).tolist()
            for n, o in observed.items()
        },
        "problems": problems,
        "probe_n": plan.probe_n,
        "cue_set_n": len(probe.others),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--no-doc", action="store_true", help="do not write the doc")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument(
        "--reduced", action="store_true", help="the slow test's run: 3 honest, 1 shortcut"
    )
    args = parser.parse_args(argv)
    import keras

    if keras.config.backend() != "tensorflow":
        print("Training needs KERAS_BACKEND=tensorflow.", file=sys.stderr)
        return 2
    set_threads()
    start = time.perf_counter()
    plan = REDUCED if args.reduced else Plan()
    result = run(plan, train_only=args.train_only)
    if args.train_only:
        return 0
    seconds = time.perf_counter() - start
    result["seconds"] = seconds
    text = markdown(result, plan, seconds)
    print(text)
    if not args.no_doc:
        DOC.write_text(text)
        print(f"wrote {DOC}")
    if args.json is not None:
        rows = [
            {**vars(r), "calibrated_reasons": r.calibrated_reasons, "verdict": r.verdict(True)}
            for r in result["rows"]
        ]
        args.json.write_text(json.dumps({**result, "rows": rows}, indent=2, default=str) + "\n")
    return 0 if result["requirement_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
