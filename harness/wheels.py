"""Gather, on a machine that reaches a package index, the wheels an offline machine needs.

    python -m harness.wheels DIR --python-version 3.12            # what `make wheels` runs
    python -m harness.wheels DIR --python-version 3.12 --skip numpy pandas matplotlib
    python -m harness.wheels DIR --python-version 3.11 --spec pytorch-cpu   # a whole environment too

DIR then holds, as wheels for that Python and platform (Linux x86_64 by default), all that
the harness and the kernels need beyond the frameworks themselves: the harness with its
tests (papermill, pandas, matplotlib, pytest, ...), what every kernel needs (ipykernel,
numpy, pooch, tqdm), keras for the Keras rows, jax2onnx for the JAX rows' export (without
what an interpreter with JAX, Flax, ONNX and ONNX Runtime has already), setuptools to
install this project, and pip. ``--spec ENV-FLAVOUR`` adds a framework environment's own
requirements, for building it offline; ``--skip NAME`` leaves out packages the offline
machine already has (its pip then finds them installed, for example in a venv made with
--system-site-packages).

pip judges environment markers (``aiohttp; python_version >= "3.12"``) by the interpreter
that runs it, whatever ``--python-version`` says, so ``pip download`` runs in an interpreter
of the offline machine's Python: this one if it is that version, else the one
``--interpreter`` or ``$ROSETTA_PYTHON312`` (for 3.12) names, ``python3.12`` on the PATH or
the newest pyenv 3.12.x. With none, nothing is gathered and the error says how to name one.

debugpy and jedi, which ipykernel and IPython require but need not run a notebook, are left
out; DIR's ``kernel-requirements.txt`` lists ipykernel's and IPython's other requirements,
and installs from DIR take that list, then ipykernel and IPython with ``--no-deps``.

On the offline machine, ``make bench WHEELHOUSE=DIR`` (or ``ROSETTA_WHEELHOUSE=DIR``)
installs from DIR alone, asking no index. Only the standard library is used here, so any
Python 3.9 or newer runs it, before anything is installed.
"""
from __future__ import annotations

import argparse
import ast
import email.parser
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from common import REPOSITORY
from harness import interpreters
from harness.venvs import COMMON_REQUIREMENTS, KERNEL_LIST, KERNEL_NO_DEPS, KERNEL_OPTIONAL, SPECS

# What the Keras rows add to an existing PyTorch, TensorFlow or JAX interpreter.
KERAS_SPEC = SPECS / "pytorch-cpu.txt"
# The exporters the notebooks import at their export step, each as its spec pins it: jax2onnx with
# onnx-ir (the JAX rows) and onnxscript (torch.onnx.export(..., dynamo=True), the PyTorch rows; torch
# does not require it, so an interpreter that has torch may lack it), and what they need that an
# interpreter running those rows and the ONNX checks has already (the frameworks themselves, left
# out of the folder).
EXPORTER_SPEC = SPECS / "jax-cpu.txt"
EXPORTERS = ("jax2onnx", "onnx-ir")
TORCH_EXPORTER_SPEC = SPECS / "pytorch-cpu.txt"
TORCH_EXPORTERS = ("onnxscript",)
EXPORTER_LEAVES_OUT = ("jax", "jaxlib", "flax", "optax", "scipy", "tensorstore", "onnx", "onnxruntime")
# Left out of every folder: ipykernel's and IPython's optional helpers, and parso, which only jedi needs.
LEFT_OUT = (*KERNEL_OPTIONAL, "parso")


def _toml_list(text: str, key: str) -> list[str]:
    """The list of strings assigned to ``key`` in pyproject.toml (for Pythons without tomllib)."""
    found = re.search(rf"(?m)^{re.escape(key)}\s*=\s*(\[[^\]]*\])", text)
    if not found:
        return []
    lines = [line.split("#", 1)[0] for line in found.group(1).splitlines()]
    return list(ast.literal_eval("\n".join(lines)))


def project_requirements(pyproject: Path = REPOSITORY / "pyproject.toml") -> list[str]:
    """The project's own requirements, its harness and test extras, and its build backend."""
    text = pyproject.read_text()
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return (_toml_list(text, "dependencies") + _toml_list(text, "harness") + _toml_list(text, "test")
                + _toml_list(text, "requires"))
    data = tomllib.loads(text)
    extras = data["project"].get("optional-dependencies", {})
    return (data["project"].get("dependencies", []) + extras.get("harness", []) + extras.get("test", [])
            + data.get("build-system", {}).get("requires", []))


