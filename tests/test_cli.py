"""`rosetta` on the command line: overrides, selection and clear errors."""
import shutil
import subprocess
from pathlib import Path

import pytest

from common import REPOSITORY, record
from common.benchmarks import BENCHMARKS
from harness import cli, processes, runner
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
    assert parameters["threads"] is None  # every core


@pytest.mark.parametrize("command", ["run", "bench", "agree"])
def test_threads_reach_the_settings_and_the_notebook_parameters(command):
    settings = cli.run_settings(cli.parse([command, "pytorch", "--threads", "3"]))
    assert settings.threads == 3
    assert settings.notebook_parameters("imdb", Path("r.json"))["threads"] == 3
    assert cli.run_settings(cli.parse([command])).threads is None


@pytest.mark.parametrize("value", ["0", "-1", "all"])
def test_threads_must_be_a_positive_number(value, capsys):
    with pytest.raises(SystemExit):
        cli.parse(["run", "--threads", value])
    assert value in capsys.readouterr().err


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


# --- every argument checked before anything starts ---------------------------------------------

@pytest.fixture
def started(monkeypatch):
    """What would have started: environments, parity checks, data loading, notebook runs."""
    calls = []
    monkeypatch.setattr(cli, "cmd_envs", lambda args: calls.append("envs") or 0)
    monkeypatch.setattr(cli.parity, "check_all", lambda *a, **k: calls.append("parity") or [])
    monkeypatch.setattr(cli, "cmd_data", lambda args, benchmarks=None: calls.append("data") or 0)
    monkeypatch.setattr(cli, "load_data", lambda args, benchmarks: calls.append("data") or ({}, {}),
                        raising=False)
    monkeypatch.setattr(runner, "run_all", lambda *a, **k: calls.append("run") or [])
    return calls


@pytest.mark.parametrize("flag, value", [("--timeout", "0"), ("--timeout", "-5"), ("--timeout", "nan"),
                                         ("--timeout", "inf"), ("--seed", "-1"), ("--seed", str(2**32))])
def test_bad_timeouts_and_seeds_are_refused_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit):
        cli.parse(["run", flag, value])
    error = capsys.readouterr().err
    assert flag in error and value in error


@pytest.mark.parametrize("command", ["run", "bench"])
@pytest.mark.parametrize("arguments, expected", [
    (["--train-samples", "5"], "--train-samples 5: 5 training samples make no complete batch of 64"),
    (["--batch-size", "300", "--train-samples", "200"], "--train-samples 200: 200 training samples make no"),
    (["--train-samples", "60000", "--benchmark", "cifar"], "--train-samples 60000: cifar has 50000"),
    (["--test-samples", "30000"], "--test-samples 30000: cifar has 10000"),
    (["--cifar10", "nowhere/cifar-10-python.tar.gz"], "nowhere/cifar-10-python.tar.gz: no such file"),
])
def test_run_arguments_are_checked_before_anything_starts(command, arguments, expected, started, tmp_path,
                                                          capsys):
    assert cli.main([command, "pytorch", "--results", str(tmp_path), *arguments]) == 2
    error = capsys.readouterr().err
    assert expected in error and error.count("\n") == 1
    assert started == []


def test_device_cuda_without_a_gpu_is_refused_before_anything_starts(started, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli.venvs, "default_flavour", lambda: "cpu")
    assert cli.main(["bench", "pytorch", "--device", "cuda", "--results", str(tmp_path)]) == 2
    assert "--device cuda: no NVIDIA GPU found" in capsys.readouterr().err
    assert started == []


