"""Plain layer calls inside our torch calls: ``layer.call`` without ``Layer.__call__``.

Our models replay a graph (:func:`convviz_check.graph._replay`) and call every layer
through ``Layer.__call__``, which on every call converts and checks the inputs, binds
the call signature, resolves ``training`` from the call context, looks for masks,
enters name and autocast scopes and passes through ``torch.nn.Module.__call__`` and
``Operation.__call__``: about 0.1 ms of Python per layer on this CPU. Under TensorFlow
and JAX that runs once, while tracing; eager torch pays it on every forward. Measured
2026-12-08 (2-core CPU, 1 thread, warm ``cc.cam`` Grad-CAM of 1 image of a 64x64x1
mini-Xception, 45 layers, interleaved medians): 13.8 ms through ``Layer.__call__``,
10.0 ms through ``layer.call``; under cProfile the call machinery was 24% of the call
and Keras' tree utilities (mostly called by it) another 16%, the torch kernels 17%.

Inside :class:`PlainCalls` (entered by ``backends.torch`` around its forwards, for the
calling thread only) a replayed layer runs ``layer.call(*args, **kwargs)`` directly
where that is exactly what ``Layer.__call__`` would run:

- the layer is built, not quantized or rematerialized, has no activity regularizer, no
  torch hooks and one dtype for compute and variables (no autocast scope to enter), and
  its ``call`` takes ``training`` only as its context argument (passed as ``False``,
  what the call context of our ``model(x, training=False)`` resolves to, unless the
  graph passes its own);
- every tensor argument is already a torch tensor of the layer's compute dtype (nothing
  to convert) without a Keras mask, and the layer cannot create one from no mask
  (``compute_mask`` is ``Layer``'s, a merge layer's or ``Concatenate``'s);
- a ``mask`` parameter of ``call`` defaults to ``None`` (what ``__call__`` fills in).

Anything else goes through ``Layer.__call__`` as before. The same ``call`` runs on the
same tensors, so results are bit-identical (tests/test_torch_plain_calls.py checks this
per method, and that the plain path was taken).
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import keras
import torch

from .. import keras_private
from ._patch import ScopedPatch

_state = threading.local()
# Per layer: whether its ``call`` takes ``training``, or None (never called plainly).
_plans: weakref.WeakKeyDictionary[Any, bool | None] = weakref.WeakKeyDictionary()


def _mask_free_compute_mask() -> set[Any]:
    """``compute_mask`` implementations that return no mask when given none."""
    layers = keras.layers
    return {layers.Layer.compute_mask, layers.Add.compute_mask, layers.Concatenate.compute_mask}


_MASK_FREE: set[Any] = set()
_MASK_GETTER: list[Any] = []


def _mask_getter() -> Any:
    _MASK_GETTER.append(keras_private.keras_mask_getter())
    return _MASK_GETTER[0]


def _plan(op: Any) -> bool | None:
    """Whether a plainly called ``op`` takes ``training``; None where ``op`` must go
    through ``Layer.__call__`` whatever its inputs (the static part of the rule)."""
    try:
        return _plans[op]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: never plain
        return None
    if not _MASK_FREE:
        _MASK_FREE.update(_mask_free_compute_mask())
    plan: bool | None = None
    params = getattr(op, "call_signature_parameters", None)
    if (
        isinstance(op, keras.layers.Layer)
        and not isinstance(op, keras.Model)
        and type(op).__call__ is keras.layers.Layer.__call__
        and type(op).compute_mask in _MASK_FREE
        and getattr(op, "_call_context_args", None) == {"training"}
        and params is not None
        and not any(p.endswith("_mask") for p in params)
        and ("mask" not in params or inspect.signature(op.call).parameters["mask"].default is None)
    ):
        plan = "training" in params
    _plans[op] = plan
    return plan


_INSTANCE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = tuple(f"_global{name}" for name in _INSTANCE_HOOKS)


def _hooked(owner: Any, names: tuple[str, ...]) -> bool:
    """Whether a torch hook is registered on ``owner`` (a module, or torch's module of
    global hooks), or torch keeps its hooks elsewhere than expected."""
    return any(getattr(owner, name, True) for name in names)


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, list | tuple):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


def _ready(op: Any, args: tuple, kwargs: dict) -> bool:
    """The per-call part of the rule: the layer's state and its inputs."""
    policy = op.dtype_policy
    if (
        not op.built
        or getattr(op, "quantization_mode", None) is not None
        or getattr(op, "_remat_mode", True)
        or op.activity_regularizer is not None
        or policy.compute_dtype != policy.variable_dtype
        or _hooked(op, _INSTANCE_HOOKS)
    ):
        return False
    dtype = policy.compute_dtype
    get_mask = _MASK_GETTER[0] if _MASK_GETTER else _mask_getter()
    one = not kwargs and len(args) == 1 and isinstance(args[0], torch.Tensor)
    for leaf in args if one else _leaves((args, kwargs)):
        if isinstance(leaf, torch.Tensor):
            if leaf.is_floating_point() and str(leaf.dtype)[6:] != dtype:
                return False  # Layer.__call__ would cast it
            if get_mask(leaf) is not None:
                return False
        elif hasattr(leaf, "__array__"):
            return False  # Layer.__call__ would convert it
    return True


def _plain_caller(original: Callable[..., Any]) -> Callable[..., Any]:
    """The replay's deferred ``op(*args, **kwargs)``, plain where the rule allows."""

    def caller(op: Any, args: tuple, kwargs: dict) -> Callable[[], Any]:
        if not getattr(_state, "active", False):
            return original(op, args, kwargs)
        training = _plan(op)
        if training is None:
            return original(op, args, kwargs)

        def call() -> Any:
            if not _ready(op, args, kwargs):
                return op(*args, **kwargs)
            if training and "training" not in kwargs:
                return op.call(*args, training=False, **kwargs)
            return op.call(*args, **kwargs)

        return call

    return caller


_REPLAY_CALLER = ScopedPatch("convviz_check.graph", "_caller", _plain_caller)


class PlainCalls:
    """``with PlainCalls(model):`` plain layer calls in this thread's replays while
    ``model`` is called (re-entrant). Off where ``model`` computes in another dtype than
    its variables (its ``__call__`` enters an autocast scope its layers would inherit)
    or a Keras distribution is set (``Layer.__call__`` lays out its outputs), or a global
    torch module hook is registered (it would see every layer call)."""

    def __init__(self, model: Any) -> None:
        policy = getattr(model, "dtype_policy", None)
        self.wanted = (
            policy is not None
            and policy.compute_dtype == policy.variable_dtype
            and keras.distribution.distribution() is None
            and not _hooked(torch.nn.modules.module, _GLOBAL_HOOKS)
        )

    def __enter__(self) -> PlainCalls:
        _REPLAY_CALLER.__enter__()
        self.saved = getattr(_state, "active", False)
        _state.active = self.wanted and (self.saved or not getattr(_state, "depth", 0))
        _state.depth = getattr(_state, "depth", 0) + 1
        return self

    def __exit__(self, *exc: object) -> None:
        _state.depth -= 1
        _state.active = self.saved
        _REPLAY_CALLER.__exit__(None, None, None)
