"""What a run ran on: the device, its drivers, the Python and framework versions.

    env = machine.capture(device="cuda", versions={"torch": torch.__version__},
                          cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                          threads=torch.get_num_threads(), threads_requested=threads)
    machine.print_summary(env)    # or print(machine.describe(env)): one line

``threads`` is the CPU thread count in effect, as the framework reports it where it can;
``threads_requested`` the notebook's ``threads`` parameter (None: not set, every core).
``cpu_threads`` resolves that parameter, ``thread_variables`` are the environment variables
the harness sets for it before a kernel starts (OpenMP and the BLAS libraries read them once).

The GPU's name and driver come from ``nvidia-smi``; CUDA and cuDNN are the
versions the framework was built with and loaded, which only it can tell.
"""
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Union

from common import REPOSITORY


def _run(command: List[str]) -> Optional[str]:
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # Python 3.6 has no
                              universal_newlines=True, timeout=20)                # capture_output/text
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def gpus() -> List[dict]:
    """Name, driver and memory of each NVIDIA GPU, from nvidia-smi ([] without one)."""
    if not shutil.which("nvidia-smi"):
        return []
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader"])
    found = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            found.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return found


def compute_cap() -> Optional[str]:
    """The first GPU's compute capability ("9.0"), from nvidia-smi (None where it cannot say)."""
    if not shutil.which("nvidia-smi"):
        return None
    out = _run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


COMMIT_FILE = "COMMIT"  # at the repository's root, in a checkout carried without .git
RESULTS_FOLDER = "results"  # what the harness writes: changes there do not make a tree dirty
README_FILE = "README.md"  # the top-level README, whose results block `rosetta report` rewrites: not dirty either


def git_commit() -> Optional[str]:
    """The repository's commit, with ``-dirty`` when tracked files other than results/ and the top-level
    README.md (both rewritten by `rosetta report`) differ from it.

    Git says first. Where it cannot (a checkout copied without ``.git``, or no git at all), the
    file ``COMMIT`` at the repository's root says: one line, the 40-hex commit, optionally
    followed by ``-dirty``. A malformed file is reported and not used (None: unknown).
    """
    commit = _git_commit()
    return commit if commit is not None else _commit_file()


def _git_commit() -> Optional[str]:
    top = _run(["git", "-C", str(REPOSITORY), "rev-parse", "--show-toplevel"])
    if top is None or Path(top).resolve() != REPOSITORY.resolve():
        return None  # no git, no .git, or a repository around this copy rather than its own
    commit = _run(["git", "-C", str(REPOSITORY), "rev-parse", "HEAD"])
    if commit is None:
        return None
    # the records, tables and plots the harness writes under results/ are its output, not its code
    # (and the top-level README, whose results block the report rewrites after a suite: a suite's later runs,
    # such as make cpu-tables' inference stage after its main one, would otherwise all say -dirty)
    dirty = _run(["git", "-C", str(REPOSITORY), "status", "--porcelain", "--untracked-files=no",
                  "--", ".", ":(exclude){}".format(RESULTS_FOLDER), ":(exclude){}".format(README_FILE)])
    return commit + ("-dirty" if dirty or dirty is None else "")  # unknown: not known to be clean


def _commit_file() -> Optional[str]:
    path = REPOSITORY / COMMIT_FILE
    try:
        text = path.read_text()
    except OSError:
        return None
    value = text.strip()
    if not re.fullmatch(r"[0-9a-f]{40}(-dirty)?", value):
        print("{}: {!r} is not a commit; expected one line, 40 hexadecimal digits (lower case), optionally "
              "followed by -dirty. Records of this checkout carry no commit.".format(path, text[:100]),
              file=sys.stderr)
        return None
    return value


def cores() -> int:
    """The cores this process may run on (its CPU affinity), where the system says; else every CPU."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_threads(threads: Optional[int] = None) -> int:
    """The CPU thread count a run asks for: ``threads``, or with None every core this process may use."""
    if threads is None:
        return cores()
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError("threads must be a positive whole number or None (every core), got {!r}".format(threads))
    return int(threads)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_variables(threads: Optional[int] = None) -> Dict[str, str]:
    """The environment variables that set ``cpu_threads(threads)`` for OpenMP, MKL and OpenBLAS,
    and for XLA's CPU backend at one thread its single-threaded Eigen (XLA_FLAGS, added to any
    flags already there). Each library reads them once, as it loads."""
    count = cpu_threads(threads)
    found = {name: str(count) for name in THREAD_VARIABLES}
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = [flag for flag in flags if not flag.startswith("--xla_cpu_multi_thread_eigen")]
    if count == 1:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    if flags or "XLA_FLAGS" in os.environ:
        found["XLA_FLAGS"] = " ".join(flags)
    return found


def capture(device: str, versions: Dict[str, str], cuda: Optional[str] = None,
            cudnn: Optional[Union[str, int]] = None, threads: Optional[int] = None,
            threads_requested: Optional[int] = None) -> dict:
    """The environment block of a result record.

    ``device`` is "cuda" or "cpu", as the notebook actually placed the model; ``threads`` the
    CPU threads in effect, ``threads_requested`` what the notebook's ``threads`` asked (None: not set).
    """
    info = {
        "device": device,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "threads_requested": threads_requested,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": dict(versions),
        "git_commit": git_commit(),
    }
    if device == "cuda":
        found = gpus()
        info.update({
            "compute_cap": compute_cap(),
            "gpu": found[0]["name"] if found else "unknown NVIDIA GPU",
            "gpu_count": len(found),
            "gpu_memory": found[0]["memory"] if found else None,
            "driver": found[0]["driver"] if found else None,
            "cuda": cuda,
            "cudnn": str(cudnn) if cudnn is not None else None,
        })
    else:  # a CPU run on a machine with a GPU: the table marks it
        found = gpus()
        if found:
            info["gpu_unused"] = found[0]["name"]
    return info


def describe(info: dict) -> str:
    """One line for tables and printouts, e.g. 'NVIDIA H100 (driver 550, CUDA 12.4, cuDNN 9.1)'."""
    if info["device"] == "cuda":
        extras = [f"driver {info.get('driver')}", f"CUDA {info.get('cuda')}", f"cuDNN {info.get('cudnn')}"]
        return f"{info['gpu']} ({', '.join(extras)})"
    threads = info.get("threads") or info.get("cpu_count")
    return f"CPU: {info['cpu']} ({threads} thread{'' if threads == 1 else 's'})"


def print_summary(info: dict) -> None:
    """The printout of a notebook's environment step: device, Python, versions, commit."""
    print("Device:   ", describe(info))
    if info["device"] != "cuda":
        print("          no GPU in use: this run trains on the CPU, and its record says so.")
    print("Python:   ", info["python"], "on", info["platform"])
    for name, version in info["versions"].items():
        print(f"{name + ':':11}", version)
    print("Commit:   ", info["git_commit"])
