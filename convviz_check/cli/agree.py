"""``convviz-check agree``: cross-backend agreement from the command line.

Two routes, one report (:class:`convviz_check.crossbackend.agreement.AgreementReport`):

- ``convviz-check agree MODEL IMAGE...`` (or ``--scenes N``: the bundled synthetic
  scenes, e.g. for the bundled models) runs one worker per backend here; image files are
  read exactly as ``explain`` reads them (fitted to the model's size and channels, mapped
  to its value range: ``--input-range``, ``--preprocess``; :mod:`.explain_args`);
- ``convviz-check agree --exported DIR`` compares what each backend environment wrote
  with ``pytest --convviz-export DIR`` (teams whose backends cannot share one env).

``--out DIR`` also writes the pictures of the report(s) and an ``index.html``
(:func:`convviz_check.report.agreement.write_pictures`).

Exit status: 0 when every check agrees, 1 on a disagreement, 2 on an error. Light to
import (no Keras, no framework): the workers import them, and the parent loads the model
only to read image files for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..crossbackend.requests import FiltersParams
from ..errors import InputError
from ..types import BACKENDS, TECHNIQUES
from .explain_args import add_input_arguments, cam_methods, input_settings, parse_cam_options
from .images import load_images


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``agree`` on the ``convviz-check`` subcommand tree."""
    p = subparsers.add_parser(
        "agree",
        help="check that TensorFlow, PyTorch and JAX agree on a model",
        description="Compare activations, Grad-CAM and filter patterns of one model across "
        "backends: run the workers here (MODEL IMAGE... or MODEL --scenes N), or compare "
        "what each backend env exported (--exported DIR). Exit 1 on disagreement.",
    )
    p.add_argument(
        "model",
        nargs="?",
        help="model source: .keras/.h5 path, keras-hub preset dir, hub:<preset>, pkg.module:factory",
    )
    # IMAGE files follow MODEL, as in `explain`; `--images FILE...` says the same.
    p.add_argument(
        "image_files",
        nargs="*",
        metavar="IMAGE",
        help="PNG/JPEG files or .npy/.npz arrays, read as explain reads them: fitted to the "
        "model's size and channels, pixels mapped to its value range (float arrays as given)",
    )
    p.add_argument("--exported", metavar="DIR", help="compare the artifacts exported to DIR")
    p.add_argument(
        "--images",
        nargs="+",
        metavar="FILE",
        help="deprecated: the same as IMAGE files after MODEL",
    )
    add_input_arguments(p)
    p.add_argument(
        "--scenes",
        type=int,
        metavar="N",
        help="use N bundled synthetic scenes (64x64x3 floats in [0, 1], the bundled models' "
        "input) as the images",
    )
    p.add_argument(
        "--scene-seed",
        type=int,
        default=0,
        metavar="SEED",
        help="seed of the --scenes (default 0; the bundled models were trained on seed 1)",
    )
    p.add_argument(
        "--rescale",
        type=float,
        default=None,
        help="deprecated (use --input-range LO HI): multiply the loaded files by this, "
        "passed as given (no fitting to the model)",
    )
    _add_technique_arguments(p)
    p.add_argument("--backends", default=None, help="comma-separated (default: all three)")
    p.add_argument(
        "--what",
        default="activations,gradcam,filters",
        help="comma-separated artifacts (default: activations,gradcam,filters)",
    )
    p.add_argument(
        "--tolerance",
        metavar="FIELDS",
        help="Tolerance fields: field=value pairs (heatmap_rms=1e-3,heatmap_max_abs=1e-2) "
        'or a JSON object ({"heatmap_rms": 0.001})',
    )
    p.add_argument("--custom-objects", default=None, help="comma-separated importable modules")
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="load with safe_mode=False (only for files you trust: runs their code)",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds per worker request")
    p.add_argument("--json", metavar="FILE", help="also write the report(s) as JSON")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="also write pictures into DIR: per technique the backends side by side "
        "(Grad-CAM over the images, the worst layer's activations, the filter patterns) "
        "and the worst pair's difference, with index.html (one folder per check for "
        "--exported)",
    )
    p.set_defaults(func=run)
    return p


