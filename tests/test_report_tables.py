"""What each table says about how its runs were made, from their records: the order the repeats
ran in and the share of the harness's overhead; and text that reads the same on any machine
(no absolute path of the machine that made it, "1 epoch", "1 thread", each status once)."""
from __future__ import annotations

from common import REPOSITORY, machine, record
from harness import report

CPU = {"device": "cpu", "cpu": "Test CPU", "cpu_count": 2, "threads": 2, "versions": {"fw": "1.0"},
       "python": "3.11", "git_commit": "b" * 40}
PARTS = {"kernel_start": 1.0, "imports": 1.0, "environment": 0.0, "data": 2.0, "model": 1.0, "optimiser": 0.0,
         "train": 40.0, "predict": 5.0, "evaluate": 0.0, "parity": 0.0, "export": 0.0}


def _write(results, name, minute, framework="PyTorch", benchmark="cifar", seed=42, phases=None, written=None,
           **fields):
    """A record made at 12:MINUTE (the order the repeats ran in is read from these times); ``written``:
    fields as an older harness wrote them."""
    given = dict(epochs=2, accuracy=0.5, timing={"train_seconds": 40.0 + seed - 42}, environment=CPU)
    given.update(fields)
    made = record.build(framework=framework, api="x", benchmark=benchmark, batch_size=64, train_samples=4000,
                        test_samples=2000, seed=seed, **({"phases": phases} if phases else {}), **given)
    made.update(written or {})
    made["timestamp"] = f"2026-12-03T12:{minute:02d}:00+0000"
    record.write(results / "records" / f"{name}.json", made)


def _section(readme: str, benchmark: str) -> str:
    title = {"cifar": "### CNN on CIFAR-10", "imdb": "### GRU on IMDB"}[benchmark]
    return readme.split(title)[1].split("\n### ")[0]


def test_interleaved_repeats_are_said_so(tmp_path):
    minute = 0
    for seed in (42, 43, 44):  # what `--repeats 3` does: every framework, then every framework again
        for framework in ("PyTorch", "MXNet", "JAX"):
            _write(tmp_path, f"{minute:02d}-{framework}", minute, framework, seed=seed)
            minute += 1
    _write(tmp_path, "50-Chainer", 50, "Chainer")  # added later, once
    cifar = _section(report.render(tmp_path).read_text(), "cifar")
    assert ("Repeats interleaved: every framework once per round, 3 rounds, seeds 42–44 (from the records' "
            "times and seeds); one run each: Chainer.") in cifar


def test_repeats_back_to_back_are_said_so(tmp_path):
    minute = 0
    for framework in ("PyTorch", "MXNet"):
        for seed in (42, 43, 44):  # each framework's repeats one after another
            _write(tmp_path, f"{minute:02d}-{framework}", minute, framework, seed=seed)
            minute += 1
    cifar = _section(report.render(tmp_path).read_text(), "cifar")
    assert "Repeats back to back: each framework's runs one after another, not interleaved, seeds 42–44" in cifar
    assert "interleaved: every framework" not in cifar


def test_mixed_and_single_runs_are_said_so(tmp_path):
    for minute, (framework, seed) in enumerate([("PyTorch", 42), ("PyTorch", 43), ("MXNet", 42), ("MXNet", 43),
                                                ("PyTorch", 44), ("MXNet", 44)]):
        _write(tmp_path, f"{minute:02d}-{framework}-{seed}", minute, framework, seed=seed)
    _write(tmp_path, "30-imdb", 30, "PyTorch", benchmark="imdb")
    _write(tmp_path, "31-imdb", 31, "MXNet", benchmark="imdb")
    readme = report.render(tmp_path).read_text()
    assert "Repeats in mixed order: neither every framework once per round" in _section(readme, "cifar")
    assert "Repeats: none, one run each (seed 42)." in _section(readme, "imdb")


