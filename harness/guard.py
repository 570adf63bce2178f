"""The machine and the disk: one suite at a time per machine, and room for what a run writes.

**One suite at a time.** A suite (``rosetta run``, ``bench``, ``agree``, ``onnx``, which times
prediction) holds the machine's lock for its whole duration: ``flock`` on one file that every
user of the machine opens (``DEFAULT_LOCK``; ``$ROSETTA_LOCK`` names another). A second suite
waits for it, saying once for whom (the holder writes its pid, command line and start time into
the file) and then every minute how long it has waited; with ``--no-wait`` it refuses in one line
instead (exit status 2). So no timing is ever taken beside another suite's. The kernel releases
an flock when its holder ends, however it ends (kill -9 included), so a dead suite never blocks
the next. The lock's descriptor is not inherited: Python opens it non-inheritable and subprocess
closes the others (``close_fds``), so neither papermill nor a kernel holds it.

The test suite sets ``$ROSETTA_LOCK`` to a file of its own (tests/conftest.py): its short runs
are no benchmarks and run side by side on purpose, and neither it nor a suite on the machine
should wait for the other; the tests of the lock name a lock of their own.

**Room on the disk.** Before a suite starts, and before each notebook in it, the disk of the
results folder must have ``$ROSETTA_MIN_FREE_MIB`` free (default ``DEFAULT_MIN_FREE_MIB``: an
executed notebook, its record and its ONNX export, whose test set alone can be 123 MB,
with room to spare); with less, nothing more starts (``DiskFull``, one line, exit status 2). A
disk that fills later (ENOSPC, or EDQUOT, a quota) ends the suite in one line too, naming the
folder and what is kept: records are written to a temporary file and renamed, so each one there
is whole; an executed notebook papermill could not finish writing is named as incomplete.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from common import record

LOCK_VARIABLE = "ROSETTA_LOCK"
DEFAULT_LOCK = "/tmp/dl-rosetta.lock"  # /tmp, not $TMPDIR: the same file for every user of the machine
SUITES = ("run", "bench", "agree", "onnx")  # the commands that time something, and so hold the lock
PROGRESS_SECONDS = 60.0  # how often a waiting suite says it still waits

MIN_FREE_VARIABLE = "ROSETTA_MIN_FREE_MIB"
DEFAULT_MIN_FREE_MIB = 512
MIB = 1024 * 1024
FULL = (errno.ENOSPC, errno.EDQUOT)
FULL_WORDS = ("[Errno 28]", "No space left on device", "[Errno 122]", "Disk quota exceeded")

STARTED = time.time()  # this process's start: the notebooks it wrote are those modified since


# --- one suite at a time ---------------------------------------------------------------------

class Busy(ValueError):
    """Another suite holds the machine and ``--no-wait`` was given."""


def lock_path() -> Path:
    return Path(os.environ.get(LOCK_VARIABLE) or DEFAULT_LOCK)


def _open_lock(path: Path) -> int:
    """A descriptor of the lock file, created readable and writable by every user where it is new.

    An existing file is opened without O_CREAT: in a sticky folder such as /tmp, Linux refuses
    O_CREAT on another user's file (fs.protected_regular) even where its mode allows writing. One
    that is not writable is opened read-only: flock works on it, but the holder's details cannot
    be written."""
    while True:
        try:
            return os.open(path, os.O_RDWR)
        except FileNotFoundError:
            pass
        except PermissionError:
            return os.open(path, os.O_RDONLY)
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # another suite created it meanwhile
            continue
        try:
            os.fchmod(descriptor, 0o666)  # the umask took some of 0o666 away
        except OSError:
            pass
        return descriptor


def holder(path: Path) -> str:
    """Who holds the lock, from what the holder wrote into the file."""
    for attempt in range(5):  # the holder may be writing it this moment
        try:
            found = json.loads(path.read_text() or "null")
        except (OSError, ValueError):
            found = None
        if isinstance(found, dict) and found.get("pid"):
            return (f"pid {found['pid']} ({found.get('command', 'unknown command')}, started "
                    f"{found.get('started', 'at an unknown time')})")
        time.sleep(0.1)
    return "a suite that wrote no details (another version, or a lock file it cannot write)"


class MachineLock:
    """The machine's lock, held by one suite from ``acquire`` to ``release`` (or to its end)."""

    def __init__(self) -> None:
        self.descriptor: int | None = None
        self.held = False
        self.path: Path | None = None
        self.waited = 0.0  # seconds spent waiting for another suite

    def acquire(self, command: str, wait: bool = True, progress_every: float | None = None,
                poll: float = 0.2) -> None:
        """Takes the lock for ``command`` (its command line, shown to a suite that waits); while
        another suite holds it, waits (or, ``wait`` False, raises ``Busy``)."""
        progress_every = PROGRESS_SECONDS if progress_every is None else progress_every
        self.path = path = lock_path()
        try:
            self.descriptor = _open_lock(path)
        except OSError as error:
            raise ValueError(f"{LOCK_VARIABLE} {path}: cannot open the machine's lock ({error.strerror or error}); "
                             "expected a file that can be created or opened there (set "
                             f"{LOCK_VARIABLE} to another path).") from None
        started, shown, said = time.monotonic(), None, 0.0
        while not self._try():
            who = holder(path)
            if not wait:
                raise Busy(f"another suite holds this machine: {who}; lock {path}. --no-wait refuses to wait: "
                           "run again once it has ended, or leave --no-wait out to wait for it.")
            waited = time.monotonic() - started
            if who != shown:
                print(f"rosetta: waiting for the suite that holds this machine: {who}; lock {path}. "
                      "Nothing starts until it ends (Ctrl-C stops waiting; --no-wait refuses instead).",
                      file=sys.stderr, flush=True)
                shown, said = who, waited
            elif waited - said >= progress_every:
                print(f"rosetta: still waiting, {_duration(waited)} so far, for {who}.", file=sys.stderr, flush=True)
                said = waited
            time.sleep(poll)
        self.held, self.waited = True, time.monotonic() - started
        if shown is not None:
            print(f"rosetta: the machine is free after {_duration(self.waited)} of waiting; starting.",
                  file=sys.stderr, flush=True)
        details = json.dumps({"pid": os.getpid(), "command": command,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}) + "\n"
        try:
            os.ftruncate(self.descriptor, 0)
            os.pwrite(self.descriptor, details.encode(), 0)
        except OSError:  # opened read-only, or the disk of the lock is full: the lock holds all the same
            pass

    def _try(self) -> bool:
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self.descriptor is None:
            return
        try:
            if self.held:  # no stale details for the next holder's waiters; the lock's, never another's
                with contextlib.suppress(OSError):
                    os.ftruncate(self.descriptor, 0)
                fcntl.flock(self.descriptor, fcntl.LOCK_UN)
        finally:
            os.close(self.descriptor)
            self.descriptor, self.held = None, False


