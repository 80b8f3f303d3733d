"""Where one warm ``cc.cam`` call on torch spends its time (``bench_torch_peer.py``).

Three views of the same call:

- :func:`split`: wall time per part (timers wrapped around the package's own functions):
  setup before the compiled call, the forward, the backward, the host copies, the
  method rule, normalisation, the layer remark and what is left;
- :func:`categories`: cProfile's own time grouped by who spends it (Keras' layer-call
  machinery, Keras' ops and backend in Python, Keras' tree utilities, torch kernels,
  convviz_check, NumPy); cProfile inflates Python-heavy parts, so read the shares;
- :func:`plain_on_off`: the call with the layers called plainly (the package's torch
  path) against the same call through ``Layer.__call__``, interleaved.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


@contextmanager
def _timers(spans: dict[str, float], targets: dict[str, tuple[Any, str]]) -> Iterator[None]:
    """Wrap each ``targets[label] = (owner, attribute)`` callable with a timer adding its
    wall seconds to ``spans[label]`` (and its first entry time to ``spans[label + '@']``)."""
    saved = []
    for label, (owner, attr) in targets.items():
        original = getattr(owner, attr)

        def timed(*args: Any, _f: Any = original, _label: str = label, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            spans.setdefault(_label + "@", t0)
            try:
                return _f(*args, **kwargs)
            finally:
                spans[_label] = spans.get(_label, 0.0) + time.perf_counter() - t0

        saved.append((owner, attr, original))
        setattr(owner, attr, timed)
    try:
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def split(model: Any, images: np.ndarray, layer: str, method: str) -> dict[str, float]:
    """Where one warm ``cc.cam`` call of a gradient method spends its wall time (seconds
    per part; ``passes``: the forward/backward passes it ran)."""
    import torch

    import convviz_check as cc
    from convviz_check.backends import torch as backend
    from convviz_check.explain import cam as cam_module
    from convviz_check.explain import cam_methods

    spans: dict[str, float] = {}
    passes = []
    grad = torch.autograd.grad

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes.append(1)
        return grad(*args, **kwargs)

    targets = {
        "backend": (cam_module.Runner, "batches"),
        "backward": (torch.autograd, "grad"),
        "copies": (backend, "_to_numpy"),
        "rule": (cam_methods.METHODS[method], "raw"),
        "normalise": (cam_module, "normalise"),
        "note": (cam_module, "_note"),
    }
    cc.cam(model, images, method=method, layer=layer)  # warm
    torch.autograd.grad = counted  # type: ignore[assignment]
    try:
        with _timers(spans, targets):
            t0 = time.perf_counter()
            cc.cam(model, images, method=method, layer=layer)
            total = time.perf_counter() - t0
    finally:
        torch.autograd.grad = grad  # type: ignore[assignment]
    call, backward, copies = spans["backend"], spans.get("backward", 0.0), spans["copies"]
    parts = {
        "setup (checks, target, layer, runner)": spans["backend@"] - t0,
        "forward (Keras layers, torch kernels)": call - backward - copies,
        "backward (autograd, to the layer)": backward,
        "host copies (tensor -> NumPy)": copies,
        "method rule (NumPy)": spans["rule"],
        "normalise (NumPy)": spans["normalise"],
        "layer remark (cached note)": spans["note"],
    }
    parts["rest (scores, probability, result)"] = total - sum(parts.values())
    return {"total": total, "passes": float(len(passes)), **parts}


def median_split(
    model: Any, images: np.ndarray, layer: str, method: str, repeats: int
) -> dict[str, float]:
    """:func:`split` ``repeats`` times, the median of each part."""
    rows = [split(model, images, layer, method) for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def print_split(title: str, where: dict[str, float]) -> None:
    total, passes = where.pop("total"), int(where.pop("passes"))
    print(f"\n{title}: {total * 1e3:.1f} ms, {passes} forward/backward passes")
    for part, seconds in where.items():
        print(f"  {part:40s} {seconds * 1e3:8.2f} ms ({seconds / total * 100:4.0f}%)")


_MACHINERY = (
    "keras/src/layers/layer.py",
    "keras/src/ops/operation.py",
    "traceback_utils",
    "torch/nn/modules/module.py",
    "backend/torch/layer.py",
    "keras/src/utils/tracking",
    "inspect.py",
    "functools",
    "input_spec",
    "symbolic_arguments",
)


def _category(filename: str, name: str) -> str:
    if filename == "~":  # a builtin
        if "torch" in name or "TensorBase" in name:
            return "torch kernels and tensor methods"
        return "NumPy and Python builtins"
    if any(part in filename for part in _MACHINERY):
        return "Keras layer-call machinery (__call__)"
    if "keras/src/tree" in filename or "torch/utils/_pytree" in filename:
        return "Keras tree utilities"
    if "keras/src" in filename:
        return "Keras ops and backend (Python)"
    if "convviz_check/graph" in filename:
        return "convviz_check graph replay"
    if "convviz_check" in filename:
        return "convviz_check (rest)"
    return "NumPy, torch and other Python"


def categories(fn: Any, calls: int) -> dict[str, float]:
    """cProfile own time of ``fn()`` per call, grouped by :func:`_category` (seconds)."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        fn()
    profile.disable()
    out: dict[str, float] = {}
    stats: dict = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (filename, _, name), (_, _, own, _, _) in stats.items():
        key = _category(filename, name)
        out[key] = out.get(key, 0.0) + own / calls
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


