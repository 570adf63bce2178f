"""The ONNX export: the notebooks' export step (common/export.py), the checks in ONNX Runtime
(common/onnx_check.py, run by harness/onnx.py) and the report's ONNX tables.

The kernel tests check the export of every framework's short run (tests/conftest.py runs every
short run with its export on) in the ONNX Runtime environment, and that a deliberately wrong
export, PyTorch's GRU turned into the other GRU (``linear_before_reset=0``), fails with a message
naming that difference.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import REPOSITORY, canonical, export, record
from conftest import SHORT_EXPORT
from harness import onnx, records, report, runner, venvs
from harness.frameworks import FRAMEWORKS

# What each framework's export comes to: "ok" (all three checks pass) or "no exporter".
EXPECTED = {name: "ok" for name in FRAMEWORKS}
EXPECTED["lasagne"] = "no exporter"
EXPECTED["keras2-theano"] = "no exporter"  # Theano: the same reason as Lasagne's
LATENCY_FIELDS = {"batch_size", "runs", "warmup", "median_seconds", "p90_seconds", "samples_per_second"}


# --- the notebook side: common/export.py --------------------------------------------------------

def test_latencies_time_each_batch_size_after_a_warm_up():
    calls = []
    found = export.latencies(lambda x: calls.append(len(x)), np.zeros((5, 3)), batch_sizes=(1, 7), runs=4, warmup=2)
    assert calls == [1] * 6 + [7] * 6  # the smaller test set is cycled up to the batch size
    assert [entry["batch_size"] for entry in found] == [1, 7]
    for entry in found:
        assert set(entry) == LATENCY_FIELDS and entry["runs"] == 4 and entry["warmup"] == 2
        assert 0 < entry["median_seconds"] <= entry["p90_seconds"]
        assert entry["samples_per_second"] == pytest.approx(entry["batch_size"] / entry["median_seconds"])


def _step(folder, body, benchmark="imdb", **options):
    x = np.arange(40 * 150, dtype=np.int32).reshape(40, 150) % 30000
    weights = canonical.initial_weights("gru", 1)
    with export.step(folder, "Made-up", benchmark, lambda batch: np.ones((len(batch), 2), np.float32), x,
                     np.zeros(40, np.int64), weights, layout="NT", threads=1, batch_sizes=[1, 2], runs=2,
                     **options) as out:
        body(out)
    return json.loads((Path(folder) / "export.json").read_text())


def test_export_step_writes_what_the_check_reads(tmp_path):
    def body(out):
        assert out.batch.shape == (export.BATCH, 150)
        Path(out.model_path).write_bytes(b"not a real model")
        out.exporter("a made-up exporter", {"maker": "1.0"}, export_forward="a note")

    info = _step(tmp_path, body)
    assert info["status"] == "exported" and info["models"] == ["model.onnx"]
    assert info["exporter"] == "a made-up exporter" and info["exporter_versions"] == {"maker": "1.0"}
    assert info["export_forward"] == "a note" and info["layout"] == "NT" and info["model"] == "gru"
    assert [entry["batch_size"] for entry in info["framework_latencies"]] == [1, 2]
    arrays = np.load(tmp_path / "arrays.npz")
    assert arrays["batch"].shape == (16, 150) and arrays["logits"].shape == (16, 2)
    assert arrays["x_test"].shape == (40, 150) and arrays["predicted"].dtype == np.int64
    weights, _ = canonical.load(tmp_path / "weights.npz", "gru")
    assert set(weights) == set(canonical.LAYOUTS["gru"])


def test_an_export_that_raises_is_recorded_and_the_notebook_goes_on(tmp_path, capsys):
    def body(out):
        raise RuntimeError("the exporter does not know GRU")

    info = _step(tmp_path, body)  # no exception escapes
    assert info["status"] == "export failed"
    assert info["error"] == "RuntimeError: the exporter does not know GRU"
    assert "export failed: RuntimeError" in capsys.readouterr().err


def test_an_export_that_writes_no_model_fails(tmp_path):
    info = _step(tmp_path, lambda out: None)
    assert info["status"] == "export failed" and "wrote no model.onnx" in info["error"]


def test_no_exporter_records_its_reason(tmp_path):
    info = export.no_exporter(tmp_path, "Lasagne (Theano)", "cifar", "NCHW", "Theano has no ONNX exporter")
    assert info["status"] == "no exporter" and info["error"] == "Theano has no ONNX exporter"
    assert export.read(tmp_path)["status"] == "no exporter"


@pytest.mark.parametrize("sizes, runs, message", [([0], 3, "export_batch_sizes"), ([], 3, "export_batch_sizes"),
                                                  ([1], 0, "export_runs")])
def test_bad_export_settings_are_refused_before_anything_runs(tmp_path, sizes, runs, message):
    with pytest.raises(ValueError, match=message):
        with export.step(tmp_path, "X", "imdb", lambda b: b, np.zeros((2, 150), np.int32), [0, 0],
                         canonical.initial_weights("gru", 1), layout="NT", batch_sizes=sizes, runs=runs):
            pass


def test_a_wrong_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="layout for cifar must be one of NCHW, NHWC, got 'NT'"):
        export.no_exporter(tmp_path, "X", "cifar", "NT", "reason")


def test_export_read_names_the_file_it_cannot_read(tmp_path):
    with pytest.raises(ValueError, match=r"export\.json: not an export record"):
        export.read(tmp_path)


# --- the harness side: runs, the command, the report ------------------------------------------

def test_only_an_export_run_gets_an_export_folder(tmp_path):
    record_path = tmp_path / "records" / "20261204-120000-pytorch-imdb.json"
    on = runner.RunSettings(export=True, export_batch_sizes=[1, 8], export_runs=3)
    parameters = on.notebook_parameters("imdb", record_path)
    assert parameters["export_dir"] == str(tmp_path / "exports" / "20261204-120000-pytorch-imdb")
    assert parameters["export_batch_sizes"] == [1, 8] and parameters["export_runs"] == 3
    assert runner.RunSettings().notebook_parameters("imdb", record_path)["export_dir"] is None


def test_only_the_first_repeat_exports(monkeypatch, tmp_path):
    from harness import cli

    seen = []
    monkeypatch.setattr(runner, "run_all", lambda frameworks, benchmarks, settings, *a, **k: seen.append(
        (settings.seed, settings.export)) or [])
    monkeypatch.setattr(report, "render", lambda results: results / "README.md")
    assert cli.main(["run", "pytorch", "--repeats", "3", "--results", str(tmp_path), "--imdb", str(tmp_path),
                     "--benchmark", "imdb"]) == 0
    assert seen == [(42, True), (43, False), (44, False)]
    seen.clear()
    cli.main(["run", "pytorch", "--no-export", "--results", str(tmp_path), "--imdb", str(tmp_path),
              "--benchmark", "imdb"])
    assert seen == [(42, False)]


def _check_record(framework, benchmark, ok=True, device_group="CPU: made-up"):
    latencies = [{"batch_size": b, "runs": 30, "warmup": 5, "median_seconds": 0.001 * b, "p90_seconds": 0.002 * b,
                  "samples_per_second": 1000.0} for b in (1, 64, 1024)]
    return {"kind": "onnx", "framework": framework, "benchmark": benchmark, "device": "cpu",
            "device_group": device_group, "status": "ok" if ok else "failed", "ok": ok,
            "exporter": "maker", "exporter_versions": {"maker": "2.0"}, "onnxruntime": "1.31.1", "threads": 2,
            "graph": {"opset": 17, "bytes": 2**20 * 14.6, "gru_form": "Loop" if benchmark == "imdb" else None},
            "checks": [{"check": "framework", "ok": True, "max_abs_difference": 2e-8, "bound": 1e-4},
                       {"check": "reference", "ok": ok, "max_abs_difference": 3e-8 if ok else 0.2, "bound": 1e-4},
                       {"check": "classes", "ok": True, "agree": 99, "ties": 1, "samples": 100, "differ": 0},
                       {"check": "graph", "ok": True, "problems": []}],
            "framework_latencies": latencies, "onnxruntime_latencies": latencies,
            "message": "ok" if ok else "failed: ONNX Runtime's logits differ from the float64 reference"}


def test_the_onnx_tables_show_checks_graph_and_latencies():
    text = report.onnx_tables([_check_record("MXNet", "imdb"), _check_record("Chainer", "cifar", ok=False),
                               {"framework": "Lasagne (Theano)", "benchmark": "cifar", "status": "no exporter",
                                "message": "no exporter: Theano has none"}])
    lines = text.splitlines()
    assert lines[0].startswith("| Framework | Model | Exporter | Graph | ONNX equivalent | Agrees")
    cnn_rows = [line for line in lines if "| CNN |" in line]
    assert cnn_rows[0].startswith("| Chainer | CNN | maker (maker 2.0) | opset 17, 14.6 MiB | **no**: 2e-01")
    assert "| **no exporter**: Theano has none |" in cnn_rows[1]  # the status once, not "no exporter: no exporter:"
    assert "| **failed**: ONNX Runtime's logits differ" in cnn_rows[0]
    assert "| MXNet | GRU | maker (maker 2.0) | opset 17, 14.6 MiB, GRU: Loop | yes: 3e-08 | yes: logits 2e-08, " \
           "classes 100/100 |" in text
    assert "30 timed runs after 5 warm-up runs" in text and "same threads (2)" in text
    assert "| Batch 1: framework | Batch 1: ONNX Runtime | Batch 64: framework |" in text
    assert "| MXNet | GRU | 1 (2) | 1 (2) | 64 (128) | 64 (128) | 1.02e+03 (2.05e+03) |" in text


def test_render_puts_the_onnx_table_under_its_device(tmp_path):
    (tmp_path / "records").mkdir()
    folder = records.onnx_dir(tmp_path)
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(_check_record("MXNet", "imdb", device_group="CPU: made-up")))
    text = report.render(tmp_path, readme=tmp_path / "R.md").read_text()
    assert "No runs yet." in text and "Exported to ONNX" not in text  # no device with runs: no table
    assert records.latest_onnx(tmp_path)[("MXNet", "imdb", "cpu")]["exporter"] == "maker"


def test_onnx_command_with_no_exported_run_says_so(tmp_path, capsys):
    from harness import cli

    (tmp_path / "records").mkdir()
    assert cli.main(["onnx", "--results", str(tmp_path)]) == 0
    assert "no run with an export to check" in capsys.readouterr().out


def test_a_broken_onnx_python_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("ROSETTA_ONNX_PYTHON", sys.executable)  # the harness's: no onnxruntime
    python, why = onnx.interpreter("cpu")
    assert python is None and f"ROSETTA_ONNX_PYTHON={sys.executable} cannot import onnxruntime" in why


def test_an_existing_interpreter_without_onnxruntime_leaves_the_checks_to_their_environment(monkeypatch, capsys):
    monkeypatch.delenv("ROSETTA_ONNX_PYTHON", raising=False)
    built = []

    def create(framework, flavour):
        built.append((framework.name, flavour))
        raise venvs.EnvironmentBuildError("no index here")

    monkeypatch.setattr(onnx.kernels, "create", create)
    python, why = onnx.interpreter("cpu", [sys.executable])  # the harness's: no onnxruntime
    assert python is None and why == "the ONNX Runtime environment could not be built: no index here"
    assert built == [("onnxruntime", "cpu")]
    assert (f"onnx: the existing interpreter {sys.executable} cannot import onnxruntime and onnx; the checks use "
            "the ONNX Runtime environment instead") in capsys.readouterr().out


def test_the_interpreters_for_the_checks_come_from_the_python_entries(monkeypatch):
    from harness import cli, existing

    monkeypatch.delenv("ROSETTA_EXISTING_PYTHON", raising=False)
    args = cli.parse(["onnx", "--python", sys.executable])
    assert cli.onnx_pythons(args) == [sys.executable]
    other = sys.base_prefix + "/bin/python3"
    args = cli.parse(["onnx", "--python", f"pytorch={sys.executable}", "--python", f"onnxruntime={other}"])
    assert cli.onnx_pythons(args) == [other]  # named for the checks: that one alone
    monkeypatch.setenv("ROSETTA_EXISTING_PYTHON", f"jax={other}")
    assert cli.onnx_pythons(cli.parse(["onnx"])) == [other]
    with pytest.raises(ValueError, match="'onnx' is neither a framework nor an environment"):
        existing.existing_interpreters([f"onnx={other}"], [])


@pytest.mark.kernel
def test_the_checks_run_in_an_existing_interpreter_that_has_onnxruntime_and_onnx(tmp_path, monkeypatch, capsys):
    from harness import cli

    with_both = venvs.env_python(FRAMEWORKS["jax"])  # jax2onnx brings onnxruntime and onnx into JAX's environment
    if not with_both.exists():
        pytest.fail(f"{with_both} is missing: `rosetta envs jax` builds it")
    versions = subprocess.run([str(with_both), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
                              capture_output=True, text=True, check=True).stdout.strip()
    for name in ("ROSETTA_ONNX_PYTHON", "ROSETTA_EXISTING_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(onnx.kernels, "create", lambda *a, **k: pytest.fail("the ONNX Runtime environment was built"))
    results = tmp_path / "results"
    stem = "20261206-120000-jax-cifar"
    export.no_exporter(results / "exports" / stem, FRAMEWORKS["jax"].label, "cifar", "NHWC", "a reason made up here")
    record.write(results / "records" / f"{stem}.json", record.build(
        framework=FRAMEWORKS["jax"].label, api="test", benchmark="cifar", epochs=1, batch_size=64, train_samples=10, test_samples=10,
        seed=0, accuracy=0.1, timing={"train_seconds": 1.0}, export=f"exports/{stem}"))
    # the first interpreter has no onnxruntime, the second has both: the checks run in the second
    assert cli.main(["onnx", "--results", str(results), "--python", f"pytorch={sys.executable}",
                     "--python", f"jax={with_both}"]) == 0
    out = capsys.readouterr().out
    assert f"onnx: the existing interpreter {sys.executable} cannot import onnxruntime and onnx" in out
    assert f"onnx: the checks run in the existing interpreter {with_both} (onnxruntime {versions} onnx " in out
    assert "nothing is installed into it" in out
    checked = json.loads((results / "onnx" / f"{stem}.json").read_text())
    assert checked["onnxruntime"] == versions and checked["status"] == "no exporter"  # written by common.onnx_check there
    # ROSETTA_ONNX_PYTHON stays the explicit choice
    monkeypatch.setenv("ROSETTA_ONNX_PYTHON", sys.executable)
    python, why = onnx.interpreter("cpu", [str(with_both)])
    assert python is None and f"ROSETTA_ONNX_PYTHON={sys.executable} cannot import onnxruntime" in why


# --- every framework's export, checked in ONNX Runtime -----------------------------------------

@pytest.fixture(scope="session")
def onnx_python():
    """The ONNX Runtime environment's Python (built by the first test that needs it)."""
    python, why = onnx.interpreter("cpu")
    if python is None:
        pytest.fail(why)
    return python


