"""What one ``cc.filter_patterns`` call did, beside its patterns: the dead starts it
restarted, and what each returned array was computed from.

**Dead start.** A ReLU channel that is zero everywhere on the start image has a zero
gradient: the chapter's step (the gradient over its L2 norm) is then zero and the
ascent never moves, returning the start image as the "pattern". The chapter's start is
low-contrast noise around grey (``[0.4, 0.6]`` of the range), which a channel with a
large negative bias never fires on. Such a filter is detected after the ascent (its
pattern left the start's range nowhere and its channel is constant on it) and
restarted, up to :data:`MAX_RESTARTS` times, from noise over the whole range drawn from
another seed: more contrast fires more channels, and the pre-activation (the other way
out) is not a layer of every model (a fused ``Conv2D(activation="relu")`` has none).
The robust ascent needs no restart: its start spans the range (``fviz.INIT_STD``) and
its TV penalty moves even a dead channel's image.

**Registry.** Each array ``filter_patterns`` returned is remembered by its id (weakly:
the entry leaves with the array) with its model, layer, filters and note, so that
``convviz.check(name, patterns, images=...)`` takes their response record without
being told them again (:func:`pattern_call`), and :func:`pattern_note` says what
happened.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

# Restarts of a dead filter before it is given up (and named in the note): each draws
# a new start; a channel that no full-range noise fires in 3 draws is dead for the
# images the model can see, not for this start.
MAX_RESTARTS = 3

_CALLS: dict[int, tuple[Any, Any, str, Any, str]] = {}


def remember(patterns: np.ndarray, call: tuple[Any, str, Any, str]) -> np.ndarray:
    """Keep ``(model, layer, filters, note)`` for ``patterns`` while it lives; return it."""
    _CALLS[id(patterns)] = (weakref.ref(patterns), *call)
    weakref.finalize(patterns, _CALLS.pop, id(patterns), None)
    return patterns


def pattern_call(patterns: Any) -> tuple[Any, str, Any] | None:
    """``(model, layer, filters)`` an array returned by ``filter_patterns`` was computed
    from (while that array lives), else None: ``pattern_call(p)[1:]`` is
    ``("conv1", [0, 2])`` after ``p = cc.filter_patterns(model, "conv1", [0, 2])``."""
    entry = _CALLS.get(id(patterns))
    if entry is None or entry[0]() is not patterns:
        return None
    return entry[1], entry[2], entry[3]


def pattern_note(patterns: Any) -> str:
    """What happened in the call that returned ``patterns`` (a dead start restarted,
    or given up); ``""`` when nothing did, or for an array it did not return.

    Example:
        >>> p = cc.filter_patterns(model, "conv", steps=10)
        >>> pattern_note(p)
        'filter 1: dead start (its channel is constant on the start image: zero gradient); restarted from full-range noise (restart 1)'
    """
    entry = _CALLS.get(id(patterns))
    return entry[4] if entry is not None and entry[0]() is patterns else ""


def chapter_batches(
    ascent: Callable[..., np.ndarray],
    indices: list[int],
    start: np.ndarray,
    channels_first: bool,
    run: tuple[int, float, int, Any],
) -> np.ndarray:
    """The chapter's ascent (``ascent(images, aux, steps, lr)``, compiled per model and
    layer) of ``indices`` from ``start`` (``(H, W, C)``), ``batch`` filters at a time.

    ``run`` is ``(steps, learning_rate, batch, progress)``."""
    steps, lr, batch_size, progress = run
    height, width, channels = start.shape
    if channels_first:
        start = np.ascontiguousarray(np.transpose(start, (2, 0, 1)))
    total = len(indices)
    batch = int(batch_size)  # the caller's: a restart of fewer filters pads to it
    out = np.empty((total, height, width, channels), np.float32)
    for begin in range(0, total, batch):
        chunk = indices[begin : begin + batch]
        # Pad the last batch (repeating its last index) so that it runs the program
        # already compiled for this batch size; padded results are dropped.
        aux = np.asarray(chunk + [chunk[-1]] * (batch - len(chunk)), np.int32)
        images = np.broadcast_to(start, (batch, *start.shape)).copy()
        result = ascent(images, aux, int(steps), lr)[: len(chunk)]
        if channels_first:
            result = np.transpose(result, (0, 2, 3, 1))
        out[begin : begin + len(chunk)] = result
        if progress is not None:
            progress(begin + len(chunk), total)
    return out


def _dead(model: Any, layer: str, patterns: np.ndarray, indices: list[int], border: int) -> Any:
    """Which patterns are dead starts: still inside the start's range everywhere (a
    moving ascent leaves it) and their channel constant inside the border."""
    from .activations import activations

    acts = activations(model, patterns, layer)[layer]
    inner = (
        acts[:, border:-border, border:-border, :] if min(acts.shape[1:3]) > 2 * border else acts
    )
    picked = inner[np.arange(len(indices)), :, :, np.asarray(indices)]
    return np.ptp(picked.reshape(len(indices), -1), axis=1) == 0


def restart_dead(
    model: Any,
    layer: str,
    indices: list[int],
    out: np.ndarray,
    compute: Callable[[list[int], int], np.ndarray],
    border: int,
    start_range: tuple[float, float],
) -> tuple[np.ndarray, str]:
    """Restart each dead-start filter of ``out`` (see the module docstring).

    Args:
        model, layer: the model and layer of the patterns.
        indices: the filter of each pattern.
        out: ``(F, H, W, C)`` the patterns.
        compute: ``compute(filters, restart)`` -> their patterns from restart number
            ``restart`` (>= 1: another seed, noise over the whole range).
        border: the loss's border (pixels of the map left out).
        start_range: the values the first start spans; a pattern still inside it
            everywhere may not have moved (the others are not checked).

    Returns:
        ``(patterns, note)``: the note names each restarted filter and how it ended
        (:func:`pattern_note` returns it); ``""`` when nothing was dead.
    """
    lo, hi = start_range
    still = [i for i in range(len(indices)) if out[i].min() >= lo and out[i].max() <= hi]
    if not still:
        return out, ""
    flat = _dead(model, layer, out, indices, border)
    dead = [i for i in still if flat[i]]
    notes = []
    for restart in range(1, MAX_RESTARTS + 1):
        if not dead:
            break
        # Judged among all the patterns: one forward shape per call (one compile on JAX).
        trial = out.copy()
        trial[dead] = compute([indices[i] for i in dead], restart)
        alive = ~_dead(model, layer, trial, indices, border)
        for i in dead:
            if alive[i]:
                out[i] = trial[i]
                notes.append((indices[i], f"restarted from full-range noise (restart {restart})"))
        dead = [i for i in dead if not alive[i]]
    notes += [
        (indices[i], f"no start of {MAX_RESTARTS} restarts fires it: the start image is returned")
        for i in dead
    ]
    if not notes:
        return out, ""
    note = "; ".join(
        f"filter {f}: dead start (its channel is constant on the start image: zero "
        f"gradient); {what}"
        for f, what in sorted(notes)
    )
    return out, note


__all__ = [
    "MAX_RESTARTS",
    "chapter_batches",
    "pattern_call",
    "pattern_note",
    "remember",
    "restart_dead",
]
