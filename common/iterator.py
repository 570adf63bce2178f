"""The one minibatch order that every framework trains on.

    for epoch in range(epochs):
        for xb, yb in iterator.train_batches(x_train, y_train, batch_size, seed, epoch):
            ...
    for xb in iterator.test_batches(x_test, batch_size):
        ...

Epoch ``e`` visits the training set in ``np.random.default_rng([seed, e])``'s
permutation, so the order depends on the seed and the epoch number only, never
on what ran before. Training batches are complete: the last ``n % batch_size``
samples of each permutation are left out. Test batches cover every sample, the
last one possibly short.

A background thread gathers the next training batches (``x[index], y[index]``)
while the consumer trains on the current one; the batches, their contents and
their order are the same as gathering each one when asked. ``feeding_seconds()``
counts the seconds consumers have spent waiting inside ``train_batches`` for a
batch, which ``common/timing.py``'s ``Timer`` reports per epoch.
"""
import os
import threading
import time
from typing import Iterator, Tuple

import numpy as np

# Training batches the background thread may gather ahead of the consumer; 0 gathers each
# batch when it is asked for, with no thread (ROSETTA_BATCHES_AHEAD=0, to compare the two).
AHEAD = int(os.environ.get("ROSETTA_BATCHES_AHEAD", "2"))

_feeding = 0.0
_feeding_lock = threading.Lock()


def feeding_seconds() -> float:
    """Seconds spent so far in this process inside ``train_batches`` between a consumer's
    ``next()`` and the batch it gets back (the epoch's permutation included)."""
    return _feeding


def _fed(seconds: float) -> None:
    global _feeding
    with _feeding_lock:
        _feeding += seconds


def epoch_order(samples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(samples)`` that epoch ``epoch`` trains in."""
    return np.random.default_rng([seed, epoch]).permutation(samples)


def batches_per_epoch(samples: int, batch_size: int) -> int:
    return samples // batch_size


def gather(x: np.ndarray, y: np.ndarray, order: np.ndarray, number: int,
           batch_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Batch ``number`` of an epoch in ``order``: the samples ``order[number * batch_size:...]``."""
    index = order[number * batch_size:(number + 1) * batch_size]
    return x[index], y[index]


def train_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                  epoch: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Complete batches of ``(x, y)`` in this epoch's seeded order."""
    resumed = time.perf_counter()
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}.")
    if batch_size < 1 or batch_size > len(x):
        raise ValueError(f"batch_size must be between 1 and the {len(x)} samples, got {batch_size}.")
    batches = _Ahead(x, y, batch_size, epoch_order(len(x), seed, epoch), AHEAD)
    try:
        for number in range(batches_per_epoch(len(x), batch_size)):
            batch = batches.take(number)
            _fed(time.perf_counter() - resumed)
            yield batch
            resumed = time.perf_counter()
    finally:
        batches.stop()  # also when the consumer leaves early
    _fed(time.perf_counter() - resumed)


class _Ahead:
    """Batch ``k`` is always ``x[index], y[index]`` for ``index = order[k * size:(k + 1) * size]``;
    a background thread gathers up to ``ahead`` batches beyond the one being trained on.
    A batch the thread has not finished when it is asked for is gathered by the
    consumer itself (the thread's copy is dropped), so a consumer that never lets the
    thread run (one that holds the GIL throughout its step, or a busy machine) waits
    no longer than for its own gather."""

    def __init__(self, x, y, size: int, order: np.ndarray, ahead: int):
        self.x, self.y, self.size, self.order, self.ahead = x, y, size, order, ahead
        self.count = batches_per_epoch(len(x), size)
        self.ready = {}        # batch number -> (x, y), or the exception its gather raised
        self.claimed = 0       # batches below this are gathered, being gathered, or taken
        self.taken = 0         # batches below this the consumer has asked for
        self.stopped = False
        self.changed = threading.Condition()
        self.thread = None

    def gather(self, number: int):
        return gather(self.x, self.y, self.order, number, self.size)

    def take(self, number: int):
        with self.changed:
            if self.thread is None and self.ahead > 0:
                self.thread = threading.Thread(target=self._produce, name="rosetta-train-batches",
                                               daemon=True)
                self.thread.start()
            self.taken = number + 1
            self.claimed = max(self.claimed, number + 1)
            batch = self.ready.pop(number, None)
            self.changed.notify_all()
        if batch is None:  # not ready: gathered here rather than waited for
            return self.gather(number)
        if isinstance(batch, BaseException):
            raise batch
        return batch

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.ready.clear()
            self.changed.notify_all()

    def _produce(self) -> None:
        while True:
            with self.changed:
                while (not self.stopped and self.claimed < self.count
                       and self.claimed >= self.taken + self.ahead):
                    self.changed.wait()
                if self.stopped or self.claimed >= self.count:
                    return
                number = self.claimed
                self.claimed = number + 1
            try:
                batch = self.gather(number)
            except BaseException as error:  # raised in the consumer, when it asks for this batch
                batch = error
            with self.changed:
                if self.stopped:
                    return
                if number >= self.taken:  # else the consumer gathered it itself meanwhile
                    self.ready[number] = batch
                self.changed.notify_all()


def test_batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """``x`` in order, in batches of ``batch_size``; the last may be shorter."""
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]
