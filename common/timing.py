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
of each epoch the loop spent waiting for its next batch.
"""
import statistics
import time
from typing import Callable, List, Optional

from common import iterator


class Timer:
    def __init__(self, sync: Optional[Callable[[], object]] = None):
        self.sync = sync or (lambda: None)
        self.started: Optional[float] = None
        self.marks: List[float] = []
        self.fed_at_start = 0.0
        self.fed_marks: List[float] = []

    def _now(self) -> float:
        self.sync()
        return time.perf_counter()

    def start(self) -> None:
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

    def summary(self, samples_per_epoch: int) -> dict:
        """Training time, first epoch, median of the others, steady throughput, and feeding."""
        epochs = self.epoch_seconds
        if not epochs:
            raise RuntimeError("no epoch was timed.")
        steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
        train_seconds = self.marks[-1] - self.started
        feeding = self.feeding_seconds
        return {
            "train_seconds": train_seconds,
            "first_epoch_seconds": epochs[0],
            "median_epoch_seconds": statistics.median(epochs[1:]) if len(epochs) > 1 else None,
            "epoch_seconds": epochs,
            "throughput_per_second": samples_per_epoch / steady if steady > 0 else None,
            "feeding_seconds": feeding,
            "feeding_share": sum(feeding) / train_seconds if train_seconds > 0 else None,
        }
