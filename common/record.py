"""The result record: one JSON file per run, written atomically.

    path = record.write(record_path, record.build(
        framework="PyTorch", api="module (nn.Module + torch.optim)", benchmark="cifar",
        accuracy=0.78, timing=timer.summary(len(x_train)), epochs=10, batch_size=64,
        train_samples=50000, test_samples=10000, seed=42, environment=env, data=provenance))

A record says ``status`` ok, failed, timeout, diverged, unavailable,
interrupted (stopped by Ctrl-C, SIGTERM or SIGHUP) or lost (the harness was killed
before it could record the run: a later run found its reservation); the harness
writes every status but ok, with the error, when a notebook does not get this far. A run
smaller than docs/design.md's benchmark (fewer epochs or samples, another batch
size) lists how in ``differs_from_benchmark`` and is a subset run.
"""
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Union

from common.benchmarks import BENCHMARKS

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "timeout", "diverged", "unavailable", "interrupted", "lost")
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
        differences.append(f"{epochs} epochs, not {spec.epochs}")
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
    """Writes ``record`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it 0600; a record is as readable as a notebook
        with os.fdopen(descriptor, "w") as f:
            json.dump(record, f, indent=2, sort_keys=False, default=_plain)
            f.write("\n")
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
    """Raises ValueError naming ``where`` and the field when ``record`` is not a valid record."""
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}.")
    if record["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"{where}: schema_version is {record['schema_version']!r}, "
                         f"this version reads {SCHEMA_VERSION}.")
    if record["status"] not in STATUSES:
        raise ValueError(f"{where}: status is {record['status']!r}, expected one of {STATUSES}.")
    if record["status"] == "ok":
        accuracy = record.get("test_accuracy")
        if not isinstance(accuracy, (int, float)) or not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"{where}: an ok record needs test_accuracy in [0, 1], got {accuracy!r}.")
        seconds = record.get("train_seconds")
        if not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"{where}: an ok record needs train_seconds > 0, got {seconds!r}.")
    elif not record.get("error"):
        raise ValueError(f"{where}: a {record['status']} record needs its error.")
    return record


def read(path: Union[str, os.PathLike]) -> dict:
    """A record read back from ``path`` and validated."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from error
    return validate(record, str(path))
