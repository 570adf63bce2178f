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
