"""Every run calibrates its machine: the probe, a busy machine, the GPU path (through fake libraries),
a probe that fails, and the report's use of the figures."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import selftest

from common import machine, record
from harness import calibration, kernels, report, runner


# --- the probe on this machine ---------------------------------------------------------------

def test_the_probe_gives_plausible_positive_figures_with_its_sizes():
    found = calibration.measure("cpu", threads=1)
    assert found["not_measured"] is None, found
    assert 0.1 < found["gflops"] < 100_000 and 0.1 < found["gbps"] < 100_000
    assert found["device"] == "cpu" and found["threads"] == 1 and 0 < found["seconds"] < 30
    assert "NumPy" in found["how"] and "512x512 float32 matmul" in found["how"] and "64 MiB" in found["how"]
    record.validate(record.build(framework="X", api="t", benchmark="cifar", epochs=1, batch_size=1, train_samples=1,
                                 test_samples=1, seed=0, accuracy=0.5, timing={"train_seconds": 1.0},
                                 calibration=found))


def test_the_probe_reads_the_runs_thread_count_in_a_process_of_its_own(tmp_path, monkeypatch):
    """The thread variables reach the probe's process (NumPy reads them as it loads): a probe that prints
    them shows the run's count, not the harness's."""
    script = tmp_path / "probe.py"
    script.write_text("import json, os\nprint(json.dumps({'gflops': float(os.environ['OPENBLAS_NUM_THREADS']), "
                      "'gbps': float(os.environ['OMP_NUM_THREADS']), 'how': 'thread variables'}))\n")
    monkeypatch.setattr(calibration, "PROBE", script)
    found = calibration.measure("cpu", threads=3)
    assert (found["gflops"], found["gbps"], found["threads"]) == (3.0, 3.0, 3)


def _hogs(count: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def test_a_machine_busy_beside_the_probe_calibrates_lower():
    """Processes spinning on every core beside the probe (a real CPU hog) give a lower figure than
    the same probe with the machine as it was; the hogs are gone afterwards."""
    threads = machine.cores()
    quiet = [calibration.measure("cpu", threads) for _ in range(2)]
    hogs = _hogs(3 * threads)
    try:
        time.sleep(0.3)
        busy = calibration.measure("cpu", threads)
    finally:
        for hog in hogs:
            hog.send_signal(signal.SIGKILL)
            hog.wait()
    assert busy["not_measured"] is None and all(q["not_measured"] is None for q in quiet)
    # One figure at least must show the hogs, not both: the scheduler can let a new process's short matrix
    # products run mostly ahead of hogs that have spun a while (seen on Linux 6.18: 189.6 against 191.9
    # GFLOP/s beside six hogs on two cores, while the copy timed after them fell from 24.4 to 7.8 GB/s).
    slower = [name for name in ("gflops", "gbps") if busy[name] < 0.9 * max(q[name] for q in quiet)]
    assert slower, (busy, quiet)
    assert not [hog.pid for hog in hogs if selftest.alive(hog.pid)]


# --- the GPU path, through fake libraries ------------------------------------------------------

# A torch whose device work is asynchronous, like CUDA's: a product or a copy returns at once and
# the time it takes is spent in torch.cuda.synchronize(). A probe that read the clock without
# synchronising would time nothing and report an absurd rate. A product with TF32 on is refused.
FAKE_TORCH = """
import time
__version__ = "0.0-fake"
float32 = "float32"
MATMUL_SECONDS, COPY_SECONDS = 0.02, 0.01
_pending = [0.0]
AVAILABLE = {available}

class _Matmul(object):
    allow_tf32 = True

class _CudaBackend(object):
    matmul = _Matmul()

class backends(object):
    cuda = _CudaBackend()

def device(name):
    return name

class Tensor(object):
    def __init__(self, shape):
        self.shape = shape
    def copy_(self, other):
        _pending[0] += COPY_SECONDS
        return self

def rand(*shape, **options):
    return Tensor(shape)

ones = rand

def empty_like(tensor):
    return Tensor(tensor.shape)

