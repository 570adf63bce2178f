"""The report is generated from the records alone: every figure in it comes from one."""
import re

import pandas as pd
import pytest

from common import record
from harness import columns, records, report


def _write(results, name, **fields):
    defaults = dict(framework="PyTorch", api="nn.Module", benchmark="cifar", epochs=10, batch_size=64,
                    train_samples=50_000, test_samples=10_000, seed=42)
    defaults.update(fields)
    record.write(results / "records" / f"{name}.json", record.build(**defaults))


@pytest.fixture
def results(tmp_path):
    cpu = {"device": "cpu", "cpu": "Test CPU", "threads": 2, "versions": {"fw": "1.0"}, "python": "3.11"}
    gpu = {"device": "cuda", "gpu": "Test GPU", "driver": "555", "cuda": "12.4", "cudnn": "90100",
           "versions": {"torch": "2.13"}, "python": "3.11"}
    _write(tmp_path, "0-cpu", accuracy=0.5, timing={"train_seconds": 999.0}, environment=cpu)
    _write(tmp_path, "1-old", accuracy=0.5, timing={"train_seconds": 888.0}, environment=gpu)
    _write(tmp_path, "2-new", accuracy=0.7731, environment=gpu,
           timing={"train_seconds": 123.456, "first_epoch_seconds": 20.5, "throughput_per_second": 4321.0})
    _write(tmp_path, "3-fast", framework="Fastest", accuracy=0.761, environment=gpu,
           timing={"train_seconds": 61.7, "first_epoch_seconds": 7.0, "throughput_per_second": 9000.0})
    _write(tmp_path, "4-broken", framework="Broken", status="failed", error="ImportError: no module x",
           environment={**gpu, "versions": {}})
    _write(tmp_path, "5-imdb", benchmark="imdb", epochs=1, train_samples=2000, test_samples=25_000,
           accuracy=0.8, timing={"train_seconds": 5.0}, environment=cpu,
           data={"source": "local copy", "path": "/data/imdb.npz", "sha256": "ab"})
    return tmp_path


def _section(readme: str, device: str, benchmark: str) -> str:
    """The text of one device's tables for one benchmark."""
    part = readme.split(f"\n## {device}\n")[1].split("\n## ")[0]
    title = {"cifar": "### CNN on CIFAR-10", "imdb": "### GRU on IMDB"}[benchmark]
    return part.split(title)[1].split("\n### ")[0]


def _tables(section: str) -> tuple:
    """The main table's rows and the setup table's rows of a section, each {framework: line}."""
    tables, current = [], None
    for line in section.splitlines():
        if line.startswith("| Framework"):
            current = {}
            tables.append(current)
        elif line.startswith("| ") and current is not None and not line.startswith("|---"):
            current[line.split(" | ")[0][2:]] = line
        elif not line.startswith("|"):
            current = None
    return tuple(tables)


def test_tables_come_from_the_latest_records(results):
    readme = report.render(results).read_text()
    cifar = _section(readme, "Test GPU", "cifar")
    main, setup = _tables(cifar)
    assert list(main) == ["Fastest", "PyTorch", "Broken"] == list(setup)  # fastest first
    fastest, pytorch, broken = main.values()
    assert "| 77.3 % | 123.5 |" in pytorch and "4,321" in pytorch and "| 1 |" in pytorch
    assert "2.00×" in pytorch and "1.00×" in fastest  # 123.456 / 61.7
    assert "888" not in readme  # the older PyTorch record is not the one shown
    assert "| 20.5 | Test GPU (driver 555, CUDA 12.4, cuDNN 90100) |" in setup["PyTorch"]
    assert "**failed**: ImportError: no module x" in broken and "| 0 |" in broken
    assert "Data: full." in cifar


def test_subset_cpu_and_local_copy_runs_are_marked(results):
    readme = report.render(results).read_text()
    imdb = _section(readme, "CPU: Test CPU", "imdb")
    assert "Data: subset: 1 epoch, not 3; 2000 of 25000 training samples" in imdb
    assert "local copy imdb.npz" in imdb
    assert "CPU: Test CPU (2 threads)" in _tables(imdb)[1]["PyTorch"]


