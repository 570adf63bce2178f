"""Which GPUs each framework's CUDA environment can use, found without a GPU.

``inspect_all`` runs a probe in each built CUDA environment's own interpreter (a subprocess
with a timeout, so that a broken environment is a row saying why) for what the framework
says of itself: whether it imports, whether it is a CUDA build, its CUDA and cuDNN versions
and the compute capabilities it was compiled for. It then reads the fatbinaries of the
framework's CUDA libraries and of the cuDNN and cuBLAS it loads (``harness.fatbin``): which
architectures have machine code (cubins) and which have PTX.

``verdict`` turns that into what happens on one GPU, by NVIDIA's compatibility rules: a
cubin built for compute capability X.Y runs on X.Z with Z >= Y (an "a" cubin such as
sm_90a on X.Y only, an "f" one on the family X.*); PTX for X.Y is compiled by the driver at
load time for any GPU of X.Y or newer ("f" PTX within its family only). Frameworks that
compile their own kernels when they run (XLA, CuPy and libgpuarray through NVRTC) reach
what their CUDA compiler knows, and newer GPUs through the PTX it writes for its newest.

``rosetta doctor --inspect`` writes results/gpus/inspection.json and the table
results/gpus/README.md; ``rosetta doctor`` answers for the GPU nvidia-smi shows, or one
named with ``--gpu``, from that JSON.
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

from common import REPOSITORY
from harness import fatbin, venvs
from harness.frameworks import FRAMEWORKS, Framework

RESULTS = REPOSITORY / "results" / "gpus"
INSPECTION = RESULTS / "inspection.json"
TABLE = RESULTS / "README.md"
PROBE_TIMEOUT = 300.0

# The GPU generations of the table: (generation, compute capability, an example GPU).
GENERATIONS = [
    ("Pascal", (6, 0), "P100"), ("Pascal", (6, 1), "GTX 1080, P40"), ("Volta", (7, 0), "V100"),
    ("Turing", (7, 5), "T4, RTX 2080"), ("Ampere", (8, 0), "A100"), ("Ampere", (8, 6), "A10, RTX 3090"),
    ("Ada", (8, 9), "L4, L40S, RTX 4090"), ("Hopper", (9, 0), "H100, H200"),
    ("Blackwell", (10, 0), "B200"), ("Blackwell", (12, 0), "RTX 5090, RTX PRO 6000"),
]

# The compute capabilities each CUDA release can compile for (nvcc --list-gpu-arch), lowest and
# highest: what a framework that compiles its kernels at run time with that CUDA can target.
CUDA_ARCHS = {
    (10, 0): ((3, 0), (7, 5)), (10, 1): ((3, 0), (7, 5)), (10, 2): ((3, 0), (7, 5)),
    (11, 0): ((3, 5), (8, 0)), (11, 1): ((3, 5), (8, 6)), (11, 2): ((3, 5), (8, 6)), (11, 3): ((3, 5), (8, 6)),
    (11, 4): ((3, 5), (8, 7)), (11, 5): ((3, 5), (8, 7)), (11, 6): ((3, 5), (8, 7)), (11, 7): ((3, 5), (8, 7)),
    (11, 8): ((3, 5), (9, 0)), (12, 0): ((5, 0), (9, 0)), (12, 1): ((5, 0), (9, 0)), (12, 2): ((5, 0), (9, 0)),
    (12, 3): ((5, 0), (9, 0)), (12, 4): ((5, 0), (9, 0)), (12, 5): ((5, 0), (9, 0)), (12, 6): ((5, 0), (9, 0)),
    (12, 8): ((5, 0), (12, 0)), (12, 9): ((5, 0), (12, 1)), (13, 0): ((7, 5), (12, 1)),
}

# The oldest Linux driver of each CUDA release (NVIDIA's CUDA Toolkit release notes, table 3),
# and, from CUDA 11, the oldest driver of the major release, enough through minor-version
# compatibility for machine code but not for JIT-compiling the release's PTX.
DRIVERS = {
    (10, 0): "410.48", (10, 1): "418.39", (10, 2): "440.33", (11, 0): "450.36.06", (11, 1): "455.23",
    (11, 2): "460.27.03", (11, 3): "465.19.01", (11, 4): "470.42.01", (11, 5): "495.29.05",
    (11, 6): "510.39.01", (11, 7): "515.43.04", (11, 8): "520.61.05", (12, 0): "525.60.13",
    (12, 1): "530.30.02", (12, 2): "535.54.03", (12, 3): "545.23.06", (12, 4): "550.54.14",
    (12, 5): "555.42.02", (12, 6): "560.28.03", (12, 8): "570.26", (12, 9): "575.51.03", (13, 0): "580.65.06",
}
MINOR_COMPATIBILITY = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}

NATIVE, PTX, CPU, NONE, UNKNOWN = "native", "PTX JIT", "CPU only", "no", "?"
RANK = {NATIVE: 3, PTX: 2, NONE: 1, CPU: 0, UNKNOWN: 0}


class GPUError(ValueError):
    """A compute capability that cannot be read; the message names the value and the form expected."""


# --- compute capabilities and architectures -------------------------------------------------

def parse_gpu(text: str) -> tuple[int, int]:
    """'sm_90', '90', '9.0', '12.0' or 'sm_120' as (major, minor); GPUError otherwise."""
    value = str(text).strip().lower()
    match = re.fullmatch(r"(?:sm_?)?(\d{2,3})", value) or re.fullmatch(r"(\d{1,2})\.(\d)", value)
    if match and len(match.groups()) == 1:
        digits = match.group(1)
        major, minor = int(digits[:-1]), int(digits[-1])
    elif match:
        major, minor = int(match.group(1)), int(match.group(2))
    else:
        raise GPUError(f"--gpu {text!r}: expected a compute capability such as sm_90, 90 or 9.0 "
                       "(nvidia-smi --query-gpu=compute_cap shows a GPU's).")
    if not 3 <= major <= 20:
        raise GPUError(f"--gpu {text!r}: compute capability {major}.{minor} is no NVIDIA GPU's; expected "
                       "a major version from 3 (Kepler) on, such as sm_90 or 9.0.")
    return major, minor


def arch(name: str) -> tuple[str, int, int, str]:
    """'sm_90a' as ('sm', 9, 0, 'a'); 'compute_120f' as ('compute', 12, 0, 'f')."""
    match = re.fullmatch(r"(sm|compute)_(\d+)([af]?)", name.strip())
    if not match:
        raise GPUError(f"{name!r} is no architecture name; expected e.g. sm_90, sm_90a or compute_90.")
    digits = match.group(2)
    return match.group(1), int(digits[:-1]), int(digits[-1]), match.group(3)


def runs_on(name: str, gpu: tuple[int, int]) -> bool:
    """Whether a cubin (sm_*) runs natively, or PTX (compute_*) is JIT-compiled, on a GPU of ``gpu``."""
    kind, major, minor, variant = arch(name)
    if variant == "a":
        return (major, minor) == gpu
    if kind == "sm" or variant == "f":
        return major == gpu[0] and minor <= gpu[1]
    return (major, minor) <= gpu


def component_verdict(component: dict, gpu: tuple[int, int]) -> str:
    """native, PTX JIT or no for one component: compiled kernels (its "sm" and "ptx" lists)
    or a run-time compiler (its "compiles_for": [lowest, highest] compute capability)."""
    if component.get("compiles_for"):
        low, high = (tuple(v) for v in component["compiles_for"])
        if gpu < low:
            return NONE
        return NATIVE if gpu <= high else component.get("beyond_newest", PTX)
    if any(runs_on(n, gpu) for n in component.get("sm", [])):
        return NATIVE
    if any(runs_on(n, gpu) for n in component.get("ptx", [])):
        return PTX
    return NONE


def cuda_tuple(version) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", str(version or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def min_driver(cuda) -> dict:
    """{"minimum": the oldest driver that runs the CUDA release's machine code, "for_ptx": the
    oldest that JIT-compiles its PTX}; values None where the table does not know the release."""
    version = cuda_tuple(cuda)
    if version is None:
        return {"minimum": None, "for_ptx": None}
    exact = DRIVERS.get(version)  # None for a release newer than the table
    floor = MINOR_COMPATIBILITY.get(version[0], exact)
    return {"minimum": floor, "for_ptx": exact}


def driver_tuple(text) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(text)))


# --- probes ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    code: str                          # Python (3.6 to 3.13) run in the environment; fills ``out``
    own: tuple = ()                    # globs under site-packages: the framework's own CUDA kernels
    libraries: tuple = ()              # globs: the cuDNN and cuBLAS it loads, where the environment has them
    compiler: str = ""                 # what compiles its kernels at run time, if anything
    beyond_newest: str = "PTX JIT"     # a GPU newer than the compiler knows: PTX for its newest, or "no"
    cuda_from_spec: str = ""           # the CUDA it needs where it cannot say (from its spec)
    compiler_cuda: str = ""            # the CUDA of the machine's run-time compiler (its docker image's)
    note: str = ""


PRELUDE = '''\
import json, sys
out = {"imports": False, "python": sys.version.split()[0], "notes": [], "versions": {}}
def dist(name):
    try:
        try:
            from importlib.metadata import version
        except ImportError:
            import pkg_resources
            return pkg_resources.get_distribution(name).version
        return version(name)
    except Exception:
        return None
def cudnn_text(v):
    v = int(v)
    return "%d.%d.%d" % ((v // 10000, v // 100 % 100, v % 100) if v >= 9000 * 10 else (v // 1000, v // 100 % 10, v % 100))
try:
BODY
except BaseException as error:
    out["error"] = "%s: %s" % (type(error).__name__, str(error).strip().splitlines()[0] if str(error).strip() else "")
print("ROSETTA-PROBE " + json.dumps(out))
'''

TORCH = '''
import torch
out["versions"]["torch"] = torch.__version__
out["imports"] = True
out["cuda"] = torch.version.cuda
out["gpu_build"] = torch.version.cuda is not None
if out["gpu_build"]:
    out["archs"] = torch._C._cuda_getArchFlags().split()
    out["archs_source"] = "torch._C._cuda_getArchFlags(), what torch.cuda.get_arch_list() returns on a GPU"
    try:
        out["cudnn"] = cudnn_text(torch.backends.cudnn.version())
    except Exception as e:
        out["notes"].append("cuDNN version: %s" % e)
'''
CAFFE2 = TORCH + '''
import importlib
importlib.import_module("caffe2.python.caffe2_pybind11_state_gpu")
out["notes"].append("Caffe2's CUDA operators (caffe2_pybind11_state_gpu) import")
'''
TENSORFLOW = '''
import tensorflow as tf
out["versions"]["tensorflow"] = tf.__version__
out["imports"] = True
info = tf.sysconfig.get_build_info()
out["gpu_build"] = bool(info.get("is_cuda_build"))
out["cuda"] = info.get("cuda_version")
out["cudnn"] = info.get("cudnn_version")
out["archs"] = list(info.get("cuda_compute_capabilities") or [])
out["archs_source"] = "tf.sysconfig.get_build_info()['cuda_compute_capabilities']"
'''
JAX = '''
import jax, jaxlib
out["versions"].update(jax=jax.__version__, jaxlib=jaxlib.__version__)
out["imports"] = True
from jax._src.lib import cuda_versions as c
out["gpu_build"] = c is not None
if c is not None:
    b = c.cuda_runtime_build_version()
    out["cuda"] = "%d.%d" % (b // 1000, b // 10 % 100)
    out["cudnn"] = cudnn_text(c.cudnn_build_version())
    r = c.cuda_runtime_get_version()
    out["notes"].append("CUDA runtime %d.%d and cuDNN %s installed beside it" % (r // 1000, r // 10 % 100, cudnn_text(c.cudnn_get_version())))
    for name in ("jax-cuda13-plugin", "jax-cuda12-plugin", "nvidia-cuda-nvcc", "nvidia-cuda-nvcc-cu12"):
        if dist(name):
            out["versions"][name] = dist(name)
            if "nvcc" in name:
                out["compiler_cuda"] = ".".join(dist(name).split(".")[:2])
'''
MXNET = '''
for name in ("mxnet-cu112", "mxnet-cu117", "mxnet-cu110", "mxnet-cu102"):
    if dist(name):
        out["cuda"] = "%s.%s" % (name[-3:-1], name[-1])
        out["versions"][name] = dist(name)
        out["gpu_build"] = True
        out["notes"].append("CUDA from the wheel's name %s" % name)
if dist("nvidia-cudnn-cu11"):
    out["cudnn"] = dist("nvidia-cudnn-cu11")
    out["notes"].append("cuDNN: loads libcudnn.so.8, here nvidia-cudnn-cu11 %s" % dist("nvidia-cudnn-cu11"))
import mxnet as mx
out["versions"]["mxnet"] = mx.__version__
out["imports"] = True
features = mx.runtime.Features()
out["gpu_build"] = features.is_enabled("CUDA")
out["cudnn_enabled"] = features.is_enabled("CUDNN")
'''
CHAINER = '''
out["versions"]["cupy-cuda12x"] = dist("cupy-cuda12x")
import chainer
out["versions"]["chainer"] = chainer.__version__
import cupy
out["imports"] = True
out["gpu_build"] = True
try:
    v = cupy.cuda.runtime.runtimeGetVersion()
    out["cuda"] = "%d.%d" % (v // 1000, v // 10 % 100)
except Exception as e:
    out["notes"].append("CUDA runtime: %s" % str(e).splitlines()[0])
try:
    from cupy_backends.cuda.libs import cudnn
    out["cudnn"] = cudnn_text(cudnn.get_build_version())
    out["notes"].append("cuDNN: the version CuPy was built against")
except Exception as e:
    out["notes"].append("cuDNN: %s" % str(e).splitlines()[0])
try:
    from cupy.cuda import nvrtc
    v = nvrtc.getVersion()
    out["notes"].append("NVRTC %d.%d found" % v)
except Exception as e:
    out["notes"].append("NVRTC not found here: %s" % str(e).splitlines()[0])
'''
THEANO = '''
from common import theano_compat
theano_compat.install()
import theano
out["versions"]["theano"] = theano.__version__
out["imports"] = True
try:
    import pygpu
    out["versions"]["pygpu"] = pygpu.__version__
    out["gpu_build"] = True
except ImportError as e:
    out["gpu_build"] = False
    out["notes"].append("no pygpu (libgpuarray): Theano's GPU back end cannot start (%s)" % e)
'''
CNTK = '''
out["versions"]["cntk-gpu"] = dist("cntk-gpu")
out["gpu_build"] = bool(dist("cntk-gpu"))
import cntk
out["versions"]["cntk"] = cntk.__version__
out["imports"] = True
'''

NVIDIA_CUDNN = ("nvidia/cudnn/lib/libcudnn*.so*",)
NVIDIA_CUBLAS = ("nvidia/cublas/lib/libcublas*.so*", "nvidia/cu1*/lib/libcublas*.so*")

PROBES = {
    "pytorch": Probe(TORCH, own=("torch/lib/libtorch_cuda*.so", "torch/lib/libc10_cuda.so"),
                     libraries=NVIDIA_CUDNN + NVIDIA_CUBLAS),
    "tensorflow": Probe(TENSORFLOW, own=("tensorflow/libtensorflow_cc.so*", "tensorflow/libtensorflow_framework.so*",
                                         "tensorflow/python/_pywrap_tensorflow_internal.so"),
                        libraries=NVIDIA_CUDNN + NVIDIA_CUBLAS),
    "jax": Probe(JAX, own=("jax_plugins/xla_cuda*/*.so", "jax_cuda*_plugin/*.so"),
                 libraries=NVIDIA_CUDNN + NVIDIA_CUBLAS, compiler="XLA with the ptxas of its CUDA"),
    "mxnet": Probe(MXNET, own=("mxnet/libmxnet.so",), libraries=NVIDIA_CUDNN + NVIDIA_CUBLAS),
    "chainer": Probe(CHAINER, own=("cupy/**/*.so", "cupy_backends/**/*.so"),
                     compiler="CuPy through the machine's NVRTC", compiler_cuda="12.2",
                     note="CuPy's wheel holds no CUDA libraries: it uses the machine's CUDA 12 and cuDNN 8 "
                          "(docker/chainer: CUDA 12.2, whose NVRTC the table assumes); CuPy compiles for the "
                          "GPU's architecture, or for NVRTC's newest as PTX."),
    "theano": Probe(THEANO, compiler="libgpuarray through the machine's NVRTC", cuda_from_spec="10.0",
                    compiler_cuda="10.0",
                    beyond_newest=NONE,
                    note="Theano compiles every GPU kernel at run time, libgpuarray asking NVRTC for the GPU's "
                         "own architecture (-arch compute_XY), which NVRTC 10.0 (docker/theano) knows up to 7.5."),
    "cntk": Probe(CNTK, own=("cntk/libs/libCntk.*.so", "cntk/libs/Cntk.*.so"),
                  libraries=("cntk/libs/libcudnn*.so*", "cntk/libs/libcublas*.so*"), cuda_from_spec="10.0",
                  note="cntk-gpu 2.7 carries CUDA 10.0's runtime, cuBLAS, cuRAND, cuSPARSE, NCCL and cuDNN 7 in "
                       "cntk/libs; it needs the driver's libnvidia-ml.so.1 and OpenMPI (libmpi.so.12) to import."),
    "caffe2": Probe(CAFFE2, own=("torch/lib/libtorch_cuda*.so", "torch/lib/libcaffe2*.so", "torch/lib/libc10_cuda.so"),
                    libraries=("torch/lib/libcudnn*.so*", "torch/lib/libcublas*.so*")),
}


def environments() -> list[str]:
    """The environments of the registry, in its order."""
    return list(dict.fromkeys(f.env for f in FRAMEWORKS.values()))


def _site_packages(python: Path) -> list[Path]:
    root = python.parent.parent
    return sorted({p for p in root.glob("lib/python3*/site-packages")})


def _library_path(site_packages: list[Path]) -> str:
    folders = [f for sp in site_packages for f in glob.glob(str(sp / "nvidia" / "*" / "lib"))]
    return ":".join(folders + [os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(":")


def run_probe(env: str, python: Path, timeout: float = PROBE_TIMEOUT) -> dict:
    """The probe's findings, run in ``python`` (the environment's interpreter); a dict with
    "error" where it could not run or did not answer."""
    probe = PROBES[env]
    code = PRELUDE.replace("BODY", textwrap.indent(probe.code.strip("\n"), "    "))
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY), CUDA_VISIBLE_DEVICES="",
                       LD_LIBRARY_PATH=_library_path(_site_packages(python)), TF_CPP_MIN_LOG_LEVEL="3",
                       JAX_PLATFORMS="", PYTHONDONTWRITEBYTECODE="1")
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=timeout,
                              env=environment, cwd=str(REPOSITORY))
    except subprocess.TimeoutExpired:
        return {"imports": False, "error": f"the probe did not finish within {timeout:g} s"}
    except OSError as error:
        return {"imports": False, "error": f"{python} cannot run: {error}"}
    for line in done.stdout.splitlines():
        if line.startswith("ROSETTA-PROBE "):
            return json.loads(line[len("ROSETTA-PROBE "):])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"imports": False, "error": f"the probe exited with {done.returncode}: {tail}"}


def inspect(env: str, python: Path | None = None) -> dict:
    """One environment's inspection: the probe's findings and its components' architectures."""
    framework = next(f for f in FRAMEWORKS.values() if f.env == env)
    python = Path(python or venvs.env_python(framework))
    probe = PROBES[env]
    result = {"env": env, "path": str(python.parent.parent)}
    if not python.exists():
        return {**result, "built": False, "error": f"not built: {python} does not exist"}
    marker = python.parent.parent / venvs.MARKER
    try:
        result["flavour"] = json.loads(marker.read_text()).get("flavour")
    except (OSError, ValueError):
        result["flavour"] = None
    result.update(built=True, **run_probe(env, python))
    if result["flavour"] == "cpu":
        result.setdefault("notes", []).insert(0, f"{result['path']} is the cpu flavour: build the cuda one "
                                                 "(`rosetta envs --flavour cuda`) to inspect the CUDA build")
    site_packages = _site_packages(python)
    components = []
    own = _files(site_packages, probe.own)
    if own:
        scanned = fatbin.scan(own)
        components.append({"name": "framework kernels", **scanned})
    if result.get("archs"):
        sm = sorted({a for a in result["archs"] if a.startswith("sm_")}, key=fatbin.arch_key)
        ptx = sorted({a for a in result["archs"] if a.startswith("compute_")}, key=fatbin.arch_key)
        components.insert(0, {"name": "framework's arch list", "sm": sm, "ptx": ptx,
                              "source": result.get("archs_source")})
    if probe.compiler:
        cuda = cuda_tuple(result.get("compiler_cuda") or probe.compiler_cuda or result.get("cuda")
                          or probe.cuda_from_spec)
        span = CUDA_ARCHS.get(cuda) or _newest_of_major(cuda)
        components.append({"name": probe.compiler, "cuda": "%d.%d" % cuda if cuda else None,
                           "compiles_for": [list(span[0]), list(span[1])] if span else None,
                           "beyond_newest": probe.beyond_newest})
    for label, patterns in (("cuDNN", [p for p in probe.libraries if "cudnn" in p]),
                            ("cuBLAS", [p for p in probe.libraries if "cublas" in p])):
        files = _files(site_packages, patterns)
        if files:
            components.append({"name": label, **fatbin.scan(files)})
    result["components"] = components
    if not result.get("cuda") and probe.cuda_from_spec:
        result["cuda"] = probe.cuda_from_spec
        result.setdefault("notes", []).append(f"CUDA {probe.cuda_from_spec}: from its spec and docker image")
    if probe.note:
        result.setdefault("notes", []).append(probe.note)
    result["driver"] = min_driver(result.get("cuda"))
    return result