def test_an_unusable_results_folder_is_one_clear_error(started, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert cli.main(["run", "pytorch", "--results", str(tmp_path / "file" / "results")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"rosetta: --results {tmp_path / 'file' / 'results'}: cannot write")
    assert error.count("\n") == 1 and started == []
    assert cli.main(["report", "--results", str(tmp_path / "missing")]) == 2
    assert "--results" in capsys.readouterr().err and not (tmp_path / "missing").exists()
    assert cli.main(["run", "pytorch", "--data-dir", str(tmp_path / "file" / "cache"),
                     "--results", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err.startswith(f"rosetta: --data-dir {tmp_path / 'file' / 'cache'}: cannot write "
                                              "the data cache there")
    assert started == []


# --- paths, data errors, resume ----------------------------------------------------------------

def _capture_settings(monkeypatch) -> dict:
    seen = {}

    def fake_run_all(frameworks, benchmarks, settings, results, **options):
        seen.update(settings=settings, results=results)
        return []

    monkeypatch.setattr(runner, "run_all", fake_run_all)
    monkeypatch.setattr(cli, "cmd_data", lambda args, benchmarks=None: 0)
    monkeypatch.setattr(cli, "load_data", lambda args, benchmarks: ({}, {}), raising=False)
    return seen


def test_relative_paths_reach_the_kernel_absolute(monkeypatch, tmp_path):
    seen = _capture_settings(monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "data" / "imdb.npz").write_bytes(b"")
    (elsewhere / "cifar").mkdir()
    monkeypatch.chdir(elsewhere)  # not the repository's root, where the kernels run
    monkeypatch.setenv("ROSETTA_CIFAR10", "cifar")
    assert cli.main(["run", "pytorch", "--imdb", "data/imdb.npz", "--data-dir", "cache",
                     "--results", "out"]) == 0
    imdb = seen["settings"].notebook_parameters("imdb", Path("r.json"))
    cifar = seen["settings"].notebook_parameters("cifar", Path("r.json"))
    assert imdb["data_source"] == str(elsewhere / "data" / "imdb.npz")
    assert cifar["data_source"] == str(elsewhere / "cifar")  # from ROSETTA_CIFAR10
    assert imdb["data_dir"] == str(elsewhere / "cache")
    assert seen["results"] == elsewhere / "out"


def test_a_data_error_fails_that_benchmarks_runs_and_the_other_benchmark_still_runs(monkeypatch, tmp_path):
    def prepare(benchmark, source=None, cache=None):  # what load_data asks of common/data.py
        if benchmark == "cifar":
            raise cli.data.DataError("/x/cifar-10-python.tar.gz is truncated or corrupt")
        return 3, 2, {"source": "official", "path": "/x/imdb.npz"}

    ran = []
    monkeypatch.setattr(cli.data, "prepare", prepare)
    monkeypatch.setattr(runner, "execute", lambda framework, benchmark, settings, results:
                        ran.append((framework.name, benchmark)) or {"status": "ok"})
    assert cli.main(["run", "pytorch", "--results", str(tmp_path)]) == 1
    assert ran == [("pytorch", "imdb")]
    failed = [record.read(path) for path in (tmp_path / "records").glob("*.json")]
    assert [(r["benchmark"], r["status"]) for r in failed] == [("cifar", "failed")]
    assert failed[0]["error"] == "DataError: /x/cifar-10-python.tar.gz is truncated or corrupt"


BUILT = {"kind": "built", "spec": "harness/envs/pytorch-cpu.txt", "flavour": "cpu", "python": "/envs/pytorch/bin/python"}
EXISTING = {"kind": "existing", "python": "/opt/py/bin/python", "python_version": "3.11.7",
            "versions": "torch 2.3.0", "cuda_build": False}


def _register(monkeypatch, tmp_path, info: "dict | None") -> None:
    """Registers pytorch's kernel, as `rosetta envs` would, in a prefix of the test's own (None: none there)."""
    from harness import kernels

    monkeypatch.setattr(kernels, "kernels_prefix", lambda: tmp_path / "prefix")
    framework = FRAMEWORKS["pytorch"]
    if info is None:
        return
    if info["kind"] == "existing":
        probe = {key: info[key] for key in ("python_version", "versions", "cuda_build")}
        info = {"kind": "existing", "python": info["python"], "probes": {framework.name: probe}}
    else:
        info = {key: value for key, value in info.items() if key != "kind"} | {"kind": "built"}
    kernels.write_kernel(framework, info["python"], info, {})


def _ok_record(results, name, benchmark, commit="abc123", **changes):
    spec = BENCHMARKS[benchmark]
    fields = dict(framework="PyTorch", api="nn.Module", benchmark=benchmark, accuracy=0.5,
                  timing={"train_seconds": 3.0}, epochs=1, batch_size=spec.batch,
                  train_samples=2000, test_samples=spec.test, seed=42,
                  environment={"device": "cpu", "cpu": "Test CPU", "threads": 2, "git_commit": commit},
                  data={"source": "official", "checksum": f"{benchmark}-hash"})
    fields.update(changes)
    record.write(results / "records" / f"{name}.json", record.build(**fields))


def _resumed_cifar(monkeypatch, tmp_path) -> list:
    """The benchmarks that `rosetta run pytorch --benchmark cifar --resume` (1 epoch, 2,000 samples, the
    CPU, commit abc123, the cifar data of ``_ok_record``) runs again, the notebooks stubbed."""
    provenances = {"cifar": {"source": "official", "checksum": "cifar-hash"}}
    monkeypatch.setattr(cli, "load_data", lambda args, benchmarks: (provenances, {}))
    monkeypatch.setattr(cli.machine, "git_commit", lambda: "abc123")
    ran = []
    monkeypatch.setattr(runner, "execute", lambda framework, benchmark, settings, results:
                        ran.append(benchmark) or {"status": "ok"})
    assert cli.main(["run", "pytorch", "--benchmark", "cifar", "--epochs", "1", "--train-samples", "2000",
                     "--device", "cpu", "--resume", "--results", str(tmp_path)]) == 0
    return ran


@pytest.mark.parametrize("commit", ["abc123", "abc123-dirty"])
def test_resume_skips_what_already_has_an_ok_record_with_the_same_settings(monkeypatch, tmp_path, capsys,
                                                                           commit):
    _register(monkeypatch, tmp_path, None)  # no kernel registered now, and none in the records
    _ok_record(tmp_path, "1-cifar", "cifar", commit=commit)   # the same settings: skipped
    _ok_record(tmp_path, "2-imdb", "imdb", seed=7)            # another seed: runs again
    provenances = {b: {"source": "official", "checksum": f"{b}-hash"} for b in ("cifar", "imdb")}
    monkeypatch.setattr(cli, "load_data", lambda args, benchmarks: (provenances, {}))
    monkeypatch.setattr(cli.machine, "git_commit", lambda: commit)
    ran = []
    monkeypatch.setattr(runner, "execute", lambda framework, benchmark, settings, results:
                        ran.append(benchmark) or {"status": "ok"})
    arguments = ["run", "pytorch", "--epochs", "1", "--train-samples", "2000", "--device", "cpu",
                 "--results", str(tmp_path)]
    assert cli.main(arguments + ["--resume"]) == 0
    output = capsys.readouterr().out
    if commit.endswith("-dirty"):  # uncommitted changes: no earlier run is known to match
        assert ran == ["cifar", "imdb"] and "nothing skipped" in output
        return
    assert ran == ["imdb"]
    assert "skipped (--resume), already ok in 1-cifar.json" in output
    assert "resume: skipped 1 run(s)" in output and "pytorch cifar" in output
    ran.clear()
    assert cli.main(arguments) == 0 and ran == ["cifar", "imdb"]  # without --resume everything runs


@pytest.mark.parametrize("change", [{"epochs": 2}, {"environment": {"device": "cpu", "cpu": "C", "git_commit": "old"}},
                                    {"data": {"source": "official", "checksum": "other"}},
                                    {"environment": {"device": "cuda", "gpu": "G", "git_commit": "abc123"}},
                                    {"environment": {"device": "cpu", "cpu": "C", "git_commit": "abc123",
                                                     "threads_requested": 1}}])  # another configuration
def test_resume_reruns_what_differs_in_settings_data_code_or_device(monkeypatch, tmp_path, change):
    _register(monkeypatch, tmp_path, None)
    _ok_record(tmp_path, "1-cifar", "cifar", **change)
    assert _resumed_cifar(monkeypatch, tmp_path) == ["cifar"]


@pytest.mark.parametrize("recorded, now", [
    (BUILT, BUILT),                                                        # the same kernel: skipped
    (EXISTING, EXISTING),
    ({**BUILT, "flavour": "cuda", "spec": "harness/envs/pytorch-cuda.txt"}, BUILT),  # the cuda build, now the cpu one
    ({**BUILT, "python": "/old/envs/pytorch/bin/python"}, BUILT),           # another built environment
    (EXISTING, BUILT),                                                     # an existing interpreter, now a built one
    (BUILT, EXISTING),
    ({**EXISTING, "python": "/other/bin/python"}, EXISTING),               # another existing interpreter
    ({**EXISTING, "versions": "torch 2.2.0"}, EXISTING),                   # the same one, since changed
    ({"kind": "docker", "image": "dl-rosetta/pytorch"}, BUILT),            # in docker, now in a venv
    (None, BUILT),                                                         # a record that does not say
])
def test_resume_reruns_a_run_whose_kernel_differs(monkeypatch, tmp_path, recorded, now):
    _register(monkeypatch, tmp_path, now)
    _ok_record(tmp_path, "1-cifar", "cifar", kernel_environment=recorded)
    assert _resumed_cifar(monkeypatch, tmp_path) == ([] if recorded == now else ["cifar"])


def test_resume_reruns_a_run_of_another_variant(monkeypatch, tmp_path):
    _ok_record(tmp_path, "1-cifar", "cifar", variant="amp")  # only fp32 runs are asked for
    assert _resumed_cifar(monkeypatch, tmp_path) == ["cifar"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_bench_resume_passes_the_flag():
    def planned(*variables):
        done = subprocess.run(["make", "-n", "bench", "FRAMEWORKS=pytorch", *variables], cwd=REPOSITORY,
                              capture_output=True, text=True)
        return [line.split() for line in done.stdout.splitlines() if "rosetta bench" in line]

    assert "--resume" in planned("RESUME=1")[0]
    assert "--resume" not in planned()[0]


def test_bench_interrupted_before_its_runs_exits_130_and_still_writes_the_report(started, monkeypatch,
                                                                                 tmp_path, capsys):
    import signal

    def interrupted(*arguments, **options):
        raise processes.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(cli.parity, "check_all", interrupted)
    assert cli.main(["bench", "pytorch", "--results", str(tmp_path)]) == 143
    assert "interrupted by SIGTERM" in capsys.readouterr().err
    assert (tmp_path / "README.md").is_file() and "run" not in started


def test_repeats_run_every_framework_once_per_seed_repeat_by_repeat(monkeypatch, tmp_path, capsys):
    ran = []

    def fake_run_all(frameworks, benchmarks, settings, results, **options):
        ran.extend((settings.seed, f.name) for f in frameworks)
        return []

    monkeypatch.setattr(runner, "run_all", fake_run_all)
    monkeypatch.setattr(cli, "load_data", lambda args, benchmarks: ({}, {}))
    assert cli.main(["run", "pytorch", "jax", "--repeats", "3", "--seed", "7", "--results", str(tmp_path)]) == 0
    assert ran == [(7, "pytorch"), (7, "jax"), (8, "pytorch"), (8, "jax"), (9, "pytorch"), (9, "jax")]
    assert "repeat 2 of 3: seed 8" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.parse(["run", "--repeats", "0"])
    assert "--repeats: expected a positive whole number, got 0" in capsys.readouterr().err


def test_make_bench_repeats_passes_the_option():
    done = subprocess.run(["make", "-n", "bench", "FRAMEWORKS=pytorch", "REPEATS=3"], cwd=REPOSITORY,
                          capture_output=True, text=True)
    line = next(line.split() for line in done.stdout.splitlines() if "rosetta bench" in line)
    assert line[line.index("--repeats") + 1] == "3"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_cpu_tables_plans_the_three_parts_of_one_sitting_in_order():
    """The committed CPU tables' recipe: the 3-repeat main suite, then each framework's export run
    with its ONNX check at once after it, then, at full size in a folder of its own, each benchmark
    whose accuracy the original comparison published."""
    from common.benchmarks import BENCHMARKS

    done = subprocess.run(["make", "-n", "cpu-tables", "CIFAR10=/c", "IMDB=/i"], cwd=REPOSITORY,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    main = next(i for i, line in enumerate(lines) if "rosetta bench --repeats 3" in line)
    inference = next(i for i, line in enumerate(lines) if "--results results/inference" in line)
    full = next(i for i, line in enumerate(lines) if "--results results/full-size" in line)
    assert main < inference < full
    assert lines[main].split()[-4:] == ["--cifar10", "/c", "--imdb", "/i"] and "--no-export" in lines[main]
    assert "--epochs 2 --train-samples 4000 --test-samples 2000" in lines[main] and "--benchmark" not in lines[main]
    assert "rosetta onnx $name --results results/inference" in lines[inference + 1]
    assert "--device cpu --no-export" in lines[full] and "--epochs" not in lines[full]
    chosen = lines[full].split("--benchmark ")[1].split(" --device")[0]  # the shell's $(...) that lists them
    published = subprocess.run(["bash", "-c", f"echo {chosen}"], cwd=REPOSITORY, capture_output=True,
                               text=True).stdout.split()
    assert published == [b.name for b in BENCHMARKS.values() if b.published] == ["imdb"]
