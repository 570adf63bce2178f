import pytest

from common import timing


def test_timer_synchronises_at_every_mark_and_sums_epochs(monkeypatch):
    clock = iter([10.0, 13.0, 15.0, 17.5])  # start, then three epoch ends
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    syncs = []
    timer = timing.Timer(sync=lambda: syncs.append(1))
    timer.start()
    assert [timer.epoch_done() for _ in range(3)] == [3.0, 2.0, 2.5]
    assert len(syncs) == 4
    summary = timer.summary(samples_per_epoch=1000)
    assert summary["train_seconds"] == 7.5
    assert summary["first_epoch_seconds"] == 3.0
    assert summary["median_epoch_seconds"] == 2.25
    assert summary["throughput_per_second"] == pytest.approx(1000 / 2.25)
    assert summary["epoch_seconds"] == [3.0, 2.0, 2.5]
    assert summary["feeding_seconds"] == [0.0, 0.0, 0.0]  # no batch was drawn
    assert summary["feeding_share"] == 0.0


def test_single_epoch_throughput_uses_that_epoch(monkeypatch):
    clock = iter([0.0, 4.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    timer = timing.Timer()
    timer.start()
    timer.epoch_done()
    summary = timer.summary(200)
    assert summary["median_epoch_seconds"] is None
    assert summary["throughput_per_second"] == 50.0


def test_epoch_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="start"):
        timing.Timer().epoch_done()


def test_summary_reports_feeding_per_epoch(monkeypatch):
    import time

    import numpy as np

    from common import iterator

    class SlowX:  # every gather sleeps 10 ms
        def __len__(self):
            return 100

        def __getitem__(self, index):
            time.sleep(0.01)
            return np.asarray(index)

    monkeypatch.setattr(iterator, "AHEAD", 0)
    x = SlowX()
    timer = timing.Timer()
    timer.start()
    for epoch in range(2):
        for _ in iterator.train_batches(x, np.arange(100), 20, 0, epoch):
            time.sleep(0.005)  # the step
        timer.epoch_done()
    summary = timer.summary(100)
    assert len(summary["feeding_seconds"]) == 2
    for fed in summary["feeding_seconds"]:
        assert 0.05 <= fed < 0.05 + 0.25  # five gathers of 10 ms each epoch
    assert sum(summary["feeding_seconds"]) <= summary["train_seconds"]
    assert summary["feeding_share"] == pytest.approx(sum(summary["feeding_seconds"]) / summary["train_seconds"])
    assert 0 < summary["feeding_share"] < 1


class _AsyncEngine:
    """Like MXNet's engine or a CUDA stream: a step returns at once and its work is queued;
    a copy to the device, and the sync, wait for the queued work first."""

    def __init__(self, copy_seconds):
        import time
        self.time, self.queued, self.copy_seconds, self.copied = time, 0.0, copy_seconds, []

    def step(self, seconds):
        self.queued += seconds

    def sync(self):
        self.time.sleep(self.queued)
        self.queued = 0.0

    def copy(self, x_batch, y_batch):
        self.sync()
        self.time.sleep(self.copy_seconds)
        self.copied.append((x_batch.copy(), y_batch.copy()))
        return x_batch, y_batch


def test_the_copy_is_timed_apart_without_the_queued_step():
    import numpy as np

    from common import iterator

    engine = _AsyncEngine(copy_seconds=0.002)
    timer = timing.Timer(sync=engine.sync)
    x, y = np.arange(200).reshape(100, 2), np.arange(100)
    timer.start()
    for epoch in range(2):
        for xb, yb in iterator.train_batches(x, y, 10, 7, epoch):
            engine.step(0.02)  # queued work that a copy inside the loop would wait for
        timer.epoch_done()
    engine.step(0.02)  # left queued when the measurement starts
    timer.measure_copy(engine.copy, x, y, 10, seed=7, batches=1)
    assert 0.002 <= timer.copy_seconds_per_batch < 0.015  # not the 20 ms step
    engine.copied.clear()
    timer.measure_copy(engine.copy, x, y, 10, seed=7, batches=4)
    assert 0.002 <= timer.copy_seconds_per_batch < 0.015
    order = iterator.epoch_order(100, 7, 0)
    assert [c[1].tolist() for c in engine.copied] == [y[order[k * 10:(k + 1) * 10]].tolist()
                                                      for k in range(4)]  # epoch 0's first batches
    summary = timer.summary(100)
    assert summary["copy_seconds_per_batch"] == timer.copy_seconds_per_batch
    assert summary["copy_seconds_per_epoch"] == pytest.approx(10 * timer.copy_seconds_per_batch)
    expected = (sum(summary["feeding_seconds"]) + 2 * summary["copy_seconds_per_epoch"]) / summary["train_seconds"]
    assert summary["feeding_share"] == pytest.approx(expected)
    assert summary["feeding_share"] < 0.5  # a clock around an in-loop copy would give ~1


def test_without_a_copy_measurement_the_summary_says_none():
    timer = timing.Timer()
    timer.start()
    timer.epoch_done()
    summary = timer.summary(10)
    assert summary["copy_seconds_per_batch"] is None and summary["copy_seconds_per_epoch"] is None


def test_measure_copy_needs_a_batch():
    import numpy as np

    timer = timing.Timer()
    with pytest.raises(ValueError, match="no batch of 20"):
        timer.measure_copy(lambda a, b: None, np.zeros((5, 1)), np.zeros(5), 20, seed=0)
    with pytest.raises(ValueError, match="at least 1 batch"):
        timer.measure_copy(lambda a, b: None, np.zeros((5, 1)), np.zeros(5), 2, seed=0, batches=0)
