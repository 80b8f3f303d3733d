"""``convviz-check demo``: the whole harness in one command, on the bundled models.

1. For each bundled model (the chapter-style convnet and the tiny keras-hub Xception):
   accuracy and Grad-CAM pointing rate on fresh scenes, the Grad-CAM layer it chose,
   and heatmap overlays.
2. The chapter's three visualizations of the convnet: activation grids of one scene,
   the filter patterns of a mid layer (the chapter's and the robust ones,
   ``parameterization="fft"``, for the same channels), Grad-CAM overlays.
3. A golden check: the convnet's Grad-CAM is written as a golden, checked again
   (passes), then a planted model change (3% noise on one layer's weights) is checked
   (fails), with the report a CI run would upload.
4. A localization check: the peak lands on the object in at least 90% of the scenes.
5. The shortcut story: four models of the shortcut example (honest, a benign retrain,
   one that reads only a spurious corner mark, one that reads both the object and the
   mark) side by side on the biased evaluation set: the same accuracy, Grad-CAM
   overlays, the share of the map in the object box and in the cue's corner, accuracy
   when the cue lies, and the gate's verdicts: the ``exact`` and ``retrain`` profiles
   and the counterfactual probe, with the reasons and the per-class table.
6. One ``index.html`` that links it all; its path is printed last.

Importing this module is light (argparse only): Keras is imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

# PNGs are upscaled (nearest) so that a 64x64 scene is visible at a glance.
_UPSCALE = 4
# The planted change: Gaussian noise of this share of each weight's std on one layer.
PLANTED_NOISE = 0.03
MIN_POINTING = 0.9
# The shortcut story's gate verdicts use the gate example's images: the first 16 of the
# biased evaluation set, the honest model's maps as the golden.
GATE_IMAGES = 16
# Filter patterns shown: the same channels by the chapter's ascent and the robust one
# (parameterization="fft"), 4 channels (8 before the robust ones were added) and 64
# robust steps instead of the preset's 128, so the demo takes about the time it took.
PATTERN_FILTERS = 4
ROBUST_STEPS = 64


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on the ``convviz-check`` argparse tree."""
    parser = subparsers.add_parser(
        "demo",
        help="the whole harness on the bundled models: visualizations, golden checks, report",
        description="Load the bundled example models; print accuracy, the Grad-CAM layer "
        "and the pointing rate; write activation grids, filter patterns and Grad-CAM "
        "overlays; run a golden check that passes and a planted model change that fails, "
        "with its report; link everything from one index.html.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory")
    parser.add_argument("--n", type=int, default=200, help="fresh scenes for accuracy (200)")
    parser.add_argument("--images", type=int, default=4, help="scenes shown (4)")
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


