"""The result record: one JSON file per run, written atomically.

    path = record.write(record_path, record.build(
        framework="PyTorch", api="module (nn.Module + torch.optim)", benchmark=benchmark,
        accuracy=0.78, timing=timer.summary(len(x_train)), epochs=10, batch_size=64,
        train_samples=50000, test_samples=10000, seed=42, environment=env, data=provenance))

A record says ``status`` ok, failed, timeout, diverged, unavailable, unsupported
(the framework does not offer the variant asked for: common.variants), interrupted
(stopped by Ctrl-C, SIGTERM or SIGHUP) or lost (the harness was killed
before it could record the run: a later run found its reservation); the harness
writes every status but ok, with the error, when a notebook does not get this far. A run
smaller than docs/design.md's benchmark (fewer epochs or samples, another batch
size) lists how in ``differs_from_benchmark`` and is a subset run.
"""
import json
import math
import numbers
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Union

from common.benchmarks import BENCHMARKS

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "timeout", "diverged", "unavailable", "unsupported", "interrupted", "lost")
REQUIRED = ("schema_version", "framework", "api", "benchmark", "variant", "status",
            "epochs", "batch_size", "train_samples", "test_samples", "seed", "timestamp")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the harness records the run as diverged."""


def check_loss(loss: float, epoch: int) -> float:
    """Raises TrainingDiverged unless ``loss`` is finite."""
    if not math.isfinite(loss):
        raise TrainingDiverged(f"training loss is {loss} after epoch {epoch + 1}")
    return loss


def differs_from_benchmark(benchmark: str, epochs: int, batch_size: int,
                           train_samples: int, test_samples: int) -> List[str]:
    """How a run's size differs from docs/design.md's benchmark ([] for a full run)."""
    spec = BENCHMARKS[benchmark]
    differences = []
    if epochs != spec.epochs:
        differences.append(f"{epochs} epoch{'' if epochs == 1 else 's'}, not {spec.epochs}")
    if batch_size != spec.batch:
        differences.append(f"batch {batch_size}, not {spec.batch}")
    if train_samples != spec.train:
        differences.append(f"{train_samples} of {spec.train} training samples")
    if test_samples != spec.test:
        differences.append(f"{test_samples} of {spec.test} test samples")
    return differences


def build(*, framework: str, api: str, benchmark: str, epochs: int, batch_size: int,
          train_samples: int, test_samples: int, seed: int, status: str = "ok",
          variant: str = "fp32", accuracy: Optional[float] = None, timing: Optional[dict] = None,
          environment: Optional[dict] = None, data: Optional[dict] = None, error: Optional[str] = None,
          **extra) -> dict:
    """A complete record; ``extra`` keys (for example ``final_loss``) are kept as given."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {sorted(BENCHMARKS)}, got {benchmark!r}.")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}.")
    differences = differs_from_benchmark(benchmark, epochs, batch_size, train_samples, test_samples)
    record = {
        "schema_version": SCHEMA_VERSION,
        "framework": framework,
        "api": api,
        "benchmark": benchmark,
        "model": BENCHMARKS[benchmark].model,
        "variant": variant,
        "status": status,
        "error": error,
        "test_accuracy": accuracy,
        **(timing or {}),
        "epochs": epochs,
        "batch_size": batch_size,
        "train_samples": train_samples,
        "test_samples": test_samples,
        "subset": bool(differences),
        "differs_from_benchmark": differences,
        "seed": seed,
        "environment": environment,
        "data": data,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    return record


def write(path: Union[str, os.PathLike], record: dict) -> Path:
    """Validates ``record`` and writes it as JSON to ``path`` atomically."""
    validate(record, str(path))
    return write_json(path, record)


def write_json(path: Union[str, os.PathLike], record: dict) -> Path:
    """Writes ``record`` as JSON to ``path`` atomically (``replace_file``), its folder made where missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def dump(f) -> None:
        json.dump(record, f, indent=2, sort_keys=False, default=_plain)
        f.write("\n")

    return replace_file(path, dump)


def write_text(path: Union[str, os.PathLike], text: str) -> Path:
    """Writes ``text`` to ``path`` atomically (``replace_file``)."""
    return replace_file(Path(path), lambda f: f.write(text))


def replace_file(path: Path, write: Callable) -> Path:
    """Fills a temporary file beside ``path`` (``write(file)``), then renames it to ``path``: a reader sees
    the old file or the new one whole, and a write that fails (a full disk) leaves the old one as it was
    and no temporary file behind."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it 0600; a record is as readable as a notebook
        with os.fdopen(descriptor, "w") as f:
            write(f)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):  # Path.unlink(missing_ok=True) needs Python 3.8
            os.unlink(temporary)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain(value):
    """NumPy scalars and arrays as plain JSON values."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def validate(record: dict, where: str = "record") -> dict:
    """Raises ValueError naming ``where``, the field, its value and what was expected when ``record``
    is not a valid record: every field the report reads has its type and range (numbers finite and
    real, never a bool; accuracy in [0, 1]; times positive, or non-negative where 0 can be measured;
    counts positive integers; text where text belongs)."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: the record is {_shown(record)}; expected a JSON object.")
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}.")
    if record["schema_version"] != SCHEMA_VERSION or isinstance(record["schema_version"], bool):
        raise ValueError(f"{where}: schema_version is {record['schema_version']!r}, "
                         f"this version reads {SCHEMA_VERSION}.")
    _check_fields(record, FIELDS, where, "")  # first: a list where text belongs cannot be looked up below
    if record["status"] not in STATUSES:
        raise ValueError(f"{where}: field status is {_shown(record['status'])}; expected one of {STATUSES}.")
    if record["status"] == "ok":
        accuracy = record.get("test_accuracy")
        if not _real(accuracy) or not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"{where}: field test_accuracy is {_shown(accuracy)}; expected a number in "
                             "[0, 1] (an ok record has its accuracy).")
        seconds = record.get("train_seconds")
        if not _real(seconds) or not seconds > 0:
            raise ValueError(f"{where}: field train_seconds is {_shown(seconds)}; expected a finite number "
                             "> 0 (an ok record has its training time).")
    elif not isinstance(record.get("error"), str) or not record["error"]:
        raise ValueError(f"{where}: field error is {_shown(record.get('error'))}; expected a text: a "
                         f"{record['status']} record needs its error.")
    if record["benchmark"] not in BENCHMARKS:
        raise ValueError(f"{where}: field benchmark is {_shown(record['benchmark'])}; expected one of "
                         f"{sorted(BENCHMARKS)}.")
    for name, fields in NESTED.items():
        value = record.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ValueError(f"{where}: field {name} is {_shown(value)}; expected a JSON object or null.")
        _check_fields(value, fields, where, name + ".")
    for part in ("before", "during"):  # the load's two measurements, one level further down
        measured = (record.get("load") or {}).get(part)
        if measured:
            _check_fields(measured, _LOADS, where, "load." + part + ".")
    environment = record.get("environment")
    if environment:
        if environment.get("device") == "cuda" and not isinstance(environment.get("gpu"), str):
            raise ValueError(f"{where}: field environment.gpu is {_shown(environment.get('gpu'))}; "
                             "expected a text (a run on cuda names its GPU).")
        if environment.get("device") != "cuda" and "cpu" not in environment:
            raise ValueError(f"{where}: field environment.cpu is missing; expected a text (a run on the "
                             "CPU names its model).")
    return record


