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


def python_version(python: str) -> str | None:
    """The "X.Y" an interpreter says it is, or None when it does not run."""
    try:
        done = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` ("3.6"): $ROSETTA_PYTHON36, else pythonX.Y on the PATH,
    else the newest pyenv X.Y.z; each one found is asked its version before it is used."""
    named = os.environ.get(python_variable(version))
    if named:
        return named if python_version(named) == version else None
    candidates = [shutil.which(f"python{version}")]
    for root in filter(None, [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]):
        candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"),
                             key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()],
                             reverse=True)
    return next((c for c in candidates if c and python_version(c) == version), None)


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
    _run([env_python(framework), "-m", "pip", "install", "--upgrade", newest_pip(python)], "upgrading pip")
    if framework.build_first:
        _install(framework, build_spec(framework), [])
    flags = ["--no-build-isolation"] if framework.build_first else []
    _install(framework, spec_file(framework, flavour), [*COMMON_REQUIREMENTS, *flags])
    link_repository(framework)
    if framework.sonames:
        link_sonames(framework)
    register_kernel(framework)
    found = versions(framework)
    if found.startswith("broken"):
        raise EnvironmentBuildError(f"{framework.label} was installed in {path} but does not import: {found}")
    if flavour == "cpu" and framework.cpu_probe:
        probe = subprocess.run([env_python(framework), "-c", framework.cpu_probe], env=kernel_environment(framework))
        if probe.returncode != 0:
            print(f"  warning: the cpu environment of {framework.label} holds a CUDA build; "
                  "it works on the CPU but is larger than needed.")
    (path / MARKER).write_text(json.dumps(_fingerprint(framework, flavour)))
    print(f"{framework.label}: ready ({found}), kernel {framework.kernel}.")
    return path


# The last pip each old interpreter runs: an index that does not state Requires-Python
# would otherwise offer a pip that no longer runs there.
LAST_PIP = {"3.6": "pip<22", "3.7": "pip<24.1", "3.8": "pip<25.1"}


def newest_pip(python: str) -> str:
    return LAST_PIP.get(python_version(python), "pip")


def library_folders(framework: Framework) -> list[str]:
    """Folders the framework's shared libraries need on LD_LIBRARY_PATH: the lib folders of
    NVIDIA's CUDA library wheels (mxnet-cu112 and CuPy load them by name, not from the wheels),
    and the folder of the framework's links to system libraries (``link_sonames``)."""
    path = env_path(framework)
    folders = sorted(glob.glob(str(path / "lib" / "python*" / "site-packages" / "nvidia" / "*" / "lib")))
    if sonames_dir(framework).is_dir():
        folders.append(str(sonames_dir(framework)))
    return folders


def kernel_environment(framework: Framework) -> dict:
    """os.environ as the framework's kernel sees it (LD_LIBRARY_PATH extended)."""
    environment = dict(os.environ)
    folders = library_folders(framework)
    if folders:
        environment["LD_LIBRARY_PATH"] = ":".join(folders + [os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    return environment


def register_kernel(framework: Framework) -> None:
    _run([env_python(framework), "-m", "ipykernel", "install", "--prefix", kernels_prefix(),
          "--name", framework.kernel, "--display-name", f"Python (rosetta: {framework.label})"],
         f"registering the kernel {framework.kernel}")
    folders = library_folders(framework)
    if folders:
        spec_path = kernel_dir(framework) / "kernel.json"
        spec = json.loads(spec_path.read_text())
        spec["env"] = {"LD_LIBRARY_PATH": ":".join(folders) + ":${LD_LIBRARY_PATH}"}  # jupyter_client fills ${...}
        spec_path.write_text(json.dumps(spec, indent=1))
        print(f"  kernel {framework.kernel}: LD_LIBRARY_PATH starts with {', '.join(folders)}")


def sonames_dir(framework: Framework) -> Path:
    return env_path(framework) / "lib" / "sonames"


def link_sonames(framework: Framework) -> None:
    """Links system libraries under the older sonames the framework was built against
    (``Framework.sonames``: needed name -> prefix of the system's name), in ENV/lib/sonames,
    which register_kernel puts on the kernel's LD_LIBRARY_PATH. Nothing where the system has
    the needed names; a warning where it has no library of that prefix."""
    try:
        listed = subprocess.run([shutil.which("ldconfig") or "/sbin/ldconfig", "-p"],
                                capture_output=True, text=True).stdout
    except OSError:
        listed = ""
    libraries = [line.split(" => ")[-1].strip() for line in listed.splitlines()
                 if " => " in line and "x86-64" in line]
    folder = sonames_dir(framework)
    for needed, prefix in framework.sonames.items():
        if any(Path(lib).name == needed for lib in libraries):
            continue
        found = [lib for lib in libraries if Path(lib).name.startswith(prefix)]
        if not found:
            print(f"  warning: no {prefix}* found; {framework.label} needs it: {framework.sonames_hint}, "
                  f"then run `rosetta envs {framework.name} --force`.")
            return
        folder.mkdir(parents=True, exist_ok=True)
        (folder / needed).symlink_to(found[0])
        print(f"  linked {found[0]} as {folder / needed}")


def versions(framework: Framework) -> str:
    """What the environment's probe prints (its framework's version), or why it cannot."""
    if not env_python(framework).exists():
        return "not built"
    done = subprocess.run([env_python(framework), "-c", framework.versions_probe],
                          capture_output=True, text=True, timeout=300, env=kernel_environment(framework))
    return done.stdout.strip() if done.returncode == 0 else f"broken: {done.stderr.strip()[-300:]}"


def unavailable_reason(framework: Framework) -> str | None:
    """Why the framework's notebooks cannot run now, or None when they can."""
    if not env_python(framework).exists():
        if framework.python and find_python(framework.python) is None:
            return missing_python(framework)
        return f"its environment is not built: run `rosetta envs {framework.name}`"
    if not kernel_dir(framework).is_dir():
        return f"its kernel {framework.kernel} is not registered: run `rosetta envs {framework.name}`"
    return None
