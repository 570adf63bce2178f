"""The venv of each framework environment: its requirement specs, and building it.

A built environment is a venv under ``envs/`` (or ``$ROSETTA_ENVS_DIR``) holding the
framework's requirement spec ``harness/envs/ENV-FLAVOUR.txt``, ipykernel and the few
packages ``common`` needs; ``is_built`` says whether the one there was built from the current
spec. Registering it as a Jupyter kernel, and deciding whether to build at all, is
``harness.kernels``' part (``kernels.create``).

With ``$ROSETTA_WHEELHOUSE`` set (a folder gathered by ``python -m harness.wheels``),
every pip install here takes its packages from that folder and asks no index.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from common import REPOSITORY
from harness import interpreters
from harness.frameworks import Framework

SPECS = Path(__file__).resolve().parent / "envs"
FLAVOURS = ("cpu", "cuda")
MARKER = ".rosetta-env.json"
COMMON_REQUIREMENTS = ["ipykernel", "pooch", "tqdm"]  # numpy comes from each spec
# ipykernel and IPython require debugpy (the debugger) and jedi (completion), the largest wheels a
# wheelhouse would hold, yet run a notebook without them (each is imported only where present).
# A wheelhouse (`python -m harness.wheels`) leaves them out and lists ipykernel's and IPython's other
# requirements in its KERNEL_LIST; installs from it take that list, then the two with --no-deps.
KERNEL_OPTIONAL = ("debugpy", "jedi")
KERNEL_NO_DEPS = ("ipykernel", "ipython")
KERNEL_LIST = "kernel-requirements.txt"


class EnvironmentBuildError(RuntimeError):
    """An environment could not be built; the message says what failed."""


def envs_dir() -> Path:
    return Path(os.environ.get("ROSETTA_ENVS_DIR") or REPOSITORY / "envs").expanduser()


def env_path(framework: Framework) -> Path:
    return envs_dir() / framework.env


def env_python(framework: Framework) -> Path:
    return env_path(framework) / "bin" / "python"


def default_flavour() -> str:
    """cuda where nvidia-smi finds a GPU, else cpu."""
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
            if done.returncode == 0 and "GPU" in done.stdout:
                return "cuda"
        except (OSError, subprocess.SubprocessError):
            pass
    return "cpu"


def is_built(framework: Framework, flavour: str) -> bool:
    """Whether the environment under envs/ was built from the current spec of ``flavour``
    (whichever clone built it; its kernel may still need registering here)."""
    marker = env_path(framework) / MARKER
    if not marker.is_file() or not env_python(framework).exists():
        return False
    try:
        built = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return built == _fingerprint(framework, flavour)


def build(framework: Framework, flavour: str) -> Path:
    """A fresh venv for the framework (any old one removed) with its specs installed; not yet
    marked as built (``mark_built``, once its kernel works)."""
    path = env_path(framework)
    python = interpreter(framework)
    print(f"{framework.label}: building the {flavour} environment in {path} with {python}", flush=True)
    if path.exists():
        shutil.rmtree(path)
    _run([python, "-m", "venv", path], f"creating the venv {path}")
    _run([env_python(framework), "-m", "pip", "install", *pip_source_flags(), "--upgrade",
          interpreters.newest_pip(python)], "upgrading pip")
    if framework.build_first:
        _install(framework, build_spec(framework), [])
    flags = ["--no-build-isolation"] if framework.build_first else []
    listed = kernel_list()
    if listed is None:
        _install(framework, spec_file(framework, flavour), [*COMMON_REQUIREMENTS, *flags])
    else:  # ipykernel without debugpy and jedi
        others = [r for r in COMMON_REQUIREMENTS if r != "ipykernel"]
        _install(framework, spec_file(framework, flavour), ["-r", str(listed), *others, *flags])
        _run([env_python(framework), "-m", "pip", "install", *pip_source_flags(), "--no-deps", *KERNEL_NO_DEPS],
             "installing ipykernel and IPython (without debugpy and jedi)")
    return path


def mark_built(framework: Framework, flavour: str) -> None:
    """Notes in the environment which spec it was built from (what ``is_built`` compares)."""
    (env_path(framework) / MARKER).write_text(json.dumps(_fingerprint(framework, flavour)))


def interpreter(framework: Framework) -> str:
    """The Python the framework's environment is built on, or EnvironmentBuildError saying why none."""
    override = os.environ.get(f"ROSETTA_PYTHON_{framework.env.upper()}")
    if override:
        return override
    if framework.python is None:
        return sys.executable
    found = interpreters.find_python(framework.python)
    if found is None:
        raise EnvironmentBuildError(interpreters.missing_python(framework))
    return found


