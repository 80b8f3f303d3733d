"""PyTorch implementation of the backend gradient layer (eager autograd)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from .. import keras_private
from ._patch import ScopedPatch
from ._torch_calls import PlainCalls


# Keras' torch convolutions and poolings take channels-last inputs through
# ``_transpose_spatial_inputs``: ``permute(0, 3, 1, 2).contiguous()`` (a full copy to
# NCHW), after which ``conv`` copies the tensor again into torch's channels_last memory
# format for its kernel -- which is the layout the NHWC tensor had to begin with. Inside
# our calls the permuted *view* is passed on instead (copied only where it is not
# already channels_last-contiguous). The same kernels run on the same memory layout, so
# results are bit-identical (tests/test_backends.py checks forward and gradient).
# Measured 2026-12-01, Xception-41 backbone at 299 px, 1 thread, process CPU time of a
# no_grad forward, median of 3 interleaved: batch 8 2.53 -> 1.73 s, 8 x batch 1
# 3.11 -> 2.32 s. The copies were 31-37% of the forward in torch.profiler and cost more
# per image at batch 8 (working set out of cache) than at batch 1, which is why our
# batched Grad-CAM trailed the chapter's per-image loop before this.
def _channels_last_view(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def transpose(inputs: Any) -> Any:
        if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            view = torch.permute(inputs, (0, 3, 1, 2))
            if view.is_contiguous(memory_format=torch.channels_last):
                return view
            return view.contiguous(memory_format=torch.channels_last)
        return original(inputs)

    return transpose


CHANNELS_LAST_VIEW = ScopedPatch(
    keras_private.TORCH_NN_MODULE, keras_private.TORCH_TRANSPOSE, _channels_last_view
)


def _to_numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy()


def _l2_normalize_per_sample(g: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, g.ndim))
    sq = torch.sum(g * g, dim=dims, keepdim=True)
    return g * torch.rsqrt(torch.clamp(sq, min=1e-12))


@contextmanager
def _weights_frozen(model: Any, variables: list[Any] | None = None) -> Iterator[None]:
    """Weights need no gradient here (we differentiate w.r.t. an input): with their
    ``requires_grad`` off, autograd records only the ops downstream of that input
    (Grad-CAM: the layers after the target). Measured, 8 images at 150 px, Xception-41:
    6.68 s -> 4.16 s per Grad-CAM call, identical heatmaps. Restored afterwards.

    ``variables``: a list the caller keeps per model, filled with ``model.variables`` on
    first use (a built graph model keeps its variables; each one's tensor is still read
    on every call). Measured 2026-12-08, 1 thread, per call: collecting them anew took
    0.67-0.90 ms for the 80 variables of a mini-Xception (a warm 1-image Grad-CAM is
    ~8 ms) and 1.9-4.4 ms for ResNet50's 320; from the kept list 0.16 / 0.66 ms."""
    if variables is None:
        variables = []
    if not variables:
        variables.extend(model.variables)
    params = [
        p
        for v in variables
        if isinstance(p := getattr(v, "value", None), torch.Tensor) and p.requires_grad
    ]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# On the CPU a call runs its batch in sub-batches ("passes") sized so that the largest
# map of a pass stays under PASS_MAP_BYTES, and never fewer than CPU_SUB_BATCH samples.
# Larger passes are slower per image once their maps outgrow the caches and tensors above
# glibc's 32 MiB mmap threshold take fresh pages from the OS on every forward (a page
# fault per 4 KiB) instead of reusing freed memory. Measured 2026-12-01 on this 2-core
# CPU (load ~1), Xception-41 Grad-CAM at 299 px (largest map 11 MB per image), 16
# images, s/image at 1 / 2 / 4 / 8 images per pass: 2 threads 0.113 / 0.077 / 0.077 /
# 0.119 (minor page faults per image 0 / 0 / 10.7k / 33.1k); 1 thread 0.226 / 0.206 /
# 0.191 / 0.215; peak memory of a Grad-CAM of 8 images +1.96 GB in one pass, +1.11 GB in
# passes of 4. Small maps are the other way round: each pass costs ~10 ms of Python per
# forward (Keras calls every layer), which passes of 2 paid 8 times for 16 images of a
# 64x64x1 mini-Xception (largest map 123 KB per image, 0.087 s per Grad-CAM against
# pytorch-grad-cam's 0.045 s in one pass); under the budget it runs in one pass. The
# budget keeps a pass's largest map under that 32 MiB threshold with a margin: 2 images
# of Xception-41 at 299 px (as measured best), 9 of ResNet50 at 224 px. Sound
# because every loss here is a sum over the batch (see backends/__init__.py) and
# inference-mode samples do not interact. On a GPU the batch runs whole.
CPU_SUB_BATCH = 2
PASS_MAP_BYTES = 28 * 2**20


