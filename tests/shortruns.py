"""The short runs of the test suite, spread over the machine's cores.

Each (framework, benchmark) notebook is one job; a pool of worker processes runs them, each
worker pinned to one core of its own (the kernels it starts inherit that), so that two runs
never fight over one core. Most of these runs use two cores poorly (a GRU's 150 small steps,
XLA's CPU convolutions, Chainer's NumPy code): measured on two cores, the pinned pair
finished Chainer's GRU in 186 s beside PyTorch's CNN in 76 s, where one after the other with
both cores they took 178 s + 39 s. A run's own figures are then those of one core, as its
record says (threads); they show that the model learns, they are no benchmark.

ROSETTA_TEST_WORKERS=1 runs the jobs one at a time on every core.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
from pathlib import Path


def worker_count(jobs: int) -> int:
    value = os.environ.get("ROSETTA_TEST_WORKERS", "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"ROSETTA_TEST_WORKERS must be a whole number >= 1, got {value!r}")
        return min(int(value), max(jobs, 1))
    return max(1, min(len(os.sched_getaffinity(0)), jobs))


def _pin(cores) -> None:
    core = cores.get()
    if core is not None:
        os.sched_setaffinity(0, {core})


def _execute(framework, benchmark, settings, results: Path, log: Path) -> dict:
    """In a worker: one notebook, its progress written to ``log``."""
    from harness import runner

    with open(log, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        return runner.execute(framework, benchmark, settings, results)


def pinned_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """``workers`` spawned processes, each pinned to a core of its own (taken in turn from
    this process's cores); a single worker keeps every core."""
    context = multiprocessing.get_context("spawn")
    cores = context.Queue()
    available = sorted(os.sched_getaffinity(0))
    for i in range(workers):
        cores.put(available[i % len(available)] if workers > 1 else None)
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_pin, initargs=(cores,))


class ShortRuns:
    """Starts every job at once; ``result(name, benchmark)`` waits for one and returns
    (its record, its log)."""

    def __init__(self, jobs: list[tuple]):
        """jobs: (framework, benchmark, settings, results folder)."""
        self.pool = pinned_pool(worker_count(len(jobs)))
        self.futures = {}
        for job in jobs:
            self.submit(*job)

    def submit(self, framework, benchmark, settings, results: Path) -> None:
        log = results / f"{framework.name}-{benchmark}.log"
        future = self.pool.submit(_execute, framework, benchmark, settings, results, log)
        self.futures[framework.name, benchmark] = future, log

    def result(self, name: str, benchmark: str) -> tuple[dict, str]:
        future, log = self.futures[name, benchmark]
        record = future.result()
        return record, log.read_text() if log.is_file() else ""

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def affinity(seconds: float = 0) -> set:
    """The cores this process may run on, after a pause (for tests of the pinning)."""
    import time

    time.sleep(seconds)
    return os.sched_getaffinity(0)
