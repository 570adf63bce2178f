"""`rosetta bench --cluster` (harness/cluster.py) on a local Ray cluster started here: two nodes on this
machine (Ray takes its own address for them: it turns 127.0.0.1 into the machine's address), each with a custom resource standing in for a GPU type (Ray's accelerator_type:A
and accelerator_type:B), one CPU each. The runs use the selftest kernel (tests/helpers/cluster_node_run.py,
named by $ROSETTA_NODE_RUN on the nodes), but for one real run of PyTorch and JAX."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import selftest
from helpers import cluster_node_run

ray = pytest.importorskip("ray", reason="Ray is the optional extra 'cluster' (make test installs it)")
from ray.cluster_utils import Cluster  # noqa: E402

from harness import cli, cluster  # noqa: E402

NODE_MEMORY = 80 * 2**20  # each node's object store: the records and notebooks are small
HELPERS = Path(__file__).resolve().parent / "helpers"


def _node(resources: dict) -> dict:
    return dict(num_cpus=1, resources=resources, object_store_memory=NODE_MEMORY)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A Ray cluster of two nodes on 127.0.0.1 (types A and B), shut down after the module whatever happens.
    Its nodes run the selftest frameworks of tests/helpers/cluster_node_run.py (notebooks in ``.notebooks``)."""
    folder = tmp_path_factory.mktemp("cluster")
    notebooks = folder / "notebooks"
    notebooks.mkdir()
    kernel = folder / "jupyter" / "kernels" / selftest.KERNEL
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "selftest", "language": "python"}))
    variables = {"ROSETTA_NODE_RUN": f"{sys.executable} {HELPERS / 'cluster_node_run.py'}",
                 "ROSETTA_TEST_NOTEBOOKS": str(notebooks), "RAY_USAGE_STATS_ENABLED": "0",
                 # the kernels of the real runs find their environments as the checkout's `rosetta envs` made them,
                 # and the selftest kernel through JUPYTER_PATH
                 "JUPYTER_PATH": os.pathsep.join(filter(None, [str(folder / "jupyter"), os.environ.get("JUPYTER_PATH")]))}
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)  # the nodes' processes inherit them
    made = None
    try:
        made = Cluster(initialize_head=True, connect=False, head_node_args={
            **_node({"accelerator_type:A": 1}), "include_dashboard": False})
        second = made.add_node(**_node({"accelerator_type:B": 1}))
        made.wait_for_nodes()
        made.types = {made.head_node.node_id: "A", second.node_id: "B"}
        made.notebooks = notebooks
        yield made
    finally:
        if ray.is_initialized():  # a driver a failed test left connected: else the nodes cannot be removed
            ray.shutdown()
        if made is not None:
            made.shutdown()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def registered(ray_cluster, monkeypatch):
    """The selftest frameworks in this process's registry too (the driver's), removed after the test."""
    from harness import frameworks
    for name in ("selftest", "selfslow", "selfbuild"):
        monkeypatch.delitem(frameworks.FRAMEWORKS, name, raising=False)
    made = cluster_node_run.register(ray_cluster.notebooks)
    yield made
    for name in made:
        frameworks.FRAMEWORKS.pop(name, None)


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))]


