"""One isolated environment per framework, registered as a Jupyter kernel.

    rosetta envs                  # every framework, the flavour this machine suits
    rosetta envs pytorch --flavour cpu

Each environment is a venv under ``envs/`` (or ``$ROSETTA_ENVS_DIR``) holding the
framework's requirement spec ``harness/envs/ENV-FLAVOUR.txt``, ipykernel, the few
packages ``common`` needs, and a ``.pth`` file that puts this repository on its
path (so ``import common`` works on any interpreter, however old). Its kernel
``rosetta-ENV`` is registered in the harness's own prefix, where papermill run
from the harness finds it. An environment whose spec has not changed since it
was built is left as it is.

A framework that needs another interpreter (CNTK: Python 3.6) gets the one named
by ``$ROSETTA_PYTHON36`` (for "3.6"), else ``python3.6`` on the PATH, else the
newest pyenv 3.6.x; with none, it is unavailable, and says so.
"""
from __future__ import annotations

import glob
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

from harness import REPOSITORY
from harness.frameworks import Framework

SPECS = Path(__file__).resolve().parent / "envs"
FLAVOURS = ("cpu", "cuda")
MARKER = ".rosetta-env.json"


class EnvironmentBuildError(RuntimeError):
    """An environment could not be built; the message says what failed."""


COMMON_REQUIREMENTS = ["ipykernel", "pooch", "tqdm"]  # numpy comes from each spec


def envs_dir() -> Path:
    return Path(os.environ.get("ROSETTA_ENVS_DIR") or REPOSITORY / "envs").expanduser()


def env_path(framework: Framework) -> Path:
    return envs_dir() / framework.env


def env_python(framework: Framework) -> Path:
    return env_path(framework) / "bin" / "python"


def kernels_prefix() -> Path:
    """Where kernels are registered: the prefix of the Python running the harness."""
    return Path(sys.prefix)


def kernel_dir(framework: Framework) -> Path:
    return kernels_prefix() / "share" / "jupyter" / "kernels" / framework.kernel


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


def python_variable(version: str) -> str:
    return "ROSETTA_PYTHON" + version.replace(".", "")


def _is_version(python: str, version: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` ("3.6"): $ROSETTA_PYTHON36, else pythonX.Y on the PATH,
    else the newest pyenv X.Y.z; each one found is asked its version before it is used."""
    named = os.environ.get(python_variable(version))
    if named:
        return named if _is_version(named, version) else None
    candidates = [shutil.which(f"python{version}")]
    for root in filter(None, [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]):
        candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"),
                             key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()],
                             reverse=True)
    return next((c for c in candidates if c and _is_version(c, version)), None)


def interpreter(framework: Framework) -> str:
    """The Python the framework's environment is built on, or EnvironmentBuildError saying why none."""
    override = os.environ.get(f"ROSETTA_PYTHON_{framework.env.upper()}")
    if override:
        return override
    if framework.python is None:
        return sys.executable
    found = find_python(framework.python)
    if found is None:
        raise EnvironmentBuildError(missing_python(framework))
    return found


def missing_python(framework: Framework) -> str:
    return (f"{framework.label} needs Python {framework.python}; none found "
            f"(set {python_variable(framework.python)} or use docker/{framework.env})")


def spec_file(framework: Framework, flavour: str) -> Path:
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}.")
    path = SPECS / f"{framework.env}-{flavour}.txt"
    if not path.is_file():
        raise ValueError(f"{framework.label} has no {flavour} requirement spec ({path} is missing).")
    return path


def _host_reachable(url: str) -> bool:
    host = urlparse(url).hostname
    if not host:
        return True
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


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


def is_current(framework: Framework, flavour: str) -> bool:
    marker = env_path(framework) / MARKER
    if not marker.is_file() or not env_python(framework).exists() or not kernel_dir(framework).is_dir():
        return False
    try:
        built = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return built == _fingerprint(framework, flavour)


def build_spec(framework: Framework) -> Path | None:
    return SPECS / f"{framework.env}-build.txt" if framework.build_first else None


def _fingerprint(framework: Framework, flavour: str) -> dict:
    spec = spec_file(framework, flavour).read_bytes()
    if framework.build_first:
        spec += build_spec(framework).read_bytes()
    spec += " ".join(COMMON_REQUIREMENTS).encode()
    return {"flavour": flavour, "spec_sha256": hashlib.sha256(spec).hexdigest()}


def installed_flavour(framework: Framework) -> str | None:
    try:
        return json.loads((env_path(framework) / MARKER).read_text())["flavour"]
    except (OSError, ValueError, KeyError):
        return None


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
        _run([env_python(framework), "-m", "pip", "install", "-r", spec.name, *extra],
             f"installing {spec_path.name}")
    finally:
        os.unlink(spec.name)


def link_repository(framework: Framework) -> Path:
    """A .pth file in the environment's site-packages that puts this repository on its path."""
    done = subprocess.run([env_python(framework), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True)
    pth = Path(done.stdout.strip()) / "dl_rosetta.pth"
    pth.write_text(str(REPOSITORY) + "\n")
    return pth


def create(framework: Framework, flavour: str, force: bool = False) -> Path:
    """Builds (or reuses) the framework's environment and registers its kernel."""
    path = env_path(framework)
    if not force and is_current(framework, flavour):
        print(f"{framework.label}: environment {path} ({flavour}) is up to date.")
        return path
    python = interpreter(framework)
    print(f"{framework.label}: building the {flavour} environment in {path} with {python}", flush=True)
    if path.exists():
        shutil.rmtree(path)
    _run([python, "-m", "venv", path], f"creating the venv {path}")
    _run([env_python(framework), "-m", "pip", "install", "--upgrade", "pip"], "upgrading pip")
    if framework.build_first:
        _install(framework, build_spec(framework), [])
    flags = ["--no-build-isolation"] if framework.build_first else []
    _install(framework, spec_file(framework, flavour), [*COMMON_REQUIREMENTS, *flags])
    link_repository(framework)
    register_kernel(framework)
    if flavour == "cpu" and framework.cpu_probe:
        probe = subprocess.run([env_python(framework), "-c", framework.cpu_probe])
        if probe.returncode != 0:
            print(f"  warning: the cpu environment of {framework.label} holds a CUDA build; "
                  "it works on the CPU but is larger than needed.")
    (path / MARKER).write_text(json.dumps(_fingerprint(framework, flavour)))
    print(f"{framework.label}: ready, kernel {framework.kernel}.")
    return path


def register_kernel(framework: Framework) -> None:
    _run([env_python(framework), "-m", "ipykernel", "install", "--prefix", kernels_prefix(),
          "--name", framework.kernel, "--display-name", f"Python (rosetta: {framework.label})"],
         f"registering the kernel {framework.kernel}")


def versions(framework: Framework) -> str:
    """What the environment's probe prints (its framework's version), or why it cannot."""
    if not env_python(framework).exists():
        return "not built"
    done = subprocess.run([env_python(framework), "-c", framework.versions_probe],
                          capture_output=True, text=True, timeout=300)
    return done.stdout.strip() if done.returncode == 0 else f"broken: {done.stderr.strip()[-300:]}"


def unavailable_reason(framework: Framework) -> str | None:
    """Why the framework's notebooks cannot run now, or None when they can."""
    if framework.python and not env_python(framework).exists() and find_python(framework.python) is None:
        return missing_python(framework)
    if not env_python(framework).exists():
        return f"its environment is not built: run `rosetta envs {framework.name}`"
    if not kernel_dir(framework).is_dir():
        return f"its kernel {framework.kernel} is not registered: run `rosetta envs {framework.name}`"
    return None
