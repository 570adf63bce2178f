"""Reservations (records/.reserved/STEM): what they hold while a run is under way, and how a later
run tells a lost run (its harness killed before it could record it) from one still going."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common import record
from harness import report, runner

import helpers
import selftest


def _reserved_run(tmp_path, **changes) -> tuple:
    """A reservation as a run makes it (``runner.reserve``), with ``changes`` to what it holds."""
    framework = selftest.framework(tmp_path / "selftest.ipynb", "pass")
    results = tmp_path / "results"
    record_path, executed = runner.run_paths(results, framework, "cifar")
    settings = runner.RunSettings(epochs=1, train_samples=640, test_samples=100, seed=3, device="cpu")
    runner.reserve(record_path, executed, framework, "cifar", settings)
    reservation = record_path.parent / ".reserved" / record_path.name[:-len(".json")]
    known = {**json.loads(reservation.read_text()), **changes}
    reservation.write_text(json.dumps(known))
    return results, record_path, reservation, known


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: the pid names no process now
    return child.pid


def test_a_reservation_says_what_the_run_is(tmp_path):
    _, _, _, known = _reserved_run(tmp_path)
    assert known["pid"] == os.getpid() and known["host"] == socket.gethostname()
    assert (known["framework"], known["benchmark"], known["seed"], known["device"]) == ("Selftest", "cifar", 3, "cpu")
    assert (known["epochs"], known["train_samples"], known["test_samples"]) == (1, 640, 100)
    assert known["notebook"].endswith("-selftest-cifar.ipynb") and known["started"]
    if os.path.isdir("/proc"):
        assert isinstance(known["pid_started"], int)


def test_a_reservation_whose_harness_is_gone_becomes_a_lost_record_shown_in_the_table(tmp_path):
    results, record_path, reservation, known = _reserved_run(tmp_path, pid=_dead_pid())
    lost = runner.recover_lost(results)
    assert len(lost) == 1 and not reservation.exists()
    written = record.read(record_path)
    assert written["status"] == "lost" and written["timestamp"] == known["started"]
    assert f"pid {known['pid']}" in written["error"] and "before it could record the run" in written["error"]
    assert (written["seed"], written["epochs"], written["environment"]["device"]) == (3, 1, "cpu")
    assert "**lost**" in report.render(results).read_text()


def test_a_reused_pid_does_not_keep_a_lost_run_alive(tmp_path):
    """The pid now names another process (here: this one, started at another time)."""
    if not os.path.isdir("/proc"):
        pytest.skip("no /proc: a process's start time is not known here")
    results, record_path, reservation, known = _reserved_run(tmp_path)
    known["pid_started"] += 1
    reservation.write_text(json.dumps(known))
    assert len(runner.recover_lost(results)) == 1 and record.read(record_path)["status"] == "lost"


def test_runs_still_going_or_of_another_machine_are_left_alone(tmp_path):
    results, record_path, alive, _ = _reserved_run(tmp_path)  # this process: alive
    elsewhere = alive.with_name(alive.name.replace("-selftest", ".9-selftest"))
    elsewhere.write_text(json.dumps({**json.loads(alive.read_text()), "pid": _dead_pid(), "host": "another-host"}))
    empty = alive.with_name(alive.name.replace("-selftest", ".8-selftest"))
    empty.touch()  # an older harness's reservation, its run maybe still going
    assert runner.recover_lost(results) == []
    assert alive.exists() and elsewhere.exists() and empty.exists()
    assert not list(record_path.parent.glob("*.json"))


def test_an_old_empty_reservation_beside_its_record_is_removed(tmp_path):
    results, record_path, reservation, _ = _reserved_run(tmp_path)
    reservation.write_text("")
    record.write(record_path, record.build(framework="Selftest", api="test", benchmark="cifar", status="failed",
                                           error="ValueError: x", epochs=1, batch_size=64, train_samples=640,
                                           test_samples=100, seed=3))
    assert runner.recover_lost(results) == [] and not reservation.exists()
    assert record.read(record_path)["status"] == "failed"


def test_a_lost_docker_run_has_its_container_stopped(tmp_path, monkeypatch):
    """A container runs on when its harness is killed (the docker client and the container are not
    the harness's children): the next run stops it by the name the reservation keeps."""
    script = tmp_path / "bin" / "docker"
    script.parent.mkdir()
    program = (Path(helpers.__file__).parent / "fake_docker.py").read_text()
    script.write_text(f"#!{sys.executable}\n" + program.split("\n", 1)[1])
    script.chmod(0o755)
    monkeypatch.setenv("ROSETTA_DOCKER", str(script))
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
    results, record_path, _, known = _reserved_run(tmp_path, pid=_dead_pid(), container="rosetta-lost-run-1")
    runner.recover_lost(results)
    calls = [json.loads(line) for line in (tmp_path / "docker.log").read_text().splitlines()]
    assert ["kill", "rosetta-lost-run-1"] in calls
    assert "rosetta-lost-run-1" in record.read(record_path)["error"]