def _newest_of_major(cuda):
    if not cuda:
        return None
    known = sorted(v for v in CUDA_ARCHS if v[0] == cuda[0] and v <= cuda)
    return CUDA_ARCHS[known[-1]] if known else None


def _files(site_packages: list[Path], patterns) -> list[Path]:
    found = set()
    for sp in site_packages:
        for pattern in patterns:
            found.update(Path(p) for p in glob.glob(str(sp / pattern), recursive=True)
                         if Path(p).is_file() and not Path(p).is_symlink())
    return sorted(found)


def inspect_all(envs: list[str] | None = None) -> dict:
    """Every environment's inspection, with the date and where it was made."""
    chosen = envs or environments()
    found = {}
    for env in chosen:
        print(f"inspecting {env} ...", flush=True)
        found[env] = inspect(env)
    return {"date": datetime.date.today().isoformat(), "envs_dir": str(venvs.envs_dir()),
            "environments": found}


# --- verdicts ------------------------------------------------------------------------------------

def verdict(inspection: dict, gpu: tuple[int, int]) -> tuple[str, str]:
    """(native / PTX JIT / CPU only / no / ?, why) for one environment's inspection on one GPU."""
    if not inspection or (not inspection.get("built", True) and not inspection.get("components")):
        return UNKNOWN, (inspection or {}).get("error", "not inspected")
    if inspection.get("gpu_build") is False:
        return CPU, "no GPU back end" + (f": {inspection['notes'][0]}" if inspection.get("notes") else "")
    components = [c for c in inspection.get("components", []) if c.get("sm") or c.get("ptx") or c.get("compiles_for")]
    if not components:
        return UNKNOWN, "no CUDA code found to judge by"
    judged = [(component_verdict(c, gpu), c["name"]) for c in components]
    worst = min(judged, key=lambda j: RANK[j[0]])
    limiting = [name for v, name in judged if v == worst[0]]
    why = {NATIVE: "machine code for it in " + ", ".join(limiting),
           PTX: "no machine code for it in " + ", ".join(limiting) + "; the driver compiles their PTX",
           NONE: "neither machine code nor PTX for it in " + ", ".join(limiting)}[worst[0]]
    return worst[0], why


