"""convviz_check: make what a convnet looks at testable.

The public API is re-exported here lazily (PEP 562): ``import convviz_check`` imports
neither Keras nor a framework, so the pytest plugin, the CLI and the parent process of
a cross-backend run stay light. Each name is imported from its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors and types
    "ConvvizError": "errors",
    "ModelLoadError": "errors",
    "GraphError": "errors",
    "InputError": "errors",
    "BackendError": "errors",
    "GoldenError": "errors",
    "ComparisonError": "errors",
    "StorageError": "errors",
    "MissingBackendError": "errors",
    "WorkerError": "errors",
    "ConvvizWarning": "errors",
    "LocalizationError": "errors",
    "FaithfulnessError": "errors",
    "Box": "types",
    "GradCAM": "types",
    "Comparison": "types",
    "MetricResult": "types",
    "Tolerance": "types",
    "Artifact": "artifacts",
    # models and graph
    "load_model": "models",
    "model_fingerprint": "models",
    "conv_layers": "graph",
    # the three techniques and their renderings
    "activations": "explain.activations",
    "activation_grid": "render",
    "filter_patterns": "explain.filters",
    "deprocess_image": "render",
    "filter_grid": "render",
    "high_frequency_share": "spectral",
    "gradcam": "explain.gradcam",
    "cam": "explain.cam",
    "overlay": "render",
    # counterfactual probes
    "paste_cue": "counterfactual",
    "judge_counterfactual": "counterfactual",
    # filter patterns across retrains (the Keras side: explain.pattern_response)
    "match_channels": "pattern_response",
    "judge_pattern_response": "pattern_response",
    # comparison, judgments, agreement
    "compare": "metrics",
    "judge_golden": "judge.golden",
    "agreement": "crossbackend.agreement",
    "AgreementReport": "crossbackend.agreement",
}
_SUBMODULES = (
    "localization",
    "counterfactual",
    "faithfulness",
    "strategies",
    "sanity",
    "examples",
    "tolerances",
    "golden",
    "graph",
)

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import (  # noqa: F401
        counterfactual,
        examples,
        faithfulness,
        golden,
        localization,
        sanity,
        strategies,
        tolerances,
    )
    from .artifacts import Artifact  # noqa: F401
    from .counterfactual import judge_counterfactual, paste_cue  # noqa: F401
    from .crossbackend.agreement import AgreementReport, agreement  # noqa: F401
    from .errors import *  # noqa: F403
    from .explain.activations import activations  # noqa: F401
    from .explain.cam import cam  # noqa: F401
    from .explain.filters import filter_patterns  # noqa: F401
    from .explain.gradcam import gradcam  # noqa: F401
    from .graph import conv_layers  # noqa: F401
    from .judge.golden import judge_golden  # noqa: F401
    from .metrics import compare  # noqa: F401
    from .models import load_model, model_fingerprint  # noqa: F401
    from .pattern_response import judge_pattern_response, match_channels  # noqa: F401
    from .render import (  # noqa: F401
        activation_grid,
        deprocess_image,
        filter_grid,
        overlay,
    )
    from .spectral import high_frequency_share  # noqa: F401
    from .types import Box, Comparison, GradCAM, MetricResult, Tolerance  # noqa: F401
