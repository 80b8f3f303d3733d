"""Filter patterns: activation maximization by gradient ascent in input space.

For a filter ``f`` of layer ``L`` the pattern is the input image that (locally)
maximizes the mean of ``L``'s output channel ``f``, away from a 2-pixel border:

    loss(x) = mean(activation(x)[:, b:-b, b:-b, f]),  b = 2
    x <- x + learning_rate * grad / ||grad||_2          (steps times, per image)

starting from a uniform image in ``[0.4, 0.6]`` of ``input_range`` (by default the range
the model's leading ``Rescaling``/``Normalization`` layers imply, else ``(0, 1)``) drawn from
``numpy.random.default_rng(seed)`` (the same start for every filter, so a filter's
pattern does not depend on which other filters were asked for, nor on the batch size).

Speed. The chapter ("Interpreting what convnets learn", DLwP 3rd ed., ch. 10) calls a
``tf.function`` step from Python with the filter index as a Python int, so TensorFlow
retraces for every filter. Here the filter indices are a *tensor* argument (``aux``,
one index per image of the batch), and the ascent is compiled once per (model, layer)
and specialized once per (image shape, batch size): TF calls one compiled step from
Python (a ``while_loop`` measured no faster), JAX jits the whole loop (``fori_loop``),
torch runs eager autograd (see ``backends.make_ascent``). When the layer is a plain
Conv2D/SeparableConv2D, only the asked filters' channels of it are computed (the
kernel's columns are gathered by the index tensor); any other layer computes all its
channels and a one-hot mask picks each image's filter. Several filters can be optimized
at once (``batch_size``): each image has its own loss term and its own gradient
normalization, so a batch is ``batch_size`` independent ascents.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GraphError, InputError, describe_array
from .fviz import FVIZ_STEPS, resolve_config
from .fviz_runs import chapter_batches, pattern_call, pattern_note, remember, restart_dead
from .inputs import check_batch_size

BORDER = 2  # pixels of the activation map left out of the loss (the chapter's 2:-2)
DEFAULT_SIZE = 200  # synthesized image side when the model takes any size (chapter: 200)
DEFAULT_STEPS = 30
# The chapter's step: learning_rate 10 on a 200x200x3 image. Other sizes scale it by
# sqrt(H*W*C / 120000) so the per-pixel step (lr / sqrt(pixels) for a unit-norm
# gradient) stays the chapter's.
REFERENCE_LEARNING_RATE = 10.0
REFERENCE_PIXELS = 200 * 200 * 3
START_LOW, START_HIGH = 0.4, 0.6  # start image, as fractions of input_range
# A dead start's restart k (fviz_runs) is seeded seed + k * this: far from seeds 0, 1, 2...
RESTART_SEED_STRIDE = 7919
# Default number of filters optimized at once: 4. Measured 2026-11-26 on the idle 2-core
# CPU (benchmarks/bench_filters.py --batch-sizes 1,4; Xception-41 block3_sepconv1,
# 200x200, 30 steps, 2 threads), s/filter at batch 1 vs 4: TF 1.59 vs 1.36, torch 2.06
# vs 1.81, JAX 5.01 vs 5.06. Peak memory grows with the batch (+176 / 401 / 411 MiB at
# 8 on TF / torch / JAX, +1.4-4.2 GiB at 64), and a partial last batch is padded. (An
# earlier measurement under heavy machine load had batch 4 slower: 21.9 vs 10.0 s.)
# Pass a larger batch_size on an accelerator.
DEFAULT_BATCH_SIZE = 4

Progress = Callable[[int, int], Any]


@dataclass(frozen=True)
class _Target:
    """What the ascent needs to know about the layer."""

    name: str
    channels: int
    data_format: str  # of the layer's output


def _make_loss(channels: int, data_format: str) -> Callable[[list, Any], Any]:
    """``loss(outputs, aux)``: sum over the batch of each image's mean activation of its
    own filter ``aux[i]`` inside the border. ``aux`` is an int tensor, never a Python
    int, so one compiled program serves every filter index."""
    from keras import ops

    b = BORDER

    def loss_fn(outputs: list, aux: Any) -> Any:
        act = outputs[0]
        # A one-hot mask selects each image's filter: a gather with a per-sample index
        # would do the same; the mask costs one multiply on an already small map.
        mask = ops.one_hot(aux, channels, dtype=act.dtype)
        if data_format == "channels_first":
            inner = act[:, :, b:-b, b:-b]
            picked = ops.sum(inner * mask[:, :, None, None], axis=1)
        else:
            inner = act[:, b:-b, b:-b, :]
            picked = ops.sum(inner * mask[:, None, None, :], axis=3)
        return ops.sum(ops.mean(picked, axis=(1, 2)))

    return loss_fn


# Elementwise activations: with these, channel f of a conv layer's output depends only
# on column f of its kernel, so the layer can be computed for the wanted channels alone.
_ELEMENTWISE_ACTIVATIONS = frozenset(
    "linear relu relu6 leaky_relu elu selu gelu silu swish sigmoid hard_sigmoid hard_silu "
    "hard_swish tanh softplus softsign mish exponential celu".split()
)


def _restricted_conv(op: Any) -> bool:
    """Whether ``op`` is a plain Conv2D/SeparableConv2D whose output channels can be
    computed one at a time (float32, no groups, no LoRA or quantization, elementwise
    activation). Subclasses are excluded: their ``call`` may differ."""
    import keras

    if type(op) not in (keras.layers.Conv2D, keras.layers.SeparableConv2D):
        return False
    if getattr(op, "groups", 1) != 1 or getattr(op, "lora_enabled", False):
        return False
    if getattr(op, "quantization_mode", None) is not None:
        return False
    if op.dtype_policy.compute_dtype != "float32" or op.dtype_policy.variable_dtype != "float32":
        return False
    act = getattr(op, "activation", None)
    return act is None or getattr(act, "__name__", None) in _ELEMENTWISE_ACTIVATIONS


_CHANNEL_MODEL_CLASS: Any = None


def _channel_model(model: Any, layer: str) -> Any:
    """A model ``[image, aux] -> layer's channels aux[0..B-1]`` for every image: ``(B, H,
    W, B)`` (channels last) or ``(B, B, H, W)``; image ``i``'s own filter is channel ``i``.

    Why: the ascent needs one channel per image, not the layer's all C. The prefix up
    to the layer's input runs as usual; the layer itself runs with the kernel's columns
    gathered by ``aux`` (a tensor: no retrace per filter). Measured on Xception-41
    block3_sepconv1 (a 128->256 separable conv at 49x49, 200 px input), TF 2.21, 2-core
    CPU: see benchmarks/bench_filters.py for the ratios this bought."""
    global _CHANNEL_MODEL_CLASS
    import keras
    from keras import ops

    from .. import graph as graph_lib

    if _CHANNEL_MODEL_CLASS is None:

        class ChannelProbe(keras.Model):
            def __init__(self, prefix: Any, conv: Any, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.prefix = prefix
                self.conv = conv
                self.built = True

            def call(self, inputs: Any, training: bool = False) -> Any:
                image, aux = inputs
                x = self.prefix(image, training=False)
                conv = self.conv
                axis = -1 if conv.data_format == "channels_last" else 1
                common = dict(
                    strides=conv.strides,
                    padding=conv.padding,
                    dilation_rate=conv.dilation_rate,
                    data_format=conv.data_format,
                )
                if isinstance(conv, keras.layers.SeparableConv2D):
                    pointwise = ops.take(conv.pointwise_kernel, aux, axis=3)
                    y = ops.separable_conv(x, conv.depthwise_kernel, pointwise, **common)
                else:
                    y = ops.conv(x, ops.take(conv.kernel, aux, axis=3), **common)
                if conv.use_bias:
                    bias = ops.take(conv.bias, aux, axis=0)
                    y = y + (bias if axis == -1 else ops.reshape(bias, (1, -1, 1, 1)))
                return y if conv.activation is None else conv.activation(y)

        _CHANNEL_MODEL_CLASS = ChannelProbe

    op = graph_lib.flatten(model).record(layer).operation
    prefix = graph_lib.layer_input_model(model, layer)
    return _CHANNEL_MODEL_CLASS(prefix, op, name=f"{model.name}_channels")


def _make_diagonal_loss(data_format: str) -> Callable[[list, Any], Any]:
    """``loss(outputs, aux)`` for :func:`_channel_model`: image ``i`` takes channel ``i``
    of the ``B`` computed ones (the diagonal), mean inside the border, summed."""
    from keras import ops

    b = BORDER

    def loss_fn(outputs: list, aux: Any) -> Any:
        act = outputs[0]
        # The batch size may be unknown at trace time (TF relaxes shapes when it sees a
        # second one), so the diagonal is taken with ``diagonal``, not an eye mask.
        if data_format == "channels_first":
            picked = ops.diagonal(act[:, :, b:-b, b:-b], axis1=0, axis2=1)
        else:
            picked = ops.diagonal(act[:, b:-b, b:-b, :], axis1=0, axis2=3)
        return ops.sum(ops.mean(picked, axis=(0, 1)))

    return loss_fn


def _ascent_for(model: Any, target: _Target) -> Callable[..., np.ndarray]:
    """The compiled ascent for (model, layer), built once and cached with the model.

    The backend's compiled function specializes on the image shape and batch size the
    first time it sees them, so compilation happens once per (model, layer, image
    shape, batch size). A plain Conv2D/SeparableConv2D target computes only the
    filters asked for (:func:`_channel_model`); any other layer computes all its
    channels and a one-hot mask picks each image's."""
    from .. import backends
    from .. import graph as graph_lib

    per_model = graph_lib.model_cache(model, "filters")
    fn = per_model.get(target.name)
    if fn is None:
        op = graph_lib.flatten(model).record(target.name).operation
        restricted = _restricted_conv(op)
        if restricted:
            fn = backends.make_ascent(
                _channel_model(model, target.name),
                _make_diagonal_loss(target.data_format),
                model_takes_aux=True,
            )
        else:
            extractor = graph_lib.submodel(model, [target.name])
            fn = backends.make_ascent(extractor, _make_loss(target.channels, target.data_format))
        fn.restricted = restricted  # which path was taken, for tests and benchmarks
        per_model[target.name] = fn
    return fn


