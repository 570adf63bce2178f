"""Interpreters that already hold a framework, used as they are instead of a built environment.

    rosetta envs pytorch jax --python /opt/venv/bin/python3
    rosetta envs --python pytorch=/a/bin/python --python jax=/b/bin/python
    ROSETTA_EXISTING_PYTHON=/opt/venv/bin/python3 rosetta bench

Each framework is probed in the interpreter (its import and versions, a CUDA build or not,
ipykernel, numpy); the interpreter is then registered as the kernel of the framework's
environment, with the probes in the kernel's metadata, which ``harness.kernels`` reads to say
whether the framework can run and every record repeats. Nothing is installed into that
interpreter, changed or removed: probes and kernels run there without writing bytecode,
and what is missing is an error naming the interpreter, the package and the command that
would install it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from common.benchmarks import BENCHMARKS
from harness import kernels, venvs
from harness.frameworks import FRAMEWORKS, Framework
from harness.wheels import normalise

# The pip package of each module a probe may find missing, where the two names differ.
PIP_NAMES = {"theano": "Theano", "lasagne": "Lasagne"}
# What every kernel needs beyond its framework (module, why), and what only some runs need.
KERNEL_NEEDS = (("ipykernel", "the kernel itself"), ("numpy", "common, every notebook"))
KERNEL_WANTS = (("pooch", "only downloads need it, not local copies ({})".format(
                    ", ".join(b.option for b in BENCHMARKS.values()))),
                ("tqdm", "only download progress bars need it"))

PROBE = r"""
import importlib.util, json, platform, sys, sysconfig
needs, wants = json.loads(sys.argv[1])
found = {"python_version": platform.python_version(), "prefix": sys.prefix, "site_packages": sorted({sysconfig.get_paths()["purelib"],
                                                        sysconfig.get_paths()["platlib"]}),
         "missing": [m for m in needs if importlib.util.find_spec(m) is None],
         "missing_optional": [m for m in wants if importlib.util.find_spec(m) is None]}
print(json.dumps(found))
"""


def _check(python: str, code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600, env=env)


def missing_module(stderr: str) -> str | None:
    """The top-level module a ModuleNotFoundError in ``stderr`` names."""
    marker = "No module named '"
    if marker not in stderr:
        return None
    return stderr.rsplit(marker, 1)[1].split("'", 1)[0].split(".")[0]


def pinned_requirement(framework: Framework, module: str) -> str:
    """The requirement to install ``module`` with: the spec's own line where it pins it."""
    package = PIP_NAMES.get(module, module)
    for flavour in venvs.FLAVOURS:
        path = venvs.SPECS / f"{framework.env}-{flavour}.txt"
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            name = re.match(r"[A-Za-z0-9._-]*", line).group(0)
            if name and normalise(name) == normalise(package):
                return re.sub(r"\[[^\]]*\]", "", line)  # without extras such as [cuda13]
    return package


def install_hint(python: str, requirements: list[str]) -> str:
    """The command that would install ``requirements`` into ``python`` (from the wheelhouse where set)."""
    if "ipykernel" in requirements:  # from a wheelhouse without debugpy and jedi: two commands
        others = [r for r in requirements if r != "ipykernel"]
        commands = venvs.kernel_install_commands(python, others)
    else:
        commands = [[python, "-m", "pip", "install", *venvs.pip_source_flags(), *requirements]]
    return " && ".join(venvs.shell_words(words) for words in commands)


