"""One environment per framework, registered as a Jupyter kernel: built here, or one that exists.

    rosetta envs                              # every framework, the flavour this machine suits
    rosetta envs pytorch --flavour cpu
    rosetta envs pytorch jax --python /opt/venv/bin/python3   # an interpreter that already has them

A built environment is a venv under ``envs/`` (or ``$ROSETTA_ENVS_DIR``) holding the
framework's requirement spec ``harness/envs/ENV-FLAVOUR.txt``, ipykernel and the few
packages ``common`` needs. An environment whose spec has not changed since it was built
is left as it is; one that another clone built in a shared ``ROSETTA_ENVS_DIR`` is
only registered here, never removed and rebuilt.

An existing environment is an interpreter that already holds the framework (a vendor
container, a cloud image, a conda environment): ``harness/existing.py`` probes it and
registers it as the kernel, and nothing is installed into it, changed or removed.

Either way the kernel ``rosetta-ENV`` is registered in the harness's own prefix, where
papermill run from the harness finds it, and everything the kernel needs beyond the
interpreter lives in the kernel's own ``kernel.json``: this repository on PYTHONPATH
(so ``import common`` works on any interpreter, however old), library folders on
LD_LIBRARY_PATH, and under ``metadata.rosetta`` where the environment came from, which
every record of a run in it repeats.

A framework that needs another interpreter (CNTK: Python 3.6) gets the one named
by ``$ROSETTA_PYTHON36`` (for "3.6"), else ``python3.6`` on the PATH, else the
newest pyenv 3.6.x; with none, it is unavailable, and says so.

With ``$ROSETTA_WHEELHOUSE`` set (a folder gathered by ``python -m harness.wheels``),
every pip install here takes its packages from that folder and asks no index.
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

from common import REPOSITORY
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


def build_spec(framework: Framework) -> Path | None:
    return SPECS / f"{framework.env}-build.txt" if framework.build_first else None


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


def create(framework: Framework, flavour: str, force: bool = False) -> Path:
    """Builds (or reuses) the framework's environment and registers its kernel.

    An environment that is up to date is reused; if only its kernel is missing (another
    clone built it in a shared ``ROSETTA_ENVS_DIR``), the kernel is registered and the
    environment kept as it is.
    """
    path = env_path(framework)
    if not force and is_built(framework, flavour):
        info = kernel_info(framework)
        if info and info.get("kind") == "built" and info.get("python") == str(env_python(framework)) \
                and Path(info.get("repository", "")) == REPOSITORY:
            print(f"{framework.label}: environment {path} ({flavour}) is up to date.")
        else:
            register_built(framework, flavour)
            print(f"{framework.label}: environment {path} ({flavour}) is up to date; "
                  f"registered its kernel {framework.kernel} here.")
        return path
    python = interpreter(framework)
    print(f"{framework.label}: building the {flavour} environment in {path} with {python}", flush=True)
    if path.exists():
        shutil.rmtree(path)
    _run([python, "-m", "venv", path], f"creating the venv {path}")
    _run([env_python(framework), "-m", "pip", "install", *pip_source_flags(), "--upgrade", newest_pip(python)],
         "upgrading pip")
    if framework.build_first:
        _install(framework, build_spec(framework), [])
    flags = ["--no-build-isolation"] if framework.build_first else []
    _install(framework, spec_file(framework, flavour), [*COMMON_REQUIREMENTS, *flags])
    if framework.sonames:
        link_sonames(framework)
    register_built(framework, flavour)
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


def library_folders(framework: Framework, site_packages: list[str] | None = None) -> list[str]:
    """Folders the framework's shared libraries need on LD_LIBRARY_PATH: the lib folders of
    NVIDIA's CUDA library wheels (mxnet-cu112 and CuPy load them by name, not from the wheels)
    in the environment's site-packages (``site_packages``: an existing interpreter's), and the
    folder of the framework's links to system libraries (``link_sonames``)."""
    if site_packages is None:
        site_packages = glob.glob(str(env_path(framework) / "lib" / "python*" / "site-packages"))
    folders = sorted(f for sp in site_packages for f in glob.glob(str(Path(sp) / "nvidia" / "*" / "lib")))
    if sonames_dir(framework).is_dir():
        folders.append(str(sonames_dir(framework)))
    return folders


def kernel_variables(framework: Framework, folders: list[str], existing: bool = False) -> dict:
    """The variables the kernel adds to its environment (``${NAME}`` is the inherited value,
    which jupyter_client fills in): this repository first on PYTHONPATH, the library folders
    first on LD_LIBRARY_PATH; in an existing environment, no bytecode files written into it."""
    variables = {"PYTHONPATH": f"{REPOSITORY}:${{PYTHONPATH}}"}
    if folders:
        variables["LD_LIBRARY_PATH"] = ":".join(folders) + ":${LD_LIBRARY_PATH}"
    if existing:
        variables["PYTHONDONTWRITEBYTECODE"] = "1"
    return variables


