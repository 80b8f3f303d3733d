"""The README's first test file runs as written: extracted from README.md, put in a
fresh project, run once to write its goldens and once to compare with them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _first_test_file() -> tuple[str, str]:
    """(file name, code) of the first ```python block after 'Your first test file'."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Your first test file", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no python block in the README's first-test section"
    name = re.match(r"# (tests/\S+\.py)\n", code.group(1))
    assert name is not None, "the block must start with '# tests/<file>.py'"
    return name.group(1), code.group(1)


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    from convviz_check.backends import current_backend

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("CI", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    # Owned by the running backend, as a single-backend project would set it.
    command += ["-o", f"convviz_golden_backend={current_backend()}"]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=900
    )


def test_readme_first_test_file_writes_its_goldens_then_passes(tmp_path):
    name, code = _first_test_file()
    path = tmp_path / name
    path.parent.mkdir(parents=True)
    path.write_text(code, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")

    first = _pytest(tmp_path, "--convviz-update=missing")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "golden").rglob("*.npz"))
    assert written == ["activations.npz", "gradcam.npz", "patterns.npz"]

    second = _pytest(tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "3 passed" in second.stdout


def test_the_readme_test_file_uses_the_fixture_and_all_three_kinds():
    _, code = _first_test_file()
    for needle in ("convviz.gradcam", "convviz.activations", "convviz.filter_patterns"):
        assert needle in code
    assert 'kind="pattern"' in code  # the README says what a bare 4-D array needs