def matmul(a, b, out=None):
    if backends.cuda.matmul.allow_tf32:
        raise RuntimeError("a TF32 product is not a float32 one")
    _pending[0] += MATMUL_SECONDS
    return out

class cuda(object):
    @staticmethod
    def is_available():
        return AVAILABLE
    @staticmethod
    def synchronize():
        time.sleep(_pending[0])
        _pending[0] = 0.0
    @staticmethod
    def get_device_name(index=0):
        return "Fake GPU 80GB"
"""

# The same for CuPy: the work is done in cupy.cuda.runtime.deviceSynchronize().
FAKE_CUPY = """
import time, types
__version__ = "0.0-fake"
float32 = "float32"
_pending = [0.0]

class Array(object):
    def __init__(self, shape):
        self.shape = shape

def _make(*shape, **options):
    return Array(shape)

ones = _make
random = types.SimpleNamespace(rand=_make)

def empty_like(array):
    return Array(array.shape)

def matmul(a, b, out=None):
    _pending[0] += 0.04
    return out

def copyto(target, source):
    _pending[0] += 0.02

def _synchronise():
    time.sleep(_pending[0])
    _pending[0] = 0.0

cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
    getDeviceCount=lambda: 1, deviceSynchronize=_synchronise,
    getDeviceProperties=lambda index: {"name": b"Fake CuPy GPU"}))
"""

# And for JAX: the work is done in block_until_ready(); a product below float32 precision is refused.
FAKE_JAX = """
import time, types
__version__ = "0.0-fake"
_pending = [0.0]
lax = types.SimpleNamespace(Precision=types.SimpleNamespace(HIGHEST="highest"))

class _Device(object):
    platform, device_kind = "gpu", "Fake JAX GPU"

def devices():
    return [_Device()]

def device_put(array, device):
    return array

class Array(object):
    def __init__(self, shape):
        self.shape = shape
    def __add__(self, other):
        _pending[0] += 0.025
        return Array(self.shape)
    def block_until_ready(self):
        time.sleep(_pending[0])
        _pending[0] = 0.0
        return self

def jit(function):
    return function

from jax import numpy
"""

FAKE_JAX_NUMPY = """
import jax
float32 = "float32"

def ones(shape, dtype=None):
    return jax.Array(shape)

def matmul(a, b, precision=None):
    if precision != "highest":
        raise RuntimeError("a product below float32 precision")
    jax._pending[0] += 0.05
    return jax.Array(a.shape)
