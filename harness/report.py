"""The results: every JSON record read into pandas, and the tables and plots made from them.

    rosetta report [--results results]

writes ``results/README.md``, ``results/results.csv`` (every record, one row each)
and a plot per device and benchmark. Each device (each GPU model, and each CPU model)
has tables of its own, one per benchmark: the latest ok run of each framework on that
device, fastest first (with a note where a later run did not end ok); runs on different devices are never ranked together. Where the
results folder is the repository's own, the list of devices in the repository's
README (between its ``results`` markers) is rewritten too. Nothing here is typed by
hand: every figure comes from a record.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pandas as pd

from common import REPOSITORY, machine, record
from common.benchmarks import BENCHMARKS
from harness import parity_runs


def load_records(results: Path) -> list[dict]:
    """Every readable record under ``results/records``; one that cannot be read (not JSON, not a
    record, another schema) is skipped with a warning naming its file, so the report always renders."""
    records = []
    for path in sorted((results / "records").glob("*.json")):
        try:
            records.append(record.read(path))
        except (ValueError, TypeError, OSError, UnicodeDecodeError) as error:
            print(f"warning: skipping {path}: {error}", file=sys.stderr)
    return records


def _device(row: dict) -> str:
    env = row.get("environment")
    return machine.describe(env) if env else ""


def device_group(row: dict) -> str:
    """The device a run is ranked on: the GPU model, or the CPU model for a CPU run."""
    env = row.get("environment")
    if not env:
        return "device not recorded"
    if env.get("device") == "cuda":
        return env.get("gpu") or "unknown NVIDIA GPU"
    return f"CPU: {env.get('cpu') or 'unknown model'}"


def _versions(row: dict) -> str:
    """The framework's versions, and where its environment came from: built from the pinned
    spec, an existing interpreter (whose versions may differ from the pins), or a docker image."""
    env = row.get("environment") or {}
    versions = env.get("versions") or {}
    text = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "numpy")
    source = row.get("kernel_environment") or {}
    if source.get("kind") == "existing":
        found = "" if versions else f" {source.get('versions') or ''}".rstrip()
        origin = f"existing environment {source.get('python')}{found}"
    elif source.get("kind") == "built":
        origin = f"built from {Path(source.get('spec') or '').name}"
    elif source.get("kind") == "docker":
        origin = f"docker image {source.get('image')}"
    else:
        return text
    return f"{text} ({origin})" if text else origin


def _data(row: dict) -> str:
    parts = []
    if row.get("subset"):
        parts.append("subset: " + "; ".join(row.get("differs_from_benchmark") or []))
    else:
        parts.append("full")
    source = (row.get("data") or {}).get("source")
    if source == "local copy":
        parts.append(f"local copy {Path(row['data']['path']).name}")
    return ", ".join(parts)


def to_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record, with the columns the tables and the CSV use."""
    rows = []
    for r in records:
        rows.append({
            "framework": r["framework"], "api": r["api"], "benchmark": r["benchmark"],
            "variant": r["variant"], "status": r["status"], "error": r.get("error"),
            "test_accuracy": r.get("test_accuracy"), "train_seconds": r.get("train_seconds"),
            "first_epoch_seconds": r.get("first_epoch_seconds"),
            "median_epoch_seconds": r.get("median_epoch_seconds"),
            "throughput_per_second": r.get("throughput_per_second"),
            "epochs": r["epochs"], "batch_size": r["batch_size"],
            "train_samples": r["train_samples"], "test_samples": r["test_samples"],
            "subset": r.get("subset"), "seed": r["seed"], "parameters": r.get("parameters"),
            "device": _device(r), "device_group": device_group(r), "versions": _versions(r), "data": _data(r),
            "environment_kind": (r.get("kernel_environment") or {}).get("kind"),
            "cpu_count": (r.get("environment") or {}).get("cpu_count"),
            "platform": (r.get("environment") or {}).get("platform"),
            "data_source": (r.get("data") or {}).get("source"),
            "python": (r.get("environment") or {}).get("python"),
            "git_commit": (r.get("environment") or {}).get("git_commit"),
            "timestamp": r["timestamp"], "notebook": r.get("notebook"),
        })
    columns = ["framework", "api", "benchmark", "variant", "status", "timestamp"]
    frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else columns)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest record of each framework, benchmark and variant."""
    return frame.groupby(["framework", "benchmark", "variant"], sort=False).tail(1)


def shown_rows(frame: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """The rows that the table (and the plot) of ``benchmark`` show: for each framework and variant
    its latest ok run, or its latest run where none is ok.

    ``later`` says when runs after the shown ok one did not end ok, naming the latest of them
    (its status, timestamp and error); it is None otherwise.
    """
    rows = frame[frame["benchmark"] == benchmark]
    shown = []
    for _, runs in rows.groupby(["framework", "benchmark", "variant"], sort=False):
        ok = runs[runs["status"] == "ok"]
        row = (ok if len(ok) else runs).iloc[-1].copy()
        after = runs.loc[runs.index > ok.index[-1]] if len(ok) else runs.iloc[0:0]
        row["later"] = None
        if len(after):
            last = after.iloc[-1]
            row["later"] = f"a later run ({last['timestamp']}) {last['status']}: {_cell(last['error'])}"
        shown.append(row)
    columns = list(frame.columns) + ["later"]
    return pd.DataFrame(shown, columns=columns)


def _number(value, digits: int, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def equivalence(checks: dict, framework: str, benchmark: str) -> str:
    """The Equivalent cell: the latest parity run of this framework and benchmark."""
    found = checks.get((framework, benchmark))
    if found is None:
        return "not checked"
    if found.get("equivalent"):
        differences = {c["output"]: c["max_abs_difference"] for c in found.get("checks", [])}
        if "final_weights" not in differences:  # a record of the one-step check
            return "yes"
        return (f"yes: weights within {differences['weights']:.0e} after step 1, "
                f"{differences['final_weights']:.0e} after step {found.get('steps', '?')}")
    if found.get("status") == "unavailable":
        return f"not checked: {_cell(found.get('message'))}"
    return f"**no**: {_cell(found.get('message'))}"


def benchmark_table(frame: pd.DataFrame, benchmark: str, checks: dict | None = None) -> str:
    """The markdown table of one benchmark, fastest ok run first, the others after.

    ``checks`` holds the latest parity record of each (framework, benchmark).
    """
    checks = checks or {}
    rows = shown_rows(frame, benchmark)
    rows["_ok"] = rows["status"] == "ok"
    rows = rows.sort_values(["_ok", "train_seconds"], ascending=[False, True], na_position="last")
    fastest = rows.loc[rows["_ok"], "train_seconds"].min()
    unit = BENCHMARKS[benchmark].unit
    header = ["Framework", "API", "Variant", "Status", "Equivalent", "Test accuracy", "Training time (s)", "vs fastest",
              "First epoch (s)", f"Steady {unit}/s", "Data", "Device", "Version"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in rows.iterrows():
        ok = r["status"] == "ok"
        status = "ok" if ok else f"**{r['status']}**: {_cell(r['error'])}"
        if ok and r["later"]:
            status += f" (**{_cell(r['later'])}**)"
        lines.append("| " + " | ".join([
            r["framework"], r["api"], r["variant"], status, equivalence(checks, r["framework"], benchmark),
            _number(r["test_accuracy"] * 100, 1, " %") if ok else "–",
            _number(r["train_seconds"], 1) if ok else "–",
            _number(r["train_seconds"] / fastest, 2, "×") if ok and fastest else "–",
            _number(r["first_epoch_seconds"], 1) if ok else "–",
            _number(r["throughput_per_second"], 0) if ok else "–",
            _cell(r["data"]), _cell(r["device"]), _cell(r["versions"]),
        ]) + " |")
    return "\n".join(lines)


def _cell(text) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    text = str(text).replace("|", "\\|").replace("\n", " ")
    # a long error keeps its start (what failed) and its end (where a traceback says why)
    return text if len(text) <= 300 else text[:100] + " ... " + text[-195:]


def plot(frame: pd.DataFrame, benchmark: str, path: Path, device: str = "") -> Path | None:
    """Training time by framework (bars), with each one's test accuracy written beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = shown_rows(frame, benchmark)
    rows = rows[rows["status"] == "ok"]  # the table's rows that have a time
    if rows.empty:
        return None
    rows = rows.sort_values("train_seconds", ascending=False)
    labels = [f"{f} ({v})" if v != "fp32" else f for f, v in zip(rows["framework"], rows["variant"])]
    figure, axes = plt.subplots(figsize=(8, 1.2 + 0.5 * len(rows)))
    bars = axes.barh(labels, rows["train_seconds"], color="#4c72b0")
    for bar, accuracy, later in zip(bars, rows["test_accuracy"], rows["later"]):
        note = " (a later run did not end ok)" if later else ""
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                  f"  {accuracy * 100:.1f} % accuracy{note}", va="center", fontsize=9)
    axes.set_xlabel("training time (s), lower is better")
    subset = " (subset runs)" if rows["subset"].fillna(False).astype(bool).any() else ""
    axes.set_title(f"{BENCHMARKS[benchmark].title} on {device or 'one device'}{subset}\ntraining time and test accuracy",
                   fontsize=10)
    axes.set_xlim(0, rows["train_seconds"].max() * 1.5)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


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
    readme.write_text(head + README_BEGIN + "\n" + "\n".join(lines) + "\n" + README_END + tail)
    return True


