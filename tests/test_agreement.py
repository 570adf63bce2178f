"""harness.agree: the table of accuracies across seeds, from records alone."""
import pytest

from harness import agree

CONFIG = agree.Configuration(benchmark="imdb", epochs=2, train_samples=4000, test_samples=2000, device="cpu",
                                 title="GRU on IMDB")
SEEDS = agree.seeds(5)


def _record(framework, seed, accuracy, status="ok", timestamp="2026-12-02T10:00:00", **changes):
    found = {"framework": framework, "seed": seed, "test_accuracy": accuracy, "status": status,
             "benchmark": "imdb", "epochs": 2, "train_samples": 4000, "test_samples": 2000,
             "environment": {"device": "cpu"}, "timestamp": timestamp, "error": None}
    found.update(changes)
    return found


def test_seeds_are_consecutive_from_the_design_seed_and_one_is_refused():
    assert SEEDS == [42, 43, 44, 45, 46]
    with pytest.raises(ValueError, match="--seeds must be 2 or more"):
        agree.seeds(1)


def test_only_ok_runs_of_the_configuration_and_the_latest_of_a_seed_count():
    records = [_record("PyTorch", 42, 0.80), _record("PyTorch", 42, 0.81, timestamp="2026-12-02T11:00:00"),
               _record("PyTorch", 43, 0.5, epochs=3), _record("PyTorch", 44, 0.5, environment={"device": "cuda"}),
               _record("PyTorch", 45, 0.5, status="failed"), _record("PyTorch", 7, 0.5)]
    assert agree.collect(records, CONFIG, SEEDS) == {"PyTorch": {42: 0.81}}


def test_a_row_more_than_two_points_from_pytorch_is_flagged_and_one_within_is_not():
    records = ([_record("PyTorch", s, a) for s, a in zip(SEEDS, [0.79, 0.80, 0.81, 0.80, 0.80])]
               + [_record("MXNet", s, a) for s, a in zip(SEEDS, [0.66, 0.80, 0.70, 0.78, 0.76])]
               + [_record("Chainer", s, a) for s, a in zip(SEEDS, [0.79, 0.80, 0.79, 0.80, 0.81])])
    rows = {row["framework"]: row for row in agree.summary(agree.collect(records, CONFIG, SEEDS))}
    assert rows["MXNet"]["flagged"] and rows["MXNet"]["difference"] == pytest.approx(0.74 - 0.80)
    assert not rows["Chainer"]["flagged"] and not rows["PyTorch"]["flagged"]
    assert (rows["MXNet"]["min"], rows["MXNet"]["max"], rows["MXNet"]["seeds"]) == (0.66, 0.80, 5)


def test_the_table_shows_means_ranges_differences_flags_and_the_runs_missing(tmp_path):
    records = ([_record("PyTorch", s, 0.80) for s in SEEDS] + [_record("MXNet", s, 0.70) for s in SEEDS[:4]]
               + [_record("MXNet", 46, None, status="failed", error="Traceback\nValueError: diverged")])
    path = agree.write(tmp_path, records, [CONFIG], SEEDS, "Made by test.")
    text = path.read_text()
    assert path == tmp_path / "agreement" / "README.md"
    assert "| PyTorch | 5 | 80.0 | 80.0 – 80.0 | – |  | 80.0 · 80.0 · 80.0 · 80.0 · 80.0 |" in text
    assert "| MXNet | 4 | 70.0 | 70.0 – 70.0 | -10.0 | **differs** | 70.0 · 70.0 · 70.0 · 70.0 |" in text
    assert "- MXNet, seed 46: failed: ValueError: diverged" in text
    assert "Flagged: MXNet" in text and "Made by test." in text and "42, 43, 44, 45, 46" in text
    assert "## GRU on IMDB" in text and "2 epoch(s) on the first 4,000 training samples" in text


def test_rows_whose_runs_were_made_at_another_commit_are_named(tmp_path):
    at = lambda commit: {"device": "cpu", "git_commit": commit}  # noqa: E731
    records = ([_record("PyTorch", s, 0.80, environment=at("a" * 40)) for s in SEEDS]
               + [_record("CNTK", s, 0.79, environment=at("b" * 40)) for s in SEEDS[:2]]
               + [_record("CNTK", s, 0.79, environment=at("a" * 40)) for s in SEEDS[2:]])
    text = agree.write(tmp_path, records, [CONFIG], SEEDS, "Made by test.", commit="a" * 40).read_text()
    assert f"- CNTK: {'a' * 12}, {'b' * 12}" in text and "- PyTorch" not in text
    text = agree.write(tmp_path, records[:5], [CONFIG], SEEDS, "Made by test.", commit="a" * 40).read_text()
    assert "another commit" not in text


def test_without_a_reference_run_there_is_no_table():
    with pytest.raises(ValueError, match="no ok run of PyTorch"):
        agree.summary({"MXNet": {42: 0.7}})


def test_rosetta_agree_runs_each_seed_and_writes_the_table(monkeypatch, tmp_path, capsys):
    from common import record
    from harness import cli, runner

    ran = []

    def fake_run_all(frameworks, benchmarks, settings, results, **options):  # what a run would record
        ran.append((settings.seed, settings.epochs, settings.train_samples, settings.device, results))
        for framework in frameworks:
            accuracy = 0.80 if framework.name == "pytorch" else 0.70 + 0.01 * (settings.seed - 42)
            record.write(results / "records" / f"{settings.seed}-{framework.name}.json", record.build(
                framework=framework.label, api="x", benchmark="imdb", accuracy=accuracy, epochs=settings.epochs,
                batch_size=64, train_samples=settings.train_samples, test_samples=settings.test_samples,
                seed=settings.seed, timing={"train_seconds": 5.0},
                environment={"device": "cpu", "cpu": "Test CPU", "cpu_count": 2, "threads": 1, "versions": {}}))
        return []

    monkeypatch.setattr(runner, "run_all", fake_run_all)
    monkeypatch.setattr(cli, "load_data", lambda args, benchmarks: ({}, {}))
    imdb = tmp_path / "data" / "imdb.npz"  # a local copy, named by an absolute path of this machine
    imdb.parent.mkdir()
    imdb.write_bytes(b"not read: load_data is stubbed")
    assert cli.main(["agree", "pytorch", "mxnet", "--seeds", "3", "--imdb", str(imdb), "--results", str(tmp_path)]) == 0
    folder = tmp_path / "agreement"
    assert ran == [(seed, 2, 8000, "cpu", folder) for seed in (42, 43, 44)]  # the defaults: a short GRU run
    text = (folder / "README.md").read_text()
    assert "| MXNet | 3 | 71.0 | 70.0 – 72.0 | -9.0 | **differs** | 70.0 · 71.0 · 72.0 |" in text
    assert f"Made by `rosetta agree pytorch mxnet --seeds 3 --imdb imdb.npz --results {tmp_path.name}`" in text
    assert "42, 43, 44" in text and str(tmp_path) not in text  # paths by file name, not this machine's
    assert "on CPU: Test CPU (2 cores)" in text  # the machine, not one record's threads
    assert "agreement:" in capsys.readouterr().out


def test_rosetta_agree_refuses_one_seed_before_anything_runs(monkeypatch, tmp_path, capsys):
    from harness import cli, runner

    monkeypatch.setattr(runner, "run_all", lambda *a, **k: pytest.fail("ran"))
    assert cli.main(["agree", "--seeds", "1", "--results", str(tmp_path)]) == 2
    assert "--seeds must be 2 or more" in capsys.readouterr().err