def _add_technique_arguments(p: argparse.ArgumentParser) -> None:
    """What each technique computes (defaults: the technique parameters' own)."""
    p.add_argument("--layers", default=None, help="comma-separated activation layers")
    p.add_argument(
        "--class-index",
        "--class",
        dest="class_index",
        default=None,
        help="Grad-CAM class for every image: an index, or a name of --class-names "
        "(ImageNet's for a 1000-class model without it; --class as in explain)",
    )
    p.add_argument("--gradcam-layer", default=None, help="Grad-CAM target layer")
    p.add_argument(
        "--cam",
        default="gradcam",
        metavar="METHOD",
        help="the class-activation map method every backend computes for the 'gradcam' "
        f"technique: {', '.join(_agree_methods())} (default: gradcam)",
    )
    p.add_argument(
        "--cam-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of the --cam method, e.g. max_channels=64 (Score-CAM) or "
        "center=false (Eigen-CAM); VALUE is read as JSON, else kept as text; repeatable",
    )
    p.add_argument(
        "--token-grid",
        default=None,
        metavar="H,W,PREFIX",
        help="a vision transformer's token grid for the --cam method: height, width and "
        "prefix tokens, e.g. 14,14,1 (default: inferred from the patch embedding)",
    )
    p.add_argument(
        "--filters-layer",
        default=None,
        help="layer of the filter patterns (default: the deepest conv map wider than 8 cells)",
    )
    p.add_argument(
        "--filters",
        type=int,
        default=FiltersParams.filters,
        help=f"number of filters (the first N; default {FiltersParams.filters})",
    )
    p.add_argument(
        "--filter-steps",
        "--steps",
        dest="filter_steps",
        type=int,
        default=FiltersParams.steps,
        help=f"gradient-ascent steps (--steps as in explain; default {FiltersParams.steps})",
    )


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _agree_methods() -> list[str]:
    """What ``--cam`` accepts: the CAM methods and attention rollout (``cc.cam``'s
    ``method="rollout"``, for a vision transformer)."""
    return [*cam_methods(), "rollout"]


def _check_cam(method: str) -> str:
    if method not in _agree_methods():
        raise InputError(
            f"Unknown CAM method. Received: --cam {method!r}. Expected one of "
            f"{', '.join(_agree_methods())}."
        )
    return method


def _token_grid(text: str | None) -> tuple[int, ...] | None:
    """``--token-grid H,W,PREFIX`` as integers (their ranges are checked by
    :func:`convviz_check.agreement`)."""
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(
            f"--token-grid takes three comma-separated integers. Received: --token-grid "
            f"{text!r}. Expected e.g. 14,14,1 (height, width, prefix tokens)."
        ) from None


def _class_index(args: argparse.Namespace, names: list[str] | None) -> int | None:
    """``--class`` as an index, by explain's rule (:func:`.explain.resolve_class`): an
    int, or a name of ``--class-names`` or, for a 1000-class model, of ImageNet. The
    model is loaded here (for its class count) only when a name needs it."""
    from .explain import class_names, resolve_class

    text = args.class_index
    if text is None:
        return None
    try:
        return int(text)  # the workers check the range: the parent need not load the model
    except ValueError:
        pass
    if names is not None:
        return resolve_class(text, len(names), names)
    model = getattr(args, "loaded_model", None)
    if model is None:
        from ..models import load_model

        model = load_model(
            args.model, safe_mode=not args.unsafe, custom_objects=_split(args.custom_objects)
        )
    count = int(model.outputs[0].shape[-1])
    return resolve_class(text, count, class_names(count))


def _filters_count(args: argparse.Namespace, what: tuple[str, ...]) -> int:
    """``--filters`` capped at the filter layer's channels, by explain's rule (a
    7-channel layer draws 7 of the default 8, with a note, instead of every backend
    failing on filter 7). The model is loaded here for that (the backend of this
    process runs in it anyway); a model or layer that cannot be read here is left to
    the workers, whose errors name the backend."""
    if "filters" not in what:
        return int(args.filters)
    from .explain import filters_plan

    try:
        model = getattr(args, "loaded_model", None)
        if model is None:
            from ..models import load_model

            model = load_model(
                args.model, safe_mode=not args.unsafe, custom_objects=_split(args.custom_objects)
            )
            args.loaded_model = model
        layer, channels, count = filters_plan(model, args.filters_layer, int(args.filters))
    except Exception:  # noqa: BLE001 - the workers report it, naming the backend
        return int(args.filters)
    if count < args.filters:
        print(
            f"filters: --filters {args.filters}: layer {layer!r} has {channels}; comparing {count}"
        )
    return count


