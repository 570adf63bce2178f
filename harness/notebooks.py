"""The notebook contract (docs/design.md, "The notebook contract"): its steps, a cell's step,
and papermill's arguments for a run.

Every notebook is made of the same steps, in this order; each step is a markdown cell and a
code cell, both tagged ``step:NAME``. ``rosetta parity`` keeps only ``PARITY_STEPS`` (no data,
no training); ``rosetta compare`` puts the cells of two notebooks on one row per step. Only the
standard library is used here (``harness.docker`` runs on any Python 3.9 or newer).
"""
from __future__ import annotations

import json

STEPS = ("parameters", "imports", "environment", "data", "model", "optimiser", "train", "predict", "evaluate",
         "parity", "export")
PARITY_STEPS = tuple(step for step in STEPS if step not in ("data", "train", "predict", "evaluate", "export"))


def cell_steps(cell) -> list[str]:
    """The steps a cell is tagged with (``step:NAME`` -> NAME); [] for an untagged cell."""
    return [tag[len("step:"):] for tag in cell.metadata.get("tags", []) if tag.startswith("step:")]


def papermill_arguments(notebook, executed, kernel: str, cwd, parameters: dict) -> list[str]:
    """papermill's arguments for one run of ``notebook`` into ``executed`` in ``kernel``, from the
    folder ``cwd``, with ``parameters`` injected (the same on the host and in a container)."""
    return [str(notebook), str(executed), "--kernel", kernel, "--cwd", str(cwd),
            "--parameters_yaml", json.dumps(parameters), "--log-output", "--no-progress-bar"]
