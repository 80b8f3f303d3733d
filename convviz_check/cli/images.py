"""Image arguments of the command line: reading files, fitting them to a model, mapping
their values.

Light to import (NumPy, Pillow and the standard library; no Keras): ``agree`` runs it
in the parent process of its backend workers.

- :func:`read_sources` reads PNG/JPEG files (any format Pillow opens) at their own size
  and channel count (a grayscale file stays one channel, EXIF orientation is applied)
  and ``.npy``/``.npz`` arrays (never unpickled);
- :func:`fit` resizes one image to a model's input size (bilinear, Pillow) and converts
  its channels (RGB -> gray by ITU-R 601-2 luma, gray -> RGB by repetition);
- :func:`map_pixels` maps [0, 255] pixels linearly to the model's value range;
- :func:`load_preprocess` imports a ``module:function`` preprocessing hook;
- :func:`load_images` stacks files as given (the ``agree`` route);
- :func:`prepare` does all of it for a model (``explain``; Keras is imported inside).
"""

from __future__ import annotations

import importlib
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConvvizWarning, InputError
from ..render import resize_bilinear

# ITU-R 601-2 luma weights (what Pillow's convert("L") uses).
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
ARRAY_SUFFIXES = (".npy", ".npz")
_STEM = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class SourceImage:
    """One input image as read, before it is fitted to a model.

    Attributes:
        name: what the user named (a file name, ``file.npy[2]``, ``scene 0``).
        stem: a file-name-safe stem for the files written about it.
        data: ``(H, W, C)`` at the source's own size and channel count.
        is_pixels: ``True`` when ``data`` holds pixels in [0, 255] (image files,
            integer arrays, the bundled scenes); ``False`` for a float array, which is
            taken to be already in the model's value range.
    """

    name: str
    stem: str
    data: np.ndarray
    is_pixels: bool

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the source."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))


def _stem(text: str) -> str:
    return _STEM.sub("_", text).strip("_")[:60] or "image"