def _checked(framework, short_runs, onnx_python):
    results, runs = short_runs(framework)
    return results, [onnx.check(run, results, onnx_python) for run in runs]


@pytest.mark.kernel
@pytest.mark.parametrize("framework", list(FRAMEWORKS.values()), ids=list(FRAMEWORKS))
def test_every_export_passes_its_checks_or_says_why_there_is_none(framework, short_runs, onnx_python):
    results, checks = _checked(framework, short_runs, onnx_python)
    for check in checks:
        assert check["status"] == EXPECTED[framework.name], f"{framework.label} {check['benchmark']}: {check['message']}"
        assert (results / "onnx" / (Path(check["export_dir"]).name + ".json")).is_file()
        if check["status"] == "no exporter":
            assert len(check["message"]) > 40, "a framework without an exporter says why"
            continue
        names = {c["check"]: c for c in check["checks"]}
        assert set(names) == {"framework", "reference", "classes", "graph"}
        assert names["reference"]["max_abs_difference"] <= names["reference"]["bound"]
        assert names["classes"]["samples"] == len(np.load(results / check["export_dir"] / "arrays.npz")["x_test"])
        assert check["graph"]["opset"] >= 11 and check["graph"]["bytes"] > 1e6
        if check["benchmark"] == "imdb":
            assert check["graph"]["gru_form"] in ("fused GRU node", "Loop", "Scan", "unrolled")
        for kind in ("framework_latencies", "onnxruntime_latencies"):  # the inference record's fields
            assert [e["batch_size"] for e in check[kind]] == SHORT_EXPORT["batch_sizes"]
            assert all(set(e) == LATENCY_FIELDS and e["runs"] == SHORT_EXPORT["runs"] for e in check[kind])
        assert check["threads"] == 1 and check["onnxruntime"]


