"""The runner on small notebooks in a kernel of the test's own Python: every outcome gets a record."""
import json
import os
import signal

import nbformat
import pytest
import selftest

from common import record
from harness import processes, records, report, runner
from harness.frameworks import Framework


def _framework(tmp_path, body: str, name="selftest") -> Framework:
    return selftest.framework(tmp_path / f"{name}.ipynb", body, name)


def test_ok_run_keeps_record_and_executed_notebook(tmp_path, selftest_kernel):
    framework = _framework(tmp_path, selftest.WRITE_OK)
    result = runner.execute(framework, "cifar", runner.RunSettings(epochs=2, train_samples=100),
                            tmp_path / "results")
    assert result["status"] == "ok" and result["test_accuracy"] == 0.25
    assert result["epochs"] == 2 and result["train_samples"] == 100  # injected by papermill
    assert result["subset"] is True
    records = list((tmp_path / "results" / "records").glob("*.json"))
    assert len(records) == 1
    executed = tmp_path / "results" / result["notebook"]
    assert executed.suffix == ".ipynb" and executed.with_suffix(".json") == records[0]
    assert nbformat.read(executed, as_version=4).cells[1]["source"].startswith("# Parameters")
    parts = result["phases"]  # where the time went, from papermill's stamps
    assert parts["harness"] > parts["kernel_start"] > 0
    assert parts["harness"] > parts["kernel_stop"] > 0  # a real kernel takes some time to exit
    assert sum(v for k, v in parts.items() if k != "harness") == pytest.approx(parts["harness"], abs=0.01)


def test_failing_notebook_is_recorded_as_failed_with_its_error(tmp_path, selftest_kernel):
    framework = _framework(tmp_path, "raise ValueError('bad shape 7')")
    result = runner.execute(framework, "cifar", runner.RunSettings(), tmp_path / "results")
    assert result["status"] == "failed"
    assert result["error"] == "ValueError: bad shape 7"
    assert record.read(next((tmp_path / "results" / "records").glob("*.json")))["status"] == "failed"
    assert (tmp_path / "results" / result["notebook"]).is_file()


def test_nan_loss_is_recorded_as_diverged(tmp_path, selftest_kernel):
    body = "from common import record\nrecord.check_loss(float('nan'), 0)"
    result = runner.execute(_framework(tmp_path, body), "cifar", runner.RunSettings(), tmp_path / "results")
    assert result["status"] == "diverged"
    assert "nan" in result["error"] and "epoch 1" in result["error"]


def test_hanging_notebook_times_out_and_is_stopped(tmp_path, selftest_kernel):
    body = "import time\nopen(record_path + '.started', 'w').close()\ntime.sleep(600)"
    settings = runner.RunSettings(timeout=8)
    result = runner.execute(_framework(tmp_path, body), "cifar", settings, tmp_path / "results")
    assert result["status"] == "timeout"
    assert "8 s" in result["error"]
    assert list((tmp_path / "results" / "records").glob("*.started")), "stopped before the notebook hung"


def test_notebook_without_record_is_a_failure(tmp_path, selftest_kernel):
    result = runner.execute(_framework(tmp_path, "x = 1"), "cifar", runner.RunSettings(), tmp_path / "results")
    assert result["status"] == "failed" and "without writing its record" in result["error"]


def test_one_failure_does_not_stop_the_others(tmp_path, selftest_kernel):
    broken = _framework(tmp_path, "raise RuntimeError('boom')", name="broken")
    working = _framework(tmp_path, selftest.WRITE_OK, name="working")
    done = runner.run_all([broken, working], ["cifar", "imdb"], runner.RunSettings(), tmp_path / "results")
    assert [r["status"] for r in done] == ["failed", "ok"]  # neither has an imdb notebook
    table = report.benchmark_table(report.to_frame(records.load_records(tmp_path / "results")), "cifar")
    assert "**failed**: RuntimeError: boom" in table