def _check_file(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise InputError(f"Image file not found. Received: {text!r}.")
    if not path.is_file():
        raise InputError(f"Not an image file (a directory?). Received: {text!r}.")
    return path


def read_image_file(path: str | Path) -> np.ndarray:
    """``(H, W, 1)`` or ``(H, W, 3)`` pixels of an image file: uint8, or float32 in
    [0, 255] for 16-bit and float files. Alpha is dropped; palette images become RGB
    (or gray when the palette is); EXIF orientation is applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            im = ImageOps.exif_transpose(opened)
            im.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(
            f"Cannot read image file {str(path)!r}: {reason}. Expected a PNG or JPEG "
            "image (or a .npy array)."
        ) from None
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, np.float64)
        top = 65535.0 if arr.max() > 255 or im.mode.startswith("I;16") else 255.0
        return (np.clip(arr, 0, top) * (255.0 / top)).astype(np.float32)[..., None]
    if im.mode == "F":
        return np.clip(np.asarray(im, np.float32), 0, 255)[..., None]
    if im.mode in ("1", "L", "LA") or (im.mode in ("P", "PA") and _gray_palette(im)):
        return np.asarray(im.convert("L"))[..., None]
    return np.asarray(im.convert("RGB"))


def _gray_palette(im: object) -> bool:
    rgb = np.asarray(im.convert("RGB"))  # type: ignore[attr-defined]
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def read_array_file(path: str | Path) -> np.ndarray:
    """``(N, H, W, C)`` from a ``.npy`` file or a ``.npz`` archive (its ``images`` array,
    or its only array); ``(H, W)`` and ``(H, W, C)`` arrays are one image."""
    text = str(path)
    try:
        if Path(path).suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                keys = list(data.keys())
                key = "images" if "images" in keys else keys[0] if len(keys) == 1 else None
                if key is None:
                    raise InputError(
                        f"Ambiguous .npz: expected an 'images' array or exactly one array. "
                        f"Received: {text!r} with arrays {keys}."
                    )
                arr = np.array(data[key])
        else:
            arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"Cannot read array file {text!r}: {e}.") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or 0 in arr.shape:
        raise InputError(
            f"An array file must hold (H, W), (H, W, C) or (N, H, W, C) images. "
            f"Received: {text!r} with shape {arr.shape}."
        )
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InputError(f"Images must be numeric. Received: {text!r} with dtype {arr.dtype}.")
    return arr


def read_sources(paths: Sequence[str]) -> list[SourceImage]:
    """Every image the user named, in order (an array file may hold several)."""
    sources: list[SourceImage] = []
    for text in paths:
        path = _check_file(text)
        if path.suffix.lower() in ARRAY_SUFFIXES:
            arr = read_array_file(path)
            floats = bool(np.issubdtype(arr.dtype, np.floating))
            for i, image in enumerate(arr):
                name = path.name if len(arr) == 1 else f"{path.name}[{i}]"
                stem = _stem(path.stem if len(arr) == 1 else f"{path.stem}_{i}")
                sources.append(SourceImage(name, stem, image, is_pixels=not floats))
        else:
            data = read_image_file(path)
            sources.append(SourceImage(path.name, _stem(path.stem), data, is_pixels=True))
    return sources


def scene_sources(n: int, seed: int = 0) -> list[SourceImage]:
    """``n`` bundled synthetic scenes (64x64 RGB pixels), as sources."""
    from ..examples import make_scenes

    if isinstance(n, bool) or n < 1:
        raise InputError(f"--scenes must be >= 1. Received: --scenes {n}.")
    scenes = make_scenes(n, seed=seed)
    return [
        SourceImage(f"scene {i} ({name})", f"scene{i}", img, is_pixels=True)
        for i, (img, name) in enumerate(zip(scenes.images, scenes.class_names, strict=True))
    ]


def convert_channels(image: np.ndarray, channels: int | None, name: str = "image") -> np.ndarray:
    """``image`` ``(H, W, C)`` with ``channels`` channels: gray -> RGB by repetition,
    RGB(A) -> gray by luma, RGBA -> RGB by dropping alpha; ``None`` keeps it."""
    c = image.shape[-1]
    if channels is None or c == channels:
        return image
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    if c in (3, 4) and channels == 1:
        return (image[..., :3].astype(np.float32) @ LUMA)[..., None]
    if c == 4 and channels == 3:
        return image[..., :3]
    raise InputError(
        f"Cannot convert image {name!r} from {c} to {channels} channels. Expected an "
        "image with 1, 3 or 4 channels for a model that takes 1 or 3."
    )


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` ``(H, W, C)`` resized to ``size`` ``(h, w)``, bilinear, as float32."""
    if image.shape[:2] == tuple(size):
        return image.astype(np.float32)
    return np.stack([resize_bilinear(image[..., k], size) for k in range(image.shape[-1])], axis=-1)


def fit(source: SourceImage, size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    """The source as a float32 ``(h, w, channels)`` image for the model (values as in
    the source: pixels stay pixels)."""
    image = convert_channels(source.data, channels, source.name)
    return resize(image, size) if size is not None else image.astype(np.float32)


def parse_range(
    values: Sequence[float] | None, flag: str = "--input-range"
) -> tuple[float, float] | None:
    """``(lo, hi)`` from a ``LO HI`` argument; an error unless finite with ``LO < HI``."""
    if values is None:
        return None
    lo, hi = (float(v) for v in values)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(
            f"{flag} needs finite LO < HI. Received: {flag} {values[0]:g} {values[1]:g}."
        )
    return (lo, hi)


def map_pixels(batch: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """[0, 255] pixels mapped linearly to ``value_range`` (float32)."""
    lo, hi = value_range
    return (np.float32(lo) + batch.astype(np.float32) * np.float32((hi - lo) / 255.0)).astype(
        np.float32
    )


def load_preprocess(spec: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function ``module:function`` names, checked to be callable."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(
            f"--preprocess must be module:function (an importable function). Received: {spec!r}."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"--preprocess: cannot import {module_name!r} ({e}).") from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise InputError(f"--preprocess: {module_name!r} has no {attr!r}. Received: {spec!r}.")
    if not callable(fn):
        raise InputError(f"--preprocess: {spec!r} is not callable.")
    return fn


def apply_preprocess(
    fn: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, spec: str
) -> np.ndarray:
    """``fn(batch)`` checked: a finite float32 ``(N, H, W, C)`` batch of the same N."""
    try:
        out = np.asarray(fn(batch.astype(np.float32, copy=True)), np.float32)
    except Exception as e:  # the user's code: report it in one line
        raise InputError(f"--preprocess {spec}: the function raised {type(e).__name__}: {e}") from e
    if out.ndim != 4 or out.shape[0] != batch.shape[0] or not np.isfinite(out).all():
        raise InputError(
            f"--preprocess {spec} must return a finite (N, H, W, C) batch of N={batch.shape[0]} "
            f"images. Received: shape {out.shape}."
        )
    return out


def load_images(paths: list[str], rescale: float | None = None) -> np.ndarray:
    """Stack images from files as given (``agree``'s route: no resizing).

    Image files keep their channel count (a grayscale PNG is one channel) unless the
    files disagree, then grayscale ones are repeated to RGB; arrays keep their dtype.
    ``rescale`` multiplies the stacked batch (as float32).
    """
    sources = read_sources(paths)
    counts = {s.data.shape[-1] for s in sources}
    want = 3 if len(counts) > 1 and counts <= {1, 3} else None
    batches = [convert_channels(s.data, want, s.name) for s in sources]
    shapes = {b.shape for b in batches}
    if len(shapes) != 1:
        raise InputError(
            f"All images must share one shape. Received: shapes {sorted(shapes)} from {paths}."
        )
    images = np.stack(batches)
    if rescale is not None:
        images = images.astype(np.float32) * np.float32(rescale)
    return images


# --------------------------------------------------------------------------- models
# The functions below take a Keras model; Keras is imported inside them, so importing
# this module stays light.


@dataclass
class Prepared:
    """The images on their way to the model."""

    sources: list[SourceImage]
    fitted: np.ndarray  # (N, h, w, c): pixels (or float arrays) at the model's size
    model_input: np.ndarray  # (N, h, w, c) in the model's value range
    gradcam_images: np.ndarray  # what cc.gradcam is given
    use_preprocessor: bool  # cc.gradcam(..., preprocess=True)
    value_range: tuple[float, float]  # the filter patterns' input_range
    range_source: str
    steps: list[str] = field(default_factory=list)


def model_preprocessor(model: Any) -> Any:
    """A keras-hub task's preprocessor, or ``None``."""
    return getattr(model, "preprocessor", None)


def _model_size(
    model: Any, spec: Any, sources: list[SourceImage]
) -> tuple[tuple[int, int], str | None]:
    """The size images are fitted to, and a note when it is not the model's own."""
    if spec.height is not None and spec.width is not None:
        return (spec.height, spec.width), None
    converter = getattr(model_preprocessor(model), "image_converter", None)
    size = getattr(converter, "image_size", None)
    if size is not None:
        return (int(size[0]), int(size[1])), None
    first = sources[0].size
    if len({s.size for s in sources}) == 1:
        return first, None
    return (
        first,
        f"the model takes any size: images resized to the first one's, {first[1]}x{first[0]} px",
    )


def _to_numpy(value: Any) -> np.ndarray:
    from ..backends import to_numpy

    if isinstance(value, tuple):  # (x, y, sample_weight) when a label was packed
        value = value[0]
    return np.asarray(to_numpy(value), np.float32)


def _range_of(
    fn: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...]
) -> tuple[float, float]:
    """What ``fn`` makes of a black and a white image: the filters' input range."""
    out = [fn(np.full((1, *shape), v, np.float32)) for v in (0.0, 255.0)]
    lo = float(min(o.min() for o in out))
    hi = float(max(o.max() for o in out))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _through_function(
    model: Any, fitted: np.ndarray, stated: tuple[float, float] | None, preprocess: str | None
) -> tuple[np.ndarray, tuple[float, float], str, str]:
    """``(model input, value range, range source, label)`` through ``--preprocess`` or
    the model's own preprocessor."""
    if preprocess:
        user = load_preprocess(preprocess)

        def fn(b: np.ndarray) -> np.ndarray:
            return apply_preprocess(user, b, preprocess)

        label = f"--preprocess {preprocess}"
    else:
        pre = model_preprocessor(model)

        def fn(b: np.ndarray) -> np.ndarray:
            return _to_numpy(pre(b))

        label = f"the model's own preprocessor ({type(pre).__name__})"
    value_range = stated or _range_of(fn, fitted.shape[1:])
    source = "--input-range" if stated else f"{label} applied to a black and a white image"
    return fn(fitted), value_range, source, label


def prepare(
    model: Any,
    sources: list[SourceImage],
    stated: tuple[float, float] | None = None,
    preprocess: str | None = None,
) -> Prepared:
    """Fit ``sources`` to ``model`` and map them to its value range.

    ``preprocess`` (``module:function``) maps the pixels; else, without a ``stated``
    range, a keras-hub task's own preprocessor does (Grad-CAM gets the pixels and
    ``preprocess=True``); else pixels are mapped linearly to ``stated``, or to the
    range inferred from the model's leading preprocessing layers, or to [0, 1].
    """
    from ..explain.inputs import infer_input_range, input_spec

    spec = input_spec(model)
    size, note = _model_size(model, spec, sources)
    fitted = np.stack([fit(s, size, spec.channels) for s in sources])
    steps = [
        f"fitted to {size[1]}x{size[0]} px (width x height), {fitted.shape[-1]} channel(s) "
        "(bilinear resize; RGB -> gray "
        "by luma, gray -> RGB by repetition)"
    ]
    if note:
        steps.append(note)
    pixels = np.array([s.is_pixels for s in sources])
    if preprocess or (stated is None and model_preprocessor(model) is not None):
        if not pixels.all():
            raise InputError(
                "Float .npy arrays are taken as model input and cannot go through a "
                "preprocessing function: give pixel images (PNG, JPEG, integer arrays)."
            )
        model_input, value_range, source, label = _through_function(
            model, fitted, stated, preprocess
        )
        steps.append(f"values: {label}")
        cam_images, use_pre = (model_input, False) if preprocess else (fitted, True)
        return Prepared(
            sources, fitted, model_input, cam_images, use_pre, value_range, source, steps
        )
    if stated is not None:
        value_range, source = stated, "--input-range"
    else:
        inferred = infer_input_range(model)
        value_range = inferred or (0.0, 1.0)
        source = (
            "inferred from the model's Rescaling/Normalization layers"
            if inferred
            else "the default: the model does not say, pass --input-range"
        )
    mapped = map_pixels(fitted, value_range)
    model_input = np.where(pixels[:, None, None, None], mapped, fitted).astype(np.float32)
    lo, hi = value_range
    steps.append(f"values: [0, 255] pixels mapped linearly to [{lo:g}, {hi:g}] ({source})")
    if not pixels.all():
        steps.append("float .npy arrays passed as given (already in the model's range)")
        _warn_off_range(sources, fitted, pixels, value_range, source)
    return Prepared(sources, fitted, model_input, model_input, False, value_range, source, steps)


def read_for_model(
    model: Any,
    image_files: Sequence[str],
    scenes: int | None = None,
    seed: int = 0,
    stated: tuple[float, float] | None = None,
    preprocess: str | None = None,
) -> Prepared:
    """The one way the CLI reads images for a model (``explain`` and ``agree``): the
    files (or ``scenes`` bundled scenes) fitted to the model's size and channels and
    mapped to its value range (:func:`prepare`)."""
    sources = scene_sources(scenes, seed) if scenes is not None else read_sources(image_files)
    return prepare(model, sources, stated, preprocess)


def _warn_off_range(
    sources: Sequence[SourceImage],
    fitted: np.ndarray,
    pixels: np.ndarray,
    value_range: tuple[float, float],
    source: str,
) -> None:
    """Warn when a float array passed as given does not look like values in the model's
    range: values well outside it, or values that fill under 2% of a wide range (data
    in [0, 1] given to a model that takes [0, 255] is a near-black image to it)."""
    lo, hi = value_range
    width = hi - lo
    for i in (int(k) for k in np.flatnonzero(~pixels)):
        a_lo, a_hi = float(fitted[i].min()), float(fitted[i].max())
        outside = a_lo < lo - 0.01 * width or a_hi > hi + 0.01 * width
        narrow = width >= 10 and (a_hi - a_lo) < 0.02 * width
        if outside or narrow:
            warnings.warn(
                ConvvizWarning(
                    f"{sources[i].name}: values in [{a_lo:.3g}, {a_hi:.3g}], but the model "
                    f"takes [{lo:g}, {hi:g}] ({source}). Float arrays are passed as given: "
                    "scale them to the model's range, or pass --input-range if the "
                    "model's range is another."
                ),
                stacklevel=2,
            )
