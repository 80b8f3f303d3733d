"""Measure what the default comparison bounds of ``convviz_check/tolerances.py`` must
absorb on the bundled example models, and what a real change of the model produces.

Repeats on one machine are bit-identical, so repeat noise alone calibrates to zero.
What a CI machine may legitimately vary is measured instead:

- same backend: thread count (1 vs 2, batch 8) and batch size (1 vs 8, 1 thread);
- cross backend: every pair of the backends given (tensorflow vs torch, tensorflow vs
  jax, torch vs jax), 1 thread, batch 8;
- a real change, for contrast: the reference (first) backend with every float weight
  multiplied by ``1 + 0.01 * N(0, 1)`` (seeded), against the unchanged model. The
  bounds must sit between the noise and this.

Artifacts, computed as the plugin and ``cc.agreement`` compute them: activations of
every default layer (``graph.default_activation_layers``), Grad-CAM with the automatic
target layer and score on ``--scenes`` scenes (``make_scenes(n, seed=0)``), and
``--filters`` filter patterns of the layer ``cc.agreement`` uses
(``worker.default_filters_layer``), compared deprocessed (``cc.deprocess_image``:
standardized, uint8, 12.5% cropped). The raw float patterns are measured too
(``pattern_raw``), for information only.

Every configuration runs in its own subprocess (thread pools and the backend are fixed
when a framework starts) that computes both bundled models (``convnet``, ``xception``,
through ``convviz_check.examples``) and writes one ``.npz`` per model; this parent
process imports no framework and compares them with
:func:`convviz_check.metrics.compare`. Backends and configurations run one after the
other (the machine has 2 cores).

Usage::

    python benchmarks/calibrate_tolerances.py --backends tensorflow,torch,jax \\
        --json /tmp/calibration.json --verbose
    python benchmarks/calibrate_tolerances.py --backends jax --what activations,gradcam
    python benchmarks/calibrate_tolerances.py --workdir DIR --reuse   # re-compare only
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import subprocess
import sys
import tempfile
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TECHNIQUES = ("activations", "gradcam", "filters")
MODELS = ("convnet", "xception")
# (label, threads, batch size, weight perturbation); the first is the baseline of the
# same-backend pairs, the configuration compared across backends and the unchanged
# side of the perturbation pair.
CONFIGS = (("t1_b8", 1, 8, 0.0), ("t2_b8", 2, 8, 0.0), ("t1_b1", 1, 1, 0.0))
SAME_BACKEND_PAIRS = (("t1_b8", "t2_b8", "threads 1 vs 2"), ("t1_b8", "t1_b1", "batch 8 vs 1"))
PERTURBATION = 0.01  # relative std of the multiplicative weight noise of the "real change"
PERTURBED = ("perturbed", 1, 8, PERTURBATION)


# ======================================================================================
# child side: one backend, one configuration, every model
# ======================================================================================
def perturb_weights(model: Any, relative: float, seed: int = 0) -> None:
    """Multiply every float weight by ``1 + relative * N(0, 1)``, keyed by its path
    (the same noise on every backend)."""
    import keras

    for variable in model.weights:
        if "float" not in str(variable.dtype):
            continue  # seed-generator states and counters are not weights
        value = np.asarray(keras.ops.convert_to_numpy(variable), np.float32)
        rng = np.random.default_rng([seed, zlib.crc32(variable.path.encode())])
        noise = 1.0 + relative * rng.standard_normal(value.shape)
        variable.assign((value * noise).astype(np.float32))


def child_compute(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from _common import pin_framework_threads, prepare_process

    prepare_process(args.threads)
    import keras  # noqa: F401

    pin_framework_threads(args.threads)
    import convviz_check as cc
    from convviz_check.crossbackend.compute import default_filters_layer
    from convviz_check.examples import load_example_model, make_scenes

    images = make_scenes(args.scenes, seed=0).floats.astype(np.float32)
    what = args.what.split(",")
    bs = args.batch_size
    for name in args.models.split(","):
        model = load_example_model(name)
        if args.perturb:
            perturb_weights(model, args.perturb)
        out: dict[str, np.ndarray] = {}
        if "activations" in what:
            acts = cc.activations(model, images, batch_size=bs)
            out.update({f"activations/{k}": v for k, v in acts.items()})
        if "gradcam" in what:
            cams = [cc.gradcam(model, images[i : i + bs]) for i in range(0, len(images), bs)]
            out["gradcam/heatmap"] = np.concatenate([c.heatmap for c in cams])
            out["gradcam/class_index"] = np.concatenate([c.class_index for c in cams])
            out["gradcam/degenerate"] = np.concatenate([c.degenerate for c in cams])
            out["gradcam/layer"] = np.asarray(cams[0].layer)
        if "filters" in what:
            layer = default_filters_layer(model)
            raw = cc.filter_patterns(
                model, layer, filters=range(args.filters), batch_size=min(bs, args.filters)
            )
            out["filters/raw"] = raw
            out["filters/deprocessed"] = np.stack([cc.deprocess_image(p) for p in raw])
            out["filters/layer"] = np.asarray(layer)
        np.savez(Path(args.out_dir) / f"{args.tag}_{name}.npz", **out)


# ======================================================================================
# parent side: framework-free
# ======================================================================================
def run_child(backend: str, argv: list[str], workdir: Path) -> None:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    proc = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({backend}: {' '.join(argv)}):\n{proc.stderr[-4000:]}")


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
        arts["_gradcam_layer"] = str(flat["gradcam/layer"])
    if "filters/raw" in flat:
        arts["pattern"] = flat["filters/deprocessed"]
        arts["pattern_raw"] = flat["filters/raw"]
        arts["_filters_layer"] = str(flat["filters/layer"])
    return arts


def measure(a: dict[str, Any], b: dict[str, Any], cross: bool) -> dict[tuple[str, str], float]:
    """Metric values of every artifact of ``a`` against ``b`` (keyed (artifact, metric))."""
    from convviz_check.metrics import compare

    values: dict[tuple[str, str], float] = {}
    for key in a:
        if key.startswith("_"):
            continue
        kind = "pattern" if key == "pattern_raw" else key
        result = compare(a[key], b[key], kind, cross_backend=cross)
        for name, m in result.metrics.items():
            values[(key, name)] = m.value
        if kind == "heatmap":
            values[(key, "degenerate_images")] = float(sum(result.details["degenerate_expected"]))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="tensorflow,torch,jax")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--what", default=",".join(TECHNIQUES))
    parser.add_argument("--scenes", type=int, default=8, help="Grad-CAM/activation images")
    parser.add_argument("--filters", type=int, default=4, help="filter patterns per model")
    parser.add_argument("--workdir", default=None, help="keep artifacts here")
    parser.add_argument("--reuse", action="store_true", help="reuse .npz files in --workdir")
    parser.add_argument("--no-perturbed", action="store_true", help="skip the 1%% weight run")
    parser.add_argument("--json", default=None, help="also write the measurements here")
    parser.add_argument("--verbose", action="store_true", help="name where each worst was")
    # child mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--perturb", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_compute(args)

    sys.path.insert(0, str(REPO))
    from convviz_check.tolerances import TABLE
    from convviz_check.types import METRICS as _METRICS

    backends = args.backends.split(",")
    models = args.models.split(",")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="convviz_calibrate_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"{args.scenes} scenes (64x64, seed 0), {args.filters} filters; models {models}; "
        f"backends {backends}; workdir {workdir}",
        flush=True,
    )
    runs = [(b, c) for b in backends for c in CONFIGS]
    if not args.no_perturbed:
        runs.append((backends[0], PERTURBED))
    artifacts: dict[tuple[str, str, str], dict[str, Any]] = {}
    for backend, (label, threads, batch, perturb) in runs:
        tag = f"{backend}_{label}"
        paths = {m: workdir / f"{tag}_{m}.npz" for m in models}
        if not (args.reuse and all(p.exists() for p in paths.values())):
            print(f"  computing {tag}", flush=True)
            run_child(
                backend,
                [
                    "--child",
                    *("--models", ",".join(models), "--what", args.what),
                    *("--scenes", str(args.scenes), "--filters", str(args.filters)),
                    *("--threads", str(threads), "--batch-size", str(batch)),
                    *("--perturb", str(perturb), "--out-dir", str(workdir), "--tag", tag),
                ],
                workdir,
            )
        for m, path in paths.items():
            artifacts[(backend, m, label)] = load_artifacts(path)

    # column -> (artifact, metric) -> [(value, where)]
    columns: dict[str, dict[tuple[str, str], list[tuple[float, str]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    base = CONFIGS[0][0]
    for backend in backends:
        for m in models:
            for first, other, why in SAME_BACKEND_PAIRS:
                a, b = artifacts[(backend, m, first)], artifacts[(backend, m, other)]
                for key, v in measure(a, b, cross=False).items():
                    columns[f"same {backend}"][key].append((v, f"{m} {why}"))
    for ref, other in itertools.combinations(backends, 2):
        for m in models:
            a, b = artifacts[(ref, m, base)], artifacts[(other, m, base)]
            for key, v in measure(a, b, cross=True).items():
                columns[f"cross {ref}-{other}"][key].append((v, m))
    if not args.no_perturbed:
        for m in models:
            a = artifacts[(backends[0], m, base)]
            b = artifacts[(backends[0], m, PERTURBED[0])]
            for key, v in measure(a, b, cross=False).items():
                columns[f"1% weights {backends[0]}"][key].append((v, m))

    for m in models:
        arts = artifacts[(backends[0], m, base)]
        layers = ", ".join(f"{k[1:]}={v}" for k, v in arts.items() if k.startswith("_"))
        print(f"{m}: {layers}")

    direction = {name: d for kind in _METRICS.values() for name, _f, d in kind}
    field = {(k, name): f for k, kind in _METRICS.items() for name, f, _d in kind}
    keys = sorted({key for col in columns.values() for key in col})
    names = list(columns)
    print(f"\nworst value per column (measured {datetime.date.today()}):")
    print(f"{'artifact':<12} {'metric':<18} " + " ".join(f"{n:>22}" for n in names) + "  bounds")
    report: dict[str, Any] = {"date": str(datetime.date.today()), "metrics": {}}
    for key in keys:
        artifact, name = key
        pick = max if direction.get(name, "max") == "max" else min
        kind = "pattern" if artifact == "pattern_raw" else artifact
        bounds = TABLE.get(kind, {}).get(field.get((kind, name), ""))
        # similarities near 1 need more digits than errors to show their gap to 1
        fmt = ".7g" if direction.get(name) == "min" else ".3g"
        cells, entry = [], {}
        for n in names:
            found = pick(columns[n][key], key=lambda t: t[0]) if columns[n][key] else None
            cells.append(f"{found[0]:{fmt}}" if found else "-")
            entry[n] = {"value": found[0], "where": found[1]} if found else None
        print(f"{artifact:<12} {name:<18} " + " ".join(f"{c:>22}" for c in cells), bounds or "")
        if args.verbose:
            for n in names:
                if entry[n]:
                    print(f"{'':<31}{n}: {entry[n]['where']}")
        report["metrics"][f"{artifact}:{name}"] = {"bounds": bounds, **entry}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
