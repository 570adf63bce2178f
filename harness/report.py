"""The results: every JSON record read into pandas, and the tables and plots made from them.

    rosetta report [--results results]

writes ``results/README.md``, ``results/results.csv`` (every record, one row each)
and a plot per device and benchmark. Each device (each GPU model, and each CPU model)
has tables of its own, one per benchmark and configuration (``CONFIGURATION``: the sizes and
the threads asked for), the newest configuration first and each older one apart: the latest
ok run of each framework, fastest first (with a note where a later run did not end ok); runs
on different devices or of different configurations are never ranked together. Where the
results folder is the repository's own, the list of devices in the repository's
README (between its ``results`` markers) is rewritten too. Nothing here is typed by
hand: every figure comes from a record.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from common import REPOSITORY, machine
from common.benchmarks import BENCHMARKS
from harness import calibration, columns, gpus, guard, phases, quietreport, records
from harness.columns import cell, escape, missing, number, one_line, short


def _device(row: dict) -> str:
    env = row.get("environment")
    return machine.describe(env) if env else ""


def _versions(row: dict) -> str:
    """The framework's versions, and where its environment came from: built from the pinned
    spec, an existing interpreter (whose versions may differ from the pins), or a docker image."""
    env = row.get("environment") or {}
    versions = env.get("versions") or {}
    text = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "numpy")
    source = row.get("kernel_environment") or {}
    if source.get("kind") == "existing":
        found = "" if versions else f" {source.get('versions') or ''}".rstrip()
        origin = f"existing environment {portable_path(source.get('python'))}{found}"
    elif source.get("kind") == "built":
        origin = f"built from {Path(source.get('spec') or '').name}"
    elif source.get("kind") == "docker":
        origin = f"docker image {source.get('image')}"
    else:
        return text
    return f"{text} ({origin})" if text else origin


# An absolute path in a text: after a space, a bracket, a quote or the start, never inside a URL or a
# relative path ("https://host/a", "owner/repo"); two parts at least ("/x/y").
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s/|,;:()\[\]'\"`]+/)+[^\s/|,;:()\[\]'\"`]+")


def portable_path(path) -> str:
    """A path as committed text names it: relative to the repository where inside it; an
    interpreter as its environment's folder and bin/NAME; anything else by its file name. The
    records keep the full path: this is for the rendered text and the CSV, read on other machines."""
    text = str(path)
    try:
        return Path(text).relative_to(REPOSITORY).as_posix() or "."
    except ValueError:
        pass
    parts = Path(text).parts
    if len(parts) >= 3 and parts[-2] == "bin":  # .../ENV/bin/python
        return "/".join(parts[-3:])
    return Path(text).name or text


def portable_text(text):
    """``text`` with each absolute path in it made portable (:func:`portable_path`); None stays None."""
    if not isinstance(text, str):
        return text
    return ABSOLUTE_PATH.sub(lambda found: portable_path(found.group(0)), text)


def _data(row: dict) -> str:
    parts = []
    if row.get("subset"):  # "1 epochs" in records written before record.py said "1 epoch"
        parts.append("subset: " + "; ".join(re.sub(r"^1 epochs\b", "1 epoch", str(difference))
                                             for difference in row.get("differs_from_benchmark") or []))
    else:
        parts.append("full")
    source = (row.get("data") or {}).get("source")
    if source == "local copy":
        parts.append(f"local copy {Path(row['data']['path']).name}")
    return ", ".join(parts)


def _node(row: dict) -> str | None:
    """The cluster node a record was made for (``rosetta bench --cluster``): ``HOST (Ray node ID)``, or
    ``no node`` for a task that had not started on one; None for a run made on this machine."""
    placed = row.get("cluster")
    if not isinstance(placed, dict):
        return None
    if not placed.get("node_id"):
        return "no node"
    return f"{placed.get('host')} (Ray node {str(placed['node_id'])[:12]})"


def to_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per record, with the columns the tables and the CSV use (and any field a table's column
    reads of its own, ``columns.own_fields``)."""
    rows = []
    for r in runs:
        rows.append({
            "framework": r["framework"], "api": r["api"], "benchmark": r["benchmark"],
            "variant": r["variant"], "status": r["status"], "error": portable_text(r.get("error")),
            "test_accuracy": r.get("test_accuracy"), "train_seconds": r.get("train_seconds"),
            "first_epoch_seconds": r.get("first_epoch_seconds"),
            "median_epoch_seconds": r.get("median_epoch_seconds"),
            "throughput_per_second": r.get("throughput_per_second"),
            "epochs": r["epochs"], "batch_size": r["batch_size"],
            "train_samples": r["train_samples"], "test_samples": r["test_samples"],
            "subset": r.get("subset"), "seed": r["seed"], "parameters": r.get("parameters"),
            "device": _device(r), "device_group": records.device_group(r), "versions": _versions(r), "data": _data(r),
            "environment_kind": (r.get("kernel_environment") or {}).get("kind"),
            "cpu_count": (r.get("environment") or {}).get("cpu_count"),
            "platform": (r.get("environment") or {}).get("platform"),
            "data_source": (r.get("data") or {}).get("source"),
            "python": (r.get("environment") or {}).get("python"),
            "git_commit": (r.get("environment") or {}).get("git_commit"),
            "timestamp": r["timestamp"], "notebook": r.get("notebook"), "node": _node(r),
            "feeding_share": r.get("feeding_share"),
            "gpu": (r.get("environment") or {}).get("gpu"), "gpu_note": gpus.record_note(r),
            "threads": (r.get("environment") or {}).get("threads"),
            "threads_requested": (r.get("environment") or {}).get("threads_requested"),
            **{f"phase_{part}": (r.get("phases") or {}).get(part) for part in phases.PARTS + ("harness", "other")},
            "notebook_disagrees": r.get("notebook_disagrees"),
            **calibration.columns(r),
            **quietreport.frame_columns(r),
            **columns.own_fields(r),
        })
    names = ["framework", "api", "benchmark", "variant", "status", "timestamp"]
    frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else names)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest record of each framework, benchmark and variant."""
    return frame.groupby(["framework", "benchmark", "variant"], sort=False).tail(1)


SERIES = ["epochs", "batch_size", "train_samples", "test_samples", "git_commit"]
# What makes runs comparable on one device: each table holds one configuration, and runs of different
# configurations are never ranked together. The sizes (which also say whether a run is a subset) and
# the CPU threads the run asked for (None: every core); `--resume` compares the same (runner.finished_runs).
# Not the data's source: a local copy and the download are the same data, checked by their checksums.
CONFIGURATION = ("epochs", "batch_size", "train_samples", "test_samples", "threads_requested")


def configuration(row) -> tuple:
    """A run's configuration (``CONFIGURATION``'s values; None where a value is missing)."""
    return tuple(None if missing(row[key]) else int(row[key]) for key in CONFIGURATION)


def configurations(frame: pd.DataFrame, benchmark: str) -> list[tuple[tuple, pd.DataFrame]]:
    """The runs of ``benchmark`` split by configuration, the configuration of the newest run first
    (the main table), then the others by their newest run, newest first. ``frame`` is oldest first."""
    rows = frame[frame["benchmark"] == benchmark]
    keys = [configuration(row) for _, row in rows.iterrows()]
    order = list(dict.fromkeys(reversed(keys)))
    return [(key, rows[[k == key for k in keys]]) for key in order]


def describe_configuration(key: tuple) -> str:
    """'2 epochs, batch 64, 4,000 training and 2,000 test samples, every core'."""
    values = dict(zip(CONFIGURATION, key))
    number = lambda value: "?" if value is None else f"{value:,}"  # noqa: E731
    epochs = values["epochs"]
    threads = values["threads_requested"]
    return (f"{number(epochs)} epoch{'' if epochs == 1 else 's'}, batch {number(values['batch_size'])}, "
            f"{number(values['train_samples'])} training and {number(values['test_samples'])} test samples, "
            + ("every core" if threads is None else f"{threads} thread{'' if threads == 1 else 's'}"))


def series(runs: pd.DataFrame) -> pd.DataFrame:
    """The repeats that count for one framework and variant: the ok runs with the sizes and
    commit of its latest ok run, the latest of each seed (``--repeats N`` runs seeds s to
    s + N - 1), oldest first."""
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return ok
    newest = ok.iloc[-1]
    same = ok[[all(_same(row[key], newest[key]) for key in SERIES) for _, row in ok.iterrows()]]
    return same.groupby("seed", sort=False).tail(1).sort_values("timestamp", kind="stable")


def _same(a, b) -> bool:
    return (missing(a) and missing(b)) or a == b


def _spread(values) -> tuple:
    values = pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna()
    if values.empty:
        return (None, None, None)
    return (float(values.median()), float(values.min()), float(values.max()))


def shown_rows(frame: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """One row per framework and variant of ``benchmark``: its latest ok series of repeats
    (``series``), as medians with their min and max, or its latest run where none is ok.

    ``later`` says when runs after the shown ones did not end ok, naming the latest of them
    (its status, timestamp and error); it is None otherwise. ``runs`` is the number of
    repeats shown, ``members`` their rows of ``frame``.
    """
    rows = frame[frame["benchmark"] == benchmark]
    shown = []
    for _, runs in rows.groupby(["framework", "benchmark", "variant"], sort=False):
        repeats = series(runs)
        row = (repeats if len(repeats) else runs).iloc[-1].copy()
        last_ok = runs.index[runs["status"] == "ok"]
        after = runs.loc[runs.index > last_ok[-1]] if len(last_ok) else runs.iloc[0:0]
        row["later"] = None
        if len(after):
            last = after.iloc[-1]
            row["later"] = f"a later run ({last['timestamp']}) {last['status']}: {short(last['error'])}"
        row["runs"] = len(repeats)
        row["members"] = list(repeats.index) if len(repeats) else [runs.index[-1]]
        for column in columns.medians():
            row[column], row[column + "_min"], row[column + "_max"] = _spread(repeats[column]) if len(repeats) \
                else (None, None, None)
        shown.append(row)
    extra = ["later", "runs", "members"] + [f"{c}_{end}" for c in columns.medians() for end in ("min", "max")]
    return pd.DataFrame(shown, columns=list(frame.columns) + extra)


def _ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """Ok rows first, quiet before busy (``quietreport.mark_busy``), then the fp32 rows before the variants
    (never mixed with them: docs/variants.md), fastest first within each."""
    rows = rows.copy()
    rows["_ok"] = rows["runs"] > 0
    if "_busy" not in rows:
        rows["_busy"] = False
    rows["_variant"] = rows["variant"] != "fp32"
    return rows.sort_values(["_ok", "_busy", "_variant", "train_seconds"], ascending=[False, True, True, True],
                            na_position="last")


def benchmark_table(frame: pd.DataFrame, benchmark: str, checks: dict | None = None,
                    shown: pd.DataFrame | None = None) -> str:
    """The markdown table of one benchmark, fastest ok series first (by median training time),
    the others after; then the setup table (API, variant, device, versions) of the same rows.
    Their columns are ``columns.RESULTS`` and ``columns.SETUP``.

    ``checks`` holds the latest parity record of each (framework, benchmark), and the latest relaxed step
    check of each (framework, benchmark, variant) other than fp32.
    """
    rows = _ordered(quietreport.mark_busy(frame, shown_rows(frame, benchmark) if shown is None else shown))
    ranked = rows["_ok"] & ~rows["_busy"]  # a busy run is not ranked
    if (ranked & ~rows["_variant"]).any():  # variants are measured against the fastest fp32 row, never it against them
        ranked &= ~rows["_variant"]
    fastest = rows.loc[ranked, "train_seconds"].min()
    table = columns.Table(benchmark, frame, checks or {}, fastest, columns.published(benchmark, frame, rows), rows)
    repeats = int(rows["runs"].max()) if len(rows) else 0
    spread = " (min–max)" if repeats > 1 else ""
    lines = columns.render(columns.RESULTS, rows, table, spread)
    lines += [""] + columns.render(columns.SETUP, rows, table, spread)
    data = sorted({cell(frame.loc[i, "data"]) for members in rows["members"] for i in members})
    lines += ["", "Data: " + " / ".join(data) + "."]
    energy = quietreport.energy_line(rows)
    if energy:
        lines.append(cell(energy))
    return "\n".join(lines)


def overhead_line(frame: pd.DataFrame, shown: pd.DataFrame) -> str | None:
    """Where the wall time of the runs shown went, from their records: training and prediction, the
    harness's own cost (the quiet-machine check and the calibration before papermill starts, then
    ``phases.HARNESS``) and the frameworks' set-up (``phases.SET_UP``), each as a share of it all;
    None where no record has phase times."""
    members = [i for group in shown["members"] for i in group]
    runs = frame.loc[members]
    runs = runs[runs["phase_harness"].notna()] if "phase_harness" in runs else runs.iloc[0:0]
    if runs.empty:
        return None

    def total(fields) -> float:
        return float(runs[[c for c in fields if c in runs]].apply(pd.to_numeric, errors="coerce").fillna(0)
                     .sum().sum())

    def phase(parts) -> list[str]:
        return [f"phase_{part}" for part in parts]

    runs = runs.copy()
    # a calibration run within the quiet-machine check's window is part of its seconds already
    within = runs["calibrated_within"].fillna(False).astype(bool) if "calibrated_within" in runs \
        else pd.Series(False, index=runs.index)
    if "calibration_seconds" in runs:
        runs["calibration_apart"] = pd.to_numeric(runs["calibration_seconds"], errors="coerce").where(~within, 0.0)
    harness = {"quiet-machine check and calibration": ["waited_seconds", "calibration_apart"],
               "kernel start": phase(["kernel_start"]), "kernel stop": phase(["kernel_stop"]),
               "data": phase(["data"]), "papermill and the rest": phase(["other"])}
    framework = {"imports": phase(["imports", "environment"]), "model and training step": phase(["model", "optimiser"]),
                 "evaluation, parity and export": phase(["evaluate", "parity", "export"])}
    before = total(["waited_seconds", "calibration_apart"])
    wall = total(["phase_harness"]) + before
    if wall <= 0:
        return None
    work, set_up = total(phase(phases.WORK)), total(phase(phases.SET_UP))
    own = total(phase(phases.HARNESS)) + before

    def listed(parts: dict) -> str:
        return ", ".join(f"{name} {total(fields):,.0f} s" for name, fields in parts.items())

    return (f"Where the time went: the {len(runs)} run(s) of this table with phase times took {wall:,.0f} s from "
            f"the quiet-machine check to the kernel's exit, {work:,.0f} s of it training and prediction. The "
            f"harness's own share is {own / wall * 100:.1f} % ({listed(harness)}); the frameworks' set-up took "
            f"{set_up / wall * 100:.1f} % ({listed(framework)}); in all, the overhead is "
            f"{(wall - work) / wall * 100:.0f} % of the wall time.")


def _seeds(seeds: list[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def repeat_order(frame: pd.DataFrame, shown: pd.DataFrame) -> str | None:
    """The order the repeats of a table's rows ran in, read from their records' timestamps and
    seeds: interleaved (every framework once per round, round after round), back to back (each
    framework's repeats one after another), mixed, or one run each. None for no runs."""
    runs = []
    for _, row in shown.iterrows():
        name = row["framework"] if row["variant"] == "fp32" else f"{row['framework']} ({row['variant']})"
        runs += [(pd.to_datetime(frame.loc[i, "timestamp"], utc=True), int(frame.loc[i, "seed"]), name)
                 for i in row["members"]]
    if not runs:
        return None
    runs.sort(key=lambda run: run[0])
    counts = {}
    for _, _, name in runs:
        counts[name] = counts.get(name, 0) + 1
    seeds = _seeds(sorted({seed for _, seed, _ in runs}))
    repeated = [name for name, count in counts.items() if count > 1]
    if not repeated:
        return f"Repeats: none, one run each ({seeds})."
    order = [(seed, name) for _, seed, name in runs if name in repeated]
    rounds = sorted({seed for seed, _ in order})
    positions = {name: [i for i, (_, other) in enumerate(order) if other == name] for name in repeated}
    together = all(spots == list(range(spots[0], spots[0] + len(spots))) for spots in positions.values())
    if (len(repeated) > 1 and [seed for seed, _ in order] == sorted(seed for seed, _ in order)
            and len(set(order)) == len(order)):
        text = (f"Repeats interleaved: every framework once per round, {len(rounds)} rounds, "
                f"{_seeds(rounds)} (from the records' times and seeds)")
    elif together:
        text = (f"Repeats back to back: each framework's runs one after another, not interleaved, "
                f"{_seeds(rounds)} (from the records' times and seeds)")
    else:
        text = (f"Repeats in mixed order: neither every framework once per round nor each framework's runs "
                f"together, {_seeds(rounds)} (from the records' times and seeds)")
    single = [name for name, count in counts.items() if count == 1]
    if single:
        text += f"; one run each: {', '.join(single)}"
    return text + "."


def table_notes(frame: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """The lines under a table: the order its repeats ran in, and where its runs' time went."""
    lines = []
    for line in (repeat_order(frame, rows), overhead_line(frame, rows)):
        if line:
            lines += [escape(line), ""]
    return lines


def _milliseconds(entry: dict | None) -> str:
    if not entry:
        return "–"
    return f"{entry['median_seconds'] * 1e3:.3g} ({entry['p90_seconds'] * 1e3:.3g})"


def _exporter(check: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in (check.get("exporter_versions") or {}).items())
    text = f"{check.get('exporter')} ({versions})" if versions else str(check.get("exporter") or "–")
    return text + (f"; export-only forward: {check['export_forward']}" if check.get("export_forward") else "")


def _graph(check: dict) -> str:
    graph = check.get("graph")
    if not graph:
        return "–"
    text = f"opset {graph['opset']}, {graph['bytes'] / 2**20:.1f} MiB"
    if not graph.get("gru_form"):
        return text
    return text + f", {BENCHMARKS[check['benchmark']].model}: {graph['gru_form']}"  # the recurrence's form


def _check_configuration(check: dict, frame: pd.DataFrame) -> tuple | None:
    """The configuration of the run whose export ``check`` checked (found by its executed notebook),
    or None where that run is not among ``frame``'s."""
    runs = frame[frame["notebook"] == check.get("run")] if check.get("run") else frame.iloc[0:0]
    return configuration(runs.iloc[-1]) if len(runs) else None


def _status_note(status, message) -> str:
    """``**status**: message`` for a table cell, without the status twice: an ONNX check's message
    starts with its own status ("no exporter: ...", "failed: ...")."""
    message = "" if message is None else portable_text(str(message))
    if status and message.startswith(f"{status}: "):
        message = message[len(f"{status}: "):]
    return f"**{cell(status)}**: {cell(message)}"


def onnx_tables(checks: list[dict]) -> str:
    """The ONNX tables of one device: each export's three checks, then the framework's prediction
    against ONNX Runtime's at each batch size (median latency, 90th percentile in brackets)."""
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    checks = sorted(checks, key=lambda c: (order.get(c["benchmark"], 9), c["framework"]))
    lines = ["| Framework | Model | Exporter | Graph | ONNX equivalent | Agrees with the framework | Notes |",
             "|---|---|---|---|---|---|---|"]
    for c in checks:
        model = BENCHMARKS[c["benchmark"]].model if c["benchmark"] in BENCHMARKS else c["benchmark"]
        by_name = {k["check"]: k for k in c.get("checks", [])}
        if not by_name:
            lines.append(f"| {cell(c['framework'])} | {cell(model)} | – | – | – | – | "
                         f"{_status_note(c.get('status'), c.get('message'))} |")
            continue
        reference, framework, classes = by_name["reference"], by_name["framework"], by_name["classes"]
        equivalent = ("yes" if reference["ok"] else "**no**") + f": {reference['max_abs_difference']:.0e}"
        agrees = ("yes" if framework["ok"] and classes["ok"] else "**no**") + (
            f": logits {framework['max_abs_difference']:.0e}, classes {classes['agree'] + classes['ties']}/"
            f"{classes['samples']}")
        note = "" if c.get("ok") else _status_note("failed", c.get("message"))
        if c.get("timing_skipped"):
            note += f" not timed on {cell(c.get('device'))}: {cell(c['timing_skipped'])}"
        lines.append(f"| {cell(c['framework'])} | {cell(model)} | {cell(_exporter(c))} | {cell(_graph(c))} "
                     f"| {equivalent} | {agrees} "
                     f"| {note} |")
    timed = [c for c in checks if c.get("onnxruntime_latencies")]
    if timed:
        sizes = sorted({e["batch_size"] for c in timed for e in c["framework_latencies"]})
        threads = sorted({str(c.get("threads")) for c in timed})
        lines += ["", f"Prediction, milliseconds per batch: median (90th percentile) of "
                      f"{timed[0]['framework_latencies'][0]['runs']} timed runs after "
                      f"{timed[0]['framework_latencies'][0]['warmup']} warm-up runs, the framework's own "
                      f"prediction then ONNX Runtime {cell(timed[0].get('onnxruntime'))} on the same device with the "
                      f"same threads ({', '.join(threads)}); samples per second at batch {sizes[-1]}.", "",
                  "| Framework | Model | " + " | ".join(f"Batch {b}: framework | Batch {b}: ONNX Runtime" for b in sizes)
                  + f" | Samples/s at {sizes[-1]}: framework | Samples/s: ONNX Runtime |",
                  "|---|---|" + "---|---|" * len(sizes) + "---|---|"]
        for c in timed:
            ours = {e["batch_size"]: e for e in c["framework_latencies"]}
            theirs = {e["batch_size"]: e for e in c["onnxruntime_latencies"]}
            cells = [cell for b in sizes for cell in (_milliseconds(ours.get(b)), _milliseconds(theirs.get(b)))]
            rates = [number((d.get(sizes[-1]) or {}).get("samples_per_second"), 0) for d in (ours, theirs)]
            model = BENCHMARKS[c["benchmark"]].model if c["benchmark"] in BENCHMARKS else c["benchmark"]
            lines.append(f"| {cell(c['framework'])} | {cell(model)} | " + " | ".join(cells + rates) + " |")
    return "\n".join(lines)


def _subset_title(rows: pd.DataFrame, benchmark: str) -> str:
    """The subset the rows ran on, briefly ("subset: 2 of 10 epochs, 4,000 of 50,000 samples"), or ""."""
    subset = rows[rows["subset"].fillna(False).astype(bool)]
    if subset.empty:
        return ""
    spec = BENCHMARKS[benchmark]
    parts = []
    for column, full, what in (("epochs", spec.epochs, "epochs"), ("train_samples", spec.train, "training samples"),
                               ("test_samples", spec.test, "test samples")):
        values = sorted({int(v) for v in subset[column].dropna()})
        if values and values != [full]:
            parts.append(f"{'/'.join(f'{v:,}' for v in values)} of {full:,} {what}")
    return "subset: " + ", ".join(parts) if parts else "subset"


def plot(frame: pd.DataFrame, benchmark: str, path: Path, device: str = "",
         shown: pd.DataFrame | None = None) -> Path | None:
    """Median training time by framework (bars, with the min-max of the repeats as error bars),
    each one's median test accuracy written beside it; the title names the device and subset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = shown_rows(frame, benchmark) if shown is None else shown
    rows = rows[rows["runs"] > 0]  # the table's rows that have a time
    if rows.empty:
        return None
    rows = rows.sort_values("train_seconds", ascending=False)
    labels = [_literal(f"{f} ({v})" if v != "fp32" else f) for f, v in zip(rows["framework"], rows["variant"])]
    figure, axes = plt.subplots(figsize=(8, 1.5 + 0.5 * len(rows)))
    try:
        _draw(figure, axes, rows, labels, benchmark, device, path)
    finally:
        plt.close(figure)
    return path


def _literal(text: str) -> str:
    """Text matplotlib shows as it is: a dollar sign would start TeX-like math."""
    return one_line(text).replace("$", r"\$")


def _draw(figure, axes, rows: pd.DataFrame, labels: list[str], benchmark: str, device: str, path: Path) -> None:
    low = (rows["train_seconds"] - rows["train_seconds_min"]).fillna(0).clip(lower=0)
    high = (rows["train_seconds_max"] - rows["train_seconds"]).fillna(0).clip(lower=0)
    bars = axes.barh(labels, rows["train_seconds"], color="#4c72b0", xerr=[low, high], capsize=3)
    for bar, accuracy, later, top in zip(bars, rows["test_accuracy"], rows["later"], rows["train_seconds_max"]):
        note = "" if missing(later) else " (a later run did not end ok)"
        axes.text(max(bar.get_width(), top if top == top else 0), bar.get_y() + bar.get_height() / 2,
                  f"  {accuracy * 100:.1f} % accuracy{note}", va="center", fontsize=9)
    repeats = int(rows["runs"].max())
    axes.set_xlabel("training time (s), lower is better" + (
        f"; median of up to {repeats} repeats, bars from min to max" if repeats > 1 else ""))
    subset = _subset_title(rows, benchmark)
    axes.set_title(f"{BENCHMARKS[benchmark].title} on {_literal(device) or 'one device'}"
                   + (f"\n{subset}" if subset else "") + "\ntraining time and test accuracy", fontsize=10)
    axes.set_xlim(0, rows["train_seconds_max"].fillna(rows["train_seconds"]).max() * 1.5)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def slug(text: str) -> str:
    """A file-name-safe form of a device's name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def devices(frame: pd.DataFrame) -> list[str]:
    """The devices with runs: GPUs first (by name), then CPUs, then runs with no device."""
    found = list(dict.fromkeys(frame["device_group"])) if not frame.empty else []
    rank = lambda d: (d.startswith("CPU: "), d == "device not recorded", d)  # noqa: E731
    return sorted(found, key=rank)


def where_and_when(rows: pd.DataFrame) -> str:
    """How a device's shown runs were made: dates, machine, commits, and how each benchmark's
    runs differ from the full benchmark."""
    dates = sorted(str(t)[:10] for t in rows["timestamp"])
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    cores = {int(c) for c in rows["cpu_count"].dropna()}
    systems = {" ".join(str(p).split("-")[:2]) for p in rows["platform"].dropna()}  # "Linux 6.1.0"
    commits = sorted({str(c)[:12] for c in rows["git_commit"].dropna()})
    parts = [f"{len(rows)} run(s) on {when}"]
    machine = ", ".join(sorted(systems))
    if cores:
        machine = f"{'/'.join(map(str, sorted(cores)))} CPU cores" + (f", {machine}" if machine else "")
    if machine:
        parts.append(machine)
    if commits:
        parts.append("commit " + ", ".join(commits))
    nodes = sorted({str(n) for n in rows["node"].dropna()}) if "node" in rows else []
    if nodes:  # made on a Ray cluster: every record names its node, also those that did not run (docs/cluster.md)
        parts.append(f"on cluster node(s) {', '.join(nodes)}")
    for benchmark, title in ((b.name, b.title) for b in BENCHMARKS.values()):
        sizes = sorted({str(d) for d in rows.loc[rows["benchmark"] == benchmark, "data"].dropna()})
        if sizes:
            parts.append(f"{title.split(' on ')[0]}: {' / '.join(sizes)}")
    return "; ".join(parts)


README_BEGIN = "<!-- results: begin (written by `rosetta report`) -->"
README_END = "<!-- results: end -->"


def update_readme(readme: Path, lines: list[str]) -> bool:
    """Replaces the text between the results markers of ``readme`` with ``lines``; False
    (and nothing written) where the file or its markers are missing."""
    try:
        text = readme.read_text()
    except OSError:
        return False
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    guard.replace_text(readme, head + README_BEGIN + "\n" + "\n".join(lines) + "\n" + README_END + tail)
    return True


def render(results: Path, readme: Path | None = None) -> Path:
    """Writes README.md, results.csv and the plots under ``results``; returns the README's path.

    ``readme``: a README whose results list to rewrite (default: the repository's own, when
    ``results`` is the repository's results folder).
    """
    found = records.load_records(results, check_notebooks=True)
    frame = to_frame(found)
    checks = {**records.latest_parity(results), **records.latest_variant_checks(results)}
    onnx = records.latest_onnx(results)
    guard.replace_text(results / "results.csv", frame.to_csv(index=False))  # a full disk keeps the old one
    for old in results.glob("*.png"):  # plots of devices or benchmarks no longer shown
        try:
            old.unlink()
        except OSError as error:
            print(f"warning: could not remove the old plot {old}: {error}", file=sys.stderr)
    parts = ["# Results", "",
             f"Generated by `rosetta report` from the {len(found)} JSON record(s) in `records/`; "
             "do not edit by hand. Each device has its own tables, one per benchmark and configuration "
             "(epochs, batch size, training and test samples, CPU threads asked for): the newest "
             "configuration's first, then any older configuration's in a table of its own, never ranked "
             "with it. Each holds the latest ok series of every framework on that device (its latest ok run and the repeats "
             "of it, the other seeds of `--repeats`, at the same sizes and commit: medians, with min "
             "and max where there are several), fastest first, and a note beside it when a later run "
             "failed, was interrupted or was lost (a framework without an ok run shows its latest run); the "
             "plot shows the runs of the first table. Runs on different devices are never ranked together. "
             "`results.csv` holds every run. \"Achieved FLOP/s\" is the steady rate times the FLOPs "
             "of a training step per sample (docs/measurements.md); \"Feeding\" the share of "
             "training spent waiting for the shared iterator's batches. \"Equivalent\" is "
             "the latest `rosetta parity` check of that notebook's model against the NumPy "
             "reference, with the largest weight difference after its first step and after its "
             "last (see docs/parity.md).", ""]
    parts += [quietreport.EXPLAINED, ""]
    found = devices(frame)
    if not found:
        parts += ["No runs yet.", ""]
    summary, tables = [], {}
    for device in found:
        shown = frame[frame["device_group"] == device]
        # each benchmark's configurations, newest first, each with its rows (computed once, for every use below)
        tables[device] = {b: [(key, shown_rows(runs, b)) for key, runs in configurations(shown, b)]
                          for b in BENCHMARKS}
        main = [groups[0][1] for groups in tables[device].values() if groups]
        described = where_and_when(shown.loc[[i for rows in main for group in rows["members"] for i in group]])
        earlier = sum(len(rows) for groups in tables[device].values() for _, rows in groups[1:])
        if earlier:
            described += (f"; and {earlier} row(s) of earlier configurations, in tables of their own")
        parts.append(f"- [{escape(device)}](#{anchor(one_line(device))}): {escape(described)}")
        summary.append(f"- [{escape(device)}](results/README.md#{anchor(one_line(device))}): {escape(described)}")
    parts.append("")
    for device in found:
        shown = frame[frame["device_group"] == device]
        parts += [f"## {escape(device)}", ""]
        for benchmark in BENCHMARKS:
            parts += [f"### {BENCHMARKS[benchmark].title}", ""]
            groups = tables[device][benchmark]
            if not groups:
                parts += ["No runs on this device.", ""]
                continue
            (key, rows), older = groups[0], groups[1:]

            def table(found: pd.DataFrame) -> str:  # a table, then the lines under it: repeat order, overhead
                return "\n".join([benchmark_table(shown, benchmark, checks, found), "",
                                  *table_notes(shown, found)]).rstrip("\n")

            main, *others = calibration.split(shown, rows)  # machines calibrated apart are not ranked together
            rows = main.rows
            parts += [f"Configuration: {describe_configuration(key)}.", "", calibration.line(main), "",
                      table(rows), ""]
            image = None
            try:
                image = plot(shown, benchmark, results / f"{benchmark}-{slug(device)}.png", device, rows)
            except Exception as error:  # noqa: BLE001 - one record's values must not cost the table
                print(f"warning: no plot of {benchmark} on {one_line(device)}: {type(error).__name__}: "
                      f"{short(error)}", file=sys.stderr)
            if image:
                parts += [f"![{escape(BENCHMARKS[benchmark].title + ' on ' + device)}]({image.name})", ""]
            parts += calibration.apart(others, main, table)
            for key, rows in older:
                first, *others = calibration.split(shown, rows)
                parts += [f"#### Earlier configuration: {describe_configuration(key)}", "",
                          "Not ranked with the table above: these runs differ from it in their configuration.", "",
                          calibration.line(first), "", table(first.rows), ""]
                parts += calibration.apart(others, first, table, earlier=describe_configuration(key))
        exported = [c for c in onnx.values() if c.get("device_group") == device]
        if exported:
            latest_keys = {b: groups[0][0] for b, groups in tables[device].items() if groups}
            grouped = {}
            for check in exported:  # by the configuration of the run that was exported
                key = _check_configuration(check, shown)
                earlier = key is not None and key != latest_keys.get(check["benchmark"])
                grouped.setdefault((check["benchmark"], key) if earlier else None, []).append(check)
            parts += ["### Exported to ONNX", "", "Each latest run's export (`rosetta onnx`, docs/onnx.md): "
                      "\"ONNX equivalent\" is ONNX Runtime's logits against the NumPy float64 reference on the "
                      "trained weights; \"Agrees\" its logits against the framework's on 16 test samples and "
                      "its classes over the whole test set. The exports of runs in the configurations of the "
                      "tables above come first; those of runs in earlier configurations follow, apart.", ""]
            if None in grouped:
                parts += [onnx_tables(grouped.pop(None)), ""]
            for (benchmark, key), found_checks in sorted(grouped.items(), key=lambda item: str(item[0])):
                parts += [f"#### Exported from runs of an earlier configuration: {BENCHMARKS[benchmark].title}, "
                          f"{describe_configuration(key)}", "", onnx_tables(found_checks), ""]
        if device.startswith("CPU: "):
            parts += ["These runs are on a CPU: they show that every notebook trains and how the "
                      "frameworks compare there, not how fast they are on a GPU.", ""]
    path = results / "README.md"
    guard.replace_text(path, "\n".join(parts))
    if readme is None and results.resolve() == (REPOSITORY / "results").resolve():
        readme = REPOSITORY / "README.md"
    if readme is not None:
        update_readme(readme, summary or ["No results yet: run `make bench`."])
    return path
