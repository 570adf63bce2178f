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
    assert r["differs_from_benchmark"] == ["1 epoch, not 10", "2000 of 50000 training samples"]


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


def _with(text_changes: dict, nested: str = "") -> str:
    """An ok record as JSON text with fields replaced by JSON texts (to write NaN, Infinity, true)."""
    data = _ok(environment={"device": "cpu", "cpu": "Test CPU", "threads": 2, "cpu_count": 2})
    text = json.dumps(data)
    for name, value in text_changes.items():
        key = f'"{name}": '
        if key in text:
            start = text.index(key) + len(key)
            end = start + len(json.dumps(data[name] if name in data else data["environment"][name]))
            text = text[:start] + value + text[end:]
        else:
            text = text[:-1] + f', {key}{value}' + "}"
    return text


@pytest.mark.parametrize("field, value, expected", [
    ("train_seconds", "Infinity", "field train_seconds is Infinity; expected a finite number"),
    ("train_seconds", "NaN", "field train_seconds is NaN"),
    ("first_epoch_seconds", "-Infinity", "field first_epoch_seconds is -Infinity"),
    ("test_accuracy", "true", "field test_accuracy is true"),
    ("train_seconds", "-3.0", "field train_seconds is -3.0"),
    ("first_epoch_seconds", "0", "field first_epoch_seconds is 0"),
    ("median_epoch_seconds", '"fast"', 'field median_epoch_seconds is "fast"'),
    ("throughput_per_second", "false", "field throughput_per_second is false"),
    ("feeding_share", "-0.5", "field feeding_share is -0.5"),
    ("epochs", "2.5", "field epochs is 2.5"),
    ("epochs", "true", "field epochs is true"),
    ("batch_size", "0", "field batch_size is 0"),
    ("train_samples", '"many"', 'field train_samples is "many"'),
    ("test_samples", "-1", "field test_samples is -1"),
    ("seed", "-1", "field seed is -1"),
    ("parameters", "1.5", "field parameters is 1.5"),
    ("phases", '{"train": -1.0}', "field phases is"),
    ("epoch_seconds", '[1.0, "x"]', "field epoch_seconds is"),
    ("framework", "42", "field framework is 42"),
    ("api", '["a"]', "field api is"),
    ("variant", "null", "field variant is null"),
    ("timestamp", "{}", "field timestamp is {}"),
    ("benchmark", '"mnist"', 'field benchmark is "mnist"'),
    ("benchmark", '["cifar"]', 'field benchmark is ["cifar"]'),
    ("status", '{"ok": 1}', 'field status is {"ok": 1}'),
    ("environment", "[1]", "field environment is [1]"),
    ("cpu_count", "true", "field environment.cpu_count is true"),
    ("threads", "0", "field environment.threads is 0"),
    ("device", "3", "field environment.device is 3"),
    ("kernel_environment", '{"kind": 1}', "field kernel_environment.kind is 1"),
    ("data", '"x"', 'field data is "x"'),
])
def test_every_field_the_report_reads_is_of_its_kind_and_in_range(tmp_path, field, value, expected):
    path = tmp_path / "bad.json"
    path.write_text(_with({field: value}))
    with pytest.raises(ValueError) as error:
        record.read(path)
    message = str(error.value)
    assert "bad.json" in message and expected in message and "\n" not in message
    if "field" in expected:
        assert "expected" in message  # what the field should have been


@pytest.mark.parametrize("status, error", [("failed", "7"), ("interrupted", '["x"]')])
def test_the_error_of_a_failed_record_is_a_text(tmp_path, status, error):
    data = {**_ok(), "status": status}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**data, "error": json.loads(error)}))
    with pytest.raises(ValueError, match="field error is"):
        record.read(path)


def test_a_record_the_kernels_write_with_numpy_values_is_still_valid(tmp_path):
    import numpy as np

    timing = {"train_seconds": np.float32(3.5), "first_epoch_seconds": np.float64(2.0),
              "epoch_seconds": [np.float32(2.0), np.float32(1.5)], "throughput_per_second": np.float32(100.0),
              "feeding_share": np.float64(0.0)}
    path = record.write(tmp_path / "r.json", _ok(accuracy=np.float32(0.5), timing=timing,
                                                 parameters=np.int64(7), epochs=np.int64(2)))
    assert record.read(path)["parameters"] == 7
    with pytest.raises(ValueError, match="field test_accuracy is true"):
        record.write(tmp_path / "b.json", _ok(accuracy=np.bool_(True)))


def test_a_record_linked_to_a_device_is_refused_without_reading_it(tmp_path):
    link = tmp_path / "z.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"z\.json: not a regular file \(a character device\)"):
        record.read(link)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os
    import threading

    fifo = tmp_path / "f.json"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            record.read(fifo)
        except ValueError as error:
            outcome.append(str(error))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # free the blocked reader, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert outcome and "not a regular file (a FIFO)" in outcome[0]


def test_a_record_larger_than_the_limit_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.truncate(record.RECORD_LIMIT + 1)  # sparse: no space taken
    with pytest.raises(ValueError, match=r"big\.json: larger than 4 MiB"):
        record.read(path)
    assert len(record.read_limited(path, 10 ** 9)) == record.RECORD_LIMIT + 1  # a larger limit reads it


def test_record_reads_and_validates_on_python_36(tmp_path):
    import subprocess

    from common import REPOSITORY
    from harness import interpreters

    python = interpreters.find_python("3.6")  # the kernels of CNTK run on it
    if python is None:
        pytest.skip("no Python 3.6 interpreter here ($ROSETTA_PYTHON36, python3.6 or pyenv)")
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_ok()))
    bad.write_text(_with({"train_seconds": "Infinity"}))
    code = ("import sys; from common import record\n"
            "assert sys.version_info[:2] == (3, 6), sys.version\n"
            f"record.read({str(good)!r})\n"
            f"try:\n    record.read({str(bad)!r})\nexcept ValueError as e:\n    print(e)\n")
    done = subprocess.run([python, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "field train_seconds is Infinity" in done.stdout


def test_write_text_that_fails_keeps_the_old_file(tmp_path):
    path = record.write_text(tmp_path / "table.md", "old\n")
    with pytest.raises(UnicodeEncodeError):
        record.write_text(path, "half \ud800 written")  # fails inside the write, as a full disk would
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.md"]