def _read_like_explain(
    args: argparse.Namespace, stated: tuple[float, float] | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Image files as ``explain`` reads them (the one reader, :mod:`.images`): the model
    is loaded here for its size, channels and value range. Returns the model input and
    the filter patterns' input range."""
    from ..models import load_model
    from .images import read_for_model

    model = load_model(
        args.model, safe_mode=not args.unsafe, custom_objects=_split(args.custom_objects)
    )
    args.loaded_model = model  # --class NAME reads its class count
    prep = read_for_model(model, args.images, stated=stated, preprocess=args.preprocess)
    for step in prep.steps:
        print(f"images: {step}")
    return prep.model_input, {"input_range": tuple(prep.value_range)}


def _images_from_args(
    args: argparse.Namespace, stated: tuple[float, float] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The input batch of the worker route: IMAGE files (or ``--images``), or
    ``--scenes N``; and what else the workers need to know of it."""
    if args.image_files:
        args.images = [*args.image_files, *(args.images or [])]
    if not args.model or (args.images is None) == (args.scenes is None):
        raise InputError(
            "agree needs MODEL and exactly one of IMAGE files (or --images FILE...) or "
            "--scenes N (or "
            f"--exported DIR). Received: model={args.model!r}, images={args.images!r}, "
            f"scenes={args.scenes!r}."
        )
    if args.scenes is None and args.rescale is None:
        return _read_like_explain(args, stated)
    if stated is not None or args.preprocess:
        used = "--rescale" if args.scenes is None else "--scenes (floats in [0, 1])"
        raise InputError(
            f"--input-range and --preprocess map image files to the model; {used} cannot be "
            f"combined with them. Received: input_range={stated!r}, "
            f"preprocess={args.preprocess!r}."
        )
    if args.scenes is None:
        print(
            "convviz-check: warning: --rescale is deprecated: give the model's range with "
            "--input-range LO HI (files are then read as explain reads them)",
            file=sys.stderr,
        )
        return load_images(args.images, args.rescale), {}
    if args.rescale is not None:
        raise InputError(
            "--rescale applies to --images only: --scenes are already floats in [0, 1]. "
            f"Received: rescale={args.rescale!r} with scenes={args.scenes!r}."
        )
    # NumPy only: the scenes generator imports no Keras, so the parent stays light.
    from ..examples import make_scenes

    return make_scenes(args.scenes, seed=args.scene_seed).floats, {}


def _write_pictures(
    reports: dict[str, Any], out: str, class_names: list[str] | None = None
) -> None:
    """Each report's pictures and page (a folder per check when there are several,
    with an index over them); prints where, and each diff's scale."""
    from ..report import agreement as pages

    written = {}
    for name, report in reports.items():
        folder = Path(out) if len(reports) == 1 else Path(out) / storage.sanitize_part(name)
        page, drawn = pages.write_pictures(
            report, folder, "../index.html" if len(reports) > 1 else "", class_names
        )
        written[name] = (report, page)
        print(f"pictures{' of ' + name if len(reports) > 1 else ''}: {page}")
        for made in drawn:
            if made.diff_caption:
                print(f"  {made.technique} diff {made.diff_caption}")
            elif made.error:
                print(f"  {made.technique}: no picture ({made.error})")
    if len(reports) > 1:
        print(f"pictures: {pages.write_index(written, out)}")


def parse_tolerance(text: str | None) -> Any:
    """``--tolerance`` as a Tolerance: ``field=value`` pairs (as the ini keys take them)
    or a JSON object; None when not given.

    Raises:
        ConvvizError: malformed JSON, a pair without ``=``, a value that is not a number,
            an unknown field or a bound no comparison could pass, naming the flag.
    """
    from .. import tolerances

    if not text:
        return None
    if not text.lstrip().startswith("{"):
        return tolerances.parse_fields(text, "--tolerance")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"--tolerance is not valid JSON ({e.msg} at character {e.pos}). Received: "
            f"{text!r}. Expected field=value pairs (heatmap_rms=1e-3,heatmap_max_abs=1e-2) "
            'or a JSON object ({"heatmap_rms": 0.001}).'
        ) from None
    return tolerances.as_tolerance(value, "--tolerance")


def run(args: argparse.Namespace) -> int:
    from ..crossbackend import agreement as ag
    from ..crossbackend.export import compare_exported

    tolerance = parse_tolerance(args.tolerance)
    names: list[str] | None = None  # the classes' names, for the pictures' page
    if args.exported:
        if args.model or args.images or args.image_files or args.scenes is not None:
            raise InputError(
                "--exported compares exported artifacts; it takes no MODEL, --images or "
                f"--scenes. Received: model={args.model!r}, images={args.images!r}, "
                f"scenes={args.scenes!r}."
            )
        reports = compare_exported(args.exported, backends=args.backends, tolerance=tolerance)
    else:
        stated, names = input_settings(args)
        images, image_params = _images_from_args(args, stated)
        class_index = _class_index(args, names)
        what = tuple(_split(args.what) or TECHNIQUES)
        report = ag.agreement(
            args.model,
            images,
            what=what,
            backends=args.backends or BACKENDS,
            tolerance=tolerance,
            layers=_split(args.layers),
            class_index=class_index,
            gradcam_layer=args.gradcam_layer,
            cam_method=_check_cam(args.cam),
            cam_options=parse_cam_options(args.cam_option),
            token_grid=_token_grid(args.token_grid),
            filters_layer=args.filters_layer,
            filters=_filters_count(args, what),
            filter_steps=args.filter_steps,
            safe_mode=not args.unsafe,
            custom_objects=_split(args.custom_objects),
            timeout=args.timeout,
            **image_params,
        )
        reports = {str(args.model): report}
    for name, report in reports.items():
        if len(reports) > 1:
            print(f"== {name}")
        print(report)
    if args.json:
        storage.write_json(args.json, {name: r.to_dict() for name, r in reports.items()})
    if args.out:
        _write_pictures(reports, args.out, names)
    failed = [name for name, r in reports.items() if not r.passed]
    if failed:
        print(
            f"{len(failed)} of {len(reports)} check(s) disagree: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    print(f"{len(reports)} check(s) agree across backends")
    return 0
