"""The pool behind the short runs: every job's record and output come back, one core per worker."""
import os

import pytest

import shortruns
from harness import runner
from harness.frameworks import Framework


def test_worker_count_follows_the_cores_and_the_override(monkeypatch):
    monkeypatch.delenv("ROSETTA_TEST_WORKERS", raising=False)
    assert shortruns.worker_count(50) == len(os.sched_getaffinity(0))
    assert shortruns.worker_count(1) == 1
    monkeypatch.setenv("ROSETTA_TEST_WORKERS", "1")
    assert shortruns.worker_count(50) == 1
    monkeypatch.setenv("ROSETTA_TEST_WORKERS", "two")
    with pytest.raises(ValueError, match="ROSETTA_TEST_WORKERS must be a whole number >= 1, got 'two'"):
        shortruns.worker_count(50)


def test_each_job_returns_its_record_and_output(tmp_path, monkeypatch):
    monkeypatch.delenv("ROSETTA_TEST_WORKERS", raising=False)
    ghosts = [Framework(name=f"ghost{i}", label=f"Ghost {i}", api="none", env=f"ghost-env-{i}",
                        notebooks={"cifar": "cifar/PyTorch_CIFAR.ipynb"}) for i in range(3)]
    settings = runner.RunSettings(device="cpu", epochs=1)
    pool = shortruns.ShortRuns([(ghost, "cifar", settings, tmp_path) for ghost in ghosts])
    try:
        for ghost in ghosts:
            record, log = pool.result(ghost.name, "cifar")
            assert record["framework"] == ghost.label and record["status"] == "unavailable"
            assert f"[{ghost.name}/cifar] unavailable:" in log
    finally:
        pool.close()


def test_workers_are_pinned_to_distinct_cores():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to spread")
    with shortruns.pinned_pool(2) as pool:
        seen = set()
        for _ in range(5):  # until both workers have answered
            seen |= {frozenset(a) for a in pool.map(shortruns.affinity, [0.2] * 4)}
            if len(seen) == 2:
                break
    assert seen == {frozenset({cores[0]}), frozenset({cores[1]})}


def test_a_single_worker_keeps_every_core():
    with shortruns.pinned_pool(1) as pool:
        assert pool.submit(shortruns.affinity).result() == os.sched_getaffinity(0)