MUTANT = """
import sys
import onnx
model = onnx.load(sys.argv[1])
grus = [node for node in model.graph.node if node.op_type == "GRU"]
assert len(grus) == 1, [node.op_type for node in model.graph.node]
for attribute in grus[0].attribute:
    if attribute.name == "linear_before_reset":
        attribute.i = 0
onnx.save(model, sys.argv[1])
"""


@pytest.mark.kernel
def test_the_other_gru_fails_the_check_with_the_difference_named(short_runs, onnx_python, tmp_path):
    """PyTorch's GRU export with linear_before_reset=0: what older onnxscript wrote silently."""
    results, runs = short_runs(FRAMEWORKS["pytorch"])
    run = next(r for r in runs if r["benchmark"] == "imdb")
    mutant = tmp_path / "results"
    (mutant / "exports").mkdir(parents=True)
    import shutil

    shutil.copytree(results / run["export"], mutant / run["export"])
    subprocess.run([onnx_python, "-c", MUTANT, str(mutant / run["export"] / "model.onnx")], check=True)
    check = onnx.check(run, mutant, onnx_python)
    assert check["status"] == "failed" and not check["equivalent"]
    assert "linear_before_reset=0" in check["message"]
    assert "the reset gate before the recurrent product" in check["message"]
    assert "differ from the float64 reference" in check["message"]


