"""The map structure of a flattened graph: which records hold a spatial map.

Pure: it reads :class:`convviz_check.graph.LayerRecord` lists (their output specs and
``parents``) and imports no other package module, so that :mod:`convviz_check.graph`
and :mod:`convviz_check.graph.targets` can both use it. The rule follows tensors, not
the ancestry of a layer:

- A record's output is *pooled* when it comes from global pooling alone: a global
  pooling layer (``GlobalAveragePooling2D``, ``GlobalMaxPooling2D``..., with or without
  ``keepdims``), another library's pooling layer that turns a larger map into a 1x1
  one, a ``keras.ops`` mean/max/min/sum over both spatial axes of a 4-D tensor, or an
  operation all of whose inputs are pooled (a ``Reshape`` to ``(1, 1, C)``, the 1x1
  convolutions of a squeeze-and-excitation branch, a classifier's Dense).
- A record's output is a *map* when it is 4-D and not pooled. The ``Multiply`` that
  scales a map by a squeeze-and-excitation branch reads a map, so it is a map again:
  the global pooling inside such a block does not end the spatial part of the network.
- A record is *after the head's pooling* when the model's (first) output depends on
  it and no map downstream of it (itself included) reaches that output: the global
  pooling or ``Flatten`` of the classifier head and everything after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# keras.ops reductions, as operation classes (``keras.ops.mean`` ... inside a graph).
_REDUCTIONS = ("Mean", "Max", "Min", "Sum")


@dataclass(frozen=True)
class Structure:
    """Per flattened record (same order as ``flatten(model).records``)."""

    pooled: tuple[bool, ...]
    is_map: tuple[bool, ...]
    feeds_head: tuple[bool, ...]  # the model's first output depends on it (head included)
    after_head_pooling: tuple[bool, ...]
    children: tuple[tuple[int, ...], ...]
    head: int


def _spatial_axes(record: Any) -> tuple[int, int]:
    return (2, 3) if record.data_format == "channels_first" else (1, 2)


def _hw(record: Any) -> tuple:
    shape = record.output_shape
    return shape[2:4] if record.data_format == "channels_first" else shape[1:3]


def _is_global_pooling(record: Any, parent: Any) -> bool:
    """A global pooling layer, another library's pooling layer that turns a larger map
    into a 1x1 one (an adaptive pooling such as keras-hub's ``SelectAdaptivePool2d``),
    or a keras.ops reduction over both spatial axes of a 4-D input (``parent``: the
    record it reads, or None)."""
    name = record.class_name
    if name.startswith("Global"):
        return True
    if parent is None or not parent.is_spatial:
        return False
    if "Pool" in name and not record.is_pool and record.is_spatial:
        return _hw(record) == (1, 1) and _hw(parent) != (1, 1)
    if name not in _REDUCTIONS:
        return False
    axis = getattr(record.operation, "axis", None)
    if axis is None:
        return True
    axes = {int(a) % 4 for a in (axis if isinstance(axis, list | tuple) else (axis,))}
    return set(_spatial_axes(parent)) <= axes


def compute(records: Sequence[Any], head: int) -> Structure:
    """The structure of flattened ``records`` (depth order, parents first) whose
    record ``head`` produces the model's first output."""
    n = len(records)
    pooled: list[bool] = []
    for r in records:
        parent = records[r.parents[0]] if r.parents else None
        pooled.append(
            _is_global_pooling(r, parent)
            or (bool(r.parents) and not r.reads_input and all(pooled[j] for j in r.parents))
        )
    is_map = [r.is_spatial and not p for r, p in zip(records, pooled, strict=True)]
    children: list[list[int]] = [[] for _ in range(n)]
    for i, r in enumerate(records):
        for j in r.parents:
            children[j].append(i)
    feeds = [False] * n
    feeds[head] = True
    for i in range(head, -1, -1):  # parents come before their children
        if feeds[i]:
            for j in records[i].parents:
                feeds[j] = True
    reaches = [False] * n  # a map downstream of it (itself included) feeds the head
    for i in range(n - 1, -1, -1):
        reaches[i] = (is_map[i] and feeds[i]) or any(reaches[c] for c in children[i])
    after = [feeds[i] and not reaches[i] for i in range(n)]
    return Structure(
        pooled=tuple(pooled),
        is_map=tuple(is_map),
        feeds_head=tuple(feeds),
        after_head_pooling=tuple(after),
        children=tuple(tuple(c) for c in children),
        head=head,
    )


def default_activation_indices(records: Sequence[Any], s: Structure) -> list[int]:
    """2-D convolution and 2-D (non-global) pooling records whose output is a map
    before the head's pooling; where there is none (convolutions inside custom
    layers), every map before the head's pooling."""
    maps = [i for i in range(len(records)) if s.is_map[i] and not s.after_head_pooling[i]]
    convs = [i for i in maps if records[i].is_conv or records[i].is_pool]
    return convs or maps


__all__ = ["Structure", "compute", "default_activation_indices"]
