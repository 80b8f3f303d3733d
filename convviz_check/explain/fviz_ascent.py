"""The robust ascent: the parameterization, transforms, penalties and objectives of
:mod:`convviz_check.explain.fviz` written once with ``keras.ops`` (so one definition
runs on TensorFlow, PyTorch and JAX), and the loop that drives the backend's compiled
Adam ascent (``backends.make_param_ascent``).

``render(params, row)`` maps the optimized parameters to the model's input for one
step (row: that step's transform draw) and returns the penalties; the backend adds the
model, the objective and Adam. The compiled ascent is cached with the model per
(layer, configuration, image shape), so every filter and every batch of a call, and
later calls with the same options, reuse one program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .fviz import (
    COLOR_SQRT_COV,
    FVIZ_LEARNING_RATE,
    FvizConfig,
    initial_params,
    irfft2_bases,
    params_to_unit,
    resolve_directions,
    spectrum_scale,
    transform_schedule,
)

Render = Callable[[Any, Any], tuple[Any, Any]]


def _fft_raw(h: int, w: int) -> Callable[[Any], Any]:
    """``(B, C, H, K, 2)`` spectrum -> ``(B, H, W, C)`` image (irfft2, ortho, scaled)."""
    from keras import ops

    consts = (*irfft2_bases(h, w), spectrum_scale(h, w))

    def raw(params: Any) -> Any:
        # NumPy constants become tensors here (torch does not multiply a tensor that
        # requires grad by an ndarray; TF and JAX fold them into the program).
        ch, sh, cw, sw, scale = (ops.convert_to_tensor(a) for a in consts)
        xr = params[..., 0] * scale
        xi = params[..., 1] * scale
        yr = ops.matmul(ch, xr) - ops.matmul(sh, xi)  # inverse DFT along H
        yi = ops.matmul(sh, xr) + ops.matmul(ch, xi)
        img = ops.matmul(yr, cw) + ops.matmul(yi, sw)  # real inverse along W
        return ops.transpose(img, (0, 2, 3, 1))

    return raw


def _penalty(config: FvizConfig) -> Callable[[Any], Any]:
    """Summed over the batch: ``tv * TV + l1 * L1 + l2 * L2`` of unit images."""
    from keras import ops

    p = config.penalties

    def penalty(u: Any) -> Any:
        h, w = int(u.shape[1]), int(u.shape[2])
        total = ops.zeros(())
        if p.tv:
            dy = ops.sum(ops.abs(u[:, 1:, :, :] - u[:, :-1, :, :]))
            dx = ops.sum(ops.abs(u[:, :, 1:, :] - u[:, :, :-1, :]))
            total = total + p.tv * (dy + dx) / (h * w)
        per_image = h * w * int(u.shape[3])
        if p.l1:
            total = total + p.l1 * ops.sum(ops.abs(u - 0.5)) / per_image
        if p.l2:
            total = total + p.l2 * ops.sum(ops.square(u - 0.5)) / per_image
        return total

    return penalty


def _transform(config: FvizConfig, h: int, w: int) -> Callable[[Any, Any], Any]:
    """Pad, then bilinear-sample the step's scaled, rotated, shifted grid (as
    :func:`convviz_check.explain.fviz.transform_image`)."""
    from keras import ops

    t = config.transforms
    pad = t.pad
    hp, wp = h + 2 * pad, w + 2 * pad
    gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    offsets = (
        (gy.reshape(-1) - (h - 1) / 2).astype(np.float32),
        (gx.reshape(-1) - (w - 1) / 2).astype(np.float32),
    )

    def gather(flat: Any, yy: Any, xx: Any) -> Any:
        yi = ops.cast(ops.clip(yy, 0, hp - 1), "int32")
        xi = ops.cast(ops.clip(xx, 0, wp - 1), "int32")
        return ops.take(flat, yi * wp + xi, axis=1)

    def transform(u: Any, row: Any) -> Any:
        if pad:
            u = ops.pad(u, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=0.5)
        b, c = ops.shape(u)[0], int(u.shape[3])
        flat = ops.reshape(u, (b, hp * wp, c))
        oy, ox = (ops.convert_to_tensor(a) for a in offsets)
        cos, sin = ops.cos(row[1]), ops.sin(row[1])
        ys = (cos * oy - sin * ox) / row[0] + ((h - 1) / 2 + pad) + row[2]
        xs = (sin * oy + cos * ox) / row[0] + ((w - 1) / 2 + pad) + row[3]
        y0, x0 = ops.floor(ys), ops.floor(xs)
        wy = (ys - y0)[None, :, None]
        wx = (xs - x0)[None, :, None]
        top = gather(flat, y0, x0) * (1 - wx) + gather(flat, y0, x0 + 1) * wx
        bottom = gather(flat, y0 + 1, x0) * (1 - wx) + gather(flat, y0 + 1, x0 + 1) * wx
        return ops.reshape(top * (1 - wy) + bottom * wy, (b, h, w, c))

    return transform


def make_render(
    config: FvizConfig,
    height: int,
    width: int,
    input_range: tuple[float, float],
    channels_first: bool,
    transform: bool = True,
) -> Render:
    """``render(params, row) -> (model input, penalty)`` in ``keras.ops``.

    Args:
        config: the resolved options.
        height, width: the image size.
        input_range: ``(low, high)``; the unit image is mapped to it last.
        channels_first: whether the model takes ``(B, C, H, W)``.
        transform: apply the step's transforms (``False``: the pattern itself, for
            tests against the NumPy reference).
    """
    from keras import ops

    lo, hi = input_range
    raw = _fft_raw(height, width) if config.parameterization == "fft" else (lambda p: p)
    color = np.ascontiguousarray(COLOR_SQRT_COV.T)
    penalty = _penalty(config)
    warp = (
        None if config.transforms.identity or not transform else _transform(config, height, width)
    )

    def render(params: Any, row: Any) -> tuple[Any, Any]:
        x = raw(params)
        if config.decorrelate and int(x.shape[-1]) == 3:
            x = ops.matmul(x, ops.convert_to_tensor(color))
        u = ops.sigmoid(x)
        cost = penalty(u)
        if warp is not None:
            u = warp(u, row)
        image = lo + (hi - lo) * u
        if channels_first:
            image = ops.transpose(image, (0, 3, 1, 2))
        return image, cost

    return render


def _diversity(act: Any) -> Any:
    """Sum over the batch of each image's mean Gram cosine similarity to the others
    (:func:`convviz_check.explain.fviz.gram_similarity`, summed)."""
    from keras import ops

    h, w = int(act.shape[1]), int(act.shape[2])
    g = ops.einsum("bhwc,bhwd->bcd", act, act) / (h * w)
    g = ops.reshape(g, (ops.shape(g)[0], -1))
    g = g / ops.maximum(ops.sqrt(ops.sum(g * g, axis=1, keepdims=True)), 1e-12)
    sim = ops.matmul(g, ops.transpose(g))
    n = ops.cast(ops.shape(g)[0], sim.dtype)
    return (ops.sum(sim) - ops.sum(ops.diagonal(sim))) / ops.maximum(n - 1, 1)


def make_objective(
    objective: str,
    data_format: str,
    channels: int,
    restricted: bool,
    map_hw: tuple,
    border: int,
    diversity: float = 0.0,
) -> Callable[[list, Any], Any]:
    """``loss(outputs, aux)`` summed over the batch: "channel" is the mean of each image's
    channel ``aux[i]`` inside the border (the chapter's loss); "neuron" is its value at
    the map's centre; "direction" is the mean inside the border of the activation
    vector's dot product with the unit direction ``aux[i]`` (``(B, C)`` floats).
    ``restricted``: the output holds only the asked channels (image ``i``'s is channel
    ``i``). ``diversity`` subtracts that weight times :func:`_diversity`."""
    from keras import ops

    b = border
    cy, cx = int(map_hw[0]) // 2, int(map_hw[1]) // 2

    def loss(outputs: list, aux: Any) -> Any:
        act = outputs[0]
        if data_format == "channels_first":
            act = ops.transpose(act, (0, 2, 3, 1))
        if diversity:
            return target(act, aux) - diversity * _diversity(act)
        return target(act, aux)

    def target(act: Any, aux: Any) -> Any:
        if objective == "direction":
            dot = ops.sum(act[:, b:-b, b:-b, :] * aux[:, None, None, :], axis=3)
            return ops.sum(ops.mean(dot, axis=(1, 2)))
        picked = (
            act[:, cy, cx, :]
            if objective == "neuron"
            else ops.mean(act[:, b:-b, b:-b, :], axis=(1, 2))
        )
        if restricted:
            return ops.sum(ops.diagonal(picked))
        return ops.sum(picked * ops.one_hot(aux, channels, dtype=picked.dtype))

    return loss


def robust_ascent_for(
    model: Any,
    cache_key: tuple,
    build: Callable[[], tuple[Any, bool]],
    config: FvizConfig,
    objective_args: tuple,
    render_args: tuple,
) -> Callable[..., np.ndarray]:
    """The compiled robust ascent, cached with the model under ``cache_key``.

    ``build()`` returns ``(probe model, restricted)``: a channel probe of the asked
    channels (``restricted``) or an extractor of the whole layer."""
    from .. import backends
    from .. import graph as graph_lib

    per_model = graph_lib.model_cache(model, "fviz")
    fn = per_model.get(cache_key)
    if fn is None:
        probe, restricted = build()
        data_format, channels, map_hw, border = objective_args
        loss = make_objective(
            config.objective,
            data_format,
            channels,
            restricted,
            map_hw,
            border,
            config.penalties.diversity,
        )
        fn = backends.make_param_ascent(
            probe,
            loss,
            make_render(config, *render_args),
            model_takes_aux=restricted,
            coupled=config.penalties.diversity > 0,
        )
        fn.restricted = restricted  # which path was taken, for tests (as in filters)
        per_model[cache_key] = fn
    return fn


def run_batches(
    ascent: Callable[..., np.ndarray],
    config: FvizConfig,
    indices: list[int],
    batch: int,
    shape: tuple[int, int, int],
    steps: int,
    learning_rate: float,
    seed: int,
    progress: Callable[[int, int], Any] | None,
    directions: np.ndarray | None = None,
) -> np.ndarray:
    """Run ``ascent`` over ``indices`` in padded batches; ``(F, H, W, C)`` unit images.
    ``aux`` is each image's filter index, or its direction (a row of ``directions``)."""
    height, width, channels = shape
    # At least one row (an identity draw when steps == 0): a compiled loop indexes it.
    schedule = transform_schedule(config.transforms, max(steps, 1), seed)
    distinct = config.penalties.diversity > 0
    start = initial_params(config.parameterization, batch, height, width, channels, seed, distinct)
    total = len(indices)
    out = np.empty((total, height, width, channels), np.float32)
    for begin in range(0, total, batch):
        chunk = indices[begin : begin + batch]
        aux = np.asarray(chunk + [chunk[-1]] * (batch - len(chunk)), np.int32)
        if directions is not None:
            aux = directions[aux]
        params = ascent(start.copy(), aux, schedule, steps, float(learning_rate))[: len(chunk)]
        out[begin : begin + len(chunk)] = params_to_unit(config, params, width)
        if progress is not None:
            progress(begin + len(chunk), total)
    return out


def robust_patterns(
    model: Any,
    layer: tuple[str, str, int, int],
    build: Callable[[bool], tuple[Any, bool]],
    indices: list[int],
    run: tuple,
) -> np.ndarray:
    """``(F, H, W, C)`` robust patterns as fractions of ``input_range``.

    Args:
        model: the Keras model.
        layer: ``(name, data_format, channels, border)`` of the target layer.
        build: ``build(channel_probe)`` -> ``(model to differentiate, restricted)``; with
            ``channel_probe`` a plain conv layer computes only the asked channels.
        indices: the filters asked for (ignored for a direction objective).
        run: ``(config, objective, filters, (H, W, C), (map_hw, input_range,
            data_format), steps, learning_rate, seed, batch_size, progress)``.

    Raises:
        InputError: a direction objective with ``filters`` given, or a direction of the
            wrong size.
    """
    name, data_format, channels, border = layer
    config, objective, filters, shape, where, steps, learning_rate, seed, batch, progress = run
    map_hw, input_range, input_format = where
    directions = None
    if config.objective == "direction":
        directions = resolve_directions(objective, filters, channels, name)
        indices = list(range(len(directions)))
    ascent = robust_ascent_for(
        model,
        (name, config, shape, input_range),
        # A direction or the diversity term needs every channel of the layer.
        lambda: build(directions is None and not config.penalties.diversity),
        config,
        (data_format, channels, map_hw, border),
        (shape[0], shape[1], input_range, input_format == "channels_first"),
    )
    lr = FVIZ_LEARNING_RATE if learning_rate is None else float(learning_rate)
    batch = min(int(batch), len(indices))
    return run_batches(ascent, config, indices, batch, shape, steps, lr, seed, progress, directions)


__all__ = ["make_objective", "make_render", "robust_ascent_for", "robust_patterns", "run_batches"]
