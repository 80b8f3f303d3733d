"""convviz_check: make what a convnet looks at testable.

The public API is re-exported here lazily (PEP 562): ``import convviz_check`` imports
neither Keras nor a framework, so the pytest plugin, the CLI and the parent process of
a cross-backend run stay light. Each name is imported from its module on first use.
"""

from __future__ import annotations

import importlib
import sys
import types
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
    "LocalizationError": "errors",
    "Box": "types",
    "GradCAM": "types",
    "Comparison": "types",
    "MetricResult": "types",
    "Tolerance": "types",
    # models and graph
    "load_model": "models",
    "model_fingerprint": "models",
    "conv_layers": "graph",
    # the three techniques and their renderings
    "activations": "explain.activations",
    "activation_grid": "explain.render",
    "filter_patterns": "explain.filters",
    "deprocess_image": "explain.render",
    "filter_grid": "explain.render",
    "gradcam": "explain.gradcam",
    "overlay": "explain.render",
    # comparison, agreement
    "compare": "compare",
    "agreement": "agreement",
    "AgreementReport": "agreement",
}
_SUBMODULES = (
    "localization",
    "strategies",
    "sanity",
    "examples",
    "tolerances",
    "golden",
    "graph",
)

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


# Public functions that share their name with their own submodule (``compare`` in
# compare.py, ``agreement`` in agreement.py). Importing a submodule makes Python bind it
# on the package (``setattr(convviz_check, "compare", <module>)``), which would replace
# the function ``cc.compare``. The package's module class keeps the function instead;
# code that needs the module imports it by its full name (importlib / ``from .compare
# import ...``).
_FUNCTIONS_NAMED_LIKE_THEIR_MODULE = ("compare", "agreement")


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTIONS_NAMED_LIKE_THEIR_MODULE and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
    from . import examples, golden, localization, sanity, strategies, tolerances  # noqa: F401
    from .agreement import AgreementReport, agreement  # noqa: F401
    from .compare import compare  # noqa: F401
    from .errors import *  # noqa: F403
    from .explain.activations import activations  # noqa: F401
    from .explain.filters import filter_patterns  # noqa: F401
    from .explain.gradcam import gradcam  # noqa: F401
    from .explain.render import (  # noqa: F401
        activation_grid,
        deprocess_image,
        filter_grid,
        overlay,
    )
    from .graph import conv_layers  # noqa: F401
    from .models import load_model, model_fingerprint  # noqa: F401
    from .types import Box, Comparison, GradCAM, MetricResult, Tolerance  # noqa: F401