def _resolve_target(model: Any, layer: Any) -> _Target:
    from .. import graph as graph_lib
    from ..graph.targets import map_layers, short_list, structure

    if not isinstance(layer, str):
        raise GraphError(
            f"layer must be a layer name (str). Received: layer={layer!r} "
            f"(type {type(layer).__name__})."
        )
    flat = graph_lib.flatten(model)
    record = flat.record(layer)  # GraphError names the known layers
    valid = short_list(map_layers(model))
    if not record.is_spatial:
        raise GraphError(
            f"Filter patterns need a layer with a 4-D output (batch, H, W, C). Received: "
            f"layer={layer!r} ({record.class_name}) with output shape {record.output_shape}. "
            f"Expected one of the spatial maps: {valid}"
        )
    s = structure(model)
    i = flat.records.index(record)
    if s.after_head_pooling[i] or s.pooled[i]:
        where = (
            "comes after the head's global pooling"
            if s.after_head_pooling[i]
            else "is computed from a global pooling alone (a squeeze-and-excitation branch)"
        )
        raise GraphError(
            f"Filter patterns need a spatial map, and this layer {where}, so its output has "
            f"no spatial layout. Received: layer={layer!r} ({record.class_name}) with output "
            f"shape {record.output_shape}. Expected one of the spatial maps: {valid}"
        )
    shape = record.output_shape
    channels = shape[1] if record.data_format == "channels_first" else shape[3]
    if channels is None:
        raise GraphError(
            f"The layer's channel count is unknown. Received: layer={layer!r} with output "
            f"shape {shape}. Expected a fixed number of channels."
        )
    return _Target(name=layer, channels=int(channels), data_format=record.data_format)