def _check_args(args: argparse.Namespace) -> list[str]:
    from ..errors import InputError
    from . import MODEL_NAMES

    names = list(args.models or MODEL_NAMES)
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown or args.n < 1 or args.images < 1:
        raise InputError(
            f"Bad demo arguments. Received: models={names}, n={args.n}, images={args.images}. "
            f"Expected models among {MODEL_NAMES}, n >= 1, images >= 1."
        )
    return names


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 (errors surface as ConvvizError from the loaders)."""
    import keras

    from ..report.demo import write_demo_page
    from . import load_example_model, make_scenes
    from .train import ACCEPT_SEED

    names = _check_args(args)
    seed = ACCEPT_SEED if args.seed is None else args.seed
    scenes = make_scenes(args.n, seed=seed)
    shown = min(args.images, len(scenes))
    out: Path = args.out
    print(f"backend: {keras.config.backend()}; {len(scenes)} fresh scenes (seed {seed})")
    page: dict[str, Any] = {"backend": keras.config.backend(), "seed": seed, "models": []}
    page["scenes"] = _write_scenes(out, scenes, shown)
    for name in names:
        model = load_example_model(name)
        page["models"].append(_model_section(out, name, model, scenes, shown))
        if name == "convnet":
            page["chapter"] = _chapter_section(out, model, scenes)
            page["golden"] = _golden_section(out, model, scenes)
    page["shortcut"] = _shortcut_section(out, args.n, shown)
    index = write_demo_page(out, page)
    print(f"open {index.resolve()}")
    return 0


def _write_scenes(out: Path, scenes: Any, shown: int) -> list[dict[str, str]]:
    from ..storage import write_png
    from . import CLASS_NAMES

    written = []
    for i in range(shown):
        path = write_png(out / "scenes" / f"scene_{i}.png", _upscale(scenes.images[i]))
        label = f"{CLASS_NAMES[scenes.labels[i]]}, box {scenes.boxes[i][0].to_tuple()}"
        written.append({"path": str(path), "caption": label})
    return written


def _model_section(out: Path, name: str, model: Any, scenes: Any, shown: int) -> dict[str, Any]:
    """Accuracy, pointing rate, the Grad-CAM layer and overlays of one model."""
    from ..explain.gradcam import gradcam
    from ..localization import pointing_game
    from ..render import overlay
    from ..storage import write_png
    from . import CLASS_NAMES

    probs = np.asarray(model.predict(scenes.floats, verbose=0))
    accuracy = float((probs.argmax(axis=1) == scenes.labels).mean())
    cam = gradcam(model, scenes.floats)
    hits = [pointing_game(cam[i], boxes[0]) for i, boxes in enumerate(scenes.boxes)]
    rate = float(np.mean(hits))
    verdict = "passed" if rate >= MIN_POINTING else "FAILED"
    print(
        f"{name}: accuracy {accuracy:.3f}, Grad-CAM layer {cam.layer!r} "
        f"(score {cam.score_kind}), peak inside the object box {rate:.3f} "
        f"(localization check >= {MIN_POINTING}: {verdict})"
    )
    overlays = []
    for i in range(shown):
        picture = overlay(_upscale(scenes.images[i]), cam.heatmap[i])
        path = write_png(out / name / f"gradcam_{i}.png", picture)
        cls = CLASS_NAMES[int(cam.class_index[i])]
        overlays.append({"path": str(path), "caption": f"class {cls}, hit {hits[i]}"})
    return {
        "name": name,
        "accuracy": accuracy,
        "layer": cam.layer,
        "score": cam.score_kind,
        "pointing": rate,
        "localization": verdict,
        "overlays": overlays,
    }


def _chapter_section(out: Path, model: Any, scenes: Any) -> dict[str, Any]:
    """The chapter's three visualizations of one scene and one mid layer."""
    from ..explain.activations import activations
    from ..explain.filters import filter_patterns
    from ..graph import conv_layers
    from ..render import activation_grid, deprocess_image, filter_grid
    from ..storage import write_png

    grids = []
    for layer, act in activations(model, scenes.floats[:1]).items():
        stem = layer.replace("/", "__")
        path = write_png(out / "chapter" / f"activations_{stem}.png", activation_grid(act[0]))
        grids.append({"path": str(path), "caption": f"{layer} {tuple(act.shape[1:])}"})
    layer = conv_layers(model)[1]
    chapter = filter_patterns(model, layer, filters=range(PATTERN_FILTERS), seed=0)
    robust = filter_patterns(
        model, layer, range(PATTERN_FILTERS), steps=ROBUST_STEPS, parameterization="fft"
    )
    filters = []
    for kind, patterns, caption in (
        ("chapter", [deprocess_image(p) for p in chapter], "chapter (pixel ascent, 30 steps)"),
        ("fft", [_as_uint8(p) for p in robust], f"robust (fft, {ROBUST_STEPS} steps)"),
    ):
        # 2x nearest: a 64 px pattern is readable next to the activation grids
        grid = np.repeat(np.repeat(filter_grid(np.stack(patterns)), 2, axis=0), 2, axis=1)
        path = write_png(out / "chapter" / f"filters_{kind}_{layer}.png", grid)
        span = f"filters 0-{PATTERN_FILTERS - 1} of {layer}"
        filters.append({"path": str(path), "caption": f"{caption}: {span}"})
    print(
        f"convnet: activation grids of {len(grids)} layers, {PATTERN_FILTERS} filter patterns "
        f"of {layer!r} (chapter and robust)"
    )
    return {"activations": grids, "filters": filters}


