import json
import math

import pytest

from common import record


def _ok(**changes):
    fields = dict(framework="PyTorch", api="nn.Module", benchmark="cifar", accuracy=0.5,
                  timing={"train_seconds": 12.0, "first_epoch_seconds": 2.0}, epochs=10, batch_size=64,
                  train_samples=50_000, test_samples=10_000, seed=42)
    fields.update(changes)
    return record.build(**fields)


def test_full_run_is_not_a_subset():
    r = _ok()
    assert r["subset"] is False and r["differs_from_benchmark"] == []
    assert r["schema_version"] == record.SCHEMA_VERSION and r["model"] == "CNN"


def test_smaller_run_says_how_it_differs():
    r = _ok(epochs=1, train_samples=2000)
    assert r["subset"] is True
    assert r["differs_from_benchmark"] == ["1 epochs, not 10", "2000 of 50000 training samples"]


def test_write_then_read_round_trip(tmp_path):
    path = record.write(tmp_path / "sub" / "r.json", _ok())
    assert record.read(path)["test_accuracy"] == 0.5
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary left


def test_failed_write_keeps_the_old_record(tmp_path, monkeypatch):
    path = record.write(tmp_path / "r.json", _ok())
    before = path.read_text()

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(record.json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        record.write(path, _ok(accuracy=0.9))
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_numpy_values_are_written_as_plain_json(tmp_path):
    import numpy as np

    path = record.write(tmp_path / "r.json", _ok(accuracy=np.float64(0.25), parameters=np.int64(7)))
    loaded = json.loads(path.read_text())
    assert loaded["test_accuracy"] == 0.25 and loaded["parameters"] == 7


@pytest.mark.parametrize("change, message", [
    ({"status": "ok", "test_accuracy": 1.5}, "test_accuracy"),
    ({"status": "ok", "train_seconds": 0}, "train_seconds"),
    ({"status": "failed", "error": None}, "error"),
    ({"status": "exploded"}, "status"),
    ({"schema_version": 99}, "schema_version"),
])
def test_invalid_records_are_refused_with_file_and_field(tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**_ok(), **change}))
    with pytest.raises(ValueError, match=message) as error:
        record.read(path)
    assert "bad.json" in str(error.value)


def test_missing_fields_are_named(tmp_path):
    data = _ok()
    del data["seed"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="seed"):
        record.read(path)


def test_build_refuses_unknown_benchmark_and_status():
    with pytest.raises(ValueError, match="mnist"):
        _ok(benchmark="mnist")
    with pytest.raises(ValueError, match="bad"):
        _ok(status="bad")


def test_check_loss():
    assert record.check_loss(0.5, 0) == 0.5
    for value in (math.nan, math.inf):
        with pytest.raises(record.TrainingDiverged, match="epoch 3"):
            record.check_loss(value, 2)


def test_a_record_file_is_as_readable_as_the_notebook_beside_it(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = record.write(tmp_path / "r.json", _ok())
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_interrupted_is_a_status_and_needs_its_error():
    r = _ok(status="interrupted", error="interrupted by SIGINT (Ctrl-C)", accuracy=None)
    assert record.validate(r)["status"] == "interrupted"
    with pytest.raises(ValueError, match="needs its error"):
        record.validate(_ok(status="interrupted", accuracy=None))


def test_the_timers_feeding_fields_reach_the_record(tmp_path):
    from common import timing

    timer = timing.Timer()
    timer.start()
    timer.epoch_done()
    summary = timer.summary(50_000)
    assert {"feeding_seconds", "feeding_share"} <= set(summary)
    path = record.write(tmp_path / "r.json", _ok(timing=summary))
    loaded = record.read(path)
    assert loaded["feeding_seconds"] == summary["feeding_seconds"]
    assert loaded["feeding_share"] == summary["feeding_share"]
    assert loaded["epoch_seconds"] == summary["epoch_seconds"]


def test_a_record_from_before_the_feeding_fields_still_reads(tmp_path):
    # the fields are optional additions, so records already written keep schema version 1
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_ok()))
    assert "feeding_share" not in record.read(path) and record.SCHEMA_VERSION == 1