def _resolve_size(size: Any, spec_hw: tuple[int | None, int | None]) -> tuple[int, int]:
    fixed_h, fixed_w = spec_hw
    if size is None:
        return (fixed_h or DEFAULT_SIZE, fixed_w or DEFAULT_SIZE)
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)
    ):
        hw = (int(size[0]), int(size[1]))
    else:
        raise InputError(
            f"size must be None, an int or a pair of ints (H, W). Received: size={size!r}."
        )
    if min(hw) < 1:
        raise InputError(f"size must be positive. Received: size={size!r}.")
    for axis, got, want in (("height", hw[0], fixed_h), ("width", hw[1], fixed_w)):
        if want is not None and got != want:
            raise InputError(
                f"The model takes a fixed input {axis} of {want}. Received: size={size!r} "
                f"({axis} {got}). Expected size=None or the model's size "
                f"({fixed_h}, {fixed_w})."
            )
    return hw


def _resolve_filters(filters: Any, channels: int, layer: str) -> list[int]:
    if filters is None:
        return list(range(channels))
    items: list[Any]
    if isinstance(filters, numbers.Integral) and not isinstance(filters, bool):
        items = [filters]
    elif isinstance(filters, range | Sequence | np.ndarray):
        items = (
            list(np.asarray(filters).reshape(-1))
            if isinstance(filters, np.ndarray)
            else list(filters)
        )
    else:
        raise InputError(
            f"filters must be None, an int or a sequence of ints. Received: filters={filters!r}."
        )
    if not items:
        raise InputError("filters is empty. Received: filters=[]. Expected at least one index.")
    out = []
    for f in items:
        if not isinstance(f, numbers.Integral) or isinstance(f, bool):
            raise InputError(
                f"Filter indices must be ints. Received: {f!r} in filters={filters!r}."
            )
        if not 0 <= int(f) < channels:
            raise InputError(
                f"Filter index out of range for layer {layer!r}. Received: filter {int(f)}. "
                f"Expected an index in [0, {channels - 1}] (the layer has {channels} filters)."
            )
        out.append(int(f))
    return out


