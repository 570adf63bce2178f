"""The columns of the results tables, each declared once: its heading, how its cell is computed from a
row of the table and formatted, the medians it shows, and where it appears on the side-by-side pages too,
its heading and cell there. ``report.benchmark_table`` writes its two tables from ``RESULTS`` and
``SETUP``, ``report.shown_rows`` takes the median, min and max of the fields they name in ``medians``,
``report.to_frame`` (results.csv) adds the field of a column that reads one of its own (``value``), and
``compare.results_html`` writes the page's columns from those with a ``page`` heading. A new metric is
one entry in ``RESULTS``.

A row is one framework and variant of one benchmark (``report.shown_rows``): its latest ok series of
repeats as medians, with ``FIELD_min`` and ``FIELD_max``, and ``runs`` (0 where none is ok); a column's
``empty`` is its cell in a row without an ok run.

Below them, the formatting every table shares: numbers and ranges, and text from a record made into one
safe markdown cell (``cell``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from common import flops
from common.benchmarks import BENCHMARKS
from harness import quietreport


@dataclass(frozen=True)
class Column:
    """One column of a results table."""

    title: str  # its heading; "{unit}" becomes the benchmark's unit, "{spread}" " (min–max)" where a row has repeats
    cell: Callable[[Any, "Table"], str]  # its markdown cell, from the row and the table
    empty: str | None = None  # the cell of a row without an ok run (None: ``cell`` gives that too)
    medians: tuple = ()  # the fields it shows as a series' median, with min and max (``report.shown_rows``)
    value: Callable[[dict], Any] | None = None  # a field of its own (``medians[0]``): its value from a record
    page: str | None = None  # its heading on the side-by-side page ("{unit}" filled in); None: not there
    page_cell: Callable[[Any], str] | None = None  # that page's text for a framework's latest ok record
    when: Callable[["Table"], bool] | None = None  # whether a table has this column (None: every table)

    def heading(self, unit: str, spread: str, published: str = "") -> str:
        return self.title.format(unit=unit, spread=spread, published=published)

    def text(self, row, table: "Table") -> str:
        return self.cell(row, table) if self.empty is None or row["runs"] > 0 else self.empty


@dataclass
class Table:
    """What a cell may read besides its row: the benchmark, every run of the device (``frame``, which
    a row's ``members`` index), the latest parity checks and the fastest median training time."""

    benchmark: str
    frame: pd.DataFrame
    checks: dict
    fastest: float
    published: tuple | None = None  # the original comparison's accuracy range, where the table is at full size
    rows: pd.DataFrame | None = None  # the table's rows: a variant's cell finds its framework's fp32 row there


def published(benchmark: str, frame: pd.DataFrame, rows: pd.DataFrame) -> tuple | None:
    """The original comparison's accuracy range for ``benchmark`` (``Benchmark.published``) where every
    run of ``rows`` is at the benchmark's full size (its record is not a subset); None otherwise."""
    found = BENCHMARKS[benchmark].published
    members = [i for group in rows["members"] for i in group]
    if not found or not members or "subset" not in frame:
        return None
    full = all(not missing(frame.loc[i, "subset"]) and not bool(frame.loc[i, "subset"]) for i in members)
    return found if full else None


def _against_published(r, table: Table) -> str:
    """A row's median accuracy against the published range: within it, or how many points outside."""
    low, high = table.published
    accuracy = r["test_accuracy"]
    if missing(accuracy):
        return "–"
    if accuracy < low:
        return f"{(accuracy - low) * 100:+.1f} points"
    if accuracy > high:
        return f"{(accuracy - high) * 100:+.1f} points"
    return "within"


AGREEMENT_SEEDS = 3  # a variant agrees with its fp32 row over at least this many seeds run by both
AGREEMENT_POINTS = 2.0  # ... when their mean accuracies over those seeds differ by no more than this


def has_variants(table: Table) -> bool:
    return table.rows is not None and bool((table.rows["variant"] != "fp32").any())


def _versus_fp32(r, table: Table) -> str:
    """A variant row's accuracy against its framework's fp32 row in the same table: the mean difference
    over the seeds both ran, in points, and whether it lies within ``AGREEMENT_POINTS`` over at least
    ``AGREEMENT_SEEDS`` seeds (fewer seeds: the difference, and what agreement needs)."""
    if r["variant"] == "fp32":
        return "–"
    fp32 = table.rows[(table.rows["framework"] == r["framework"]) & (table.rows["variant"] == "fp32")
                      & (table.rows["runs"] > 0)]
    if fp32.empty:
        return "no fp32 row"

    def by_seed(members) -> dict:
        return {int(table.frame.loc[i, "seed"]): float(table.frame.loc[i, "test_accuracy"]) for i in members}

    mine, theirs = by_seed(r["members"]), by_seed(fp32.iloc[0]["members"])
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return "no seed in common with fp32"
    points = sum(mine[seed] - theirs[seed] for seed in seeds) / len(seeds) * 100
    said = f"{points:+.1f} points over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    if len(seeds) < AGREEMENT_SEEDS:
        return f"{said}; agreement needs {AGREEMENT_SEEDS}"
    if abs(points) <= AGREEMENT_POINTS:
        return f"{said}: within {AGREEMENT_POINTS:g}"
    return f"**{said}: more than {AGREEMENT_POINTS:g} apart**"


def render(columns: list, rows: pd.DataFrame, table: Table, spread: str) -> list[str]:
    """The markdown lines of a table of ``columns``: its heading, the line under it, a line per row."""
    unit = BENCHMARKS[table.benchmark].unit
    columns = [column for column in columns if column.when is None or column.when(table)]
    published = f"{table.published[0] * 100:.0f}–{table.published[1] * 100:.0f} %" if table.published else ""
    lines = ["| " + " | ".join(column.heading(unit, spread, published) for column in columns) + " |",
             "|" + "---|" * len(columns)]
    for _, row in rows.iterrows():
        lines.append("| " + " | ".join(column.text(row, table) for column in columns) + " |")
    return lines


def _framework(r, table: Table) -> str:
    name = cell(r["framework"]) if r["variant"] == "fp32" else f"{cell(r['framework'])} ({cell(r['variant'])})"
    return name + (f" ({cell(r['gpu_note'])})" if isinstance(r.get("gpu_note"), str) and r["gpu_note"] else "")


def _runs(r, table: Table) -> str:
    seeds = sorted(int(table.frame.loc[i, "seed"]) for i in r["members"])
    return str(r["runs"]) if r["runs"] == 1 else f"{r['runs']} (seeds {seeds[0]}–{seeds[-1]})"


def _versus_fastest(r, table: Table) -> str:
    if r["_busy"]:
        return "– (busy)"  # not ranked
    return number(r["train_seconds"] / table.fastest, 2, "×") if table.fastest else "–"


def _notes(r, table: Table) -> str:
    """A row's notes: a later run that did not end ok, a record that disagrees with its executed notebook,
    a busy machine; for a row with no ok run its status and error; then a calibration apart. Each note is
    a sentence of its own, so that two of them never run together."""
    frame = table.frame
    notes = []
    if r["runs"] > 0:
        if r["_busy"]:
            notes.append(f"**busy**: {cell(quietreport.busy_note(r))}")
        disagreements = [frame.loc[i, "notebook_disagrees"] for i in r["members"]
                         if "notebook_disagrees" in frame and not missing(frame.loc[i, "notebook_disagrees"])]
        if disagreements:
            notes.append(f"**record disagrees with its executed notebook**: {cell('; '.join(disagreements))}")
        if not missing(r["later"]):
            notes.append(f"**{cell(r['later'])}**")
        corrected = [frame.loc[i, "load_corrected"] for i in r["members"]
                     if "load_corrected" in frame and isinstance(frame.loc[i, "load_corrected"], str)]
        if corrected:
            notes.append(cell("; ".join(corrected)))
    else:
        notes.append(f"**{cell(r['status'])}**: {cell(r['error'])}")
    if isinstance(r.get("calibration_note"), str):  # calibration.split: a machine off the table's calibration
        notes.append(cell(r["calibration_note"]))
    return ". ".join(note[:1].upper() + note[1:].rstrip(".") for note in notes)


# The results table: a row per framework and variant, fastest ok series first.
RESULTS = [
    Column("Framework", _framework),
    Column("Runs", _runs, empty="0"),
    Column("Test accuracy{spread}", lambda r, t: with_range(r, "test_accuracy", 1, 100, " %"), empty="–",
           medians=("test_accuracy",), page="Test accuracy",
           page_cell=lambda r: number(r["test_accuracy"] * 100, 1, " %")),
    Column("vs the original comparison's {published}", _against_published, empty="–",
           when=lambda table: table.published is not None),
    Column("Accuracy vs fp32", _versus_fp32, empty="–", when=has_variants),
    Column("Training time, s{spread}", lambda r, t: with_range(r, "train_seconds", 1), empty="–",
           medians=("train_seconds",), page="Training time (s)", page_cell=lambda r: number(r["train_seconds"], 1)),
    Column("Compile, s{spread}", lambda r, t: with_range(r, "compile_seconds", 1), empty="–",
           medians=("compile_seconds",), value=lambda found: compile_seconds(found)),
    Column("vs fastest", _versus_fastest, empty="–"),
    Column("Steady {unit}/s", lambda r, t: number(r["throughput_per_second"], 0), empty="–",
           medians=("throughput_per_second",), page="Steady {unit}/s",
           page_cell=lambda r: number(r["throughput_per_second"], 0)),
    Column("Achieved FLOP/s", lambda r, t: achieved(r, t.benchmark), empty="–", medians=("throughput_per_second",)),
    Column("Feeding", lambda r, t: number(None if missing(r["feeding_share"]) else r["feeding_share"] * 100, 1, " %"),
           empty="–", medians=("feeding_share",)),
    Column("Equivalent", lambda r, t: equivalence(t.checks, r["framework"], t.benchmark, r["variant"])),
    Column("Notes", _notes),
]

# The setup table under it: the same rows, how each was run.
SETUP = [
    Column("Framework", lambda r, t: cell(r["framework"])),
    Column("API", lambda r, t: cell(r["api"])),
    Column("Variant", lambda r, t: cell(r["variant"])),
    Column("First epoch, s{spread}", lambda r, t: with_range(r, "first_epoch_seconds", 1), empty="–",
           medians=("first_epoch_seconds",)),
    Column("Device", lambda r, t: cell(r["device"])),
    Column("Versions", lambda r, t: cell(r["versions"])),
    Column("Peak memory", lambda r, t: cell(quietreport.memory_cell(r))),
    Column("Energy", lambda r, t: cell(quietreport.energy_cell(r))),
]


def compile_seconds(found: dict) -> float | None:
    """A variant's compile time: its first epoch minus its median steady epoch (the steady rate already
    leaves the first epoch out: common.timing), 0 where the first epoch was no slower (a variant that
    compiles nothing, and noise, can make it faster); None for an fp32 row, or a run of one epoch."""
    first, steady = found.get("first_epoch_seconds"), found.get("median_epoch_seconds")
    if found.get("variant", "fp32") == "fp32" or missing(first) or missing(steady):
        return None
    return max(first - steady, 0.0)


def medians() -> list[str]:
    """The fields whose median, min and max ``report.shown_rows`` gives, each once."""
    return list(dict.fromkeys(field for column in RESULTS + SETUP for field in column.medians))


def own_fields(found: dict) -> dict:
    """The fields that columns read of their own (``Column.value``), from one record: for the frame and results.csv."""
    return {column.medians[0]: column.value(found) for column in RESULTS + SETUP if column.value is not None}


def page_columns() -> list[Column]:
    """The columns the side-by-side page shows of each framework's latest record."""
    return [column for column in RESULTS if column.page is not None]


def _rate(flop_per_second: float | None) -> str:
    if missing(flop_per_second):
        return "–"
    for unit, size in (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9)):
        if flop_per_second >= size:
            return f"{flop_per_second / size:.2f} {unit}"
    return f"{flop_per_second / 1e6:.2f} MFLOP/s"


