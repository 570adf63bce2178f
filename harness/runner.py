"""Running notebooks through papermill, one framework's kernel at a time.

Each run executes in a child process with its own session, under a wall-clock
timeout; the executed notebook is kept next to the run's record. A notebook
that fails, diverges (``TrainingDiverged``) or times out gets a record saying
so, with its error, and the next notebook runs. With ``RunSettings.docker`` each
notebook runs in its framework's image instead (``harness.docker``: the same
papermill command inside ``docker run``, the paths translated), and its record
and executed notebook land in the same place.

Each run's name is reserved atomically before it starts (``new_stem``), so runs started at
once into one folder never share a record. The kernel runs in a session of its own: a timeout
or an interrupt ends every process group of the run (papermill's, the kernel's: ``harness.processes``
finds and stops them), and an interrupt (``processes.Interrupted``, raised by SIGINT, SIGTERM or SIGHUP
once ``processes.raise_on_interrupts`` is in effect) records the run as interrupted before it propagates.

A reservation holds what is known of its run (``reserve``: the harness's pid and start time,
the framework, benchmark, sizes, seed, device, the executed notebook) until the run's record is
written. Should the harness die without writing it (kill -9, a crash), papermill's launcher
notices that its parent is gone and ends the kernel's process group and its own; the next run
into the folder (``recover_lost``) records such a run as ``lost`` and removes its reservation.
"""
from __future__ import annotations

import collections
import glob
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat

from common import REPOSITORY, data, machine, params, record, variants
from common.benchmarks import BENCHMARKS
from harness import calibration, docker, guard, kernels, phases, processes, quiet, records, venvs
from harness.frameworks import Framework
from harness.notebooks import papermill_arguments


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
    data_sources: dict = field(default_factory=dict)  # benchmark -> a local copy of its data (None: the cache)
    timeout: float = 4 * 3600.0
    docker: bool = False  # run in the framework's image dl-rosetta/ENV instead of its venv
    threads: int | None = None  # CPU threads for every framework; None: every core (CNTK's recurrent notebook: 1)
    export: bool = False  # the notebook's export step: the model as ONNX into RESULTS/exports/STEM
    export_batch_sizes: list | None = None  # the batch sizes its prediction is timed at (None: 1, 64, 1024)
    export_runs: int | None = None  # timed runs per batch size (None: 30)
    quiet_wait: float = field(default_factory=quiet.default_wait)  # seconds a run waits for a quiet machine
    quiet_threshold: float = field(default_factory=quiet.default_threshold)  # others' cores that make it busy
    variant: str = variants.FP32  # how the notebook runs (common.variants, docs/variants.md)

    def sizes(self, benchmark: str) -> dict:
        """The epochs, batch size and sample counts a run of ``benchmark`` uses: these settings,
        or the benchmark's own where they keep its default."""
        spec = BENCHMARKS[benchmark]
        return {"epochs": self.epochs or spec.epochs, "batch_size": self.batch_size or spec.batch,
                "train_samples": self.train_samples or spec.train, "test_samples": self.test_samples or spec.test}

    def notebook_parameters(self, benchmark: str, record_path: Path) -> dict:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "train_samples": self.train_samples,
            "test_samples": self.test_samples,
            "seed": self.seed,
            "device": self.device,
            "data_source": self.data_sources.get(benchmark),
            "data_dir": self.data_dir,
            "record_path": str(record_path),
            "threads": self.threads,
            "export_dir": str(export_folder(record_path)) if self.export else None,
            "export_batch_sizes": self.export_batch_sizes,
            "export_runs": self.export_runs,
            "variant": self.variant,
        }


def export_folder(record_path: Path) -> Path:
    """Where a run's export step writes (``RESULTS/exports/STEM``, beside ``RESULTS/records``)."""
    return record_path.parent.parent / "exports" / record_path.name[:-len(".json")]