"""


def _fake_library(folder, name: str, text: str) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(textwrap.dedent(text))


def _gpu(monkeypatch, folder):
    """The GPU calibration through this Python, with the fake libraries of ``folder`` first on its path."""
    monkeypatch.setenv(calibration.PYTHON_VARIABLE, sys.executable)
    monkeypatch.setenv("PYTHONPATH", f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return calibration.before_run(None, "cuda", 1)


def test_the_gpu_probe_synchronises_before_reading_the_clock(tmp_path, monkeypatch):
    _fake_library(tmp_path, "torch", FAKE_TORCH.format(available=True))
    found = _gpu(monkeypatch, tmp_path)
    assert found["not_measured"] is None, found
    expected_flops, expected_bytes = 2 * 4096 ** 3 / 0.02 / 1e9, 2 * 256 * 2 ** 20 / 0.01 / 1e9
    assert 0.7 * expected_flops < found["gflops"] <= expected_flops  # the sleeps in synchronize() were timed
    assert 0.7 * expected_bytes < found["gbps"] <= expected_bytes
    assert found["device"] == "cuda" and found["gpu"] == "Fake GPU 80GB"
    assert found["how"].startswith("torch 0.0-fake on Fake GPU 80GB 4096x4096 float32 matmul, median of 7")
    assert "TF32 off" in found["how"]


def test_the_gpu_probe_falls_back_to_cupy_where_torch_sees_no_device(tmp_path, monkeypatch):
    _fake_library(tmp_path, "torch", FAKE_TORCH.format(available=False))
    _fake_library(tmp_path, "cupy", FAKE_CUPY)
    found = _gpu(monkeypatch, tmp_path)
    assert found["not_measured"] is None, found
    assert 0.7 * 2 * 4096 ** 3 / 0.04 / 1e9 < found["gflops"] <= 2 * 4096 ** 3 / 0.04 / 1e9
    assert found["how"].startswith("CuPy 0.0-fake on Fake CuPy GPU") and found["gpu"] == "Fake CuPy GPU"


def test_the_gpu_probe_falls_back_to_jax_where_neither_torch_nor_cupy_is_there(tmp_path, monkeypatch):
    _fake_library(tmp_path, "jax", FAKE_JAX)
    (tmp_path / "jax" / "numpy.py").write_text(textwrap.dedent(FAKE_JAX_NUMPY))
    found = _gpu(monkeypatch, tmp_path)
    assert found["not_measured"] is None, found
    assert 0.7 * 2 * 4096 ** 3 / 0.05 / 1e9 < found["gflops"] <= 2 * 4096 ** 3 / 0.05 / 1e9
    assert 0.7 * 2 * 256 * 2 ** 20 / 0.025 / 1e9 < found["gbps"] <= 2 * 256 * 2 ** 20 / 0.025 / 1e9
    assert found["how"].startswith("jax 0.0-fake on Fake JAX GPU") and "precision HIGHEST" in found["how"]


def test_a_gpu_probe_that_cannot_measure_says_why(tmp_path, monkeypatch):
    _fake_library(tmp_path, "torch", FAKE_TORCH.format(available=False))
    found = _gpu(monkeypatch, tmp_path)  # torch sees no device; no CuPy, no JAX here
    assert found["gflops"] is None and found["gbps"] is None
    assert "torch: RuntimeError: torch 0.0-fake sees no CUDA device" in found["not_measured"]
    assert "cupy: not importable" in found["not_measured"] and "jax: not importable" in found["not_measured"]
    monkeypatch.setenv(calibration.PYTHON_VARIABLE, str(tmp_path / "no-such-python"))
    found = calibration.before_run(None, "cuda", 1)
    assert found["not_measured"].startswith("the probe could not start: FileNotFoundError")


def test_the_gpu_probe_uses_the_pytorch_kernel_for_every_framework(tmp_path, monkeypatch):
    """Every row on a GPU is calibrated with one instrument: the PyTorch environment's interpreter,
    whichever framework runs; the run's own kernel only where PyTorch has none."""
    from harness.frameworks import FRAMEWORKS

    pythons = {"pytorch": tmp_path / "pytorch-python", "tensorflow": tmp_path / "tensorflow-python"}
    for python in pythons.values():
        python.write_text("")
    registered = dict(pythons)
    monkeypatch.delenv(calibration.PYTHON_VARIABLE, raising=False)
    monkeypatch.setattr(kernels, "kernel_info", lambda framework: {"kind": "built", "python": str(
        registered[framework.name])} if framework.name in registered else None)
    monkeypatch.setattr(kernels, "kernel_environment", lambda framework: {"FROM": framework.name})
    assert calibration.gpu_python(FRAMEWORKS["tensorflow"])[:2] == (str(pythons["pytorch"]), {"FROM": "pytorch"})
    del registered["pytorch"]
    assert calibration.gpu_python(FRAMEWORKS["tensorflow"])[0] == str(pythons["tensorflow"])
    assert calibration.gpu_python(FRAMEWORKS["jax"])[0] is None


# --- in the runner ---------------------------------------------------------------------------------

def test_every_run_records_its_calibration_ok_and_failed_alike(tmp_path, selftest_kernel):
    working = selftest.framework(tmp_path / "working.ipynb", selftest.WRITE_OK, "working")
    broken = selftest.framework(tmp_path / "broken.ipynb", "raise RuntimeError('boom')", "broken")
    done = runner.run_all([working, broken], ["cifar"], runner.RunSettings(threads=1), tmp_path / "results")
    assert [r["status"] for r in done] == ["ok", "failed"]
    for path in sorted((tmp_path / "results" / "records").glob("*.json")):
        found = record.read(path)["calibration"]
        assert found["device"] == "cpu" and found["threads"] == 1 and found["not_measured"] is None
        assert found["gflops"] > 0 and found["gbps"] > 0
        assert found["machine"] == calibration.machine_key() and len(found["machine"]) == 16


