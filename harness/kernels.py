"""The Jupyter kernel of each framework environment: making it ready, registering it, and
what it sees.

    rosetta envs                              # every framework, the flavour this machine suits
    rosetta envs pytorch --flavour cpu
    rosetta envs pytorch jax --python /opt/venv/bin/python3   # an interpreter that already has them

``create`` builds the framework's venv (``harness.venvs``) unless one built from the current
spec is there: one that another clone built in a shared ``ROSETTA_ENVS_DIR`` is only
registered here, never removed and rebuilt. An existing environment is an interpreter that
already holds the framework (a vendor container, a cloud image, a conda environment):
``harness/existing.py`` probes it and registers it as the kernel, and nothing is installed
into it, changed or removed.

Either way the kernel ``rosetta-ENV`` is registered in the harness's own prefix, where
papermill run from the harness finds it, and everything the kernel needs beyond the
interpreter lives in the kernel's own ``kernel.json``: this repository on PYTHONPATH
(so ``import common`` works on any interpreter, however old), library folders on
LD_LIBRARY_PATH (NVIDIA's library wheels, links to system libraries under older sonames),
and under ``metadata.rosetta`` where the environment came from, which every record of a
run in it repeats (``provenance``).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import REPOSITORY
from harness import interpreters, venvs
from harness.frameworks import Framework


LAUNCHER = "common.kernel_launcher"  # every kernel's entry point: ipykernel's, with a quick exit at the end


def create(framework: Framework, flavour: str, force: bool = False) -> Path:
    """Builds (or reuses) the framework's environment and registers its kernel.

    An environment that is up to date is reused; if only its kernel is missing (another
    clone built it in a shared ``ROSETTA_ENVS_DIR``), the kernel is registered and the
    environment kept as it is.
    """
    path = venvs.env_path(framework)
    if not force and venvs.is_built(framework, flavour):
        info = kernel_info(framework)
        if info and info.get("kind") == "built" and info.get("python") == str(venvs.env_python(framework)) \
                and Path(info.get("repository", "")) == REPOSITORY and _argv_is_current(framework):
            print(f"{framework.label}: environment {path} ({flavour}) is up to date.")
        else:
            register_built(framework, flavour)
            print(f"{framework.label}: environment {path} ({flavour}) is up to date; "
                  f"registered its kernel {framework.kernel} here.")
        return path
    venvs.build(framework, flavour)
    if framework.sonames:
        link_sonames(framework)
    register_built(framework, flavour)
    found = versions(framework)
    if found.startswith("broken"):
        raise venvs.EnvironmentBuildError(f"{framework.label} was installed in {path} but does not import: {found}")
    if framework.cpu_probe:
        probe = subprocess.run([venvs.env_python(framework), "-c", framework.cpu_probe],
                               env=kernel_environment(framework))
        if flavour == "cpu" and probe.returncode != 0:
            print(f"  warning: the cpu environment of {framework.label} holds a CUDA build; "
                  "it works on the CPU but is larger than needed.")
        elif flavour == "cuda" and probe.returncode == 0:
            print(f"  warning: the cuda environment of {framework.label} holds a CPU build ({found}): its "
                  "notebooks will train on the CPU. pip chose a CPU wheel for the spec "
                  f"{venvs.spec_file(framework, flavour).name}: check its pins against the wheels that "
                  "pip's find-links and extra indexes offer.")
    venvs.mark_built(framework, flavour)
    print(f"{framework.label}: ready ({found}), kernel {framework.kernel}.")
    return path


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
    if not venvs.env_python(framework).exists():
        if framework.python and interpreters.find_python(framework.python) is None:
            return interpreters.missing_python(framework)
        return (f"its environment is not built: run `rosetta envs {framework.name}` "
                "(or `--python PATH` to use an interpreter that has it)")
    if info is None:
        return f"its kernel {framework.kernel} is not registered here: run `rosetta envs {framework.name}` " \
               "(this registers it and keeps the environment)"
    return None


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


def versions(framework: Framework) -> str:
    """What the built environment's probe prints (its framework's version), or why it cannot."""
    if not venvs.env_python(framework).exists():
        return "not built"
    done = subprocess.run([venvs.env_python(framework), "-c", framework.versions_probe],
                          capture_output=True, text=True, timeout=300, env=kernel_environment(framework))
    return done.stdout.strip() if done.returncode == 0 else f"broken: {done.stderr.strip()[-300:]}"


# --- the kernel.json ------------------------------------------------------------------------

def kernels_prefix() -> Path:
    """Where kernels are registered: the prefix of the Python running the harness."""
    return Path(sys.prefix)


def kernel_dir(framework: Framework) -> Path:
    return kernels_prefix() / "share" / "jupyter" / "kernels" / framework.kernel


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


def _argv_is_current(framework: Framework) -> bool:
    """Whether the registered kernel starts through ``LAUNCHER`` (one registered by an older harness,
    through ipykernel's own launcher, is registered again)."""
    try:
        argv = json.loads((kernel_dir(framework) / "kernel.json").read_text()).get("argv") or []
    except (OSError, ValueError, AttributeError):
        return False
    return argv[1:3] == ["-m", LAUNCHER]


def register_built(framework: Framework, flavour: str) -> None:
    """Registers the kernel of the framework's built environment."""
    folders = library_folders(framework)
    spec = venvs.spec_file(framework, flavour)
    python = str(venvs.env_python(framework))
    write_kernel(framework, python, {
        "kind": "built", "python": python, "flavour": flavour,
        "spec": str(spec.relative_to(REPOSITORY)) if spec.is_relative_to(REPOSITORY) else str(spec),
    }, kernel_variables(framework, folders))
    if folders:
        print(f"  kernel {framework.kernel}: LD_LIBRARY_PATH starts with {', '.join(folders)}")


def write_kernel(framework: Framework, python: str, info: dict, variables: dict) -> Path:
    """Writes the kernel ``rosetta-ENV`` (argv, environment, provenance) into the harness's prefix."""
    folder = kernel_dir(framework)
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [python, "-m", LAUNCHER, "-f", "{connection_file}"],
            "display_name": f"Python (rosetta: {framework.env})", "language": "python",
            "env": variables, "metadata": {"rosetta": {**info, "repository": str(REPOSITORY)}}}
    temporary = folder / "kernel.json.tmp"
    temporary.write_text(json.dumps(spec, indent=1))
    os.replace(temporary, folder / "kernel.json")
    return folder