def probe_existing(framework: Framework, python: str) -> dict:
    """What an existing interpreter offers the framework: {"ok", "versions", "cuda_build",
    "python_version", "error", ...}; "error" names the interpreter, what is missing and the
    command that would install it. Nothing is written into that interpreter's environment."""
    environment = kernels.filled_environment(kernels.kernel_variables(framework, [], existing=True))
    arguments = json.dumps([[m for m, _ in KERNEL_NEEDS], [m for m, _ in KERNEL_WANTS]])
    try:
        done = subprocess.run([python, "-c", PROBE, arguments], capture_output=True, text=True,
                              timeout=600, env=environment)
    except (OSError, subprocess.SubprocessError) as error:
        return {"ok": False, "error": f"{python} does not run: {error}"}
    if done.returncode != 0:
        return {"ok": False, "error": f"{python} does not run Python: {done.stderr.strip()[-300:]}"}
    found = json.loads(done.stdout.strip().splitlines()[-1])
    result = {"python_version": found["python_version"], "prefix": found["prefix"],
              "site_packages": found["site_packages"], "versions": None, "cuda_build": None}
    if framework.python and not found["python_version"].startswith(framework.python + "."):
        result.update(ok=False, error=f"{framework.label} runs on Python {framework.python}; "
                                      f"{python} is Python {found['python_version']}")
        return result
    imported = _check(python, framework.versions_probe, environment)
    missing = []
    if imported.returncode != 0:
        module = missing_module(imported.stderr)
        if module is None:
            result.update(ok=False, error=f"{python} has {framework.label}'s packages but they do not "
                                          f"import: {imported.stderr.strip()[-300:]}")
            return result
        missing.append(module)
    else:
        result["versions"] = imported.stdout.strip()
        if framework.cpu_probe:
            result["cuda_build"] = _check(python, framework.cpu_probe, environment).returncode != 0
    missing += found["missing"]
    if missing:
        requirements = [pinned_requirement(framework, m) if m not in dict(KERNEL_NEEDS) else m for m in missing]
        result.update(ok=False, missing=missing, error=(
            f"{python} has no {' and no '.join(missing)}, which {framework.label} needs; "
            f"the harness installs nothing into an existing environment: install "
            f"{'them' if len(missing) > 1 else 'it'} yourself with `{install_hint(python, requirements)}`, "
            f"or let the harness build its own environment (`rosetta envs {framework.name}` without --python)"))
        return result
    result.update(ok=True, missing_optional=found["missing_optional"])
    return result


def use_existing(framework: Framework, python: str) -> dict:
    """Probes ``python`` for the framework and registers it as the kernel of the framework's
    environment; returns the probe. The kernel is registered even where the probe failed, so
    that the framework's runs say why it cannot run (``unavailable_reason``); the probes of other
    frameworks of that environment made before with the same interpreter are kept."""
    previous = kernels.kernel_info(framework) or {}
    same = previous.get("kind") == "existing" and previous.get("python") == python
    probes = dict(previous.get("probes", {})) if same else {}
    probes[framework.name] = probe = probe_existing(framework, python)
    site_packages = next((p["site_packages"] for p in probes.values() if p.get("site_packages")), [])
    folders = kernels.library_folders(framework, site_packages)
    info = {"kind": "existing", "python": python, "probes": probes, "library_folders": folders}
    kernels.write_kernel(framework, python, info,
                              kernels.kernel_variables(framework, folders, existing=True))
    return probe


def existing_interpreters(entries: list[str], frameworks: list[Framework]) -> dict[str, str]:
    """The interpreter each environment uses, from ``--python`` entries: ``PATH`` (every selected
    framework's environment) or ``NAME=PATH`` (NAME: a framework or an environment). A PATH
    without a slash is looked up on the PATH; it is made absolute, but links are kept (a venv's
    python is a link, and resolving it would leave the venv). ValueError for a bad entry."""
    chosen: dict[str, str] = {}
    envs = {f.env for f in FRAMEWORKS.values()} | {"onnxruntime"}  # onnxruntime: the ONNX checks
    for entry in entries:
        name, _, path = entry.rpartition("=") if "=" in entry and not entry.startswith(("/", ".", "~")) \
            else ("", "", entry)
        if name:
            if name in FRAMEWORKS:
                targets = [FRAMEWORKS[name].env]
            elif name in envs:
                targets = [name]
            else:
                raise ValueError(f"--python {entry}: {name!r} is neither a framework nor an environment; "
                                 f"known: {', '.join(FRAMEWORKS)}.")
        else:
            targets = [f.env for f in frameworks]
        path = os.path.expanduser(path)
        found = path if "/" in path else shutil.which(path)
        if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
            raise ValueError(f"--python {entry}: {path!r} is not an executable interpreter.")
        found = os.path.abspath(found)
        for env in targets:
            if chosen.get(env, found) != found:
                raise ValueError(f"--python: the environment {env} was given two interpreters, "
                                 f"{chosen[env]} and {found}; its frameworks share one kernel.")
            chosen[env] = found
    return chosen


def from_variable() -> list[str]:
    """``--python`` entries from ``$ROSETTA_EXISTING_PYTHON`` (space-separated, as on the command line)."""
    return os.environ.get("ROSETTA_EXISTING_PYTHON", "").split()