def _real(value) -> bool:
    """A finite real number: an int or float (or a NumPy one), never a bool, NaN or infinity."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"
            and math.isfinite(value))


def _integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _text(value) -> bool:
    return isinstance(value, str)


def _positive_integer(value) -> bool:
    return _integer(value) and value > 0


def _natural(value) -> bool:
    return _integer(value) and value >= 0


def _positive(value) -> bool:
    return _real(value) and value > 0


def _non_negative(value) -> bool:
    return _real(value) and value >= 0


def _share(value) -> bool:
    return _real(value) and 0 <= value <= 1


def _scalar(value) -> bool:
    return value is None or _text(value) or _real(value)


def _list_of(check):
    def each(value) -> bool:
        return isinstance(value, list) and all(check(item) for item in value)
    return each


def _mapping_of(check):
    def each(value) -> bool:
        return isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())
    return each


# field: (its check, what it must be, whether null is allowed). The required fields are in REQUIRED.
FIELDS = {
    "framework": (_text, "a text", False), "api": (_text, "a text", False),
    "benchmark": (_text, "a text", False), "variant": (_text, "a text", False),
    "status": (_text, "a text", False), "timestamp": (_text, "a text", False),
    "model": (_text, "a text", True), "error": (_text, "a text", True), "notebook": (_text, "a text", True),
    "export": (_text, "a text", True),
    "epochs": (_positive_integer, "a positive integer", False),
    "batch_size": (_positive_integer, "a positive integer", False),
    "train_samples": (_positive_integer, "a positive integer", False),
    "test_samples": (_positive_integer, "a positive integer", False),
    "seed": (_natural, "a non-negative integer", False),
    "parameters": (_positive_integer, "a positive integer", True),
    "test_accuracy": (_share, "a number in [0, 1]", True),
    "train_seconds": (_positive, "a finite number > 0", True),
    "first_epoch_seconds": (_positive, "a finite number > 0", True),
    "median_epoch_seconds": (_positive, "a finite number > 0", True),
    "throughput_per_second": (_positive, "a finite number > 0", True),
    "feeding_share": (_non_negative, "a finite number >= 0", True),  # the copy time is an estimate: it may pass 1
    "copy_seconds_per_batch": (_non_negative, "a finite number >= 0", True),
    "copy_seconds_per_epoch": (_non_negative, "a finite number >= 0", True),
    "final_loss": (_real, "a finite number", True),
    "epoch_seconds": (_list_of(_positive), "a list of finite numbers > 0", True),
    "feeding_seconds": (_list_of(_non_negative), "a list of finite numbers >= 0", True),
    "subset": (lambda v: isinstance(v, bool), "true or false", True),
    "differs_from_benchmark": (_list_of(_text), "a list of texts", True),
    "phases": (_mapping_of(_non_negative), "an object of finite numbers >= 0", True),
}
NESTED = {
    "environment": {
        "device": (_text, "a text", False), "cpu": (_text, "a text", True), "gpu": (_text, "a text", True),
        "gpu_unused": (_text, "a text", True), "compute_cap": (_text, "a text", True),
        "driver": (_scalar, "a text", True), "cuda": (_scalar, "a text", True), "cudnn": (_scalar, "a text", True),
        "cpu_count": (_positive_integer, "a positive integer", True),
        "threads": (_positive_integer, "a positive integer", True),
        "threads_requested": (_positive_integer, "a positive integer", True),
        "python": (_text, "a text", True), "platform": (_text, "a text", True),
        "git_commit": (_text, "a text", True),
        "versions": (_mapping_of(_scalar), "an object of texts (versions)", True),
    },
    "kernel_environment": {
        "kind": (_text, "a text", True), "spec": (_text, "a text", True), "flavour": (_text, "a text", True),
        "python": (_text, "a text", True), "image": (_text, "a text", True),
        "python_version": (_text, "a text", True), "versions": (_text, "a text", True),
        "cuda_build": (lambda v: isinstance(v, bool), "true or false", True),
    },
    "calibration": {  # the machine's probe before the run (harness/calibration.py); null figures: not measured
        "device": (_text, "a text", False), "threads": (_positive_integer, "a positive integer", True),
        "gflops": (_positive, "a finite number > 0", True), "gbps": (_positive, "a finite number > 0", True),
        "how": (_text, "a text", True), "seconds": (_non_negative, "a finite number >= 0", True),
        "not_measured": (_text, "a text", True), "gpu": (_text, "a text", True),
        "machine": (_text, "a text", True),  # which machine: a digest of its host name and boot (calibration.machine_key)
    },
    "precision": {  # what a variant's run observed (common.variants.precision)
        "activation": (_text, "a text", False), "activation_at": (_text, "a text", True),
        "weights": (_list_of(_text), "a list of texts", False), "memory_format": (_text, "a text", True),
        "compiler": (lambda v: isinstance(v, dict), "a JSON object", True),
    },
    "data": {
        "source": (_text, "a text", True), "path": (_text, "a text", True),
        "sha256": (_text, "a text", True), "checksum": (_text, "a text", True),
    },
}
# What the kernel (common.timing, common.resources) and the harness (harness.quiet) measure of a run:
# its peak memory, its energy and the machine's load (docs/measurements.md).
_LOADS = {"other_cores": (_non_negative, "a finite number >= 0", True),
          "steal_cores": (_non_negative, "a finite number >= 0", True),
          "other_cores_mean": (_non_negative, "a finite number >= 0", True),
          "other_cores_max": (_non_negative, "a finite number >= 0", True),
          "samples": (_positive_integer, "a positive integer", True),
          "seconds": (_non_negative, "a finite number >= 0", True),
          "loadavg": (_list_of(_non_negative), "a list of finite numbers >= 0", True),
          "not_measured": (_text, "a text", True)}
NESTED.update({
    "peak_memory": {
        "resident_bytes": (_positive_integer, "a positive integer (bytes)", True),
        "gpu_allocator_bytes": (_natural, "a non-negative integer (bytes)", True),
        "gpu_allocator": (_text, "a text", True), "gpu_used_bytes": (_natural, "a non-negative integer (bytes)", True),
        "how": (_text, "a text", True),
    },
    "energy": {
        "cpu_joules": (_non_negative, "a finite number >= 0", True), "cpu_note": (_text, "a text", True),
        "cpu_zones": (_list_of(_text), "a list of texts", True),
        "gpu_joules": (_non_negative, "a finite number >= 0", True), "gpu_note": (_text, "a text", True),
        "gpu_used_bytes_max": (_natural, "a non-negative integer (bytes)", True),
    },
    "load": {
        "busy": (lambda v: isinstance(v, bool), "true or false", False), "reason": (_text, "a text", True),
        "threshold_cores": (_non_negative, "a finite number >= 0", True),
        "wait_limit_seconds": (_non_negative, "a finite number >= 0", True),
        "waited_seconds": (_non_negative, "a finite number >= 0", True),
        "calibrated_within": (lambda v: isinstance(v, bool), "true or false", True),  # the probe ran in the wait
        "before": (lambda v: isinstance(v, dict), "a JSON object", True),
        "during": (lambda v: isinstance(v, dict), "a JSON object", True),
        "gpu_others": (_list_of(lambda p: isinstance(p, dict) and _positive_integer(p.get("pid"))),
                       "a list of objects with a pid", True),
        "gpu_note": (_text, "a text", True), "note": (_text, "a text", True),
    },
})


def _check_fields(found: dict, fields: dict, where: str, prefix: str) -> None:
    for name, (check, expected, nullable) in fields.items():
        if name not in found or (nullable and found[name] is None):
            continue
        if not check(found[name]):
            raise ValueError(f"{where}: field {prefix}{name} is {_shown(found[name])}; expected {expected}"
                             + (" or null." if nullable else "."))


def check_object(data, where: str, kind: str, required: dict, optional: dict) -> dict:
    """Raises ValueError naming ``where``, the field, its value and what was expected where ``data``, a
    ``kind`` of record other than a run's (a parity or ONNX check record), is not a JSON object or lacks
    what the report reads: each of ``required`` (name: (check, what it must be)), and each of
    ``optional`` that is not null."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the {kind} is {_shown(data)}; expected a JSON object.")
    for name, (check, expected) in list(required.items()) + list(optional.items()):
        value = data.get(name)
        if (name in required or value is not None) and not check(value):
            raise ValueError(f"{where}: field {name} is {_shown(value)}; expected {expected}.")
    return data