# --- the kernel's environment variables ------------------------------------------------------

def kernel_environment(framework: Framework) -> dict:
    """os.environ as the framework's kernel sees it (PYTHONPATH and LD_LIBRARY_PATH extended)."""
    info = kernel_info(framework)
    if info and info.get("kind") == "existing":
        return filled_environment(kernel_variables(framework, info.get("library_folders", []), existing=True))
    return filled_environment(kernel_variables(framework, library_folders(framework)))


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


# --- library folders and links to system libraries -------------------------------------------

def library_folders(framework: Framework, site_packages: list[str] | None = None) -> list[str]:
    """Folders the framework's shared libraries need on LD_LIBRARY_PATH: the lib folders of
    NVIDIA's CUDA library wheels (mxnet-cu112 and CuPy load them by name, not from the wheels)
    in the environment's site-packages (``site_packages``: an existing interpreter's), and the
    folder of the framework's links to system libraries (``link_sonames``)."""
    if site_packages is None:
        site_packages = glob.glob(str(venvs.env_path(framework) / "lib" / "python*" / "site-packages"))
    folders = sorted(f for sp in site_packages for f in glob.glob(str(Path(sp) / "nvidia" / "*" / "lib")))
    if sonames_dir(framework).is_dir():
        folders.append(str(sonames_dir(framework)))
    return folders


def sonames_dir(framework: Framework) -> Path:
    return venvs.env_path(framework) / "lib" / "sonames"


def link_sonames(framework: Framework) -> None:
    """Links system libraries under the older sonames the framework was built against
    (``Framework.sonames``: needed name -> prefix of the system's name), in ENV/lib/sonames,
    which register_built puts on the kernel's LD_LIBRARY_PATH. Nothing where the system has
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
