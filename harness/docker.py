"""Docker images for GPU VMs: one per framework environment, and the commands that use them.

    make docker [FRAMEWORKS="pytorch cntk"]     # python -m harness.docker build ...
    rosetta run --docker [NAME ...]             # each notebook in its image, on the GPU

The image of environment ENV is ``dl-rosetta/ENV``, built from
``docker/ENV/Dockerfile`` with the repository as its context, so that it installs
the same ``harness/envs/ENV-cuda.txt`` as ``rosetta envs`` does and registers the
kernel ``rosetta-ENV`` that the notebooks name. The repository itself is not
copied into the image: every run mounts it at ``/workspace`` (the image puts that
folder on Python's path), so a run always executes the working tree's notebooks
and ``common``.

A run's paths are host paths; ``run_command`` mounts what the notebook needs (the
repository, the results folder, the data cache, a local data copy) and translates
each path it passes (the notebook, the executed notebook, the record, the data) to
the container's view, so that the record and the executed notebook land in the
host's ``results/`` exactly where a local run puts them. Only the standard library
is used here: ``make docker`` runs this module on any Python 3.9 or newer.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from common import REPOSITORY, machine
from harness.frameworks import Framework, select
from harness.notebooks import papermill_arguments

DOCKER_DIR = REPOSITORY / "docker"
IMAGE_PREFIX = "dl-rosetta"
WORKSPACE = PurePosixPath("/workspace")  # the repository, in every container
RESULTS = PurePosixPath("/results")      # the results folder, where it lies outside the repository
DATA = PurePosixPath("/data")            # the data cache (downloads), where it lies outside both
EXTRA = PurePosixPath("/mnt/rosetta")    # anything else a run names (a local data copy, ...)

# Notebook parameters that hold host paths, and whether the notebook writes there.
PATH_PARAMETERS = {"record_path": True, "data_dir": True, "data_source": False,
                   "parity_inputs": False, "parity_outputs": True, "export_dir": True}


def docker_executable() -> list[str]:
    """The docker command: ``$ROSETTA_DOCKER`` (for example ``podman`` or ``sudo docker``), else docker."""
    return shlex.split(os.environ.get("ROSETTA_DOCKER") or "docker")


def image(framework_or_env: Framework | str) -> str:
    """The image of a framework's environment: ``dl-rosetta/ENV``."""
    env = framework_or_env.env if isinstance(framework_or_env, Framework) else framework_or_env
    return f"{IMAGE_PREFIX}/{env}"


def dockerfile(env: str) -> Path:
    return DOCKER_DIR / env / "Dockerfile"


def env_names(frameworks: Iterable[Framework]) -> list[str]:
    """The names of the environments of ``frameworks`` (one image each), each once, in order (gluon and
    mxnet share one)."""
    return list(dict.fromkeys(f.env for f in frameworks))


def build_command(env: str, build_args: Sequence[str] = (), extra: Sequence[str] = ()) -> list[str]:
    """``docker build`` of ``dl-rosetta/ENV`` from ``docker/ENV/Dockerfile``, the repository as context."""
    command = [*docker_executable(), "build", "-f", str(dockerfile(env).relative_to(REPOSITORY)),
               "-t", image(env)]
    for argument in build_args:
        command += ["--build-arg", argument]
    return [*command, *extra, "."]


@dataclass
class Mounts:
    """Host folders bound into a container, and the translation of host paths to container paths."""

    binds: list[tuple[Path, PurePosixPath, bool]] = field(default_factory=list)  # host, container, read-only

    def add(self, host: Path, container: PurePosixPath, read_only: bool = False) -> PurePosixPath:
        self.binds.append((Path(host).resolve(), PurePosixPath(container), read_only))
        return PurePosixPath(container)

    def _covering(self, host: Path) -> tuple[Path, PurePosixPath, bool] | None:
        """The bind whose host folder holds ``host`` (the deepest one), or None."""
        host = Path(host).resolve()
        found = [b for b in self.binds if host == b[0] or b[0] in host.parents]
        return max(found, key=lambda b: len(b[0].parts)) if found else None

    def covers(self, host: Path, writable: bool = False) -> bool:
        bind = self._covering(host)
        return bind is not None and not (writable and bind[2])

    def ensure(self, host: Path, writable: bool = False) -> None:
        """Binds the folder of ``host`` (``host`` itself where it is a folder) unless a bind holds it."""
        host = Path(host).resolve()
        if self.covers(host, writable):
            return
        folder = host if host.is_dir() else host.parent
        self.add(folder, EXTRA / str(len([b for b in self.binds if EXTRA in b[1].parents])),
                 read_only=not writable)

    def container_path(self, host: Path) -> PurePosixPath:
        """Where the container sees ``host``; ValueError if no bind holds it."""
        host = Path(host).resolve()
        bind = self._covering(host)
        if bind is None:
            raise ValueError(f"{host} is not mounted in the container")
        return bind[1].joinpath(*host.relative_to(bind[0]).parts)

    def host_path(self, container: PurePosixPath | str) -> Path:
        """The host path behind a container path (the inverse of ``container_path``)."""
        container = PurePosixPath(container)
        found = [b for b in self.binds if container == b[1] or b[1] in container.parents]
        if not found:
            raise ValueError(f"{container} is not a mounted path")
        host, inside, _ = max(found, key=lambda b: len(b[1].parts))
        return host.joinpath(*container.relative_to(inside).parts)

    def volume_options(self) -> list[str]:
        options = []
        for host, container, read_only in self.binds:
            options += ["-v", f"{host}:{container}" + (":ro" if read_only else "")]
        return options