def _as_uint8(pattern: np.ndarray) -> np.ndarray:
    """A robust pattern (always inside the [0, 1] input range) as it is, in uint8."""
    return np.asarray(np.clip(pattern, 0.0, 1.0) * 255.0 + 0.5, np.uint8)


def _golden_section(out: Path, model: Any, scenes: Any) -> dict[str, Any]:
    """Write a golden, check it (passes), plant a change and check again (fails)."""
    import keras

    from .. import golden
    from ..artifacts import Artifact
    from ..backends import current_backend
    from ..checks import CheckRequest, Settings, run_check
    from ..explain.gradcam import gradcam
    from ..graph import conv_layers
    from ..models import model_fingerprint
    from ..report.checks import write_report

    images = scenes.floats[:4]
    backend = current_backend()
    rel = PurePosixPath("demo", "convnet", "gradcam")
    changed = keras.models.clone_model(model)
    changed.set_weights(_planted(model, conv_layers(model)[2]))
    steps = (
        ("write the golden", model, "missing", None),
        ("check the same model again", model, None, None),
        ("planted change (3% noise on one layer)", changed, None, out / "report"),
    )
    outcomes = []
    for step, subject, mode, results in steps:
        settings = Settings(out / "golden", backend, mode, results_dir=results)
        request = CheckRequest(
            name="gradcam",
            rel=rel,
            obtained=Artifact.from_value(gradcam(subject, images)),
            backend=backend,
            meta={"backend": backend, "model_fingerprint": model_fingerprint(subject)},
            inputs=images,
            label="convviz-check demo",
        )
        outcome = run_check(settings, request, None)
        print(f"golden check, {step}: {outcome.status}")
        outcomes.append({"step": step, "status": outcome.status, "message": outcome.message})
    entry = {"nodeid": "convviz-check demo", **outcome.entry}
    paths = write_report(out / "report", [entry], {"backend": backend, "golden_backend": backend})
    print(outcome.message)
    return {
        "outcomes": outcomes,
        "report": str(paths["html"]),
        "golden": str(golden.inside(out / "golden", rel)) + ".npz",
    }


def _planted(model: Any, layer: str) -> list[np.ndarray]:
    """The model's weights with seeded noise (a share of each weight's std) on ``layer``."""
    rng = np.random.default_rng(0)
    target = {id(v) for v in model.get_layer(layer).weights}
    weights = []
    for v in model.weights:
        w = np.asarray(v.numpy())
        if id(v) in target:
            w = w + PLANTED_NOISE * float(w.std() or 1.0) * rng.standard_normal(w.shape)
        weights.append(w.astype(np.asarray(v.numpy()).dtype))
    return weights