def spec_file(framework: Framework, flavour: str) -> Path:
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}.")
    path = SPECS / f"{framework.env}-{flavour}.txt"
    if not path.is_file():
        raise ValueError(f"{framework.label} has no {flavour} requirement spec ({path} is missing).")
    return path


def build_spec(framework: Framework) -> Path | None:
    return SPECS / f"{framework.env}-build.txt" if framework.build_first else None


def effective_spec(path: Path) -> tuple[str, list[str]]:
    """The spec's text with index lines for unreachable hosts dropped, and notes on each drop.

    A machine that reaches PyPI but not a framework's own wheel index (a proxy that
    allows only PyPI) then installs from pip's configured indexes instead of
    retrying an index it can never reach.
    """
    lines, notes = [], []
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in ("--extra-index-url", "--index-url") and not _host_reachable(words[1]):
            notes.append(f"{words[1]} cannot be reached; installing from pip's configured indexes.")
            continue
        lines.append(line)
    return "\n".join(lines) + "\n", notes


# --- offline installs ----------------------------------------------------------------------

def wheelhouse() -> Path | None:
    """The folder of gathered wheels to install from with no index (``$ROSETTA_WHEELHOUSE``), if set."""
    folder = os.environ.get("ROSETTA_WHEELHOUSE")
    if not folder:
        return None
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise EnvironmentBuildError(f"ROSETTA_WHEELHOUSE is {folder}, which is not a folder; "
                                    "gather one with `python -m harness.wheels DIR`.")
    return path


def pip_source_flags() -> list[str]:
    """``--no-index --find-links DIR`` where a wheelhouse is set, else nothing (pip's own settings)."""
    folder = wheelhouse()
    return ["--no-index", "--find-links", str(folder)] if folder else []


def kernel_list() -> Path | None:
    """The wheelhouse's list of ipykernel's and IPython's requirements without debugpy and jedi
    (``KERNEL_LIST``), where a wheelhouse is set and holds one."""
    folder = wheelhouse()
    listed = folder / KERNEL_LIST if folder else None
    return listed if listed is not None and listed.is_file() else None


def shell_words(words: list[str]) -> str:
    """``words`` as one shell command line, each word holding a shell special (``<>=!`` or a
    space, as in ``keras==3.15.1``) in single quotes."""
    return " ".join(f"'{w}'" if any(c in w for c in "<>=! ") else w for w in words)


def kernel_install_commands(python: str, others: list[str] = ()) -> list[list[str]]:
    """The pip commands that install ipykernel and ``others`` into ``python``: one, or two from a
    wheelhouse with a kernel list (the list and ``others``, then ipykernel and IPython with --no-deps)."""
    pip = [python, "-m", "pip", "install", *pip_source_flags()]
    listed = kernel_list()
    if listed is None:
        return [[*pip, *others, "ipykernel"]]
    return [[*pip, "-r", str(listed), *others], [*pip, "--no-deps", *KERNEL_NO_DEPS]]


# --- helpers -------------------------------------------------------------------------------

def _fingerprint(framework: Framework, flavour: str) -> dict:
    spec = spec_file(framework, flavour).read_bytes()
    if framework.build_first:
        spec += build_spec(framework).read_bytes()
    spec += " ".join(COMMON_REQUIREMENTS).encode()
    return {"flavour": flavour, "spec_sha256": hashlib.sha256(spec).hexdigest()}


def _run(command: list, what: str) -> None:
    print("  $", " ".join(str(c) for c in command), flush=True)
    done = subprocess.run([str(c) for c in command])
    if done.returncode != 0:
        raise EnvironmentBuildError(f"{what} failed (exit code {done.returncode}); see the output above.")


def _install(framework: Framework, spec_path: Path, extra: list[str]) -> None:
    """pip-installs a spec (index lines for unreachable hosts dropped) and ``extra``."""
    text, notes = effective_spec(spec_path)
    for note in notes:
        print("  note:", note)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as spec:
        spec.write(text)
    try:
        _run([env_python(framework), "-m", "pip", "install", *pip_source_flags(), "-r", spec.name, *extra],
             f"installing {spec_path.name}")
    finally:
        os.unlink(spec.name)


def _host_reachable(url: str) -> bool:
    host = urlparse(url).hostname
    if not host:
        return True
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