POOL = """
import sys
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from common import export

layout, path = sys.argv[1], sys.argv[2]
kernel = [1, 2, 2, 1] if layout == "NHWC" else [1, 1, 2, 2]
x = np.random.default_rng(0).standard_normal((3, 8, 6, 5) if layout == "NHWC" else (3, 5, 8, 6)).astype(np.float32)
nodes = [helper.make_node("Unsqueeze", ["x", "axes0"], ["u0"]), helper.make_node("Unsqueeze", ["u0", "axes1"], ["u1"]),
         helper.make_node("MaxPool", ["u1"], ["p"], kernel_shape=kernel, strides=kernel),
         helper.make_node("Squeeze", ["p", "axes01"], ["y"])]  # what jax2onnx 0.17 writes for a 2x2 max-pooling
axes = [numpy_helper.from_array(np.array(a, np.int64), name) for name, a in (("axes0", [0]), ("axes1", [1]),
                                                                             ("axes01", [0, 1]))]
graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"] + list(x.shape[1:]))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"] + [s // k for s, k in
                                                                                             zip(x.shape[1:], kernel[1:])])],
                          axes)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
try:
    ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    print("ONNX Runtime ran the 4-axis MaxPool")
except Exception as error:
    print("refused before:", type(error).__name__)
print("rewritten:", export.max_pool_2d(path), export.max_pool_2d(path))
(found,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
expected = x.reshape(3, 4, 2, 3, 2, 5).max(axis=(2, 4)) if layout == "NHWC" else x.reshape(3, 5, 4, 2, 3, 2).max(axis=(3, 5))
print("same values:", bool(np.array_equal(found, expected)))
"""


