"""``convviz-check explain``: the three techniques on any model and any photos, with a
page that shows them together.

    convviz-check explain MODEL IMAGE... --out DIR [--input-range LO HI]
        [--preprocess module:function] [--gradcam-layer L] [--class C]
        [--cam METHOD...] [--filters-layer L] [--filters N]
        [--what activations,gradcam,filters]
    convviz-check explain MODEL --scenes N --out DIR ...

MODEL is any ``cc.load_model`` source. Each image (PNG, JPEG, ``.npy``) is resized to
the model's input size when it is fixed (bilinear) and converted to its channel count;
pixels in [0, 255] are then mapped to the model's value range: linearly to
``--input-range`` (default: inferred from the model's leading Rescaling/Normalization
layers, else [0, 1]), by ``--preprocess``, or by a keras-hub task's own preprocessor.
Float ``.npy`` arrays are taken to be in the model's range already.

``--cam`` picks the class-activation map methods (``cc.cam``; default Grad-CAM); each
image's maps are drawn side by side.

Writes ``inputs/`` (what the model saw), ``activations/`` (channel grids of the first
image, each channel numbered), ``gradcam/`` (one overlay per image and CAM method, at each photo's own size),
``filters/`` (a filter grid), ``summary.json`` and ``index.html``
(:mod:`convviz_check.report.explain`). They are written into a staging folder next to
``--out`` and moved into place only when the run completes (a failure half-way leaves
no partial output); an existing ``--out`` keeps its other files, and files of the same
path are replaced. Keras is imported when the command runs, not
when ``--help`` is built. The arguments and their checks live in
:mod:`convviz_check.cli.explain_args`.

The flags ``--images``, ``--rescale`` and ``--layer`` of earlier versions are gone (a
young tool: one way to say each thing); they stop with a message naming their
replacement instead of an argparse "unrecognized argument".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GraphError, InputError
from . import images as img_lib
from .explain_args import add_arguments, check_args, options_for
from .progress import Progress

TOP_K = 5


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "explain",
        usage="%(prog)s MODEL IMAGE... --out DIR [options]\n"
        "       %(prog)s MODEL --scenes N --out DIR [options]",
        help="activations, Grad-CAM and filter patterns of a model on your images, "
        "with an index.html",
        description="Compute activations, class-activation maps (Grad-CAM and the --cam "
        "methods) and filter patterns of MODEL on IMAGE files (or --scenes N) and write "
        "PNGs, summary.json and index.html into --out. "
        "Images are resized to a fixed model input size and converted to its channels; "
        "[0, 255] pixels are mapped to --input-range. This is a young tool and its "
        "interface changed: --images, --rescale and --layer were removed in favour of "
        "positional IMAGEs, --input-range and --filters-layer / --gradcam-layer.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run, collect_extra="image_files")
    return parser


# --------------------------------------------------------------------------- classes
def predict(model: Any, x: np.ndarray) -> np.ndarray:
    """The model's first output ``(N, classes)`` for channels-last ``x`` (of a list or
    dict of outputs, the first tensor)."""
    from .. import backends
    from ..explain.inputs import to_model_layout
    from ..explain.outputs import single_output_model

    model = single_output_model(model)
    forward = backends.make_forward(model)
    xs = to_model_layout(x, model)
    parts = [np.asarray(forward([xs[i : i + 32]])[0], np.float32) for i in range(0, len(xs), 32)]
    out = np.concatenate(parts)
    return out.reshape(len(xs), -1)


def class_names(num_classes: int, given: list[str] | None = None) -> list[str] | None:
    """The class names: ``given`` (``--class-names``, checked against the model's
    class count), else ImageNet's for a 1000-class model (from keras-hub), else ``None``.

    Raises:
        InputError: fewer names given than the model has classes.
    """
    if given is not None:
        from ..class_names import check_class_names

        return check_class_names(given, "--class-names", num_classes)
    if num_classes != 1000:
        return None
    try:
        from keras_hub.utils import imagenet_id_to_name
    except ImportError:
        return None
    return [str(imagenet_id_to_name(i)) for i in range(1000)]


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def resolve_class(text: str | None, num_classes: int, names: list[str] | None) -> int | None:
    """``--class`` as an index: an int in range, or a class name (``--class-names``, or
    ImageNet's for a 1000-class model)."""
    if text is None:
        return None
    try:
        index = int(text)
    except ValueError:
        if names is None:
            raise InputError(
                f"--class must be a class index in [0, {num_classes}) for this "
                f"{num_classes}-class model (class names are known for 1000-class ImageNet "
                f"models, or given with --class-names FILE). Received: --class {text!r}."
            ) from None
        table = {_norm(n): i for i, n in enumerate(names)}
        if _norm(text) in table:
            return table[_norm(text)]
        import difflib

        close = difflib.get_close_matches(_norm(text), list(table), n=3)
        hint = f" Close: {', '.join(close)}." if close else ""
        raise InputError(f"Unknown class name. Received: --class {text!r}.{hint}") from None
    if not 0 <= index < num_classes:
        raise InputError(
            f"--class out of range. Received: --class {index}. Expected an index in "
            f"[0, {num_classes}) (the model has {num_classes} classes)."
        )
    return index


# --------------------------------------------------------------------------- layers
def filters_plan(model: Any, layer: str | None, wanted: int) -> tuple[str, int, int]:
    """``(layer, channels, count)``: the filter layer (default:
    :func:`~convviz_check.graph.targets.default_filters_layer`, the deepest conv map
    wider than 8 cells), its channel count, and how many filters to draw."""
    from .. import graph as graph_lib
    from ..explain.filters import BORDER
    from ..graph.targets import default_filters_layer, map_layers, short_list, spatial_side

    maps = map_layers(model)
    if layer is None:
        layer = default_filters_layer(model)
    elif layer not in maps:
        known = graph_lib.flatten(model).by_name
        what = "Unknown layer" if layer not in known else "Not a spatial map before the head"
        raise GraphError(
            f"{what} for --filters-layer. Received: {layer!r}. Expected one of: {short_list(maps)}"
        )
    side = spatial_side(model, layer)
    if side is not None and side <= 2 * BORDER:  # refused here, before anything is written
        raise InputError(
            f"The map of --filters-layer {layer!r} is {side} cells on its smaller side, too "
            f"small for the {BORDER}-cell border the filter-pattern loss leaves out. "
            f"Received: --filters-layer {layer}. Expected a layer whose map is larger than "
            f"{2 * BORDER}x{2 * BORDER}, e.g. --filters-layer {default_filters_layer(model)}."
        )
    record = graph_lib.flatten(model).record(layer)
    shape = record.output_shape
    channels = int(shape[1] if record.data_format == "channels_first" else shape[3])
    return layer, channels, min(wanted, channels)


def gradcam_plan(model: Any, layer: str | None) -> str:
    """The class-activation maps' layer, checked (an unknown layer is an error naming
    the valid ones)."""
    from ..graph.targets import target_layer

    return target_layer(model, layer)


# --------------------------------------------------------------------------- run
@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - start, 3)


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _png_size(path: Path) -> list[int]:
    from PIL import Image

    with Image.open(path) as im:
        return [int(im.height), int(im.width)]