def test_csv_holds_every_record_and_plots_are_drawn(results):
    report.render(results)
    frame = pd.read_csv(results / "results.csv")
    assert len(frame) == 6
    assert sorted(frame["train_seconds"].dropna().tolist()) == [5.0, 61.7, 123.456, 888.0, 999.0]
    for name in ("cifar-test-gpu", "cifar-cpu-test-cpu", "imdb-cpu-test-cpu"):
        assert (results / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert not (results / "imdb-test-gpu.png").exists()  # no IMDB run on the GPU


def test_no_records_gives_an_empty_report(tmp_path):
    readme = report.render(tmp_path).read_text()
    assert readme.count("No runs yet.") == 1


@pytest.mark.parametrize("content", ['{"schema_version": 1}', '{"truncated', "[1, 2]", "42", "\xff\xfe"])
def test_an_unreadable_record_is_skipped_with_a_warning_naming_it(results, capsys, content):
    readable = len(records.load_records(results))
    (results / "records" / "6-bad.json").write_bytes(content.encode("latin-1"))
    readme = report.render(results).read_text()
    assert "6-bad.json" in capsys.readouterr().err
    assert f"from the {readable} JSON record(s)" in readme and "77.3 %" in readme  # the others still count


# the device of the fixture's newer PyTorch run: a later run on the same machine is compared with it
SAME_GPU = {"device": "cuda", "gpu": "Test GPU", "driver": "555", "cuda": "12.4", "cudnn": "90100",
            "versions": {}, "python": "3.11"}


def _cifar_rows(readme: str) -> dict:
    return _tables(readme.split("## CNN on CIFAR-10")[1].split("## GRU on IMDB")[0])[0]


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_a_later_failed_run_does_not_hide_the_ok_one_and_is_noted(results, status):
    _write(results, "7-nonsense", status=status, error="ValueError: nonsense parameters", environment=SAME_GPU)
    rows = _cifar_rows(report.render(results).read_text())
    assert "77.3 %" in rows["PyTorch"] and "123.5" in rows["PyTorch"]  # the latest ok run
    assert f"{status}: ValueError: nonsense parameters" in rows["PyTorch"]  # and the note beside it
    assert "later" not in rows["Fastest"]
    assert "**failed**: ImportError: no module x" in rows["Broken"]  # no ok run: its latest run


def test_the_plot_shows_exactly_the_rows_the_table_shows(results, monkeypatch):
    import matplotlib.axes

    drawn = {}
    original = matplotlib.axes.Axes.barh

    def spy(self, labels, widths, **kwargs):
        drawn[self.get_title() or len(drawn)] = dict(zip(labels, widths))
        return original(self, labels, widths, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "barh", spy)
    _write(results, "7-nonsense", status="failed", error="ValueError: nonsense parameters", environment=SAME_GPU)
    rows = _cifar_rows(report.render(results).read_text())
    timed = {name: float(row.split(" | ")[3]) for name, row in rows.items() if row.split(" | ")[3] != "–"}
    assert timed == {"Fastest": 61.7, "PyTorch": 123.5}
    bars = next(iter(drawn.values()))
    assert {name: round(seconds, 1) for name, seconds in bars.items()} == timed


def test_a_long_error_keeps_its_useful_end_in_the_table(results):
    traceback = "Traceback (most recent call last): " + "File x.py, line 1, in f; " * 40 + "DeadKernelError: died"
    _write(results, "8-dead", framework="Dead", status="failed", error=traceback, environment=SAME_GPU)
    assert "DeadKernelError: died" in _cifar_rows(report.render(results).read_text())["Dead"]


def test_a_framework_failing_parity_is_flagged_in_its_row(results):
    import json

    (results / "parity").mkdir()
    for stamp, framework, equivalent, message in [
            ("20260101-000000", "PyTorch", False, "not equivalent: logits differ by 0.3"),
            ("20260101-000000", "Fastest", True, "equivalent: logits 1e-07"),
            ("20250101-000000", "Broken", True, "equivalent: an older run"),
            ("20260101-000001", "Broken", False, "not equivalent: weights differ by 0.2")]:
        (results / "parity" / f"{stamp}-{framework}-cifar.json").write_text(json.dumps({
            "framework": framework, "benchmark": "cifar", "status": "ok", "equivalent": equivalent,
            "message": message}))
    rows = _tables(_section(report.render(results).read_text(), "Test GPU", "cifar"))[0]
    assert "| **no**: not equivalent: logits differ by 0.3 |" in rows["PyTorch"]
    assert "| yes |" in rows["Fastest"]  # a one-step record: no steps to show
    assert "**no**: not equivalent: weights differ by 0.2" in rows["Broken"]  # the latest parity run counts


def test_an_equivalent_row_shows_its_differences_after_the_first_step_and_the_last(results):
    import json

    (results / "parity").mkdir()
    checks = [{"output": "logits", "max_abs_difference": 1.4e-7}, {"output": "weights", "max_abs_difference": 5.3e-7},
              {"output": "final_weights", "max_abs_difference": 3.1e-5}]
    (results / "parity" / "20260101-000000-fastest-cifar.json").write_text(json.dumps({
        "framework": "Fastest", "benchmark": "cifar", "status": "ok", "equivalent": True, "steps": 5,
        "checks": checks, "message": "equivalent"}))
    rows = _cifar_rows(report.render(results).read_text())
    assert "| yes: weights within 5e-07 after step 1, 3e-05 after step 5 |" in rows["Fastest"]


def test_each_device_has_tables_of_its_own_and_is_never_ranked_with_another(results):
    readme = report.render(results).read_text()
    gpu, cpu = _section(readme, "Test GPU", "cifar"), _section(readme, "CPU: Test CPU", "cifar")
    assert "999" not in gpu and "123.5" in gpu  # the CPU run is not in the GPU table
    cpu_rows = list(_tables(cpu)[0].values())
    assert len(cpu_rows) == 1 and "999.0" in cpu_rows[0] and "1.00×" in cpu_rows[0]  # fastest on its own device
    assert "No runs on this device." in _section(readme, "Test GPU", "imdb")
    # GPUs come first, and the list at the top says when and where each device was measured
    assert readme.index("\n## Test GPU\n") < readme.index("\n## CPU: Test CPU\n")
    assert "- [Test GPU](#test-gpu): 3 run(s) on 20" in readme
    assert "- [CPU: Test CPU](#cpu-test-cpu): 2 run(s) on 20" in readme


def test_the_repository_readme_lists_the_devices_between_its_markers(results, tmp_path):
    readme = tmp_path / "clone" / "README.md"  # results/README.md is tmp_path's own
    readme.parent.mkdir()
    readme.write_text(f"# Project\n\n## Results\n{report.README_BEGIN}\nold text\n{report.README_END}\nafter\n")
    report.render(results, readme=readme)
    text = readme.read_text()
    assert "old text" not in text and text.startswith("# Project") and text.endswith("after\n")
    block = text.split(report.README_BEGIN)[1].split(report.README_END)[0]
    assert "- [Test GPU](results/README.md#test-gpu): 3 run(s)" in block
    assert "- [CPU: Test CPU](results/README.md#cpu-test-cpu)" in block
    plain = tmp_path / "clone" / "OTHER.md"
    plain.write_text("no markers\n")
    assert report.update_readme(plain, ["x"]) is False and plain.read_text() == "no markers\n"


def test_an_existing_environment_is_named_in_the_version_column(tmp_path):
    env = {"device": "cuda", "gpu": "G", "driver": "1", "cuda": "13", "cudnn": "9", "versions": {"torch": "2.11.0"}}
    _write(tmp_path, "1-existing", accuracy=0.7, timing={"train_seconds": 50.0}, environment=env,
           kernel_environment={"kind": "existing", "python": "/opt/venv/bin/python3", "versions": "torch 2.11.0"})
    _write(tmp_path, "2-built", framework="Built", accuracy=0.7, timing={"train_seconds": 60.0}, environment=env,
           kernel_environment={"kind": "built", "spec": "harness/envs/pytorch-cuda.txt", "flavour": "cuda"})
    table = _section(report.render(tmp_path).read_text(), "G", "cifar")
    assert "torch 2.11.0 (existing environment venv/bin/python3)" in table  # its folder, not this machine's path
    assert "(built from pytorch-cuda.txt)" in table


def _repeats(results, framework, seconds, accuracies, environment, **fields):
    for i, (time, accuracy) in enumerate(zip(seconds, accuracies)):
        _write(results, f"9-{framework}-{i}", framework=framework, seed=42 + i, accuracy=accuracy,
               timing={"train_seconds": time, "first_epoch_seconds": time / 4, "throughput_per_second": 1000.0,
                       "feeding_seconds": [0.01 * time], "feeding_share": 0.01 * (i + 1)},
               environment=environment, **fields)


H200 = {"device": "cuda", "gpu": "NVIDIA H200", "driver": "580", "cuda": "13.0", "cudnn": "91000",
        "versions": {}, "python": "3.12", "git_commit": "a" * 40}


def test_repeats_show_the_median_and_the_spread_and_the_plot_draws_it(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = {}
    original = matplotlib.axes.Axes.barh

    def spy(self, labels, widths, **kwargs):
        drawn.update(dict(zip(labels, zip(widths, kwargs["xerr"][0], kwargs["xerr"][1]))))
        return original(self, labels, widths, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "barh", spy)
    _repeats(tmp_path, "PyTorch", [10.0, 14.0, 11.0], [0.70, 0.74, 0.71], H200)
    _repeats(tmp_path, "JAX", [20.0, 21.0, 26.0], [0.72, 0.69, 0.73], H200)
    _write(tmp_path, "0-other-sizes", framework="JAX", seed=44, accuracy=0.1, epochs=1,  # an older series
           timing={"train_seconds": 1.0}, environment=H200)
    main, setup, older, _ = _tables(_section(report.render(tmp_path).read_text(), "NVIDIA H200", "cifar"))
    assert "| 3 (seeds 42–44) | 71.0 % (70.0–74.0) | 11.0 (10.0–14.0) | – | 1.00× |" in main["PyTorch"]
    assert list(older) == ["JAX"] and "| 1 | 10.0 % | 1.0 | – | 1.00× |" in older["JAX"]  # apart: 1 epoch, not 10
    assert "| 3 (seeds 42–44) | 72.0 % (69.0–73.0) | 21.0 (20.0–26.0) | – | 1.91× |" in main["JAX"]
    assert "| 2.0 % |" in main["PyTorch"]  # the median feeding share
    assert "| 2.8 (2.5–3.5) |" in setup["PyTorch"]  # the first epoch, also as median and spread
    assert drawn["PyTorch"] == (11.0, 1.0, 3.0) and drawn["JAX"] == (21.0, 1.0, 5.0)


def test_the_steady_rate_is_shown_in_flops_and_as_a_share_of_a_known_gpus_peak(tmp_path):
    from common import flops

    _repeats(tmp_path, "PyTorch", [10.0], [0.7], H200)
    _repeats(tmp_path, "Other", [10.0], [0.7], {**H200, "gpu": "Unknown GPU 9000"})
    rows = _cifar_rows(report.render(tmp_path).read_text())
    rate = 1000.0 * flops.per_sample("cifar", training=True)  # 1,000 images/s
    share = flops.share_of_peak(rate, "NVIDIA H200", "fp32")
    assert f"| {rate / 1e9:.2f} GFLOP/s ({share * 100:.1f} % of FP32 peak) |" in rows["PyTorch"]
    other = _tables(report.render(tmp_path).read_text().split("## Unknown GPU 9000")[1])[0]["Other"]
    assert f"| {rate / 1e9:.2f} GFLOP/s |" in other  # no peak known: the rate alone


def test_the_harness_overhead_is_stated_as_a_share_of_the_wall_time(tmp_path):
    parts = {"kernel_start": 2.0, "imports": 3.0, "environment": 0.0, "data": 4.0, "model": 1.0, "optimiser": 0.0,
             "train": 60.0, "predict": 20.0, "evaluate": 0.0, "parity": 0.0, "harness": 100.0, "other": 10.0}
    _write(tmp_path, "1-a", accuracy=0.7, timing={"train_seconds": 58.0}, environment=H200, phases=parts)
    _write(tmp_path, "2-b", framework="B", accuracy=0.7, timing={"train_seconds": 58.0}, environment=H200,
           phases={**parts, "harness": 300.0, "other": 210.0})
    readme = report.render(tmp_path).read_text()
    assert ("the 2 run(s) of this table with phase times took 400 s from the quiet-machine check to the kernel's "
            "exit, 160 s of it training and prediction. The harness's own share is 58.0 % (quiet-machine check and "
            "calibration 0 s, kernel start 4 s, kernel stop 0 s, data 8 s, papermill and the rest 220 s); the "
            "frameworks' set-up took 2.0 % (imports 6 s, model and training step 2 s, evaluation, parity and "
            "export 0 s); in all, the overhead is 60 % of the wall time.") in readme


def _notes(row: str) -> str:
    """The Notes cell, the last of a main-table row."""
    return row.removesuffix(" |").rsplit(" | ", 1)[1]


def test_a_row_without_a_later_run_has_an_empty_notes_cell(results, monkeypatch):
    """A missing note is None in one pandas and NaN in another (pandas 3's string columns): either way
    the Notes cell stays empty and the plot adds no note, and only the row with a later run has one."""
    import matplotlib.axes

    texts = []
    original = matplotlib.axes.Axes.text

    def spy(self, x, y, text, *args, **kwargs):
        texts.append(text)
        return original(self, x, y, text, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "text", spy)
    _write(results, "7-nonsense", status="failed", error="ValueError: nonsense parameters", environment=SAME_GPU)
    readme = report.render(results).read_text()
    rows = _cifar_rows(readme)
    assert _notes(rows["Fastest"]) == "" and rows["Fastest"].endswith("| not checked |  |")
    assert _notes(rows["PyTorch"]).startswith("**a later run (") and \
        _notes(rows["PyTorch"]).endswith(") failed: ValueError: nonsense parameters**")
    assert "****" not in readme
    noted = [text for text in texts if "a later run did not end ok" in text]
    assert len(noted) == 1 and "77.3 % accuracy" in noted[0]  # PyTorch's bar only
    assert len([text for text in texts if "% accuracy" in text]) == 4  # Fastest, PyTorch, and the two CPU plots


def test_runs_of_different_configurations_are_never_ranked_together(tmp_path, monkeypatch):
    """A 2-epoch series, then 1-epoch runs on a smaller subset, then runs asking for one thread:
    each configuration its own table, the newest first, each ranked on its own; the plot draws the
    newest configuration only."""
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.barh

    def spy(self, labels, widths, **kwargs):
        drawn.append(list(labels))
        return original(self, labels, widths, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "barh", spy)
    sizes = dict(epochs=2, train_samples=4000, test_samples=2000)
    for name in ("A", "B"):
        _write(tmp_path, f"1-{name}", framework=name, accuracy=0.3, timing={"train_seconds": 100.0 if name == "A"
               else 50.0}, environment=H200, **sizes)
    small = dict(epochs=1, train_samples=2000, test_samples=1000)
    _write(tmp_path, "2-A", framework="A", accuracy=0.2, timing={"train_seconds": 10.0}, environment=H200, **small)
    _write(tmp_path, "3-C", framework="C", accuracy=0.2, timing={"train_seconds": 40.0}, environment=H200, **small)
    _write(tmp_path, "4-C", framework="C", status="failed", error="RuntimeError: out of memory",
           environment={**H200, "threads_requested": 1}, **small)
    readme = report.render(tmp_path).read_text()
    section = _section(readme, "NVIDIA H200", "cifar")
    one_thread, _, small_table, _, large, _ = _tables(section)
    assert section.index("Configuration: 1 epoch, batch 64, 2,000 training and 1,000 test samples, 1 thread.") \
        < section.index("#### Earlier configuration: 1 epoch, batch 64, 2,000 training and 1,000 test samples, "
                        "every core") \
        < section.index("#### Earlier configuration: 2 epochs, batch 64, 4,000 training and 2,000 test samples, "
                        "every core")
    assert list(one_thread) == ["C"] and "**failed**: RuntimeError: out of memory" in one_thread["C"]
    assert list(small_table) == ["A", "C"] and "| 1.00× |" in small_table["A"] and "| 4.00× |" in small_table["C"]
    assert "later" not in small_table["C"]  # a run of another configuration is no later run of this one
    assert list(large) == ["B", "A"] and "| 1.00× |" in large["B"] and "| 2.00× |" in large["A"]
    assert drawn == []  # the newest configuration has no ok run: no plot
    assert "and 4 row(s) of earlier configurations, in tables of their own" in readme

    _write(tmp_path, "5-C", framework="C", accuracy=0.2, timing={"train_seconds": 30.0},
           environment={**H200, "threads_requested": 1}, **small)
    report.render(tmp_path)
    assert drawn == [["C"]]  # only the newest configuration's runs


def test_onnx_checks_follow_the_configuration_of_their_run(tmp_path):
    import json

    _write(tmp_path, "1-A", framework="A", accuracy=0.3, timing={"train_seconds": 100.0}, environment=H200, epochs=2,
           notebook="records/1-A.ipynb")
    _write(tmp_path, "2-B", framework="B", accuracy=0.3, timing={"train_seconds": 10.0}, environment=H200, epochs=1,
           notebook="records/2-B.ipynb")
    folder = records.onnx_dir(tmp_path)
    folder.mkdir()
    for name in ("A", "B"):
        (folder / f"{name}.json").write_text(json.dumps({
            "kind": "onnx", "framework": name, "benchmark": "cifar", "device": "cuda", "device_group": "NVIDIA H200",
            "status": "failed", "ok": False, "message": f"the check of {name}", "run": f"records/1-{name}.ipynb"
            if name == "A" else "records/2-B.ipynb"}))
    onnx = report.render(tmp_path).read_text().split("### Exported to ONNX")[1]
    main, earlier = onnx.split("#### Exported from runs of an earlier configuration: CNN on CIFAR-10, 2 epochs, "
                               "batch 64, 50,000 training and 10,000 test samples, every core")
    assert "the check of B" in main and "the check of A" not in main
    assert "the check of A" in earlier and "the check of B" not in earlier


def _render_within(results, seconds: float = 60):
    """``report.render(results)`` in a thread, failing where it has not returned within ``seconds`` (a
    FIFO read blocks); returns the README's text."""
    import threading

    done = []
    worker = threading.Thread(target=lambda: done.append(report.render(results)), daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    for fifo in [p for p in (results / "records").glob("*.json") if p.is_fifo()]:
        if worker.is_alive():  # free the blocked reader
            import os
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
    assert not worker.is_alive() and done, "the report did not finish"
    return done[0].read_text()


def _hostile(path, kind: str) -> str:
    """Writes a hostile record of ``kind`` at ``path``; returns what its warning must say."""
    import json
    import os

    good = record.build(framework="Hostile", api="x", benchmark="cifar", accuracy=0.5, timing={"train_seconds": 5.0},
                        epochs=10, batch_size=64, train_samples=50_000, test_samples=10_000, seed=42,
                        environment={"device": "cpu", "cpu": "Test CPU"})
    if kind == "infinite time":
        path.write_text(json.dumps({**good, "train_seconds": float("inf")}))
        return "field train_seconds is Infinity"
    if kind == "accuracy true":
        path.write_text(json.dumps({**good, "test_accuracy": True}))
        return "field test_accuracy is true"
    if kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
        return "not a regular file (a character device)"
    if kind == "fifo":
        os.mkfifo(path)
        return "not a regular file (a FIFO)"
    if kind == "folder":
        path.mkdir()
        return "not a regular file (a folder)"
    with open(path, "wb") as f:  # too large: sparse, no space taken
        f.truncate(record.RECORD_LIMIT + 1)
    return "larger than 4 MiB"


@pytest.mark.parametrize("kind", ["infinite time", "accuracy true", "link to /dev/zero", "fifo", "folder", "too large"])
def test_a_hostile_record_is_skipped_with_a_warning_and_the_table_still_written(results, capsys, kind):
    readable = len(records.load_records(results))
    (results / "README.md").write_text("stale")
    expected = _hostile(results / "records" / "9-hostile.json", kind)
    readme = _render_within(results)
    warnings = capsys.readouterr().err
    assert f"warning: skipping {results / 'records' / '9-hostile.json'}: " in warnings and expected in warnings
    assert f"from the {readable} JSON record(s)" in readme and "77.3 %" in readme and "Hostile" not in readme
    assert (results / "cifar-test-gpu.png").is_file()  # the plots are drawn too


def _unescaped_pipes(line: str) -> int:
    """The cell separators of a markdown table row: pipes not escaped by an odd number of backslashes."""
    count, backslashes = 0, 0
    for character in line:
        if character == "|" and backslashes % 2 == 0:
            count += 1
        backslashes = backslashes + 1 if character == "\\" else 0
    return count


HOSTILE_NAME = "Evil | name\\|\n## injected <script>alert(1)</script> [x](http://e.example) `c` *b* _i_"


def test_text_from_a_record_cannot_break_or_inject_into_the_markdown(tmp_path):
    hostile_gpu = {"device": "cuda", "gpu": "GPU | <img src=x> [y](http://e.example)\n## fake", "driver": "5|5",
                   "cuda": "12", "cudnn": "9", "versions": {"fw": "1.0 | <b>2</b>\n"}, "python": "3.11"}
    _write(tmp_path, "1-evil", framework=HOSTILE_NAME, api="api | [z](http://e.example)", variant="fp32 | <i>",
           accuracy=0.5, timing={"train_seconds": 10.0}, environment=hostile_gpu,
           differs_from_benchmark=["x | y"])
    _write(tmp_path, "2-evil", framework=HOSTILE_NAME + " 2", status="failed", error="bad | <script>x</script>\n| a |",
           environment=hostile_gpu)
    readme = report.render(tmp_path).read_text()
    for raw in ("<script>", "<img", "<b>", "<i>", "\n## injected", "\n## fake", "\n| a |"):
        assert raw not in readme, raw
    assert re.findall(r"(?<!\\)\]\(http", readme) == []  # no link from a record: each "](" is escaped
    tables = [line for line in readme.splitlines() if line.startswith("|")]
    assert len(tables) > 4
    header = None
    for line in tables:  # every row has as many cells as its header
        if line.startswith("| Framework"):
            header = _unescaped_pipes(line)
        assert _unescaped_pipes(line) == header, line
    assert "Evil \\| name\\\\\\| ## injected &lt;script&gt;" in readme  # shown, as text
    assert "\\*b\\* \\_i\\_" in readme  # emphasis at a word's edge is escaped
    assert readme.count("\n## GPU \\| &lt;img src=x&gt; \\[y\\](http://e.example) ## fake") == 1  # the device heading
    assert (tmp_path / "cifar-gpu-img-src-x-y-http-e-example-fake.png").is_file()


def test_an_underscore_inside_a_word_is_left_as_it_is():
    # GitHub's markdown starts no emphasis inside a word: the raw table reads like the rendered one
    assert columns.cell("Keras 2 fit_generator/predict") == "Keras 2 fit_generator/predict"
    assert columns.cell("set ROSETTA_PYTHON36 or use docker/cntk") == "set ROSETTA_PYTHON36 or use docker/cntk"
    assert columns.cell("_x_ and __init__") == "\\_x\\_ and \\_\\_init\\_\\_"


@pytest.mark.parametrize("kind", ["name with TeX", "plot path is a folder"])
def test_a_plot_that_cannot_be_drawn_is_skipped_with_a_warning_and_the_table_still_written(tmp_path, capsys, kind):
    cpu = {"device": "cpu", "cpu": "Test CPU", "threads": 2}
    name = "Odd $\\frac{$ name" if kind == "name with TeX" else "Plain"
    _write(tmp_path, "1-a", framework=name, accuracy=0.5, timing={"train_seconds": 10.0}, environment=cpu)
    _write(tmp_path, "2-b", framework="Other", benchmark="imdb", accuracy=0.6, timing={"train_seconds": 5.0},
           environment=cpu)
    if kind == "plot path is a folder":
        (tmp_path / "cifar-cpu-test-cpu.png").mkdir()
    readme = report.render(tmp_path).read_text()
    rows = _tables(_section(readme, "CPU: Test CPU", "cifar"))[0]
    assert list(rows) == [name.replace("\\", "\\\\")] and "| 50.0 % |" in rows[list(rows)[0]]
    assert (tmp_path / "imdb-cpu-test-cpu.png").is_file()  # the other plot is drawn
    if kind == "name with TeX":
        assert (tmp_path / "cifar-cpu-test-cpu.png").is_file()  # drawn, the name as it is
    else:
        assert "warning: no plot of cifar on CPU: Test CPU" in capsys.readouterr().err
        assert "cifar-cpu-test-cpu.png)" not in readme


@pytest.mark.parametrize("kind", ["parity", "onnx"])
@pytest.mark.parametrize("bad", ["not JSON", "wrong field", "benchmark a list", "link to /dev/zero"])
def test_a_bad_parity_or_onnx_record_is_skipped_with_a_warning(results, capsys, kind, bad):
    import json

    folder = results / kind
    folder.mkdir()
    good = {"framework": "Fastest", "benchmark": "cifar", "status": "ok", "equivalent": True, "message": "fine",
            "device": "cuda", "device_group": "Test GPU", "ok": False}
    (folder / "1-good.json").write_text(json.dumps(good))
    path = folder / "2-bad.json"
    if bad == "not JSON":
        path.write_text("{")
    elif bad == "benchmark a list":
        path.write_text(json.dumps({**good, "benchmark": ["cifar"]}))
    elif bad == "wrong field":
        path.write_text(json.dumps({**good, "checks": [{"output": "weights", "check": 3, "max_abs_difference": "x"}]}))
    else:
        path.symlink_to("/dev/zero")
    readme = report.render(results).read_text()
    assert f"warning: skipping {path}: " in capsys.readouterr().err
    assert "77.3 %" in readme
    if kind == "parity":
        assert "| yes |" in _cifar_rows(readme)["Fastest"]  # the good one still counts
    else:
        assert "### Exported to ONNX" in readme


def _printout(notebook) -> str:
    """The statement with which a benchmark notebook prints its accuracy and training time."""
    import json

    for cell in json.loads(notebook.read_text())["cells"]:
        found = re.search(r'print\(f"test accuracy.*?\)\n', "".join(cell["source"]) + "\n", re.DOTALL)
        if found:
            return found[0]
    raise AssertionError(f"{notebook} prints no test accuracy")


def test_every_notebooks_printout_is_what_the_report_compares_with_its_record(capsys):
    from harness import frameworks

    for framework in frameworks.FRAMEWORKS.values():
        for benchmark in framework.notebooks:
            statement = _printout(framework.notebook(benchmark))
            exec(statement, {"accuracy": 0.5461, "y_test": range(25_000), "timing_summary": {"train_seconds": 41.27}})
            match = records.PRINTED.search(capsys.readouterr().out)
            assert match and (float(match[1]), float(match[2])) == (0.5461, 41.3), framework.name


# A notebook of the selftest kernel that ends as the benchmark notebooks do: it prints its accuracy and
# training time with their statement (PRINTOUT), then writes its record.
RECORDING = """
from common import record
accuracy, y_test, timing_summary = 0.546, range(1000), {"train_seconds": 38.74, "first_epoch_seconds": 20.0}
PRINTOUT
record.write(record_path, record.build(
    framework="Fake", api="test", benchmark="cifar", accuracy=accuracy, timing=timing_summary,
    epochs=epochs or 10, batch_size=64, train_samples=train_samples or 50000, test_samples=1000, seed=seed,
    environment={"device": "cpu", "cpu": "Test CPU"}))
"""


def test_a_record_edited_to_disagree_with_its_executed_notebook_is_flagged(tmp_path, monkeypatch):
    import json

    import selftest

    from harness import frameworks, kernels, runner

    selftest.install_kernel(tmp_path, monkeypatch)
    monkeypatch.setattr(kernels, "unavailable_reason", lambda framework: None)
    body = RECORDING.replace("PRINTOUT", _printout(frameworks.FRAMEWORKS["pytorch"].notebook("cifar")))
    framework = selftest.framework(tmp_path / "recording.ipynb", body)
    results = tmp_path / "results"
    done = runner.execute(framework, "cifar", runner.RunSettings(epochs=2, train_samples=100), results)
    assert done["status"] == "ok"
    path = next((results / "records").glob("*.json"))
    assert records.printed_result(path.with_name(path.name.replace(".json", ".ipynb"))) == (0.546, 38.7)

    def notes() -> str:
        return _notes(_tables(_section(report.render(results).read_text(), "CPU: Test CPU", "cifar"))[0]["Fake"])

    assert notes() == ""  # as run: the record and its notebook agree
    edited = json.loads(path.read_text())
    path.write_text(json.dumps({**edited, "test_accuracy": 0.99}))
    assert notes() == ("**record disagrees with its executed notebook**: accuracy 99.00 % in the record, "
                       "54.60 % in the notebook")
    path.write_text(json.dumps({**edited, "train_seconds": 12.0}))
    assert notes() == ("**record disagrees with its executed notebook**: training 12.0 s in the record, "
                       "38.7 s in the notebook")
    path.write_text(json.dumps({**edited, "train_seconds": 38.71}))  # within the printout's rounding
    assert notes() == ""


@pytest.mark.parametrize("notebook", ["prints nothing comparable", "not a notebook", "missing", "link to /dev/zero"])
def test_a_notebook_with_nothing_to_compare_never_flags_its_record(results, notebook):
    import json

    path = results / "records" / "2-new.ipynb"
    if notebook == "prints nothing comparable":
        path.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": [
            {"output_type": "stream", "name": "stdout", "text": ["test accuracy high, training fast\n", 7]},
            {"output_type": "error", "ename": "X", "evalue": "test accuracy 0.1000 on 5 images, training 1.0 s"}]}]}))
    elif notebook == "not a notebook":
        path.write_text('{"cells": 5}')
    elif notebook == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    readme = report.render(results).read_text()
    assert "disagrees" not in readme and "77.3 %" in readme
