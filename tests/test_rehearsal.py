"""The offline GPU machine, rehearsed: the README's steps, as written, on an imitation of its Python.

The imitation is the rehearsal's image (tests/rehearsal_image.py: Python 3.12 with torch, jax,
flax, optax, onnx, onnxruntime, numpy 2, pandas 3, matplotlib; no papermill, ipykernel, pooch,
keras, jax2onnx or onnxscript), built once and kept. The steps are read from README.md ("One
archive: `make bundle`", under "Offline machines"):

1. on the connected machine, with the index: `make bundle WHEELS_PYTHON=3.12 CIFAR10=... IMDB=...`
   in this checkout (the tiny archives as the data; the archive written to a temporary folder).
   The bundle holds the checkout at HEAD: uncommitted changes are not rehearsed;
2. with no index reachable (``PIP_NO_INDEX=1``, pip's configuration files ignored, every proxy on a
   closed loopback port), in a temporary folder: `tar -xf ...`, the user step (`PY=... && $PY -m pip
   install --no-index --find-links wheels ...`), then `make bench PYTHON=$PY VENV_BASE=$PY
   WHEELHOUSE=wheels EXISTING_PYTHON=$PY CIFAR10=data/... IMDB=data/...` for PyTorch, Keras on
   PyTorch, JAX and Keras on JAX, one epoch on the tiny archives, with the exports (timed briefly)
   and their ONNX checks.

The user step installs into the interpreter, so that the image stays as it was built, ``$PY`` is
a copy of it made of hard links beside it (seconds, no space): pip replaces files rather than
writing into them, and the test checks that the image itself is unchanged at the end. Every
run, parity check and export must be ok, every record must name the existing interpreter and
carry the bundle's commit, and `make bench` must have changed nothing under ``$PY``'s prefix.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
import rehearsal_image

from common import REPOSITORY
from harness import wheels
from harness.frameworks import FRAMEWORKS as REGISTRY

FRAMEWORKS = ["pytorch", "keras-torch", "jax", "keras-jax"]
BENCHMARKS = ["cifar", "imdb"]
# The run's size beyond the README's command: one epoch, batches of 32 on the tiny archives, the
# exports timed briefly.
SUBSET = {"FRAMEWORKS": " ".join(FRAMEWORKS), "EPOCHS": "1", "BATCH_SIZE": "32", "DEVICE": "cpu",
          "TIMEOUT": "900", "EXPORT_BATCH_SIZES": "1 8", "EXPORT_RUNS": "3"}
STEP_TIMEOUT = {"bundle": 600, "unpack": 120, "user": 300, "bench": 1800}


# --- the README's commands -----------------------------------------------------------------

def readme_blocks(readme: Path = REPOSITORY / "README.md") -> list:
    """The shell blocks of the README's `make bundle` part of "Offline machines", each a list of
    commands with continuation lines joined: [the connected machine's, the offline machine's]."""
    text = readme.read_text()
    found = re.search(r"\n#### [^\n]*make bundle[^\n]*\n(.*?)(?=\n#|\Z)", text, re.S)
    if not found:
        raise AssertionError(f"{readme} has no heading naming `make bundle` (under 'Offline machines')")
    blocks = [[line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
              for block in re.findall(r"```sh\n(.*?)```", found.group(1), re.S)]
    if len(blocks) != 2:
        raise AssertionError(f"{readme}, `make bundle`: expected two shell blocks (this side, the other side), "
                             f"found {len(blocks)}")
    return blocks


def readme_step(commands: list, starts: str, *containing: str) -> str:
    """The one command that starts with ``starts`` and holds every one of ``containing``."""
    found = [c for c in commands if c.startswith(starts) and all(word in c for word in containing)]
    if len(found) != 1:
        raise AssertionError(f"README.md, `make bundle`: expected one command starting {starts!r} with "
                             f"{containing}, found {len(found)} among {commands}")
    return found[0]


def uncommented(command: str) -> str:
    return re.sub(r"\s+#.*$", "", command)


def with_data(command: str, cifar: Path, imdb: Path) -> str:
    """``command`` with the tiny archives for its CIFAR10= and IMDB=."""
    for name, value in (("CIFAR10", cifar), ("IMDB", imdb)):
        command, count = re.subn(rf"\b{name}=\S+", f"{name}={value}", command)
        assert count == 1, f"README.md's command names {name}= {count} times: {command}"
    return command


def with_subset(command: str) -> str:
    """The bench command with the rehearsal's frameworks and size."""
    return uncommented(command) + "".join(f" {name}='{value}'" for name, value in SUBSET.items())


