"""The quiet-machine guard: how much of the machine other processes use, before and during a run.

    before = quiet.wait_for_quiet(limit=60, threshold=0.25, prefix="[pytorch/BENCHMARK] ", device="cpu")
    sampler = quiet.Sampler(device="cpu")      # during the run: a thread, every 0.5 s
    ...
    load = quiet.load_record(before, sampler.stop(), threshold=0.25, limit=60)

Other processes' CPU use is the machine's busy time (``/proc/stat``: user, nice, system, irq and softirq
jiffies of every core) less the time of the harness and every process it started (papermill, the kernel
and its children: the process tree under the harness, each one's ``utime + stime`` and the
``cutime + cstime`` of the children it reaped, from ``/proc/PID/stat``), over the wall time, in cores.
A child that ends and is reaped between two samples is counted once: its parent's ``cutime`` takes
over the time it had when last seen. On a GPU, other processes on the device are those that
``nvidia-smi --query-compute-apps`` lists and that are not the run's. Whatever cannot be read says
"not measured" and why; it never stops a run.

A run is ``busy`` where, once the wait is over, other processes used more than the threshold before
it started, or on average during it, or where another process held the GPU.
"""
from __future__ import annotations

import csv
import io
import math
import os
import shutil
import subprocess
import threading
import time
from typing import Any, Callable

from harness.processes import descendants

DEFAULT_WAIT = 60.0  # seconds a run waits for quiet (--quiet-wait)
DEFAULT_THRESHOLD = 0.25  # cores of other work above which the machine counts as busy (--quiet-threshold)
WINDOW = 0.5  # seconds of one measurement before a run
INTERVAL = 0.5  # seconds between samples during a run
LAST_STRETCH = 0.1  # seconds: a shorter last stretch of a run is not sampled
GPU_INTERVAL = 10.0  # seconds between two nvidia-smi calls during a run
BUSY_FIELDS = (0, 1, 2, 5, 6)  # /proc/stat cpu: user, nice, system, (idle, iowait,) irq, softirq
PROC = "/proc"


def clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def machine_jiffies(proc: str = PROC) -> tuple[int, int]:
    """(busy jiffies of every core, steal jiffies) since boot, from the ``cpu`` line of /proc/stat."""
    with open(f"{proc}/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                values = [int(v) for v in line.split()[1:]]
                return sum(values[i] for i in BUSY_FIELDS if i < len(values)), (values[7] if len(values) > 7 else 0)
    raise OSError(f"{proc}/stat has no cpu line")


def _process(pid: int, proc: str = PROC) -> tuple[int, int] | None:
    """(its parent, utime + stime + cutime + cstime in jiffies) of one process; None where it is gone."""
    try:
        with open(f"{proc}/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[1]), sum(int(v) for v in fields[11:15])
    except (IndexError, ValueError):
        return None


def _processes(proc: str = PROC) -> dict[int, tuple[int, int]]:
    """Every process: pid -> (its parent, utime + stime + cutime + cstime in jiffies)."""
    found = {}
    for entry in os.listdir(proc):
        if entry.isdigit():
            stat = _process(int(entry), proc)
            if stat is not None:
                found[int(entry)] = stat
    return found


def own_tree(processes: dict[int, tuple[int, int]], root: int) -> set[int]:
    """``root`` and every process under it in ``processes`` (``_processes``' snapshot)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    return {root, *descendants(root, lambda pid: children.get(pid, ()))}


class CpuMeter:
    """Other processes' CPU use between successive ``sample`` calls, in cores: the machine's busy
    jiffies less those of the process tree under ``root`` (the harness)."""

    def __init__(self, root: int | None = None, proc: str = PROC):
        self.root, self.proc, self.hz = root or os.getpid(), proc, clock_ticks()
        self.seen: dict[int, tuple[int, int]] = {}  # the tree's pids -> (parent, jiffies) at the last sample
        self.last: tuple[float, int, int] | None = None
        self.seconds = 0.0  # the stretch the last sample covered
        self.sample()

    def _own(self) -> dict[int, tuple[int, int]]:
        processes = _processes(self.proc)
        return {pid: processes[pid] for pid in own_tree(processes, self.root) if pid in processes}

    def sample(self, min_seconds: float = 0.0) -> tuple[float, float] | None:
        """(other cores, steal cores) since the last sample (None at the first); ``seconds`` is then the
        stretch it covers. A stretch shorter than ``min_seconds`` is not a sample: it is left to the next
        (over a few milliseconds, one jiffy of difference between the machine's count and the processes'
        would read as cores)."""
        now = time.monotonic()
        if self.last is not None and self.seen and now - self.last[0] < min_seconds:
            return None
        busy, steal = machine_jiffies(self.proc)
        own = self._own()
        # A child that is gone was reaped, and its parent's cutime holds its time from then on. The snapshot
        # may have read the parent just before the reap and the child's entry just after it: the parent is
        # read again, after the reap, or the child's whole life would count as other processes' work.
        for parent in {self.seen[pid][0] for pid in self.seen if pid not in own and self.seen[pid][0] in own}:
            again = _process(parent, self.proc)
            if again is not None:
                own[parent] = again
        previous, self.last = self.last, (now, busy, steal)
        own_delta = 0
        for pid, (parent, jiffies) in own.items():
            own_delta += jiffies - self.seen[pid][1] if pid in self.seen else jiffies
        for pid, (parent, jiffies) in self.seen.items():
            if pid not in own and parent in own:  # reaped by its parent, whose cutime now holds its time
                own_delta -= jiffies
        # A process started and reaped between two samples counts its whole life through its parent.
        # A process of the tree started before the meter counted from its start at the first sample
        # only: the first sample sets the baseline.
        first = not self.seen
        self.seen = own
        if previous is None or first:
            return None
        seconds = now - previous[0]
        if seconds <= 0:
            return None
        self.seconds = seconds
        others = max(0.0, (busy - previous[1] - own_delta) / self.hz / seconds)
        return others, max(0.0, (steal - previous[2]) / self.hz / seconds)


def loadavg(proc: str = PROC) -> list[float] | None:
    try:
        with open(f"{proc}/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def gpu_others(own: set[int] | None = None, timeout: float = 10.0) -> tuple[list[dict] | None, str | None]:
    """(the compute processes on the GPUs that are not in ``own``, None) from ``nvidia-smi
    --query-compute-apps=pid,used_memory``, or (None, why not: "not measured: ...")."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, "not measured: nvidia-smi not found"
    try:
        done = subprocess.run([smi, "--query-compute-apps=pid,used_memory,process_name",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"not measured: nvidia-smi: {error}"
    if done.returncode != 0:
        words = (done.stderr or done.stdout).strip().splitlines()
        return None, f"not measured: nvidia-smi exited with {done.returncode}" + (f": {words[-1]}" if words else "")
    found = []
    for row in csv.reader(io.StringIO(done.stdout)):
        row = [cell.strip() for cell in row]
        if not row or not row[0]:
            continue
        try:
            pid = int(row[0])
        except ValueError:
            return None, f"not measured: nvidia-smi printed {', '.join(row)!r}, not a pid"
        if own and pid in own:
            continue
        memory = row[1] if len(row) > 1 else ""
        found.append({"pid": pid, "used_memory_mib": int(memory) if memory.isdigit() else None,
                      "name": row[2] if len(row) > 2 and row[2] else None})
    return found, None


def _own_pids(root: int | None = None) -> set[int]:
    try:
        return own_tree(_processes(), root or os.getpid())
    except OSError:
        return {root or os.getpid()}


def measure(seconds: float = WINDOW, during: Callable[[], Any] | None = None) -> dict:
    """Other processes' CPU use over ``seconds`` from now, with the load average: ``{"other_cores":
    x, "steal_cores": y, "loadavg": [1, 5, 15 min], "seconds": s}``, or ``{"not_measured": why}``.
    ``during``: work of the harness's own to do in that window (the calibration probe, whose process
    is the harness's and is not counted), which makes it longer where it takes longer; what it
    returned is under ``"during"``."""
    done = None
    try:
        meter = CpuMeter()
        began = time.monotonic()
        if during is not None:
            done = during()
        time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        window = time.monotonic() - began
        others, steal = meter.sample() or (None, None)
    except OSError as error:
        found = {"not_measured": f"not measured: {error}", "loadavg": loadavg()}
    else:
        found = {"not_measured": "not measured: /proc gave no second sample", "loadavg": loadavg()} \
            if others is None else {"other_cores": round(others, 3), "steal_cores": round(steal, 3),
                                    "loadavg": loadavg(), "seconds": round(window, 3) if during else seconds}
    if during is not None:
        found["during"] = done
    return found


def _say(text: str) -> None:
    try:
        print(text, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def wait_for_quiet(limit: float = DEFAULT_WAIT, threshold: float = DEFAULT_THRESHOLD, prefix: str = "",
                   device: str = "cpu", probe: Callable[[], Any] | None = None) -> dict:
    """Measures the machine (``measure``) until other processes use at most ``threshold`` cores
    (and, on ``device`` "cuda", no other process holds the GPU), or ``limit`` seconds have passed
    (0: one measurement, no wait); says what it waits for. Returns ``{"before": measure(),
    "waited_seconds": s, "gpu_others": [...] or None, "gpu_note": why not or None}``, and with a
    ``probe`` (the calibration) ``"probe"``: what it returned, run on the machine as the run found
    it. The first measurement is taken while the probe runs, so that a quiet machine costs one
    window, not two; where that window was busy, the probe runs again once the wait is over."""
    started = time.monotonic()
    said = False
    probed, pending = None, probe is not None
    while True:
        if pending and not said:  # the first measurement: over the probe
            before = measure(during=probe)
            probed, pending = before.pop("during", None), False
        else:
            before = measure()
        others, note = gpu_others(_own_pids()) if device == "cuda" else (None, None)
        cpu_busy = before.get("other_cores") is not None and before["other_cores"] > threshold
        if not cpu_busy and not others:
            break
        pending = probe is not None  # the probe saw a busy machine: probe it again once the wait is over
        waited = time.monotonic() - started
        if waited >= limit:
            if limit > 0:
                _say(prefix + f"the machine stayed busy for {waited:.0f} s: " + describe_busy(before, others, threshold)
                     + "; the run goes ahead, recorded as busy")
            break
        if not said:
            _say(prefix + f"waiting up to {limit:.0f} s for a quiet machine (other processes at most "
                 f"{threshold:g} cores, no other process on the GPU): " + describe_busy(before, others, threshold))
            said = True
        time.sleep(min(0.5, max(0.0, limit - waited)))  # with the measurement: once a second
    waited = time.monotonic() - started
    if said and not (cpu_busy or others):
        _say(prefix + f"quiet after {waited:.0f} s")
    found = {"before": before, "waited_seconds": round(waited, 2), "gpu_others": others, "gpu_note": note}
    if probe is not None:
        found["calibrated_within"] = not pending  # its seconds are then part of the wait's
        found["probe"] = probe() if pending else probed
    return found


def describe_busy(before: dict, others: list | None, threshold: float) -> str:
    parts = []
    if before.get("other_cores") is not None and before["other_cores"] > threshold:
        parts.append(f"other processes use {before['other_cores']:.2f} cores")
    if others:
        parts.append("other processes on the GPU: " + ", ".join(
            f"pid {p['pid']}" + (f" ({p['used_memory_mib']} MiB)" if p.get("used_memory_mib") is not None else "")
            for p in others))
    return "; ".join(parts) or "quiet"


class Sampler:
    """Other processes' CPU use every ``interval`` seconds in a thread, from now to ``stop``; on
    ``device`` "cuda" also the other processes on the GPU (every ``GPU_INTERVAL`` s)."""

    def __init__(self, device: str = "cpu", interval: float = INTERVAL, root: int | None = None):
        self.device, self.interval, self.root = device, interval, root or os.getpid()
        self.values: list[tuple[float, float]] = []  # (other cores, seconds) of each sample
        self.gpu: dict[int, dict] = {}
        self.gpu_note: str | None = None
        self.gpu_measured = False  # whether nvidia-smi answered once
        self.note: str | None = None
        self.peak: int | None = None  # the largest VmHWM of the run's processes (the harness's own left out)
        self.started = time.monotonic()
        self._done = threading.Event()
        try:
            self.meter: CpuMeter | None = CpuMeter(self.root)
        except OSError as error:
            self.meter, self.note = None, f"not measured: {error}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_gpu = 0.0
        while not self._done.wait(self.interval):
            self._sample()
            if self.device == "cuda" and time.monotonic() - last_gpu >= GPU_INTERVAL:
                last_gpu = time.monotonic()
                self._gpu()

    def _sample(self, min_seconds: float = 0.0) -> None:
        if self.meter is None:
            return
        try:
            found = self.meter.sample(min_seconds)
        except OSError as error:
            self.meter, self.note = None, f"not measured: {error}"
            return
        if found is not None:
            self.values.append((found[0], self.meter.seconds))
        peak = peak_resident([pid for pid in self.meter.seen if pid != self.root], self.meter.proc)
        if peak is not None:
            self.peak = max(peak, self.peak or 0)

    def _gpu(self) -> None:
        others, note = gpu_others(_own_pids(self.root))
        if note:
            self.gpu_note = note
        else:
            self.gpu_measured = True
        for process in others or ():
            # Before the run nothing of the harness uses the GPU, so whatever is there is other work. During
            # it, a pid that this machine's /proc does not show may be the run's own kernel as seen from
            # outside a container (nvidia-smi gives host pids): it is noted, not counted.
            if os.path.exists(f"{PROC}/{process['pid']}"):
                self.gpu[process["pid"]] = process
            else:
                self.gpu_note = (f"pid {process['pid']} on the GPU is not in this machine's process table (another "
                                 "container's, or this run's seen from outside one): not counted")

    def stop(self) -> dict:
        """``{"other_cores_mean", "other_cores_max", "samples", "loadavg", "seconds"}`` over the run
        (``not_measured`` instead where no sample could be taken), and the GPU's other processes."""
        self._done.set()
        self._thread.join(timeout=5)
        self._sample(min_seconds=LAST_STRETCH)  # the last stretch, unless it is a few milliseconds
        during: dict = {"seconds": round(time.monotonic() - self.started, 2), "loadavg": loadavg()}
        if self.values:  # the mean weighs each sample by the stretch it covers
            seconds = sum(s for _, s in self.values)
            mean = sum(v * s for v, s in self.values) / seconds if seconds > 0 else 0.0
            during.update(other_cores_mean=round(mean, 3), other_cores_max=round(max(v for v, _ in self.values), 3),
                          samples=len(self.values))
        else:
            during["not_measured"] = self.note or "not measured: the run ended before a sample"
        return {"during": during, "gpu_others": list(self.gpu.values()) if self.gpu_measured else None,
                "gpu_note": self.gpu_note}


def load_record(before: dict | None, during: dict | None, threshold: float, limit: float,
                note: str | None = None) -> dict:
    """The record's ``load``: the measurement before the run and during it, the wait, and ``busy``
    with its reason (``reason``: what made it busy, None for a quiet run)."""
    before = before or {}
    during = during or {}
    measured_before = (before.get("before") or {})
    measured_during = during.get("during")
    seen = {p["pid"] for p in before.get("gpu_others") or []}
    others = list(before.get("gpu_others") or []) + [p for p in during.get("gpu_others") or [] if p["pid"] not in seen]
    reasons = []
    mean = (measured_during or {}).get("other_cores_mean")
    if mean is not None and mean > threshold:
        reasons.append(f"other processes used {mean:.2f} cores on average during the run")
    first = measured_before.get("other_cores")
    if first is not None and first > threshold:
        waited = before.get("waited_seconds")
        reasons.append(f"other processes used {first:.2f} cores before it"
                       + (f" (after waiting {waited:.0f} s)" if limit and waited else ""))
    if others:
        reasons.append(describe_busy({}, others, threshold))
    gpu_measured = before.get("gpu_others") is not None or during.get("gpu_others") is not None
    return {
        "busy": bool(reasons), "reason": "; ".join(reasons) or None,
        "threshold_cores": threshold, "wait_limit_seconds": limit,
        "waited_seconds": before.get("waited_seconds"), "calibrated_within": before.get("calibrated_within"),
        "before": measured_before or None, "during": measured_during,
        "gpu_others": others if gpu_measured else None,
        "gpu_note": before.get("gpu_note") or during.get("gpu_note"),
        "note": note,
    }


def _from_environment(name: str, default: float, expected: str) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={text!r}: expected {expected}, a number 0 or more (default {default:g}).")
    return value


def default_threshold() -> float:
    """``$ROSETTA_QUIET_THRESHOLD`` where set (the tests set one no machine reaches: their runs are
    checks, side by side on a busy machine, not benchmarks), else ``DEFAULT_THRESHOLD``; a
    ValueError in one line where it is not a number of cores."""
    return _from_environment("ROSETTA_QUIET_THRESHOLD", DEFAULT_THRESHOLD,
                             "the cores other processes may use before the machine counts as busy")


def default_wait() -> float:
    """``$ROSETTA_QUIET_WAIT`` where set (the tests set 0), else ``DEFAULT_WAIT``; a ValueError in
    one line where it is not a number of seconds."""
    return _from_environment("ROSETTA_QUIET_WAIT", DEFAULT_WAIT, "the seconds a run waits for a quiet machine")


def peak_resident(pids, proc: str = PROC) -> int | None:
    """The largest VmHWM (peak resident memory) among ``pids``, in bytes (None where none is read)."""
    peak = None
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        value = int(line.split()[1]) * 1024
                        peak = value if peak is None else max(peak, value)
                        break
        except (OSError, ValueError, IndexError):
            continue
    return peak


class RunLoad:
    """The guard around one run: ``wait`` before it (``wait_for_quiet``), ``start`` the sampler,
    ``finish`` into the record's ``load``. In a container (``docker``) the run's processes are not
    under the harness, so during the run nothing is sampled: they would count as other work."""

    def __init__(self, limit: float, threshold: float, device: str, prefix: str = "", docker: bool = False):
        self.limit, self.threshold, self.device, self.prefix, self.docker = limit, threshold, device, prefix, docker
        self.before: dict | None = None
        self.sampler: Sampler | None = None
        self.peak: int | None = None  # the largest peak resident memory seen among the run's processes
        self.last: dict | None = None  # what finish returned

    def wait(self, probe: Callable[[], Any] | None = None) -> Any:
        """Waits for a quiet machine; returns what ``probe`` (the calibration) returned, run within the
        first measurement or once the wait is over (``wait_for_quiet``), None without one."""
        try:
            self.before = wait_for_quiet(self.limit, self.threshold, self.prefix, self.device, probe)
        except Exception as error:  # never stop a run
            self.before = {"before": {"not_measured": f"not measured: {type(error).__name__}: {error}"}}
        return self.before.pop("probe", None)

    def start(self) -> None:
        if not self.docker:
            self.sampler = Sampler(self.device)

    def finish(self) -> dict:
        during, note = None, None
        if self.sampler is not None:
            during = self.sampler.stop()
            self.peak, self.sampler = self.sampler.peak, None
        elif self.docker:
            note = "during the run: not measured, as a container's processes cannot be told from other work"
        self.last = load_record(self.before, during, self.threshold, self.limit, note)
        return self.last


def failure_fields(load: RunLoad | None) -> dict:
    """What a failure record gets of the guard: its ``load`` (where the run got as far as the
    wait) and, where the sampler saw the run's processes, their peak resident memory (sampled
    every ``INTERVAL`` s: a peak between two samples can be missed)."""
    if load is None or load.before is None:
        return {}
    found = {"load": load.last if load.last is not None else load.finish()}
    if load.peak is not None:
        found["peak_memory"] = {"resident_bytes": load.peak,
                                "how": f"VmHWM of the run's processes, sampled every {INTERVAL:g} s"}
    return found
