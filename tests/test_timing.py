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