def container_name(record_path: Path) -> str:
    """A container name unique to one run (its record's stem and this process), so that a
    timeout can stop it."""
    return "rosetta-" + re.sub(r"[^A-Za-z0-9_.-]", "-", Path(record_path).stem) + f"-{os.getpid()}"


def _user_options() -> list[str]:
    """Runs as the calling user, so that what the notebook writes belongs to them on the host;
    HOME=/tmp gives Jupyter, Theano, CuPy and matplotlib a writable home."""
    if not hasattr(os, "getuid"):
        return []
    return ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]


def run_command(framework: Framework, notebook: Path, executed: Path, parameters: dict,
                results: Path, name: str, data_dir: Path | None = None, gpus: str | None = "all",
                ) -> tuple[list[str], Mounts]:
    """``docker run ... dl-rosetta/ENV python -m papermill ...`` for one notebook, and its mounts.

    ``parameters`` hold host paths (as for a local run); the command passes them
    translated to container paths. ``gpus`` is docker's ``--gpus`` value (None: no GPU).
    """
    mounts = Mounts()
    mounts.add(REPOSITORY, WORKSPACE)
    results = Path(results).resolve()
    if not mounts.covers(results, writable=True):
        mounts.add(results, RESULTS)
    if data_dir is not None and not mounts.covers(data_dir, writable=True):
        mounts.add(data_dir, DATA)
    for path, writable in [(notebook, False), (executed, True)]:
        mounts.ensure(path, writable)
    inside = dict(parameters)
    for key, writable in PATH_PARAMETERS.items():
        if inside.get(key) is not None:
            host = Path(str(inside[key])).expanduser().resolve()
            mounts.ensure(host, writable)
            inside[key] = str(mounts.container_path(host))
    papermill = ["python", "-m", "papermill",
                 *papermill_arguments(mounts.container_path(notebook), mounts.container_path(executed),
                                      framework.kernel, WORKSPACE, inside)]
    command = [*docker_executable(), "run", "--rm", "--name", name,
               *(["--gpus", gpus] if gpus else []), "--shm-size", "4g",
               *_user_options(), "-e", "PYTHONUNBUFFERED=1", *_thread_options(inside.get("threads")),
               *mounts.volume_options(),
               "-w", str(WORKSPACE), image(framework), *papermill]
    return command, mounts


def _thread_options(threads) -> list[str]:
    """The thread variables of ``processes.kernel_environment``, for the container (``-e NAME=VALUE``)."""
    return [option for name, value in machine.thread_variables(threads).items()
            for option in ("-e", f"{name}={value}")]


def stop(name: str) -> None:
    """Stops a run's container (``docker kill``); a stopped client leaves its container running."""
    try:
        subprocess.run([*docker_executable(), "kill", name], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        pass


def unavailable_reason(framework: Framework) -> str | None:
    """Why the framework's image cannot run now (no docker, no engine, no image), or None."""
    command = [*docker_executable(), "image", "inspect", "--format", "{{.Id}}", image(framework)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        return (f"`{command[0]}` is not installed: `rosetta run --docker` needs Docker and the "
                "NVIDIA Container Toolkit (see README, 'Docker')")
    except (OSError, subprocess.SubprocessError) as error:
        return f"`{' '.join(command)}` failed: {error}"
    if done.returncode == 0:
        return None
    error = (done.stderr or done.stdout).strip()
    if "no such image" in error.lower() or "not found" in error.lower() or "image not known" in error.lower():
        return f"its image {image(framework)} is not built: run `make docker FRAMEWORKS={framework.name}`"
    return f"docker cannot inspect {image(framework)}: {error.splitlines()[-1] if error else done.returncode}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.docker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the images of the named frameworks (default: all)")
    build.add_argument("frameworks", nargs="*", metavar="NAME")
    build.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE",
                       help="passed to docker build (for example BASE_IMAGE=... where a base tag was withdrawn)")
    build.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    try:
        envs = env_names(select(args.frameworks))
    except ValueError as error:
        print(f"harness.docker: {error}", file=sys.stderr)
        return 2
    failed = []
    for env in envs:
        command = build_command(env, args.build_arg)
        print("$", shlex.join(command), flush=True)
        if args.dry_run:
            continue
        try:
            code = subprocess.run(command, cwd=REPOSITORY).returncode
        except FileNotFoundError:
            print(f"harness.docker: `{command[0]}` is not installed; Docker is needed to build images.",
                  file=sys.stderr)
            return 1
        if code != 0:
            failed.append(image(env))
    if failed:
        print(f"could not build: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
