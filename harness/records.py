"""Reading what the runs left, for everything that shows it: the run records under ``RESULTS/records``
(``load_records``), the parity records under ``RESULTS/parity`` (``latest_parity``) and the ONNX check
records under ``RESULTS/onnx`` (``latest_onnx``), each read and validated here and nowhere else. A file
that is not one (not a regular file, too large, not JSON, a field of the wrong kind) is skipped with a
warning naming it, so that a table always renders. ``common.record`` writes and checks a run's record;
this module finds the files, and checks the parity and ONNX records' fields the tables read.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from common import record
from common.benchmarks import BENCHMARKS


def records_dir(results: Path) -> Path:
    return results / "records"


def parity_dir(results: Path) -> Path:
    return results / "parity"


def onnx_dir(results: Path) -> Path:
    return results / "onnx"


def load_records(results: Path, check_notebooks: bool = False) -> list[dict]:
    """Every readable record under ``results/records``; one that cannot be read (not a regular file,
    larger than ``record.RECORD_LIMIT``, not JSON, not a record, a field of the wrong kind or out of
    range, another schema) is skipped with a warning naming its file, so the report always renders.

    ``check_notebooks``: each ok record is compared with the executed notebook beside it
    (``notebook_disagreement``); where they disagree, ``notebook_disagrees`` says how."""
    records = []
    for path, found in read_runs(records_dir(results)):
        if check_notebooks:
            found["notebook_disagrees"] = notebook_disagreement(found, path.with_name(path.name[:-len(".json")]
                                                                                   + ".ipynb"))
        records.append(found)
    return records


def read_runs(folder: Path, warn: bool = True) -> list[tuple[Path, dict]]:
    """(file, record) of every readable run record in ``folder``, by file name (oldest first); one that
    cannot be read is skipped, with a warning naming its file where ``warn``."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            found.append((path, record.read(path)))
        except (ValueError, TypeError, OSError, UnicodeDecodeError) as error:
            if warn:
                print(f"warning: skipping {path}: {error}", file=sys.stderr)
    return found


def notebook_disagreement(found: dict, executed: Path) -> str | None:
    """How an ok record's accuracy or training time differs from what its executed notebook printed
    (beyond the printout's rounding), or None: they agree, or the notebook printed nothing to compare."""
    printed = printed_result(executed) if found.get("status") == "ok" else None
    if printed is None:
        return None
    differences = []
    accuracy, seconds = found["test_accuracy"], found["train_seconds"]
    if abs(accuracy - printed[0]) > 0.5e-4 + 1e-9:  # printed to 4 places
        differences.append(f"accuracy {accuracy * 100:.2f} % in the record, {printed[0] * 100:.2f} % in the notebook")
    if abs(seconds - printed[1]) > 0.05 + 1e-6:  # printed to 1 place
        differences.append(f"training {seconds:.1f} s in the record, {printed[1]:.1f} s in the notebook")
    return "; ".join(differences) or None


NOTEBOOK_LIMIT = 64 * 2**20  # bytes: an executed notebook is tens of kB
# What every notebook prints once it has measured its run, from the values it then writes to its
# record: "test accuracy 0.5460 on 10000 images, training 41.3 s" (accuracy to 4 places, seconds to 1).
PRINTED = re.compile(r"test accuracy (\d+(?:\.\d+)?) on \d+ \w+, training (\d+(?:\.\d+)?) s\b")


def printed_result(executed: Path) -> tuple[float, float] | None:
    """The (accuracy, training seconds) the executed notebook printed last (``PRINTED``), or None where
    it is missing, not a regular file of at most ``NOTEBOOK_LIMIT`` bytes, not a notebook, or printed none."""
    try:
        notebook = record.loads(record.read_limited(executed, NOTEBOOK_LIMIT), str(executed), strict=False)
    except (OSError, ValueError):
        return None
    found = None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    for cell in cells if isinstance(cells, list) else []:
        outputs = cell.get("outputs") if isinstance(cell, dict) else None
        for output in outputs if isinstance(outputs, list) else []:
            if not isinstance(output, dict) or output.get("output_type") != "stream":
                continue
            text = output.get("text")
            text = "".join(t for t in text if isinstance(t, str)) if isinstance(text, list) else text
            for match in PRINTED.finditer(text if isinstance(text, str) else ""):
                found = (float(match[1]), float(match[2]))
    return found