def _check_scalars(
    steps: Any, learning_rate: Any, batch_size: Any, input_range: Any, progress: Any, seed: Any
) -> tuple[float, float]:
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
        raise InputError(f"steps must be an int >= 0. Received: steps={steps!r}.")
    if learning_rate is not None and (
        not isinstance(learning_rate, numbers.Real)
        or not math.isfinite(learning_rate)
        or learning_rate <= 0
    ):
        raise InputError(
            f"learning_rate must be None or a finite number > 0. "
            f"Received: learning_rate={learning_rate!r}."
        )
    check_batch_size(batch_size)
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be callable(done, total). Received: {progress!r}.")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be an int >= 0. Received: seed={seed!r}.")
    try:
        lo, hi = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise InputError(
            f"input_range must be a pair (low, high). Received: input_range={input_range!r}."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(
            f"input_range must be finite with low < high. Received: input_range={input_range!r}."
        )
    return lo, hi


def default_learning_rate(height: int, width: int, channels: int) -> float:
    """10.0 at 200x200x3, else ``10 * sqrt(H*W*C / 120000)`` (the chapter's per-pixel
    step for a unit-norm gradient), for an input range 1 wide (``filter_patterns``
    multiplies it by the width of ``input_range``)."""
    return REFERENCE_LEARNING_RATE * math.sqrt(height * width * channels / REFERENCE_PIXELS)


def start_image(
    height: int, width: int, channels: int, seed: int = 0, input_range: tuple = (0.0, 1.0)
) -> np.ndarray:
    """The ascent's start ``(H, W, C)`` float32: uniform in ``[0.4, 0.6]`` of
    ``input_range``, from ``numpy.random.default_rng(seed)``."""
    lo, hi = float(input_range[0]), float(input_range[1])
    u = np.random.default_rng(seed).uniform(START_LOW, START_HIGH, size=(height, width, channels))
    return (lo + (hi - lo) * u).astype(np.float32)


def _map_shape(model: Any, target: _Target, image_shape: tuple[int, ...]) -> tuple:
    """The layer's output shape for one synthesized image (model layout); cached with
    the model (a symbolic pass costs ~0.1 s on Xception-41, per call otherwise)."""
    import keras

    from .. import graph as graph_lib

    key = ("map_shape", target.name, tuple(image_shape))
    per_model = graph_lib.model_cache(model, "filters")
    if key in per_model:
        return per_model[key]

    extractor = graph_lib.submodel(model, [target.name])
    try:
        # Symbolic: no computation (Functional.compute_output_shape is not implemented
        # for every layer, e.g. keras-hub's Probe; compute_output_spec is).
        spec = extractor.compute_output_spec(keras.KerasTensor((1, *image_shape)))
    except Exception as e:  # shape inference raises plain ValueErrors of several kinds
        raise InputError(
            f"size is too small for layer {target.name!r}: the model cannot compute it. "
            f"Received: image shape {image_shape} ({type(e).__name__}: {e})."
        ) from None
    if isinstance(spec, list | tuple):
        spec = spec[0]
    per_model[key] = tuple(spec.shape)
    return per_model[key]


def _robust(model: Any, target: _Target, indices: list[int], run: tuple) -> np.ndarray:
    """The robust ascent (:func:`.fviz_ascent.robust_patterns`), given how to build the
    model it differentiates: only the asked channels of a plain conv, else the layer."""
    from .. import graph as graph_lib
    from .fviz_ascent import robust_patterns

    def build(channel_probe: bool) -> tuple[Any, bool]:
        op = graph_lib.flatten(model).record(target.name).operation
        if channel_probe and _restricted_conv(op):
            return _channel_model(model, target.name), True
        return graph_lib.submodel(model, [target.name]), False

    layer = (target.name, target.data_format, target.channels, BORDER)
    return robust_patterns(model, layer, build, indices, run)


def filter_patterns(
    model: Any,
    layer: str,
    filters: int | Sequence[int] | None = None,
    steps: int | None = None,
    learning_rate: float | None = None,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    input_range: tuple[float, float] | None = None,
    progress: Progress | None = None,
    parameterization: str = "pixel",
    decorrelate: bool | None = None,
    transforms: Any = None,
    penalties: Any = None,
    objective: Any = "channel",
) -> np.ndarray:
    """Synthesize the input pattern each filter of ``layer`` responds to most.

    Gradient ascent in input space: the loss of filter ``f`` is the mean of
    ``layer``'s channel ``f`` without a 2-pixel border; each step adds
    ``learning_rate`` times the L2-normalized gradient (per image).

    Args:
        model: a functional/Sequential Keras model, or any source ``cc.load_model``
            accepts (a ``.keras`` path, a preset directory...).
        layer: a layer whose output is a spatial map, as ``cc.conv_layers`` names it
            (nested models included); layers after the head's global pooling and the
            1x1 tensors of squeeze-and-excitation branches are refused
            (``graph_targets.map_layers`` lists the valid ones).
        filters: filter (channel) indices: one index (``filters=3`` is filter 3
            alone, a batch of one) or several (``range(8)`` for the first eight);
            ``None`` means every filter of the layer. (The CLI's ``--filters N`` and
            ``agreement(filters=N)`` count filters instead: the first ``N``.)
        steps: ascent steps (>= 0); ``None``: the chapter's 30, or 128 for the robust
            ascent (``fviz.FVIZ_STEPS``).
        learning_rate: step length; robust ascent: Adam's, ``None`` meaning 0.2
            (``fviz.FVIZ_LEARNING_RATE``). Chapter's ascent: ``None`` means 10.0 at 200x200x3 and
            ``10 * sqrt(H*W*C / 120000)`` at other sizes, times the width of
            ``input_range`` (``high - low``: 1 for the default ``(0, 1)``, 255 for
            0-255 models), so that a step is the same fraction of the range.
        size: ``None`` (the model's fixed input size, else 200x200), an int or (H, W).
        seed: seed of ``numpy.random.default_rng`` for the start image.
        batch_size: filters optimized at once (default 4, see ``DEFAULT_BATCH_SIZE``);
            the last batch is padded to the same size so one compiled program serves
            the whole call.
        input_range: ``(low, high)`` of the values the model expects; the start is
            uniform in ``[0.4, 0.6]`` of it. ``None`` (default): inferred from the
            preprocessing layers at the start of the model
            (:func:`convviz_check.explain.inputs.infer_input_range`: ``(0, 255)`` for
            EfficientNet, EfficientNetV2, MobileNetV3, ConvNeXt), else ``(0, 1)``.
        progress: called as ``progress(done, total)`` after each batch.
        parameterization: ``"pixel"`` (default: the chapter's plain ascent, unless an
            option below is set) or ``"fft"``: the robust feature visualization of
            docs/feature-visualization.md (a 1/f-scaled Fourier spectrum, colour
            decorrelation, random transforms and a small TV penalty, each settable).
        decorrelate: colour decorrelation (``None``: on for "fft").
        transforms: ``None`` (the preset for "fft", none for "pixel"), ``False``, or a
            dict / ``fviz.Transforms`` of ``pad``, ``jitter``, ``scale``, ``rotate``.
        penalties: ``None`` (TV 0.05 for "fft"), ``False``, or a dict /
            ``fviz.Penalties`` of ``tv``, ``l1``, ``l2``, ``diversity`` weights.
        objective: ``"channel"`` (mean of the channel inside the border), ``"neuron"``
            (its value at the map's centre) or a direction (an array ``(C,)`` or
            ``(F, C)``: one pattern per row, ``filters=None``); robust ascent.

    Returns:
        ``(F, H, W, C)`` float32 patterns, channels-last whatever the model's layout
        (deprocess them with ``cc.deprocess_image``).

    Raises:
        GraphError: unknown layer, a layer without a 4-D output, or one whose output
            is not a spatial map (after the head's global pooling, or computed from a
            global pooling alone).
        InputError: a bad argument (filter index out of range, steps < 0,
            learning_rate <= 0, a size the model or the crop cannot take, a map too
            small for the border...).

    Example:
        >>> patterns = cc.filter_patterns(model, "conv2d_1", filters=range(8))
        >>> grid = cc.filter_grid(np.stack([cc.deprocess_image(p) for p in patterns]))
    """
    from ..models import load_model
    from .inputs import infer_input_range, input_spec

    model = load_model(model)
    if input_range is None:
        input_range = infer_input_range(model) or (0.0, 1.0)
    spec = input_spec(model)
    height, width = _resolve_size(size, (spec.height, spec.width))
    config = resolve_config(
        parameterization, decorrelate, transforms, penalties, objective, height, width
    )
    if steps is None:
        steps = DEFAULT_STEPS if config is None else FVIZ_STEPS
    lo, hi = _check_scalars(steps, learning_rate, batch_size, input_range, progress, seed)
    target = _resolve_target(model, layer)
    indices = _resolve_filters(filters, target.channels, layer)
    channels = spec.channels or 3
    channels_first = spec.data_format == "channels_first"
    image_shape = (channels, height, width) if channels_first else (height, width, channels)

    map_shape = _map_shape(model, target, image_shape)
    map_hw = map_shape[2:4] if target.data_format == "channels_first" else map_shape[1:3]
    if any(d is not None and d <= 2 * BORDER for d in map_hw):
        raise InputError(
            f"The activation map of layer {layer!r} is too small for the {BORDER}-pixel "
            f"border of the loss. Received: map {tuple(map_hw)} for input size "
            f"{(height, width)}. Expected a map larger than {2 * BORDER}x{2 * BORDER}: "
            "use a larger size or an earlier layer."
        )

    def compute(picked: list[int], restart: int) -> np.ndarray:
        """The patterns of ``picked``; a restart (>= 1): another seed, full-range start."""
        first = seed + restart * RESTART_SEED_STRIDE
        if config is not None:
            shape, where = (height, width, channels), (map_hw, (lo, hi), spec.data_format)
            run = (config, objective, filters, shape, where, int(steps), learning_rate, first)
            unit = _robust(
                model, target, picked, (*run, batch_size or DEFAULT_BATCH_SIZE, progress)
            )
            return (lo + (hi - lo) * unit).astype(np.float32)
        start = start_image(height, width, channels, first, (lo, hi))
        if restart:  # noise over the whole range: more contrast fires more channels
            start = lo + (hi - lo) * np.random.default_rng(first).uniform(size=start.shape)
        plain = (steps, lr, min(batch_size or DEFAULT_BATCH_SIZE, len(indices)), progress)
        ascent = _ascent_for(model, target)
        return chapter_batches(ascent, picked, start.astype(np.float32), channels_first, plain)

    scale = default_learning_rate(height, width, channels) * (hi - lo)
    lr = scale if learning_rate is None else float(learning_rate)
    out = compute(indices, 0)
    if not np.isfinite(out).all():
        raise InputError(
            f"Gradient ascent diverged (non-finite pixels) for layer {layer!r}. "
            f"Received: learning_rate={lr}, steps={steps}, {describe_array('patterns', out)}. "
            "Expected finite patterns: lower the learning rate."
        )
    note = ""
    if steps > 0 and config is None:  # the chapter's ascent: a dead start never moves
        first = (lo + START_LOW * (hi - lo), lo + START_HIGH * (hi - lo))
        out, note = restart_dead(model, layer, indices, out, compute, BORDER, first)
    return remember(out, (model, layer, filters, note))


__all__ = [
    "default_learning_rate",
    "filter_patterns",
    "pattern_call",
    "pattern_note",
    "start_image",
]
