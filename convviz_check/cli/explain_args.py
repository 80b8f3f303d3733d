"""The arguments of ``convviz-check explain`` and their checks (before any model is
loaded or file written).

Light to import: ``--help`` builds this parser, so nothing here imports Keras (the CAM
method names come from :mod:`convviz_check.explain.cam`, which imports none).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import images as img_lib

WHAT = ("activations", "gradcam", "filters")
DEFAULT_CAM = "gradcam"
_REMOVED = {
    "images": "give image files as positional arguments: explain MODEL IMAGE... --out DIR",
    "rescale": "use --input-range LO HI (e.g. --input-range 0 1 for a [0, 1] model)",
    "layer": "use --filters-layer (filter patterns) or --gradcam-layer (Grad-CAM)",
}
# What a token after --cam that names a file rather than a method looks like (argparse
# gives every word after --cam to it: `--cam gradcam photo.png`).
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def cam_methods() -> list[str]:
    """The CAM method names ``--cam`` accepts, in the library's order."""
    from ..explain.cam import METHODS

    return list(METHODS)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """How image files become model input, and what the classes are called: the
    arguments ``explain`` and ``agree`` share (read by :func:`input_settings`)."""
    parser.add_argument(
        "--input-range",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="the model's value range: [0, 255] pixels are mapped linearly to [LO, HI]; "
        "also the filter patterns' input range (default: inferred from the model, else 0 1)",
    )
    parser.add_argument(
        "--preprocess",
        metavar="MODULE:FUNCTION",
        help="an importable function taking and returning a float32 (N, H, W, C) batch "
        "(pixels in [0, 255] in, model input out), instead of the linear mapping",
    )
    parser.add_argument(
        "--class-names",
        type=Path,
        metavar="FILE",
        help="the model's class names: one per line, or a JSON list (default: the ImageNet "
        "names for a 1000-class model); shown next to class indices, and --class may name one",
    )


