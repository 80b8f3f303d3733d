"""TensorFlow implementation of the backend gradient layer."""

from __future__ import annotations

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
    def step(inputs, aux):
        with tf.GradientTape() as tape:
            tape.watch(inputs[wrt])
            outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
            outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
            loss = loss_fn(outputs, aux)
        return loss, outputs, tape.gradient(loss, inputs[wrt])

    def fn(inputs: list[np.ndarray], aux: np.ndarray | None = None):
        tensors = [tf.convert_to_tensor(x) for x in inputs]
        aux_t = tf.convert_to_tensor(np.zeros((), np.float32) if aux is None else aux)
        loss, outputs, grad = step(tensors, aux_t)
        return float(loss.numpy()), [o.numpy() for o in outputs], grad.numpy()

    fn.concrete = step  # exposed for tests that count traces
    return fn


def make_ascent(model: Any, loss_fn: Any) -> Any:
    @tf.function(reduce_retracing=True)
    def run(image, aux, steps, learning_rate):
        def body(i, img):
            with tf.GradientTape() as tape:
                tape.watch(img)
                loss = loss_fn([model(img, training=False)], aux)
            g = _l2_normalize_per_sample(tape.gradient(loss, img))
            return i + 1, img + learning_rate * g

        _, out = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), image))
        return out

    def fn(image: np.ndarray, aux: np.ndarray, steps: int, learning_rate: float) -> np.ndarray:
        out = run(
            tf.convert_to_tensor(image, tf.float32),
            tf.convert_to_tensor(aux),
            tf.constant(int(steps), tf.int32),
            tf.constant(float(learning_rate), tf.float32),
        )
        return out.numpy()

    fn.concrete = run
    return fn


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