def achieved(row, benchmark: str) -> str:
    """The steady training rate in FLOP/s (common.flops), and on a GPU whose peak is known its
    share of the dense FP32 peak."""
    throughput = row["throughput_per_second"]
    if missing(throughput):
        return "–"
    rate = flops.achieved(flops.per_sample(benchmark, training=True), throughput, 1.0)
    text = _rate(rate)
    gpu = row.get("gpu")
    share = flops.share_of_peak(rate, gpu, "fp32") if isinstance(gpu, str) and gpu else None
    if share is not None:
        text += f" ({share * 100:.1f} % of FP32 peak)"
    return text


def equivalence(checks: dict, framework: str, benchmark: str, variant: str = "fp32") -> str:
    """The Equivalent cell: the latest parity run of this framework and benchmark; for a variant, its
    relaxed step check (``rosetta parity --variant``), never the fp32 row's parity."""
    found = checks.get((framework, benchmark) if variant == "fp32" else (framework, benchmark, variant))
    if found is None:
        return "not checked" if variant == "fp32" else f"not checked (`rosetta parity --variant {cell(variant)}`)"
    if variant != "fp32" and found.get("equivalent"):
        logits = next((c for c in found.get("checks") or [] if c.get("output") == "logits"), {})
        difference = logits.get("max_abs_difference")
        return (f"within its step check: logits {'–' if missing(difference) else format(difference, '.1e')} "
                f"off (relative tolerance {logits.get('tolerance', '?')})")
    if found.get("equivalent"):
        differences = {c["output"]: c["max_abs_difference"] for c in found.get("checks") or []}
        if "final_weights" not in differences or "weights" not in differences:  # a record of the one-step check
            return "yes"
        return (f"yes: weights within {differences['weights']:.0e} after step 1, "
                f"{differences['final_weights']:.0e} after step {found.get('steps', '?')}")
    placed = found.get("cluster") if isinstance(found.get("cluster"), dict) else {}
    where = (f" (on node {placed.get('host')}, Ray node {str(placed.get('node_id'))[:12]})"
             if placed.get("node_id") else "")
    if found.get("status") in ("unavailable", "unsupported"):
        return f"not checked{where}: {cell(found.get('message'))}"
    return f"**no**{where}: {cell(found.get('message'))}"