def rows_for(inspection: dict, gpu: tuple[int, int], frameworks: list[Framework] | None = None) -> list[dict]:
    """One verdict per framework (a row of the results table) on ``gpu``."""
    out = []
    for framework in frameworks or list(FRAMEWORKS.values()):
        found = inspection.get("environments", {}).get(framework.env)
        result, why = verdict(found, gpu)
        out.append({"framework": framework.name, "label": framework.label, "env": framework.env,
                    "verdict": result, "why": why, "driver": (found or {}).get("driver", {}),
                    "cuda": (found or {}).get("cuda")})
    return out


# --- the committed table -----------------------------------------------------------------------

def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _archs(component: dict) -> str:
    if component.get("compiles_for"):
        low, high = component["compiles_for"]
        return f"compiles for {low[0]}.{low[1]} to {high[0]}.{high[1]} (CUDA {component.get('cuda')})"
    sm = " ".join(component.get("sm", [])) or "none"
    ptx = " ".join(component.get("ptx", [])) or "none"
    files = component.get("files")
    where = f" ({len(files)} files)" if files and len(files) > 1 else f" ({files[0]})" if files else ""
    return f"cubins {sm}; PTX {ptx}{where}"


def render(inspection: dict) -> str:
    """results/gpus/README.md from the inspection JSON (deterministic: same JSON, same text)."""
    head = ["Framework", "Environment"] + [f"{g} {c[0]}.{c[1]}" for g, c, _ in GENERATIONS] + ["Driver"]
    lines = [
        "# Which GPUs each framework can use",
        "",
        f"Inspected on {inspection['date']}, without a GPU, by `rosetta doctor --inspect` in the CUDA "
        "environments that `rosetta envs --flavour cuda` builds (the specs `harness/envs/ENV-cuda.txt`); "
        "written from [inspection.json](inspection.json) by the same command, not by hand. For one GPU, "
        "`rosetta doctor` answers from the same file (`--gpu sm_90` for a GPU that is not here).",
        "",
        f"**{NATIVE}**: machine code (a cubin) for that GPU in every CUDA library the framework uses. "
        f"**{PTX}**: some of them only through PTX, which the driver compiles when the program loads "
        f"(slower start, untested here). **{CPU}**: the environment holds no GPU back end. **{NONE}**: "
        "neither machine code nor PTX for that GPU; the notebooks then fail on it or, where they check "
        "(Caffe2), train on the CPU. Keras rows are their backend's environment. Driver: the oldest "
        "NVIDIA driver for the build's CUDA (through CUDA's minor-version compatibility where it has "
        "it), and in brackets the one needed to JIT-compile its PTX.",
        "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
    ]
    environments_ = inspection.get("environments", {})
    for framework in FRAMEWORKS.values():
        found = environments_.get(framework.env)
        cells = [verdict(found, gpu)[0] for _, gpu, _ in GENERATIONS]
        driver = (found or {}).get("driver") or {}
        text = f">= {driver['minimum']}" if driver.get("minimum") else "?"
        if driver.get("for_ptx") and driver.get("for_ptx") != driver.get("minimum"):
            text += f" (PTX: >= {driver['for_ptx']})"
        lines.append("| " + " | ".join([framework.label, f"`{framework.env}`"] + cells + [text]) + " |")
    lines += ["", "Example GPUs: " + "; ".join(f"{c[0]}.{c[1]} {e}" for _, c, e in GENERATIONS) + ".", "",
              "## Evidence", "",
              "| Environment | Python | Imports | Versions | CUDA build | CUDA | cuDNN | What was inspected | Notes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for env in sorted(environments_, key=lambda e: (e not in environments(), environments().index(e)
                                                     if e in environments() else 0, e)):
        found = environments_[env]
        versions = ", ".join(f"{k} {v}" for k, v in (found.get("versions") or {}).items() if v)
        imports = "yes" if found.get("imports") else f"no: {found.get('error', '')}"
        parts = [f"{c['name']}: {_archs(c)}" for c in found.get("components", [])]
        build = {True: "yes", False: "no"}.get(found.get("gpu_build"), "?")
        lines.append("| " + " | ".join(_cell(x) for x in [
            f"`{env}`", found.get("python", "–"), imports, versions or "–", build, found.get("cuda") or "–",
            found.get("cudnn") or "–", "<br>".join(parts) or "–", "; ".join(found.get("notes", [])) or "–"]) + " |")
    return "\n".join(lines) + "\n"


