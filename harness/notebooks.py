"""The notebook contract (docs/design.md, "The notebook contract"): its steps, and a cell's step.

Every notebook is made of the same steps, in this order; each step is a markdown cell and a
code cell, both tagged ``step:NAME``. ``rosetta parity`` keeps only ``PARITY_STEPS`` (no data,
no training); ``rosetta compare`` puts the cells of two notebooks on one row per step.
"""
from __future__ import annotations

STEPS = ("parameters", "imports", "environment", "data", "model", "optimiser", "train", "predict", "evaluate",
         "parity")
PARITY_STEPS = tuple(step for step in STEPS if step not in ("data", "train", "predict", "evaluate"))


def cell_steps(cell) -> list[str]:
    """The steps a cell is tagged with (``step:NAME`` -> NAME); [] for an untagged cell."""
    return [tag[len("step:"):] for tag in cell.metadata.get("tags", []) if tag.startswith("step:")]
