"""The rehearsal's "image": a Python 3.12 venv imitating a typical GPU machine's interpreter.

It holds what such machines carry (tests/rehearsal-image-py312.txt, pinned): torch, jax with
flax and optax, onnx, onnxruntime, numpy 2, pandas 3, matplotlib and tqdm, and none of
papermill, ipykernel, jupyter, pooch, keras or jax2onnx, which the README's user step brings.
torch is PyPI's build, which is the CUDA one: with its nvidia-* wheels about 3 GB (a CPU-only
wheel for Python 3.12 may not be reachable, and this is what a GPU machine has; it trains on
the CPU like any other); jaxlib is the CPU build.

It is built once, with the package index, under the environments' folder
(``envs/rehearsal-py312``, or ``$ROSETTA_ENVS_DIR``), on the Python 3.12 that ``rosetta envs``
would find (``$ROSETTA_PYTHON312``, python3.12 on the PATH, or pyenv's newest 3.12), and kept
between test runs: a marker holds the spec's fingerprint, and the venv is rebuilt only when
the spec changes. Nothing may ever change it once built (tests/test_rehearsal.py checks).

    python tests/rehearsal_image.py     build it now (if not up to date), print its time and size
                                        (`make test` runs this first)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import interpreters, venvs  # noqa: E402

SPEC = Path(__file__).with_name("rehearsal-image-py312.txt")
NAME = "rehearsal-py312"
VERSION = "3.12"
MARKER = ".rehearsal-image.json"
# What a build needs free under the environments' folder: the image is about 5.6 GiB installed,
# and pip holds its downloads (about 3 GiB) in a temporary folder until it has installed them.
NEED_GIB = 10


def snapshot(prefix: Path) -> dict:
    """Every file and link under ``prefix``: size, modification time and mode."""
    found = {}
    for root, folders, files in os.walk(prefix):
        for name in folders + files:
            path = Path(root) / name
            info = path.lstat()
            found[str(path.relative_to(prefix))] = (info.st_size, info.st_mtime_ns, info.st_mode)
    return found


def changes(before: dict, after: dict) -> list:
    return sorted([f"added {p}" for p in after.keys() - before.keys()]
                  + [f"removed {p}" for p in before.keys() - after.keys()]
                  + [f"changed {p}" for p in before.keys() & after.keys() if before[p] != after[p]])


class ImageError(RuntimeError):
    """The image could not be built; the message says why."""


def path() -> Path:
    return venvs.envs_dir() / NAME


def python() -> Path:
    return path() / "bin" / "python"


def fingerprint() -> dict:
    return {"spec_sha256": hashlib.sha256(SPEC.read_bytes()).hexdigest()}


def is_built() -> bool:
    marker = path() / MARKER
    if not marker.is_file() or not python().exists():
        return False
    try:
        return json.loads(marker.read_text()) == fingerprint()
    except (OSError, json.JSONDecodeError):
        return False


def size_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            total += (Path(root) / name).lstat().st_size
    return total


def ensure(log=print, quiet: bool = True) -> Path:
    """The image's python, built first where it is missing or its spec changed (with the index);
    ``quiet``: pip's output only where it fails, else as it comes."""
    if is_built():
        return python()
    if _failed:  # once per process: the tests that share the image do not each download it again
        raise ImageError(_failed[0])
    try:
        return _build(log, quiet)
    except ImageError as error:
        _failed.append(str(error))
        raise


_failed: list = []


def _build(log, quiet: bool) -> Path:
    base = interpreters.find_python(VERSION)
    if base is None:
        raise ImageError(f"the rehearsal needs Python {VERSION} to build its image and found none; set "
                         f"{interpreters.python_variable(VERSION)}=/path/to/python{VERSION} (or install it "
                         f"with pyenv)")
    folder = path()
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder.parent).free / 2**30
    if free < NEED_GIB:
        raise ImageError(f"rehearsal image: {folder.parent} has {free:.1f} GiB free and the build needs about "
                         f"{NEED_GIB} GiB (about 3 GiB of downloads, 5.6 GiB installed); nothing was built. "
                         f"Free some space, or set ROSETTA_ENVS_DIR to a folder on a disk with room.")
    log(f"rehearsal image: building {folder} from {SPEC.name} with {base} (about 3 GB to download, "
        f"{free:.0f} GiB free)")
    started = time.monotonic()
    # --no-cache-dir: the image is built once and kept, so pip's cache would only hold a second
    # copy of its 3 GiB of wheels.
    for command, what in (([base, "-m", "venv", str(folder)], "creating the venv"),
                          ([str(python()), "-m", "pip", "install", "--no-cache-dir", "--progress-bar", "off",
                            "-r", str(SPEC)], f"installing {SPEC}")):
        done = subprocess.run(command, capture_output=quiet, text=True)
        if done.returncode != 0:
            # A half-installed image is of no use and can hold gigabytes: give the disk back.
            shutil.rmtree(folder, ignore_errors=True)
            raise ImageError(f"rehearsal image: {what} failed (exit code {done.returncode}); the partial "
                             f"{folder} was removed"
                             + (f":\n{(done.stdout + done.stderr)[-4000:]}" if quiet else "; see the output above"))
    (folder / MARKER).write_text(json.dumps(fingerprint()))
    log(f"rehearsal image: built in {time.monotonic() - started:.0f} s, "
        f"{size_bytes(folder) / 2**30:.2f} GiB in {folder}")
    return python()


if __name__ == "__main__":
    try:
        built = is_built()
        image = ensure(quiet=False)
    except ImageError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
    if built:
        print(f"rehearsal image: up to date, {size_bytes(path()) / 2**30:.2f} GiB in {path()}")
    print(image)