def _size_of(image: np.ndarray) -> list[int]:
    return [int(image.shape[0]), int(image.shape[1])]


def _overlay_base(source: img_lib.SourceImage) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The photo at its own size for the overlay, and its value range (pixels: [0, 255];
    float arrays: inferred by ``overlay``)."""
    data = source.data
    if data.shape[-1] == 4:
        data = data[..., :3]
    elif data.shape[-1] not in (1, 3):
        data = data.mean(axis=-1)
    return data, ((0.0, 255.0) if source.is_pixels else None)


def _input_png(prep: img_lib.Prepared, i: int) -> np.ndarray:
    """What the model saw, as uint8 (pixels as they are, float arrays rescaled)."""
    from ..render import as_rgb

    image = prep.fitted[i]
    if prep.sources[i].is_pixels:
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)
    rgb = as_rgb(image if image.shape[-1] in (1, 3) else image.mean(-1), "explain")
    return np.rint(rgb).astype(np.uint8)


def write_inputs(
    prep: img_lib.Prepared, out: Path, preds: np.ndarray, names: list[str] | None
) -> list[dict]:
    from ..storage import write_png

    entries = []
    from ..report.explain import top_classes

    tops = top_classes(preds, names, TOP_K)
    for i, source in enumerate(prep.sources):
        path = write_png(out / "inputs" / f"{i:02d}_{source.stem}.png", _input_png(prep, i))
        entries.append(
            {
                "index": i,
                "name": source.name,
                "size": list(source.size),
                "channels": int(source.data.shape[-1]),
                "model_size": _size_of(prep.fitted[i]),
                "model_channels": int(prep.fitted.shape[-1]),
                "input_png": _rel(path, out),
                "top": tops[i],
            }
        )
    return entries


def run_activations(model: Any, prep: img_lib.Prepared, out: Path) -> dict:
    import convviz_check as cc

    from ..explain.activations import layer_file_stem
    from ..report.channels import numbered_channel_grid
    from ..storage import write_png

    acts = cc.activations(model, prep.model_input[:1])
    # Named as cc.save_activation_grids names its files (depth index first, so a listing
    # keeps the layers' order), drawn with each channel's number above its tile.
    digits = max(2, len(str(max(len(acts) - 1, 0))))
    paths = [
        write_png(
            out / "activations" / f"{i:0{digits}d}_{layer_file_stem(name)}.png",
            numbered_channel_grid(np.asarray(act)[0]),
        )
        for i, (name, act) in enumerate(acts.items())
    ]
    layers = [
        {
            "name": name,
            "shape": [int(d) for d in act.shape[1:]],
            "png": _rel(p, out),
            "size": _png_size(p),
        }
        for (name, act), p in zip(acts.items(), paths, strict=True)
    ]
    return {"image": prep.sources[0].name, "layers": layers}


def _method_stem(method: str) -> str:
    """A file-name part for a CAM method (``gradcam++`` -> ``gradcampp``)."""
    return method.replace("+", "p")


def run_cams(
    model: Any,
    prep: img_lib.Prepared,
    out: Path,
    layer: str,
    class_index: int | None,
    names: list[str] | None,
    methods: list[str],
    update: Callable[[int, int], None],
    cam_options: dict[str, Any] | None = None,
) -> dict:
    """Every ``--cam`` method's maps of every image, drawn over the photos."""
    import convviz_check as cc

    from ..explain.cam import cam as compute_cam
    from ..storage import write_png

    cams, seconds = {}, {}
    for done, method in enumerate(methods):
        update(done, len(methods))
        start = time.perf_counter()
        cams[method] = compute_cam(
            model,
            prep.gradcam_images,
            method=method,
            class_index=class_index,
            layer=layer,
            preprocess=prep.use_preprocessor,
            **options_for(method, cam_options or {}),
        )
        seconds[method] = round(time.perf_counter() - start, 3)
    update(len(methods), len(methods))
    first = cams[methods[0]]
    images = []
    for i, source in enumerate(prep.sources):
        base, value_range = _overlay_base(source)
        maps = {}
        for method, cam in cams.items():
            picture = cc.overlay(base, cam.heatmap[i], value_range=value_range)
            stem = f"{i:02d}_{source.stem}_{_method_stem(method)}"
            path = write_png(out / "gradcam" / f"{stem}.png", picture)
            maps[method] = {"overlay": _rel(path, out), "degenerate": bool(cam.degenerate[i])}
        k = int(first.class_index[i])
        images.append(
            {
                "name": source.name,
                "class_index": k,
                "class_name": names[k] if names else None,
                # y_c, the class score every method explains (the same for each)
                "score": float(first.score[i]),
                "size": list(source.size),
                "maps": maps,
            }
        )
    return {
        "methods": list(methods),
        "options": {m: options_for(m, cam_options or {}) for m in methods},
        "layer": first.layer,
        "score_kind": first.score_kind,
        # what was explained, with "@<output>" on a model of several outputs
        "target": first.target,
        "class": "top predicted" if class_index is None else class_index,
        "note": getattr(first, "note", None) or None,
        "seconds": seconds,
        "images": images,
    }