def filled_environment(variables: dict) -> dict:
    """``os.environ`` with ``variables`` applied as jupyter_client applies a kernel's."""
    environment = dict(os.environ)
    for name, value in variables.items():
        inherited = os.environ.get(name, "")
        value = value.replace(f"${{{name}}}", inherited)
        environment[name] = value.rstrip(":")
    return environment


def kernel_environment(framework: Framework) -> dict:
    """os.environ as the framework's kernel sees it (PYTHONPATH and LD_LIBRARY_PATH extended)."""
    info = kernel_info(framework)
    if info and info.get("kind") == "existing":
        return filled_environment(kernel_variables(framework, info.get("library_folders", []), existing=True))
    return filled_environment(kernel_variables(framework, library_folders(framework)))


def kernel_info(framework: Framework) -> dict | None:
    """Where the registered kernel of the framework's environment came from (the
    ``metadata.rosetta`` of its kernel.json), or None when none is registered here (or one
    registered by an older harness, which a rebuild replaces)."""
    try:
        spec = json.loads((kernel_dir(framework) / "kernel.json").read_text())
    except (OSError, ValueError):
        return None
    info = (spec.get("metadata") or {}).get("rosetta")
    return info if isinstance(info, dict) else None


def write_kernel(framework: Framework, python: str, info: dict, variables: dict) -> Path:
    """Writes the kernel ``rosetta-ENV`` (argv, environment, provenance) into the harness's prefix."""
    folder = kernel_dir(framework)
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python (rosetta: {framework.env})", "language": "python",
            "env": variables, "metadata": {"rosetta": {**info, "repository": str(REPOSITORY)}}}
    temporary = folder / "kernel.json.tmp"
    temporary.write_text(json.dumps(spec, indent=1))
    os.replace(temporary, folder / "kernel.json")
    return folder


def register_built(framework: Framework, flavour: str) -> None:
    """Registers the kernel of the framework's built environment."""
    folders = library_folders(framework)
    spec = spec_file(framework, flavour)
    write_kernel(framework, str(env_python(framework)), {
        "kind": "built", "python": str(env_python(framework)), "flavour": flavour,
        "spec": str(spec.relative_to(REPOSITORY)) if spec.is_relative_to(REPOSITORY) else str(spec),
    }, kernel_variables(framework, folders))
    if folders:
        print(f"  kernel {framework.kernel}: LD_LIBRARY_PATH starts with {', '.join(folders)}")


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
    """What the built environment's probe prints (its framework's version), or why it cannot."""
    if not env_python(framework).exists():
        return "not built"
    done = subprocess.run([env_python(framework), "-c", framework.versions_probe],
                          capture_output=True, text=True, timeout=300, env=kernel_environment(framework))
    return done.stdout.strip() if done.returncode == 0 else f"broken: {done.stderr.strip()[-300:]}"


def provenance(framework: Framework) -> dict | None:
    """Where the framework's kernel comes from, for its records: {"kind": "built", "spec",
    "flavour", "python"} or {"kind": "existing", "python", "python_version", "versions",
    "cuda_build"}; None where no kernel is registered."""
    info = kernel_info(framework)
    if info is None:
        return None
    if info.get("kind") == "existing":
        probe = info.get("probes", {}).get(framework.name) or {}
        return {"kind": "existing", "python": info.get("python"), "python_version": probe.get("python_version"),
                "versions": probe.get("versions"), "cuda_build": probe.get("cuda_build")}
    return {key: info.get(key) for key in ("kind", "spec", "flavour", "python")}


def unavailable_reason(framework: Framework) -> str | None:
    """Why the framework's notebooks cannot run now, or None when they can."""
    info = kernel_info(framework)
    if info and info.get("kind") == "existing":
        probe = info.get("probes", {}).get(framework.name)
        python = info.get("python")
        if not python or not Path(python).exists():
            return f"its kernel names the existing interpreter {python}, which is gone: run " \
                   f"`rosetta envs {framework.name} --python PATH` (or without --python to build one)"
        if probe is None:
            return f"its kernel uses the existing interpreter {python}, not yet checked for {framework.label}: " \
                   f"run `rosetta envs {framework.name} --python {python}`"
        return None if probe.get("ok") else probe.get("error")
    if not env_python(framework).exists():
        if framework.python and find_python(framework.python) is None:
            return missing_python(framework)
        return (f"its environment is not built: run `rosetta envs {framework.name}` "
                "(or `--python PATH` to use an interpreter that has it)")
    if info is None:
        return f"its kernel {framework.kernel} is not registered here: run `rosetta envs {framework.name}` " \
               "(this registers it and keeps the environment)"
    return None
