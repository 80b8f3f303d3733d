"""Loading a saved model without running its initializers first.

``keras.saving.load_model`` rebuilds the model from its config -- every variable is
created and filled by its initializer (random draws for kernels) -- and then overwrites
every value with the file's. The draws are wasted, and on JAX they are slow: each
initializer of a new shape compiles an XLA program before it runs. Measured
2026-12-01, 2-core CPU, one fresh process each, the bundled models under JAX:
convnet 1.65 -> 0.04 s, tiny Xception 6.09 -> 2.20 s.

:func:`initializers_deferred` creates variables as zeros (NumPy, no framework program)
and remembers the real initializer of each. Every variable the load then assigns is
done. A variable the load leaves alone (none, for a complete file) gets its real
initializer's value when the block ends, so the result is the same model in every case
but one: a *random* initializer of a variable missing from the file draws its numbers
later than it would have, hence other numbers -- a model whose file lacks weights is
broken either way, and Keras reports it.

The swap of ``Variable.__init__`` and ``Variable.assign`` lasts exactly as long as the
block (restored in ``finally``, also when the load raises), and only variables created
by the thread that entered the block are deferred: another thread building a model
meanwhile gets its initializers as usual. A second thread's block waits for the first
(a lock); the same thread may nest blocks (a re-entrant lock: a load that loads another
file inside it), each restoring what it found.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import keras_private

_LOCK = threading.RLock()


def _numpy_dtype(dtype: Any) -> np.dtype | None:
    try:
        return np.dtype(keras_private.standardize_dtype(dtype))
    except (TypeError, ValueError):  # bfloat16 and friends: NumPy has no such dtype
        return None


@contextmanager
def initializers_deferred() -> Iterator[None]:
    """Within the block, variables this thread creates start as zeros; see the module
    docstring. A second thread's block waits; the same thread may nest blocks."""
    try:
        variables = keras_private.variables_module()
        in_stateless_scope = keras_private.in_stateless_scope
        keras_private.in_stateless_scope()  # resolves the private symbol now
    except (
        ImportError,
        AttributeError,
    ):  # pragma: no cover - a Keras that moved these: load as usual
        yield
        return
    cls = variables.Variable
    with _LOCK:
        original_init: Callable[..., None] = cls.__init__
        original_assign: Callable[..., Any] = cls.assign
        owner = threading.get_ident()
        pending: dict[int, tuple[Any, Callable[..., Any]]] = {}

        def __init__(self: Any, initializer: Any, shape: Any = None, *args: Any, **kw: Any) -> None:
            if isinstance(initializer, str):
                import keras

                initializer = keras.initializers.get(initializer)
            dtype = kw.get("dtype", args[0] if args else None)
            np_dtype = _numpy_dtype(dtype)
            if (
                threading.get_ident() != owner
                or not callable(initializer)
                or shape is None
                or np_dtype is None
                or in_stateless_scope()
            ):
                original_init(self, initializer, shape, *args, **kw)
                return

            def zeros(shape: Any, dtype: Any = None, **_: Any) -> np.ndarray:
                return np.zeros(tuple(shape), dtype=np_dtype)

            original_init(self, zeros, shape, *args, **kw)
            pending[id(self)] = (self, initializer)

        def assign(self: Any, value: Any) -> Any:
            result = original_assign(self, value)
            pending.pop(id(self), None)
            return result

        cls.__init__ = __init__
        cls.assign = assign
        try:
            yield
        finally:
            cls.__init__ = original_init
            cls.assign = original_assign
            for variable, initializer in pending.values():
                variable.assign(initializer(variable.shape, dtype=variable.dtype))
