import numpy as np
import pytest

from common import iterator


def _indices(n=1000, batch=64, seed=7, epoch=0):
    x = np.arange(n)
    return [xb.copy() for xb, _ in iterator.train_batches(x, x * 10, batch, seed, epoch)]


def test_same_seed_same_batches():
    first, second = _indices(), _indices()
    assert len(first) == len(second)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_other_seed_or_epoch_other_order():
    base = np.concatenate(_indices())
    assert not np.array_equal(base, np.concatenate(_indices(seed=8)))
    assert not np.array_equal(base, np.concatenate(_indices(epoch=1)))


def test_order_depends_on_epoch_not_history():
    # epoch 3's order is the same whether or not epochs 0-2 were drawn before it
    x = np.arange(500)
    for epoch in range(3):
        list(iterator.train_batches(x, x, 32, 5, epoch))
    after = np.concatenate([b for b, _ in iterator.train_batches(x, x, 32, 5, 3)])
    fresh = np.concatenate([b for b, _ in iterator.train_batches(x, x, 32, 5, 3)])
    assert np.array_equal(after, fresh)


def test_training_batches_are_complete():
    batches = _indices(n=1000, batch=64)
    assert len(batches) == 1000 // 64 == iterator.batches_per_epoch(1000, 64)
    assert {len(b) for b in batches} == {64}


def test_each_epoch_is_a_permutation():
    for epoch in range(3):
        seen = np.concatenate(_indices(n=1000, batch=64, epoch=epoch))
        assert len(set(seen.tolist())) == len(seen)  # no sample twice
        left_out = sorted(set(range(1000)) - set(seen.tolist()))
        assert len(left_out) == 1000 % 64
        order = iterator.epoch_order(1000, 7, epoch)
        assert np.array_equal(seen, order[: len(seen)])
        assert np.array_equal(np.sort(order), np.arange(1000))


def test_labels_travel_with_their_samples():
    x = np.arange(300)
    for xb, yb in iterator.train_batches(x, x * 10, 16, 1, 0):
        assert np.array_equal(yb, xb * 10)


def test_test_batches_cover_everything_in_order():
    x = np.arange(1000)
    batches = list(iterator.test_batches(x, 64))
    assert np.array_equal(np.concatenate(batches), x)
    assert len(batches[-1]) == 1000 % 64


@pytest.mark.parametrize("batch", [0, 2000])
def test_bad_batch_size_is_refused(batch):
    x = np.arange(1000)
    with pytest.raises(ValueError, match=str(batch)):
        list(iterator.train_batches(x, x, batch, 0, 0))


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="999"):
        list(iterator.train_batches(np.arange(1000), np.arange(999), 10, 0, 0))


# --- feeding: the background thread, and the time spent waiting for batches -------

import threading
import time


def _today(x, y, batch, seed, epoch):
    """The iterator's algorithm before the background thread, written out again."""
    order = np.random.default_rng([seed, epoch]).permutation(len(x))
    return [(x[order[s:s + batch]], y[order[s:s + batch]])
            for s in range(0, len(x) // batch * batch, batch)]


class SlowX:
    """An array whose every gather sleeps ``seconds`` (and fails when it asks for sample ``fail``)."""

    def __init__(self, array, seconds, fail=None):
        self.array, self.seconds, self.fail, self.calls = array, seconds, fail, 0

    def __len__(self):
        return len(self.array)

    def __getitem__(self, index):
        self.calls += 1
        if self.fail is not None and self.fail in index:
            raise KeyError("sample %d failed" % self.fail)
        time.sleep(self.seconds)
        return self.array[index]


@pytest.mark.parametrize("ahead", [0, 1, 2, 5])
@pytest.mark.parametrize("n, batch, seed, epoch", [(1000, 64, 7, 0), (1000, 64, 7, 3), (130, 1, 0, 1),
                                                  (257, 256, 42, 2), (640, 64, 5, 0)])
def test_batches_and_their_order_are_todays(monkeypatch, ahead, n, batch, seed, epoch):
    monkeypatch.setattr(iterator, "AHEAD", ahead)
    x = np.random.default_rng(1).random((n, 3, 4, 2), dtype=np.float32)
    y = np.arange(n) * 10
    expected = _today(x, y, batch, seed, epoch)
    pauses = np.random.default_rng(2).random(len(expected)) < 0.3
    got = []
    for (xb, yb), pause in zip(iterator.train_batches(x, y, batch, seed, epoch), pauses):
        got.append((xb, yb))
        if pause:  # the thread runs ahead now and then; otherwise the consumer often gathers itself
            time.sleep(0.001)
    assert len(got) == len(expected)
    for (xb, yb), (xe, ye) in zip(got, expected):
        assert xb.dtype == xe.dtype and xb.shape == xe.shape and np.array_equal(xb, xe)
        assert np.array_equal(yb, ye)
    assert len({id(xb) for xb, _ in got}) == len(got)  # every batch its own array


def test_slow_gathers_show_as_feeding_time(monkeypatch):
    monkeypatch.setattr(iterator, "AHEAD", 0)
    x = SlowX(np.arange(200), 0.01)
    before = iterator.feeding_seconds()
    batches = list(iterator.train_batches(x, np.arange(200), 20, 0, 0))
    fed = iterator.feeding_seconds() - before
    assert len(batches) == 10 and x.calls == 10  # with no thread, each batch gathered once
    assert 0.1 <= fed < 0.1 + 0.5


def test_the_thread_gathers_while_the_consumer_trains():
    x = SlowX(np.arange(160), 0.02)
    before = iterator.feeding_seconds()
    for _ in iterator.train_batches(x, np.arange(160), 20, 0, 0):
        time.sleep(0.06)  # a step three times as long as a gather
    fed = iterator.feeding_seconds() - before
    assert fed < 0.5 * 8 * 0.02  # well under the 0.16 s the eight gathers slept


def _feeding_threads():
    return [t for t in threading.enumerate() if t.name == "rosetta-train-batches"]


def test_leaving_early_stops_the_thread():
    x = np.arange(10_000)
    batches = iterator.train_batches(x, x, 10, 0, 0)
    for _ in range(3):
        next(batches)
    batches.close()
    deadline = time.monotonic() + 5
    while _feeding_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _feeding_threads()


@pytest.mark.parametrize("ahead", [0, 2])
def test_a_failing_gather_is_raised_in_the_consumer(monkeypatch, ahead):
    monkeypatch.setattr(iterator, "AHEAD", ahead)
    third_batch = iterator.epoch_order(100, 0, 0)[20:30]
    x = SlowX(np.arange(100), 0.0, fail=third_batch[5])
    got = []
    with pytest.raises(KeyError, match="sample %d failed" % third_batch[5]):
        for xb, _ in iterator.train_batches(x, np.arange(100), 10, 0, 0):
            got.append(xb)
    assert len(got) == 2
