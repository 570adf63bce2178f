"""`rosetta` on the command line: overrides, selection and clear errors."""
import pytest

from harness import cli, runner
from harness.frameworks import FRAMEWORKS, select


def test_unknown_framework_is_a_clear_error(capsys):
    assert cli.main(["run", "tensorflw", "--results", "/nonexistent"]) == 2
    assert "unknown framework(s) tensorflw; known: pytorch" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_sizes_must_be_positive_numbers(value, capsys):
    with pytest.raises(SystemExit):
        cli.parse(["run", "--epochs", value])
    assert value in capsys.readouterr().err


def test_overrides_reach_the_notebook_parameters(monkeypatch, tmp_path):
    seen = {}

    def fake_run_all(frameworks, benchmarks, settings, results, **options):
        seen.update(frameworks=[f.name for f in frameworks], benchmarks=benchmarks, settings=settings)
        return []

    monkeypatch.setattr(runner, "run_all", fake_run_all)
    monkeypatch.setattr(cli, "load_data", lambda args, benchmarks: ({}, {}))
    (tmp_path / "imdb.npz").write_bytes(b"")
    status = cli.main(["run", "pytorch", "--benchmark", "imdb", "--epochs", "1", "--train-samples", "2000",
                       "--imdb", str(tmp_path / "imdb.npz"), "--results", str(tmp_path)])
    assert status == 0
    assert seen["frameworks"] == ["pytorch"] and seen["benchmarks"] == ["imdb"]
    parameters = seen["settings"].notebook_parameters("imdb", tmp_path / "r.json")
    assert parameters["epochs"] == 1 and parameters["train_samples"] == 2000
    assert parameters["data_source"] == str(tmp_path / "imdb.npz") and parameters["test_samples"] is None
    assert (tmp_path / "README.md").is_file()


def test_select_defaults_to_every_framework():
    assert select([]) == list(FRAMEWORKS.values())
    assert select(["PyTorch"]) == [FRAMEWORKS["pytorch"]]


def test_report_runs_on_its_own(tmp_path, capsys):
    assert cli.main(["report", "--results", str(tmp_path)]) == 0
    assert "No runs yet." in capsys.readouterr().out


def test_missing_local_copy_is_one_clear_error(capsys, tmp_path):
    missing = tmp_path / "nowhere" / "cifar-10-python.tar.gz"
    assert cli.main(["data", "--cifar10", str(missing)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(missing) in error and "does not exist" in error


def test_list_aligns_every_framework_and_names_its_notebooks(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if not line.startswith(" ")]
    assert [row.split()[0] for row in rows] == list(FRAMEWORKS)
    assert len({row.index(" kernel rosetta-") for row in rows}) == 1  # one column for every name and label
    for framework in FRAMEWORKS.values():
        for notebook in framework.notebooks.values():
            assert any(line.endswith(f"notebooks/{notebook}") for line in lines)