def new_stem(folder: Path, name: str) -> Path:
    """``folder/STAMP-name``, reserved for a new run's files; a second one in the same second
    becomes ``STAMP.2-name``, which sorts after the first.

    The name is reserved atomically (an empty file ``folder/.reserved/STAMP-name``, created
    only if it does not exist yet), so runs started at once into one folder never share one.
    """
    reserved = reservations_folder(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    number = 1
    while True:
        stem = folder / (f"{stamp}-{name}" if number == 1 else f"{stamp}.{number}-{name}")
        number += 1
        if any(folder.glob(glob.escape(stem.name) + ".*")):  # a run from before reservations
            continue
        try:
            os.close(os.open(reserved / stem.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        return stem


def reservations_folder(folder: Path) -> Path:
    """``folder/.reserved``, created where missing; a ValueError in one line where it is not a folder."""
    reserved = folder / ".reserved"
    try:
        reserved.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"{reserved}: a file, not a folder; expected the folder of the reservations of "
                         "runs (the harness makes it): move or remove that file.") from None
    except NotADirectoryError:
        raise ValueError(f"{folder}: not a folder; expected the folder of the records (records/).") from None
    return reserved


def _reservation(record_path: Path) -> Path:
    return record_path.parent / ".reserved" / record_path.name[:-len(".json")]


def reserve(record_path: Path, executed: Path, framework: Framework, benchmark: str,
            settings: RunSettings) -> None:
    """Writes into the run's reservation what is known of it before it starts, so that a later
    run can record it as lost should this harness die without recording it (``recover_lost``)."""
    known = {"pid": os.getpid(), "pid_started": processes.process_start(os.getpid()), "boot_id": processes.boot_id(),
             "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "framework": framework.label, "api": framework.api, "name": framework.name,
             "benchmark": benchmark, **settings.sizes(benchmark), "seed": settings.seed,
             "variant": settings.variant, "device": target_device(settings), "threads": settings.threads,
             "docker": settings.docker,
             "notebook": executed.name, "kernel_environment": kernel_provenance(framework, settings)}
    if settings.docker:
        known["container"] = docker.container_name(executed)
    record.write_json(_reservation(record_path), known)


def release(record_path: Path) -> None:
    """The record (or parity record) of a run is written: its reservation goes."""
    try:
        os.unlink(_reservation(record_path))
    except OSError:
        pass


def _owner_alive(known: dict) -> bool:
    """Whether the harness that made a reservation may still run (True where that cannot be told)."""
    pid = known.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    if known.get("boot_id") and processes.boot_id() and known["boot_id"] != processes.boot_id():
        return False  # the machine has restarted since
    if not processes.alive(pid):
        return False
    started = processes.process_start(pid)
    return known.get("pid_started") is None or started is None or started == known["pid_started"]


def recover_lost(results: Path) -> list[dict]:
    """The runs whose harness died without recording them (kill -9, a crash): each reservation
    in ``results/records/.reserved`` made on this machine by a harness that no longer runs, with no
    record, becomes a ``lost`` record with what it says, and goes. A reservation beside its record
    (an older harness left them all) goes too; an empty one without a record (an older harness
    that may still run) stays."""
    folder = records.records_dir(results)
    if not folder.is_dir():
        return []
    reserved = reservations_folder(folder)
    lost = []
    for path in sorted(reserved.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        record_path = folder / (path.name + ".json")
        if record_path.exists():
            release(record_path)
            continue
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(known, dict) or known.get("host") != socket.gethostname() or _owner_alive(known):
            continue
        try:
            lost.append(_write_lost(record_path, known))
        except (KeyError, TypeError, ValueError) as error:
            _say(f"warning: {path}: a reservation whose harness is gone, but it cannot be read as one "
                 f"({error}); left as it is.", sys.stderr)
            continue
        release(record_path)
    return lost


def _write_lost(record_path: Path, known: dict) -> dict:
    executed = record_path.parent / known["notebook"] if known.get("notebook") else None
    container = ""
    if known.get("container"):  # a container outlives its harness and its docker client: stopped now
        docker.stop(known["container"])
        container = f"; its container {known['container']}, which ran on without it, was sent `docker kill`"
    message = (f"the harness (pid {known['pid']} on {known['host']}, started {known['started']}) was killed "
               "(kill -9, or a crash) before it could record the run" + container)
    result = record.build(
        framework=known["framework"], api=known["api"], benchmark=known["benchmark"], status="lost", error=message,
        variant=known.get("variant") or variants.FP32,
        epochs=known["epochs"], batch_size=known["batch_size"], train_samples=known["train_samples"],
        test_samples=known["test_samples"], seed=known["seed"],
        notebook=str(executed.relative_to(record_path.parent.parent)) if executed and executed.is_file() else None,
        environment=machine.capture(device=known.get("device") or "cpu", versions={},
                                    threads_requested=known.get("threads")),
        kernel_environment=known.get("kernel_environment"), timestamp=known["started"])
    record.write(record_path, result)
    _say(f"[{known.get('name', known['framework'])}/{known['benchmark']}] lost: {message}; recorded as lost in "
         f"{record_path.name}")
    return result


def _say(text: str, stream=None) -> None:
    """Prints ``text``; output that fails (a pipe whose reader is gone, a closed terminal) is let go."""
    try:
        print(text, file=stream if stream is not None else sys.stdout, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def run_paths(results: Path, framework: Framework, benchmark: str,
              variant: str = variants.FP32) -> tuple[Path, Path]:
    """The record and the executed notebook of a new run, side by side (a variant's name ends
    ``-VARIANT``)."""
    stem = new_stem(records.records_dir(results),
                    f"{framework.name}-{benchmark}" + ("" if variant == variants.FP32 else f"-{variant}"))
    # not with_suffix: STAMP.2-name has a dot
    return stem.parent / (stem.name + ".json"), stem.parent / (stem.name + ".ipynb")


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
    """Echoes the notebook's output as it comes (without papermill's cell marks), keeping a tail.
    Once the harness's output fails (a pipe whose reader is gone, a closed terminal) it only reads
    on, so that papermill never blocks on a full pipe."""
    echo = True
    for line in process.stdout:
        tail.append(line)
        if echo and not PAPERMILL_CELL_MARKS.search(line) and line.strip():
            try:
                sys.stdout.write(prefix + line)
                sys.stdout.flush()
            except (OSError, ValueError, AttributeError):  # EPIPE, EIO, closed, no stdout at all
                echo = False


def execute(framework: Framework, benchmark: str, settings: RunSettings, results: Path) -> dict:
    """Runs one notebook and returns its record (written to ``results/records`` in every case)."""
    record_path, executed = run_paths(results, framework, benchmark, settings.variant)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    shown = "" if settings.variant == variants.FP32 else f" {settings.variant}"
    prefix = f"[{framework.name}/{benchmark}{shown}] "
    calibrated = None  # the machine's calibration, measured just before the notebook starts
    load = None  # the quiet-machine guard (harness.quiet), once the run gets that far
    try:  # from the reservation on, an interrupt is recorded
        reserve(record_path, executed, framework, benchmark, settings)
        reason = framework.variant_unsupported(settings.variant, benchmark)
        if reason:  # the notebook does not run: no fp32 run under the variant's name
            result = _write_failure(record_path, framework, benchmark, settings, "unsupported", reason, None)
            print(prefix + f"unsupported: {reason}")
            return result
        reason = (docker.unavailable_reason if settings.docker else kernels.unavailable_reason)(framework)
        if reason:
            result = _write_failure(record_path, framework, benchmark, settings, "unavailable", reason, None)
            print(prefix + f"unavailable: {reason}")
            return result
        parameters, data_dir = settings.notebook_parameters(benchmark, record_path), None
        if settings.docker:
            parameters, data_dir = docker_data(benchmark, parameters)
        load = quiet.RunLoad(settings.quiet_wait, settings.quiet_threshold, target_device(settings), prefix,
                             docker=settings.docker)

        def probe() -> dict:
            return calibration.before_run(framework, target_device(settings), settings.threads, settings.docker)

        # up to --quiet-wait seconds for other processes to let go of the machine, calibrating it meanwhile;
        # probed apart only where the wait could not measure
        calibrated = load.wait(probe) or probe()
        print(prefix + calibration.summary(calibrated), flush=True)
        load.start()
        try:
            outcome = launch(framework, framework.notebook(benchmark), executed, parameters, results,
                             settings.timeout, prefix, in_docker=settings.docker, device=settings.device,
                             data_dir=data_dir, threads=settings.threads)
        finally:
            measured = {"load": load.finish()}
    except processes.Interrupted as interrupt:  # papermill and the kernel are stopped: record it, then say so
        with processes.interrupts_held():
            message = f"{interrupt.describe()}; the run was stopped"
            _write_failure(record_path, framework, benchmark, settings, "interrupted", message, executed,
                           calibrated, **quiet.failure_fields(load))
            _say(prefix + "interrupted: " + message)
        raise
    if outcome.status == "ok" and record_path.is_file():
        result = record.read(record_path)
        result["notebook"] = str(executed.relative_to(results)) if executed.is_file() else None
        result["kernel_environment"] = kernel_provenance(framework, settings)
        result["phases"] = phases.from_notebook(executed, outcome.seconds)
        result["calibration"] = calibrated
        result.update(measured)
        if not result.get("peak_memory"):  # a notebook whose timer did not say: what the harness saw
            result["peak_memory"] = quiet.failure_fields(load).get("peak_memory")
        broken = variant_problem(result, settings.variant)
        if broken:  # the run went through, but not as the variant it is named
            result.update(status="failed", error=broken)
        exported = export_folder(record_path)
        if settings.export and exported.is_dir():
            result["export"] = str(exported.relative_to(results))
        try:
            record.write(record_path, result)
        except OSError as error:  # the notebook's own record stays, whole
            if not guard.is_full(error):
                raise
            raise guard.stopped(results, f"{framework.label} {benchmark}", error, record_path) from None
        release(record_path)
        if broken:
            print(prefix + f"failed: {broken}")
            return result
        print(prefix + f"ok in {outcome.seconds:.0f} s: accuracy {result['test_accuracy']:.4f}, "
              f"training {result['train_seconds']:.1f} s")
        return result
    if outcome.status == "ok":  # papermill succeeded, but there is no record
        status, message = "failed", "the notebook finished without writing its record"
    else:
        status, message = outcome.status, outcome.message
    short = guard.is_full(message) and not guard.has_room(results)  # not another disk's (/dev/shm's)
    if short:  # the notebook, or papermill writing it, met the full disk of the results: in one line
        message = guard.full_reason(message)
    if status != "timeout":  # papermill() has said so already
        print(prefix + f"{status}: {message}")
    try:
        result = _write_failure(record_path, framework, benchmark, settings, status, message, executed, calibrated,
                                **quiet.failure_fields(load))
    except OSError as error:
        if not guard.is_full(error):
            raise
        raise guard.stopped(results, f"{framework.label} {benchmark}", error, record_path) from None
    if short:  # no more runs: they would meet it too
        raise guard.stopped(results, f"{framework.label} {benchmark}", message, record_path, recorded=True)
    return result


def variant_problem(result: dict, variant: str) -> str:
    """Why the record a notebook wrote is not a run of ``variant`` ('' where it is): another variant
    recorded (a notebook that ignores the parameter runs fp32), or, for a variant, an observed
    precision that breaks its promise (common.variants.problems)."""
    if result.get("variant") != variant:
        return (f"asked for variant {variant}, the notebook recorded {result.get('variant')!r}: it does not "
                f"run {variant} (docs/variants.md)")
    if variant == variants.FP32 and not result.get("precision"):
        return ""  # the fp32 rows record their precision where they observe it
    return variants.describe(variant, result.get("precision"))


def launch(framework: Framework, notebook: Path, executed: Path, parameters: dict, results: Path,
           timeout: float, prefix: str, in_docker: bool = False, device: str = "auto",
           data_dir: Path | None = None, threads: int | None = None) -> Outcome:
    """Runs ``notebook`` into ``executed`` with ``parameters`` through papermill, in the framework's
    kernel or (``in_docker``) in its image, echoing its output, within ``timeout``: how every
    notebook is run, a benchmark run (``execute``) or a parity run (``harness.parity``).
    ``threads`` sets the kernel's thread variables (``kernel_environment``; None: every core)."""
    command, on_timeout = launch_command(framework, notebook, executed, parameters, results,
                                         in_docker=in_docker, device=device, data_dir=data_dir)
    if in_docker:
        print(prefix + "$ " + shlex.join(command), flush=True)
    return papermill(notebook, executed, framework.kernel, timeout, prefix, command, on_timeout,
                     environment=processes.kernel_environment(threads))


def launch_command(framework: Framework, notebook: Path, executed: Path, parameters: dict, results: Path,
                   in_docker: bool = False, device: str = "auto", data_dir: Path | None = None,
                   ) -> tuple[list[str], Callable[[], None] | None]:
    """The command that runs a notebook, and what to do once a timeout has stopped it: papermill run
    by the harness's own Python in the framework's registered kernel (nothing more to do), or
    ``docker run`` of the framework's image with the paths translated and ``results`` and ``data_dir``
    mounted (its container stopped: a stopped docker client leaves it running). ``device`` "cpu"
    gives a container no GPU."""
    if not in_docker:
        return papermill_command(notebook, executed, framework.kernel, parameters), None
    name = docker.container_name(executed)
    command, _ = docker.run_command(framework, notebook, executed, parameters, results, name, data_dir=data_dir,
                                    gpus=None if device == "cpu" else "all")
    return command, lambda: docker.stop(name)


def docker_data(benchmark: str, parameters: dict) -> tuple[dict, Path]:
    """A run's parameters for a container, and the data cache to mount there.

    In a local run the kernel finds the data where the harness found it (the data
    cache, the benchmark's data variable); a container sees neither the host's
    environment nor its cache, so both are named explicitly here.
    """
    parameters = dict(parameters)
    variable = BENCHMARKS[benchmark].env_var
    parameters["data_source"] = parameters.get("data_source") or os.environ.get(variable) or None
    cache = data.cache_dir(parameters.get("data_dir"))
    cache.mkdir(parents=True, exist_ok=True)  # else docker would create it, owned by root
    parameters["data_dir"] = str(cache)
    return parameters, cache


@dataclass
class Outcome:
    """How one papermill execution ended: ok, failed, diverged, unsupported (a variant) or timeout, with the error."""

    status: str
    message: str | None
    returncode: int | None
    seconds: float


# papermill, started so that the kernel it starts inherits a log file as its standard output and
# error instead of the harness's pipe. ipykernel sends what is written straight to those file
# descriptors (C++ libraries' messages) to the notebook, which papermill logs, and also echoes it
# to the inherited ones: on one pipe each such line came twice. The file keeps what only the
# inherited descriptors see (the kernel's start-up, the last words of a kernel that crashes).
PAPERMILL_LAUNCHER = """
import os, sys
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
pipe = os.dup(1)
os.dup2(log, 1)
os.dup2(log, 2)
os.close(log)
sys.stdout = sys.stderr = open(pipe, "w", buffering=1)
sys.argv = ["papermill"] + sys.argv[2:]
from papermill.cli import papermill
try:
    papermill()
except OSError as error:  # a full disk (or quota) writing the executed notebook: one line, not a traceback
    if error.errno not in (28, 122):
        raise
    print("papermill: OSError: [Errno %d] %s: the executed notebook %s could not be written whole"
          % (error.errno, error.strerror, sys.argv[2]), file=sys.stderr)
    sys.exit(1)
"""


def kernel_log(executed: Path) -> Path:
    """Where the kernel's own output goes: beside the executed notebook, ``STEM.kernel.log``."""
    name = executed.name[:-len(".ipynb")] if executed.name.endswith(".ipynb") else executed.name
    return executed.parent / (name + ".kernel.log")


def papermill_command(notebook: Path, executed: Path, kernel: str, parameters: dict) -> list[str]:
    """papermill run by the harness's own Python, in the framework's registered kernel."""
    return [sys.executable, "-c", processes.PARENT_WATCH + PAPERMILL_LAUNCHER, str(kernel_log(executed)),
            *papermill_arguments(notebook, executed, kernel, REPOSITORY, parameters)]


def papermill(notebook: Path, executed: Path, kernel: str, timeout: float, prefix: str, command: list[str],
              on_timeout: Callable[[], None] | None = None, environment: dict | None = None) -> Outcome:
    """Runs ``command`` (``launch_command``'s: papermill executing ``notebook`` into ``executed`` in
    ``kernel``), echoing its output, within ``timeout``; ``on_timeout`` runs after a timeout or an
    interrupt has stopped it (to stop the container). ``environment``: papermill's and the kernel's
    (default ``processes.kernel_environment()``).
    """
    where = f"kernel {kernel}" if command[0] == sys.executable else f"kernel {kernel} via {command[0]} {command[1]}"
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    print(prefix + f"running {_shown(notebook)} in {where} (timeout {timeout:.0f} s)", flush=True)
    started = time.perf_counter()
    environment = {**(environment or processes.kernel_environment()), "ROSETTA_HARNESS_PID": str(os.getpid())}
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True, env=environment)
    watch = processes.KernelWatch(process.pid)
    tail: collections.deque = collections.deque(maxlen=40)
    reader = threading.Thread(target=_stream, args=(process, tail, prefix), daemon=True)
    reader.start()
    try:
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with processes.interrupts_held():
            processes.stop_tree(process, watch)
            if on_timeout is not None:
                on_timeout()
            reader.join(timeout=10)
        message = f"no result after {timeout:.0f} s; the run was stopped"
        print(prefix + "timeout: " + message)
        return Outcome("timeout", message, None, time.perf_counter() - started)
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: end papermill and the kernel, then say so
        with processes.interrupts_held():
            processes.stop_tree(process, watch)
            if on_timeout is not None:
                on_timeout()
        if isinstance(interrupt, processes.Interrupted):
            raise
        raise processes.Interrupted(signal.SIGINT) from None
    watch.stop()
    reader.join(timeout=10)
    seconds = time.perf_counter() - started
    if returncode == 0:
        return Outcome("ok", None, 0, seconds)
    error = notebook_error(executed) if executed.is_file() else None
    if error and error[0] == "TrainingDiverged":
        return Outcome("diverged", error[1], returncode, seconds)
    if error and error[0] == "VariantUnsupported":  # a variant the notebook finds it cannot run on this machine
        return Outcome("unsupported", error[1], returncode, seconds)
    if error:
        return Outcome("failed", f"{error[0]}: {error[1]}", returncode, seconds)
    output = "".join(tail)
    if "DeadKernelError" in output or "Kernel died" in output:
        message = (f"DeadKernelError: the kernel died ({watch.how_it_died()}) while the notebook ran; "
                   f"papermill exited with {returncode}")
        last_words = _last_lines(_read_text(kernel_log(executed)), 600)
        return Outcome("failed", message + (f"; the kernel's last output: {last_words}" if last_words else ""),
                       returncode, seconds)
    return Outcome("failed", f"papermill exited with {returncode}: " + _last_lines(output, 2000),
                   returncode, seconds)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _last_lines(text: str, limit: int) -> str:
    """The end of ``text``, whole lines only, at most ``limit`` characters."""
    lines, size = [], 0
    for line in reversed(text.strip().splitlines()):
        if size + len(line) + 1 > limit and lines:
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(reversed(lines))[-limit:]


def _shown(path: Path) -> str:
    """A path relative to the repository where it lies inside it."""
    try:
        return str(path.relative_to(REPOSITORY))
    except ValueError:
        return str(path)


def kernel_provenance(framework: Framework, settings: RunSettings) -> dict | None:
    """Where the kernel of a run came from: its docker image, or what ``kernels.provenance``
    says (an environment built from its spec, or an existing interpreter and the versions found)."""
    if settings.docker:
        return {"kind": "docker", "image": docker.image(framework)}
    return kernels.provenance(framework)


def target_device(settings: RunSettings) -> str:
    """The device a run was meant for: what ``--device`` says, or the GPU where one is seen."""
    if settings.device in ("cpu", "cuda"):
        return settings.device
    return "cuda" if venvs.default_flavour() == "cuda" else "cpu"


def _write_failure(record_path: Path, framework: Framework, benchmark: str, settings: RunSettings,
                   status: str, message: str, executed: Path | None, calibrated: dict | None = None,
                   **measured) -> dict:
    """The record of a run that did not get as far as writing its own: the machine it was
    meant for (so that the report files it under that device), where its kernel came from,
    the machine's calibration where it was measured before the run, and ``measured``: what the
    harness measured of it (``load``, ``peak_memory``)."""
    result = record.build(
        framework=framework.label, api=framework.api, benchmark=benchmark, status=status, error=message,
        variant=settings.variant, **settings.sizes(benchmark), seed=settings.seed,
        notebook=str(executed.relative_to(record_path.parent.parent))
        if executed is not None and executed.is_file() else None,
        environment=machine.capture(device=target_device(settings), versions={},
                                    threads_requested=settings.threads),
        kernel_environment=kernel_provenance(framework, settings),
        **({"calibration": calibrated} if calibrated else {}), **measured,
    )
    record.write(record_path, result)
    release(record_path)
    return result


def exports(export: bool, repeat: int, variant: str) -> bool:
    """Whether a run of a suite exports its model to ONNX (``export``: the suite asked for exports): one
    export per framework and benchmark, of the fp32 row's first repeat. A variant's model is the same network
    in another precision or compiled form, and ONNX Runtime cannot load some of them (bfloat16 convolutions)."""
    return export and repeat == 0 and variant == variants.FP32


def _same_data(found: dict | None, provenance: dict | None) -> bool:
    if not found or not provenance or found.get("source") != provenance.get("source"):
        return False
    key = "checksum" if provenance.get("source") == "official" else "sha256"
    return provenance.get(key) is not None and found.get(key) == provenance.get(key)


# What of a record's kernel_environment changes a timing: where the kernel came from (a built
# environment, an existing interpreter, a docker image), which build (cpu or cuda), which interpreter,
# and for an existing interpreter what it was found to hold.
KERNEL_KEYS = ("kind", "flavour", "python", "image", "python_version", "versions", "cuda_build")


def finished_runs(frameworks: list[Framework], benchmarks: list[str], settings: RunSettings, results: Path,
                  provenances: dict, commit: str | None) -> dict[tuple[str, str], str]:
    """For ``--resume``: each (framework name, benchmark) that already has an ok record with these
    settings (sizes, threads asked for, seed, device: the report's configuration, ``report.CONFIGURATION``),
    the variant asked for, this data (its checksum), this code version (a clean git commit: uncommitted
    changes could differ from any earlier run's) and this kernel (``KERNEL_KEYS`` of its
    ``kernel_environment``: docker or venv, the cpu or cuda build, a built environment or an existing
    interpreter, and which), mapped to that record's file."""
    if not commit or commit.endswith("-dirty"):
        print("resume: nothing skipped, as the code version is not a clean git commit "
              f"({commit or 'no git'}); every selected notebook runs.")
        return {}
    device = target_device(settings)
    labels = {framework.label: framework for framework in frameworks}
    kernels_now: dict[str, dict] = {}
    found: dict[tuple[str, str], str] = {}
    for path, done in records.read_runs(records.records_dir(results), warn=False):
        benchmark = done["benchmark"]
        if done["framework"] not in labels or benchmark not in benchmarks or done["status"] != "ok":
            continue
        framework = labels[done["framework"]]
        if framework.name not in kernels_now:
            kernels_now[framework.name] = _kernel_key(kernel_provenance(framework, settings))
        wanted = {**settings.sizes(benchmark), "seed": settings.seed, "variant": settings.variant}
        env = done.get("environment") or {}
        if (all(done.get(key) == value for key, value in wanted.items())
                and _same_data(done.get("data"), provenances.get(benchmark))
                and env.get("threads_requested") == settings.threads
                and env.get("git_commit") == commit and env.get("device") == device
                and _kernel_key(done.get("kernel_environment")) == kernels_now[framework.name]):
            found[(framework.name, benchmark)] = path.name
    return found


def resume_difference(earlier: dict, now: dict) -> str:
    """Why `rosetta run --resume` ran a run again whose earlier ok record (same framework, benchmark,
    seed and variant) is ``earlier``, ``now`` being the record of the run made instead: what of
    ``finished_runs``'s rule differs between them (the data's checksum, the kernel, the commit, the
    device, the threads asked for, the sizes)."""
    def data(found):
        found = found or {}
        return f"{found.get('source')} {found.get('checksum') or found.get('sha256')}" if found else "none recorded"

    then_env, now_env = earlier.get("environment") or {}, now.get("environment") or {}
    differences = []
    if not _same_data(earlier.get("data"), now.get("data")):
        differences.append(f"other data ({data(earlier.get('data'))} then, {data(now.get('data'))} now)")
    then_kernel, now_kernel = _kernel_key(earlier.get("kernel_environment")), _kernel_key(now.get("kernel_environment"))
    changed = [key for key in KERNEL_KEYS if then_kernel[key] != now_kernel[key]]
    if changed:
        differences.append(f"another kernel (its {', '.join(changed)})")
    for key, what in (("git_commit", "commit"), ("device", "device"), ("threads_requested", "threads asked for")):
        if then_env.get(key) != now_env.get(key):
            differences.append(f"another {what} ({then_env.get(key)} then, {now_env.get(key)} now)")
    sizes = [k for k in ("epochs", "batch_size", "train_samples", "test_samples") if earlier.get(k) != now.get(k)]
    if sizes:
        differences.append(f"other sizes ({', '.join(sizes)})")
    return "; ".join(differences) or "no difference its record shows"


def _kernel_key(provenance: dict | None) -> dict:
    """The parts of a kernel's provenance that change a timing (``KERNEL_KEYS``; missing ones as None)."""
    return {key: (provenance or {}).get(key) for key in KERNEL_KEYS}


RESUME_SKIPPED = "skipped (--resume), already ok in"  # what a skipped run's line says (a cluster's driver reads it)


def run_all(frameworks: list[Framework], benchmarks: list[str], settings: RunSettings,
            results: Path, skip: dict | None = None, data_errors: dict | None = None) -> list[dict]:
    """Every selected notebook in turn; one failing never stops the others.

    ``skip`` maps (framework name, benchmark) to the ok record that makes a run unnecessary
    (``--resume``); ``data_errors`` maps a benchmark whose data could not be read to its error:
    its runs are recorded as failed with it, without starting a kernel.
    """
    skip, data_errors = skip or {}, data_errors or {}
    recover_lost(results)
    done = []
    selected = [(f, b) for f in frameworks for b in benchmarks if b in f.notebooks]
    for number, (framework, benchmark) in enumerate(selected, start=1):
        heading = f"=== {number}/{len(selected)}: {framework.label} {benchmark}" + (
            "" if settings.variant == variants.FP32 else f" ({settings.variant})")
        if (framework.name, benchmark) in skip:
            print(f"{heading}: {RESUME_SKIPPED} {skip[framework.name, benchmark]} ===",
                  flush=True)
            continue
        print(heading + " ===", flush=True)
        if benchmark in data_errors:
            record_path, _ = run_paths(results, framework, benchmark, settings.variant)
            message = f"DataError: {data_errors[benchmark]}"
            print(f"[{framework.name}/{benchmark}] failed: {message}", flush=True)
            done.append(_write_failure(record_path, framework, benchmark, settings, "failed", message, None))
            continue
        guard.check_space(results, before=f"{framework.label} {benchmark}")  # room for it, or the suite stops
        done.append(execute(framework, benchmark, settings, results))
    if skip:
        print(f"resume: skipped {len(skip)} run(s) that already have an ok record: "
              + ", ".join(f"{name} {benchmark}" for name, benchmark in skip), flush=True)
    return done