def _shortcut_section(out: Path, n: int, shown: int) -> dict[str, Any]:
    """Honest vs retrain vs shortcut vs partial on the biased evaluation set, side by side,
    with the gate's verdicts (golden maps under both profiles, the counterfactual probe)."""
    from ..explain.gradcam import gradcam
    from ..metrics import compare
    from ..render import overlay
    from ..report.comparison import verdict_lines
    from ..report.demo import draw_box, side_by_side
    from ..storage import write_png
    from . import CLASS_NAMES
    from . import shortcut as sc

    biased = sc.biased_eval_set(max(n, GATE_IMAGES))
    counter = sc.cue_scenes(len(biased), sc.EVAL_SEED, mode="counter")
    checked = min(GATE_IMAGES, len(biased))
    boxes = biased.boxes[:checked]
    golden: Any = None
    rows: list[dict[str, Any]] = []
    print(f"\nthe shortcut example: {len(biased)} scenes of the biased evaluation set")
    for name in sc.MODEL_NAMES:
        model = sc.load(name)
        cam = gradcam(model, biased.floats)
        measured = sc.measure(model, biased, cam)
        lied = np.asarray(model.predict(counter.floats, verbose=0)).argmax(axis=-1)
        counter_accuracy = float((lied == counter.labels).mean())
        gate = cam[:checked]
        golden = gate if golden is None else golden  # the honest model's maps
        verdicts = {
            profile: compare(golden, gate, "heatmap", profile=profile, boxes=boxes)
            for profile in ("exact", "retrain")
        }
        probe = _probe(model, biased[:checked])
        judged = {p: {"passed": c.passed, "text": c.text} for p, c in verdicts.items()}
        judged["counterfactual"] = {"passed": probe.status == "passed", "text": probe.message}
        print(
            f"{name}: accuracy on the biased set {measured.accuracy:.3f} (when the cue lies "
            f"{counter_accuracy:.3f}); Grad-CAM energy in the object box "
            f"{measured.object_energy:.3f}, in the cue's corner {measured.cue_energy:.3f}; gate: "
            + ", ".join(f"{p} {'passed' if v['passed'] else 'FAILED'}" for p, v in judged.items())
        )
        # Why the gate fails it under the retrain profile: each verdict with its number,
        # the per-class table of a region that shifted, and what the pasted cue did.
        reasons = verdict_lines(verdicts["retrain"].metrics, verdicts["retrain"].details)
        if probe.status != "passed":
            reasons.append(f"counterfactual: {probe.lead}")
        for line in reasons:
            print(f"  {name}, {line.strip()}")
        overlays: list[dict[str, Any]] = []
        for i in range(shown):
            picture = overlay(_upscale(biased.images[i]), cam.heatmap[i])
            picture = draw_box(picture, biased.boxes[i], (255, 255, 255), _UPSCALE)
            picture = draw_box(picture, sc.CUE_CORNER, (255, 0, 255), _UPSCALE)
            path = write_png(out / "shortcut" / name / f"gradcam_{i}.png", picture)
            caption = (
                f"{CLASS_NAMES[int(cam.class_index[i])]}; peak {_peak_place(cam[i], biased, i)}"
            )
            overlays.append({"path": str(path), "caption": caption, "image": picture})
        rows.append(
            {
                "name": name,
                "role": _ROLES[name],
                "accuracy": measured.accuracy,
                "counter_accuracy": counter_accuracy,
                "object_energy": measured.object_energy,
                "cue_energy": measured.cue_energy,
                "object_pointing": measured.object_pointing,
                "cue_pointing": measured.cue_pointing,
                "overlays": overlays,
                "verdicts": judged,
                "reasons": reasons,
            }
        )
    figure = write_png(out / "shortcut" / "side_by_side.png", side_by_side(rows))
    for row in rows:
        for item in row["overlays"]:
            del item["image"]  # the page links the files
    return {
        "n": len(biased),
        "seed": sc.EVAL_SEED,
        "checked": checked,
        "figure": str(figure),
        "models": rows,
    }


def _probe(model: Any, scenes: Any) -> Any:
    """The gate's counterfactual probe: class 0's corner mark (noise-free) pasted into
    the checked scenes of the other classes, judged against the approved (honest)
    model's statistics that the gate example ships."""
    from ..explain.gradcam import gradcam
    from ..models import load_model
    from ..plugin_counterfactual import run_counterfactual
    from .shortcut import CUE_COLOURS

    def cam(m: Any, x: Any, class_index: Any, method: str = "gradcam", **kw: Any) -> Any:
        return gradcam(m, x, class_index=class_index, **kw)

    cue = np.empty((8, 8, 3), np.float32)
    cue[:] = np.asarray(CUE_COLOURS[0], np.float32) / np.float32(255.0)
    others = scenes.floats[scenes.labels != 0]
    reference = Path(__file__).resolve().parent / "gate" / "counterfactual.json"
    return run_counterfactual(
        model, others, cue=cue, cam=cam, load_model=load_model, reference=reference
    )


def _peak_place(cam: Any, scenes: Any, i: int) -> str:
    from ..localization import pointing_game
    from .shortcut import CUE_CORNER

    if pointing_game(cam, scenes.boxes[i]):
        return "on the object"
    return "in the cue's corner" if pointing_game(cam, CUE_CORNER) else "elsewhere"


_ROLES = {
    "honest": "trained where the corner mark's colour is random",
    "retrain": "the same recipe, another seed",
    "shortcut": "trained where only the corner mark tells the class",
    "partial": "trained where the label is the corner mark's class in 40% of the scenes",
}
