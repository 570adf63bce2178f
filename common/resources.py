"""Peak memory and energy of a run, read in the kernel by ``common.timing.Timer``.

    meter = EnergyMeter()        # Timer.start: reads the counters
    meter.mark()                 # Timer.epoch_done: reads them again (a wrap-around is seen per epoch)
    meter.summary()              # the energy from start to the last mark: {"cpu_joules": ..., ...}
    peak_memory()                # the kernel's peak resident memory, and a GPU framework's allocator peak

Energy comes from the machine's own counters where it exposes them: RAPL's powercap counters on the
CPU (``/sys/class/powercap/intel-rapl:N/energy_uj``, the packages, wrapping at ``max_energy_range_uj``)
and NVML's total energy of the GPU (millijoules since the driver loaded, through ctypes, so that no
environment needs a package for it). Where a counter cannot be read, the summary says why
(``"not exposed: ..."``) instead of a number. Nothing here may stop a run: every failure becomes such a
text. Python 3.6 compatible (the oldest kernels import it).
"""
import ctypes
import os
import sys
from typing import Dict, List, Optional

POWERCAP = "/sys/class/powercap"


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


class Rapl:
    """The package zones of RAPL under ``root``: ``intel-rapl:N`` (their sub-zones, core and
    uncore, are parts of a package, so they are left out, not added twice)."""

    def __init__(self, root: str = POWERCAP):
        self.root = root
        self.zones = []  # type: List[tuple]
        self.reason = None  # type: Optional[str]
        if not os.path.isdir(root):
            self.reason = "not exposed: %s does not exist (no RAPL driver, or not visible here)" % root
            return
        names = sorted(n for n in os.listdir(root) if n.count(":") == 1 and n.split(":")[0] in ("intel-rapl",))
        if not names:
            self.reason = "not exposed: %s has no RAPL package zone (intel-rapl:N)" % root
            return
        problems = []
        for name in names:
            folder = os.path.join(root, name)
            try:
                value = _read_int(os.path.join(folder, "energy_uj"))
                try:
                    wrap = _read_int(os.path.join(folder, "max_energy_range_uj"))
                except (OSError, ValueError):
                    wrap = None
                try:
                    with open(os.path.join(folder, "name")) as f:
                        label = f.read().strip()
                except OSError:
                    label = name
                self.zones.append((name, label, wrap, value))
            except (OSError, ValueError) as error:
                problems.append("%s/energy_uj: %s" % (folder, getattr(error, "strerror", None) or error))
        if not self.zones:
            self.reason = "not exposed: " + "; ".join(problems) + (
                " (reading energy_uj needs root on recent kernels)" if any("ermission" in p for p in problems) else "")

    def read(self) -> Optional[List[int]]:
        values = []
        for name, _, _, _ in self.zones:
            try:
                values.append(_read_int(os.path.join(self.root, name, "energy_uj")))
            except (OSError, ValueError):
                return None
        return values


def _delta(before: int, after: int, wrap: Optional[int]) -> Optional[int]:
    """``after - before`` of a counter that wraps to 0 after ``wrap`` (None where it went back
    and its range is unknown)."""
    if after >= before:
        return after - before
    if wrap:
        return after + wrap - before
    return None


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class Nvml:
    """The run's GPU through NVML (libnvidia-ml, loaded with ctypes): its total energy in mJ and
    the memory used on it. ``reason`` says why not where it cannot be reached."""

    def __init__(self):
        self.handle = None
        self.reason = None  # type: Optional[str]
        self.index = 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip() in ("", "-1"):
            self.reason = "not measured: CUDA_VISIBLE_DEVICES hides every GPU"
            return
        first = visible.split(",")[0].strip() if visible else ""
        if first.isdigit():
            self.index = int(first)
        try:
            self.library = ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:
            self.reason = "not exposed: no NVIDIA driver library (libnvidia-ml.so.1)"
            return
        try:
            if self.library.nvmlInit_v2() != 0:
                self.reason = "not exposed: NVML did not start (nvmlInit)"
                return
            handle = ctypes.c_void_p()
            if first.startswith("GPU-"):  # CUDA_VISIBLE_DEVICES by UUID
                found = self.library.nvmlDeviceGetHandleByUUID(ctypes.c_char_p(first.encode()), ctypes.byref(handle))
            else:
                found = self.library.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(self.index), ctypes.byref(handle))
            if found != 0:
                self.reason = "not exposed: NVML has no GPU %s" % (first or self.index)
                return
            self.handle = handle
        except AttributeError as error:
            self.reason = "not exposed: %s" % error

    def energy_millijoules(self) -> Optional[int]:
        if self.handle is None:
            return None
        value = ctypes.c_ulonglong()
        if self.library.nvmlDeviceGetTotalEnergyConsumption(self.handle, ctypes.byref(value)) != 0:
            return None  # GPUs before Volta have no energy counter
        return int(value.value)

    def used_bytes(self) -> Optional[int]:
        if self.handle is None:
            return None
        memory = _Memory()
        if self.library.nvmlDeviceGetMemoryInfo(self.handle, ctypes.byref(memory)) != 0:
            return None
        return int(memory.used)


