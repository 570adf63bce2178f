"""Finding Python interpreters: of a given version, and what each one says it is.

A framework that needs another interpreter (CNTK: Python 3.6) gets the one named by
``$ROSETTA_PYTHON36`` (for "3.6"), else ``python3.6`` on the PATH, else the newest pyenv
3.6.x; with none, it is unavailable, and ``missing_python`` says so.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from harness.frameworks import Framework

# The last pip each old interpreter runs: an index that does not state Requires-Python
# would otherwise offer a pip that no longer runs there.
LAST_PIP = {"3.6": "pip<22", "3.7": "pip<24.1", "3.8": "pip<25.1"}


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


def python_version(python: str) -> str | None:
    """The "X.Y" an interpreter says it is, or None when it does not run."""
    try:
        done = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def missing_python(framework: Framework) -> str:
    """Why the framework has no interpreter, and how to give it one."""
    return (f"{framework.label} needs Python {framework.python}; none found "
            f"(set {python_variable(framework.python)} or use docker/{framework.env})")


def newest_pip(python: str) -> str:
    """The pip requirement to upgrade ``python``'s pip to: the newest one that still runs there."""
    return LAST_PIP.get(python_version(python), "pip")


def python_variable(version: str) -> str:
    """The variable that names an interpreter of ``version``: ROSETTA_PYTHON36 for "3.6"."""
    return "ROSETTA_PYTHON" + version.replace(".", "")