def whole_batches() -> bool:
    """On the CPU a call splits its batch into passes itself and nothing is compiled
    per shape: callers pass whole batches, unpadded."""
    return not torch.cuda.is_available()


def _largest_map(model: Any) -> int | None:
    """Elements of the largest layer output of ``model`` per sample (nested layers
    included), or ``None`` where a shape is not fixed (inputs of ``(None, None, C)``)."""
    largest = 0
    for layer in _sublayers(model):
        try:
            outputs = layer.output
        except (AttributeError, ValueError, RuntimeError):
            continue  # never called symbolically (a subclassed wrapper)
        for t in outputs if isinstance(outputs, list | tuple) else [outputs]:
            shape = getattr(t, "shape", None)
            if shape is None or len(shape) < 2:
                continue
            if any(d is None for d in shape[1:]):
                return None
            largest = max(largest, int(np.prod(shape[1:])))
    return largest or None


def _sublayers(model: Any) -> Iterator[Any]:
    """Every layer inside ``model``, nested models' (and a wrapper's tracked model's)
    included, through the public ``layers`` property."""
    for layer in getattr(model, "layers", None) or []:
        yield layer
        yield from _sublayers(layer)


def _rows_per_pass(model: Any) -> int:
    """Samples per pass on the CPU (see ``PASS_MAP_BYTES``)."""
    largest = _largest_map(model)
    if largest is None:
        return CPU_SUB_BATCH
    return max(CPU_SUB_BATCH, PASS_MAP_BYTES // (4 * largest))


def _sub_batches(arrays: list[np.ndarray], rows: int | None = None) -> list[slice]:
    """Slices of the shared batch axis, ``rows`` (default ``CPU_SUB_BATCH``) at a time,
    or one slice when the batch is small, the inputs do not share a batch size, or a GPU
    computes."""
    size = max(int(rows or 0), CPU_SUB_BATCH)
    sizes = {int(a.shape[0]) if a.ndim else -1 for a in arrays}
    n = sizes.pop() if len(sizes) == 1 else -1
    if n <= size or torch.cuda.is_available():
        return [slice(None)]
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _part(aux: np.ndarray, n: int, rows: slice) -> np.ndarray:
    """The rows of a per-sample ``aux``; a shared one as it is."""
    return aux[rows] if aux.ndim and aux.shape[0] == n else aux


def make_value_and_grad(model: Any, loss_fn: Any, wrt: int) -> Any:
    rows = _rows_per_pass(model)
    variables: list[Any] = []

    def once(
        arrays: list[np.ndarray], aux: np.ndarray
    ) -> tuple[float, list[np.ndarray], np.ndarray]:
        tensors = [torch.as_tensor(x) for x in arrays]
        tensors[wrt] = tensors[wrt].clone().requires_grad_(True)
        aux_t = torch.as_tensor(aux)
        outputs = model(tensors if len(tensors) > 1 else tensors[0], training=False)
        outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        loss = loss_fn(outputs, aux_t)
        (grad,) = torch.autograd.grad(loss, tensors[wrt])
        return float(loss.detach()), [_to_numpy(o) for o in outputs], _to_numpy(grad)

    def fn(
        inputs: list[np.ndarray], aux: np.ndarray | None = None
    ) -> tuple[float, list[np.ndarray], np.ndarray]:
        arrays = [np.asarray(x) for x in inputs]
        aux_a = np.zeros((), np.float32) if aux is None else np.asarray(aux)
        n = int(arrays[0].shape[0]) if arrays[0].ndim else 0
        # Weights frozen, kernels patched and layers called plainly once per call, not
        # per pass.
        with _weights_frozen(model, variables), CHANNELS_LAST_VIEW, PlainCalls(model):
            parts = [
                once([a[r] for a in arrays], _part(aux_a, n, r)) for r in _sub_batches(arrays, rows)
            ]
        if len(parts) == 1:
            return parts[0]
        outputs = [np.concatenate([p[1][k] for p in parts]) for k in range(len(parts[0][1]))]
        return sum(p[0] for p in parts), outputs, np.concatenate([p[2] for p in parts])

    return fn


def make_forward(model: Any) -> Any:
    rows = _rows_per_pass(model)

    def once(arrays: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.as_tensor(x) for x in arrays]
        outputs = model(tensors if len(tensors) > 1 else tensors[0], training=False)
        outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        return [_to_numpy(o) for o in outputs]

    def fn(inputs: list[np.ndarray]) -> list[np.ndarray]:
        arrays = [np.asarray(x) for x in inputs]
        slices = _sub_batches(arrays, rows)
        # No autograd recording; the kernels patched once per call. (Not inference_mode:
        # a layer that builds a tensor lazily would keep an inference tensor.)
        with torch.no_grad(), CHANNELS_LAST_VIEW, PlainCalls(model):
            if len(slices) == 1:
                return once(arrays)
            # Each part is written into outputs allocated once (many large maps:
            # activations of 44 layers are 86 MiB per image at 299 px; concatenating
            # parts would hold them twice).
            n = int(arrays[0].shape[0])
            out: list[np.ndarray] = []
            for r in slices:
                part = once([a[r] for a in arrays])
                if not out:
                    out = [np.empty((n, *p.shape[1:]), p.dtype) for p in part]
                for whole, p in zip(out, part, strict=True):
                    whole[r] = p
            return out

    return fn


def make_ascent(model: Any, loss_fn: Any, model_takes_aux: bool = False) -> Any:
    def once(image: np.ndarray, aux: np.ndarray, steps: int, learning_rate: float) -> np.ndarray:
        img = torch.as_tensor(image)
        aux_t = torch.as_tensor(aux)
        with _weights_frozen(model), CHANNELS_LAST_VIEW:
            for _ in range(int(steps)):
                img = img.detach().requires_grad_(True)
                inputs = [img, aux_t] if model_takes_aux else img
                loss = loss_fn([model(inputs, training=False)], aux_t)
                (g,) = torch.autograd.grad(loss, img)
                with torch.no_grad():
                    img = img + float(learning_rate) * _l2_normalize_per_sample(g)
        return _to_numpy(img)

    def fn(image: np.ndarray, aux: np.ndarray, steps: int, learning_rate: float) -> np.ndarray:
        image = np.asarray(image, np.float32)
        aux_a = np.asarray(aux)
        n = int(image.shape[0])
        parts = [
            once(image[rows], _part(aux_a, n, rows), steps, learning_rate)
            for rows in _sub_batches([image])
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return fn


def fast_kernels() -> ScopedPatch:
    return CHANNELS_LAST_VIEW


def pin_threads(n: int) -> dict[str, int]:
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # only settable before the first parallel work
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def framework_version() -> dict[str, str]:
    return {"torch": torch.__version__}


def enable_determinism() -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)


def to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def make_param_ascent(
    model: Any, loss_fn: Any, render_fn: Any, model_takes_aux: bool, coupled: bool = False
) -> Any:
    """Adam ascent on parameters that ``render_fn`` maps to the model's input (see
    ``backends.make_param_ascent``), eager autograd, weights frozen; on the CPU the
    batch runs in sub-batches (Adam is per element, the loss a sum over the batch),
    unless ``coupled`` (a loss that couples the images: the diversity term)."""
    from ..explain.fviz import ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON

    def once(
        params: np.ndarray, aux: np.ndarray, schedule: np.ndarray, steps: int, lr: float
    ) -> np.ndarray:
        p = torch.as_tensor(params)
        m = torch.zeros_like(p)
        v = torch.zeros_like(p)
        aux_t = torch.as_tensor(aux)
        rows = torch.as_tensor(schedule)
        with _weights_frozen(model), CHANNELS_LAST_VIEW:
            for i in range(int(steps)):
                p = p.detach().requires_grad_(True)
                image, penalty = render_fn(p, rows[i])
                inputs = [image, aux_t] if model_takes_aux else image
                objective = loss_fn([model(inputs, training=False)], aux_t) - penalty
                (g,) = torch.autograd.grad(objective, p)
                with torch.no_grad():
                    m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * g
                    v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * g * g
                    m_hat = m / (1 - ADAM_BETA1 ** (i + 1))
                    v_hat = v / (1 - ADAM_BETA2 ** (i + 1))
                    p = p + float(lr) * m_hat / (torch.sqrt(v_hat) + ADAM_EPSILON)
        return _to_numpy(p)

    def fn(
        params: np.ndarray, aux: np.ndarray, schedule: np.ndarray, steps: int, learning_rate: float
    ) -> np.ndarray:
        params = np.asarray(params, np.float32)
        aux_a = np.asarray(aux)
        sched = np.asarray(schedule, np.float32)
        n = int(params.shape[0])
        parts = [
            once(params[r], _part(aux_a, n, r), sched, steps, learning_rate)
            for r in ([slice(None)] if coupled else _sub_batches([params]))
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return fn
