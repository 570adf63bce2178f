"""What the report shows of ``harness.quiet`` and ``common.resources``: the busy flag, peak memory
and energy of each row (docs/measurements.md).

A row (a framework's series of repeats) is busy where any of its runs was recorded busy: its
median holds that run. A busy row is shown, with a note saying what else ran ("**busy**: other
processes used 1.20 cores on average during the run"), but it is not ranked: it has no "vs fastest"
figure, the fastest is taken among the quiet rows only, and busy rows come after the quiet ones.
"""
from __future__ import annotations

import math

import pandas as pd


EXPLAINED = ("A run is **busy** where other processes used more than its threshold of CPU (0.25 cores by default) "
             "before it or on average during it, or held its GPU (docs/measurements.md): a busy row is shown "
             "after the quiet ones, with what else ran, and is not ranked (no \"vs fastest\"). \"Peak memory\" "
             "is the kernel's peak resident memory (on a GPU also the framework allocator's peak and the "
             "memory in use); \"Energy\" the energy of the training, where the machine exposes its counters.")


def frame_columns(r: dict) -> dict:
    """The columns of one record in the report's frame and results.csv."""
    load = corrected_load(r.get("load") or {}, (r.get("environment") or {}).get("cpu_count"))
    during = load.get("during") or {}
    memory = r.get("peak_memory") or {}
    energy = r.get("energy") or {}
    return {
        "run_device": (r.get("environment") or {}).get("device"),
        "busy": load.get("busy") if load else None, "busy_reason": load.get("reason"),
        "load_corrected": load.get("corrected"),
        "other_cores_mean": during.get("other_cores_mean"), "other_cores_max": during.get("other_cores_max"),
        "other_cores_before": (load.get("before") or {}).get("other_cores"),
        "waited_seconds": load.get("waited_seconds"), "calibrated_within": load.get("calibrated_within"),
        "gpu_others": ", ".join(str(p.get("pid")) for p in load.get("gpu_others") or []) or None,
        "peak_resident_bytes": memory.get("resident_bytes"), "gpu_allocator_bytes": memory.get("gpu_allocator_bytes"),
        "gpu_allocator": memory.get("gpu_allocator"),
        "gpu_used_bytes": memory.get("gpu_used_bytes") or energy.get("gpu_used_bytes_max"),
        "cpu_joules": energy.get("cpu_joules"), "gpu_joules": energy.get("gpu_joules"),
        "energy_note": _energy_note(energy, (r.get("environment") or {}).get("device") == "cuda"),
    }


def corrected_load(load: dict, cores) -> dict:
    """``load`` as recorded, except where its largest sample during the run is more cores than the machine
    has: such a sample is a fault of the meter, not other work (before it was fixed, a kernel reaped while
    the meter read the process tree counted its whole life as other processes' work, in one sample of a
    few milliseconds). The mean is then taken again without that sample, from the recorded mean, count and
    largest sample, ``busy`` follows from it, and ``corrected`` says so."""
    during = load.get("during") or {}
    largest, mean, samples = during.get("other_cores_max"), during.get("other_cores_mean"), during.get("samples")
    if not (isinstance(cores, int) and cores > 0 and isinstance(largest, (int, float)) and largest > cores
            and isinstance(mean, (int, float)) and isinstance(samples, int) and samples >= 2):
        return load
    rest = max(0.0, (mean * samples - largest) / (samples - 1))
    threshold = load.get("threshold_cores")
    reason = load.get("reason") or ""
    during_reason = f"other processes used {mean:.2f} cores on average during the run"
    others = [part for part in reason.split("; ") if part and part != during_reason]
    if isinstance(threshold, (int, float)) and rest > threshold:
        others.insert(0, f"other processes used {rest:.2f} cores on average during the run")
    corrected = (f"load: one sample of {largest:,.0f} cores on a {cores}-core machine, a fault of the meter, "
                 f"left out ({rest:.2f} cores on average otherwise)")
    return {**load, "during": {**during, "other_cores_mean": round(rest, 3), "other_cores_max": None,
                               "samples": samples - 1},
            "busy": bool(others), "reason": "; ".join(others) or None, "corrected": corrected}


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _energy_note(energy: dict, gpu: bool) -> str | None:
    """Why a run's energy is missing: the CPU's counters, and on a GPU run the GPU's."""
    parts = (("cpu", "RAPL on the CPU"), ("gpu", "NVML on the GPU")) if gpu else (("cpu", "RAPL on the CPU"),)
    notes = [f"{name}: {energy[part + '_note'].replace('not exposed: ', '', 1)}" for part, name in parts
             if energy.get(part + "_note")]
    return "; ".join(notes) or None


