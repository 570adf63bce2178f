"""Running notebooks through papermill, one framework's kernel at a time.

Each run executes in a child process with its own session, under a wall-clock
timeout; the executed notebook is kept next to the run's record. A notebook
that fails, diverges (``TrainingDiverged``) or times out gets a record saying
so, with its error, and the next notebook runs. With ``RunSettings.docker`` each
notebook runs in its framework's image instead (``harness.docker``: the same
papermill command inside ``docker run``, the paths translated), and its record
and executed notebook land in the same place.
"""
from __future__ import annotations

import collections
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat

from common import data, environment, params, record
from harness import REPOSITORY, docker, environments
from harness.frameworks import Framework


@dataclass
class RunSettings:
    """What ``rosetta run`` injects into every notebook; None keeps the notebook's default."""

    epochs: int | None = None
    batch_size: int | None = None
    train_samples: int | None = None
    test_samples: int | None = None
    seed: int = params.SEED
    device: str = "auto"
    data_dir: str | None = None
    cifar_source: str | None = None
    imdb_source: str | None = None
    timeout: float = 4 * 3600.0
    docker: bool = False  # run in the framework's image dl-rosetta/ENV instead of its venv

    def notebook_parameters(self, benchmark: str, record_path: Path) -> dict:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "train_samples": self.train_samples,
            "test_samples": self.test_samples,
            "seed": self.seed,
            "device": self.device,
            "data_source": self.cifar_source if benchmark == "cifar" else self.imdb_source,
            "data_dir": self.data_dir,
            "record_path": str(record_path),
        }


def records_dir(results: Path) -> Path:
    return results / "records"