def number(value, digits: int, suffix: str = "") -> str:
    if missing(value):
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def with_range(row, column: str, digits: int, scale: float = 1.0, suffix: str = "") -> str:
    """'median' for one run, 'median (min–max)' for repeats."""
    median = row[column]
    if missing(median):
        return "–"
    text = number(median * scale, digits, suffix)
    if row["runs"] > 1:
        text += f" ({number(row[column + '_min'] * scale, digits)}–{number(row[column + '_max'] * scale, digits)})"
    return text


def missing(value) -> bool:
    """Whether a cell holds no value: None, or NaN, which pandas (3's string columns among them) puts
    in its place. Never test a cell that may be missing for truth: NaN is true."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


# What could end a cell, start a link, emphasis or code, or open HTML. An underscore inside a word
# (fit_generator, ROSETTA_PYTHON36) starts no emphasis in GitHub's markdown and is left as it is, so
# that the table reads the same raw and rendered; one at a word's edge is escaped.
MARKDOWN = re.compile(r"([\\`*\[\]<>|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def one_line(text) -> str:
    """``text`` on one line: every line break (and other control character) as a space."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", str(text))


def escape(text) -> str:
    """``text`` as literal markdown on one line: no character of it makes a link, HTML, emphasis or code,
    or ends a table cell."""
    return MARKDOWN.sub(lambda m: "&lt;" if m[1] == "<" else "&gt;" if m[1] == ">" else "\\" + m[1], one_line(text))


def short(text) -> str:
    """``text`` on one line, a long one shortened: it keeps its start (what failed) and its end (where a
    traceback says why); "" for a missing value."""
    if missing(text):
        return ""
    text = one_line(text)
    return text if len(text) <= 300 else text[:100] + " ... " + text[-195:]


def cell(text) -> str:
    """A table cell of text taken from a record: on one line, shortened (``short``) and escaped (``escape``)."""
    return escape(short(text))