def test_each_table_states_its_own_overhead(tmp_path):
    """Two tables (two benchmarks) of one device: each says its own runs' overhead, none for both."""
    _write(tmp_path, "1-cifar", 1, phases={**PARTS, "harness": 100.0, "other": 50.0})  # 55 % overhead
    _write(tmp_path, "2-imdb", 2, benchmark="imdb", phases={**PARTS, "harness": 50.0, "other": 0.0})  # 10 %
    readme = report.render(tmp_path).read_text()
    device = readme.split("\n## CPU: Test CPU\n")[1]
    assert "Where the time went" not in device.split("### CNN on CIFAR-10")[0]  # no line for the device
    cifar, imdb = _section(readme, "cifar"), _section(readme, "imdb")
    assert ("the 1 run(s) of this table with phase times took 100 s from the quiet-machine check to the kernel's "
            "exit, 45 s of it training and prediction. The harness's own share is 53.0 % (quiet-machine check and "
            "calibration 0 s, kernel start 1 s, kernel stop 0 s, data 2 s, papermill and the rest 50 s); the "
            "frameworks' set-up took 2.0 % (imports 1 s, model and training step 1 s, evaluation, parity and "
            "export 0 s); in all, the overhead is 55 % of the wall time.") in cifar
    assert ("took 50 s from the quiet-machine check to the kernel's exit, 45 s of it training and prediction. The "
            "harness's own share is 6.0 %" in imdb and "in all, the overhead is 10 % of the wall time." in imdb)
    assert cifar.count("Where the time went") == 1 and imdb.count("Where the time went") == 1


def test_an_earlier_configuration_has_its_own_notes(tmp_path):
    _write(tmp_path, "1-old", 1, phases={**PARTS, "harness": 100.0, "other": 50.0})
    made = record.build(framework="PyTorch", api="x", benchmark="cifar", epochs=3, batch_size=64,
                        train_samples=4000, test_samples=2000, seed=42, accuracy=0.5, timing={"train_seconds": 9.0},
                        environment=CPU, phases={**PARTS, "harness": 60.0, "other": 10.0})
    made["timestamp"] = "2026-12-03T13:00:00+0000"
    record.write(tmp_path / "records" / "2-new.json", made)
    cifar = _section(report.render(tmp_path).read_text(), "cifar")
    latest, earlier = cifar.split("#### Earlier configuration")
    assert "took 60 s from the quiet-machine check" in latest and "took 100 s from the quiet-machine check" in earlier
    assert "Repeats: none, one run each (seed 42)." in latest and "Repeats: none" in earlier


def test_one_epoch_and_one_thread_in_the_singular():
    assert record.differs_from_benchmark("cifar", 1, 64, 4000, 2000)[0] == "1 epoch, not 10"
    assert record.differs_from_benchmark("cifar", 2, 64, 4000, 2000)[0] == "2 epochs, not 10"
    assert machine.describe({"device": "cpu", "cpu": "Test CPU", "threads": 1}) == "CPU: Test CPU (1 thread)"
    assert machine.describe({"device": "cpu", "cpu": "Test CPU", "threads": 2}) == "CPU: Test CPU (2 threads)"