def pinned(spec: Path, name: str) -> str:
    """The spec's requirement line for ``name`` (``keras==3.15.1``), or the bare name."""
    for line in spec.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        found = re.match(r"[A-Za-z0-9._-]+", line)
        if found and normalise(found.group(0)) == normalise(name):
            return line
    return name


def keras_requirement(spec: Path = KERAS_SPEC) -> str:
    """The keras the specs pin (the same in every Keras backend's environment)."""
    return pinned(spec, "keras")


def exporter_requirements(spec: Path = EXPORTER_SPEC, torch_spec: Path = TORCH_EXPORTER_SPEC) -> list[str]:
    """jax2onnx and onnx-ir as the JAX spec pins them, onnxscript as the PyTorch spec does."""
    return [*(pinned(spec, name) for name in EXPORTERS), *(pinned(torch_spec, name) for name in TORCH_EXPORTERS)]


def requirements() -> list[str]:
    """Everything gathered by default, each once."""
    wanted = ["pip", *project_requirements(), *COMMON_REQUIREMENTS, keras_requirement()]
    return list(dict.fromkeys(wanted))


def platforms(arch: str, glibc: str) -> list[str]:
    """pip's --platform tags for Linux wheels that run with ``glibc`` (``"2.28"``) or newer.

    pip takes each tag literally (it widens only manylinux2014 and manylinux2010), so every
    manylinux_2_X from 2.17 up to ``glibc`` is named, newest first."""
    major, minor = (int(part) for part in glibc.split("."))
    if major != 2 or minor < 17:
        raise ValueError(f"--glibc must be 2.17 or newer, got {glibc!r}")
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)]
    return tags + [f"manylinux2014_{arch}", f"linux_{arch}"]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def interpreter_for(python_version: str, given: str | None = None) -> str:
    """The interpreter that runs ``pip download`` for ``python_version``: ``given`` (which must be
    that version), this one if it is, else one found as ``rosetta envs`` finds interpreters
    ($ROSETTA_PYTHON312, python3.12 on the PATH, pyenv). ValueError naming the version where none."""
    variable = interpreters.python_variable(python_version)
    if given:
        found = interpreters.python_version(given)
        if found != python_version:
            raise ValueError(f"--interpreter {given}: expected a Python {python_version} interpreter, "
                             f"got {'Python ' + found if found else 'one that does not run'}.")
        return given
    if "%d.%d" % sys.version_info[:2] == python_version:
        return sys.executable
    found = interpreters.find_python(python_version)
    if found:
        return found
    named = os.environ.get(variable)
    searched = f"{variable}={named} is another version" if named else f"${variable} is not set"
    raise ValueError(
        f"gathering wheels for Python {python_version} needs a Python {python_version} interpreter, "
        f"since pip judges the packages' environment markers (such as papermill's "
        f"`aiohttp; python_version >= \"3.12\"`) by the interpreter that runs it; none was found "
        f"({searched}, "
        f"no python{python_version} on the PATH, no pyenv {python_version}.x). Name one with "
        f"--interpreter PATH (make wheels WHEELS_INTERPRETER=PATH) or {variable}=PATH.")


def _pip_download(python: str, dest: Path, python_version: str, arch: str, glibc: str,
                  arguments: list[str]) -> None:
    command = [python, "-m", "pip", "download", "--dest", str(dest), "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp"]
    for tag in platforms(arch, glibc):
        command += ["--platform", tag]
    command += arguments
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise SystemExit(f"pip download failed (exit code {done.returncode}); see its output above.")


def _version_key(wheel: Path) -> list:
    return [int(part) if part.isdigit() else -1 for part in re.split(r"[.+]", wheel.name.split("-")[1])]


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA, those of its extras left out."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    return [line for line in metadata.get_all("Requires-Dist") or [] if not re.search(r"\bextra\s*==", line)]