def test_the_readme_steps_are_found_and_the_data_replaced():
    here, there = readme_blocks()
    bundle = with_data(readme_step(here, "make bundle", "WHEELS_PYTHON=3.12", "CIFAR10="), Path("/t/c.tar.gz"),
                       Path("/t/i.npz"))
    assert "CIFAR10=/t/c.tar.gz" in bundle and "IMDB=/t/i.npz" in bundle and "/data/" not in bundle
    assert readme_step(there, "tar -xf dl-rosetta-bundle.tar")
    assert re.match(r"PY=\S+ && \$PY -m pip install --no-index", readme_step(there, "PY="))
    bench = with_subset(readme_step(there, "make bench", "EXISTING_PYTHON=$PY", "VENV_BASE=$PY", "WHEELHOUSE="))
    assert "FRAMEWORKS='pytorch keras-torch jax keras-jax'" in bench and "EXPORT_RUNS='3'" in bench
    with pytest.raises(AssertionError, match="expected one command starting 'make nothing'"):
        readme_step(here, "make nothing")


def test_the_user_step_brings_every_exporter_the_notebooks_import():
    """An interpreter that has the frameworks may lack their exporters (torch does not require
    onnxscript): the README's user step must install each one the notebooks import."""
    exporters = {"onnxscript", "jax2onnx", "onnx_ir"}
    imported = set()
    for name in FRAMEWORKS:
        for benchmark in BENCHMARKS:
            for cell in nbformat.read(REGISTRY[name].notebook(benchmark), as_version=4).cells:
                if cell.cell_type == "code":
                    imported |= set(re.findall(r"^\s*(?:import|from)\s+(\w+)", cell.source, re.M)) & exporters
    assert {"onnxscript", "jax2onnx"} <= imported
    installed = {wheels.normalise(re.match(r"[\w.-]+", r).group(0)) for r in wheels.exporter_requirements()}
    assert {wheels.normalise(m) for m in imported} <= installed
    assert all("==" in r for r in wheels.exporter_requirements())  # as the specs pin them


# --- environments --------------------------------------------------------------------------

def clean_environment() -> dict:
    """This process's variables less those of the test run, the harness and make."""
    drop = ("ROSETTA_", "JUPYTER_", "MAKE", "MFLAGS", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def offline_environment(closed_port_url: str) -> dict:
    """No index and no network: pip's index off, its configuration files ignored, proxies on a
    closed loopback port (as the ``offline`` fixture of tests/test_offline.py)."""
    env = {k: v for k, v in clean_environment().items()
           if not k.upper().startswith("PIP_") and k.lower() not in ("no_proxy",)}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[name] = closed_port_url
    env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def run_step(name: str, command: str, cwd: Path, env: dict, logs: Path) -> str:
    """Runs one step through bash; its output goes to ``logs/NAME.log``; fails with its tail."""
    log = logs / f"{name}.log"
    started = time.monotonic()
    with log.open("w") as out:
        out.write(f"$ {command}\n")
        out.flush()
        try:
            done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=STEP_TIMEOUT[name])
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    seconds = time.monotonic() - started
    print(f"rehearsal: {name} took {seconds:.0f} s (exit {code}); log {log}")
    output = log.read_text()
    assert code == 0, f"{name} step failed ({code}): {command}\n...{output[-6000:]}"
    return output