def test_the_tables_and_the_csv_name_no_path_of_the_machine(tmp_path):
    """Records keep full paths (they are data); the README and results.csv name a path inside the
    repository relative to it, an interpreter by its environment, anything else by file name."""
    inside = REPOSITORY / "results" / "records" / "x.kernel.log"
    _write(tmp_path, "1-ok", 1, framework="CNTK", environment={**CPU, "threads": 1}, epochs=1,
           data={"source": "local copy", "path": "/srv/machine-x/data/imdb.npz", "sha256": "ab"},
           kernel_environment={"kind": "existing", "python": "/opt/machine-x/envs/cntk/bin/python", "versions": ""},
           written={"differs_from_benchmark": ["1 epochs, not 10", "4000 of 50000 training samples"]})
    _write(tmp_path, "2-failed", 2, framework="MXNet", status="failed",
           error=f"KernelDied: see {inside}; the data /srv/machine-x/data/cifar-10-python.tar.gz, "
                 "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
    readme = report.render(tmp_path).read_text()
    csv = (tmp_path / "results.csv").read_text()
    for text in (readme, csv):
        assert "/srv/machine-x" not in text and "/opt/machine-x" not in text and str(REPOSITORY) not in text
        assert "results/records/x.kernel.log" in text and "cifar-10-python.tar.gz" in text
        assert "existing environment cntk/bin/python" in text
        assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in text  # a URL stays whole
        assert "1 epochs" not in text and "1 threads" not in text
    assert "subset: 1 epoch, not 10" in readme and "(1 thread)" in readme
    assert '"/srv/machine-x/data/imdb.npz"' in (tmp_path / "records" / "1-ok.json").read_text()  # kept in the record


def test_an_onnx_status_is_said_once():
    text = report.onnx_tables([{"framework": "Lasagne (Theano)", "benchmark": "cifar", "status": "no exporter",
                                "message": "no exporter: Theano writes none; see /srv/machine-x/export.json"}])
    assert "**no exporter**: Theano writes none; see export.json |" in text
    assert "no exporter: no exporter" not in text.replace("*", "")


def test_a_new_metric_is_one_column_in_the_table_the_csv_and_the_page(tmp_path, monkeypatch):
    """A column declared once (harness/columns.py) reaches the markdown table, results.csv and the
    side-by-side page; the page's row for a framework with no record spans the new column too."""
    from harness import columns, compare
    from harness.frameworks import FRAMEWORKS

    letters = columns.Column("Letters", lambda r, t: columns.number(r["letters"], 0), empty="–",
                             medians=("letters",), value=lambda found: len(found["framework"]),
                             page="Letters", page_cell=lambda r: columns.number(r["letters"], 0))
    monkeypatch.setattr(columns, "RESULTS", columns.RESULTS[:-2] + [letters] + columns.RESULTS[-2:])
    _write(tmp_path, "01-PyTorch", 1)
    _write(tmp_path, "02-MXNet", 2, "MXNet", status="failed", error="boom", accuracy=None, timing={})
    cifar = _section(report.render(tmp_path).read_text(), "cifar")
    header = next(line for line in cifar.splitlines() if line.startswith("| Framework | Runs"))
    assert "| Feeding | Letters | Equivalent | Notes |" in header
    rows = {}  # each framework's first line: the results table's (the setup table's follows)
    for line in cifar.splitlines():
        if line.startswith(("| PyTorch", "| MXNet")):
            rows.setdefault(line.split(" | ")[0], line)
    assert "| 7 | not checked |" in rows["| PyTorch"]  # "PyTorch": 7 letters
    assert rows["| MXNet"].count(" | ") == header.count(" | ")  # a failed row: every cell, the new one "–"
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert csv[0].endswith(",letters") and csv[1].endswith(",7")
    page = compare.page(FRAMEWORKS["pytorch"], FRAMEWORKS["jax"], "cifar", tmp_path, tmp_path)
    assert "<th>Feeding</th>" not in page and "<th>Letters</th><th>Data</th>" in page
    assert "<td>7</td><td>" in page and 'colspan="9">no record of JAX' in page


def _full_size_imdb(results, name, minute, framework, accuracy, **fields):
    """A GRU run at the benchmark's full size (3 epochs, every review): not a subset."""
    made = record.build(framework=framework, api="x", benchmark="imdb", epochs=3, batch_size=64,
                        train_samples=25000, test_samples=25000, seed=42, accuracy=accuracy,
                        timing={"train_seconds": 900.0 + minute}, environment=CPU, **fields)
    assert made["subset"] is False, made["differs_from_benchmark"]
    made["timestamp"] = f"2026-12-03T12:{minute:02d}:00+0000"
    record.write(results / "records" / f"{name}.json", made)


def test_a_full_size_gru_table_shows_each_row_beside_the_original_comparisons_accuracy(tmp_path):
    """At full size, the GRU's table has a column against the 85-86 % the original comparison
    published: within it, or the points outside; a subset table (the CNN's here) has no such column."""
    _full_size_imdb(tmp_path, "1-a", 1, "PyTorch", 0.8552)
    _full_size_imdb(tmp_path, "2-b", 2, "MXNet", 0.8312)
    _full_size_imdb(tmp_path, "3-c", 3, "JAX", 0.8671)
    _write(tmp_path, "4-cifar", 4)
    readme = report.render(tmp_path).read_text()
    imdb, cifar = _section(readme, "imdb"), _section(readme, "cifar")
    assert "| vs the original comparison's 85–86 % |" in imdb
    results_table = imdb.split("| Framework | API")[0]  # the results table, not the setup table under it
    rows = {line.split(" | ")[0][2:]: line for line in results_table.splitlines() if line.startswith("| ")}
    assert "| 85.5 % | within |" in rows["PyTorch"]
    assert "| 83.1 % | -1.9 points |" in rows["MXNet"] and "| 86.7 % | +0.7 points |" in rows["JAX"]
    assert "original comparison" not in cifar


def test_a_subset_gru_table_has_no_published_column(tmp_path):
    _write(tmp_path, "1-imdb", 1, benchmark="imdb")
    assert "original comparison" not in _section(report.render(tmp_path).read_text(), "imdb")


def test_the_quiet_check_and_the_calibration_count_as_the_harnesss_own_time(tmp_path):
    """The wait for a quiet machine and the probe happen before papermill starts: they are the harness's
    time too, and the wall time the shares are of includes them, once: a probe run within the wait's
    window (``calibrated_within``) is already in its seconds."""
    probe = {"device": "cpu", "threads": 2, "gflops": 100.0, "gbps": 20.0, "how": "test", "seconds": 4.0,
             "not_measured": None}
    _write(tmp_path, "1-cifar", 1, phases={**PARTS, "harness": 100.0, "other": 50.0}, calibration=probe,
           load={"busy": False, "waited_seconds": 6.0, "calibrated_within": False})
    _write(tmp_path, "2-imdb", 2, benchmark="imdb", phases={**PARTS, "harness": 100.0, "other": 50.0},
           calibration=probe, load={"busy": False, "waited_seconds": 6.0, "calibrated_within": True})
    readme = report.render(tmp_path).read_text()
    cifar, imdb = _section(readme, "cifar"), _section(readme, "imdb")
    assert ("took 110 s from the quiet-machine check to the kernel's exit, 45 s of it training and prediction. The "
            "harness's own share is 57.3 % (quiet-machine check and calibration 10 s, kernel start 1 s") in cifar
    assert "in all, the overhead is 59 % of the wall time." in cifar
    assert ("took 106 s from the quiet-machine check to the kernel's exit, 45 s of it training and prediction. The "
            "harness's own share is 55.7 % (quiet-machine check and calibration 6 s, kernel start 1 s") in imdb


def test_a_variants_accuracy_is_set_beside_its_fp32_rows_over_the_seeds_both_ran(tmp_path):
    """A variant row says how far its accuracy lies from its framework's fp32 row, as the mean over the
    seeds both ran; within 2 points over 3 seeds it agrees, further apart it is flagged, and with fewer
    seeds it says what agreement needs. A table without variants has no such column."""
    minute = 0
    for seed, fp32, bf16, compiled in ((42, 0.50, 0.51, 0.40), (43, 0.52, 0.52, 0.41), (44, 0.54, 0.56, 0.42)):
        for variant, accuracy in (("fp32", fp32), ("bf16", bf16), ("compiled", compiled)):
            _write(tmp_path, f"{minute:02d}-{variant}", minute, seed=seed, variant=variant, accuracy=accuracy)
            minute += 1
    _write(tmp_path, f"{minute:02d}-mxnet", minute, "MXNet", variant="fp32")
    _write(tmp_path, f"{minute + 1:02d}-mxnet-bf16", minute + 1, "MXNet", variant="bf16", accuracy=0.47)
    _write(tmp_path, f"{minute + 2:02d}-jax-bf16", minute + 2, "JAX", variant="bf16")
    cifar = _section(report.render(tmp_path).read_text(), "cifar")
    header = next(line for line in cifar.splitlines() if line.startswith("| Framework | Runs"))
    assert "| Accuracy vs fp32 |" in header
    rows = {line.split(" | ")[0][2:]: line for line in cifar.splitlines() if line.startswith("| ")}
    assert "| +1.0 points over 3 seeds: within 2 |" in rows["PyTorch (bf16)"], rows
    assert "| **-11.0 points over 3 seeds: more than 2 apart** |" in rows["PyTorch (compiled)"]
    assert "| -3.0 points over 1 seed; agreement needs 3 |" in rows["MXNet (bf16)"]
    assert "| no fp32 row |" in rows["JAX (bf16)"]
    assert " | – | " in rows["PyTorch"]

    plain = tmp_path / "plain"
    _write(plain, "00-fp32", 0)
    assert "Accuracy vs fp32" not in report.render(plain).read_text()
