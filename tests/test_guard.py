"""The machine and the disk (harness/guard.py): one suite at a time per machine, and a full disk.

Real `rosetta run` processes of selftest notebooks (tests/helpers/rosetta_run.py), a real flock, a
real tmpfs mounted by the test (skipped, saying why, where mounting is refused) and a real read-only
bind mount: what is checked is what a user sees, one line or a traceback.
"""
import contextlib
import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import selftest

from common import REPOSITORY, record
from harness import cli, guard

DRIVER = Path(__file__).parent / "helpers" / "rosetta_run.py"  # `rosetta run` of a selftest notebook

WRITE_A_RECORD = """
from common import record
record.write(record_path, record.build(
    framework="Selftest", api="test", benchmark="cifar", accuracy=0.5, timing={"train_seconds": 1.0},
    epochs=10, batch_size=64, train_samples=50000, test_samples=10000, seed=seed))
"""

# Another program fills the disk of the results folder while the notebook trains, and keeps it full.
FILL_THE_DISK = """
import os
filler = os.path.join(os.path.dirname(os.path.dirname(record_path)), "filler")
with open(filler, "wb", buffering=0) as f:
    try:
        while True:
            f.write(b"x" * 65536)
    except OSError as error:
        print("the disk is full:", error)
""" + WRITE_A_RECORD

# The disk fills; the notebook's checkpoint fails and its temporary file is removed (as record.write_json
# does), which leaves room for a small record: the run's own failure is recorded.
A_CHECKPOINT_FAILS = """
import os
from common import record
folder = os.path.dirname(os.path.dirname(record_path))
filler = os.path.join(folder, "filler")
with open(filler, "wb", buffering=0) as f:
    try:
        while True:
            f.write(b"x" * 65536)
    except OSError:
        pass
os.truncate(filler, os.path.getsize(filler) - 256 * 1024)  # 256 KiB free
record.write_json(os.path.join(folder, "checkpoint.json"), {"weights": "x" * 4 * 1024 * 1024})
"""

# Holds on until the test creates the file $ROSETTA_TEST_RELEASE, then writes the span of its run
# (start and end, in seconds since the epoch) and its record.
HOLD = """
import json, os, time
started = time.time()
while not os.path.exists(os.environ["ROSETTA_TEST_RELEASE"]) and time.time() < started + 100:
    time.sleep(0.05)
with open(record_path + ".span", "w") as f:
    json.dump([started, time.time()], f)
""" + WRITE_A_RECORD

SLEEPER = """
import json, os, subprocess
child = subprocess.Popen(["sleep", "600"])
with open(record_path + ".pids", "w") as f:
    json.dump([os.getpid(), os.getppid(), child.pid], f)  # the kernel, its papermill, its child
child.wait()
"""