def device_group(row: dict) -> str:
    """The device a run is ranked on: the GPU model, or the CPU model for a CPU run (and, for one made on a
    cluster with ``--accelerator``, the type of the nodes it ran on: same CPU model, other machines)."""
    env = row.get("environment")
    if not env:
        return "device not recorded"
    if env.get("device") == "cuda":
        return env.get("gpu") or "unknown NVIDIA GPU"
    placed = row.get("cluster")
    kind = placed.get("accelerator") if isinstance(placed, dict) else None
    if kind:  # a CPU run on a cluster's nodes of one type (--accelerator): never ranked with other types'
        return f"CPU: {env.get('cpu') or 'unknown model'} (nodes of type {kind})"
    return f"CPU: {env.get('cpu') or 'unknown model'}"


def latest_parity(results: Path) -> dict[tuple[str, str], dict]:
    """The newest parity record of each (framework label, benchmark); a file that is not one (not a
    regular file, too large, not JSON, a field of the wrong kind) is skipped with a warning naming it.
    Where a cluster's nodes each checked it (``latest_checks``), a node's failure counts over another's pass."""
    return {(framework, benchmark): data for (framework, benchmark, variant), data in latest_checks(results).items()
            if variant == "fp32"}


def latest_variant_checks(results: Path) -> dict[tuple[str, str, str], dict]:
    """The newest relaxed step check (``rosetta parity --variant``) of each (framework label, benchmark,
    variant) other than fp32, whose own checks ``latest_parity`` keeps."""
    return {key: data for key, data in latest_checks(results).items() if key[2] != "fp32"}


def latest_checks(results: Path) -> dict[tuple[str, str, str], dict]:
    """The parity check of each (framework label, benchmark, variant) that the table shows: the newest of
    each place it ran (each node of a cluster, named by the record's ``cluster``, and this machine), and of
    those the newest that failed (``equivalent`` false) where one did, else the newest: a failure on one
    node is shown as on one machine, until that node checks again and passes."""
    newest = _newest(parity_dir(results), validate_parity,
                     lambda data: (data["framework"], data["benchmark"], data.get("variant") or "fp32",
                                   (data.get("cluster") or {}).get("node_id")
                                   if isinstance(data.get("cluster"), dict) else None))
    shown: dict[tuple[str, str, str], dict] = {}
    for (*key, _), data in sorted(newest.items(), key=lambda item: str(item[1].get("timestamp") or "")):
        key = tuple(key)
        kept = shown.get(key)
        if kept is None or data.get("equivalent") is False or kept.get("equivalent") is not False:
            shown[key] = data
    return shown


def _newest(folder: Path, validate, key) -> dict:
    """The newest valid check record in ``folder`` for each ``key(record)`` (the names sort by time); a file
    that ``validate`` or reading refuses is skipped with a warning naming it."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = validate(record.read_json(path, strict=False), str(path))  # NaN: a difference not finite
        except (OSError, ValueError) as error:
            print(f"warning: skipping {path}: {error}", file=sys.stderr)
            continue
        found[key(data)] = data
    return found


def _number(value) -> bool:
    """A number, NaN and infinities included (a difference that is not finite is a result)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_PARITY_CHECKS = (lambda v: isinstance(v, list) and all(isinstance(c, dict) and record._text(c.get("output"))
                                                         and _number(c.get("max_abs_difference")) for c in v),
                  "a list of objects, each with its output (a text) and max_abs_difference (a number)")
PARITY_FIELDS = {"framework": (record._text, "a text"),
                 "benchmark": (lambda v: isinstance(v, str) and v in BENCHMARKS, f"one of {sorted(BENCHMARKS)}")}
PARITY_OPTIONAL = {"status": (record._text, "a text"), "message": (record._text, "a text"),
                   "device": (record._text, "a text"), "equivalent": (lambda v: isinstance(v, bool), "true or false"),
                   "steps": (record._positive_integer, "a positive integer"), "checks": _PARITY_CHECKS,
                   "variant": (record._text, "a text")}