def test_missing_environment_is_recorded_as_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("ROSETTA_ENVS_DIR", str(tmp_path / "no-envs"))
    framework = Framework(name="ghost", label="Ghost", api="test", env="ghost",
                          notebooks={"cifar": "cifar/PyTorch_CIFAR.ipynb"})
    result = runner.execute(framework, "cifar", runner.RunSettings(threads=1), tmp_path / "results")
    assert result["status"] == "unavailable"
    assert "rosetta envs ghost" in result["error"]
    assert result["environment"]["threads_requested"] == 1  # filed under the configuration it was meant for


def test_run_paths_never_overwrite(tmp_path):
    framework = Framework(name="x", label="X", api="t", env="x")
    first, _ = runner.run_paths(tmp_path, framework, "cifar")
    first.parent.mkdir(parents=True, exist_ok=True)
    first.write_text("{}")
    second, _ = runner.run_paths(tmp_path, framework, "cifar")
    assert second != first


def test_a_second_run_in_the_same_second_sorts_after_the_first(tmp_path):
    framework = Framework(name="x", label="X", api="t", env="x")
    first, _ = runner.run_paths(tmp_path, framework, "cifar")
    first.parent.mkdir(parents=True, exist_ok=True)
    first.write_text("{}")
    second, _ = runner.run_paths(tmp_path, framework, "cifar")
    second.write_text("{}")
    third, _ = runner.run_paths(tmp_path, framework, "cifar")
    assert len({first, second, third}) == 3  # STAMP.2-name and STAMP.3-name keep their names
    assert sorted([third, second, first]) == [first, second, third]


def test_a_killed_kernel_is_recorded_as_a_dead_kernel_with_its_signal(tmp_path, selftest_kernel):
    body = "import os, signal, time\nos.write(2, b'last words\\n')\ntime.sleep(1)\nos.kill(os.getpid(), signal.SIGKILL)"
    result = runner.execute(_framework(tmp_path, body), "cifar", runner.RunSettings(), tmp_path / "results")
    assert result["status"] == "failed"
    assert result["error"].startswith("DeadKernelError: the kernel died (killed by signal 9, SIGKILL")
    assert "; the kernel's last output: " in result["error"] and result["error"].endswith("last words")
    table = report.benchmark_table(report.to_frame(records.load_records(tmp_path / "results")), "cifar")
    assert "DeadKernelError: the kernel died (killed by signal 9" in table


def test_names_are_reserved_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.time, "strftime", lambda fmt: "20260101-000000")
    framework = Framework(name="x", label="X", api="t", env="x")
    first, _ = runner.run_paths(tmp_path, framework, "cifar")
    second, _ = runner.run_paths(tmp_path, framework, "cifar")  # the first has written nothing yet
    assert first != second and sorted([second, first]) == [first, second]


def _reserve_many(folder, count, queue):
    runner.time.strftime = lambda fmt: "20260101-000000"
    framework = Framework(name="x", label="X", api="t", env="x")
    queue.put([str(runner.run_paths(folder, framework, "cifar")[0]) for _ in range(count)])


