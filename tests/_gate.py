"""The shortcut example's gate folder as the gate tests copy it (not a test module)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from convviz_check.examples import shortcut

GATE = Path(shortcut.__file__).resolve().parent / "gate"
# The gate's own code and settings; its approval is the goldens and counterfactual.json,
# which hold the honest convnet's maps and probe: a gate for another model writes its own.
CODE_FILES = ("conftest.py", "test_gate.py", "pytest.ini", "README.md")
APPROVAL_FILES = ("counterfactual.json",)


def copy_gate(dest: Path, *, approved: bool) -> None:
    """Copy the gate into ``dest``: its code, and with ``approved`` its goldens and probe."""
    for name in CODE_FILES + (APPROVAL_FILES if approved else ()):
        shutil.copy(GATE / name, dest / name)
    if approved:
        shutil.copytree(GATE / "golden", dest / "golden")


def outcomes_of(result: pytest.RunResult) -> dict[str, str]:
    """Test name -> PASSED / FAILED / SKIPPED / ERROR, from ``-v``'s lines."""
    found = re.findall(
        r"^test_gate\.py::(test_\w+) (PASSED|FAILED|SKIPPED|ERROR)", result.stdout.str(), re.M
    )
    return dict(found)