@pytest.mark.kernel
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_a_four_axis_max_pool_becomes_one_onnx_runtime_runs(onnx_python, tmp_path, layout):
    """jax2onnx's max-pooling (Keras on JAX), rewritten by export.max_pool_2d: the same values."""
    done = subprocess.run([onnx_python, "-c", POOL, layout, str(tmp_path / "pool.onnx")], capture_output=True,
                          text=True, cwd=REPOSITORY, env={"PYTHONPATH": str(REPOSITORY), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "refused before:" in done.stdout
    assert "rewritten: 1 0" in done.stdout and "same values: True" in done.stdout


@pytest.mark.kernel
def test_a_gpu_run_is_never_timed_on_the_cpu(short_runs, onnx_python, tmp_path):
    """Where ONNX Runtime has no CUDA provider (here), a GPU run's export is still checked, on the CPU,
    but gets no ONNX Runtime times, and the record says why."""
    results, runs = short_runs(FRAMEWORKS["pytorch"])
    run = next(r for r in runs if r["benchmark"] == "cifar")
    out = tmp_path / "check.json"
    done = subprocess.run([onnx_python, "-m", "common.onnx_check", str(results / run["export"]), "--device", "cuda",
                           "--out", str(out)], cwd=REPOSITORY, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPOSITORY), "PATH": "/usr/bin:/bin"})
    check = json.loads(out.read_text())
    assert done.returncode == 0 and check["ok"], done.stdout + done.stderr
    assert "onnxruntime_latencies" not in check and "CUDA provider" in check["timing_skipped"]
    assert f"not timed on cuda: " in check["message"]
    assert "not timed on cuda" in report.onnx_tables([{**check, "device_group": "x"}])