def start_run(tmp_path, body: str, *arguments: str, environment: dict | None = None,
              log: Path | None = None) -> subprocess.Popen:
    """`rosetta run` of a selftest notebook with ``body``, as a process of its own, its output and
    errors together in a pipe (or the file ``log``)."""
    notebook = tmp_path / f"selftest-{time.monotonic_ns()}.ipynb"
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "JUPYTER_PATH": str(tmp_path / "jupyter"),
           "ROSETTA_TEST_NOTEBOOK": str(notebook), "ROSETTA_TEST_BODY": body, **(environment or {})}
    for name, value in list(env.items()):
        if value is None:
            del env[name]
    with open(log, "w") if log else contextlib.nullcontext(subprocess.PIPE) as out:
        return subprocess.Popen([sys.executable, str(DRIVER), *arguments], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    selftest.install_kernel(tmp_path, monkeypatch)


def _wait_for(pattern, seconds: float, what: str = "the notebook never started"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = pattern()
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(what)


def _finish(process: subprocess.Popen, seconds: float = 120) -> str:
    try:
        output, _ = process.communicate(timeout=seconds)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return output


def _mount(*arguments: str) -> None:
    try:
        done = subprocess.run(["mount", *arguments], capture_output=True, text=True)
    except OSError as error:
        pytest.skip(f"no mount command here ({error}): the test needs a file system of its own")
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(arguments)} is refused here ({(done.stderr or done.stdout).strip()}): "
                    "the test needs a file system of its own (as root, or with CAP_SYS_ADMIN)")


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` (such as "4m") mounted at ``folder`` for the test."""
    folder.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        _unmount(folder)


def _rosetta_lines(output: str) -> list:
    return [line for line in output.splitlines() if line.startswith("rosetta: ")]


# --- room on the disk ------------------------------------------------------------------------------

def test_too_little_space_from_the_start_is_one_line_and_nothing_starts(tmp_path, kernel):
    with small_disk(tmp_path / "disk", "8m") as disk:
        (disk / "filler").write_bytes(b"x" * 6 * 1024 * 1024)  # 2 MiB left: a record would fit, not a run
        results = disk / "results"
        output = _finish(start_run(tmp_path, WRITE_A_RECORD, "--results", str(results),
                                   environment={guard.MIN_FREE_VARIABLE: None}))
        lines = output.strip().splitlines()
        assert len(lines) == 1, output
        assert lines[0].startswith(f"rosetta: --results {results}: ") and "free on its disk, less than the 512.0 MiB" in lines[0]
        assert "nothing was started" in lines[0] and guard.MIN_FREE_VARIABLE in lines[0]
        assert not list(results.glob("records/*")), "a run started"


def test_a_disk_that_fills_mid_run_is_one_line_naming_what_was_kept(tmp_path, kernel):
    """papermill cannot write the executed notebook, nor the harness the record: one line says so,
    names the incomplete notebook, and the second repeat never starts; no traceback anywhere. The
    table of an earlier suite stays whole (it is replaced only once a new one is written whole)."""
    with small_disk(tmp_path / "disk", "4m") as disk:
        results = disk / "results"
        results.mkdir()
        (results / "README.md").write_text("# Results\n\nthe table of an earlier suite\n")
        (results / "results.csv").write_text("framework,status\nEarlier,ok\n")
        run = start_run(tmp_path, FILL_THE_DISK, "--results", str(results), "--repeats", "2",
                        environment={guard.MIN_FREE_VARIABLE: "1"})
        output = _finish(run)
        assert run.returncode == 2, output
        assert "Traceback" not in output, output
        [line] = _rosetta_lines(output)
        assert line.startswith(f"rosetta: the disk of {results} is full (No space left on device")
        assert "Selftest cifar stopped, its record could not be written either" in line
        [notebook] = (results / "records").glob("*.ipynb")
        assert f"1 incomplete (papermill could not finish writing it): {notebook.name}" in line
        assert "the table could not be written" in line and line.endswith("--resume runs what is missing.")
        assert "repeat 2 of 2" not in output
        assert not list((results / "records").glob("*.json"))
        assert (results / "README.md").read_text() == "# Results\n\nthe table of an earlier suite\n"
        assert (results / "results.csv").read_text() == "framework,status\nEarlier,ok\n"
        assert sorted(path.name for path in results.iterdir()) == ["README.md", "filler", "records", "results.csv"]


def test_a_failure_that_leaves_room_for_a_record_is_recorded_and_the_suite_stops(tmp_path, kernel):
    with small_disk(tmp_path / "disk", "4m") as disk:
        results = disk / "results"
        run = start_run(tmp_path, A_CHECKPOINT_FAILS, "--results", str(results), "--repeats", "2",
                        environment={guard.MIN_FREE_VARIABLE: "1"})
        output = _finish(run)
        assert run.returncode == 2, output
        [line] = _rosetta_lines(output)
        assert line.startswith(f"rosetta: the disk of {results} is full") and "its record says so (failed)" in line
        assert "1 record(s)" in line and "executed notebooks of this suite: 1 whole" in line
        assert f"the table of the runs that finished: {results / 'README.md'}" in line
        [path] = (results / "records").glob("*.json")
        failed = record.read(path)
        assert failed["status"] == "failed"
        assert failed["error"] == "the results folder's disk is full: OSError: [Errno 28] No space left on device"
        assert "repeat 2 of 2" not in output and "Traceback" not in output.split("[selftest/cifar] failed")[1]


def test_report_on_a_full_disk_is_one_line_and_keeps_the_old_table(tmp_path):
    with small_disk(tmp_path / "disk", "1m") as results:
        record.write(results / "records" / "20260101-000000-pytorch-cifar.json", record.build(
            framework="PyTorch", api="module", benchmark="cifar", accuracy=0.5, timing={"train_seconds": 1.0},
            epochs=1, batch_size=64, train_samples=2000, test_samples=1000, seed=42))
        (results / "README.md").write_text("the table before\n")
        with open(results / "filler", "wb", buffering=0) as filler:
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"x" * 4096)
        report = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--results", str(results)],
                                cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
        assert report.returncode == 2, report.stdout + report.stderr
        assert report.stderr.startswith(f"rosetta: no room to write {results}/") and "Traceback" not in report.stderr
        assert report.stderr.count("\n") == 1 and "(No space left on device); kept: 1 record(s)" in report.stderr
        assert (results / "README.md").read_text() == "the table before\n"


def test_the_minimum_free_space_must_be_a_number(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(guard.MIN_FREE_VARIABLE, "lots")
    monkeypatch.setattr(cli, "cmd_run", lambda args: pytest.fail("the run started"))
    assert cli.main(["run", "pytorch", "--device", "cpu", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"rosetta: {guard.MIN_FREE_VARIABLE}='lots': expected the MiB a run needs free on the results folder's "
        "disk, a number 0 or more (default 512; 0 checks nothing).")


def test_report_on_a_read_only_folder_is_one_line(tmp_path):
    source, results = tmp_path / "source", tmp_path / "results"
    record.write(source / "records" / "20260101-000000-pytorch-cifar.json", record.build(
        framework="PyTorch", api="module", benchmark="cifar", accuracy=0.5, timing={"train_seconds": 1.0},
        epochs=1, batch_size=64, train_samples=2000, test_samples=1000, seed=42))
    results.mkdir()
    _mount("--bind", str(source), str(results))
    try:
        _mount("-o", "remount,bind,ro", str(results))
        report = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--results", str(results)],
                                cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    finally:
        _unmount(results)
    assert report.returncode == 2, report.stdout + report.stderr
    assert report.stdout == ""
    assert report.stderr.strip() == (f"rosetta: --results {results}: cannot write the table there (Read-only "
                                     "file system); expected a folder that exists or can be created, and is writable.")


# --- one suite at a time -------------------------------------------------------------------------

def test_a_second_suite_waits_for_the_first_and_no_wait_refuses(tmp_path, kernel):
    lock = {"ROSETTA_LOCK": str(tmp_path / "machine.lock"), "ROSETTA_TEST_RELEASE": str(tmp_path / "release")}
    first = start_run(tmp_path, HOLD, "--results", str(tmp_path / "first"), environment=lock)
    second = refused = None
    try:
        _wait_for(lambda: list((tmp_path / "first" / "records").glob("*.ipynb")), 120)  # it holds the lock
        second = start_run(tmp_path, HOLD, "--results", str(tmp_path / "second"), environment=lock,
                           log=tmp_path / "second.log")
        refused = start_run(tmp_path, WRITE_A_RECORD, "--results", str(tmp_path / "refused"), "--no-wait",
                            environment=lock)
        refusal = _finish(refused)
        _wait_for(lambda: ["said"] if "waiting for" in (tmp_path / "second.log").read_text() else [], 120,
                  "the second suite never said that it waits")
        assert first.poll() is None
        (tmp_path / "release").touch()  # the first notebook ends, and the second suite can start
        assert refused.returncode == 2, refusal
        assert refusal.strip().splitlines() == [refusal.strip()]  # one line
        assert refusal.startswith(f"rosetta: another suite holds this machine: pid {first.pid} (rosetta run "
                                  "selftest --benchmark cifar --device cpu --results ")
        assert "--no-wait refuses to wait" in refusal and not (tmp_path / "refused" / "records").exists()
        assert json.loads((tmp_path / "machine.lock").read_text())["pid"] == first.pid  # the refusal left them
        outputs = [_finish(first), (_finish(second), (tmp_path / "second.log").read_text())[1]]
    finally:
        for process in (first, second, refused):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert (f"rosetta: waiting for the suite that holds this machine: pid {first.pid} (rosetta run selftest "
            in outputs[1]), outputs[1]
    assert "rosetta: the machine is free after" in outputs[1]
    spans = [json.loads(path.read_text()) for name in ("first", "second")
             for path in (tmp_path / name / "records").glob("*.span")]
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], f"the notebooks overlapped: {spans}"


def test_a_holder_killed_with_kill_9_releases_the_lock_and_its_children_never_held_it(tmp_path, kernel):
    path = tmp_path / "machine.lock"
    holder = start_run(tmp_path, SLEEPER, "--results", str(tmp_path / "results"),
                       environment={"ROSETTA_LOCK": str(path)})
    pids, descriptor = [], os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        pids = json.loads(_wait_for(lambda: list((tmp_path / "results" / "records").glob("*.pids")), 120).read_text())
        with pytest.raises(BlockingIOError):  # held
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock_id = os.stat(path)
        for pid in pids:  # the kernel, papermill, what the kernel started: none has the lock open
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    opened = os.stat(fd)
                    assert (opened.st_dev, opened.st_ino) != (lock_id.st_dev, lock_id.st_ino), f"{pid} holds the lock"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free at once: the kernel released it
    finally:
        os.close(descriptor)
        if holder.poll() is None:
            holder.kill()
        holder.communicate()
        for pid in pids:  # what a killed harness may leave behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_waiting_suite_says_for_whom_once_then_how_long(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROSETTA_LOCK", str(tmp_path / "machine.lock"))
    first, second = guard.MachineLock(), guard.MachineLock()
    first.acquire("rosetta run first")
    releasing = threading.Timer(1.2, first.release)
    releasing.start()
    try:
        second.acquire("rosetta run second", progress_every=0.4, poll=0.05)
        assert second.waited >= 1.0
        details = json.loads((tmp_path / "machine.lock").read_text())
        assert details["pid"] == os.getpid() and details["command"] == "rosetta run second"
    finally:
        releasing.join()
        second.release()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"rosetta: waiting for the suite that holds this machine: pid {os.getpid()} "
                               "(rosetta run first, started ")
    assert sum("waiting for the suite" in line for line in lines) == 1
    assert any(line.startswith("rosetta: still waiting, ") for line in lines[1:-1])
    assert lines[-1].startswith("rosetta: the machine is free after ")
    assert (tmp_path / "machine.lock").read_text() == ""  # released: no details left for the next waiter


def test_a_lock_that_cannot_be_opened_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROSETTA_LOCK", str(tmp_path / "no such folder" / "machine.lock"))
    monkeypatch.setattr(cli, "cmd_run", lambda args: pytest.fail("the run started"))
    assert cli.main(["run", "pytorch", "--device", "cpu", "--results", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"rosetta: ROSETTA_LOCK {tmp_path / 'no such folder' / 'machine.lock'}: cannot open "
                            "the machine's lock (No such file or directory)")


@pytest.mark.parametrize("target, command", [("bench", "rosetta bench"), ("onnx", "rosetta onnx"),
                                             ("agree", "rosetta agree")])
def test_make_no_wait_passes_the_flag(target, command):
    def planned(*variables):
        done = subprocess.run(["make", "-n", target, "FRAMEWORKS=pytorch", *variables], cwd=REPOSITORY,
                              capture_output=True, text=True)
        return [line.split() for line in done.stdout.replace("\\\n", " ").splitlines() if command in line]

    assert "--no-wait" in planned("NO_WAIT=1")[0]
    assert "--no-wait" not in planned()[0]


def test_replace_text_writes_through_record_and_names_the_file(tmp_path, monkeypatch):
    """The tables are written by common.record's atomic writer; a full disk's error names the table."""
    from common import record

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record, "replace_file", full)
    with pytest.raises(OSError) as error:
        guard.replace_text(tmp_path / "README.md", "table")
    assert error.value.filename == str(tmp_path / "README.md") and guard.is_full(error.value)