def test_concurrent_runs_into_one_folder_never_share_a_name(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_reserve_many, args=(tmp_path, 30, queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    names = [name for _ in workers for name in queue.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=60)
    assert len(names) == 90 and len(set(names)) == 90


def test_a_timeout_leaves_no_process_behind(tmp_path, selftest_kernel):
    # The kernel runs in a session of its own, and what it starts (here a sleep, like a data loader's
    # workers) in the kernel's process group: stopping papermill's group alone ends neither.
    body = """
import json, os, subprocess
child = subprocess.Popen(["sleep", "600"])
with open(record_path + ".pids", "w") as f:
    json.dump([os.getpid(), child.pid], f)
child.wait()
"""
    result = runner.execute(_framework(tmp_path, body), "cifar", runner.RunSettings(timeout=8),
                            tmp_path / "results")
    assert result["status"] == "timeout"
    pids = json.loads(next((tmp_path / "results" / "records").glob("*.pids")).read_text())
    try:
        assert [pid for pid in pids if selftest.alive(pid)] == []
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_what_a_kernel_writes_to_its_file_descriptors_is_shown_once(tmp_path, selftest_kernel, capsys,
                                                                    monkeypatch):
    # ipykernel (6 and later) sends such output to the notebook and echoes it to the descriptors the
    # kernel inherited; it leaves the descriptors alone where PYTEST_CURRENT_TEST is set, as in a test.
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    body = "import os, time\nos.write(2, b'a native notice\\n')\ntime.sleep(0.5)\nprint('a python line')"
    runner.execute(_framework(tmp_path, body), "cifar", runner.RunSettings(), tmp_path / "results")
    shown = capsys.readouterr().out
    assert shown.count("a native notice") == 1 and shown.count("a python line") == 1
    executed = next((tmp_path / "results" / "records").glob("*.ipynb"))
    assert "a native notice" in json.dumps(nbformat.read(executed, as_version=4).cells[-1]["outputs"])
    assert "a native notice" in runner.kernel_log(executed).read_text()  # and the kernel's own log has it


def test_kernels_start_with_tensorflows_cpp_notices_off(tmp_path, selftest_kernel, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    body = "import os\nopen(record_path + '.env', 'w').write(os.environ.get('TF_CPP_MIN_LOG_LEVEL', 'unset'))"
    runner.execute(_framework(tmp_path, body), "cifar", runner.RunSettings(), tmp_path / "results")
    assert next((tmp_path / "results" / "records").glob("*.env")).read_text() == "2"  # before TensorFlow loads
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's own setting wins
    assert processes.kernel_environment()["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_the_kernel_environment_sets_the_thread_variables(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    environment = processes.kernel_environment(3)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert environment[name] == "3"
    assert "XLA_FLAGS" not in environment  # XLA takes no count; one thread is its single-threaded Eigen
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=true")
    assert processes.kernel_environment(1)["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=false"
    assert processes.kernel_environment()["OMP_NUM_THREADS"] == str(len(os.sched_getaffinity(0)))  # every core


def test_threads_reach_the_kernel_environment_and_the_parameters(tmp_path, selftest_kernel):
    body = ("import os\nopen(record_path + '.env', 'w').write("
            "os.environ['OMP_NUM_THREADS'] + ' ' + os.environ['OPENBLAS_NUM_THREADS'] + ' ' + str(threads))")
    runner.execute(_framework(tmp_path, body), "cifar", runner.RunSettings(threads=3), tmp_path / "results")
    assert next((tmp_path / "results" / "records").glob("*.env")).read_text() == "3 3 3"


def test_the_docker_command_carries_the_thread_variables(tmp_path):
    from harness import docker
    from harness.frameworks import FRAMEWORKS
    command, _ = docker.run_command(FRAMEWORKS["pytorch"], tmp_path / "a.ipynb", tmp_path / "b.ipynb",
                                    {"threads": 2}, tmp_path, "name")
    assert "OMP_NUM_THREADS=2" in command and command[command.index("OMP_NUM_THREADS=2") - 1] == "-e"


def test_resume_difference_names_what_of_the_rule_changed():
    kernel = {"kind": "built", "flavour": "cpu", "python": "/envs/pytorch/bin/python"}
    earlier = {"data": {"source": "local copy", "sha256": "aaa"}, "kernel_environment": kernel,
               "environment": {"git_commit": "c1", "device": "cpu", "threads_requested": 2}, "epochs": 2}
    assert runner.resume_difference(earlier, earlier) == "no difference its record shows"
    now = {**earlier, "data": {"source": "local copy", "sha256": "bbb"}, "epochs": 3,
           "kernel_environment": {**kernel, "python": "/other/bin/python", "flavour": "cuda"},
           "environment": {**earlier["environment"], "threads_requested": 1}}
    assert runner.resume_difference(earlier, now) == (
        "other data (local copy aaa then, local copy bbb now); another kernel (its flavour, python); "
        "another threads asked for (2 then, 1 now); other sizes (epochs)")
