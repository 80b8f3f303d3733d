"""TensorFlow implementation of the backend gradient layer."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import tensorflow as tf


def _l2_normalize_per_sample(g: tf.Tensor) -> tf.Tensor:
    axes = list(range(1, len(g.shape)))
    sq = tf.reduce_sum(tf.square(g), axis=axes, keepdims=True)
    return g * tf.math.rsqrt(tf.maximum(sq, 1e-12))


def make_value_and_grad(model: Any, loss_fn: Any, wrt: int) -> Any:
    # reduce_retracing: one trace per input *shape*, never per value of ``aux``.
    @tf.function(reduce_retracing=True)
    def step(
        inputs: list[tf.Tensor], aux: tf.Tensor
    ) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        # Only the watched input is recorded: with the default (every trainable variable
        # the model reads is watched) the tape recorded the whole network and traced a
        # gradient function for each op (331 for Xception-41), which grappler then pruned.
        # Measured 2026-12-01, Xception-41 at 96 px, fresh model, first call
        # (trace + run): see the number next to this change in bench_gradcam.py.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(inputs[wrt])
            outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
            outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
            loss = loss_fn(outputs, aux)
        return loss, outputs, tape.gradient(loss, inputs[wrt])

    def fn(
        inputs: list[np.ndarray], aux: np.ndarray | None = None
    ) -> tuple[float, list[np.ndarray], np.ndarray]:
        tensors = [tf.convert_to_tensor(x) for x in inputs]
        aux_t = tf.convert_to_tensor(np.zeros((), np.float32) if aux is None else aux)
        loss, outputs, grad = step(tensors, aux_t)
        return float(loss.numpy()), [o.numpy() for o in outputs], grad.numpy()

    # A function attribute (mypy has no way to declare one), exposed for tests that count traces.
    fn.concrete = step  # type: ignore[attr-defined]
    return fn


def whole_batches() -> bool:
    return False  # one trace/compile per input shape: callers chunk and pad


def make_forward(model: Any) -> Any:
    @tf.function(reduce_retracing=True)
    def forward(inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
        return list(outputs) if isinstance(outputs, list | tuple) else [outputs]

    def fn(inputs: list[np.ndarray]) -> list[np.ndarray]:
        # np.asarray shares the eager tensor's buffer (.numpy() would copy).
        return [np.asarray(o) for o in forward([tf.convert_to_tensor(x) for x in inputs])]

    return fn


def make_ascent(model: Any, loss_fn: Any, model_takes_aux: bool = False) -> Any:
    # One compiled *step*, called from Python ``steps`` times; ``aux`` (the filter
    # indices) and the learning rate are tensors, so one trace serves every filter.
    # Not a tf.while_loop over the steps: re-measured 2026-11-26 on the idle 2-core CPU
    # (Xception-41 block3_sepconv1, 200x200, batch 1, 30 steps) the while_loop version
    # was no faster (1.52-1.75 s vs 1.53-1.77 s per ascent); the Python loop's per-call
    # overhead is small against a step of ~50 ms.
    @tf.function(reduce_retracing=True)
    def step(img: tf.Tensor, aux: tf.Tensor, learning_rate: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(img)
            inputs = [img, aux] if model_takes_aux else img
            loss = loss_fn([model(inputs, training=False)], aux)
        return img + learning_rate * _l2_normalize_per_sample(tape.gradient(loss, img))

    def fn(image: np.ndarray, aux: np.ndarray, steps: int, learning_rate: float) -> np.ndarray:
        img = tf.convert_to_tensor(image, tf.float32)
        aux_t = tf.convert_to_tensor(aux)
        lr = tf.constant(float(learning_rate), tf.float32)
        for _ in range(int(steps)):
            img = step(img, aux_t, lr)
        return img.numpy()

    fn.concrete = step  # type: ignore[attr-defined]  # as in make_value_and_grad
    return fn


def fast_kernels() -> AbstractContextManager[None]:
    return nullcontext()


def pin_threads(n: int) -> dict[str, int]:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        pass  # already initialized: the values set first stay in force
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def framework_version() -> dict[str, str]:
    return {"tensorflow": tf.__version__}


def enable_determinism() -> None:
    tf.config.experimental.enable_op_determinism()


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def make_param_ascent(
    model: Any, loss_fn: Any, render_fn: Any, model_takes_aux: bool, coupled: bool = False
) -> Any:
    """Adam ascent on parameters that ``render_fn`` maps to the model's input (see
    ``backends.make_param_ascent``). One compiled step, called ``steps`` times; the
    step's transform row, ``aux`` and the learning rate are tensors (one trace)."""
    from ..explain.fviz import ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON

    @tf.function(reduce_retracing=True)
    def step(
        params: tf.Tensor,
        m: tf.Tensor,
        v: tf.Tensor,
        t: tf.Tensor,
        aux: tf.Tensor,
        row: tf.Tensor,
        learning_rate: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            image, penalty = render_fn(params, row)
            inputs = [image, aux] if model_takes_aux else image
            objective = loss_fn([model(inputs, training=False)], aux) - penalty
        g = tape.gradient(objective, params)
        m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * g
        v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * g * g
        m_hat = m / (1 - ADAM_BETA1**t)
        v_hat = v / (1 - ADAM_BETA2**t)
        return params + learning_rate * m_hat / (tf.sqrt(v_hat) + ADAM_EPSILON), m, v

    def fn(
        params: np.ndarray, aux: np.ndarray, schedule: np.ndarray, steps: int, learning_rate: float
    ) -> np.ndarray:
        p = tf.convert_to_tensor(params, tf.float32)
        m = tf.zeros_like(p)
        v = tf.zeros_like(p)
        aux_t = tf.convert_to_tensor(aux)
        lr = tf.constant(float(learning_rate), tf.float32)
        rows = tf.convert_to_tensor(schedule, tf.float32)
        for i in range(int(steps)):
            t = tf.constant(float(i + 1), tf.float32)
            p, m, v = step(p, m, v, t, aux_t, rows[i], lr)
        return p.numpy()

    fn.concrete = step  # type: ignore[attr-defined]  # as in make_value_and_grad
    return fn