def test_the_machine_key_is_steady_names_nothing_and_changes_with_a_restart(monkeypatch):
    import platform

    first = calibration.machine_key()
    assert first == calibration.machine_key() and platform.node() not in first
    monkeypatch.setattr(calibration.processes, "boot_id", lambda: "another-boot")
    assert calibration.machine_key() not in (None, first)
    monkeypatch.setattr(calibration.platform, "node", lambda: "")
    monkeypatch.setattr(calibration.processes, "boot_id", lambda: None)
    assert calibration.machine_key() is None


def test_a_failing_probe_never_fails_the_run(tmp_path, selftest_kernel, monkeypatch):
    """A probe that crashes, or hangs past its timeout (and is stopped: its process is gone), leaves
    the run to go on; its record says why it has no calibration."""
    crash, hang = tmp_path / "crash.py", tmp_path / "hang.py"
    crash.write_text("import sys\nsys.stderr.write('Illegal instruction\\n')\nsys.exit(3)\n")
    hang.write_text(f"import os, time\nopen({str(tmp_path / 'hang.pid')!r}, 'w').write(str(os.getpid()))\n"
                    "time.sleep(600)\n")
    monkeypatch.setattr(calibration, "PROBE", crash)
    working = selftest.framework(tmp_path / "working.ipynb", selftest.WRITE_OK, "working")
    result = runner.execute(working, "cifar", runner.RunSettings(), tmp_path / "results")
    assert result["status"] == "ok"
    assert result["calibration"]["not_measured"] == "the probe exited with 3 without its figures: Illegal instruction"
    assert result["calibration"]["gflops"] is None
    monkeypatch.setattr(calibration, "PROBE", hang)
    monkeypatch.setitem(calibration.TIMEOUTS, "cpu", 2.0)
    broken = selftest.framework(tmp_path / "broken.ipynb", "raise RuntimeError('boom')", "broken")
    result = runner.execute(broken, "cifar", runner.RunSettings(), tmp_path / "results")
    assert result["status"] == "failed" and result["error"] == "RuntimeError: boom"
    assert result["calibration"]["not_measured"] == "the probe gave no result within 2 s and was stopped"
    assert not selftest.alive(int((tmp_path / "hang.pid").read_text()))
    for path in (tmp_path / "results" / "records").glob("*.json"):
        record.read(path)  # valid records


def test_a_calibration_of_the_wrong_kind_is_refused(tmp_path):
    base = dict(framework="X", api="t", benchmark="cifar", epochs=1, batch_size=1, train_samples=1, test_samples=1,
                seed=0, accuracy=0.5, timing={"train_seconds": 1.0})
    good = {"device": "cpu", "threads": 2, "gflops": 10.0, "gbps": 5.0, "how": "x", "seconds": 0.3,
            "not_measured": None}
    record.validate(record.build(**base, calibration=good))
    for field, value in (("gflops", -1.0), ("gbps", 0), ("gflops", True), ("threads", 0), ("device", None),
                         ("not_measured", 3)):
        with pytest.raises(ValueError, match=f"field calibration.{field} is"):
            record.validate(record.build(**base, calibration={**good, field: value}), "r.json")
    with pytest.raises(ValueError, match="field calibration is"):
        record.validate(record.build(**base, calibration="fast"), "r.json")


# --- in the report ---------------------------------------------------------------------------------

CPU = {"device": "cpu", "cpu": "Test CPU", "threads": 2, "versions": {"fw": "1.0"}, "python": "3.11"}


