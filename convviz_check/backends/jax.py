"""JAX implementation of the backend gradient layer (stateless calls, jitted)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import keras_private
from ._patch import ScopedPatch


# XLA's CPU backend runs a depthwise convolution (``feature_group_count`` = channels) far
# below the speed of the same arithmetic written as one multiply-add per kernel tap.
# Measured 2026-12-01 on this 2-core CPU, 1 thread, jitted, process CPU time: a 3x3
# depthwise conv on (8, 147, 147, 128): 64.5 ms/image as XLA's grouped conv, 12.4 ms as
# taps (torch's oneDNN: 1.0 ms); the whole Xception-41 backbone forward at 299 px,
# batch 8: 3.9 s -> 1.45 s. While our functions trace, Keras' JAX ``depthwise_conv``
# (which ``separable_conv`` and DepthwiseConv2D call) is replaced by the taps form for
# 2-D channels-last inputs; anything else goes to Keras' own. Results differ from XLA's
# conv by float32 rounding only (the sum over taps runs in another order): measured
# max relative difference over every activation of the bundled Xception 2.7e-7, of the
# seeded Xception-41's 40-layer backbone output 2.8e-6 (tests/test_backends.py bounds
# it on a small model).
def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = tuple(value)
    return (int(first), int(second))


def _depthwise_by_taps(original: Callable[..., Any]) -> Callable[..., Any]:
    import keras

    def depthwise_conv(
        inputs: Any,
        kernel: Any,
        strides: Any = 1,
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: Any = 1,
    ) -> Any:
        fmt = data_format or keras.config.image_data_format()
        pad = str(padding).lower()
        if (
            fmt != "channels_last"
            or getattr(inputs, "ndim", 0) != 4
            or pad not in ("same", "valid")
        ):
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        x = jnp.asarray(inputs)
        k = jnp.asarray(kernel)
        kh, kw, channels, multiplier = (int(d) for d in k.shape)
        sh, sw = _pair(strides)
        dh, dw = _pair(dilation_rate)
        window = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
        pads = jax.lax.padtype_to_pads(x.shape[1:3], window, (sh, sw), pad.upper())
        x = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
        n, h, w = int(x.shape[0]), int(x.shape[1]), int(x.shape[2])
        out_h, out_w = (h - window[0]) // sh + 1, (w - window[1]) // sw + 1
        out = None
        for i in range(kh):
            for j in range(kw):
                start = (0, i * dh, j * dw, 0)
                stop = (n, i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, channels)
                patch = jax.lax.slice(x, start, stop, (1, sh, sw, 1))
                # Keras orders a depth multiplier's outputs channel-major (c * M + m).
                term = patch[..., None] * k[i, j] if multiplier > 1 else patch * k[i, j, :, 0]
                out = term if out is None else out + term
        assert out is not None
        if multiplier > 1:
            out = jnp.reshape(out, (n, out_h, out_w, channels * multiplier))
        return out

    return depthwise_conv


DEPTHWISE_BY_TAPS = ScopedPatch(
    keras_private.JAX_NN_MODULE, keras_private.JAX_DEPTHWISE, _depthwise_by_taps
)


def _state(model: Any) -> tuple[list[jax.Array], list[jax.Array]]:
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )


def _call(
    model: Any, trainable: list[jax.Array], non_trainable: list[jax.Array], x: Any
) -> list[jax.Array]:
    outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def _l2_normalize_per_sample(g: jax.Array) -> jax.Array:
    axes = tuple(range(1, g.ndim))
    sq = jnp.sum(g * g, axis=axes, keepdims=True)
    return g * jax.lax.rsqrt(jnp.maximum(sq, 1e-12))


def make_value_and_grad(model: Any, loss_fn: Any, wrt: int) -> Any:
    def objective(
        x_wrt: jax.Array,
        others: list[jax.Array],
        trainable: list[jax.Array],
        non_trainable: list[jax.Array],
        aux: jax.Array,
    ) -> tuple[jax.Array, list[jax.Array]]:
        inputs = list(others)
        inputs.insert(wrt, x_wrt)
        outputs = _call(model, trainable, non_trainable, inputs if len(inputs) > 1 else inputs[0])
        return loss_fn(outputs, aux), outputs

    # Weights are jit *arguments*, not closed-over constants: one compile serves every
    # weight value, and XLA does not fold megabytes of constants into the program.
    step = jax.jit(jax.value_and_grad(objective, has_aux=True))

    def fn(
        inputs: list[np.ndarray], aux: np.ndarray | None = None
    ) -> tuple[float, list[np.ndarray], np.ndarray]:
        arrays = [jnp.asarray(x) for x in inputs]
        x_wrt = arrays.pop(wrt)
        trainable, non_trainable = _state(model)
        aux_a = jnp.asarray(np.zeros((), np.float32) if aux is None else aux)
        with DEPTHWISE_BY_TAPS:  # in force while jit traces (the first call per shape)
            (loss, outputs), grad = step(x_wrt, arrays, trainable, non_trainable, aux_a)
        return float(loss), [np.asarray(o) for o in outputs], np.asarray(grad)

    return fn


def whole_batches() -> bool:
    return False  # one trace/compile per input shape: callers chunk and pad


def make_forward(model: Any) -> Any:
    @jax.jit
    def forward(
        trainable: list[jax.Array], non_trainable: list[jax.Array], inputs: list[jax.Array]
    ) -> list[jax.Array]:
        return _call(model, trainable, non_trainable, inputs if len(inputs) > 1 else inputs[0])

    def fn(inputs: list[np.ndarray]) -> list[np.ndarray]:
        trainable, non_trainable = _state(model)
        with DEPTHWISE_BY_TAPS:
            outputs = forward(trainable, non_trainable, [jnp.asarray(x) for x in inputs])
        return [np.asarray(o) for o in outputs]

    return fn


def make_ascent(model: Any, loss_fn: Any, model_takes_aux: bool = False) -> Any:
    def objective(
        img: jax.Array, trainable: list[jax.Array], non_trainable: list[jax.Array], aux: jax.Array
    ) -> jax.Array:
        inputs = [img, aux] if model_takes_aux else img
        return loss_fn(_call(model, trainable, non_trainable, inputs), aux)

    grad_fn = jax.grad(objective)

    @jax.jit
    def run(
        image: jax.Array,
        trainable: list[jax.Array],
        non_trainable: list[jax.Array],
        aux: jax.Array,
        steps: jax.Array,
        learning_rate: jax.Array,
    ) -> jax.Array:
        def body(_: jax.Array, img: jax.Array) -> jax.Array:
            g = grad_fn(img, trainable, non_trainable, aux)
            return img + learning_rate * _l2_normalize_per_sample(g)

        # The whole loop is one XLA program (a dynamic trip count: no recompile per
        # value of ``steps``).
        return jax.lax.fori_loop(0, steps, body, image)

    def fn(image: np.ndarray, aux: np.ndarray, steps: int, learning_rate: float) -> np.ndarray:
        trainable, non_trainable = _state(model)
        with DEPTHWISE_BY_TAPS:
            out = run(
                jnp.asarray(image, jnp.float32),
                trainable,
                non_trainable,
                jnp.asarray(aux),
                jnp.asarray(int(steps), jnp.int32),
                jnp.asarray(float(learning_rate), jnp.float32),
            )
        return np.asarray(out)

    # A function attribute (mypy has no way to declare one): the jitted loop, for inspection.
    fn.jitted = run  # type: ignore[attr-defined]
    return fn


def fast_kernels() -> ScopedPatch:
    return DEPTHWISE_BY_TAPS


def pin_threads(n: int) -> dict[str, int]:
    # XLA reads its thread flags when the CPU client starts: workers and benchmarks put
    # them in XLA_FLAGS before importing jax (see backends.xla_thread_flags). Here we
    # only report what is in force.
    flags = os.environ.get("XLA_FLAGS", "")
    n_set = n
    for part in flags.split():
        if part.startswith("intra_op_parallelism_threads="):
            n_set = int(part.split("=", 1)[1])
    return {"intra_op": n_set, "inter_op": n_set}


def framework_version() -> dict[str, str]:
    return {"jax": jax.__version__}


def enable_determinism() -> None:
    """XLA's CPU kernels are deterministic for a fixed thread count: nothing to set."""


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


