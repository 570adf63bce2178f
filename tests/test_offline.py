"""Offline machines: wheels gathered where an index is reachable, then installed with none.

The gathering asks the package index (as a user's connected machine would), for Python 3.12
whatever Python runs the tests, in an interpreter of that version; everything after it runs with
pip's index switched off (PIP_NO_INDEX=1), the machine's pip settings ignored and every proxy
pointing at a closed loopback port, so that any attempt to reach a network fails.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import selftest

from common import REPOSITORY
from harness import interpreters, kernels, runner, venvs, wheels
from harness.frameworks import Framework

TARGET = "3.12"  # what GPU machines' images carry; papermill needs aiohttp there only
RUNNING = "%d.%d" % sys.version_info[:2]
WRITE_RECORD = """
from common import record
record.write(record_path, record.build(
    framework="Tiny", api="test", benchmark="cifar", accuracy=0.5, timing={"train_seconds": 1.0},
    epochs=10, batch_size=64, train_samples=50000, test_samples=10000, seed=seed))
"""
IMPORTABLE = "import importlib.util as u, json, sys; print(json.dumps({m: u.find_spec(m) is not None for m in sys.argv[1:]}))"


def target_python() -> str:
    """A Python 3.12 interpreter to make venvs with (not a venv's own python)."""
    if RUNNING == TARGET:
        return f"{sys.base_prefix}/bin/python3"
    found = interpreters.find_python(TARGET)
    if found is None:
        pytest.skip(f"no Python {TARGET} here (python{TARGET}, pyenv or ${interpreters.python_variable(TARGET)})")
    return found


def importable(python, *modules) -> dict:
    done = subprocess.run([str(python), "-c", IMPORTABLE, *modules], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """The wheels Python 3.12 needs, gathered by `python -m harness.wheels` run by this Python (the index is asked)."""
    target_python()
    folder = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run([sys.executable, "-m", "harness.wheels", str(folder), "--python-version", TARGET],
                          cwd=REPOSITORY, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " wheels, " in done.stdout and f"WHEELHOUSE={folder}" in done.stdout
    if RUNNING != TARGET:
        assert f"pip download runs in {interpreters.find_python(TARGET)} (Python {TARGET})" in done.stdout
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


@pytest.mark.kernel
def test_the_gathered_folder_holds_the_harness_the_kernels_keras_and_jax2onnx(wheelhouse):
    names = {wheels.normalise(w.name.split("-", 1)[0]) for w in wheelhouse.glob("*.whl")}
    for needed in ("papermill", "ipykernel", "ipython", "pooch", "tqdm", "numpy", "pandas", "matplotlib", "nbformat",
                   "jupyter-client", "keras", "setuptools", "pip", "pytest", "jax2onnx", "onnx-ir", "orbax-checkpoint"):
        assert needed in names, f"{needed} is not in the wheelhouse"
    # papermill's `aiohttp; python_version >= "3.12"`, judged by a 3.12 interpreter whatever runs the tests
    for needed in ("aiohttp", "aiohappyeyeballs", "aiosignal", "frozenlist", "multidict", "propcache", "yarl"):
        assert needed in names, f"{needed} is not in the wheelhouse for Python {TARGET}"
    assert all(f"-cp{TARGET.replace('.', '')}-" in w.name or "-abi3-" in w.name or "-none-" in w.name
               for w in wheelhouse.glob("*.whl"))
    # ipykernel's and IPython's optional helpers, and the frameworks jax2onnx sits on, are left out
    for left_out in ("debugpy", "jedi", "parso", "jax", "jaxlib", "flax", "onnx", "onnxruntime", "scipy", "tensorstore"):
        assert left_out not in names, f"{left_out} is in the wheelhouse"
    listed = (wheelhouse / venvs.KERNEL_LIST).read_text()
    requirements = [line for line in listed.splitlines() if line and not line.startswith("#")]
    listed_names = {wheels.normalise(line.split(";")[0].split("<")[0].split(">")[0].split("=")[0].split("!")[0].strip())
                    for line in requirements}
    assert {"pyzmq", "tornado", "traitlets", "jupyter-client", "comm", "prompt-toolkit", "pygments"} <= listed_names
    assert not listed_names & {"debugpy", "jedi", "ipykernel", "ipython"}
    assert {w.suffix for w in wheelhouse.iterdir()} == {".whl", ".txt"}  # wheels and the list, nothing to build


@pytest.mark.kernel
def test_a_kernel_environment_is_built_from_the_folder_with_no_index(wheelhouse, offline, tmp_path, monkeypatch):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tiny-cpu.txt").write_text("numpy\n")
    monkeypatch.setattr(venvs, "SPECS", specs)
    monkeypatch.setenv("ROSETTA_ENVS_DIR", str(tmp_path / "envs"))
    monkeypatch.setenv("ROSETTA_WHEELHOUSE", str(wheelhouse))
    monkeypatch.setenv(interpreters.python_variable(TARGET), target_python())
    prefix = tmp_path / "harness-prefix"
    monkeypatch.setattr(kernels, "kernels_prefix", lambda: prefix)
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    notebook = tmp_path / "tiny.ipynb"
    selftest.framework(notebook, WRITE_RECORD)  # the notebook; its framework is the one below
    framework = Framework(name="tiny", label="Tiny", api="test", env="tiny", notebooks={"cifar": str(notebook)},
                          python=TARGET, versions_probe="import numpy; print('numpy', numpy.__version__)")
    kernels.create(framework, "cpu")
    kernel = json.loads((prefix / "share" / "jupyter" / "kernels" / "rosetta-tiny" / "kernel.json").read_text())
    python = tmp_path / "envs" / "tiny" / "bin" / "python"
    assert kernel["argv"][0] == str(python)
    # the notebook runs in a kernel that has neither debugpy nor jedi
    assert importable(python, "ipykernel", "debugpy", "jedi") == {"ipykernel": True, "debugpy": False, "jedi": False}
    result = runner.execute(framework, "cifar", runner.RunSettings(), tmp_path / "results")
    assert result["status"] == "ok", result["error"]
    assert result["kernel_environment"]["kind"] == "built"


def test_the_platform_tags_name_every_manylinux_up_to_the_glibc():
    tags = wheels.platforms("x86_64", "2.28")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux_2_29_x86_64" not in tags
    assert "manylinux2014_x86_64" in tags  # pip widens this one to manylinux2010 and manylinux1
    with pytest.raises(ValueError, match="--glibc must be 2.17 or newer"):
        wheels.platforms("x86_64", "2.5")


def test_wheels_for_a_python_found_nowhere_are_refused_naming_it_and_how_to_give_one(tmp_path, capsys):
    folder = tmp_path / "wheels"
    assert wheels.main([str(folder), "--python-version", "3.99"]) == 2
    error = capsys.readouterr().err
    assert "gathering wheels for Python 3.99 needs a Python 3.99 interpreter" in error
    assert "--interpreter PATH (make wheels WHEELS_INTERPRETER=PATH) or ROSETTA_PYTHON399=PATH" in error
    assert not folder.exists()  # nothing downloaded


def test_the_interpreter_that_gathers_is_of_the_target_version(monkeypatch):
    assert wheels.interpreter_for(RUNNING) == sys.executable
    with pytest.raises(ValueError, match=rf"--interpreter {sys.executable}: expected a Python 3.99 interpreter, "
                                         rf"got Python {RUNNING}"):
        wheels.interpreter_for("3.99", sys.executable)
    # a variable naming an interpreter of another version is not taken, and the error says so
    monkeypatch.setenv("ROSETTA_PYTHON399", sys.executable)
    with pytest.raises(ValueError, match=rf"ROSETTA_PYTHON399={sys.executable} is another version"):
        wheels.interpreter_for("3.99")
    other = "3.12" if RUNNING != "3.12" else "3.11"
    found = interpreters.find_python(other)
    if found is None:
        pytest.skip(f"no Python {other} here to gather with")
    assert wheels.interpreter_for(other) == found and interpreters.python_version(found) == other


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


# --- make bundle: the checkout, its commit, the wheels and the data in one archive ------------------

def _clone(tmp_path) -> Path:
    """A clone of this repository's HEAD, to bundle from (its own harness/bundle.py)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPOSITORY), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q",
                    subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "HEAD"], capture_output=True,
                                   text=True, check=True).stdout.strip()], check=True)
    return clone


def _size_line(out: str, part: str) -> float:
    line = next(line for line in out.splitlines() if line.strip().startswith(part))
    return float(line.split()[1])


@pytest.mark.kernel
def test_make_bundle_holds_the_checkout_with_its_commit_the_wheels_and_the_data(wheelhouse, tmp_path):
    import tarfile

    clone = _clone(tmp_path)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    data = tmp_path / "imdb.npz"
    data.write_bytes(b"a tiny stand-in for the data set\n" * 1000)
    bundle = tmp_path / "out" / "bundle.tar"
    done = subprocess.run(["make", "bundle", f"BUNDLE={bundle}", f"WHEELHOUSE={wheelhouse}", f"WHEELS_PYTHON={TARGET}",
                           f"IMDB={data}", f"PYTHON={sys.executable}"],
                          cwd=clone, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "warning" not in done.stderr  # a clean clone: nothing left out
    unpacked = tmp_path / "unpacked"
    with tarfile.open(bundle) as archive:
        archive.extractall(unpacked)
    assert sorted(p.name for p in unpacked.iterdir()) == ["dl-rosetta"]
    root = unpacked / "dl-rosetta"
    assert (root / "COMMIT").read_text() == head + "\n"
    assert not (root / ".git").exists() and (root / "harness" / "bundle.py").is_file()
    tracked = subprocess.run(["git", "-C", str(clone), "ls-files"], capture_output=True, text=True).stdout.split()
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and p.parts[len(root.parts)] not in ("wheels", "data")) == sorted(tracked + ["COMMIT"])
    gathered = sorted(w.name for w in wheelhouse.glob("*.whl"))
    assert sorted(w.name for w in (root / "wheels").glob("*.whl")) == gathered
    assert (root / "wheels" / venvs.KERNEL_LIST).read_text() == (wheelhouse / venvs.KERNEL_LIST).read_text()
    assert (root / "data" / "imdb.npz").read_bytes() == data.read_bytes()
    # the sizes printed are those of the parts
    mib = lambda paths: round(sum(p.stat().st_size for p in paths) / 2**20, 1)
    checkout = [p for p in root.rglob("*") if p.is_file() and p.parts[len(root.parts)] not in ("wheels", "data")]
    assert _size_line(done.stdout, "checkout") == mib(checkout)
    assert _size_line(done.stdout, "wheels") == mib((root / "wheels").iterdir())
    assert f"{len(gathered)} wheels for Python {TARGET}" in done.stdout
    assert _size_line(done.stdout, "data") == mib([data]) and "imdb.npz" in done.stdout
    assert _size_line(done.stdout, "total") == round(bundle.stat().st_size / 2**20, 1)
    assert "tar -xf bundle.tar && cd dl-rosetta" in done.stdout
    assert "make bench PYTHON=$PY VENV_BASE=$PY WHEELHOUSE=wheels EXISTING_PYTHON=$PY IMDB=data/imdb.npz" in done.stdout


def test_a_bundle_leaves_out_uncommitted_changes_and_says_so(tmp_path):
    clone = _clone(tmp_path)
    (clone / "README.md").write_text("changed, not committed\n")
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    bundle = tmp_path / "bundle.tar.gz"
    done = subprocess.run([sys.executable, "-m", "harness.bundle", str(bundle), "--wheelhouse", str(wheelhouse),
                           "--no-gather"], cwd=clone, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning: 1 uncommitted change(s)" in done.stderr and "M README.md" in done.stderr
    import tarfile

    with tarfile.open(bundle) as archive:  # gzip, by its name
        readme = archive.extractfile("dl-rosetta/README.md").read().decode()
    assert readme != "changed, not committed\n" and readme.startswith("#")
    assert "0 wheels for Python" in done.stdout and "data            none" in done.stdout


def test_a_bundle_refuses_missing_data_and_a_folder_without_git(tmp_path):
    bundle = tmp_path / "bundle.tar"
    done = subprocess.run([sys.executable, "-m", "harness.bundle", str(bundle), "--no-gather", "--wheelhouse",
                           str(tmp_path), "--cifar10", str(tmp_path / "missing.tar.gz")],
                          cwd=REPOSITORY, capture_output=True, text=True)
    assert done.returncode == 2 and not bundle.exists()
    assert f"--cifar10 {tmp_path / 'missing.tar.gz'}: no such file or folder" in done.stderr
    exported = tmp_path / "no-git"
    exported.mkdir()
    subprocess.run(f"git -C {REPOSITORY} archive HEAD | tar -x -C {exported}", shell=True, check=True)
    done = subprocess.run([sys.executable, "-m", "harness.bundle", str(bundle), "--no-gather", "--wheelhouse",
                           str(tmp_path)], cwd=exported, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(exported), "GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert done.returncode == 2 and not bundle.exists()
    assert "a bundle is made from a git checkout" in done.stderr


def test_the_readme_gives_the_user_step_the_bundle_prints():
    """The user step in README.md is the one `make bundle` prints, with the specs' pins."""
    from harness import bundle

    readme = (REPOSITORY / "README.md").read_text()
    step = bundle.user_step("wheels")
    assert step in readme
    assert " && ".join(step.splitlines()) in readme  # the bundle's three commands
    assert f"'{wheels.keras_requirement()}'" in step and "'jax2onnx==0.17.1'" in step


def test_make_wheels_names_the_interpreter_and_refuses_a_python_found_nowhere(tmp_path):
    dry = subprocess.run(["make", "-n", "wheels", f"WHEELHOUSE={tmp_path}", "WHEELS_PYTHON=3.12",
                          "WHEELS_INTERPRETER=/opt/py312/bin/python"], cwd=REPOSITORY, capture_output=True, text=True)
    assert f"-m harness.wheels {tmp_path} --python-version 3.12 --interpreter /opt/py312/bin/python" in dry.stdout
    done = subprocess.run(["make", "wheels", f"WHEELHOUSE={tmp_path / 'w'}", "WHEELS_PYTHON=3.99",
                           f"PYTHON={sys.executable}"], cwd=REPOSITORY, capture_output=True, text=True)
    assert done.returncode != 0 and "needs a Python 3.99 interpreter" in done.stderr
    assert not (tmp_path / "w").exists()


def test_the_install_hint_for_ipykernel_from_a_wheelhouse_without_debugpy_is_two_commands(tmp_path, monkeypatch):
    from harness import existing

    monkeypatch.setenv("ROSETTA_WHEELHOUSE", str(tmp_path))
    source = f"--no-index --find-links {tmp_path}"
    assert existing.install_hint("/opt/py", ["keras==3.15.1", "ipykernel"]) == \
        f"/opt/py -m pip install {source} 'keras==3.15.1' ipykernel"  # no kernel list: as pip resolves it
    (tmp_path / venvs.KERNEL_LIST).write_text("comm>=0.1.1\n")
    assert existing.install_hint("/opt/py", ["keras==3.15.1", "ipykernel"]) == (
        f"/opt/py -m pip install {source} -r {tmp_path / venvs.KERNEL_LIST} 'keras==3.15.1' && "
        f"/opt/py -m pip install {source} --no-deps ipykernel ipython")
    assert existing.install_hint("/opt/py", ["pooch"]) == f"/opt/py -m pip install {source} pooch"