def _write(results, name, framework, seconds, probe, seed=42, machine=None, **fields):
    """A record of ``framework`` training in ``seconds``, on a machine that calibrated ``probe``
    ((GFLOP/s, GB/s); None: no calibration); ``machine``: the machine its calibration names (None:
    none, as in records made before calibrations named it)."""
    extra = {}
    if probe is not None:
        extra["calibration"] = {"device": "cpu", "threads": 2, "gflops": probe[0], "gbps": probe[1], "how": "test",
                                "seconds": 0.4, "not_measured": None, "machine": machine}
    record.write(results / "records" / f"{name}.json", record.build(
        framework=framework, api="test", benchmark="cifar", epochs=2, batch_size=64, train_samples=4000,
        test_samples=2000, seed=seed, accuracy=0.3, timing={"train_seconds": seconds}, environment=CPU,
        **extra, **fields))


def _rows(table: str) -> dict:
    rows = {}
    for line in table.splitlines():
        if line.startswith("| Framework"):
            if rows:
                break
            continue
        if line.startswith("| ") and not line.startswith("|---"):
            rows[line.split(" | ")[0][2:]] = line
    return rows


def _cifar(readme: str) -> str:
    return readme.split("### CNN on CIFAR-10")[1].split("\n### ")[0]


def test_a_run_off_its_tables_calibration_is_flagged(tmp_path):
    """Three repeats of A, one of them on a machine 20 % slower: A is ranked on its median with the
    others, and that run is flagged in its Notes; the table says its calibration."""
    for seed, probe in ((42, (100.0, 20.0)), (43, (80.0, 20.0)), (44, (101.0, 20.5))):
        _write(tmp_path, f"1-A-{seed}", "A", 10.0, probe, seed=seed)
    _write(tmp_path, "2-B", "B", 20.0, (99.0, 19.8))
    _write(tmp_path, "3-C", "C", 30.0, (104.0, 21.0))
    section = _cifar(report.render(tmp_path).read_text())
    assert "Calibration: 100.0 GFLOP/s, 20.0 GB/s, the median of its rows' probes" in section
    assert "Calibrated apart" not in section
    rows = _rows(section)
    assert list(rows) == ["A", "B", "C"]
    assert rows["A"].endswith("| Probe off this table's calibration by more than 10 %: seed 43: 80.0 GFLOP/s (-20 %) |")
    assert "off this table" not in rows["B"] + rows["C"]


def test_machines_calibrated_apart_are_never_ranked_together(tmp_path):
    """Runs on a machine calibrating 40 % slower go to a table of their own, after the main one (the
    group with the most rows), each ranked on its own; records without a calibration group apart too."""
    _write(tmp_path, "1-A", "A", 10.0, (100.0, 20.0))
    _write(tmp_path, "1-B", "B", 20.0, (105.0, 21.0))
    _write(tmp_path, "1-C", "C", 15.0, (96.0, 20.5))
    _write(tmp_path, "2-D", "D", 12.0, (60.0, 12.0))
    _write(tmp_path, "2-E", "E", 24.0, (62.0, 12.5))
    _write(tmp_path, "3-F", "F", 5.0, None)
    section = _cifar(report.render(tmp_path).read_text())
    main, rest = section.split("#### Calibrated apart")
    slow, uncalibrated = rest.split("#### Not calibrated")
    assert list(_rows(main)) == ["A", "C", "B"] and "| 1.00× |" in _rows(main)["A"]
    assert "Calibration: 100.0 GFLOP/s, 20.5 GB/s" in main
    assert slow.startswith(": 61.0 GFLOP/s, 12.2 GB/s") and ("Not ranked with the table above: their machines "
                                                              "calibrate more than 10 % apart from its (100.0") in slow
    assert list(_rows(slow)) == ["D", "E"] and "| 1.00× |" in _rows(slow)["D"] and "| 2.00× |" in _rows(slow)["E"]
    assert "Not ranked with the table above: these runs have no calibration" in uncalibrated
    assert list(_rows(uncalibrated)) == ["F"]
    assert "off this table" not in section  # each table's rows are within 10 % of its median


