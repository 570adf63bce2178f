"""A real `rosetta run`, in a process of its own started from outside the repository: interrupted,
it stops, is recorded as interrupted and leaves no process; given relative paths, it means the
files in the folder it was started from (the kernel runs in the repository's root)."""
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import selftest

from common import REPOSITORY, record

DRIVER = Path(__file__).parent / "helpers" / "rosetta_run.py"  # `rosetta run` of a selftest notebook
BENCH = Path(__file__).parent / "helpers" / "rosetta_bench.py"  # `rosetta bench` of one, its other steps noted

SLEEPER = """
import json, os, subprocess
child = subprocess.Popen(["sleep", "600"])  # what a kernel starts, like a data loader's workers
with open(record_path + ".pids", "w") as f:
    json.dump([os.getpid(), os.getppid(), child.pid], f)  # the kernel, its papermill, its child
child.wait()
"""


def start_run(tmp_path, monkeypatch, body: str, *arguments: str, driver: Path = DRIVER) -> subprocess.Popen:
    """`rosetta run` (or with ``driver=BENCH`` `rosetta bench`) of a selftest notebook, as its own
    process started from ``tmp_path``; bench notes the steps it starts in ``tmp_path / "steps"``."""
    selftest.install_kernel(tmp_path, monkeypatch)
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "ROSETTA_TEST_STEPS": str(tmp_path / "steps"),
                   "ROSETTA_TEST_NOTEBOOK": str(tmp_path / "selftest.ipynb"), "ROSETTA_TEST_BODY": body}
    return subprocess.Popen([sys.executable, str(driver), *arguments], cwd=tmp_path, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(paths, seconds: float) -> Path:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [path for pattern in paths for path in pattern()]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError("the notebook never started")


@pytest.mark.parametrize("sent, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_stops_everything_and_is_recorded_as_interrupted(tmp_path, monkeypatch, sent, code):
    results = tmp_path / "results"
    run = start_run(tmp_path, monkeypatch, SLEEPER, "--results", str(results))
    pids = []
    try:
        started = _wait_for([lambda: (results / "records").glob("*.pids")], 120)
        time.sleep(0.2)
        pids = json.loads(started.read_text())
        run.send_signal(sent)  # to the harness alone, as a terminal's Ctrl-C reaches it
        output, _ = run.communicate(timeout=60)
        assert run.returncode == code, output
        alive = [pid for pid in pids if selftest.alive(pid)]
        assert not alive, f"left running: {alive}"
        records = sorted((results / "records").glob("*.json"))
        assert len(records) == 1
        interrupted = record.read(records[0])
        assert interrupted["status"] == "interrupted"
        assert signal.Signals(sent).name in interrupted["error"]
        assert "**interrupted**" in (results / "README.md").read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        for pid in pids:  # on a failure, leave nothing behind either
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("sent, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_bench_writes_the_table_and_starts_nothing_more(tmp_path, monkeypatch, sent, code):
    """After the signal, bench writes the table from what finished and exits: no further repeat, no
    ONNX checks (whose environment it would build first)."""
    results = tmp_path / "results"
    run = start_run(tmp_path, monkeypatch, SLEEPER, "--results", str(results), "--repeats", "2", driver=BENCH)
    pids = []
    try:
        started = _wait_for([lambda: (results / "records").glob("*.pids")], 120)
        time.sleep(0.2)
        pids = json.loads(started.read_text())
        run.send_signal(sent)
        output, _ = run.communicate(timeout=60)
        assert run.returncode == code, output
        assert (tmp_path / "steps").read_text().split() == ["envs", "parity"], output  # the steps before the runs
        assert not [pid for pid in pids if selftest.alive(pid)]
        records = sorted((results / "records").glob("*.json"))
        assert len(records) == 1 and record.read(records[0])["status"] == "interrupted"  # the second repeat never began
        assert "**interrupted**" in (results / "README.md").read_text()
        assert output.count("report: ") == 1 and "repeat 2 of 2" not in output
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


WRITE_WHAT_IT_READ = """
from common import record
with open(data_source) as f:  # the path the kernel was given
    assert f.read() == "the copy beside the user", data_source
record.write(record_path, record.build(
    framework="Selftest", api="test", benchmark="cifar", accuracy=0.5, timing={"train_seconds": 1.0},
    epochs=10, batch_size=64, train_samples=50000, test_samples=10000, seed=seed, data_source=data_source))
"""


def test_relative_paths_given_from_another_folder_mean_that_folders_files(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar-10-python.tar.gz").write_text("the copy beside the user")
    run = start_run(tmp_path, monkeypatch, WRITE_WHAT_IT_READ,
                    "--results", "out", "--cifar10", "data/cifar-10-python.tar.gz")
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    records = list((tmp_path / "out" / "records").glob("*.json"))
    assert len(records) == 1 and not (REPOSITORY / "out").exists()
    assert record.read(records[0])["data_source"] == str(tmp_path / "data" / "cifar-10-python.tar.gz")


def _kill_all(pids) -> None:
    for pid in pids:  # on a failure, leave nothing behind
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _gone_within(pids, seconds: float) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(selftest.alive(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if selftest.alive(pid)]


@pytest.mark.parametrize("driver", [DRIVER, BENCH], ids=["run", "bench"])
def test_ctrl_c_with_the_output_piped_to_a_reader_that_dies_still_records_and_writes_the_table(
        tmp_path, monkeypatch, driver):
    """`rosetta run ... 2>&1 | tee log`: Ctrl-C ends tee too, so every later write of the harness
    meets a broken pipe. The record, the table and exit status 130 must not depend on them."""
    results = tmp_path / "results"
    run = start_run(tmp_path, monkeypatch, SLEEPER, "--results", str(results), driver=driver)
    # Ctrl-C's default action for tee, even where this suite was started with SIGINT ignored (a
    # background job of a shell without job control, `make test &`): tee would inherit that
    tee = subprocess.Popen(["tee", str(tmp_path / "log")], stdin=run.stdout, stdout=subprocess.DEVNULL,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run.stdout.close()  # tee is the pipe's only reader
    pids = []
    try:
        started = _wait_for([lambda: (results / "records").glob("*.pids")], 120)
        time.sleep(0.2)
        pids = json.loads(started.read_text())
        tee.send_signal(signal.SIGINT)  # the terminal's Ctrl-C reaches tee first here: the reader is gone
        tee.wait(timeout=10)
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=60) == 130, (tmp_path / "log").read_text()
        assert not [pid for pid in pids if selftest.alive(pid)]
        records = sorted((results / "records").glob("*.json"))
        assert len(records) == 1
        interrupted = record.read(records[0])
        assert interrupted["status"] == "interrupted" and "SIGINT" in interrupted["error"]
        assert "**interrupted**" in (results / "README.md").read_text()
        assert not list((results / "records" / ".reserved").iterdir())  # recorded: the reservation went
    finally:
        for process in (run, tee):
            if process.poll() is None:
                process.kill()
                process.wait()
        _kill_all(pids)


PRINT_A_LOT_THEN_RECORD = """
import os, time
from common import record
open(record_path + ".started", "w").close()
while not os.path.exists(record_path + ".go"):
    time.sleep(0.05)
for line in range(3000):  # far more than a pipe holds (64 KiB): a reader that stops reading blocks it
    print("line", line, "x" * 60, flush=True)
record.write(record_path, record.build(
    framework="Selftest", api="test", benchmark="cifar", accuracy=0.5, timing={"train_seconds": 1.0},
    epochs=10, batch_size=64, train_samples=50000, test_samples=10000, seed=seed))
"""


def test_a_run_whose_output_reader_dies_goes_on_and_is_recorded(tmp_path, monkeypatch):
    """`rosetta run ... | head`: once the reader has gone, the notebook's echo stops, but the
    notebook's output is still read (papermill never blocks on a full pipe) and the run finishes."""
    results = tmp_path / "results"
    run = start_run(tmp_path, monkeypatch, PRINT_A_LOT_THEN_RECORD, "--results", str(results), "--timeout", "60")
    try:
        started = _wait_for([lambda: (results / "records").glob("*.started")], 120)
        run.stdout.close()  # the only reader goes
        started.with_name(started.name[:-len(".started")] + ".go").touch()
        assert run.wait(timeout=60) == 0
        records = sorted((results / "records").glob("*.json"))
        assert len(records) == 1 and record.read(records[0])["status"] == "ok"
        assert (results / "README.md").is_file()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


RECORD_OK = """
from common import record
print("a line for the closed output", flush=True)
record.write(record_path, record.build(
    framework="Selftest", api="test", benchmark="cifar", accuracy=0.5, timing={"train_seconds": 1.0},
    epochs=10, batch_size=64, train_samples=50000, test_samples=10000, seed=seed))
"""


def test_a_run_with_its_standard_streams_closed_runs_and_is_recorded(tmp_path, monkeypatch):
    """`rosetta run ... <&- >&- 2>&-` (a cron job, a daemon): nothing to read or write, and the run
    still runs and is recorded (papermill gets /dev/null as its input, not a closed descriptor)."""
    results = tmp_path / "results"
    selftest.install_kernel(tmp_path, monkeypatch)
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "ROSETTA_TEST_NOTEBOOK": str(tmp_path / "selftest.ipynb"),
                   "ROSETTA_TEST_BODY": RECORD_OK}
    done = subprocess.run(["sh", "-c", 'exec "$0" "$@" <&- >&- 2>&-', sys.executable, str(DRIVER),
                           "--results", str(results)], cwd=tmp_path, env=environment, timeout=120)
    records = sorted((results / "records").glob("*.json"))
    assert len(records) == 1
    written = record.read(records[0])
    assert (done.returncode, written["status"]) == (0, "ok"), written.get("error")
    assert (results / "README.md").is_file()


def test_sighup_from_a_closed_terminal_is_recorded_as_interrupted_and_stops_everything(tmp_path, monkeypatch):
    """The terminal closes (its pty master goes, so every write to it fails with EIO) and SIGHUP
    arrives: the run is recorded as interrupted by SIGHUP, the table written, exit status 129."""
    results = tmp_path / "results"
    master, terminal = os.openpty()
    selftest.install_kernel(tmp_path, monkeypatch)
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "ROSETTA_TEST_NOTEBOOK": str(tmp_path / "selftest.ipynb"),
                   "ROSETTA_TEST_BODY": SLEEPER}
    run = subprocess.Popen([sys.executable, str(DRIVER), "--results", str(results)], cwd=tmp_path, env=environment,
                           stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown, pids = [], []
    try:
        started = _wait_for([lambda: _shown_until(master, shown) or (results / "records").glob("*.pids")], 120)
        _shown_until(master, shown, 0.2)
        pids = json.loads(started.read_text())
        os.close(master)  # the terminal goes: writes to it now fail with EIO
        master = None
        run.send_signal(signal.SIGHUP)
        assert run.wait(timeout=60) == 129, b"".join(shown).decode(errors="replace")
        assert not _gone_within(pids, 5), "left running"
        records = sorted((results / "records").glob("*.json"))
        assert len(records) == 1
        interrupted = record.read(records[0])
        assert interrupted["status"] == "interrupted" and "SIGHUP" in interrupted["error"]
        assert "**interrupted**" in (results / "README.md").read_text()
    finally:
        if master is not None:
            os.close(master)
        if run.poll() is None:
            run.kill()
            run.wait()
        _kill_all(pids)


def _shown_until(master: int, shown: list, seconds: float = 0.05) -> list:
    """What the terminal shows for ``seconds`` (read from its master side, as a terminal would)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            try:
                shown.append(os.read(master, 65536))
            except OSError:
                break
    return []


def test_kill_9_of_the_harness_leaves_no_process_and_the_next_run_records_it_as_lost(tmp_path, monkeypatch):
    """kill -9 gives the harness no chance to clean up: papermill's launcher sees its parent gone
    and ends the kernel (and what the kernel started) and itself. The reservation says what the run
    was; the next run into the folder records it as lost and removes the reservation."""
    results = tmp_path / "results"
    run = start_run(tmp_path, monkeypatch, SLEEPER, "--results", str(results), "--seed", "7")
    pids = []
    try:
        started = _wait_for([lambda: (results / "records").glob("*.pids")], 120)
        time.sleep(0.2)
        pids = json.loads(started.read_text())
        run.kill()
        run.communicate(timeout=10)
        left = _gone_within(pids, 8)
        assert not left, f"the kernel, papermill or the kernel's child outlived the harness: {left}"
        reservations = list((results / "records" / ".reserved").iterdir())
        assert len(reservations) == 1
        known = json.loads(reservations[0].read_text())
        assert known["pid"] == run.pid and known["seed"] == 7 and known["benchmark"] == "cifar"
        assert not list((results / "records").glob("*.json"))

        second = start_run(tmp_path / "again", monkeypatch, "raise ValueError('the next run')",
                           "--results", str(results))
        output, _ = second.communicate(timeout=120)
        assert second.returncode == 1, output  # its own run failed; the lost one is not its failure
        lost = record.read(results / "records" / (reservations[0].name + ".json"))
        assert lost["status"] == "lost" and lost["seed"] == 7, lost
        assert f"pid {run.pid}" in lost["error"] and "kill -9" in lost["error"]
        assert lost["notebook"] and lost["timestamp"] == known["started"]
        assert not reservations[0].exists()
        assert not list((results / "records" / ".reserved").iterdir())
        assert "lost: the harness (pid" in output
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        _kill_all(pids)


def test_a_reserved_folder_that_is_a_file_is_one_line_and_exit_2(tmp_path, monkeypatch):
    results = tmp_path / "results"
    (results / "records").mkdir(parents=True)
    (results / "records" / ".reserved").write_text("not a folder")
    run = start_run(tmp_path, monkeypatch, "pass", "--results", str(results))
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("rosetta:")]
    assert lines == [f"rosetta: {results / 'records' / '.reserved'}: a file, not a folder; expected the folder "
                     "of the reservations of runs (the harness makes it): move or remove that file."], output
    assert not list((results / "records").glob("*.json"))


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def test_ctrl_c_while_rosetta_starts_is_one_line_and_exit_130(tmp_path):
    """The console script, interrupted while it imports (numpy is loaded, pandas and the rest
    are still to come): one line, exit status 130, no KeyboardInterrupt traceback."""
    script = Path(sys.executable).parent / "rosetta"
    if not script.is_file():
        pytest.skip(f"no console script {script}: `make .venv/.installed` installs it")
    if not Path(f"/proc/{os.getpid()}/maps").is_file():
        pytest.skip("no /proc/PID/maps here to see when the imports are under way")
    run = subprocess.Popen([str(script), "list"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.monotonic() + 30
        while "_multiarray_umath" not in _maps(run.pid) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert run.poll() is None, "rosetta list ended before numpy was loaded"
        run.send_signal(signal.SIGINT)
        output, errors = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, errors
    assert "Traceback" not in errors and errors.strip().count("\n") == 0, errors
    assert errors.startswith("rosetta: interrupted by SIGINT (Ctrl-C)"), errors
