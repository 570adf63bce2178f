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
"""
from typing import Iterator, Tuple

import numpy as np


def epoch_order(samples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(samples)`` that epoch ``epoch`` trains in."""
    return np.random.default_rng([seed, epoch]).permutation(samples)


def batches_per_epoch(samples: int, batch_size: int) -> int:
    return samples // batch_size


def train_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                  epoch: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Complete batches of ``(x, y)`` in this epoch's seeded order."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}.")
    if batch_size < 1 or batch_size > len(x):
        raise ValueError(f"batch_size must be between 1 and the {len(x)} samples, got {batch_size}.")
    order = epoch_order(len(x), seed, epoch)
    for start in range(0, batches_per_epoch(len(x), batch_size) * batch_size, batch_size):
        index = order[start:start + batch_size]
        yield x[index], y[index]


def test_batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """``x`` in order, in batches of ``batch_size``; the last may be shorter."""
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]
