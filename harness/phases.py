"""Where a run's time goes, read from the executed notebook that papermill writes.

Papermill stamps the notebook with its start and end, and every cell with its own, so the
harness needs no help from the notebooks: the cells of each step (their ``step:`` tags,
harness.notebooks.STEPS) add up to that step's seconds, and the time from papermill's start
to the first cell is the kernel's start (launching the interpreter and connecting to it), and
the time from the last cell's end to papermill's end is the kernel's stop (asking it to shut down
and waiting for its interpreter to exit; common/kernel_launcher.py keeps that short).

    phases.from_notebook(executed, harness_seconds)
    # {"harness": 61.2, "kernel_start": 1.9, "imports": 3.1, "environment": 0.1, "data": 2.4,
    #  "model": 0.3, "optimiser": 0.1, "train": 41.6, "predict": 7.5, "evaluate": 0.1,
    #  "parity": 0.0, "export": 0.0, "kernel_stop": 0.9, "other": 0.4}

``harness`` is the harness's own wall time for the notebook (from starting papermill to its
exit); ``other`` is the rest of it: the parameter cells, papermill's own start and work, and
the harness's. The parts add up to ``harness`` when it is given. Of what is neither training
nor prediction (``overhead``), :data:`HARNESS` is the harness's own cost (starting and stopping
a kernel, loading the data, papermill's work) and :data:`SET_UP` the framework's (importing it,
building the model and its training step, evaluating and exporting), which any program
training that model pays too.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import nbformat

from harness.notebooks import STEPS, cell_steps

PARTS = ("kernel_start",) + tuple(step for step in STEPS if step != "parameters") + ("kernel_stop",)
WORK = ("train", "predict")  # what the benchmark measures; everything else is overhead
HARNESS = ("kernel_start", "kernel_stop", "data", "other")  # the harness's own cost
SET_UP = ("imports", "environment", "model", "optimiser", "evaluate", "parity", "export")  # the framework's


def _time(stamp) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def from_notebook(executed: Path, harness_seconds: float | None = None) -> dict | None:
    """The seconds of each part of the run (module docstring); None where the executed notebook
    is missing or carries no papermill times (a run stopped before its first cell)."""
    try:
        notebook = nbformat.reads(Path(executed).read_text(), as_version=4)
    except (OSError, ValueError, nbformat.reader.NotJSONError):
        return None
    started = _time((notebook.get("metadata", {}).get("papermill") or {}).get("start_time"))
    seconds = {part: 0.0 for part in PARTS}
    first = last = None
    for cell in notebook.get("cells", []):
        times = cell.get("metadata", {}).get("papermill") or {}
        begun, duration = _time(times.get("start_time")), times.get("duration")
        if begun is None or not isinstance(duration, (int, float)):
            continue
        first = begun if first is None else min(first, begun)
        ended = _time(times.get("end_time")) or begun + float(duration)
        last = ended if last is None else max(last, ended)
        steps = [step for step in cell_steps(cell) if step in seconds and step != "kernel_stop"]
        if steps:
            seconds[steps[0]] += float(duration)
    if started is None or first is None:
        return None
    seconds["kernel_start"] = max(first - started, 0.0)
    finished = _time((notebook.get("metadata", {}).get("papermill") or {}).get("end_time"))
    seconds["kernel_stop"] = max(finished - last, 0.0) if finished is not None else 0.0
    parts = {part: round(value, 3) for part, value in seconds.items()}
    if harness_seconds is not None:
        parts["harness"] = round(float(harness_seconds), 3)
        parts["other"] = round(max(float(harness_seconds) - sum(seconds.values()), 0.0), 3)
    return parts


def overhead(parts: dict) -> float | None:
    """The harness's seconds that were neither training nor prediction."""
    if not parts or parts.get("harness") is None:
        return None
    return max(parts["harness"] - sum(parts.get(part, 0.0) for part in WORK), 0.0)
