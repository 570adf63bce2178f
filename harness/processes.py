"""The processes the harness starts, watches and stops, and the signals that stop it.

- Signals: SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` once ``raise_on_interrupts`` is in effect;
  ``interrupts_held`` keeps a second one from cutting clean-up short.
- The environment papermill and its kernel start in (``kernel_environment``).
- /proc: a process's children, its state and start time, the machine's boot (``children_of``,
  ``descendants``, ``alive``, ``process_start``, ``boot_id``); where /proc is missing, what can be
  told without it.
- Stopping a run: ``stop_tree`` ends papermill and every process group it started (the kernel runs in
  a session of its own), SIGTERM first; ``KernelWatch`` notes the kernels papermill starts and how one
  died.
- The parent watch (``PARENT_WATCH``), run inside papermill's process: once the harness is gone
  (kill -9, a crash) it ends the kernel's process group and papermill's own.
"""
from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from common import machine


# The signals that stop a run: Ctrl-C, kill, and a closed terminal or ssh session (where there is one).
STOPPING = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C), SIGTERM or SIGHUP reached the harness: the run in progress is stopped and
    recorded as interrupted, and ``rosetta`` exits with ``exit_code`` (130, 143 or 129)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum
        self.reported = False  # True once the table of what finished has been written and the signal named

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def describe(self) -> str:
        name = signal.Signals(self.signum).name
        return f"interrupted by {name}" + {signal.SIGINT: " (Ctrl-C)", getattr(signal, "SIGHUP", None):
                                            " (the terminal or session closed)"}.get(self.signum, "")


def raise_on_interrupts() -> dict:
    """From now on SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` in the main thread; returns the
    handlers they had, for ``restore_handlers`` ({} outside the main thread, where nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        raise Interrupted(signum)

    return {number: signal.signal(number, handler) for number in STOPPING}


def restore_handlers(previous: dict) -> None:
    for number, action in previous.items():
        signal.signal(number, action)


@contextlib.contextmanager
def interrupts_held():
    """Clean-up that a second Ctrl-C must not cut short: SIGINT, SIGTERM and SIGHUP are ignored meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in STOPPING}
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


