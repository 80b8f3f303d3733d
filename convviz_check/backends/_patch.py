"""A scoped, re-entrant, thread-safe swap of one attribute of a Keras backend module.

The backend modules use it to replace a Keras kernel by a faster one with the same
semantics, only inside our own compiled calls (see ``torch.py`` and ``jax.py`` for what
is replaced and the measurements behind it). Framework-free: the module is imported by
name on first use.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any


class ScopedPatch:
    """``with patch:`` sets ``module.attribute`` to ``make(original)`` and restores it on
    leaving the outermost block.

    Nested and concurrent blocks share one depth count under a lock: the original comes
    back only when the last block leaves (two threads saving and restoring on their own
    could leave the replacement in place for good). Where the module or the attribute
    does not exist (another Keras version), the block runs unchanged and
    :attr:`available` is False.
    """

    def __init__(
        self, module: str, attribute: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]
    ) -> None:
        self.module_name = module
        self.attribute = attribute
        self._make = make
        self._lock = threading.Lock()
        self._depth = 0
        self._original: Callable[..., Any] | None = None
        self._module: Any = None

    @property
    def available(self) -> bool:
        """True when the attribute to replace exists (imports the module)."""
        return self._resolve() is not None

    def _resolve(self) -> Any:
        if self._module is None:
            try:
                module = importlib.import_module(self.module_name)
            except ImportError:  # pragma: no cover - a Keras that moved its backends
                return None
            if not callable(getattr(module, self.attribute, None)):
                return None  # pragma: no cover - a Keras without this function
            self._module = module
        return self._module

    def __enter__(self) -> ScopedPatch:
        module = self._resolve()
        if module is None:  # pragma: no cover - see available
            return self
        with self._lock:
            if self._depth == 0:
                self._original = getattr(module, self.attribute)
                setattr(module, self.attribute, self._make(self._original))
            self._depth += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._module is None:  # pragma: no cover - see available
            return
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                setattr(self._module, self.attribute, self._original)