def render(results: Path, readme: Path | None = None) -> Path:
    """Writes README.md, results.csv and the plots under ``results``; returns the README's path.

    ``readme``: a README whose results list to rewrite (default: the repository's own, when
    ``results`` is the repository's results folder).
    """
    records = load_records(results)
    frame = to_frame(records)
    checks = parity_runs.latest(results)
    frame.to_csv(results / "results.csv", index=False)
    for old in results.glob("*.png"):  # plots of devices or benchmarks no longer shown
        old.unlink()
    parts = ["# Results", "",
             f"Generated by `rosetta report` from the {len(records)} JSON record(s) in `records/`; "
             "do not edit by hand. Each device has its own tables, one per benchmark, with the "
             "latest ok run of every framework on that device, fastest first, and a note beside it "
             "when a later run failed or was interrupted (a framework without an ok run shows its "
             "latest run); the plot shows the same runs. Runs on different devices are never "
             "ranked together. `results.csv` holds every run. \"Equivalent\" is "
             "the latest `rosetta parity` check of that notebook's model against the NumPy "
             "reference, with the largest weight difference after its first step and after its "
             "last (see docs/parity.md).", ""]
    found = devices(frame)
    if not found:
        parts += ["No runs yet.", ""]
    summary = []
    for device in found:
        shown = frame[frame["device_group"] == device]
        described = where_and_when(pd.concat([shown_rows(shown, b) for b in BENCHMARKS]))
        parts.append(f"- [{device}](#{anchor(device)}): {described}")
        summary.append(f"- [{device}](results/README.md#{anchor(device)}): {described}")
    parts.append("")
    for device in found:
        shown = frame[frame["device_group"] == device]
        parts += [f"## {device}", ""]
        for benchmark in BENCHMARKS:
            parts += [f"### {BENCHMARKS[benchmark].title}", ""]
            if (shown["benchmark"] == benchmark).sum() == 0:
                parts += ["No runs on this device.", ""]
                continue
            parts += [benchmark_table(shown, benchmark, checks), ""]
            image = plot(shown, benchmark, results / f"{benchmark}-{slug(device)}.png", device)
            if image:
                parts += [f"![{BENCHMARKS[benchmark].title} on {device}]({image.name})", ""]
        if device.startswith("CPU: "):
            parts += ["These runs are on a CPU: they show that every notebook trains and how the "
                      "frameworks compare there, not how fast they are on a GPU.", ""]
    path = results / "README.md"
    path.write_text("\n".join(parts))
    if readme is None and results.resolve() == (REPOSITORY / "results").resolve():
        readme = REPOSITORY / "README.md"
    if readme is not None:
        update_readme(readme, summary or ["No results yet: run `make bench`."])
    return path