def test_a_cluster_that_cannot_be_reached_is_one_line_before_anything_starts(tmp_path, capsys):
    with socket_bound() as port:
        status = cli.main(["run", "pytorch", "--device", "cpu", "--cluster", f"127.0.0.1:{port}",
                           "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and f"--cluster 127.0.0.1:{port}: cannot reach a Ray cluster there" in err
    assert not (tmp_path / "results" / "records").exists()


@pytest.mark.parametrize("command", ["run", "bench"])
def test_a_ray_client_address_is_refused_in_one_line_naming_it_and_what_to_use(tmp_path, capsys, command):
    """Ray Client (ray://HOST:10001) is not supported: the driver must be a node of the cluster."""
    status = cli.main([command, "pytorch", "--device", "cpu", "--cluster", "ray://head.example:10001",
                       "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert "--cluster ray://head.example:10001: Ray Client (ray://) is not supported" in err
    assert "--cluster auto" in err and "HOST:6379" in err
    assert not (tmp_path / "results").exists() and not ray.is_initialized()


def test_without_ray_the_cluster_option_names_the_extra_and_its_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where the extra is not installed
    status = cli.main(["bench", "pytorch", "--device", "cpu", "--cluster", "auto", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "optional extra 'cluster'" in err and "pip install -e" in err and "[cluster]" in err


def test_accelerator_and_retries_need_the_cluster(tmp_path, capsys):
    assert cli.main(["run", "pytorch", "--accelerator", "A", "--results", str(tmp_path)]) == 2
    assert "--accelerator: only with --cluster" in capsys.readouterr().err


def test_make_bench_cluster_passes_the_flags_and_installs_the_extra(tmp_path):
    def planned(*variables):  # a venv not made yet: make -n lists every step it would take
        done = subprocess.run(["make", "-n", "bench", "FRAMEWORKS=pytorch", f"VENV={tmp_path / 'venv'}", *variables],
                              cwd=cluster.REPOSITORY, capture_output=True, text=True)
        return done.stdout.splitlines()

    lines = planned("CLUSTER=auto", "ACCELERATOR=H100 A100", "RETRIES=1")
    bench = next(line.split() for line in lines if "rosetta bench" in line)
    assert bench[bench.index("--cluster") + 1] == "auto" and bench[bench.index("--retries") + 1] == "1"
    assert bench[bench.index("--accelerator") + 1:bench.index("--accelerator") + 3] == ["H100", "A100"]
    assert any("-e '.[cluster]'" in line for line in lines)
    plain = planned()
    bench = next(line.split() for line in plain if "rosetta bench" in line)
    assert "--cluster" not in bench and "--accelerator" not in bench
    assert not any("[cluster]" in line for line in plain)  # no Ray where no cluster is asked for


class socket_bound:
    """A loopback port bound but not listening: connections to it are refused."""

    def __enter__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


def test_each_accelerator_type_runs_only_on_its_nodes_and_records_come_back_from_both(
        ray_cluster, registered, tmp_path, capsys):
    results = tmp_path / "results"
    status = cli.main(["bench", "selftest", "--benchmark", "cifar", "--device", "cpu", "--repeats", "2",
                       "--cluster", ray_cluster.address, "--accelerator", "A", "B", "--results", str(results),
                       "--epochs", "1", "--train-samples", "128", "--test-samples", "100"])
    out = capsys.readouterr().out
    assert status == 0, out
    found = _records(results)
    assert len(found) == 4 and {r["status"] for r in found} == {"ok"}
    for r in found:  # each type's runs on its node, and only there
        assert ray_cluster.types[r["cluster"]["node_id"]] == r["cluster"]["accelerator"]
        assert r["cluster"]["ip"] == ray_cluster.head_node.node_ip_address and r["cluster"]["host"]
        stem = r["notebook"][len("records/"):-len(".ipynb")]
        assert (results / r["notebook"]).is_file() and (results / "records" / f"{stem}.kernel.log").is_file()
    assert sorted((r["seed"], r["cluster"]["accelerator"]) for r in found) == [(42, "A"), (42, "B"), (43, "A"),
                                                                                (43, "B")]
    assert {r["epochs"] for r in found} == {1} and {r["train_samples"] for r in found} == {128}
    table = (results / "README.md").read_text()  # a section, with its table, per type
    assert "## CPU: " in table and "(nodes of type A)" in table and "(nodes of type B)" in table
    assert not list((results / "records" / ".reserved").iterdir())
    # the parity check once on each node, pinned to it, before any run: brought back naming the node
    checks = [json.loads(p.read_text()) for p in sorted((results / "parity").glob("*.json"))]
    assert sorted(c["cluster"]["node_id"] for c in checks) == sorted(ray_cluster.types)
    assert all(c["framework"] == "Selftest" and c["equivalent"] is False and "wrote no parity outputs" in c["message"]
               and (results / "parity" / c["notebook"]).is_file() for c in checks)
    lines = out.splitlines()
    parity_lines = [n for n, line in enumerate(lines) if line.startswith("[parity Selftest cifar] on node ")]
    run_lines = [n for n, line in enumerate(lines) if line.startswith("[selftest/cifar] ok on node ")]
    assert len(parity_lines) == 2 and len(run_lines) == 4 and max(parity_lines) < min(run_lines)
    assert "| **no** (on node " in table and "wrote no parity outputs" in table  # as on one machine
    assert len(list((results / "parity").glob("*-node-*.task.log"))) == 2  # each node's parity task's output
    assert not list((results / "parity" / ".reserved").iterdir())


def test_a_node_that_joins_after_the_start_checks_parity_in_its_first_task_before_its_runs(
        ray_cluster, registered, tmp_path, capsys):
    """No node of type E at the start: the bench starts (no node to check), then one joins with two CPUs and
    both runs land on it at once. One of them checks its parity first; the other waits for that check."""
    import threading

    results, outcome, out = tmp_path / "results", {}, []
    argv = ["bench", "selftest", "--benchmark", "cifar", "--device", "cpu", "--repeats", "2", "--cluster",
            ray_cluster.address, "--accelerator", "E", "--results", str(results)]
    driver = threading.Thread(target=lambda: outcome.update(status=cli.main(argv)), daemon=True)
    driver.start()
    late = None
    try:
        deadline = time.monotonic() + 60
        while not any("cluster: the parity check first, on each of the 0 node(s)" in text for text in out):
            assert driver.is_alive() and time.monotonic() < deadline, f"the bench did not start: {outcome} {out}"
            time.sleep(0.2)
            out.append(capsys.readouterr().out)
        late = ray_cluster.add_node(**{**_node({"accelerator_type:E": 1}), "num_cpus": 2})
        driver.join(timeout=120)
        assert not driver.is_alive(), "the bench did not end within 120 s of the node joining"
    finally:
        if late is not None:
            ray_cluster.remove_node(late)
            for mark in (Path(tempfile.gettempdir()) / cluster.PARITY_MARKS).glob(f"*-{late.node_id}.*"):
                mark.unlink()  # the bench's marks on the node (SESSION-NODE.lock and .done)
    out = "".join(out) + capsys.readouterr().out
    assert outcome["status"] == 0, out
    checks = [json.loads(p.read_text()) for p in sorted((results / "parity").glob("*.json"))]
    assert [c["cluster"]["node_id"] for c in checks] == [late.node_id], out  # once, on the node that joined
    assert checks[0]["framework"] == "Selftest" and "wrote no parity outputs" in checks[0]["message"]
    assert len(list((results / "parity").glob("*-node-*.task.log"))) == 1
    found = _records(results)
    assert [r["status"] for r in found] == ["ok", "ok"] and {r["cluster"]["node_id"] for r in found} == {late.node_id}
    assert "joined after the start; its parity check ran first, in the task of [selftest/cifar]" in out
    logs = [p.read_text() for p in sorted((results / "records").glob("*.task.log"))]
    assert sorted("parity: another task is checking this node" in log for log in logs) == [False, True]
    assert "| **no** (on node " in (results / "README.md").read_text()
    assert not list((Path(tempfile.gettempdir()) / cluster.PARITY_MARKS).glob(f"*-{late.node_id}.*"))


def test_a_failed_parity_on_one_node_shows_in_the_table_until_that_node_passes(tmp_path):
    """The table's Equivalent cell: per node the newest check, and of those a failure over a pass."""
    from harness import columns, records
    folder = tmp_path / "parity"
    folder.mkdir()

    def check(stamp, node, equivalent):
        (folder / f"2026120{stamp}-000000-selftest-cifar.json").write_text(json.dumps({
            "framework": "Selftest", "benchmark": "cifar", "variant": "fp32",
            "status": "ok" if equivalent else "failed", "equivalent": equivalent, "message": "equivalent" if equivalent else f"differs on {node}",
            "timestamp": f"2026-12-0{stamp}T00:00:00+0000", "cluster": {"host": "h", "node_id": node * 8}}))

    check(1, "a", False)
    check(2, "b", True)  # a pass on another node, later: node a's failure still shows
    cell = columns.equivalence(records.latest_parity(tmp_path), "Selftest", "cifar")
    assert cell.startswith("**no** (on node h, Ray node aaaaaaaa)") and "differs on a" in cell
    check(3, "a", True)  # node a checked again and passes
    assert columns.equivalence(records.latest_parity(tmp_path), "Selftest", "cifar") == "yes"


def test_a_run_whose_task_never_reached_a_node_says_so_in_its_record_and_the_report(tmp_path):
    """Every record of a cluster task has its ``cluster`` field; where the task had not started on a node
    (lost before it was placed), it says so rather than naming none, and the report's notes too."""
    from harness import report
    job = cluster.Job(selftest.framework(tmp_path / "n.ipynb", "pass"), "cifar", 0, 42, "A", False)
    found = cluster.write_failure(tmp_path / "results", job, "lost", "lost before it started", None)
    assert found["cluster"] == {"host": None, "ip": None, "node_id": None, "not_started": True,
                                "accelerator": "A", "attempt": 1}
    assert "on cluster node(s) no node" in report.render(tmp_path / "results").read_text()


def test_resume_across_the_cluster_judges_each_record_on_its_node_as_on_one_machine(
        ray_cluster, registered, tmp_path, capsys, monkeypatch):
    """An ok record goes with its run's task; the node's `rosetta run --resume` skips the run where it holds
    there (runner.finished_runs: data checksum and kernel too), and runs it again where the node's data differ."""
    monkeypatch.setattr(cli.machine, "git_commit", lambda: cluster_node_run.COMMIT)  # the nodes' records say it
    checksum = ray_cluster.notebooks / "data.sha256"  # the data the nodes find (cluster_node_run.py)
    checksum.unlink(missing_ok=True)
    results = tmp_path / "results"
    argv = ["run", "selftest", "--benchmark", "cifar", "--device", "cpu", "--cluster", ray_cluster.address,
            "--accelerator", "A", "B", "--results", str(results)]
    try:
        assert cli.main(argv) == 0
        first = _records(results)
        (results / "records" / sorted((results / "records").glob("*.json"))[0].name).unlink()  # one to run again
        assert cli.main(argv + ["--resume"]) == 0
        out = capsys.readouterr().out
        again = _records(results)
        assert len(first) == 2 and len(again) == 2 and "resume: 1 run(s) already have an ok record" in out, out
        assert {r["cluster"]["accelerator"] for r in again} == {"A", "B"}
        assert out.count("] skipped (--resume) on node ") == 1 and "resume: skipped 1 run(s)" in out
        checksum.write_text("other-data")  # the nodes' data now differ from the records'
        assert cli.main(argv + ["--resume"]) == 0
        out = capsys.readouterr().out
        assert "resume: 2 run(s) already have an ok record" in out and "skipped (--resume) on" not in out
        assert out.count("] run again (--resume) on node ") == 2, out
        assert "other data (path selftest-data then, path other-data now)" in out
        found = _records(results)
        assert len(found) == 4 and sorted(r["data"]["sha256"] for r in found) == ["other-data"] * 2 + ["selftest-data"] * 2
    finally:
        checksum.unlink(missing_ok=True)


def test_each_variant_is_a_task_of_its_own_named_as_rosetta_run_names_it_and_resumed_per_variant(
        ray_cluster, registered, tmp_path, capsys, monkeypatch):
    """fp32, channels_last and bf16 each a task; bf16, which the notebook does not offer, an unsupported
    record made on its node, naming it, as `rosetta run` makes it there; --resume then skips per variant."""
    monkeypatch.setattr(cli.machine, "git_commit", lambda: cluster_node_run.COMMIT)
    results = tmp_path / "results"
    argv = ["run", "selftest", "--benchmark", "cifar", "--device", "cpu", "--cluster", ray_cluster.address,
            "--variant", "fp32", "channels_last", "bf16", "--results", str(results)]
    assert cli.main(argv) == 0  # an unsupported variant is an answer, not a failure
    out = capsys.readouterr().out
    assert "3 run(s), each a task" in out
    assert "[selftest/cifar bf16] unsupported on node " in out and "no bfloat16 in a selftest" in out
    names = sorted(p.name.split("-", 2)[2] for p in (results / "records").glob("*.json"))
    assert names == ["selftest-cifar-bf16.json", "selftest-cifar-channels_last.json", "selftest-cifar.json"]
    found = {r["variant"]: r for r in _records(results)}
    assert {v: r["status"] for v, r in found.items()} == {"fp32": "ok", "channels_last": "ok", "bf16": "unsupported"}
    assert found["channels_last"]["precision"]["memory_format"] == "channels_last"
    assert found["channels_last"]["cluster"]["node_id"] in ray_cluster.types
    assert found["bf16"]["cluster"]["node_id"] in ray_cluster.types and found["bf16"]["environment"]["cpu_count"]
    assert found["bf16"]["cluster"]["host"] in (results / "README.md").read_text()  # the notes name the node
    assert "device not recorded" not in (results / "README.md").read_text()
    for path in (results / "records").glob("*-selftest-cifar-channels_last.json"):
        path.unlink()  # the one to run again
    assert cli.main(argv + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "resume: 1 run(s) already have an ok record" in out and "3 run(s), each a task" in out
    assert "[selftest/cifar] skipped (--resume) on node " in out
    again = [r for r in _records(results) if r["status"] == "ok"]
    assert sorted(r["variant"] for r in again) == ["channels_last", "fp32"]


def test_an_environment_not_built_on_a_node_is_built_there_on_first_use_once(
        ray_cluster, registered, tmp_path, capsys):
    """Two runs at once, one per node (one machine here, so one environment folder): the first to get the
    machine's build lock runs `rosetta envs selfbuild` (a fake build), the other then finds it built."""
    for name in ("selfbuild.built", "selfbuild.builds"):
        (ray_cluster.notebooks / name).unlink(missing_ok=True)
    results = tmp_path / "results"
    status = cli.main(["run", "selfbuild", "--benchmark", "cifar", "--device", "cpu", "--repeats", "2",
                       "--cluster", ray_cluster.address, "--results", str(results)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert [r["status"] for r in _records(results)] == ["ok", "ok"]
    assert len((ray_cluster.notebooks / "selfbuild.builds").read_text().splitlines()) == 1
    logs = [p.read_text() for p in sorted((results / "records").glob("*.task.log"))]
    assert len(logs) == 2 and sum("building selfbuild (cpu flavour)" in log for log in logs) == 1
    assert any("Selfbuild: its environment is not built: run `rosetta envs selfbuild`; building it now: rosetta "
               "envs selfbuild" in log for log in logs)


def _wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds:.0f} s"
        time.sleep(0.2)


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while selftest.alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_node_lost_mid_run_gives_a_lost_record_naming_it_and_the_run_starts_again_elsewhere(
        ray_cluster, registered, tmp_path, capsys):
    import threading

    doomed = ray_cluster.add_node(**_node({"accelerator_type:C": 1}))
    spare = None
    marker = ray_cluster.notebooks / "selfslow.started"
    marker.unlink(missing_ok=True)
    results, outcome = tmp_path / "results", {}
    argv = ["run", "selfslow", "--benchmark", "cifar", "--device", "cpu", "--cluster", ray_cluster.address,
            "--accelerator", "C", "--retries", "1", "--results", str(results)]
    driver = threading.Thread(target=lambda: outcome.update(status=cli.main(argv)), daemon=True)
    driver.start()
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():  # the run started on the doomed node, or the driver stopped
            assert driver.is_alive(), f"the driver ended with {outcome}: {capsys.readouterr()}"
            assert time.monotonic() < deadline, "the run did not start on the doomed node within 180 s"
            time.sleep(0.2)
        kernel = int(marker.read_text())
        ray_cluster.remove_node(doomed)  # its raylet and workers killed, as a lost machine's
        spare = ray_cluster.add_node(**_node({"accelerator_type:C": 1}))  # where the run can start again
        driver.join(timeout=120)
        assert not driver.is_alive()
        assert _gone(kernel, 30), "the lost node's kernel still runs"
    finally:
        for node in (spare,):
            if node is not None:
                ray_cluster.remove_node(node)
        marker.unlink(missing_ok=True)
    found = _records(results)
    lost = [r for r in found if r["status"] == "lost"]
    ok = [r for r in found if r["status"] == "ok"]
    assert len(lost) == 1 and len(ok) == 1, [(r["status"], r.get("error")) for r in found]
    assert lost[0]["cluster"]["node_id"] == doomed.node_id and doomed.node_id[:12] in lost[0]["error"]
    # the lost run's task described its node's machine as it started: its record is filed with the retry's, under
    # type C (where the retry's ok row is the one shown, and the notes name the retry's node)
    notes = (results / "README.md").read_text()
    assert lost[0]["environment"]["cpu"] == ok[0]["environment"]["cpu"] and "device not recorded" not in notes
    assert "(nodes of type C)" in notes and f"on cluster node(s) {ok[0]['cluster']['host']} (Ray node {spare.node_id[:12]})" in notes
    assert ok[0]["cluster"]["node_id"] == spare.node_id and ok[0]["cluster"]["attempt"] == 2
    assert outcome["status"] == 1  # a lost run is not ok, though its second attempt is
    left = [f.name for f in Path(tempfile.gettempdir()).glob(cluster.STAGING + "*-*")
            if not selftest.alive(int(f.name[len(cluster.STAGING):].split("-")[0]))]
    assert not left, f"the lost task's folder was left behind: {left}"


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_on_the_driver_cancels_every_task_and_leaves_no_kernel(ray_cluster, registered, tmp_path, number):
    """Ctrl-C (SIGINT), and SIGTERM too (ray.init installs a handler of its own for it)."""
    marker = ray_cluster.notebooks / "selfslow.started"
    marker.unlink(missing_ok=True)
    results = tmp_path / "results"
    driver = subprocess.Popen(
        [sys.executable, str(HELPERS / "cluster_driver.py"), str(ray_cluster.notebooks), "run", "selfslow", "selftest",
         "--benchmark", "cifar", "--device", "cpu", "--cluster", ray_cluster.address, "--accelerator", "A",
         "--repeats", "3", "--results", str(results)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(marker, 180)
        kernel = int(marker.read_text())
        driver.send_signal(number)
        output, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
        marker.unlink(missing_ok=True)
    assert driver.returncode == 128 + number, output
    assert _gone(kernel, 30), "the cancelled run's kernel still runs"
    found = _records(results)
    interrupted = [r for r in found if r["status"] == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0]["framework"] == "Selfslow", output
    assert ray_cluster.types[interrupted[0]["cluster"]["node_id"]] == "A" and interrupted[0]["environment"]["cpu_count"]
    assert "cancelled" in output
    assert len(found) == 1  # the five runs not started (type A has one CPU) were cancelled, not recorded


@pytest.mark.kernel
def test_pytorch_and_jax_share_the_cluster_and_come_back_from_both_nodes(ray_cluster, tmp_path, tiny_cifar, capsys):
    """One tiny real CIFAR-10 run each (the tiny archive, one epoch, one thread), in the nodes' own kernels
    (`rosetta envs pytorch jax` in this checkout)."""
    results = tmp_path / "results"
    status = cli.main(["run", "pytorch", "jax", "--benchmark", "cifar", "--device", "cpu", "--epochs", "1",
                       "--batch-size", "32", "--threads", "1", "--no-export", "--cifar", str(tiny_cifar),
                       "--data-dir", str(tmp_path / "cache"), "--cluster", ray_cluster.address,
                       "--results", str(results)])
    out = capsys.readouterr().out
    found = _records(results)
    assert status == 0, out[-3000:]
    assert sorted(r["framework"] for r in found) == ["JAX (Flax)", "PyTorch"]
    assert all(r["status"] == "ok" and r["epochs"] == 1 and (results / r["notebook"]).is_file() for r in found)
    # one CPU per node and one per task: the two tasks ran at once, one on each node
    assert {r["cluster"]["node_id"] for r in found} == set(ray_cluster.types)
    assert {r["environment"]["device"] for r in found} == {"cpu"}


def test_a_run_that_brings_no_record_back_is_recorded_as_failed_with_the_nodes_words(
        ray_cluster, registered, tmp_path, capsys, monkeypatch):
    """A framework the driver knows and the nodes do not (a node's checkout at another commit): the
    node's `rosetta run` refuses it, and the driver records the run as failed, naming the node."""
    from harness import frameworks
    only_here = selftest.framework(tmp_path / "selfonly.ipynb", "pass", name="selfonly")
    monkeypatch.setitem(frameworks.FRAMEWORKS, "selfonly", only_here)
    results = tmp_path / "results"
    status = cli.main(["run", "selfonly", "--benchmark", "cifar", "--device", "cpu", "--cluster",
                       ray_cluster.address, "--accelerator", "B", "--results", str(results)])
    found = _records(results)
    assert status == 1 and len(found) == 1 and found[0]["status"] == "failed"
    assert found[0]["framework"] == "Selfonly" and ray_cluster.types[found[0]["cluster"]["node_id"]] == "B"
    assert "wrote 0 records (exit status 2)" in found[0]["error"] and "selfonly" in found[0]["error"]
    assert found[0]["environment"]["device"] == "cpu" and found[0]["environment"]["cpu_count"]  # the node's machine


@pytest.mark.kernel
def test_resume_of_a_real_run_is_judged_on_its_node_with_its_kernel_and_data(ray_cluster, tmp_path, tiny_cifar, capsys):
    """PyTorch's real kernel and data: the node skips the run its ok record holds for, and runs it again on
    another archive, saying the data differ (the node's commit must be clean, as for a local --resume)."""
    from fakedata import make_cifar_tarball
    commit = cli.machine.git_commit()
    if not commit or commit.endswith("-dirty"):
        pytest.skip(f"the checkout's commit is {commit}: a node's --resume skips nothing there")
    results = tmp_path / "results"
    argv = ["run", "pytorch", "--benchmark", "cifar", "--device", "cpu", "--epochs", "1", "--batch-size", "32",
            "--threads", "1", "--no-export", "--train-samples", "200", "--test-samples", "100",
            "--data-dir", str(tmp_path / "cache"), "--cluster", ray_cluster.address, "--results", str(results)]
    assert cli.main(argv + ["--cifar", str(tiny_cifar)]) == 0
    capsys.readouterr()
    assert cli.main(argv + ["--cifar", str(tiny_cifar), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "[pytorch/cifar] skipped (--resume) on node " in out and len(_records(results)) == 1, out[-3000:]
    (tmp_path / "other").mkdir()
    other = make_cifar_tarball(tmp_path / "other" / "cifar-10-python.tar.gz", seed=7)
    assert cli.main(argv + ["--cifar", str(other), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "[pytorch/cifar] run again (--resume) on node " in out and "other data (local copy " in out, out[-3000:]
    assert len(_records(results)) == 2


def _exported_outcome(source: str, node: dict, checked: dict | None) -> dict:
    """What a bench task brings back from its node: an ok run of Selftest's cifar notebook whose record
    (``source``, as the node named it) has an export, and where ``checked`` is given, that export's ONNX
    check (``onnx/SOURCE.json``) as the node's `rosetta onnx` wrote it."""
    from common import machine, record
    run = record.build(framework="Selftest", api="test", benchmark="cifar", accuracy=0.25, epochs=1, batch_size=32,
                       train_samples=200, test_samples=100, seed=42, environment=machine.capture("cpu", {}),
                       timing={"train_seconds": 1.0, "first_epoch_seconds": 1.0})
    run.update(notebook=f"records/{source}.ipynb", export=f"exports/{source}")
    files = {f"records/{source}.json": json.dumps(run).encode(), f"records/{source}.ipynb": b"{}",
             f"exports/{source}/export.json": b"{}"}
    if checked is not None:
        files[f"onnx/{source}.json"] = json.dumps(checked).encode()
    return {"node": node, "returncode": 0, "output": "onnx: the node's last words\n", "files": files}


def test_an_exports_onnx_check_made_on_its_node_is_stored_under_the_runs_name_and_type(tmp_path):
    """`store`: the ONNX check a bench task made after its run comes back as results/onnx/STEM.json, STEM
    the run's name in this folder; it points at the run's notebook and export there, names the node, and is
    filed under the run's device and --accelerator type (which the node's own record did not know yet)."""
    from harness import records, report
    node = {"host": "nodehost", "ip": "10.0.0.7", "node_id": "e" * 40}
    job = cluster.Job(selftest.framework(tmp_path / "n.ipynb", "pass"), "cifar", 0, 42, "A", True)
    checked = {"kind": "onnx", "framework": "Selftest", "benchmark": "cifar", "device": "cpu", "status": "ok",
               "ok": True, "message": "all three checks pass", "device_group": "CPU: as the node saw it",
               "run": "records/20261207-120000-selftest-cifar.ipynb", "export_dir": "exports/20261207-120000-selftest-cifar",
               "git_commit": "abc"}
    results = tmp_path / "results"
    stored = cluster.store(results, job, _exported_outcome("20261207-120000-selftest-cifar", node, checked), True)
    stem = Path(stored["notebook"]).stem
    assert (results / "records" / f"{stem}.json").is_file() and (results / stored["export"] / "export.json").is_file()
    found = json.loads((results / "onnx" / f"{stem}.json").read_text())
    assert found["ok"] is True and found["message"] == "all three checks pass"
    assert found["run"] == stored["notebook"] and found["export_dir"] == stored["export"] == f"exports/{stem}"
    assert found["cluster"]["node_id"] == node["node_id"] and found["cluster"]["accelerator"] == "A"
    assert found["device_group"] == records.device_group(stored) and found["device_group"].endswith("(nodes of type A)")
    assert "### Exported to ONNX" in report.render(results).read_text()

    # an export whose check brought no record back: a failed check naming the node, not a missing row
    results = tmp_path / "lost"
    stored = cluster.store(results, job, _exported_outcome("20261207-130000-selftest-cifar", node, None), True)
    found = json.loads((results / "onnx" / f"{Path(stored['notebook']).stem}.json").read_text())
    assert found["status"] == "failed" and found["ok"] is False and found["cluster"]["node_id"] == node["node_id"]
    assert "the ONNX check on node nodehost (10.0.0.7" in found["message"] and "the node's last words" in found["message"]

    # `rosetta run --cluster` asks for no check: none is made up
    results = tmp_path / "run"
    cluster.store(results, job, _exported_outcome("20261207-140000-selftest-cifar", node, None), False)
    assert not (results / "onnx").exists()


NODE_STEPS = """
import pathlib, sys
command, folder = sys.argv[1], pathlib.Path(sys.argv[sys.argv.index("--results") + 1])
if command == "run":
    if sys.argv[2] != "skipped":  # `--resume` skipped it: no record of its own
        (folder / "records").mkdir(exist_ok=True)
        (folder / "records" / "new.json").write_text("{}")
    sys.exit(1 if sys.argv[2] == "failed" else 0)
(folder / "onnx").mkdir(exist_ok=True)
(folder / "onnx" / "new.json").write_text("{}")
"""


@pytest.mark.parametrize("run, checked", [("ok", True), ("failed", False), ("skipped", False)])
def test_the_onnx_check_follows_only_a_run_that_wrote_a_record_and_exited_0(tmp_path, monkeypatch, run, checked):
    """A task's ``after`` commands (its ONNX check) run in its results folder after a run that exited 0
    with a record of its own; not after a failed run, nor after one that `--resume` skipped (the earlier
    record given to it is not its own)."""
    script = tmp_path / "node_steps.py"
    script.write_text(NODE_STEPS)
    monkeypatch.setenv(cluster.NODE_RUN_VARIABLE, f"{sys.executable} {script}")
    given = {"records/earlier.json": b"{}"} if run == "skipped" else {}
    done = cluster._commands([["run", run]], dict(os.environ), given, (), [["onnx", "selftest"]])
    assert ("onnx/new.json" in done["files"]) is checked, done
    assert done["returncode"] == (1 if run == "failed" else 0)


@pytest.mark.kernel
def test_a_bench_on_the_cluster_checks_each_export_in_onnx_runtime_on_the_node_that_made_it(
        ray_cluster, tmp_path, tiny_cifar, capsys):
    """PyTorch's real kernel on a node of type B, its export on (one batch size, one timed run): the node's
    `rosetta onnx` checks it there, and the check comes back beside the run, naming the same node, in the
    table of type B's runs."""
    results = tmp_path / "results"
    status = cli.main(["bench", "pytorch", "--benchmark", "cifar", "--device", "cpu", "--epochs", "1",
                       "--batch-size", "32", "--threads", "1", "--train-samples", "200", "--test-samples", "100",
                       "--export-batch-sizes", "1", "--export-runs", "1", "--skip-parity", "--cifar", str(tiny_cifar),
                       "--data-dir", str(tmp_path / "cache"), "--cluster", ray_cluster.address, "--accelerator", "B",
                       "--results", str(results)])
    out = capsys.readouterr().out
    [run] = _records(results)
    assert status == 0 and run["status"] == "ok" and run["export"], out[-3000:]
    checks = [json.loads(p.read_text()) for p in (results / "onnx").glob("*.json")]
    assert len(checks) == 1 and checks[0]["ok"] is True, (checks, out[-3000:])
    assert checks[0]["cluster"]["node_id"] == run["cluster"]["node_id"]
    assert ray_cluster.types[run["cluster"]["node_id"]] == "B"
    assert checks[0]["run"] == run["notebook"] and checks[0]["device_group"].endswith("(nodes of type B)")
    [log] = (results / "records").glob("*.task.log")  # the task's whole output on its node: the run, then the check
    assert "[PyTorch/cifar onnx] checking exports/" in log.read_text()
    assert "### Exported to ONNX" in (results / "README.md").read_text()


def test_a_docker_bench_checks_each_nodes_parity_in_its_images(tmp_path):
    """The nodes' parity commands follow the runs: `--docker` in the images, else the venvs built on first use."""
    for flags, expected, absent in (([], "--build-envs", "--docker"), (["--docker"], "--docker", "--build-envs")):
        args = cli.resolve_paths(cli.parse(["bench", "pytorch", "jax", "--benchmark", "cifar", "--variant", "fp32",
                                            "bf16", "--results", str(tmp_path), *flags]))
        commands = cluster.parity_commands(args, cli.select(args.frameworks))
        assert [c[:5] for c in commands] == [["parity", "pytorch", "jax", "--benchmark", "cifar"]] * 2
        assert all(expected in c and absent not in c for c in commands), commands


def test_a_node_whose_check_never_came_back_is_checked_after_its_runs(ray_cluster, registered, tmp_path, capsys,
                                                                      monkeypatch):
    """A node that joined after the start (here: none is checked at the start) whose check was made in a task
    lost before it returned: its mark says checked, so its later tasks check nothing and bring no check back.
    The driver sees runs come back from a node with no check, and checks it then, a task pinned to it."""
    monkeypatch.setattr(cluster, "parity_nodes", lambda ray, args, gpu: [])  # every node counts as joined later
    monkeypatch.setattr(cluster, "session", lambda: "lost-check-test")
    marks = Path(tempfile.gettempdir()) / cluster.PARITY_MARKS
    marks.mkdir(exist_ok=True)
    made = [marks / f"lost-check-test-{node_id}.done" for node_id in ray_cluster.types]
    try:
        for mark in made:  # as the lost task left them: checked on the node, nothing at the driver
            mark.touch()
        results = tmp_path / "results"
        status = cli.main(["bench", "selftest", "--benchmark", "cifar", "--device", "cpu", "--cluster",
                           ray_cluster.address, "--accelerator", "A", "--results", str(results)])
    finally:
        for mark in made:
            mark.unlink(missing_ok=True)
    out = capsys.readouterr().out
    assert status == 0, out
    [run] = _records(results)
    head = run["cluster"]["node_id"]
    assert ray_cluster.types[head] == "A"
    checks = [json.loads(p.read_text()) for p in sorted((results / "parity").glob("*.json"))]
    assert [c["cluster"]["node_id"] for c in checks] == [head], out
    assert "whose parity check did not (it was made in a task lost before it returned); checking it now" in out
    lines = out.splitlines()
    assert (max(n for n, line in enumerate(lines) if line.startswith("[selftest/cifar] ok on node "))
            < min(n for n, line in enumerate(lines) if line.startswith("[parity Selftest cifar] on node ")))
    assert "| **no** (on node " in (results / "README.md").read_text()