class EnergyMeter:
    """The counters read at ``start``, at each ``mark`` and summed between: RAPL (CPU packages)
    and NVML (the GPU), each where the machine exposes it. Also the most GPU memory NVML saw used
    at those reads."""

    def __init__(self, powercap: str = POWERCAP, nvml: bool = True):
        self.powercap, self.use_nvml = powercap, nvml
        self.rapl = None  # type: Optional[Rapl]
        self.nvml = None  # type: Optional[Nvml]
        self.cpu_microjoules = 0
        self.gpu_millijoules = 0
        self.cpu_broken = None  # type: Optional[str]
        self.gpu_broken = None  # type: Optional[str]
        self.gpu_used_max = None  # type: Optional[int]
        self._rapl_last = None  # type: Optional[List[int]]
        self._nvml_last = None  # type: Optional[int]
        self.marks = 0

    def start(self) -> None:
        try:
            self.rapl = Rapl(self.powercap)
            self._rapl_last = self.rapl.read() if self.rapl.zones else None
        except Exception as error:  # never stop a run
            self.cpu_broken = "not measured: %s: %s" % (type(error).__name__, error)
        if self.use_nvml:
            try:
                self.nvml = Nvml()
                self._nvml_last = self.nvml.energy_millijoules()
                self._note_used()
            except Exception as error:
                self.gpu_broken = "not measured: %s: %s" % (type(error).__name__, error)
        self.cpu_microjoules = self.gpu_millijoules = 0
        self.marks = 0

    def _note_used(self) -> None:
        used = self.nvml.used_bytes() if self.nvml is not None else None
        if used is not None:
            self.gpu_used_max = max(used, self.gpu_used_max or 0)

    def mark(self) -> None:
        self.marks += 1
        try:
            if self._rapl_last is not None:
                now = self.rapl.read()
                if now is None:
                    self.cpu_broken = "not measured: a RAPL counter could not be read again"
                    self._rapl_last = None
                else:
                    for (name, _, wrap, _), before, after in zip(self.rapl.zones, self._rapl_last, now):
                        step = _delta(before, after, wrap)
                        if step is None:
                            self.cpu_broken = "not measured: %s went back with no max_energy_range_uj" % name
                        else:
                            self.cpu_microjoules += step
                    self._rapl_last = now
        except Exception as error:
            self.cpu_broken = "not measured: %s: %s" % (type(error).__name__, error)
        try:
            if self._nvml_last is not None:
                now = self.nvml.energy_millijoules()
                if now is not None:
                    self.gpu_millijoules += max(0, now - self._nvml_last)
                    self._nvml_last = now
            self._note_used()
        except Exception as error:
            self.gpu_broken = "not measured: %s: %s" % (type(error).__name__, error)

    def summary(self) -> dict:
        """``cpu_joules`` and ``gpu_joules`` from start to the last mark (None where not exposed,
        with ``cpu_note``/``gpu_note`` saying why), and the RAPL zones added up."""
        cpu_note = self.cpu_broken or (self.rapl.reason if self.rapl is not None else "not measured")
        if cpu_note is None and self._rapl_last is None:
            cpu_note = "not measured"
        gpu_note = self.gpu_broken
        if gpu_note is None:
            if self.nvml is None:
                gpu_note = "not measured"
            elif self.nvml.reason:
                gpu_note = self.nvml.reason
            elif self._nvml_last is None:
                gpu_note = "not exposed: NVML has no energy counter for this GPU (before Volta)"
        measured = self.marks > 0
        return {
            "cpu_joules": self.cpu_microjoules / 1e6 if cpu_note is None and measured else None,
            "cpu_note": cpu_note,
            "cpu_zones": [label for _, label, _, _ in self.rapl.zones] if self.rapl and cpu_note is None else None,
            "gpu_joules": self.gpu_millijoules / 1e3 if gpu_note is None and measured else None,
            "gpu_note": gpu_note,
            "gpu_used_bytes_max": self.gpu_used_max,
        }


def peak_resident_bytes() -> Optional[int]:
    """This process's peak resident memory (getrusage's ru_maxrss: KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _torch_peak() -> Optional[int]:
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "cuda") or not torch.cuda.is_available():
        return None
    if hasattr(torch.cuda, "is_initialized") and not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


def _jax_peak() -> Optional[int]:
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    peaks = [(device.memory_stats() or {}).get("peak_bytes_in_use") for device in jax.devices()
             if device.platform == "gpu"]
    peaks = [p for p in peaks if p is not None]
    return int(max(peaks)) if peaks else None


def _tensorflow_peak() -> Optional[int]:
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "config") or not hasattr(tf.config, "experimental"):
        return None
    if not tf.config.list_logical_devices("GPU"):
        return None
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])


def _cupy_pool() -> Optional[int]:
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return None
    return int(cupy.get_default_memory_pool().total_bytes()) or None


# (name in the record, how it is read): the first that answers is the run's GPU framework.
ALLOCATORS = (("torch.cuda.max_memory_allocated", _torch_peak),
              ("jax memory_stats peak_bytes_in_use", _jax_peak),
              ("tf.config.experimental.get_memory_info peak", _tensorflow_peak),
              ("cupy default memory pool total_bytes (its most held)", _cupy_pool))


def gpu_allocator_peak() -> tuple:
    """(bytes, how) of the first framework already imported here whose GPU allocator reports its
    peak; (None, None) where none does (a CPU run, or a framework without such a figure)."""
    for name, read in ALLOCATORS:
        try:
            value = read()
        except Exception:
            continue
        if value is not None:
            return value, name
    return None, None


def peak_memory() -> Dict[str, object]:
    """The kernel's peak resident memory and, where a GPU framework reports it, its allocator's peak."""
    try:
        resident = peak_resident_bytes()
    except Exception:
        resident = None
    allocated, how = gpu_allocator_peak()
    return {"resident_bytes": resident, "gpu_allocator_bytes": allocated, "gpu_allocator": how}