def run_filters(
    model: Any,
    prep: img_lib.Prepared,
    out: Path,
    plan: tuple[str, int, int],
    args: argparse.Namespace,
    update: Callable[[int, int], None],
) -> dict:
    import convviz_check as cc

    from ..explain.activations import layer_file_stem
    from ..explain.filters import DEFAULT_STEPS
    from ..explain.fviz import FVIZ_STEPS
    from ..storage import write_png

    layer, channels, count = plan
    param = getattr(args, "filters_param", "pixel")
    steps = args.steps
    if steps is None:
        steps = FVIZ_STEPS if param == "fft" else DEFAULT_STEPS
    patterns = cc.filter_patterns(
        model,
        layer,
        filters=range(count),
        steps=steps,
        seed=args.seed,
        size=tuple(prep.fitted.shape[1:3]),
        input_range=prep.value_range,
        progress=update,
        parameterization=param,
    )
    grid = cc.filter_grid(np.stack([cc.deprocess_image(p) for p in patterns]))
    path = write_png(out / "filters" / f"{layer_file_stem(layer)}.png", grid)
    note = None
    if args.filters > channels:
        note = f"--filters {args.filters}: layer {layer!r} has {channels} filters; drew {count}"
    return {
        "layer": layer,
        "channels": channels,
        "requested": args.filters,
        "count": count,
        "steps": steps,
        "parameterization": param,
        "input_range": list(prep.value_range),
        "png": _rel(path, out),
        "size": _size_of(grid),
        "note": note,
    }


