"""The calibration of every run: how fast its machine was, measured just before it ran.

    python -m harness.calibration [--device cpu|cuda] [--threads N] [--python PATH] [--backend auto|torch|cupy|jax]

prints what a run would record. Before each run the runner times a fixed probe
(``harness/calibration_probe.py``) on the run's device with the run's threads: a float32 matrix
product (GFLOP/s) and a memory copy (GB/s). The record holds it as ``calibration``. Two runs of
one framework on machines that calibrate apart are told apart by it: a slow machine, not a slow
framework.

On the CPU the probe runs in the harness's own Python, through its NumPy, so every row of a table
is calibrated with the same BLAS whatever the framework: it is the machine that is calibrated,
not the framework. It runs in a process of its own, started with the run's thread variables
(``processes.kernel_environment``), which NumPy's BLAS reads only as it loads. On a GPU it runs
through torch, else CuPy, else JAX, in one interpreter chosen the same way for every row:
``$ROSETTA_CALIBRATION_PYTHON`` where set, else the PyTorch environment's kernel, else the run's
own kernel (``gpu_python``). Whatever goes wrong (no such interpreter or library, a crash, a
hang past ``TIMEOUTS``, output that is not the probe's) is recorded as ``not_measured`` with why;
the run goes on.

Each calibration also names its machine (``machine_key``: a digest of the host's name and of the
boot of its kernel, so that it is the same for every run of one machine until it restarts, and
names nothing of it). The report (``split``) ranks together only runs whose machines calibrate
within ``APART`` of each other. A machine's calibration is the median of the probes of all its runs
in the table: one probe of under a second is noisy on a shared machine (on a 2-core virtual machine,
quiet, the matrix product gave 103 to 201 GFLOP/s and the copy 16 to 33 GB/s over 30 probes), while
the median of a machine's runs is steady, so one machine is never split from itself by its noise.
Runs whose records do not name their machine (made before they did) are each taken for a machine of
their own, row by row. Machines are grouped so that, in GFLOP/s and in GB/s, the largest calibration
of a group is at most 10 % above its smallest; the group with the most rows is the table, the others
follow as "Calibrated apart"; runs without a calibration group together as "not calibrated". A run
whose probe is more than 10 % off its table's median is flagged in its row's Notes: its machine was
slower or faster than usual just before it ran.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import machine
from harness import processes

PROBE = Path(__file__).with_name("calibration_probe.py")
TIMEOUTS = {"cpu": 30.0, "cuda": 120.0}  # seconds; the probe takes under 1 s, a GPU library's start a few
APART = 0.10  # machines whose calibrations differ by more than this share are not ranked together
PYTHON_VARIABLE = "ROSETTA_CALIBRATION_PYTHON"  # the interpreter of the GPU probe, where set
BACKEND_VARIABLE = "ROSETTA_CALIBRATION_BACKEND"  # auto (torch, else cupy, else jax), torch, cupy or jax


# --- measuring ----------------------------------------------------------------------------------

def measure(device: str, threads: int | None = None, python: str | None = None, environment: dict | None = None,
            backend: str | None = None) -> dict:
    """The calibration of ``device`` ("cpu" or "cuda") with ``threads`` CPU threads (None: every
    core): the probe run by ``python`` (default: this Python) in ``environment`` (default: the
    kernel's, ``processes.kernel_environment(threads)``). Never raises for a probe that fails: the
    result then has ``not_measured``, why, and no figures."""
    count = machine.cpu_threads(threads)
    found = {"device": device, "threads": count, "gflops": None, "gbps": None, "how": None,
             "seconds": None, "not_measured": None}
    command = [python or sys.executable, str(PROBE), "--device", "cpu" if device == "cpu" else "cuda",
               "--backend", backend or os.environ.get(BACKEND_VARIABLE) or "auto"]
    environment = {**(environment or processes.kernel_environment(threads)), **machine.thread_variables(threads)}
    started = time.perf_counter()
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TIMEOUTS.get(device, TIMEOUTS["cuda"]), env=environment)
        found.update(_parse(done))
    except subprocess.TimeoutExpired as error:
        found["not_measured"] = f"the probe gave no result within {error.timeout:.0f} s and was stopped"
    except (OSError, ValueError) as error:  # no such interpreter, not executable
        found["not_measured"] = f"the probe could not start: {type(error).__name__}: {error}"
    found["seconds"] = round(time.perf_counter() - started, 3)
    if found["not_measured"]:
        found["gflops"] = found["gbps"] = None
    found["machine"] = machine_key()
    return found


def machine_key() -> str | None:
    """Which machine this is, the same for every run until it restarts: a digest of the host's name
    and of the kernel's boot id (``processes.boot_id``), which containers share with their host; it
    names nothing of the machine. None where neither can be read."""
    name, boot = platform.node(), processes.boot_id()
    if not name and not boot:
        return None
    return hashlib.sha256(f"{name}\n{boot or ''}".encode()).hexdigest()[:16]


def _parse(done: subprocess.CompletedProcess) -> dict:
    """The probe's figures from its last line of output, or ``not_measured`` saying why there are none."""
    lines = done.stdout.strip().splitlines()
    try:
        said = json.loads(lines[-1]) if lines else None
    except ValueError:
        said = None
    if not isinstance(said, dict):
        last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
        return {"not_measured": f"the probe exited with {done.returncode} without its figures: {last[-300:]}"}
    if said.get("not_measured"):
        return {"not_measured": str(said["not_measured"])[:1000]}
    gflops, gbps = said.get("gflops"), said.get("gbps")
    if not all(_positive(v) for v in (gflops, gbps)) or not isinstance(said.get("how"), str):
        return {"not_measured": f"the probe's figures are not positive numbers: {lines[-1][:300]}"}
    found = {"gflops": round(float(gflops), 3), "gbps": round(float(gbps), 3), "how": said["how"]}
    if isinstance(said.get("gpu"), str):
        found["gpu"] = said["gpu"]
    return found


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def gpu_python(framework=None) -> tuple[str | None, dict | None, str | None]:
    """The interpreter (and its environment) that probes a GPU, the same for every run where it can be:
    ``$ROSETTA_CALIBRATION_PYTHON``, else the PyTorch environment's kernel, else ``framework``'s kernel;
    (None, None, why) where there is none."""
    from harness import kernels
    from harness.frameworks import FRAMEWORKS

    if os.environ.get(PYTHON_VARIABLE):
        return os.environ[PYTHON_VARIABLE], None, None
    for candidate in (FRAMEWORKS["pytorch"], framework):
        info = kernels.kernel_info(candidate) if candidate is not None else None
        python = (info or {}).get("python")
        if python and Path(python).exists():
            return python, kernels.kernel_environment(candidate), None
    return None, None, "no registered kernel to probe the GPU with (`rosetta envs pytorch` registers one)"


def before_run(framework, device: str, threads: int | None, in_docker: bool = False) -> dict:
    """The calibration a run records: the CPU through this Python's NumPy, a GPU through ``gpu_python``."""
    if device == "cpu":
        return measure("cpu", threads)
    if in_docker:
        return _unmeasured(device, threads, "a run in docker: its GPU is not probed from outside its image")
    python, environment, why = gpu_python(framework)
    if python is None:
        return _unmeasured(device, threads, why)
    if environment is not None:
        environment = {**environment, "PYTHONUNBUFFERED": "1"}
    return measure(device, threads, python=python, environment=environment)


def _unmeasured(device: str, threads: int | None, why: str) -> dict:
    return {"device": device, "threads": machine.cpu_threads(threads), "gflops": None, "gbps": None, "how": None,
            "seconds": 0.0, "not_measured": why, "machine": machine_key()}


def summary(found: dict | None) -> str:
    """One line for the run's output: the figures, or why there are none."""
    if not found:
        return "calibration: none"
    if found.get("not_measured"):
        return f"calibration not measured: {found['not_measured']}"
    return (f"calibration: {found['gflops']:,.1f} GFLOP/s, {found['gbps']:,.1f} GB/s ({found['device']}, "
            f"{found['threads']} thread{'' if found['threads'] == 1 else 's'}, {found['seconds']:.2f} s)")


# --- the report ---------------------------------------------------------------------------------

def columns(found: dict) -> dict:
    """The calibration columns of a record's row in the report's frame (None where not measured)."""
    calibration = found.get("calibration") if isinstance(found.get("calibration"), dict) else {}
    return {"calibration_gflops": calibration.get("gflops"), "calibration_gbps": calibration.get("gbps"),
            "calibration_missing": calibration.get("not_measured"), "calibration_machine": calibration.get("machine"),
            "calibration_seconds": calibration.get("seconds")}


@dataclass
class Table:
    """The rows of one table of a configuration, and the median calibration of their runs (None: not calibrated)."""

    rows: object  # a DataFrame of report.shown_rows
    gflops: float | None
    gbps: float | None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _probes(frame, members) -> list[tuple[float, float]]:
    """The (GFLOP/s, GB/s) of each run among ``members`` that has both."""
    if "calibration_gflops" not in frame:
        return []
    found = []
    for index in members:
        gflops, gbps = frame.loc[index, "calibration_gflops"], frame.loc[index, "calibration_gbps"]
        if _is_number(gflops) and _is_number(gbps):
            found.append((float(gflops), float(gbps)))
    return found


def _fits(group: list[tuple[float, float]], probe: tuple[float, float]) -> bool:
    """Whether ``probe`` may join ``group``: in each figure the largest stays within ``APART`` of the smallest."""
    together = group + [probe]
    return all(max(p[i] for p in together) <= (1 + APART) * min(p[i] for p in together) for i in (0, 1))


def _machine(frame, members) -> str | None:
    """The machine of a row's runs (``machine_key``): the one most of them name, the latest run's on a
    tie; None where none names one."""
    if "calibration_machine" not in frame:
        return None
    names = [frame.loc[i, "calibration_machine"] for i in members if isinstance(frame.loc[i, "calibration_machine"], str)]
    if not names:
        return None
    counts = {name: names.count(name) for name in names}
    return [name for name in names if counts[name] == max(counts.values())][-1]


def split(frame, rows) -> list[Table]:
    """``rows`` (``report.shown_rows`` of one configuration) as tables never ranking together machines
    more than ``APART`` apart. Each row belongs to its runs' machine (``_machine``), or, where its
    records name none, is a machine of its own; a machine's calibration is the median of the probes of
    all its runs among ``rows``. The machines of the rows with an ok run are grouped (sorted by GFLOP/s,
    each joining the first group it fits, ``_fits``), the rows without a calibration in a group of
    their own; the group with the most rows (then the newest run) comes first, and the rows with no ok
    run join it (they are not ranked). Each row gains ``calibration_note``: its runs more than
    ``APART`` off its table's median, or why it has none."""
    rows = rows.copy()
    rows["calibration_note"] = None
    probes = {index: _probes(frame, members) for index, members in zip(rows.index, rows["members"])}
    row_probe = {index: (statistics.median([p[0] for p in found]), statistics.median([p[1] for p in found]))
                 for index, found in probes.items() if found}
    ok = [index for index in rows.index if rows.loc[index, "runs"] > 0]
    units: dict = {}  # machine -> the calibrated ok rows that ran on it
    for index in ok:
        if index in row_probe:
            name = _machine(frame, rows.loc[index, "members"])
            units.setdefault(("machine", name) if name else ("row", index), []).append(index)
    unit_probe = {unit: (statistics.median([p[0] for i in members for p in probes[i]]),
                         statistics.median([p[1] for i in members for p in probes[i]]))
                  for unit, members in units.items()}
    clusters: list[list] = []
    for unit in sorted(units, key=lambda u: unit_probe[u]):
        for cluster in clusters:
            if _fits([unit_probe[u] for u in cluster], unit_probe[unit]):
                cluster.append(unit)
                break
        else:
            clusters.append([unit])
    groups: list[list] = [[index for unit in cluster for index in units[unit]] for cluster in clusters]
    uncalibrated = [index for index in ok if index not in row_probe]
    if uncalibrated:
        groups.append(uncalibrated)
    newest = lambda group: max(str(rows.loc[i, "timestamp"]) for i in group)  # noqa: E731
    groups.sort(key=lambda group: (len(group), group[0] in row_probe, newest(group)), reverse=True)
    failed = [index for index in rows.index if index not in ok]
    if groups:
        groups[0] = groups[0] + failed
    else:
        groups = [failed]
    tables = []
    for group in groups:
        calibrated = [row_probe[i] for i in group if i in row_probe and rows.loc[i, "runs"] > 0] \
            or [row_probe[i] for i in group if i in row_probe]  # a table of runs that all failed: theirs
        gflops = statistics.median([p[0] for p in calibrated]) if calibrated else None
        gbps = statistics.median([p[1] for p in calibrated]) if calibrated else None
        for index in group:
            rows.at[index, "calibration_note"] = _note(frame, rows.loc[index], probes[index], gflops, gbps)
        tables.append(Table(rows.loc[group], gflops, gbps))
    return tables


def _note(frame, row, probes: list[tuple[float, float]], gflops: float | None, gbps: float | None) -> str | None:
    """The runs of ``row`` whose probe is more than ``APART`` off the table's median, or why it has no calibration."""
    if not probes:
        missing = [frame.loc[i, "calibration_missing"] for i in row["members"] if "calibration_missing" in frame
                   and isinstance(frame.loc[i, "calibration_missing"], str)]
        return f"not calibrated: {missing[-1]}" if missing else None
    if gflops is None:
        return None
    off = []
    for index in row["members"]:
        found = _probes(frame, [index])
        if not found:
            continue
        figures = [f"{value:,.1f} {unit} ({(value / median - 1) * 100:+.0f} %)"
                   for value, median, unit in ((found[0][0], gflops, "GFLOP/s"), (found[0][1], gbps, "GB/s"))
                   if abs(value / median - 1) > APART]  # only the figure, or figures, that are off
        if figures:
            off.append(f"seed {int(frame.loc[index, 'seed'])}: " + ", ".join(figures))
    if not off:
        return None
    return "probe off this table's calibration by more than 10 %: " + "; ".join(off)


def describe(table: Table) -> str:
    """'98.1 GFLOP/s, 22.8 GB/s', or that the table's runs have no calibration."""
    if table.gflops is None:
        return "not calibrated (records without a calibration, or whose probe could not run)"
    return f"{table.gflops:,.1f} GFLOP/s, {table.gbps:,.1f} GB/s"


def line(table: Table) -> str:
    """The line under a table's configuration."""
    if table.gflops is None:
        return f"Calibration: {describe(table)}."
    return (f"Calibration: {describe(table)}, the median of its rows' probes (a float32 matrix product and a "
            "memory copy timed before each run: docs/measurements.md).")


def apart(tables: list[Table], main: Table, render, earlier: str | None = None) -> list[str]:
    """The markdown of the tables after the first, each under its calibration, never ranked with
    ``main``; ``render(rows)`` gives a table's markdown; ``earlier``: the configuration they belong to,
    where it is an earlier one."""
    parts = []
    for table in tables:
        label = f"calibrated apart: {describe(table)}" if table.gflops is not None else "not calibrated"
        title = f"Earlier configuration: {earlier}; {label}" if earlier else label[0].upper() + label[1:]
        if table.gflops is None:
            why = ("these runs have no calibration (records from before the harness measured its machine, or "
                   "whose probe could not run); the table above has one")
        elif main.gflops is None:
            why = "these runs have a calibration; the table above has none"
        else:
            why = (f"their machines calibrate more than {APART * 100:.0f} % apart from its "
                   f"({describe(main)})")
        parts += [f"#### {title}", "", f"Not ranked with the table above: {why}.", "", render(table.rows), ""]
    return parts


def main(arguments: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--python", default=None, help="the interpreter of the probe (default: this one on the "
                        "CPU; on a GPU $ROSETTA_CALIBRATION_PYTHON, else the PyTorch kernel's)")
    parser.add_argument("--backend", choices=("auto", "torch", "cupy", "jax"), default=None)
    options = parser.parse_args(arguments)
    if options.python or options.device == "cpu":
        found = measure(options.device, options.threads, python=options.python, backend=options.backend)
    else:
        found = before_run(None, options.device, options.threads)
    print(json.dumps(found, indent=2))
    return 0 if not found["not_measured"] else 1


if __name__ == "__main__":
    sys.exit(main())
