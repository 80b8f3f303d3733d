import subprocess
import sys

import numpy as np
from PIL import Image

from convviz_check.examples import model_path


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "convviz_check", "explain", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def test_explain_writes_all_three_techniques_for_a_bundled_model(tmp_path):
    out = tmp_path / "out"
    proc = _run(
        str(model_path("convnet")),
        "--scenes",
        "2",
        "--out",
        str(out),
        "--filters",
        "2",
        "--steps",
        "3",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gradcam: layer" in proc.stdout
    grids = sorted((out / "activations").glob("*.png"))
    assert grids, proc.stdout
    overlays = sorted((out / "gradcam").glob("*_overlay.png"))
    assert len(overlays) == 2
    assert np.asarray(Image.open(overlays[0])).shape == (64, 64, 3)
    (filters_png,) = (out / "filters").glob("*.png")
    assert np.asarray(Image.open(filters_png)).ndim == 3


def test_explain_reports_a_bad_model_source_clearly(tmp_path):
    proc = _run(str(tmp_path / "absent.keras"), "--scenes", "1", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "no such file" in proc.stderr