@contextmanager
def plain_calls(on: bool) -> Iterator[None]:
    """The package's plain layer calls on (as shipped) or off (``Layer.__call__``)."""
    from convviz_check.backends import _torch_calls

    plan = _torch_calls._plan
    if not on:
        _torch_calls._plan = lambda op: None  # type: ignore[assignment]
    try:
        yield
    finally:
        _torch_calls._plan = plan  # type: ignore[assignment]


def plain_on_off(fn: Any, repeats: int) -> tuple[float, float]:
    """Median wall seconds of ``fn()`` with the plain layer calls on and off, rounds
    alternating (after one warm-up each)."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats + 1):
        for on in (True, False):
            with plain_calls(on):
                t0 = time.perf_counter()
                fn()
                if i:
                    times[on].append(time.perf_counter() - t0)
    return statistics.median(times[True]), statistics.median(times[False])


def print_profile(model: Any, images: np.ndarray, layer: str, repeats: int) -> None:
    """The split, the cProfile categories (plain calls on and off) and the on/off
    timing of a warm Grad-CAM of ``images``, on one thread (restored afterwards): on
    this shared 2-core machine under load, two OpenMP threads of a 1-image call spend
    most of its wall time waiting for each other (measured 0.1-0.6 s against 8 ms on
    one thread, load 2-3), which would hide every other part."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _print_profile(model, images, layer, repeats)
    finally:
        torch.set_num_threads(threads)


def _print_profile(model: Any, images: np.ndarray, layer: str, repeats: int) -> None:
    import convviz_check as cc

    n = len(images)
    print(f"\n-- profile: 1 thread, {n} image(s) --")
    print_split(
        f"where one warm cc.cam(gradcam) of {n} image(s) goes (median of {repeats})",
        median_split(model, images, layer, "gradcam", repeats),
    )
    call = lambda: cc.cam(model, images, layer=layer)  # noqa: E731
    call()
    shares = {}
    for on in (True, False):
        with plain_calls(on):
            shares[on] = categories(call, repeats)
    print(f"\ncProfile own time per call, {n} image(s) (inflated by cProfile; read shares):")
    print(f"  {'':40s} {'plain calls':>18s} {'Layer.__call__':>18s}")
    for key in shares[False]:
        cells = []
        for on in (True, False):
            seconds, total = shares[on].get(key, 0.0), sum(shares[on].values())
            cells.append(f"{seconds * 1e3:7.2f} ms ({seconds / total * 100:3.0f}%)")
        print(f"  {key:40s} {cells[0]:>18s} {cells[1]:>18s}")
    on, off = plain_on_off(call, repeats)
    print(
        f"\nwarm wall time, {n} image(s), interleaved: plain calls {on * 1e3:.1f} ms, "
        f"through Layer.__call__ {off * 1e3:.1f} ms ({off / on:.2f}x)"
    )
