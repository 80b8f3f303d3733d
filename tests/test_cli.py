import subprocess
import sys
from pathlib import Path


def test_cli_help_works_without_importing_keras():
    code = (
        "import sys; sys.modules['keras'] = None\n"
        "from convviz_check.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "convviz-check" in out.stdout


def test_console_script_is_installed():
    # The entry point pip installs next to the interpreter (not `python -m`).
    script = Path(sys.executable).with_name("convviz-check")
    assert script.exists(), f"no console script at {script}"
    out = subprocess.run(
        [str(script), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "convviz_check" in out.stdout


def test_package_import_is_lazy():
    code = (
        "import sys; import convviz_check as cc\n"
        "assert 'keras' not in sys.modules, 'import convviz_check imported keras'\n"
        "assert 'load_model' in dir(cc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
