"""An interpreter that already holds a framework: probed, used as it is, and never changed.

The tests make such an interpreter themselves: a venv holding the CPU build of PyTorch and
NumPy (about 40 s to install), first without ipykernel, then with it, as a user would after
reading the harness's error. Kernels are registered in a folder of the test's own.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import record
from harness import cli, kernels, report, runner
from harness.frameworks import FRAMEWORKS

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def existing_python(tmp_path_factory) -> str:
    """The python of a venv that holds torch (CPU) and numpy, and no ipykernel, pooch or keras."""
    folder = tmp_path_factory.mktemp("existing") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    done = subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q", "torch==2.13.0", "numpy"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return str(folder / "bin" / "python")


@pytest.fixture
def kernel_prefix(tmp_path, monkeypatch) -> Path:
    """Kernels registered under the test's folder, where papermill finds them first."""
    prefix = tmp_path / "harness-prefix"
    monkeypatch.setattr(kernels, "kernels_prefix", lambda: prefix)
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.delenv("ROSETTA_EXISTING_PYTHON", raising=False)
    monkeypatch.delenv("ROSETTA_WHEELHOUSE", raising=False)
    return prefix


def snapshot(python: str) -> dict:
    """Every file and link under the interpreter's prefix, with its size and modification time."""
    prefix = Path(python).parent.parent
    found = {}
    for root, folders, files in os.walk(prefix):
        for name in folders + files:
            path = Path(root) / name
            info = path.lstat()
            found[str(path.relative_to(prefix))] = (info.st_size, info.st_mtime_ns, info.st_mode)
    return found


def test_what_is_missing_is_one_clear_error_with_the_command_that_installs_it(existing_python, kernel_prefix, capsys):
    before = snapshot(existing_python)
    assert cli.main(["envs", "pytorch", "keras-torch", "--python", existing_python]) == 1
    errors = capsys.readouterr().err
    assert f"PyTorch: {existing_python} has no ipykernel, which PyTorch needs" in errors
    assert f"`{existing_python} -m pip install ipykernel`" in errors
    assert f"Keras (PyTorch): {existing_python} has no keras and no ipykernel" in errors
    assert f"`{existing_python} -m pip install 'keras==3.15.1' ipykernel`" in errors  # the spec's pin
    assert "installs nothing into an existing environment" in errors
    for name in ("pytorch", "keras-torch"):  # its runs will say why
        assert "has no" in kernels.unavailable_reason(FRAMEWORKS[name])
    assert snapshot(existing_python) == before


def test_an_existing_interpreter_runs_a_notebook_and_is_left_as_it_was(existing_python, kernel_prefix, tiny_cifar,
                                                                        tmp_path, capsys):
    # What the error of the test above told the user to do: install ipykernel themselves.
    done = subprocess.run([existing_python, "-m", "pip", "install", "-q", "ipykernel"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before = snapshot(existing_python)

    assert cli.main(["envs", "pytorch", "--python", existing_python]) == 0
    out = capsys.readouterr().out
    assert f"PyTorch: existing environment {existing_python} (Python " in out
    assert "torch 2.13.0" in out and "a CPU build" in out and "nothing is installed into it" in out
    assert "has no pooch: only downloads need it" in out  # a note, not an error
    kernel = kernel_prefix / "share" / "jupyter" / "kernels" / "rosetta-pytorch" / "kernel.json"
    assert kernel.is_file()

    settings = runner.RunSettings(device="cpu", epochs=1, batch_size=32, cifar_source=str(tiny_cifar))
    result = runner.execute(FRAMEWORKS["pytorch"], "cifar", settings, tmp_path / "results")
    assert result["status"] == "ok", result["error"]
    assert result["kernel_environment"]["kind"] == "existing"
    assert result["kernel_environment"]["python"] == existing_python
    assert result["kernel_environment"]["versions"].startswith("torch 2.13.0")
    assert result["kernel_environment"]["cuda_build"] is False
    assert record.read(next((tmp_path / "results" / "records").glob("*.json")))["kernel_environment"]["kind"] \
        == "existing"
    table = report.render(tmp_path / "results").read_text()
    assert f"(existing environment {existing_python})" in table

    assert snapshot(existing_python) == before  # nothing added, changed or removed under its prefix