def hold_machine(lock: MachineLock, args) -> None:
    """For a suite (``SUITES``): the machine's lock, waited for unless ``--no-wait``."""
    if args.command in SUITES:
        lock.acquire("rosetta " + shlex.join(args.argv), wait=not getattr(args, "no_wait", False))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


# --- room on the disk ------------------------------------------------------------------------

AFTER_FULL = "Free some space, then --resume runs what is missing."


class DiskFull(ValueError):
    """The results folder's disk has too little room: one line (``str``), exit status 2.
    ``table`` is set once the suite has tried to write the table of what finished."""

    def __init__(self, text: str, advice: str = AFTER_FULL):
        super().__init__(text)
        self.text, self.advice, self.table = text, advice, None

    def __str__(self) -> str:
        return self.text + (f"; {self.table}" if self.table else "") + ". " + self.advice


def minimum_free() -> int:
    """The free bytes a run needs: ``$ROSETTA_MIN_FREE_MIB`` MiB, or ``DEFAULT_MIN_FREE_MIB``."""
    text = os.environ.get(MIN_FREE_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MIN_FREE_MIB * MIB
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{MIN_FREE_VARIABLE}={text!r}: expected the MiB a run needs free on the results "
                         f"folder's disk, a number 0 or more (default {DEFAULT_MIN_FREE_MIB}; 0 checks nothing).")
    return int(value * MIB)


def size(count: float) -> str:
    return f"{count / MIB / 1024:.1f} GiB" if count >= 1024 * MIB else f"{count / MIB:.1f} MiB"


