"""Measure what the default comparison bounds of ``convviz_check/tolerances.py`` must
absorb, and print the worst observed value of every metric.

Repeats on one machine are bit-identical, so repeat noise alone calibrates to zero.
What a CI machine may legitimately vary is measured instead:

- same backend: thread count (1 vs 2, batch 8) and batch size (1 vs 8, 1 thread);
- cross backend (``--backends`` naming several): each backend against the first
  (the golden reference, tensorflow by default), 1 thread, batch 8.

Every configuration runs in its own subprocess (thread pools and the backend are fixed
when a framework starts), writes its artifacts to an ``.npz``, and this parent process,
which imports no framework, compares them with :func:`convviz_check.compare.compare`.

Models: the bundled examples (``convviz_check/examples/models/*.keras``) when they
exist, else tiny seeded stand-ins written once to ``.keras`` files that every backend
loads (weights come from files, never from a seed per backend: SPEC 1.0).

Usage::

    python benchmarks/calibrate_tolerances.py                      # same-backend, tensorflow
    python benchmarks/calibrate_tolerances.py --backends tensorflow,torch,jax
    python benchmarks/calibrate_tolerances.py --what activations,gradcam --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TECHNIQUES = ("activations", "gradcam", "filters")
N_IMAGES = 8
N_FILTERS = 8
# (label, threads, batch size); the first is the baseline of the same-backend pairs
# and the configuration compared across backends.
CONFIGS = (("t1_b8", 1, 8), ("t2_b8", 2, 8), ("t1_b1", 1, 1))
SAME_BACKEND_PAIRS = (("t1_b8", "t2_b8", "threads 1 vs 2"), ("t1_b8", "t1_b1", "batch 8 vs 1"))


# ======================================================================================
# child side: one backend, one configuration
# ======================================================================================
def child_make_tiny(out_dir: Path) -> None:
    """Write tiny stand-in models (seeded weights) as ``.keras`` files."""
    sys.path.insert(0, str(HERE))
    from _common import prepare_process, write_seeded_weights

    prepare_process(1)
    import keras

    layers = keras.layers
    inputs = keras.Input((64, 64, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(4, activation="softmax", name="predictions")(x)
    convnet = keras.Model(inputs, outputs, name="tiny_convnet")
    write_seeded_weights(convnet, out_dir / "tiny_convnet.weights.h5", seed=0)
    convnet.save(out_dir / "tiny_convnet.keras")

    import keras_hub

    backbone = keras_hub.models.XceptionBackbone(
        # a pooling block must change the filter count (its residual gets a strided
        # 1x1 conv only then)
        stackwise_conv_filters=[[8, 16], [24, 24], [32, 32]],
        stackwise_pooling=[False, True, True],
        image_shape=(64, 64, 3),
    )
    xception = keras_hub.models.XceptionImageClassifier(
        backbone=backbone, num_classes=4, activation="softmax", preprocessor=None
    )
    write_seeded_weights(xception, out_dir / "tiny_xception.weights.h5", seed=0)
    xception.save(out_dir / "tiny_xception.keras")


def child_compute(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from _common import pin_framework_threads, prepare_process

    prepare_process(args.threads)
    import keras  # noqa: F401

    pin_framework_threads(args.threads)
    import convviz_check as cc

    images = np.load(args.images)
    model = cc.load_model(args.model)
    out: dict[str, np.ndarray] = {}
    what = args.what.split(",")
    bs = args.batch_size
    if "activations" in what:
        acts = cc.activations(model, images, batch_size=bs)
        out.update({f"activations/{k}": v for k, v in acts.items()})
    if "gradcam" in what and _has_module("convviz_check.explain.gradcam"):
        cams = [cc.gradcam(model, images[i : i + bs]) for i in range(0, len(images), bs)]
        out["gradcam/heatmap"] = np.concatenate([c.heatmap for c in cams])
        out["gradcam/class_index"] = np.concatenate([c.class_index for c in cams])
        out["gradcam/degenerate"] = np.concatenate([c.degenerate for c in cams])
    if "filters" in what and _has_module("convviz_check.explain.filters"):
        layer = cc.conv_layers(model)[-1]
        raw = cc.filter_patterns(
            model, layer, filters=range(N_FILTERS), batch_size=min(bs, N_FILTERS)
        )
        out["filters/raw"] = raw
        out["filters/deprocessed"] = np.stack([cc.deprocess_image(p) for p in raw])
    np.savez(args.out, **out)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ======================================================================================
# parent side: framework-free
# ======================================================================================
def run_child(backend: str, argv: list[str], workdir: Path) -> None:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    proc = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({backend}: {' '.join(argv)}):\n{proc.stderr[-4000:]}")


def model_sources(workdir: Path, first_backend: str) -> dict[str, Path]:
    bundled = REPO / "convviz_check" / "examples" / "models"
    found = {p.stem: p for p in sorted(bundled.glob("*.keras"))} if bundled.is_dir() else {}
    if found:
        return found
    print("bundled models not found: using tiny seeded stand-ins", flush=True)
    run_child(first_backend, ["--make-tiny", str(workdir)], workdir)
    return {name: workdir / f"{name}.keras" for name in ("tiny_convnet", "tiny_xception")}


def make_images(path: Path) -> str:
    try:
        from convviz_check.examples.scenes import make_scenes

        images = make_scenes(N_IMAGES, seed=0).floats
        source = "scenes"
    except Exception:  # the scenes generator is optional here
        images = np.random.default_rng(0).random((N_IMAGES, 64, 64, 3), dtype=np.float32)
        source = "uniform noise"
    np.save(path, images.astype(np.float32))
    return source


def load_artifacts(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        flat = {k: data[k] for k in data.files}
    arts: dict[str, Any] = {}
    acts = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("activations/")}
    if acts:
        arts["activation"] = acts
    if "gradcam/heatmap" in flat:
        arts["heatmap"] = {
            "heatmap": flat["gradcam/heatmap"],
            "class_index": flat["gradcam/class_index"],
            "degenerate": flat["gradcam/degenerate"],
        }
    if "filters/raw" in flat:
        arts["pattern"] = flat["filters/deprocessed"]
        arts["pattern_raw"] = flat["filters/raw"]
    return arts


def measure(a: dict[str, Any], b: dict[str, Any], cross: bool) -> dict[tuple[str, str], float]:
    from convviz_check.compare import compare

    values: dict[tuple[str, str], float] = {}
    for key in a:
        kind = "pattern" if key == "pattern_raw" else key
        result = compare(a[key], b[key], kind, cross_backend=cross)
        for name, m in result.metrics.items():
            values[(key, name)] = m.value
        if kind == "heatmap":
            values[(key, "degenerate_images")] = float(sum(result.details["degenerate_expected"]))
    return values


def worst(direction: str, xs: list[float]) -> float:
    return max(xs) if direction == "max" else min(xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--what", default=",".join(TECHNIQUES))
    parser.add_argument("--workdir", default=None, help="keep artifacts here")
    parser.add_argument("--json", default=None, help="also write the measurements here")
    parser.add_argument("--quick", action="store_true", help="threads pair only")
    parser.add_argument("--verbose", action="store_true", help="name where each worst was")
    # child modes
    parser.add_argument("--make-tiny", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_tiny:
        return child_make_tiny(Path(args.make_tiny))
    if args.child:
        return child_compute(args)

    sys.path.insert(0, str(REPO))
    from convviz_check.compare import _METRICS
    from convviz_check.tolerances import TABLE

    backends = args.backends.split(",")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="convviz_calibrate_"))
    workdir.mkdir(parents=True, exist_ok=True)
    images_path = workdir / "images.npy"
    print(f"images: {N_IMAGES} x 64x64 ({make_images(images_path)}); workdir {workdir}")
    models = model_sources(workdir, backends[0])
    configs = CONFIGS[:2] if args.quick else CONFIGS
    artifacts: dict[tuple[str, str, str], dict[str, Any]] = {}
    for backend in backends:
        for model_name, model_path in models.items():
            for label, threads, batch in configs:
                out = workdir / f"{backend}_{model_name}_{label}.npz"
                print(f"  computing {backend} {model_name} {label}", flush=True)
                run_child(
                    backend,
                    [
                        "--child",
                        "--model",
                        str(model_path),
                        "--images",
                        str(images_path),
                        "--threads",
                        str(threads),
                        "--batch-size",
                        str(batch),
                        "--what",
                        args.what,
                        "--out",
                        str(out),
                    ],
                    workdir,
                )
                artifacts[(backend, model_name, label)] = load_artifacts(out)

    same: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
    cross: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
    pairs = [p for p in SAME_BACKEND_PAIRS if p[1] in {c[0] for c in configs}]
    for backend in backends:
        for model_name in models:
            for base, other, why in pairs:
                a = artifacts[(backend, model_name, base)]
                b = artifacts[(backend, model_name, other)]
                for key, v in measure(a, b, cross=False).items():
                    same[key].append((v, f"{backend} {model_name} {why}"))
            if backend != backends[0]:
                a = artifacts[(backends[0], model_name, configs[0][0])]
                b = artifacts[(backend, model_name, configs[0][0])]
                for key, v in measure(a, b, cross=True).items():
                    cross[key].append((v, f"{backends[0]} vs {backend} {model_name}"))

    direction = {name: d for kind in _METRICS.values() for name, _f, d in kind}
    field = {(k, name): f for k, kind in _METRICS.items() for name, f, _d in kind}
    print()
    print(f"{'artifact':<12} {'metric':<18} {'worst same-backend':>20} {'worst cross':>14}  bounds")
    report = {}
    for key in sorted(set(same) | set(cross)):
        artifact, name = key
        d = direction.get(name, "max")
        pick = max if d == "max" else min
        s = pick(same[key], key=lambda t: t[0]) if same[key] else None
        c = pick(cross[key], key=lambda t: t[0]) if cross[key] else None
        kind = "pattern" if artifact == "pattern_raw" else artifact
        bounds = TABLE.get(kind, {}).get(field.get((kind, name), ""), None)
        # similarities near 1 need more digits than errors to show their gap to 1
        fmt = ".3g" if d == "max" else ".7g"
        s_txt = f"{s[0]:{fmt}}" if s else "-"
        c_txt = f"{c[0]:{fmt}}" if c else "-"
        print(f"{artifact:<12} {name:<18} {s_txt:>20} {c_txt:>14}  {bounds or ''}")
        for label, found in (("same", s), ("cross", c)):
            if found and args.verbose:
                print(f"{'':<32}{label}: worst at {found[1]}")
        report[f"{artifact}:{name}"] = {
            "same_backend": s[0] if s else None,
            "same_backend_where": s[1] if s else None,
            "cross_backend": c[0] if c else None,
            "cross_backend_where": c[1] if c else None,
            "bounds": bounds,
        }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