def enable_compilation_cache(directory: str) -> None:
    """Cache every compiled program in ``directory`` (see
    :func:`convviz_check.backends.set_jax_compilation_cache`).

    Both thresholds are lowered to cache everything: JAX's defaults skip programs that
    compiled in under 1 s, and a gate's many small programs (the bundled convnet's
    Grad-CAM compiles in well under a second) add up. A cache already opened at another
    directory is reset first (JAX opens it once per process, on the first compile).
    """
    from jax.experimental.compilation_cache import compilation_cache

    if jax.config.jax_compilation_cache_dir != directory:
        compilation_cache.reset_cache()
        compilation_cache.set_cache_dir(directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _apply_cache_from_environment() -> None:
    from . import JAX_CACHE_ENV

    directory = os.environ.get(JAX_CACHE_ENV)
    if directory:
        enable_compilation_cache(directory)


_apply_cache_from_environment()


def make_param_ascent(
    model: Any, loss_fn: Any, render_fn: Any, model_takes_aux: bool, coupled: bool = False
) -> Any:
    """Adam ascent on parameters that ``render_fn`` maps to the model's input (see
    ``backends.make_param_ascent``): the whole loop is one jitted ``fori_loop`` that
    reads step ``i``'s transform row from the schedule."""
    from ..explain.fviz import ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON

    def objective(
        params: jax.Array,
        trainable: list[jax.Array],
        non_trainable: list[jax.Array],
        aux: jax.Array,
        row: jax.Array,
    ) -> jax.Array:
        image, penalty = render_fn(params, row)
        inputs = [image, aux] if model_takes_aux else image
        return loss_fn(_call(model, trainable, non_trainable, inputs), aux) - penalty

    grad_fn = jax.grad(objective)

    @jax.jit
    def run(
        params: jax.Array,
        trainable: list[jax.Array],
        non_trainable: list[jax.Array],
        aux: jax.Array,
        schedule: jax.Array,
        steps: jax.Array,
        learning_rate: jax.Array,
    ) -> jax.Array:
        def body(i: jax.Array, state: tuple) -> tuple:
            p, m, v = state
            g = grad_fn(p, trainable, non_trainable, aux, schedule[i])
            m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * g
            v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * g * g
            t = (i + 1).astype(jnp.float32)
            m_hat = m / (1 - ADAM_BETA1**t)
            v_hat = v / (1 - ADAM_BETA2**t)
            return p + learning_rate * m_hat / (jnp.sqrt(v_hat) + ADAM_EPSILON), m, v

        zeros = jnp.zeros_like(params)
        return jax.lax.fori_loop(0, steps, body, (params, zeros, zeros))[0]

    def fn(
        params: np.ndarray, aux: np.ndarray, schedule: np.ndarray, steps: int, learning_rate: float
    ) -> np.ndarray:
        trainable, non_trainable = _state(model)
        with DEPTHWISE_BY_TAPS:
            out = run(
                jnp.asarray(params, jnp.float32),
                trainable,
                non_trainable,
                jnp.asarray(aux),
                jnp.asarray(schedule, jnp.float32),
                jnp.asarray(int(steps), jnp.int32),
                jnp.asarray(float(learning_rate), jnp.float32),
            )
        return np.asarray(out)

    fn.jitted = run  # type: ignore[attr-defined]  # as in make_ascent
    return fn
