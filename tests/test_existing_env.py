"""An interpreter that already holds a framework but not what a kernel needs: one clear error.

The interpreter is the rehearsal's image (tests/rehearsal_image.py: Python 3.12 with torch, jax
and no ipykernel, pooch or keras; built once and kept), which must be left exactly as it was.
That such an interpreter, once the user has installed what the error names, runs the notebooks
and is left unchanged is the rehearsal's part (tests/test_rehearsal.py).
"""
from pathlib import Path

import pytest
import rehearsal_image

from harness import cli, kernels
from harness.frameworks import FRAMEWORKS

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def existing_python() -> str:
    """The image's python: torch and jax, no ipykernel, pooch or keras."""
    try:
        return str(rehearsal_image.ensure())
    except rehearsal_image.ImageError as error:
        pytest.fail(str(error))


@pytest.fixture
def kernel_prefix(tmp_path, monkeypatch) -> Path:
    """Kernels registered under the test's folder, where papermill finds them first."""
    prefix = tmp_path / "harness-prefix"
    monkeypatch.setattr(kernels, "kernels_prefix", lambda: prefix)
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.delenv("ROSETTA_EXISTING_PYTHON", raising=False)
    monkeypatch.delenv("ROSETTA_WHEELHOUSE", raising=False)
    return prefix


def test_what_is_missing_is_one_clear_error_with_the_command_that_installs_it(existing_python, kernel_prefix, capsys):
    before = rehearsal_image.snapshot(Path(existing_python).parent.parent)
    assert cli.main(["envs", "pytorch", "keras-torch", "jax", "--python", existing_python]) == 1
    errors = capsys.readouterr().err
    assert f"JAX (Flax): {existing_python} has no ipykernel, which JAX (Flax) needs" in errors
    assert f"PyTorch: {existing_python} has no ipykernel, which PyTorch needs" in errors
    assert f"`{existing_python} -m pip install ipykernel`" in errors
    assert f"Keras (PyTorch): {existing_python} has no keras and no ipykernel" in errors
    assert f"`{existing_python} -m pip install 'keras==3.15.1' ipykernel`" in errors  # the spec's pin
    assert "installs nothing into an existing environment" in errors
    for name in ("pytorch", "keras-torch", "jax"):  # its runs will say why
        assert "has no" in kernels.unavailable_reason(FRAMEWORKS[name])
    assert rehearsal_image.snapshot(Path(existing_python).parent.parent) == before