def kernel_environment(threads: int | None = None) -> dict:
    """The environment of papermill and the kernel it starts: unbuffered output, TensorFlow's
    C++ notices off before TensorFlow loads (a notebook's own setting comes too late for some),
    and ``threads`` CPU threads (None: every core this process may use) for the libraries that
    read their count once, as they load (``machine.thread_variables``: OpenMP, MKL, OpenBLAS, XLA)."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **machine.thread_variables(threads)}
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return environment


def stop_tree(process: subprocess.Popen, watch: KernelWatch | None = None, grace: float = 10) -> None:
    """Stops papermill and every process it started, the kernel included: the kernel runs in a
    session (and process group) of its own, so each process group is ended, SIGTERM first."""
    if watch is not None:
        watch.stop()
    pids = descendants(process.pid) + (watch.pids() if watch else [])
    groups = {process.pid}
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    groups.discard(os.getpgrp())  # never our own
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if process.poll() is not None and not any(alive(pid) for pid in pids):
                return
            time.sleep(0.05)
    process.poll()


class KernelWatch:
    """Notes the kernel(s) papermill starts (its children, each in a session of its own) and,
    where /proc shows it, how one died: the exit status a dead kernel leaves while a zombie."""

    def __init__(self, papermill_pid: int, interval: float = 0.05):
        self.papermill_pid, self.interval = papermill_pid, interval
        self.kernels: dict[int, int | None] = {}  # pid -> its wait status once dead (None: alive or unknown)
        self.died: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        last_scan = 0.0
        while not self._done.wait(self.interval):
            if time.monotonic() - last_scan > 0.5 or not self.kernels:
                last_scan = time.monotonic()
                for pid in children_of(self.papermill_pid):
                    self.kernels.setdefault(pid, None)
            for pid in list(self.kernels):
                if pid in self.died:
                    continue
                fields = stat_fields(f"/proc/{pid}/stat")
                if fields is None or fields[0] in ("Z", "X"):
                    self.died.append(pid)
                    if fields is not None and len(fields) > 49:
                        self.kernels[pid] = int(fields[49])  # field 52, exit_code

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=2)

    def how_it_died(self) -> str:
        for pid in self.died:
            status = self.kernels.get(pid)
            if status is None:
                continue
            if status & 0x7F:
                number = status & 0x7F
                try:
                    name = signal.Signals(number).name
                except ValueError:
                    name = "an unknown signal"
                return f"killed by signal {number}, {name}" + (
                    ": out of memory, or killed from outside" if number == signal.SIGKILL else "")
            return f"exit code {status >> 8}"
        return "its exit status was not seen"

    def pids(self) -> list[int]:
        return list(self.kernels)


def descendants(pid: int, children: Callable[[int], Iterable[int]] | None = None) -> list[int]:
    """Every process under ``pid`` (its children, theirs, ...), each once, in the order found; ``children``
    gives the children of a process (default ``children_of``: read from /proc now)."""
    children = children or children_of
    found, seen, queue = [], {pid}, [pid]
    while queue:
        for child in children(queue.pop()):
            if child not in seen:
                seen.add(child)
                found.append(child)
                queue.append(child)
    return found


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: read from /proc; elsewhere none)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        pass
    found = []
    for entry in glob.glob("/proc/[0-9]*/stat"):
        fields = stat_fields(entry)
        if fields and fields[1] == str(pid):
            found.append(int(entry.split("/")[2]))
    return found


def alive(pid: int) -> bool:
    fields = stat_fields(f"/proc/{pid}/stat")
    if fields is not None:
        return fields[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path("/proc").is_dir()  # /proc exists but has no entry: gone


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), or None
    where /proc does not say: with the pid, it names one process even after the pid is reused."""
    fields = stat_fields(f"/proc/{pid}/stat")
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def stat_fields(path: str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


# Run in papermill's process before PAPERMILL_LAUNCHER: a watch on the harness (its pid, in
# $ROSETTA_HARNESS_PID, taken out of the environment so that the kernel does not inherit it). Once
# papermill's parent is no longer the harness (killed with kill -9, crashed), it ends the process
# group of every process papermill started (the kernel runs in a session of its own, with whatever
# the kernel started), SIGTERM, then SIGKILL after 2 s, then papermill's own group, so that nothing
# trains on with no one to record it. Children are found in /proc (Linux), else through `ps`;
# getppid says on every POSIX system when the parent is gone.
PARENT_WATCH = """
import os as _os, threading as _threading


def _rosetta_watch(harness):
    import signal, subprocess, time
    while _os.getppid() == harness:
        time.sleep(0.2)
    me, pids = _os.getpid(), set()
    try:
        for task in _os.listdir("/proc/%d/task" % me):
            with open("/proc/%d/task/%s/children" % (me, task)) as f:
                pids.update(int(pid) for pid in f.read().split())
    except (OSError, ValueError):
        try:
            listing = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
            pids = {int(a) for a, b in (line.split() for line in listing.splitlines() if len(line.split()) == 2)
                    if b == str(me)}
        except (OSError, ValueError):
            pass

    def running(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
        except (OSError, IndexError):
            try:
                return _os.waitpid(pid, _os.WNOHANG) == (0, 0)
            except ChildProcessError:
                return False

    groups = set()
    for pid in pids:
        try:
            groups.add(_os.getpgid(pid))
        except OSError:
            pass
    groups.discard(_os.getpgrp())
    for number in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                _os.killpg(group, number)
            except OSError:
                pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(running(pid) for pid in pids):
            time.sleep(0.05)
    if _os.getpgrp() == me:  # papermill's own session, as the harness starts it
        _os.killpg(me, signal.SIGKILL)
    _os._exit(1)

if _os.environ.get("ROSETTA_HARNESS_PID", "").isdigit():
    _threading.Thread(target=_rosetta_watch, args=(int(_os.environ.pop("ROSETTA_HARNESS_PID")),),
                      daemon=True).start()
"""