def new_stem(folder: Path, name: str) -> Path:
    """``folder/STAMP-name``, for a new run's files; a second one in the same second becomes
    ``STAMP.2-name``, which sorts after the first."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem, number = folder / f"{stamp}-{name}", 1
    while any(folder.glob(glob.escape(stem.name) + ".*")):
        number += 1
        stem = folder / f"{stamp}.{number}-{name}"
    return stem


def run_paths(results: Path, framework: Framework, benchmark: str) -> tuple[Path, Path]:
    """The record and the executed notebook of a new run, side by side."""
    stem = new_stem(records_dir(results), f"{framework.name}-{benchmark}")
    return stem.with_suffix(".json"), stem.with_suffix(".ipynb")


def notebook_error(executed: Path) -> tuple[str, str] | None:
    """The (exception name, message) of the first failing cell of an executed notebook."""
    try:
        notebook = nbformat.read(executed, as_version=4)
    except Exception:
        return None
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return output.get("ename", "Error"), output.get("evalue", "")
    return None


PAPERMILL_CELL_MARKS = re.compile(r"(Executing|Ending) Cell \d+-+")


def _stream(process: subprocess.Popen, tail: collections.deque, prefix: str) -> None:
    """Echoes the notebook's output as it comes (without papermill's cell marks), keeping a tail."""
    for line in process.stdout:
        tail.append(line)
        if not PAPERMILL_CELL_MARKS.search(line) and line.strip():
            sys.stdout.write(prefix + line)
            sys.stdout.flush()


def execute(framework: Framework, benchmark: str, settings: RunSettings, results: Path) -> dict:
    """Runs one notebook and returns its record (written to ``results/records`` in every case)."""
    record_path, executed = run_paths(results, framework, benchmark)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"[{framework.name}/{benchmark}] "
    reason = (docker.unavailable_reason if settings.docker else environments.unavailable_reason)(framework)
    if reason:
        print(prefix + f"unavailable: {reason}")
        return _write_failure(record_path, framework, benchmark, settings, "unavailable", reason, None)

    parameters = settings.notebook_parameters(benchmark, record_path)
    command, on_timeout = None, None
    if settings.docker:
        command, on_timeout = docker_command(framework, benchmark, executed, parameters, settings, results)
        print(prefix + "$ " + shlex.join(command), flush=True)
    outcome = papermill(framework.notebook(benchmark), executed, framework.kernel, parameters,
                        settings.timeout, prefix, command=command, on_timeout=on_timeout)
    if outcome.status == "ok" and record_path.is_file():
        result = record.read(record_path)
        result["notebook"] = str(executed.relative_to(results)) if executed.is_file() else None
        result["kernel_environment"] = kernel_provenance(framework, settings)
        record.write(record_path, result)
        print(prefix + f"ok in {outcome.seconds:.0f} s: accuracy {result['test_accuracy']:.4f}, "
              f"training {result['train_seconds']:.1f} s")
        return result
    if outcome.status == "ok":  # papermill succeeded, but there is no record
        status, message = "failed", "the notebook finished without writing its record"
    else:
        status, message = outcome.status, outcome.message
    if status != "timeout":  # papermill() has said so already
        print(prefix + f"{status}: {message}")
    return _write_failure(record_path, framework, benchmark, settings, status, message, executed)


def docker_command(framework: Framework, benchmark: str, executed: Path, parameters: dict,
                   settings: RunSettings, results: Path) -> tuple[list[str], Callable[[], None]]:
    """The ``docker run`` of one notebook, and how to stop its container after a timeout.

    In a local run the kernel finds the data where the harness found it (the data
    cache, ``$ROSETTA_CIFAR10``...); a container sees neither the host's
    environment nor its cache, so both are named explicitly here and mounted.
    """
    parameters = dict(parameters)
    remote = data.CIFAR10 if benchmark == "cifar" else data.IMDB
    parameters["data_source"] = parameters.get("data_source") or os.environ.get(remote.env_var) or None
    cache = data.cache_dir(parameters.get("data_dir"))
    cache.mkdir(parents=True, exist_ok=True)  # else docker would create it, owned by root
    parameters["data_dir"] = str(cache)
    name = docker.container_name(executed)
    command, _ = docker.run_command(framework, framework.notebook(benchmark), executed, parameters,
                                    results, name, data_dir=cache,
                                    gpus=None if settings.device == "cpu" else "all")
    return command, lambda: docker.stop(name)


@dataclass
class Outcome:
    """How one papermill execution ended: ok, failed, diverged or timeout, with the error."""

    status: str
    message: str | None
    returncode: int | None
    seconds: float


def papermill_command(notebook: Path, executed: Path, kernel: str, parameters: dict) -> list[str]:
    """papermill run by the harness's own Python, in the framework's registered kernel."""
    return [sys.executable, "-m", "papermill", str(notebook), str(executed),
            "--kernel", kernel, "--cwd", str(REPOSITORY),
            "--parameters_yaml", json.dumps(parameters), "--log-output", "--no-progress-bar"]


def papermill(notebook: Path, executed: Path, kernel: str, parameters: dict, timeout: float,
              prefix: str, command: list[str] | None = None,
              on_timeout: Callable[[], None] | None = None) -> Outcome:
    """Executes ``notebook`` into ``executed`` in ``kernel``, echoing its output, within ``timeout``.

    ``command`` replaces the local papermill command (``docker run ...`` for a run in
    an image); ``on_timeout`` runs after a timeout has stopped it (to stop the container).
    """
    if command is None:
        command = papermill_command(notebook, executed, kernel, parameters)
    where = f"kernel {kernel}" if command[0] == sys.executable else f"kernel {kernel} via {command[0]} {command[1]}"
    print(prefix + f"running {_shown(notebook)} in {where} (timeout {timeout:.0f} s)", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    tail: collections.deque = collections.deque(maxlen=40)
    reader = threading.Thread(target=_stream, args=(process, tail, prefix), daemon=True)
    reader.start()
    try:
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        if on_timeout is not None:
            on_timeout()
        reader.join(timeout=10)
        message = f"no result after {timeout:.0f} s; the run was stopped"
        print(prefix + "timeout: " + message)
        return Outcome("timeout", message, None, time.perf_counter() - started)
    reader.join(timeout=10)
    seconds = time.perf_counter() - started
    if returncode == 0:
        return Outcome("ok", None, 0, seconds)
    error = notebook_error(executed) if executed.is_file() else None
    if error and error[0] == "TrainingDiverged":
        return Outcome("diverged", error[1], returncode, seconds)
    if error:
        return Outcome("failed", f"{error[0]}: {error[1]}", returncode, seconds)
    return Outcome("failed", f"papermill exited with {returncode}: " + "".join(tail)[-2000:].strip(),
                   returncode, seconds)


def _shown(path: Path) -> str:
    """A path relative to the repository where it lies inside it."""
    try:
        return str(path.relative_to(REPOSITORY))
    except ValueError:
        return str(path)


def _kill_group(process: subprocess.Popen) -> None:
    """Stops papermill and the kernel it started (they share a session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def kernel_provenance(framework: Framework, settings: RunSettings) -> dict | None:
    """Where the kernel of a run came from: its docker image, or what ``environments.provenance``
    says (an environment built from its spec, or an existing interpreter and the versions found)."""
    if settings.docker:
        return {"kind": "docker", "image": docker.image(framework)}
    return environments.provenance(framework)


def target_device(settings: RunSettings) -> str:
    """The device a run was meant for: what ``--device`` says, or the GPU where one is seen."""
    if settings.device in ("cpu", "cuda"):
        return settings.device
    return "cuda" if environments.default_flavour() == "cuda" else "cpu"


def _write_failure(record_path: Path, framework: Framework, benchmark: str, settings: RunSettings,
                   status: str, message: str, executed: Path | None) -> dict:
    """The record of a run that did not get as far as writing its own: the machine it was
    meant for (so that the report files it under that device) and where its kernel came from."""
    spec = params.BENCHMARKS[benchmark]
    result = record.build(
        framework=framework.label, api=framework.api, benchmark=benchmark, status=status, error=message,
        epochs=settings.epochs or spec["epochs"], batch_size=settings.batch_size or spec["batch"],
        train_samples=settings.train_samples or spec["train"], test_samples=settings.test_samples or spec["test"],
        seed=settings.seed, notebook=str(executed.relative_to(record_path.parent.parent))
        if executed is not None and executed.is_file() else None,
        environment=environment.capture(device=target_device(settings), versions={}),
        kernel_environment=kernel_provenance(framework, settings),
    )
    record.write(record_path, result)
    return result


def run_all(frameworks: list[Framework], benchmarks: list[str], settings: RunSettings,
            results: Path) -> list[dict]:
    """Every selected notebook in turn; one failing never stops the others."""
    done = []
    selected = [(f, b) for f in frameworks for b in benchmarks if b in f.notebooks]
    for number, (framework, benchmark) in enumerate(selected, start=1):
        print(f"=== {number}/{len(selected)}: {framework.label} {benchmark} ===", flush=True)
        done.append(execute(framework, benchmark, settings, results))
    return done