def validate_parity(data, where: str) -> dict:
    """Raises ValueError naming ``where``, the field, its value and what was expected where a parity
    record lacks what the report reads (``PARITY_FIELDS``; ``PARITY_OPTIONAL``, where not null)."""
    return record.check_object(data, where, "parity record", PARITY_FIELDS, PARITY_OPTIONAL)


def latest_onnx(results: Path) -> dict[tuple[str, str, str], dict]:
    """The newest ONNX check record of each (framework label, benchmark, device); a file that is not
    one (not a regular file, too large, not JSON, a field of the wrong kind) is skipped with a warning."""
    return _newest(onnx_dir(results), validate_onnx,
                   lambda data: (data["framework"], data["benchmark"], data.get("device") or "cpu"))


def _onnx_checks(value) -> bool:
    if not isinstance(value, list) or not all(isinstance(c, dict) and record._text(c.get("check")) for c in value):
        return False
    by_name = {c["check"]: c for c in value}
    if not by_name:
        return True
    if any(name not in by_name or not isinstance(by_name[name].get("ok"), bool)
           for name in ("reference", "framework", "classes")):
        return False
    classes = by_name["classes"]
    return (all(_number(by_name[name].get("max_abs_difference")) for name in ("reference", "framework"))
            and all(record._integer(classes.get(name)) for name in ("agree", "ties", "samples")))


def _onnx_latencies(value) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(
        isinstance(e, dict) and record._positive_integer(e.get("batch_size"))
        and record._natural(e.get("runs")) and record._natural(e.get("warmup"))
        and record._non_negative(e.get("median_seconds")) and record._non_negative(e.get("p90_seconds"))
        and (e.get("samples_per_second") is None or record._non_negative(e.get("samples_per_second")))
        for e in value)


def _onnx_graph(value) -> bool:
    return (isinstance(value, dict) and record._integer(value.get("opset")) and record._non_negative(value.get("bytes"))
            and (value.get("gru_form") is None or record._text(value.get("gru_form"))))


def _onnx_calibration(value) -> bool:
    """A machine's calibration (``harness.calibration``) as a run's record holds it."""
    if not isinstance(value, dict):
        return False
    try:
        record._check_fields(value, record.NESTED["calibration"], "", "")
    except ValueError:
        return False
    return True


ONNX_FIELDS = {"framework": (record._text, "a text"),
               "benchmark": (lambda v: isinstance(v, str) and v in BENCHMARKS, f"one of {sorted(BENCHMARKS)}")}
ONNX_OPTIONAL = {name: (record._text, "a text") for name in ("device", "device_group", "run", "status", "message",
                                                             "timing_skipped", "exporter", "export_forward",
                                                             "onnxruntime")}
ONNX_OPTIONAL.update({
    "ok": (lambda v: isinstance(v, bool), "true or false"),
    "threads": (record._positive_integer, "a positive integer"),
    "calibration": (_onnx_calibration, "a calibration: an object with device, threads, gflops, gbps, how, seconds"),
    "exporter_versions": (record._mapping_of(record._scalar), "an object of versions"),
    "graph": (_onnx_graph, "an object with opset (an integer), bytes (a number >= 0) and gru_form (a text or null)"),
    "checks": (_onnx_checks, "a list of checks, each with its name, and reference, framework and classes "
                             "with ok, their differences and counts"),
    "framework_latencies": (_onnx_latencies, "a list of timings (batch_size, runs, warmup, median_seconds, "
                                                "p90_seconds)"),
    "onnxruntime_latencies": (_onnx_latencies, "a list of timings (batch_size, runs, warmup, median_seconds, "
                                                "p90_seconds)"),
})


def validate_onnx(data, where: str) -> dict:
    """Raises ValueError naming ``where``, the field, its value and what was expected where an ONNX check
    record lacks what the report reads (``ONNX_FIELDS``; ``ONNX_OPTIONAL``, where not null)."""
    record.check_object(data, where, "ONNX check record", ONNX_FIELDS, ONNX_OPTIONAL)
    if data.get("onnxruntime_latencies") and not data.get("framework_latencies"):
        raise ValueError(f"{where}: field framework_latencies is {record._shown(data.get('framework_latencies'))}; "
                         "expected the framework's timings beside ONNX Runtime's.")
    return data