def _versions() -> dict[str, str]:
    import platform

    from .. import __version__, backends

    versions = {
        "convviz_check": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    versions.update(backends.framework_versions())
    return versions


def _model_info(model: Any, source: str, prep: img_lib.Prepared, num_classes: int) -> dict:
    return {
        "source": source,
        "name": str(getattr(model, "name", "?")),
        "class": type(model).__name__,
        "input_shape": [int(d) for d in prep.fitted.shape[1:]],
        "classes": num_classes,
        "preprocessor": type(img_lib.model_preprocessor(model)).__name__
        if img_lib.model_preprocessor(model)
        else None,
    }


def run(args: argparse.Namespace) -> int:
    stated, given_names = check_args(args)
    progress = Progress(sys.stdout.isatty())
    had = args.out.is_dir() and any(args.out.iterdir())
    try:
        with staged_output(args.out) as staging:
            summary = _explain(args, stated, progress, given_names, staging)
    finally:
        progress.close()
    _print_summary(summary, args.out)
    if had:
        print(f"{args.out} was not empty: its other files were kept, same-path files replaced")
    return 0


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A new folder next to ``out`` (``.<name>.partial-*``) to write into, moved into
    place when the block ends without an error, removed when it raises (a run that
    fails half-way leaves nothing behind).

    A missing ``out`` is the staging folder renamed. An existing ``out`` is never
    removed: the new files are moved into it one by one, each replacing a file of the
    same path, and the files it had besides are left as they were (``summary.json``
    lists this run's files).

    Args:
        out: the output folder (``--out``).

    Yields:
        The staging folder.
    """
    import shutil
    import tempfile

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out must be a folder. Received: --out {out} (an existing file).")
    made = [p for p in reversed(out.parents) if not p.exists()]  # removed on a failure
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    done = False
    try:
        yield staging
        if not out.exists():
            staging.rename(out)
        else:
            for path in sorted(p for p in staging.rglob("*") if p.is_file()):
                target = out / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in [] if done else reversed(made):
            with suppress(OSError):  # only an empty folder this run made goes
                folder.rmdir()


def _explain(
    args: argparse.Namespace,
    stated: tuple[float, float] | None,
    progress: Progress,
    given_names: list[str] | None = None,
    out: Path | None = None,
) -> dict:
    """Compute and write everything into ``out`` (default ``--out``; :func:`run` passes
    a staging folder, see :func:`staged_output`)."""
    import convviz_check as cc

    from ..report.explain import score_kind, write_page, write_summary

    timings: dict[str, float] = {}
    out = args.out if out is None else out
    with _timed(timings, "load_model"), progress.step("loading model"):
        model = cc.load_model(args.model)
    with _timed(timings, "read_images"), progress.step("reading images"):
        prep = img_lib.read_for_model(
            model, args.image_files, args.scenes, args.seed, stated, args.preprocess
        )
    with _timed(timings, "predict"), progress.step("predicting"):
        preds = predict(model, prep.model_input)
    names = class_names(preds.shape[-1], given_names)
    # Everything is checked before anything is written.
    class_index = resolve_class(args.class_, preds.shape[-1], names)
    cam_layer = gradcam_plan(model, args.gradcam_layer) if "gradcam" in args.what else None
    plan = filters_plan(model, args.filters_layer, args.filters) if "filters" in args.what else None
    summary: dict[str, Any] = {
        "model": _model_info(model, str(args.model), prep, int(preds.shape[-1])),
        "input": {
            "range": list(prep.value_range),
            "range_source": prep.range_source,
            "preprocessing": prep.steps,
        },
        "score_kind": score_kind(preds),
        "images": write_inputs(prep, out, preds, names),
        "activations": None,
        "gradcam": None,
        "filters": None,
        "notes": [],
    }
    if "activations" in args.what:
        with _timed(timings, "activations"), progress.step("activations"):
            summary["activations"] = run_activations(model, prep, out)
    if cam_layer is not None:
        label = "class-activation maps" if len(args.cam) > 1 else "Grad-CAM"
        with _timed(timings, "gradcam"), progress.step(label, len(args.cam)) as update:
            summary["gradcam"] = run_cams(
                model,
                prep,
                out,
                cam_layer,
                class_index,
                names,
                args.cam,
                update,
                args.cam_options,
            )
    if plan is not None:
        with _timed(timings, "filters"), progress.step("filter patterns", plan[2]) as update:
            summary["filters"] = run_filters(model, prep, out, plan, args, update)
        if summary["filters"]["note"]:
            summary["notes"].append(summary["filters"]["note"])
    if summary["gradcam"] and summary["gradcam"]["note"]:
        summary["notes"].append(summary["gradcam"]["note"])
    summary["timings"] = timings
    summary["versions"] = _versions()
    summary["files"] = _files(summary)
    write_summary(out, summary)
    write_page(out, summary)
    return summary


def _files(summary: dict) -> list[str]:
    """Every image this run wrote, relative to the output directory."""
    files = [e["input_png"] for e in summary["images"]]
    if summary["activations"]:
        files += [layer["png"] for layer in summary["activations"]["layers"]]
    if summary["gradcam"]:
        files += [m["overlay"] for e in summary["gradcam"]["images"] for m in e["maps"].values()]
    if summary["filters"]:
        files.append(summary["filters"]["png"])
    return files


def _print_summary(summary: dict, out: Path) -> None:
    from ..report.explain import summary_lines

    for line in summary_lines(summary):
        print(line)
    print(f"wrote {out / 'index.html'} and {out / 'summary.json'}")