def mark_busy(frame: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (``report.shown_rows``) with ``_busy`` (any member run recorded busy) and
    ``_busy_note`` (the reason of its busiest member, by other processes' mean CPU use)."""
    rows = rows.copy()
    busy, notes = [], []
    for _, row in rows.iterrows():
        members = frame.loc[[i for i in row["members"] if i in frame.index]] if "busy" in frame else frame.iloc[0:0]
        flagged = members[[value is True or value == True for value in members["busy"]]]  # noqa: E712
        busy.append(bool(len(flagged)) and row["runs"] > 0)
        if len(flagged):
            worst = flagged.sort_values("other_cores_mean", na_position="first").iloc[-1]
            notes.append(worst["busy_reason"] if isinstance(worst["busy_reason"], str) else "recorded busy")
        else:
            notes.append(None)
    rows["_busy"], rows["_busy_note"] = busy, notes
    return rows


def busy_note(row) -> str:
    """What the Notes cell says after "**busy**:" of a busy row ('' for a quiet one)."""
    return f"{row['_busy_note']}; not ranked" if row.get("_busy") else ""


def _size(value) -> str:
    if _missing(value):
        return ""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.1f} {unit}" if value < 100 * size else f"{value / size:,.0f} {unit}"
    return f"{int(value)} B"


def memory_cell(row) -> str:
    """'412 MB' (the kernel's peak resident memory), and on a GPU '; GPU 1.1 GB allocator peak, 2.0 GB used'."""
    parts = []
    if not _missing(row.get("peak_resident_bytes")):
        parts.append(_size(row["peak_resident_bytes"]))
    gpu = []
    if not _missing(row.get("gpu_allocator_bytes")):
        gpu.append(f"{_size(row['gpu_allocator_bytes'])} allocator peak")
    if not _missing(row.get("gpu_used_bytes")) and row.get("run_device") == "cuda":
        gpu.append(f"{_size(row['gpu_used_bytes'])} used (NVML)")
    if gpu:
        parts.append("GPU " + ", ".join(gpu))
    return "; ".join(parts) or "–"


def energy_cell(row) -> str:
    """'1,234 J CPU' / '567 J GPU, 890 J CPU' over the training (the GPU's on a GPU run only), or
    'not exposed'."""
    parts = []
    if not _missing(row.get("gpu_joules")) and row.get("run_device") == "cuda":  # a CPU run's GPU idled
        parts.append(f"{row['gpu_joules']:,.0f} J GPU")
    if not _missing(row.get("cpu_joules")):
        parts.append(f"{row['cpu_joules']:,.0f} J CPU")
    if parts:
        return ", ".join(parts)
    return "not exposed" if isinstance(row.get("energy_note"), str) else "–"


def energy_line(rows: pd.DataFrame) -> str | None:
    """Below the setup table: why energy is not shown, where a row's record says."""
    notes = sorted({row["energy_note"] for _, row in rows.iterrows()
                    if isinstance(row.get("energy_note"), str) and energy_cell(row) == "not exposed"})
    return ("Energy not exposed: " + " / ".join(notes) + ".") if notes else None