def _shown(value) -> str:
    """A value as JSON writes it, cut short where long (NaN and infinities as JSON's extensions name them)."""
    try:
        text = json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else repr(v))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


RECORD_LIMIT = 4 * 2**20  # bytes: a record is a few kB; a larger file is not one


def read_limited(path: Union[str, os.PathLike], limit: int = RECORD_LIMIT) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; ValueError otherwise (a
    device such as /dev/zero, a FIFO, a folder, or a file too large), without reading further.
    Opened without blocking, so that a FIFO cannot stall the caller."""
    path = os.fspath(path)
    found = os.stat(path)  # follows a link: a link to a regular file is read, one to /dev/zero is not
    if not stat.S_ISREG(found.st_mode):
        raise ValueError(f"{path}: not a regular file ({_kind(found.st_mode)}); expected a JSON file.")
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        opened = os.fstat(descriptor)  # what was opened, should the path have changed meanwhile
        if not stat.S_ISREG(opened.st_mode):
            raise ValueError(f"{path}: not a regular file ({_kind(opened.st_mode)}); expected a JSON file.")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(descriptor, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(descriptor)
    if size > limit:
        raise ValueError(f"{path}: larger than {limit // 2**20} MiB; expected a record of a few kB.")
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


class _Constant:
    """NaN, Infinity or -Infinity where JSON text has one (Python's json accepts them; JSON does not)."""

    def __init__(self, name: str):
        self.name = name


def _constant_at(value, field: str = ""):
    """The (field, name) of the first NaN or infinity in a parsed value, or None."""
    if isinstance(value, _Constant):
        return field, value.name
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _constant_at(item, f"{field}.{key}" if field and isinstance(key, str) else
                             f"{field}[{key}]" if field else str(key))
        if found:
            return found
    return None


def loads(data: Union[bytes, str], where: str = "record", strict: bool = True):
    """JSON text parsed; ``strict``: NaN, Infinity and -Infinity (which Python's json accepts) are
    refused, naming the field that holds one."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text, parse_constant=_Constant if strict else None)
    except UnicodeDecodeError as error:
        raise ValueError(f"{where}: not UTF-8 text ({error}).") from error
    except ValueError as error:  # json.JSONDecodeError is one
        raise ValueError(f"{where}: not valid JSON ({error}).") from error
    found = _constant_at(value) if strict else None
    if found:
        raise ValueError(f"{where}: field {found[0] or '(the whole file)'} is {found[1]}; expected a finite number "
                         "(JSON has no NaN or infinity).")
    return value


def read_json(path: Union[str, os.PathLike], limit: int = RECORD_LIMIT, strict: bool = True):
    """The JSON value in ``path``: a regular file of at most ``limit`` bytes (``loads``'s ``strict``)."""
    return loads(read_limited(path, limit), str(path), strict)


def read(path: Union[str, os.PathLike]) -> dict:
    """A record read back from ``path`` (a regular file, at most ``RECORD_LIMIT`` bytes) and validated."""
    return validate(read_json(path), str(path))