# --- the rehearsal -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image() -> Path:
    """The image's python, built first where needed (with the index)."""
    try:
        return rehearsal_image.ensure()
    except rehearsal_image.ImageError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def closed_port():
    """A loopback port that refuses connections, for the whole module (see conftest.closed_port_url)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def rehearsal(image, closed_port, tiny_cifar, tiny_imdb, tmp_path_factory):
    """The README's steps; yields what the tests look at."""
    started = time.monotonic()
    work = tmp_path_factory.mktemp("rehearsal")
    logs = work / "logs"
    logs.mkdir()
    image_prefix = image.parent.parent
    for stale in image_prefix.parent.glob(f"{rehearsal_image.NAME}-run-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    image_before = rehearsal_image.snapshot(image_prefix)
    here, there = readme_blocks()

    # The connected machine: the bundle, written into the rehearsal's folder.
    archive = work / "dl-rosetta-bundle.tar"
    bundle = with_data(uncommented(readme_step(here, "make bundle", "WHEELS_PYTHON=3.12", "CIFAR10=")),
                       tiny_cifar, tiny_imdb) + f" BUNDLE={archive}"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True,
                            check=True).stdout.strip()  # what the bundle holds (read before it is made)
    made = run_step("bundle", bundle, REPOSITORY, clean_environment(), logs)

    # The offline machine: PY is a copy of the image (hard links), where the user step installs.
    user_python = Path(tempfile.mkdtemp(prefix=f"{rehearsal_image.NAME}-run-", dir=image_prefix.parent))
    try:
        linked = subprocess.run(["cp", "-a", "--link", f"{image_prefix}/.", str(user_python)], capture_output=True)
        if linked.returncode != 0:  # another file system: a plain copy
            subprocess.run(["cp", "-a", f"{image_prefix}/.", str(user_python)], check=True)
        py = user_python / "bin" / "python"
        env = offline_environment(closed_port)
        run_step("unpack", uncommented(readme_step(there, "tar -xf dl-rosetta-bundle.tar")), work, env, logs)
        checkout = work / "dl-rosetta"
        old_results = {p.relative_to(checkout) for p in (checkout / "results").rglob("*")}
        user = re.sub(r"^PY=\S+", f"PY={py}", uncommented(readme_step(there, "PY=")))
        run_step("user", user, checkout, env, logs)
        before = rehearsal_image.snapshot(user_python)
        bench = with_subset(readme_step(there, "make bench", "EXISTING_PYTHON=$PY", "VENV_BASE=$PY", "WHEELHOUSE="))
        output = run_step("bench", bench, checkout, env | {"PY": str(py)}, logs)
        after = rehearsal_image.snapshot(user_python)
        results = checkout / "results"
        new = sorted(p for p in results.rglob("*.json") if p.relative_to(checkout) not in old_results)
        print(f"rehearsal: {time.monotonic() - started:.0f} s in all; the bundle:\n"
              + made[made.find("bundle "):made.find("on the offline machine")])
        yield {"py": str(py), "commit": commit, "output": output, "results": results, "new": new,
               "bench_changes": rehearsal_image.changes(before, after), "logs": logs, "checkout": checkout,
               "image_check": lambda: rehearsal_image.changes(image_before, rehearsal_image.snapshot(image_prefix))}
    finally:
        shutil.rmtree(user_python, ignore_errors=True)


def expected() -> list:
    return sorted((REGISTRY[name].label, benchmark) for name in FRAMEWORKS for benchmark in BENCHMARKS)


def new_records(rehearsal, folder: str) -> list:
    return [json.loads(p.read_text()) for p in rehearsal["new"] if p.parent.name == folder]