def input_settings(args: argparse.Namespace) -> tuple[tuple[float, float] | None, list[str] | None]:
    """``(stated --input-range or None, --class-names or None)``, checked before any model
    is loaded.

    Raises:
        InputError: a bad range, or an unreadable or malformed names file.
    """
    from ..class_names import read_class_names

    names = read_class_names(args.class_names) if args.class_names is not None else None
    return img_lib.parse_range(args.input_range), names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every argument of ``explain`` on ``parser``."""
    parser.add_argument(
        "model", metavar="MODEL", help="a .keras/.h5 file, preset dir, hub:NAME or pkg.mod:factory"
    )
    parser.add_argument(
        "image_files", nargs="*", metavar="IMAGE", help="PNG/JPEG files or .npy/.npz arrays"
    )
    parser.add_argument("--scenes", type=int, metavar="N", help="N bundled synthetic scenes")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    add_input_arguments(parser)
    parser.add_argument(
        "--what",
        default=",".join(WHAT),
        metavar="LIST",
        help=f"comma-separated techniques (default: {','.join(WHAT)})",
    )
    parser.add_argument(
        "--cam",
        nargs="+",
        metavar="METHOD",
        help=f"class-activation map methods, shown side by side: {', '.join(cam_methods())} "
        f"(default: {DEFAULT_CAM}; several: --cam gradcam scorecam)",
    )
    parser.add_argument(
        "--cam-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of a --cam method, given to the methods that take it, e.g. "
        "max_channels=64 (Score-CAM: masks only the 64 strongest channels, for big "
        "models) or center=false (Eigen-CAM); VALUE is read as JSON, else as text",
    )
    parser.add_argument(
        "--gradcam-layer",
        metavar="LAYER",
        help="target layer of the class-activation maps (default: the map that feeds the "
        "head's pooling)",
    )
    parser.add_argument(
        "--class",
        dest="class_",
        metavar="CLASS",
        help="the class explained for every image: an index, or an ImageNet class name for "
        "a 1000-class model (default: each image's top class)",
    )
    parser.add_argument(
        "--filters-layer",
        metavar="LAYER",
        help="filter patterns: layer (default: the deepest conv map wider than 8 cells)",
    )
    parser.add_argument(
        "--filters",
        type=int,
        default=8,
        metavar="N",
        help="filter patterns: the first N filters (8; at most the layer's)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help="filters: ascent steps (30; 128 with --filters-param fft)",
    )
    parser.add_argument(
        "--filters-param",
        choices=("pixel", "fft"),
        default="pixel",
        help="filters: 'pixel' (the chapter's ascent) or 'fft' (robust feature "
        "visualization: docs/feature-visualization.md)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --scenes and filters")
    for name in _REMOVED:  # removed flags: a message naming the replacement
        parser.add_argument(f"--{name}", nargs="*", dest=f"removed_{name}", help=argparse.SUPPRESS)


def parse_cam_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--cam-option NAME=VALUE`` pairs as a dict (VALUE read as JSON, else as text).

    Raises:
        InputError: a pair without ``=`` or without a name.
    """
    options: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(
                f"A CAM option is NAME=VALUE. Received: --cam-option {pair!r}. Expected "
                "e.g. --cam-option max_channels=64."
            )
        try:
            options[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[name.strip()] = text
    return options


def options_for(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` that ``method`` takes (the others are for other ``--cam`` methods)."""
    from ..explain.cam_methods import method_options

    taken = set(method_options(method))
    return {k: v for k, v in options.items() if k in taken}


def _check_cam_options(args: argparse.Namespace, methods: list[str]) -> dict[str, Any]:
    from ..explain.cam_methods import method_options

    options = parse_cam_options(getattr(args, "cam_option", None))
    taken = {m: method_options(m) for m in methods}
    unused = [k for k in options if not any(k in names for names in taken.values())]
    if unused:
        offered = "; ".join(f"{m}: {', '.join(n) or 'none'}" for m, n in taken.items())
        raise InputError(
            f"No --cam method takes option(s) {', '.join(unused)}. Received: --cam "
            f"{' '.join(methods)} with --cam-option {' '.join(args.cam_option)}. Expected "
            f"options of the chosen methods ({offered})."
        )
    return options


def _looks_like_a_file(token: str) -> bool:
    path = Path(token)
    return path.suffix.lower() in (*_IMAGE_SUFFIXES, *img_lib.ARRAY_SUFFIXES) or path.exists()


def _check_cam(args: argparse.Namespace) -> list[str]:
    """The ``--cam`` methods in order, without repeats (default: Grad-CAM). Words after
    ``--cam`` that name files are given back to the images."""
    if args.cam is None:
        return [DEFAULT_CAM]
    valid = cam_methods()
    methods: list[str] = []
    for word in args.cam:
        for token in (t.strip() for t in str(word).split(",")):
            if not token:
                continue
            if token in valid:
                methods.append(token)
            elif _looks_like_a_file(token):
                args.image_files.append(token)
            else:
                raise InputError(
                    f"Unknown CAM method. Received: --cam {token!r}. Expected one or more "
                    f"of: {', '.join(valid)}."
                )
    if not methods:
        raise InputError(
            f"--cam names no method. Received: --cam {' '.join(args.cam)}. Expected one or "
            f"more of: {', '.join(valid)} (image files go before --cam)."
        )
    if "gradcam" not in args.what:
        raise InputError(
            f"--cam draws class-activation maps, which --what leaves out. Received: --what "
            f"{','.join(args.what)} and --cam {' '.join(methods)}. Expected --what to include "
            "gradcam (the class-activation maps)."
        )
    return list(dict.fromkeys(methods))


def check_args(
    args: argparse.Namespace,
) -> tuple[tuple[float, float] | None, list[str] | None]:
    """Check the arguments, normalise ``args.what`` and ``args.cam`` to lists, and return
    the stated ``--input-range`` and ``--class-names`` (``None`` when not given).

    Raises:
        InputError: a removed flag, no images or two kinds, an unknown technique or CAM
            method, a bad count or range.
    """
    for name, hint in _REMOVED.items():
        if getattr(args, f"removed_{name}", None) is not None:
            raise InputError(f"--{name} was removed: {hint}.")
    what = [w.strip() for w in str(args.what).split(",") if w.strip()]
    unknown = [w for w in what if w not in WHAT]
    if unknown or not what:
        raise InputError(
            f"--what takes a comma-separated list of {', '.join(WHAT)}. Received: "
            f"--what {args.what!r}."
        )
    args.what = what
    args.cam = _check_cam(args)
    args.cam_options = _check_cam_options(args, args.cam)
    if args.image_files and args.scenes is not None:
        raise InputError("Give IMAGE files or --scenes N, not both.")
    if not args.image_files and args.scenes is None:
        raise InputError("No images: give IMAGE files (PNG, JPEG, .npy) or --scenes N.")
    stray = [f for f in args.image_files if f in WHAT and not Path(f).exists()]
    if stray:
        raise InputError(
            f"{stray[0]!r} is a technique, not an image: --what takes a comma-separated "
            f"list (--what {','.join(WHAT)})."
        )
    methods = set(cam_methods())
    stray = [f for f in args.image_files if f in methods and not Path(f).exists()]
    if stray:
        raise InputError(
            f"{stray[0]!r} is a CAM method, not an image: give methods after --cam "
            f"(--cam {' '.join(args.cam)} {stray[0]})."
        )
    if args.filters < 1:
        raise InputError(f"--filters must be >= 1. Received: --filters {args.filters}.")
    if args.steps is not None and args.steps < 0:
        raise InputError(f"--steps must be >= 0. Received: --steps {args.steps}.")
    return input_settings(args)


__all__ = [
    "DEFAULT_CAM",
    "WHAT",
    "add_arguments",
    "add_input_arguments",
    "cam_methods",
    "check_args",
    "input_settings",
]
