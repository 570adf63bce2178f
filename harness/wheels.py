"""Gather, on a machine that reaches a package index, the wheels an offline machine needs.

    python -m harness.wheels DIR --python-version 3.12            # what `make wheels` runs
    python -m harness.wheels DIR --python-version 3.12 --skip numpy pandas matplotlib
    python -m harness.wheels DIR --python-version 3.11 --spec pytorch-cpu   # a whole environment too

DIR then holds, as wheels for that Python and platform (Linux x86_64 by default), all that
the harness and the kernels need beyond the frameworks themselves: the harness with its
tests (papermill, pandas, matplotlib, pytest, ...), what every kernel needs (ipykernel,
numpy, pooch, tqdm), keras for the Keras rows, setuptools to install this project, and
pip. ``--spec ENV-FLAVOUR`` adds a framework environment's own requirements, for building
it offline; ``--skip NAME`` leaves out packages the offline machine already has (its pip
then finds them installed, for example in a venv made with --system-site-packages).

On the offline machine, ``make bench WHEELHOUSE=DIR`` (or ``ROSETTA_WHEELHOUSE=DIR``)
installs from DIR alone, asking no index. Only the standard library is used here, so any
Python 3.9 or newer runs it, before anything is installed.
"""
from __future__ import annotations

import argparse
import ast
import platform
import re
import subprocess
import sys
from pathlib import Path

from common import REPOSITORY
from harness.venvs import COMMON_REQUIREMENTS, SPECS

# What the Keras rows add to an existing PyTorch, TensorFlow or JAX interpreter.
KERAS_SPEC = SPECS / "pytorch-cpu.txt"


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


def keras_requirement(spec: Path = KERAS_SPEC) -> str:
    """The keras the specs pin (the same in every Keras backend's environment)."""
    for line in spec.read_text().splitlines():
        if line.strip().startswith("keras"):
            return line.split("#", 1)[0].strip()
    return "keras"


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


def gather(folder: Path, python_version: str, arch: str, glibc: str, skip: list[str] = (),
           specs: list[str] = (), extra: list[str] = ()) -> list[Path]:
    """Downloads the wheels into ``folder``; returns those kept there."""
    if not re.fullmatch(r"3\.\d+", python_version):
        raise ValueError(f"--python-version must look like 3.12, got {python_version!r}")
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--dest", str(folder), "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp"]
    for tag in platforms(arch, glibc):
        command += ["--platform", tag]
    for spec in specs:
        path = SPECS / f"{spec}.txt"
        if not path.is_file():
            known = sorted(p.stem for p in SPECS.glob("*-c*.txt"))
            raise ValueError(f"--spec {spec}: {path} does not exist; known: {', '.join(known)}")
        command += ["-r", str(path)]
    command += [*requirements(), *extra]
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise SystemExit(f"pip download failed (exit code {done.returncode}); see its output above.")
    skipped = {normalise(name) for name in skip}
    kept = []
    for wheel in sorted(folder.glob("*.whl")):
        if normalise(wheel.name.split("-", 1)[0]) in skipped:
            wheel.unlink()
        else:
            kept.append(wheel)
    return kept


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
    args = parser.parse_args(argv)
    try:
        kept = gather(args.folder, args.python_version, args.arch, args.glibc, args.skip, args.spec)
    except ValueError as error:
        print(f"harness.wheels: {error}", file=sys.stderr)
        return 2
    size = sum(wheel.stat().st_size for wheel in kept)
    print(f"{len(kept)} wheels, {size / 2**20:.1f} MiB, in {args.folder.resolve()}")
    print(f"offline: make bench WHEELHOUSE={args.folder.resolve()} (or export ROSETTA_WHEELHOUSE={args.folder.resolve()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