def test_a_calibration_only_in_gb_per_second_apart_also_splits(tmp_path):
    _write(tmp_path, "1-A", "A", 10.0, (100.0, 20.0))
    _write(tmp_path, "1-B", "B", 20.0, (100.0, 20.0))
    _write(tmp_path, "2-C", "C", 15.0, (100.0, 14.0))
    section = _cifar(report.render(tmp_path).read_text())
    assert list(_rows(section)) == ["A", "B"] and "#### Calibrated apart: 100.0 GFLOP/s, 14.0 GB/s" in section


def test_records_without_a_calibration_render_as_before_and_say_so(tmp_path):
    _write(tmp_path, "1-A", "A", 10.0, None)
    _write(tmp_path, "2-B", "B", 5.0, None, status="failed", error="RuntimeError: boom")
    section = _cifar(report.render(tmp_path).read_text())
    assert "Calibration: not calibrated" in section and "Calibrated apart" not in section
    assert list(_rows(section)) == ["A", "B"]


def test_a_run_whose_probe_could_not_run_says_why_in_its_row(tmp_path):
    _write(tmp_path, "1-A", "A", 10.0, (100.0, 20.0))
    record.write(tmp_path / "records" / "2-B.json", record.build(
        framework="B", api="test", benchmark="cifar", epochs=2, batch_size=64, train_samples=4000, test_samples=2000,
        seed=42, accuracy=0.3, timing={"train_seconds": 5.0}, environment=CPU,
        calibration={"device": "cpu", "threads": 2, "gflops": None, "gbps": None, "how": None, "seconds": 30.0,
                     "not_measured": "the probe gave no result within 30 s and was stopped"}))
    section = _cifar(report.render(tmp_path).read_text())
    assert "Not calibrated: the probe gave no result within 30 s and was stopped" in _rows(
        section.split("#### Not calibrated")[1])["B"]


def test_an_onnx_check_records_the_calibration_of_its_machine(tmp_path):
    """An ONNX check times prediction too: its record carries the machine's calibration, taken with the
    run's threads (its export record's), and the report reads it back."""
    from harness import onnx, records

    results, folder = tmp_path / "results", tmp_path / "results" / "exports" / "1-x-cifar"
    folder.mkdir(parents=True)
    (folder / "export.json").write_text('{"status": "exported", "threads": 1}')
    checker = tmp_path / "checker"  # stands in for `python -m common.onnx_check FOLDER --device D --out OUT`
    checker.write_text(f"#!{sys.executable}\nimport json, sys\nout = sys.argv[sys.argv.index('--out') + 1]\n"
                       "json.dump({'framework': 'X', 'benchmark': 'cifar', 'device': 'cpu', 'status': 'ok', "
                       "'ok': True, 'message': 'checked', 'threads': 1}, open(out, 'w'))\n")
    checker.chmod(0o755)
    run = {"framework": "X", "benchmark": "cifar", "export": "exports/1-x-cifar", "notebook": "records/1-x-cifar.ipynb",
           "environment": {"device": "cpu", "cpu": "Test CPU"}}
    checked = onnx.check(run, results, str(checker))
    assert checked["status"] == "ok" and checked["calibration"]["threads"] == 1
    assert checked["calibration"]["gflops"] > 0 and checked["calibration"]["not_measured"] is None
    assert records.latest_onnx(results)[("X", "cifar", "cpu")]["calibration"] == checked["calibration"]
    (results / "onnx" / "1-x-cifar.json").write_text(json.dumps({**checked, "calibration": {"gflops": "fast"}}))
    assert records.latest_onnx(results) == {}  # skipped with a warning, as any malformed field


def test_a_table_of_failed_runs_shows_their_calibration(tmp_path):
    _write(tmp_path, "1-A", "A", 10.0, (50.0, 10.0), status="failed", error="RuntimeError: boom")
    _write(tmp_path, "1-B", "B", 10.0, (52.0, 10.4), status="failed", error="RuntimeError: boom")
    section = _cifar(report.render(tmp_path).read_text())
    assert "Calibration: 51.0 GFLOP/s, 10.2 GB/s" in section and list(_rows(section)) == ["A", "B"]