HIDDEN_EXPORTER = """raise ModuleNotFoundError("No module named 'jax2onnx' (hidden from this kernel by a test)",
                          name="jax2onnx")
"""


@pytest.mark.kernel
@pytest.mark.parametrize("benchmark", ["cifar", "imdb"])
def test_a_kernel_without_its_exporter_fails_only_the_export(benchmark, tiny_cifar, tiny_imdb, tmp_path,
                                                              monkeypatch):
    """JAX's kernel with jax2onnx hidden (a module of that name, first on its PYTHONPATH, that cannot be
    imported): the training record is ok, and the export is recorded as failed, naming jax2onnx."""
    shim = tmp_path / "shim" / "jax2onnx"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(HIDDEN_EXPORTER)
    monkeypatch.setenv("PYTHONPATH", str(shim.parent))  # the kernel's PYTHONPATH: this repository, then this
    settings = runner.RunSettings(device="cpu", timeout=600,
                                  data_sources={"cifar": str(tiny_cifar), "imdb": str(tiny_imdb)},
                                  threads=1, export=True, export_batch_sizes=[1], export_runs=1, epochs=1,
                                  batch_size=32)
    results = tmp_path / "results"
    done = runner.execute(FRAMEWORKS["jax"], benchmark, settings, results)
    assert done["status"] == "ok", done.get("error")
    info = export.read(results / done["export"])
    assert info["status"] == "export failed"
    assert info["error"].startswith("ModuleNotFoundError: No module named 'jax2onnx' (hidden")