def check_space(results: Path, before: str | None = None) -> None:
    """Raises ``DiskFull`` unless the disk of ``results`` has the minimum free. ``before``: the run
    about to start in a suite (it and the rest are then not started); None: before anything starts."""
    need = minimum_free()
    free = free_space(results)
    if free >= need:
        return
    text = (f"--results {results}: {size(free)} free on its disk, less than the {size(need)} a run needs "
            f"(an executed notebook, its record and its ONNX export; ${MIN_FREE_VARIABLE} sets it)")
    if before is None:
        raise DiskFull(text + "; nothing was started", "Free some space, or choose another --results.")
    raise DiskFull(f"{text}; {before} and the runs after it were not started; {kept(results)}")


def free_space(folder: Path) -> int:
    """The bytes free to this user on the disk of ``folder`` (of its nearest existing parent, where it is yet to be made)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def is_full(error) -> bool:
    """Whether ``error`` (an OSError, or an error's text: a notebook's, papermill's) is a full disk or quota."""
    if isinstance(error, OSError):
        return error.errno in FULL
    return any(word in str(error or "") for word in FULL_WORDS)


def _whole(notebook: Path) -> bool:
    try:
        json.loads(notebook.read_text())
    except (OSError, ValueError):
        return False
    return True


def kept(results: Path) -> str:
    """What the results folder holds whole: its records (each written to a temporary file and
    renamed), and the executed notebooks this process wrote, naming any left incomplete."""
    folder = results / "records"
    records = len(list(folder.glob("*.json")))
    ours = [path for path in sorted(folder.glob("*.ipynb")) if _modified_since(path, STARTED)]
    broken = [path.name for path in ours if not _whole(path)]
    text = f"kept: {records} record(s) in {folder}, each whole (a record is written whole or not at all)"
    if ours:
        text += f"; executed notebooks of this suite: {len(ours) - len(broken)} whole"
    if broken:
        text += f", {len(broken)} incomplete (papermill could not finish writing it): {', '.join(broken)}"
    return text


def full_reason(message: str) -> str:
    """A notebook's error text that says the disk is full, made one line: the last line that says so."""
    lines = [line.strip() for line in str(message).splitlines() if is_full(line)]
    return "the results folder's disk is full: " + (lines[-1] if lines else str(message).strip())


def _modified_since(path: Path, when: float) -> bool:
    try:
        return path.stat().st_mtime >= when - 1
    except OSError:
        return False


def has_room(results: Path) -> bool:
    return free_space(results) >= minimum_free()


def stopped(results: Path, run: str, error, record_path: Path, recorded: bool = False) -> DiskFull:
    """The suite stops: ``run`` met a full disk (``error``, an OSError or the notebook's error).
    Says what became of its record (``recorded``: the harness wrote it) and what the folder keeps."""
    why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    for word in FULL_WORDS[1::2]:  # the short name of the error, where its text holds one
        if word in why:
            why = word
    try:
        free = size(free_space(results)) + " free"
    except OSError:
        free = "free space unknown"
    if recorded:
        said = "its record says so (failed)"
    elif record_path.is_file():
        try:
            status = json.loads(record_path.read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            status = "unknown"
        said = (f"the harness could not complete its record, and the one the notebook wrote stays, whole "
                f"(status {status})")
    else:
        said = "its record could not be written either"
    return DiskFull(f"the disk of {results} is full ({why}; {free}): {run} stopped, {said}; the suite stops here; "
                    f"{kept(results)}")


def finish_table(full: DiskFull, render) -> None:
    """After ``full``: the table of what finished, if the disk takes it (``render()`` returns its path)."""
    try:
        full.table = f"the table of the runs that finished: {render()}"
    except OSError as error:
        if not is_full(error):
            raise
        full.table = "the table could not be written (no room either); its README.md from before stays as it was"
    except ValueError as error:  # the agreement table without a reference run
        full.table = f"no table: {error}"


def replace_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (``record.write_text``): a full disk leaves the old file whole,
    and the error names ``path``."""
    try:
        record.write_text(path, text)
    except OSError as error:
        if error.filename is None:  # a write that failed names no file
            error.filename = str(path)
        raise


def full_disk_line(error: OSError, results: Path | None) -> str:
    """One line for a full disk met outside a notebook's run (writing the table, a check's record)."""
    where = f" {error.filename}" if error.filename else ""
    text = f"no room to write{where} ({error.strerror or error})"
    if results is not None and (results / "records").is_dir():
        text += f"; {kept(results)}"
    return text + ". Free some space and run again."