def test_an_earlier_configuration_is_split_by_calibration_too(tmp_path):
    _write(tmp_path, "1-A", "A", 10.0, (100.0, 20.0))
    _write(tmp_path, "1-B", "B", 20.0, (101.0, 20.0))
    _write(tmp_path, "1-C", "C", 15.0, (60.0, 12.0))
    record.write(tmp_path / "records" / "2-A.json", record.build(
        framework="A", api="test", benchmark="cifar", epochs=1, batch_size=64, train_samples=2000, test_samples=1000,
        seed=42, accuracy=0.2, timing={"train_seconds": 5.0}, environment=CPU))
    section = _cifar(report.render(tmp_path).read_text())
    assert section.index("Configuration: 1 epoch") < section.index("#### Earlier configuration: 2 epochs") < \
        section.index("#### Earlier configuration: 2 epochs, batch 64, 4,000 training and 2,000 test samples, every "
                      "core; calibrated apart: 60.0 GFLOP/s, 12.0 GB/s")
    earlier = section.split("#### Earlier configuration: 2 epochs")[1]
    assert "Calibration: 100.5 GFLOP/s, 20.0 GB/s" in earlier and list(_rows(earlier)) == ["A", "B"]


def test_one_machine_is_never_split_from_itself_by_its_noise(tmp_path):
    """Every run names the same machine, and its probes spread from 75 to 130 GFLOP/s and 15 to 26
    GB/s (a shared virtual machine does that): one table, ranked together, calibrated at the median of
    the machine's runs; the runs far off it are flagged, the others not."""
    for name, seconds, probe in (("A", 10.0, (100.0, 20.0)), ("B", 20.0, (75.0, 15.0)), ("C", 15.0, (130.0, 26.0)),
                                 ("D", 12.0, (98.0, 21.0)), ("E", 30.0, (103.0, 19.5))):
        _write(tmp_path, f"1-{name}", name, seconds, probe, machine="m1")
    section = _cifar(report.render(tmp_path).read_text())
    assert "Calibrated apart" not in section and "Not calibrated" not in section
    rows = _rows(section)
    assert list(rows) == ["A", "D", "C", "B", "E"] and "| 3.00× |" in rows["E"]
    assert "Calibration: 100.0 GFLOP/s, 20.0 GB/s" in section
    assert "75.0 GFLOP/s (-25 %)" in rows["B"] and "130.0 GFLOP/s (+30 %)" in rows["C"]
    assert "off this table" not in rows["A"] + rows["D"] + rows["E"]


def test_two_machines_apart_split_and_two_alike_rank_together(tmp_path):
    """Three machines: m1 and m2 calibrate alike (the medians of their runs, 100 and 103 GFLOP/s,
    though single probes range from 88 to 115), m3 at 65; m1's and m2's rows share the table, m3's go
    apart."""
    for name, seconds, probe, machine in (("A", 10.0, (100.0, 20.0), "m1"), ("B", 20.0, (88.0, 19.0), "m1"),
                                          ("G", 22.0, (104.0, 20.0), "m1"),
                                          ("C", 15.0, (98.0, 20.0), "m2"), ("D", 18.0, (115.0, 21.0), "m2"),
                                          ("H", 19.0, (103.0, 20.0), "m2"),
                                          ("E", 12.0, (60.0, 12.0), "m3"), ("F", 24.0, (70.0, 12.5), "m3")):
        _write(tmp_path, f"1-{name}", name, seconds, probe, machine=machine)
    section = _cifar(report.render(tmp_path).read_text())
    main, slow = section.split("#### Calibrated apart")
    assert list(_rows(main)) == ["A", "C", "D", "H", "B", "G"]
    assert "88.0 GFLOP/s (-13 %)" in _rows(main)["B"] and "115.0 GFLOP/s (+13 %)" in _rows(main)["D"]
    assert slow.startswith(": 65.0 GFLOP/s, 12.2 GB/s") and list(_rows(slow)) == ["E", "F"]
