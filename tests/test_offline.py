"""Offline machines: wheels gathered where an index is reachable, then installed with none.

The gathering asks the package index (as a user's connected machine would); everything after
it runs with pip's index switched off (PIP_NO_INDEX=1), the machine's pip settings ignored
and every proxy pointing at a closed loopback port, so that any attempt to reach a network
fails.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import selftest

from common import REPOSITORY
from harness import kernels, runner, venvs, wheels
from harness.frameworks import Framework

pytestmark = pytest.mark.kernel

PYTHON = "%d.%d" % sys.version_info[:2]
WRITE_RECORD = """
from common import record
record.write(record_path, record.build(
    framework="Tiny", api="test", benchmark="cifar", accuracy=0.5, timing={"train_seconds": 1.0},
    epochs=10, batch_size=64, train_samples=50000, test_samples=10000, seed=seed))
"""


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """The wheels this Python needs, gathered by `python -m harness.wheels` (the index is asked)."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run([sys.executable, "-m", "harness.wheels", str(folder), "--python-version", PYTHON],
                          cwd=REPOSITORY, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " wheels, " in done.stdout and f"WHEELHOUSE={folder}" in done.stdout
    return folder


@pytest.fixture
def offline(monkeypatch, closed_port_url):
    """This process and its children can reach no index and no network."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, closed_port_url)
    for name in ("NO_PROXY", "no_proxy", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # not the machine's own indexes or local folders
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")


def test_the_gathered_folder_holds_the_harness_the_kernels_and_keras(wheelhouse):
    names = {wheels.normalise(w.name.split("-", 1)[0]) for w in wheelhouse.glob("*.whl")}
    for needed in ("papermill", "ipykernel", "pooch", "tqdm", "numpy", "pandas", "matplotlib", "nbformat",
                   "jupyter-client", "keras", "setuptools", "pip", "pytest"):
        assert needed in names, f"{needed} is not in the wheelhouse"
    assert not any(w.suffix != ".whl" for w in wheelhouse.iterdir())  # wheels only, nothing to build


def test_make_installs_the_harness_from_the_folder_with_no_index(wheelhouse, offline, tmp_path):
    venv = tmp_path / "harness-venv"
    done = subprocess.run(["make", f"{venv}/.installed", f"VENV={venv}", f"WHEELHOUSE={wheelhouse}",
                           f"PYTHON={sys.base_prefix}/bin/python3"],
                          cwd=REPOSITORY, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"--no-index --find-links {wheelhouse}" in done.stdout
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import papermill, pandas, matplotlib, harness.cli"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_a_kernel_environment_is_built_from_the_folder_with_no_index(wheelhouse, offline, tmp_path, monkeypatch):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tiny-cpu.txt").write_text("numpy\n")
    monkeypatch.setattr(venvs, "SPECS", specs)
    monkeypatch.setenv("ROSETTA_ENVS_DIR", str(tmp_path / "envs"))
    monkeypatch.setenv("ROSETTA_WHEELHOUSE", str(wheelhouse))
    prefix = tmp_path / "harness-prefix"
    monkeypatch.setattr(kernels, "kernels_prefix", lambda: prefix)
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    notebook = tmp_path / "tiny.ipynb"
    selftest.framework(notebook, WRITE_RECORD)  # the notebook; its framework is the one below
    framework = Framework(name="tiny", label="Tiny", api="test", env="tiny", notebooks={"cifar": str(notebook)},
                          versions_probe="import numpy; print('numpy', numpy.__version__)")
    kernels.create(framework, "cpu")
    kernel = json.loads((prefix / "share" / "jupyter" / "kernels" / "rosetta-tiny" / "kernel.json").read_text())
    assert kernel["argv"][0] == str(tmp_path / "envs" / "tiny" / "bin" / "python")
    result = runner.execute(framework, "cifar", runner.RunSettings(), tmp_path / "results")
    assert result["status"] == "ok", result["error"]
    assert result["kernel_environment"]["kind"] == "built"


def test_the_platform_tags_name_every_manylinux_up_to_the_glibc():
    tags = wheels.platforms("x86_64", "2.28")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux_2_29_x86_64" not in tags
    assert "manylinux2014_x86_64" in tags  # pip widens this one to manylinux2010 and manylinux1
    with pytest.raises(ValueError, match="--glibc must be 2.17 or newer"):
        wheels.platforms("x86_64", "2.5")


def test_the_project_requirements_read_without_tomllib_match_tomllib():
    import tomllib

    text = (REPOSITORY / "pyproject.toml").read_text()
    data = tomllib.loads(text)
    by_hand = (wheels._toml_list(text, "dependencies") + wheels._toml_list(text, "harness")
               + wheels._toml_list(text, "test") + wheels._toml_list(text, "requires"))
    assert by_hand == wheels.project_requirements()
    assert "papermill>=2.4" in by_hand and data["build-system"]["requires"][0] in by_hand
    assert wheels.keras_requirement() == "keras==3.15.1"
    assert wheels.main(["/tmp/unused", "--python-version", "twelve"]) == 2