def write_kernel_list(folder: Path) -> Path | None:
    """``folder/kernel-requirements.txt``: what ipykernel and IPython require besides each other and
    debugpy and jedi, from their wheels in ``folder`` (None where neither is there)."""
    lines = []
    for package in KERNEL_NO_DEPS:
        found = sorted((w for w in folder.glob("*.whl") if normalise(w.name.split("-", 1)[0]) == package),
                       key=_version_key)
        if not found:
            continue
        lines.append(f"# {found[-1].name}")
        for requirement in wheel_requirements(found[-1]):
            name = normalise(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
            if name not in KERNEL_OPTIONAL and name not in KERNEL_NO_DEPS:
                lines.append(requirement)
    path = folder / KERNEL_LIST
    if not lines:
        path.unlink(missing_ok=True)
        return None
    path.write_text(
        "# What ipykernel and IPython need to run a notebook: their requirements without debugpy (the\n"
        "# debugger) and jedi (completion), which this folder leaves out. Install this list, then the two\n"
        f"# with --no-deps: pip install --no-index --find-links DIR -r DIR/{KERNEL_LIST}\n"
        f"#                 pip install --no-index --find-links DIR --no-deps {' '.join(KERNEL_NO_DEPS)}\n"
        + "\n".join(lines) + "\n")
    return path


def gather(folder: Path, python_version: str, arch: str, glibc: str, skip: list[str] = (),
           specs: list[str] = (), extra: list[str] = (), interpreter: str | None = None) -> list[Path]:
    """Downloads the wheels into ``folder`` with an interpreter of ``python_version``; returns
    those kept there."""
    if not re.fullmatch(r"3\.\d+", python_version):
        raise ValueError(f"--python-version must look like 3.12, got {python_version!r}")
    arguments = []
    for spec in specs:
        path = SPECS / f"{spec}.txt"
        if not path.is_file():
            known = sorted(p.stem for p in SPECS.glob("*-c*.txt"))
            raise ValueError(f"--spec {spec}: {path} does not exist; known: {', '.join(known)}")
        arguments += ["-r", str(path)]
    python = interpreter_for(python_version, interpreter)
    if python != sys.executable:
        print(f"pip download runs in {python} (Python {python_version})", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    _pip_download(python, folder, python_version, arch, glibc, [*arguments, *requirements(), *extra])
    # The exporter with what it needs, less the frameworks an interpreter running the JAX rows has.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".exporter-") as scratch:
        _pip_download(python, Path(scratch), python_version, arch, glibc, exporter_requirements())
        left_out = {normalise(name) for name in EXPORTER_LEAVES_OUT}
        for wheel in Path(scratch).glob("*.whl"):
            if normalise(wheel.name.split("-", 1)[0]) not in left_out and not (folder / wheel.name).exists():
                shutil.move(str(wheel), folder / wheel.name)
    write_kernel_list(folder)
    skipped = {normalise(name) for name in [*skip, *LEFT_OUT]}
    kept = []
    for wheel in sorted(folder.glob("*.whl")):
        if normalise(wheel.name.split("-", 1)[0]) in skipped:
            wheel.unlink()
        else:
            kept.append(wheel)
    return kept


def largest(kept: list[Path], count: int = 5) -> list[tuple[str, int]]:
    """The ``count`` largest wheels of ``kept``: each one's project name (as its file names it) and size."""
    return [(wheel.name.split("-", 1)[0], wheel.stat().st_size)
            for wheel in sorted(kept, key=lambda w: w.stat().st_size, reverse=True)[:count]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.wheels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where to put the wheels (created if missing)")
    parser.add_argument("--python-version", default="%d.%d" % sys.version_info[:2],
                        help="the offline machine's Python, e.g. 3.12 (default: this one's)")
    parser.add_argument("--arch", default=platform.machine() or "x86_64", help="x86_64 or aarch64 (default: this machine's)")
    parser.add_argument("--glibc", default="2.28",
                        help="the oldest glibc the wheels may need (default 2.28; `ldd --version` on the offline machine)")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME",
                        help="packages the offline machine already has (for example numpy pandas matplotlib)")
    parser.add_argument("--spec", nargs="+", default=[], metavar="ENV-FLAVOUR",
                        help="also a framework environment's spec from harness/envs (for example pytorch-cpu)")
    parser.add_argument("--interpreter", metavar="PATH",
                        help="a Python of --python-version to run pip download (default: this one if it is that "
                             "version, else $ROSETTA_PYTHON312 for 3.12, python3.12 on the PATH, pyenv's newest 3.12.x)")
    args = parser.parse_args(argv)
    try:
        kept = gather(args.folder, args.python_version, args.arch, args.glibc, args.skip, args.spec,
                      interpreter=args.interpreter)
    except ValueError as error:
        print(f"harness.wheels: {error}", file=sys.stderr)
        return 2
    size = sum(wheel.stat().st_size for wheel in kept)
    print(f"{len(kept)} wheels, {size / 2**20:.1f} MiB, in {args.folder.resolve()}")
    print("largest: " + ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in largest(kept)))
    print(f"offline: make bench WHEELHOUSE={args.folder.resolve()} (or export ROSETTA_WHEELHOUSE={args.folder.resolve()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
