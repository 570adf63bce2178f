"""One isolated environment per framework, registered as a Jupyter kernel.

    rosetta envs                  # every framework, the flavour this machine suits
    rosetta envs pytorch --flavour cpu

Each environment is a venv under ``envs/`` (or ``$ROSETTA_ENVS_DIR``) holding the
framework's requirement spec ``harness/envs/NAME-FLAVOUR.txt``, ipykernel and this
project (for ``common``). Its kernel ``rosetta-NAME`` is registered in the
harness's own prefix, where papermill run from the harness finds it. An
environment whose spec has not changed since it was built is left as it is.
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

from harness import REPOSITORY
from harness.frameworks import Framework

SPECS = Path(__file__).resolve().parent / "envs"
FLAVOURS = ("cpu", "cuda")
MARKER = ".rosetta-env.json"


class EnvironmentBuildError(RuntimeError):
    """An environment could not be built; the message says what failed."""


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


def _fingerprint(framework: Framework, flavour: str) -> dict:
    spec = spec_file(framework, flavour).read_bytes()
    project = (REPOSITORY / "pyproject.toml").read_bytes()
    return {"flavour": flavour, "spec_sha256": hashlib.sha256(spec + project).hexdigest()}


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


def create(framework: Framework, flavour: str, python: str | None = None, force: bool = False) -> Path:
    """Builds (or reuses) the framework's environment and registers its kernel."""
    path = env_path(framework)
    if not force and is_current(framework, flavour):
        print(f"{framework.label}: environment {path} ({flavour}) is up to date.")
        return path
    python = python or os.environ.get(f"ROSETTA_PYTHON_{framework.env.upper()}") or sys.executable
    print(f"{framework.label}: building the {flavour} environment in {path} with {python}", flush=True)
    if path.exists():
        shutil.rmtree(path)
    _run([python, "-m", "venv", path], f"creating the venv {path}")
    text, notes = effective_spec(spec_file(framework, flavour))
    for note in notes:
        print("  note:", note)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as spec:
        spec.write(text)
    try:
        _run([env_python(framework), "-m", "pip", "install", "--upgrade", "pip"], "upgrading pip")
        _run([env_python(framework), "-m", "pip", "install", "-r", spec.name, "ipykernel", "-e", REPOSITORY],
             f"installing {spec_file(framework, flavour).name}")
    finally:
        os.unlink(spec.name)
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
    if not env_python(framework).exists():
        return f"its environment is not built: run `rosetta envs {framework.name}`"
    if not kernel_dir(framework).is_dir():
        return f"its kernel {framework.kernel} is not registered: run `rosetta envs {framework.name}`"
    return None
