"""Which GPUs each row can use: the fatbinary reader, the native / PTX / CPU decision, the
driver table, `--gpu`, `rosetta doctor` with a faked nvidia-smi, the marks in the results
table, and the committed table against the committed inspection. No GPU, no CUDA environment."""
from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from common import REPOSITORY, machine
from harness import cli, fatbin, gpus, report

# --- a synthetic ELF file with fatbinaries -------------------------------------------------------


def fatbin_entry(kind: int, arch_number: int, flags: int = 0x11, payload: bytes = b"\0" * 24) -> bytes:
    header = bytearray(64)
    struct.pack_into("<HHIQ", header, 0, kind, 0x101, 64, len(payload))
    struct.pack_into("<I", header, 28, arch_number)
    struct.pack_into("<Q", header, 40, flags)
    return bytes(header) + payload


def fatbinary(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", fatbin.FATBIN_MAGIC, 1, 16, len(body)) + body


def elf(sections: dict[str, bytes]) -> bytes:
    """A 64-bit little-endian ELF file holding the named sections (and its section-name table)."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    blobs = [b"", *sections.values(), names]
    offsets, at = [], 64
    for blob in blobs:
        offsets.append(at)
        at += len(blob) + (-len(blob) % 8)
    shoff = at
    header = bytearray(64)
    header[:16] = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    struct.pack_into("<HHI", header, 16, 3, 0xBE, 1)
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, len(blobs), len(blobs) - 1)
    body = bytearray(header)
    for blob in blobs[1:]:
        body += blob + b"\0" * (-len(blob) % 8)
    table = bytearray(64)  # the null section
    name_at = 1
    for name, blob, offset in zip([*sections, ".shstrtab"], blobs[1:], offsets[1:]):
        table += struct.pack("<IIQQQQIIQQ", name_at, 1, 0, 0, offset, len(blob), 0, 0, 8, 0)
        name_at += len(name) + 1
    return bytes(body + table)


def test_fatbin_reader_lists_cubins_and_ptx_of_every_fatbinary(tmp_path):
    first = fatbinary(fatbin_entry(2, 75), fatbin_entry(2, 90, 0x11 | fatbin.FLAG_ARCH_SPECIFIC),
                      fatbin_entry(1, 90, 0x8011))
    second = fatbinary(fatbin_entry(2, 100, 0x11 | fatbin.FLAG_FAMILY_SPECIFIC), fatbin_entry(1, 120))
    library = tmp_path / "libkernels.so"
    library.write_bytes(elf({".text": b"\x90" * 40, ".nv_fatbin": first + b"\0" * 8 + second}))
    assert fatbin.entries(library) == ["sm_75", "sm_90a", "compute_90", "sm_100f", "compute_120"]
    scanned = fatbin.scan([library])
    assert scanned["sm"] == ["sm_75", "sm_90a", "sm_100f"] and scanned["ptx"] == ["compute_90", "compute_120"]


def test_fatbin_reader_on_files_without_device_code(tmp_path):
    plain = tmp_path / "libplain.so"
    plain.write_bytes(elf({".text": b"\x90" * 16}))
    assert fatbin.entries(plain) == []
    text = tmp_path / "notes.txt"
    text.write_text("not a library")
    with pytest.raises(fatbin.NotELF, match="notes.txt"):
        fatbin.entries(text)
    assert fatbin.scan([text])["errors"] and fatbin.scan([text])["files"] == []


# --- the decision --------------------------------------------------------------------------------

TORCH = {"gpu_build": True, "components": [
    {"name": "framework's arch list", "sm": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], "ptx": []}]}
MXNET = {"gpu_build": True, "components": [
    {"name": "framework kernels", "sm": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86"], "ptx": ["compute_80"]}]}


def test_torch_arch_list_without_ptx():
    assert gpus.verdict(TORCH, (9, 0))[0] == gpus.NATIVE
    assert gpus.verdict(TORCH, (8, 9))[0] == gpus.NATIVE  # sm_86 runs on 8.9
    assert gpus.verdict(TORCH, (12, 1))[0] == gpus.NATIVE
    assert gpus.verdict(TORCH, (13, 0))[0] == gpus.NONE  # a future GPU: no cubin, no PTX
    assert gpus.verdict(TORCH, (7, 0))[0] == gpus.NONE  # Volta: below sm_75


def test_mxnet_cu112_reaches_hopper_through_ptx():
    assert gpus.verdict(MXNET, (8, 6))[0] == gpus.NATIVE
    found, why = gpus.verdict(MXNET, (9, 0))
    assert found == gpus.PTX and "PTX" in why
    assert gpus.verdict(MXNET, (12, 0))[0] == gpus.PTX


def test_arch_and_family_specific_targets():
    assert gpus.runs_on("sm_90a", (9, 0)) and not gpus.runs_on("sm_90a", (10, 0))
    assert gpus.runs_on("sm_100f", (10, 3)) and not gpus.runs_on("sm_100f", (12, 0))
    assert gpus.runs_on("compute_120f", (12, 1)) and not gpus.runs_on("compute_120f", (13, 0))
    assert gpus.runs_on("compute_75", (13, 0)) and not gpus.runs_on("compute_90", (8, 9))
    assert not gpus.runs_on("sm_80", (9, 0))


def test_the_weakest_library_decides():
    cudnn_without_hopper = {"name": "cuDNN", "sm": ["sm_75", "sm_80"], "ptx": []}
    found, why = gpus.verdict({"gpu_build": True, "components": TORCH["components"] + [cudnn_without_hopper]}, (9, 0))
    assert found == gpus.NONE and "cuDNN" in why and "arch list" not in why


def test_run_time_compilers_and_cpu_builds():
    xla_cuda13 = {"gpu_build": True, "components": [{"name": "XLA", "compiles_for": [[7, 5], [12, 1]]}]}
    assert gpus.verdict(xla_cuda13, (6, 1))[0] == gpus.NONE
    assert gpus.verdict(xla_cuda13, (9, 0))[0] == gpus.NATIVE
    nvrtc_10 = {"gpu_build": True, "components": [{"name": "NVRTC", "compiles_for": [[3, 0], [7, 5]]}]}
    assert gpus.verdict(nvrtc_10, (8, 0))[0] == gpus.PTX  # CuPy: PTX for NVRTC's newest
    libgpuarray = {"gpu_build": True, "components": [{"name": "NVRTC", "compiles_for": [[3, 0], [7, 5]],
                                                      "beyond_newest": gpus.NONE}]}
    assert gpus.verdict(libgpuarray, (7, 5))[0] == gpus.NATIVE and gpus.verdict(libgpuarray, (8, 0))[0] == gpus.NONE
    assert gpus.verdict({"gpu_build": False, "notes": ["no pygpu"], "components": []}, (9, 0))[0] == gpus.CPU
    assert gpus.verdict(None, (9, 0))[0] == gpus.UNKNOWN


def test_minimum_drivers():
    assert gpus.min_driver("12.9") == {"minimum": "525.60.13", "for_ptx": "575.51.03"}
    assert gpus.min_driver("10.2") == {"minimum": "440.33", "for_ptx": "440.33"}
    assert gpus.min_driver("13.0")["minimum"] == "580.65.06"
    assert gpus.min_driver("11.2") == {"minimum": "450.80.02", "for_ptx": "460.27.03"}
    assert gpus.min_driver(None) == {"minimum": None, "for_ptx": None}
    assert gpus.driver_ok("550.54.15", gpus.min_driver("13.0")).startswith("driver 550.54.15 is older than 580")
    assert gpus.driver_ok("580.82.07", gpus.min_driver("13.0")) == ""


@pytest.mark.parametrize("text, expected", [("sm_90", (9, 0)), ("90", (9, 0)), ("9.0", (9, 0)),
                                            ("SM_120", (12, 0)), ("12.0", (12, 0)), ("sm_86", (8, 6))])
def test_gpu_names(text, expected):
    assert gpus.parse_gpu(text) == expected


@pytest.mark.parametrize("text", ["foo", "9", "sm_9x", "9.0.1", "1.0", "sm_990", ""])
def test_bad_gpu_names(text):
    with pytest.raises(gpus.GPUError, match="--gpu"):
        gpus.parse_gpu(text)


# --- the doctor ----------------------------------------------------------------------------------

INSPECTION = {"date": "2026-12-06", "environments": {
    "pytorch": {**TORCH, "cuda": "13.0", "driver": gpus.min_driver("13.0")},
    "mxnet": {**MXNET, "cuda": "11.2", "driver": gpus.min_driver("11.2")},
    "theano": {"gpu_build": False, "notes": ["no pygpu"], "components": [], "cuda": "10.0",
               "driver": gpus.min_driver("10.0")},
}}


@pytest.fixture
def inspection_file(tmp_path):
    path = tmp_path / "inspection.json"
    path.write_text(json.dumps(INSPECTION))
    return path


def fake_nvidia_smi(folder: Path, line: str) -> None:
    """An nvidia-smi on PATH that answers the doctor's query with ``line``."""
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho '{line}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_doctor_reads_the_gpu_from_nvidia_smi(tmp_path, monkeypatch, capsys, inspection_file):
    fake_nvidia_smi(tmp_path / "bin", "NVIDIA H100 80GB HBM3, 9.0, 560.35.03")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert cli.main(["doctor", "pytorch", "mxnet", "lasagne", "--inspection", str(inspection_file)]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3 (compute capability 9.0, driver 560.35.03)" in out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "trains on the GPU (native)" in lines["PyTorch"] and "older than 580.65.06" in lines["PyTorch"]
    assert "through PTX JIT" in lines["MXNet"] and "older" not in lines["MXNet"]
    assert "trains on the CPU" in lines["Lasagne"]


def test_doctor_for_a_named_gpu_and_without_one(tmp_path, monkeypatch, capsys, inspection_file):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    assert cli.main(["doctor", "mxnet", "--gpu", "sm_86", "--inspection", str(inspection_file)]) == 0
    assert "MXNet  trains on the GPU (native)" in capsys.readouterr().out
    assert cli.main(["doctor", "--inspection", str(inspection_file)]) == 0
    assert "no NVIDIA GPU found" in capsys.readouterr().out
    assert cli.main(["doctor", "--gpu", "hopper", "--inspection", str(inspection_file)]) == 2
    assert "--gpu 'hopper': expected a compute capability such as sm_90" in capsys.readouterr().err
    assert cli.main(["doctor", "--gpu", "9.0", "--inspection", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: cannot read the GPU inspection" in capsys.readouterr().err
    for bad in (["--gpu", "9.0", "--driver", "new"], ["--driver", "550.54.15"]):
        assert cli.main(["doctor", *bad, "--inspection", str(inspection_file)]) == 2
        assert "--driver '" in capsys.readouterr().err


def test_bench_names_the_rows_that_will_not_use_the_gpu(tmp_path, monkeypatch, capsys, inspection_file):
    from harness.frameworks import select
    monkeypatch.setattr(gpus, "INSPECTION", inspection_file)
    fake_nvidia_smi(tmp_path / "bin", "NVIDIA GeForce RTX 5090, 12.0, 580.82.07")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cli.gpu_notice(select(["pytorch", "mxnet", "lasagne"]))
    out = capsys.readouterr().out
    assert "Lasagne (Theano) trains on the CPU on NVIDIA GeForce RTX 5090" in out
    assert "PyTorch" not in out and "MXNet" not in out  # native, and through PTX
    monkeypatch.setenv("PATH", str(tmp_path))  # no GPU: nothing new to say
    cli.gpu_notice(select(["lasagne"]))
    assert capsys.readouterr().out == ""


# --- records and the results table ---------------------------------------------------------------

def test_a_cpu_run_records_the_gpu_it_left_unused(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path / "bin", "NVIDIA H100 80GB HBM3, 570.86.15, 81559 MiB")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert machine.capture(device="cpu", versions={})["gpu_unused"] == "NVIDIA H100 80GB HBM3"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "gpu_unused" not in machine.capture(device="cpu", versions={})


def test_record_notes():
    cpu = {"framework": "Caffe2", "environment": {"device": "cpu", "gpu_unused": "NVIDIA H100"}}
    assert gpus.record_note(cpu, INSPECTION) == "on the CPU, NVIDIA H100 unused"
    on_hopper = {"framework": "MXNet", "environment": {"device": "cuda", "compute_cap": "9.0"}}
    assert gpus.record_note(on_hopper, INSPECTION) == "through PTX JIT"
    assert gpus.record_note({**on_hopper, "framework": "PyTorch"}, INSPECTION) == ""
    assert gpus.record_note({"framework": "PyTorch", "environment": {"device": "cpu"}}, INSPECTION) == ""


def test_the_results_table_marks_a_cpu_run_on_a_gpu_machine(tmp_path):
    from test_report import _write
    cpu = {"device": "cpu", "cpu": "Test CPU", "threads": 2, "versions": {}, "python": "3.9",
           "gpu_unused": "NVIDIA H100 80GB HBM3"}
    _write(tmp_path, "0-caffe2", framework="Caffe2", accuracy=0.5, timing={"train_seconds": 9.0}, environment=cpu)
    _write(tmp_path, "1-pytorch", framework="PyTorch", accuracy=0.5, timing={"train_seconds": 8.0},
           environment={**cpu, "gpu_unused": None})
    readme = report.render(tmp_path).read_text()
    assert "| Caffe2 (on the CPU, NVIDIA H100 80GB HBM3 unused) | 1 |" in readme
    assert "| PyTorch | 1 |" in readme


def test_committed_table_is_rendered_from_the_committed_inspection():
    inspection = gpus.load(gpus.INSPECTION)
    assert gpus.TABLE.read_text() == gpus.render(inspection)
    assert set(inspection["environments"]) == set(gpus.environments())
    table = gpus.TABLE.read_text()
    from harness.frameworks import FRAMEWORKS
    assert all(f"| {f.label} | `{f.env}` |" in table for f in FRAMEWORKS.values())


def test_pytorch_cuda_spec_cannot_take_a_cpu_wheel():
    """torch==2.13.0 also matches 2.13.0+cpu, which pip ranks higher where both are on offer."""
    lines = (REPOSITORY / "harness" / "envs" / "pytorch-cuda.txt").read_text().splitlines()
    torch = next(Requirement(line) for line in lines if line.startswith("torch"))
    assert not torch.specifier.contains("2.13.0+cpu") and torch.specifier.contains("2.13.0")


def test_a_broken_or_hanging_environment_is_a_row_saying_why(tmp_path):
    broken = tmp_path / "broken" / "bin" / "python"
    broken.parent.mkdir(parents=True)
    broken.write_text("#!/bin/sh\necho 'ImportError: libcuda.so.1: cannot open shared object file' >&2\nexit 3\n")
    broken.chmod(0o755)
    found = gpus.run_probe("mxnet", broken)
    assert found["imports"] is False and found["error"] == \
        "the probe exited with 3: ImportError: libcuda.so.1: cannot open shared object file"
    hanging = tmp_path / "hanging" / "bin" / "python"
    hanging.parent.mkdir(parents=True)
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(0o755)
    assert gpus.run_probe("jax", hanging, timeout=0.5)["error"] == "the probe did not finish within 0.5 s"
    missing = gpus.inspect("caffe2", tmp_path / "nowhere" / "bin" / "python")
    assert missing["built"] is False and gpus.verdict(missing, (7, 5)) == (gpus.UNKNOWN, missing["error"])


@pytest.mark.parametrize("holds_cuda, warned", [(False, True), (True, False)])
def test_a_cuda_environment_holding_a_cpu_build_is_a_warning(tmp_path, monkeypatch, capsys, holds_cuda, warned):
    """pip gave the cuda flavour a CPU wheel (as torch==2.13.0 took 2.13.0+cpu from a find-links
    folder): `rosetta envs --flavour cuda` says so instead of a silent CPU environment."""
    import sys
    from harness import kernels, venvs
    from harness.frameworks import Framework
    framework = Framework(name="fake", label="Fake", api="t", env="pytorch", versions_probe="print('fake 1.0')",
                          cpu_probe=f"import sys; sys.exit({int(holds_cuda)})")
    monkeypatch.setenv("ROSETTA_ENVS_DIR", str(tmp_path / "envs"))
    monkeypatch.setattr(kernels, "kernels_prefix", lambda: tmp_path / "prefix")

    def build(framework, flavour):
        (venvs.env_path(framework) / "bin").mkdir(parents=True)
        (venvs.env_path(framework) / "bin" / "python").symlink_to(sys.executable)

    monkeypatch.setattr(venvs, "build", build)
    kernels.create(framework, "cuda", force=True)
    out = capsys.readouterr().out
    assert ("the cuda environment of Fake holds a CPU build (fake 1.0)" in out) == warned
    assert "pytorch-cuda.txt" in out if warned else "warning" not in out


def test_the_table_written_is_the_table_its_json_renders(tmp_path):
    fresh = {**INSPECTION, "environments": {"pytorch": {**INSPECTION["environments"]["pytorch"],
                                                        "versions": {"torch": "2.13.0", "onnx": "1.23.2"}}}}
    table = gpus.write(fresh, tmp_path)
    assert table.read_text() == gpus.render(gpus.load(tmp_path / "inspection.json"))


def test_doctor_with_a_driver_too_old_to_tell_the_compute_capability(tmp_path, monkeypatch, capsys, inspection_file):
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text('#!/bin/sh\ncase "$*" in *compute_cap*) echo "Field compute_cap is not a valid field" >&2; '
                      'exit 2;; *-L*) echo "GPU 0: Tesla V100-SXM2-16GB (UUID: GPU-1)";; esac\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    assert cli.main(["doctor", "--inspection", str(inspection_file)]) == 2
    assert "does not give its compute capability" in capsys.readouterr().err


def test_inspecting_a_cpu_flavour_says_so(tmp_path):
    import sys
    from harness import venvs
    env = tmp_path / "theano"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(sys.executable)
    (env / venvs.MARKER).write_text(json.dumps({"flavour": "cpu"}))
    found = gpus.inspect("theano", env / "bin" / "python")
    assert found["flavour"] == "cpu" and "is the cpu flavour: build the cuda one" in found["notes"][0]
