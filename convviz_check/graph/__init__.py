"""Graph layer: flatten nested functional models, name their layers, rewire for gradients.

Shared by activations and Grad-CAM. A Keras functional graph is replayed node by node;
nested functional or Sequential models are replayed *inside* the walk instead of being
called as one opaque layer, so every inner layer output becomes addressable.

Two replays, one walker (:func:`_replay`):
- metadata (:func:`flatten`): each op's ``compute_output_spec`` on symbolic specs, so
  the user's layers gain no new nodes;
- execution (:class:`Probe`, built by :func:`submodel` and :func:`rewire`): a
  ``keras.Model`` whose ``call`` replays the graph on real tensors and returns the
  requested inner outputs. Building a new Functional instead fails on nested graphs
  whose layer names collide ("conv" in the backbone and in the head: Keras requires
  unique operation names), and a Functional re-calls the original head layer with its
  softmax, so an activation swapped at build time would be lost (measured: logits came
  back summing to 1 on all three backends). The probe tracks the source model, so its
  variables are the source's (JAX passes them as jit arguments, not constants).

Layer names: the plain layer name when it is unique over the whole nested graph, else
the ``/``-joined path of enclosing model names (``outer/inner``). A layer called more
than once gets ``:1``, ``:2``... on its later calls.

Rewiring: :func:`rewire` builds ``[*inputs, zero] -> [A + zero, head]`` where ``A`` is
a named layer's output. The gradient of the head w.r.t. ``zero`` equals the gradient
w.r.t. ``A`` for *any* graph, including skip connections that jump over ``A`` (every
consumer of ``A`` sees ``A + zero``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import keras_private
from ..errors import GraphError
from . import structure as graph_structure
from .structure import Structure

CONV_CLASSES = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D")
POOL_CLASSES = ("MaxPooling2D", "AveragePooling2D")
BYPASSABLE_ACTIVATIONS = ("softmax", "sigmoid")

_CACHE_ATTRIBUTE = "_convviz_cache"
_FALLBACK_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_cache(model: Any, namespace: str) -> dict:
    """A dict for ``namespace`` that lives exactly as long as ``model``.

    Stored on the model itself (``object.__setattr__``, so Keras does not track it as a
    sublayer or weight): cached values may reference the model (a probe tracks its
    source, a FlatGraph names it) and the garbage collector frees the cycle with the
    model. A ``WeakKeyDictionary`` keyed by the model would keep such a model alive
    forever (its values hold the key strongly: measured, the zoo's 54 models stayed in
    memory, 13 GB). Objects that take no attribute fall back to a WeakKeyDictionary.
    """
    try:
        caches = model.__dict__.get(_CACHE_ATTRIBUTE)
        if caches is None:
            caches = {}
            object.__setattr__(model, _CACHE_ATTRIBUTE, caches)
    except (AttributeError, TypeError):
        caches = _FALLBACK_CACHE.setdefault(model, {})
    return caches.setdefault(namespace, {})


@dataclass
class LayerRecord:
    """One leaf operation of the flattened graph, in depth (topological) order."""

    name: str
    path: tuple[str, ...]
    operation: Any
    class_name: str
    output: Any  # KerasTensor of the flattened graph
    data_format: str  # "channels_last" or "channels_first" (meaningful for 4-D outputs)
    # Indices of the records whose outputs this call reads (ascending, deduplicated),
    # and whether it also reads a model input directly.
    parents: tuple[int, ...] = ()
    reads_input: bool = False

    @property
    def output_shape(self) -> tuple:
        return tuple(self.output.shape)

    @property
    def is_spatial(self) -> bool:
        return len(self.output.shape) == 4

    @property
    def is_conv(self) -> bool:
        return self.class_name in CONV_CLASSES

    @property
    def is_pool(self) -> bool:
        return self.class_name in POOL_CLASSES


@dataclass
class FlatGraph:
    """A model's graph with nested models flattened; layers by name, in depth order."""

    model: Any
    inputs: list
    outputs: list
    records: list[LayerRecord]
    by_name: dict[str, LayerRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_name = {r.name: r for r in self.records}

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def record(self, name: str) -> LayerRecord:
        try:
            return self.by_name[name]
        except KeyError:
            raise GraphError(
                f"Unknown layer. Received: layer={name!r}. Expected one of the model's "
                f"layers: {self.names}"
            ) from None

    def head_record(self) -> LayerRecord:
        """The operation that produces the model's (first) output."""
        out = self.outputs[0]
        for r in reversed(self.records):
            if r.output is out:
                return r
        raise GraphError("The model output is not produced by any layer (an input-only model?).")


# Keras exports no public name for the class of functional models, and telling a graph
# model from a subclassed one needs it (see keras_private).
def _functional_class() -> type:
    return keras_private.functional_class()


def is_plain_functional(model: Any) -> bool:
    """True when ``model``'s class is Keras' own functional or Sequential class (not a
    subclass such as a keras-hub task model)."""
    import keras

    return type(model) in (_functional_class(), keras.Sequential, keras.Model)


def functional_of(model: Any) -> Any:
    """The Functional graph behind ``model`` (Sequential included); refuses subclassed
    models without a graph."""
    import keras

    Functional = _functional_class()
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise GraphError(
                f"Sequential model {model.name!r} is not built: it has no graph yet. "
                "Expected a model built with an input shape (keras.Input(...) as first "
                "layer, or model.build(input_shape))."
            )
        return fn
    if isinstance(model, Functional):
        return model
    if isinstance(model, keras.Model):
        raise GraphError(
            f"Subclassed models without a functional graph are not supported. Received: "
            f"model of class {type(model).__name__!r}. Expected a functional or Sequential "
            "Keras model (keras.Model(inputs, outputs))."
        )
    raise GraphError(f"Expected a keras.Model. Received: object of type {type(model).__name__!r}.")


def _is_nested_model(op: Any) -> bool:
    import keras

    return isinstance(op, _functional_class() | keras.Sequential)


# A hook sees each leaf op call: (path, op, args, kwargs, call) -> output tensor(s).
Hook = Callable[[tuple[str, ...], Any, tuple, dict, Callable[[], Any]], Any]


def _nested_inputs(inner: Any, args: tuple, kwargs: dict) -> list:
    """The flat inputs of a nested model's replay.

    ``_standardize_inputs`` converts each input with ``convert_to_tensor``, which makes
    a new symbolic tensor even when nothing changes; the tensor given is kept instead
    wherever shape and dtype already match, so that the flattened graph stays connected
    across the nested model's boundary (layers before it stay its inputs' producers).
    """
    from keras import tree

    if not args:
        return tree.flatten(kwargs)
    flat_in = inner._standardize_inputs(args[0])
    if isinstance(args[0], dict):
        return flat_in
    given = tree.flatten(args[0])
    if len(given) != len(flat_in):
        return flat_in
    return [
        g
        if n is not None
        and g is not None
        and tuple(g.shape) == tuple(n.shape)
        and g.dtype == n.dtype
        else n
        for g, n in zip(given, flat_in, strict=True)
    ]


def _replay(model: Any, inputs: Sequence[Any], hook: Hook, prefix: tuple[str, ...]) -> list:
    """Replay ``model``'s graph on ``inputs`` (flat list); returns its flat outputs."""
    from keras import tree

    fn = functional_of(model)
    tensors = {id(x): y for x, y in zip(fn.inputs, inputs, strict=True)}
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        for node in fn._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            if any(id(x) not in tensors for x in node.input_tensors):
                continue  # not reachable from these inputs (as Keras does)
            args, kwargs = node.arguments.fill_in(tensors)
            path = (*prefix, op.name)
            if _is_nested_model(op):
                inner = functional_of(op)
                flat_in = _nested_inputs(inner, args, kwargs)
                outputs = _replay(inner, flat_in, hook, path)
                outputs = tree.pack_sequence_as(inner._outputs_struct, outputs)
            elif (parts := keras_private.encoder_parts(op)) is not None:
                # A keras-hub encoder holding every transformer block: each block is a
                # record; only its token output is replayed (nothing reads the others).
                tensors[id(node.outputs[0])] = _replay_parts(parts, args[0], hook, path)
                continue
            else:
                outputs = hook(path, op, args, kwargs, _caller(op, args, kwargs))
            for ref, new in zip(node.outputs, tree.flatten(outputs), strict=True):
                tensors[id(ref)] = new
    return [tensors[id(x)] for x in fn.outputs]


def _replay_parts(parts: list, x: Any, hook: Hook, prefix: tuple[str, ...]) -> Any:
    """The token sequence ``x`` through ``parts`` (layers called one after another),
    each call seen by ``hook``; a part's extra outputs (a block's scores) are dropped."""
    from keras import tree

    for part in parts:
        x = tree.flatten(hook((*prefix, part.name), part, (x,), {}, _caller(part, (x,), {})))[0]
    return x


def _caller(op: Any, args: tuple, kwargs: dict) -> Callable[[], Any]:
    """``op(*args, **kwargs)``, deferred (a hook may call it, or not)."""

    def call() -> Any:
        return op(*args, **kwargs)

    return call


def _qualify(paths: list[tuple[str, ...]], root: str) -> list[str]:
    """Plain name when unique over the nested graph, ``outer/inner`` path otherwise (a
    top-level layer's outer name is the model's own name); repeated calls of one layer
    get ``:1``, ``:2``..."""
    leaf_count: dict[str, int] = {}
    distinct = {p for p in paths}
    for p in distinct:
        leaf_count[p[-1]] = leaf_count.get(p[-1], 0) + 1
    names: list[str] = []
    seen: dict[str, int] = {}
    for p in paths:
        base = p[-1] if leaf_count[p[-1]] == 1 else "/".join((root, *p) if len(p) == 1 else p)
        n = seen.get(base, 0)
        seen[base] = n + 1
        names.append(base if n == 0 else f"{base}:{n}")
    return names


def flatten(model: Any) -> FlatGraph:
    """Flatten ``model`` (cached per model object)."""
    cached = model_cache(model, "graph").get("flat")
    if cached is not None:
        return cached
    import keras

    fn = functional_of(model)
    default_format = keras.config.image_data_format()
    calls: list[tuple[tuple[str, ...], Any, Any, str | None]] = []
    layout: dict[int, str | None] = {}
    producer: dict[int, int] = {}  # id(output tensor) -> record index; `calls` keeps them alive
    links: list[tuple[tuple[int, ...], bool]] = []

    def hook(path: tuple[str, ...], op: Any, args: tuple, kwargs: dict, call: Any) -> Any:
        out = op.compute_output_spec(*args, **kwargs)
        tensors = [
            a for a in keras.tree.flatten((args, kwargs)) if isinstance(a, keras.KerasTensor)
        ]
        fmt = getattr(op, "data_format", None)
        if fmt not in ("channels_first", "channels_last"):
            firsts = [a for a in tensors if id(a) in layout]
            fmt = layout[id(firsts[0])] if firsts else None
        parents = sorted({producer[id(a)] for a in tensors if id(a) in producer})
        links.append((tuple(parents), any(id(a) not in producer for a in tensors)))
        for o in keras.tree.flatten(out):
            layout[id(o)] = fmt
            producer[id(o)] = len(calls)
        calls.append((path, op, out, fmt))
        return out

    inputs = [keras.KerasTensor(tuple(x.shape), dtype=x.dtype) for x in fn.inputs]
    outputs = _replay(fn, inputs, hook, ())
    first_format = next((f for *_, f in calls if f is not None), default_format)
    records = []
    names = _qualify([c[0] for c in calls], model.name)
    for name, (path, op, out, fmt), (parents, reads_input) in zip(names, calls, links, strict=True):
        records.append(
            LayerRecord(
                name=name,
                path=path,
                operation=op,
                class_name=type(op).__name__,
                output=keras.tree.flatten(out)[0],
                data_format=fmt or first_format,
                parents=parents,
                reads_input=reads_input,
            )
        )
    graph = FlatGraph(model=model, inputs=inputs, outputs=outputs, records=records)
    model_cache(model, "graph")["flat"] = graph
    return graph


def conv_layers(model: Any) -> list[str]:
    """2-D convolution layers (Conv2D, SeparableConv2D, DepthwiseConv2D), depth order,
    nested models included, named as :func:`flatten` names them.

    Every one of them, including a 1x1 convolution that acts as a dense layer after the
    head's global pooling (MobileNetV3's ``logits``) and squeeze-and-excitation convs:
    filter patterns refuse those (no spatial map before the head). For a layer that
    fits filter patterns, see ``convviz_check.graph.targets.default_filters_layer``.
    """
    return [r.name for r in flatten(model).records if r.is_conv and r.is_spatial]


def structure(model: Any) -> Structure:
    """The map structure of ``model``'s flattened graph (cached with the model; the
    rule: :mod:`convviz_check.graph.structure`)."""
    cache = model_cache(model, "graph")
    if "structure" not in cache:
        flat = flatten(model)
        cache["structure"] = graph_structure.compute(
            flat.records, flat.records.index(flat.head_record())
        )
    return cache["structure"]


def default_activation_layers(model: Any) -> list[str]:
    """The default layers of ``activations``: 2-D convolution and 2-D (non-global)
    pooling layers whose output is a spatial map before the head's pooling, depth order
    (the 1x1 convolutions of squeeze-and-excitation branches and of a pooled head are
    left out). A model whose convolutions all sit inside custom layers (keras-hub MiT,
    MobileNet blocks) has none: then every spatial map before the head's pooling. The
    rule: :mod:`convviz_check.graph.structure`."""
    records = flatten(model).records
    indices = graph_structure.default_activation_indices(records, structure(model))
    return [records[i].name for i in indices]


def spatial_layers(model: Any) -> list[str]:
    """Every layer with a 4-D output, depth order (squeeze-and-excitation 1x1 tensors
    and a pooled head's 1x1 convolutions included: see
    :func:`convviz_check.graph.targets.map_layers` for the spatial maps alone)."""
    return [r.name for r in flatten(model).records if r.is_spatial]


_PROBE_CLASS: Any = None


class _ReplayDone(Exception):
    """Raised by the Probe's hook once its last wanted output exists: the records are in
    topological order, so nothing after it is needed. Compiled backends would prune
    the rest anyway; eager torch would run it (measured, Xception-41 at 200 px up to
    block3_sepconv1: the whole network ran on every ascent step)."""


def _probe_class() -> type:
    """The Probe model class (defined lazily: keras must not load at import)."""
    global _PROBE_CLASS
    if _PROBE_CLASS is not None:
        return _PROBE_CLASS
    import keras

    class Probe(keras.Model):
        """Replays a model's graph at call time and returns inner layer outputs.

        ``outputs``: indices of flattened records whose outputs are returned, in order.
        The replay stops after the last of those records. With ``input_of`` (one
        record) the probe returns that record's first positional *input* instead. With ``zero_at`` (a record
        index) the probe takes ``[*inputs, zero]`` and every consumer of that layer sees
        ``output + zero``. With ``bypass`` (a record index) that layer runs with a linear activation (swapped inside ``call``, i.e. at trace
        time under TF/JAX and on every call under torch), or is skipped if it is an
        activation-only op.
        """

        def __init__(
            self,
            source: Any,
            n_records: int,
            outputs: Sequence[int],
            zero_at: int | None = None,
            bypass: int | None = None,
            input_of: bool = False,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self._input_of = input_of
            self.source = source
            self._n_records = n_records
            self._out_idx = list(outputs)
            self._zero_at = zero_at
            self._bypass = bypass
            self.built = True

        def call(self, inputs: Any, training: bool = False) -> Any:
            flat = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
            zero = flat.pop() if self._zero_at is not None else None
            values: dict[int, Any] = {}
            counter = iter(range(self._n_records))
            last = max(self._out_idx)

            def hook(path: tuple[str, ...], op: Any, args: tuple, kwargs: dict, call: Any) -> Any:
                i = next(counter)
                if self._input_of and i == last:
                    values[i] = args[0]
                    raise _ReplayDone
                if i == self._bypass:
                    if type(op).__name__ in _ACTIVATION_OPS:
                        out = args[0]
                    else:
                        saved = op.activation
                        op.activation = keras.activations.linear
                        try:
                            out = call()
                        finally:
                            op.activation = saved
                else:
                    out = call()
                if i == self._zero_at:
                    parts = keras.tree.flatten(out)
                    parts[0] = keras.ops.add(parts[0], zero)
                    out = keras.tree.pack_sequence_as(out, parts)
                # A record stands for its operation's first output (see flatten).
                values[i] = keras.tree.flatten(out)[0]
                if i == last:
                    raise _ReplayDone
                return out

            try:
                _replay(functional_of(self.source), flat, hook, ())
            except _ReplayDone:
                pass
            outs = [values[i] for i in self._out_idx]
            return outs if len(outs) > 1 else outs[0]

    _PROBE_CLASS = Probe
    return Probe


def _probe(
    model: Any,
    outputs: Sequence[int],
    zero_at: int | None = None,
    bypass: int | None = None,
    input_of: bool = False,
) -> Any:
    n = len(flatten(model).records)
    return _probe_class()(
        model,
        n,
        outputs,
        zero_at=zero_at,
        bypass=bypass,
        input_of=input_of,
        name=f"{model.name}_probe",
    )


def submodel(model: Any, layers: Sequence[str]) -> Any:
    """A model ``inputs -> [output of each named layer]`` (a single tensor for one
    layer), sharing ``model``'s weights; cached per (model, layer names)."""
    graph = flatten(model)
    key = ("submodel", tuple(layers))
    per_model = model_cache(model, "models")
    if key not in per_model:
        idx = [graph.records.index(graph.record(n)) for n in layers]
        per_model[key] = _probe(model, idx)
    return per_model[key]


def layer_input_model(model: Any, layer: str) -> Any:
    """A model ``inputs -> the tensor fed to layer`` (its first positional argument),
    sharing ``model``'s weights; cached per (model, layer)."""
    graph = flatten(model)
    key = ("input_of", layer)
    per_model = model_cache(model, "models")
    if key not in per_model:
        per_model[key] = _probe(model, [graph.records.index(graph.record(layer))], input_of=True)
    return per_model[key]


# Final operations whose output is their input passed through an activation: bypassing
# them means skipping them (``keras.layers.Softmax`` and the ``keras.ops`` softmax and
# sigmoid operations share these class names).
_ACTIVATION_OPS = {"Activation": None, "Softmax": "softmax", "Sigmoid": "sigmoid"}


def head_activation(model: Any) -> str:
    """Name of the final activation of the model's head: ``"softmax"``, ``"sigmoid"``,
    ``"linear"`` or another name (then the head cannot be bypassed)."""
    head = flatten(model).head_record()
    op = head.operation
    bypassed = _ACTIVATION_OPS.get(head.class_name)
    if bypassed:
        return bypassed
    act = getattr(op, "activation", None)
    if act is None:
        return "linear"
    name = getattr(act, "__name__", str(act))
    return name


@dataclass
class Rewired:
    """``model([*inputs, zero]) -> [A + zero, head]``; ``zero_shape`` excludes batch."""

    model: Any
    layer: str
    zero_shape: tuple
    head_kind: str  # "logit" (pre-activation) or "output"
    data_format: str


def rewire(model: Any, layer: str, bypass_head_activation: bool = False) -> Rewired:
    """Rewire ``model`` so that a zero input is added to ``layer``'s output (cached).

    With ``bypass_head_activation`` the second output is the head's pre-activation
    (logit): the final Dense/Conv's activation is replaced by linear, or a final
    Activation/Softmax layer is skipped. Raises GraphError where that is impossible.
    """
    key = ("rewire", layer, bool(bypass_head_activation))
    per_model = model_cache(model, "models")
    if key in per_model:
        return per_model[key]
    graph = flatten(model)
    target = graph.record(layer)
    head = graph.head_record()
    if target is head:
        raise GraphError(
            f"The Grad-CAM target layer cannot be the model's output layer. Received: "
            f"layer={layer!r}. Expected a spatial layer before the head."
        )
    act = head_activation(model)
    if bypass_head_activation and act not in (*BYPASSABLE_ACTIVATIONS, "linear"):
        raise GraphError(
            f"Cannot bypass the head's activation to get a logit. Received: final "
            f"activation {act!r} in layer {head.name!r}. Expected softmax, sigmoid or "
            "linear; use score='output'."
        )
    target_i = graph.records.index(target)
    head_i = graph.records.index(head)
    bypass = head_i if (bypass_head_activation and act != "linear") else None
    result = Rewired(
        model=_probe(model, [target_i, head_i], zero_at=target_i, bypass=bypass),
        layer=layer,
        zero_shape=tuple(target.output_shape[1:]),
        head_kind="logit" if (bypass_head_activation or act == "linear") else "output",
        data_format=target.data_format,
    )
    per_model[key] = result
    return result
