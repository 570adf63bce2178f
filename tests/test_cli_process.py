"""A real `rosetta run`, in a process of its own started from outside the repository: interrupted,
it stops, is recorded as interrupted and leaves no process; given relative paths, it means the
files in the folder it was started from (the kernel runs in the repository's root)."""
import json
import os
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