def write(inspection: dict, folder: Path = RESULTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(inspection, indent=1, sort_keys=True) + "\n"
    (folder / "inspection.json").write_text(text)
    (folder / "README.md").write_text(render(json.loads(text)))  # as the file will be read
    return folder / "README.md"


def load(path: Path = INSPECTION) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"{path}: cannot read the GPU inspection ({error.strerror or error}); expected the "
                         "file `rosetta doctor --inspect` writes.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error}); expected the file `rosetta doctor --inspect` writes.") from None


# --- the GPU of this machine, and the doctor --------------------------------------------------

def local_gpu() -> dict | None:
    """{"name", "compute_cap": (major, minor), "driver"} of nvidia-smi's first GPU, or None."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0]:
            try:
                capability = parse_gpu(parts[1])
            except GPUError:
                continue
            return {"name": parts[0], "compute_cap": capability, "driver": parts[2]}
    return None


def driver_ok(driver: str | None, needed: dict) -> str:
    """'' where ``driver`` is new enough (or unknown), else why not."""
    if not driver:
        return ""
    minimum, for_ptx = needed.get("minimum"), needed.get("for_ptx")
    if minimum and driver_tuple(driver) < driver_tuple(minimum):
        return f"driver {driver} is older than {minimum}, the oldest for its CUDA"
    return ""


def doctor_lines(inspection: dict, gpu: tuple[int, int], name: str = "", driver: str | None = None,
                 frameworks: list[Framework] | None = None) -> list[str]:
    """What each row will do on one GPU, a line each."""
    title = f"{name} (compute capability {gpu[0]}.{gpu[1]}" + (f", driver {driver})" if driver else ")")
    lines = [f"GPU: {title}; from the inspection of {inspection.get('date')}:"]
    rows = rows_for(inspection, gpu, frameworks)
    width = max(len(r["label"]) for r in rows)
    for r in rows:
        problem = driver_ok(driver, r["driver"])
        text = {NATIVE: "trains on the GPU (native)", PTX: "trains on the GPU through PTX JIT",
                CPU: "trains on the CPU", NONE: "cannot use this GPU", UNKNOWN: "unknown"}[r["verdict"]]
        ptx_driver = r["driver"].get("for_ptx")
        if r["verdict"] == PTX and driver and ptx_driver and driver_tuple(driver) < driver_tuple(ptx_driver):
            problem = problem or f"driver {driver} is older than {ptx_driver}, which JIT-compiles CUDA {r['cuda']}'s PTX"
        lines.append(f"  {r['label']:{width}}  {text}: {r['why']}" + (f"; {problem}" if problem else ""))
    return lines


def cpu_rows(inspection: dict, gpu: tuple[int, int], frameworks: list[Framework]) -> list[dict]:
    """The rows that will not train on this GPU (CPU only, or no kernels for it)."""
    return [r for r in rows_for(inspection, gpu, frameworks) if r["verdict"] in (CPU, NONE)]


# --- marks in the results table ------------------------------------------------------------------

_LABELS = {f.label: f for f in FRAMEWORKS.values()}
_committed: dict = {}


def record_note(record: dict, inspection: dict | None = None) -> str:
    """What the results table says beside a run that did not use the machine's GPU natively: a
    run on the CPU of a machine with a GPU (its record's environment names the GPU it left
    unused), or a GPU run of a framework that the inspection says reaches that GPU only
    through PTX, or not at all. '' otherwise."""
    env = record.get("environment") or {}
    if env.get("device") != "cuda":
        unused = env.get("gpu_unused")
        return f"on the CPU, {unused} unused" if unused else ""
    capability = env.get("compute_cap")
    framework = _LABELS.get(record.get("framework"))
    if not capability or framework is None:
        return ""
    if inspection is None:
        if "value" not in _committed:
            try:
                _committed["value"] = load(INSPECTION)
            except ValueError:
                _committed["value"] = {}
        inspection = _committed["value"]
    try:
        result, _ = verdict(inspection.get("environments", {}).get(framework.env), parse_gpu(capability))
    except GPUError:
        return ""
    return {PTX: "through PTX JIT", NONE: "no kernels for this GPU"}.get(result, "")