@pytest.mark.kernel
def test_every_run_is_ok_in_the_existing_interpreter_and_carries_the_commit(rehearsal):
    records = new_records(rehearsal, "records")
    assert not (rehearsal["checkout"] / ".git").exists()  # the commit comes from the bundle's COMMIT
    assert (rehearsal["checkout"] / "COMMIT").read_text() == rehearsal["commit"] + "\n"
    assert sorted((r["framework"], r["benchmark"]) for r in records) == expected(), \
        f"{[(r['framework'], r['benchmark'], r['status']) for r in records]}"
    for run in records:
        where = f"{run['framework']}/{run['benchmark']}"
        assert run["status"] == "ok", f"{where}: {run['status']}: {run.get('error')}"
        assert run["kernel_environment"]["kind"] == "existing", where
        assert run["kernel_environment"]["python"] == rehearsal["py"], where
        assert run["environment"]["python"].startswith("3.12"), where
        assert run["environment"].get("git_commit") == rehearsal["commit"], where
        assert run["export"], f"{where}: no export folder"
        # The image's own versions, its torch a CUDA build (PyPI's), its jaxlib a CPU one.
        torch_row = run["framework"] in (REGISTRY["pytorch"].label, REGISTRY["keras-torch"].label)
        assert run["kernel_environment"]["cuda_build"] is torch_row, where
        assert ("torch 2.11.0" if torch_row else "jax 0.11.2") in run["kernel_environment"]["versions"], where
        timed = json.loads((rehearsal["results"] / run["export"] / "export.json").read_text())["framework_latencies"]
        assert [entry["batch_size"] for entry in timed] == [1, 8] and timed[0]["runs"] == 3, where  # EXPORT_*
    table = (rehearsal["results"] / "README.md").read_text()
    from harness import report

    # the Versions column names it as its environment's folder and bin/NAME, no path of this machine: the
    # table is rendered by the bundle's checkout, outside of which this interpreter lies
    assert report.portable_path("/elsewhere/ENV/bin/python") == "ENV/bin/python"
    assert f"(existing environment {'/'.join(Path(rehearsal['py']).parts[-3:])})" in table
    assert rehearsal["py"] not in table


@pytest.mark.kernel
def test_every_parity_check_is_equivalent(rehearsal):
    checks = new_records(rehearsal, "parity")
    assert sorted((c["framework"], c["benchmark"]) for c in checks) == \
        expected()
    for check in checks:
        assert check["status"] == "ok" and check["equivalent"], f"{check['framework']}/{check['benchmark']}: " \
                                                                f"{check.get('message')}"


@pytest.mark.kernel
def test_every_export_passes_its_checks_in_onnx_runtime(rehearsal):
    checks = new_records(rehearsal, "onnx")
    assert sorted((c["framework"], c["benchmark"]) for c in checks) == \
        expected()
    for check in checks:
        assert check["ok"] and check["status"] == "ok", f"{check['framework']}/{check['benchmark']}: " \
                                                       f"{check['status']}: {check.get('message')}"


IMPORTABLE = "import importlib.util as u, json, sys; print(json.dumps({m: u.find_spec(m) is not None for m in sys.argv[1:]}))"


@pytest.mark.kernel
def test_the_harness_venv_came_from_the_folder_without_debugpy_and_jedi(rehearsal):
    """make bench built the checkout's .venv with no index: papermill from the folder (with aiohttp,
    which it needs on 3.12 only), ipykernel and IPython without the debugger and completion."""
    wheelhouse = rehearsal["checkout"] / "wheels"
    assert f"--no-index --find-links {wheelhouse}" in rehearsal["output"]
    assert f"--no-index --find-links {wheelhouse} --no-deps ipykernel ipython" in rehearsal["output"]
    kernel = {"ipykernel": True, "IPython": True, "debugpy": False, "jedi": False}
    for python, expected in ((rehearsal["checkout"] / ".venv" / "bin" / "python",
                              {"papermill": True, "aiohttp": True, **kernel}), (rehearsal["py"], kernel)):
        done = subprocess.run([str(python), "-c", IMPORTABLE, *expected], capture_output=True, text=True)
        assert json.loads(done.stdout) == expected, python


@pytest.mark.kernel
def test_the_bench_wrote_nothing_under_the_interpreter_and_the_image_is_as_built(rehearsal):
    assert not rehearsal["bench_changes"], f"make bench changed {rehearsal['py']}'s prefix: " \
                                           f"{rehearsal['bench_changes'][:20]}"
    changed = rehearsal["image_check"]()
    assert not changed, f"the image {rehearsal_image.path()} changed: {changed[:20]}"
