"""The training timer: wall-clock, with the device synchronised at every mark.

    timer = Timer(sync=torch.cuda.synchronize)   # or a no-op on the CPU
    timer.start()                 # synchronises, then starts the clock
    for epoch in ...:
        ...train...
        timer.epoch_done()        # synchronises, then notes the time
    timer.summary(samples_per_epoch)

Training time runs from just before the first step to the end of the last,
the device synchronised at both ends, so queued asynchronous work is counted.
The first epoch (compilation, autotuning, warm-up) is reported apart from the
median of the others, which gives the steady throughput. At every mark the timer
also reads ``common/iterator.py``'s feeding counter, so the summary says how much
of each epoch the loop spent waiting for its next batch, and the energy counters
(``common/resources.py``: RAPL on the CPU, NVML on the GPU, where exposed), so that the
summary gives the energy of the training alone; the summary adds the kernel's peak memory.

A notebook that copies each batch to the device itself times that copy apart, after
training (``timer.measure_copy(to_device, x_train, y_train, batch_size, seed)``): the
device is synchronised before and after each copy, which the training loop must not do,
since on an asynchronous engine (MXNet, CUDA) a copy inside the loop waits for the queued
step and a clock around it would count that step as feeding.
"""
import statistics
import time
from typing import Callable, List, Optional

import numpy as np

from common import iterator, resources


class Timer:
    def __init__(self, sync: Optional[Callable[[], object]] = None):
        self.sync = sync or (lambda: None)
        self.started: Optional[float] = None
        self.marks: List[float] = []
        self.fed_at_start = 0.0
        self.fed_marks: List[float] = []
        self.copy_seconds_per_batch: Optional[float] = None
        self.copy_batch_size: Optional[int] = None
        self.energy = resources.EnergyMeter()

    def _now(self) -> float:
        self.sync()
        return time.perf_counter()

    def start(self) -> None:
        self.energy.start()  # before the clock: loading NVML is not training
        self.started = self._now()
        self.fed_at_start = iterator.feeding_seconds()
        self.marks = []
        self.fed_marks = []

    def epoch_done(self) -> float:
        """Marks the end of an epoch; returns that epoch's seconds."""
        if self.started is None:
            raise RuntimeError("Timer.epoch_done() called before Timer.start().")
        self.marks.append(self._now())
        self.fed_marks.append(iterator.feeding_seconds())
        self.energy.mark()
        previous = self.marks[-2] if len(self.marks) > 1 else self.started
        return self.marks[-1] - previous

    @property
    def epoch_seconds(self) -> List[float]:
        edges = [self.started] + self.marks
        return [b - a for a, b in zip(edges, edges[1:])]

    @property
    def feeding_seconds(self) -> List[float]:
        """Each epoch's seconds spent inside ``iterator.train_batches`` waiting for a batch."""
        edges = [self.fed_at_start] + self.fed_marks
        return [b - a for a, b in zip(edges, edges[1:])]

    def measure_copy(self, copy: Callable[[np.ndarray, np.ndarray], object], x: np.ndarray,
                     y: np.ndarray, batch_size: int, seed: int, batches: int = 16) -> None:
        """Times ``copy(x_batch, y_batch)``, the notebook's own copy of a batch to the device,
        on the first ``batches`` batches of epoch 0 with the device synchronised before and
        after each; keeps the median seconds per batch for ``summary``."""
        if batches < 1:
            raise ValueError(f"measure_copy needs at least 1 batch, got {batches}.")
        order = iterator.epoch_order(len(x), seed, 0)
        count = min(batches, iterator.batches_per_epoch(len(x), batch_size))
        if count < 1:
            raise ValueError(f"{len(x)} samples make no batch of {batch_size}.")
        seconds = []
        for number in range(count):
            x_batch, y_batch = iterator.gather(x, y, order, number, batch_size)
            started = self._now()
            copied = copy(x_batch, y_batch)
            seconds.append(self._now() - started)
            del copied
        self.copy_seconds_per_batch = statistics.median(seconds)
        self.copy_batch_size = batch_size

    def summary(self, samples_per_epoch: int) -> dict:
        """Training time, first epoch, median of the others, steady throughput, and feeding:
        the waits for batches inside the loop plus, where ``measure_copy`` ran, its copy
        time per batch times the batches of every epoch."""
        epochs = self.epoch_seconds
        if not epochs:
            raise RuntimeError("no epoch was timed.")
        steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
        train_seconds = self.marks[-1] - self.started
        feeding = self.feeding_seconds
        copy_per_epoch = None
        if self.copy_seconds_per_batch is not None:
            copy_per_epoch = self.copy_seconds_per_batch * (samples_per_epoch // self.copy_batch_size)
        fed = sum(feeding) + (copy_per_epoch or 0.0) * len(epochs)
        return {
            "train_seconds": train_seconds,
            "first_epoch_seconds": epochs[0],
            "median_epoch_seconds": statistics.median(epochs[1:]) if len(epochs) > 1 else None,
            "epoch_seconds": epochs,
            "throughput_per_second": samples_per_epoch / steady if steady > 0 else None,
            "feeding_seconds": feeding,
            "copy_seconds_per_batch": self.copy_seconds_per_batch,
            "copy_seconds_per_epoch": copy_per_epoch,
            "feeding_share": fed / train_seconds if train_seconds > 0 else None,
            "peak_memory": dict(resources.peak_memory(), gpu_used_bytes=self.energy.gpu_used_max),
            "energy": self.energy.summary(),
        }
