"""JAX implementation of the backend gradient layer (stateless calls, jitted)."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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
        (loss, outputs), grad = step(x_wrt, arrays, trainable, non_trainable, aux_a)
        return float(loss), [np.asarray(o) for o in outputs], np.asarray(grad)

    return fn


def make_forward(model: Any) -> Any:
    @jax.jit
    def forward(
        trainable: list[jax.Array], non_trainable: list[jax.Array], inputs: list[jax.Array]
    ) -> list[jax.Array]:
        return _call(model, trainable, non_trainable, inputs if len(inputs) > 1 else inputs[0])

    def fn(inputs: list[np.ndarray]) -> list[np.ndarray]:
        trainable, non_trainable = _state(model)
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
