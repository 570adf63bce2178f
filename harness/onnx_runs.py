"""`rosetta onnx`: every exported model checked and timed in ONNX Runtime.

A run with its export on (``rosetta run``'s default, the first repeat only) leaves the notebook's
export folder in ``RESULTS/exports/STEM/`` (not committed: the models are megabytes each) and names
it in its record (``export``). For the latest such run of each framework, benchmark and device, this
runs ``common/onnx_check.py`` in an interpreter that has onnxruntime and onnx: the one
``$ROSETTA_ONNX_PYTHON`` names; else the first existing interpreter given to ``rosetta bench`` or
``rosetta onnx`` (``--python``, ``$ROSETTA_EXISTING_PYTHON``; ``--python onnxruntime=PATH`` for
the checks alone) that imports both; else the ONNX Runtime environment (``envs/onnxruntime``,
built from ``harness/envs/onnxruntime-FLAVOUR.txt``). It writes the record ``RESULTS/onnx/STEM.json``, which
the report's ONNX table shows. A run whose notebook recorded ``no exporter`` or ``export failed``
gets a record saying so, with the reason.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common import REPOSITORY, export, record
from common.benchmarks import BENCHMARKS
from harness import calibration, kernels, report, venvs
from harness.frameworks import Framework

ONNXRUNTIME = Framework(
    name="onnxruntime", label="ONNX Runtime", api="onnxruntime.InferenceSession", env="onnxruntime",
    versions_probe="import onnxruntime, onnx; print('onnxruntime', onnxruntime.__version__, 'onnx', onnx.__version__)")
TIMEOUT = 1800.0  # seconds for the checks and timing of one export


def onnx_dir(results: Path) -> Path:
    return results / "onnx"


PROBE = ("import onnxruntime, onnx; print('onnxruntime', onnxruntime.__version__, 'onnx', onnx.__version__, "
         "'providers', ','.join(onnxruntime.get_available_providers()))")


def _probe(python: str) -> subprocess.CompletedProcess | None:
    """``python`` importing onnxruntime and onnx (without writing bytecode there), or None where it does not run."""
    try:
        return subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except (OSError, subprocess.SubprocessError):
        return None


def interpreter(flavour: str, existing: list[str] = ()) -> tuple[str | None, str | None]:
    """The Python that runs the checks, and None; or None and why there is none.

    ``$ROSETTA_ONNX_PYTHON`` names it outright; else the first of ``existing`` (interpreters given
    with ``--python``) that imports onnxruntime and onnx; else the ONNX Runtime environment, built
    where it is not up to date. Nothing is installed into an interpreter named here."""
    given = os.environ.get("ROSETTA_ONNX_PYTHON")
    if given:
        probe = _probe(given)
        if probe is None or probe.returncode != 0:
            why = "it does not run" if probe is None else probe.stderr.strip()[-300:]
            return None, (f"ROSETTA_ONNX_PYTHON={given} cannot import onnxruntime and onnx ({why});"
                          f" expected an interpreter that has both (`{given} -m pip install onnxruntime onnx`)")
        print(f"onnx: the checks run in ROSETTA_ONNX_PYTHON={given} ({probe.stdout.strip()})", flush=True)
        return given, None
    for python in dict.fromkeys(existing):
        probe = _probe(python)
        if probe is not None and probe.returncode == 0:
            print(f"onnx: the checks run in the existing interpreter {python} ({probe.stdout.strip()}); "
                  "nothing is installed into it", flush=True)
            return python, None
        print(f"onnx: the existing interpreter {python} cannot import onnxruntime and onnx; "
              "the checks use the ONNX Runtime environment instead", flush=True)
    try:
        kernels.create(ONNXRUNTIME, flavour)
    except (venvs.EnvironmentBuildError, ValueError) as error:
        return None, f"the ONNX Runtime environment could not be built: {error}"
    return str(venvs.env_python(ONNXRUNTIME)), None


def existing_pythons(chosen: dict[str, str]) -> list[str]:
    """The interpreters to try for the checks, from ``existing.existing_interpreters``' answer:
    the one named for ``onnxruntime`` alone, else every one given, in order."""
    if ONNXRUNTIME.env in chosen:
        return [chosen[ONNXRUNTIME.env]]
    return list(dict.fromkeys(chosen.values()))


def exported_runs(results: Path, frameworks: list[Framework] | None = None,
                  benchmarks: list[str] | None = None) -> list[dict]:
    """The latest ok run with an export folder of each (framework, benchmark, device)."""
    labels = {f.label for f in frameworks} if frameworks else None
    latest: dict[tuple, dict] = {}
    for run in report.load_records(results):
        if run.get("status") != "ok" or not run.get("export") or run.get("kind"):
            continue
        if (labels and run["framework"] not in labels) or (benchmarks and run["benchmark"] not in benchmarks):
            continue
        key = (run["framework"], run["benchmark"], (run.get("environment") or {}).get("device"))
        latest[key] = run  # load_records returns them oldest first
    return list(latest.values())


def _failure(run: dict, status: str, message: str, device: str) -> dict:
    return {"schema_version": export.SCHEMA_VERSION, "kind": "onnx", "framework": run["framework"],
            "benchmark": run["benchmark"], "device": device, "status": status, "ok": False, "message": message}


def check(run: dict, results: Path, python: str | None, unavailable: str | None = None,
          timeout: float = TIMEOUT) -> dict:
    """Checks one run's export in ONNX Runtime and writes its record ``RESULTS/onnx/STEM.json``."""
    folder = results / run["export"]
    device = (run.get("environment") or {}).get("device") or "cpu"
    out = onnx_dir(results) / (folder.name + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"[{run['framework']}/{run['benchmark']} onnx] "
    if not (folder / "export.json").is_file():
        result = _failure(run, "export failed", f"{folder}: the notebook wrote no export record (export.json)", device)
    elif unavailable:
        info = export.read(folder)
        if info.get("status") != "exported":  # nothing to run: say what the notebook said
            result = _failure(run, info.get("status"), f"{info.get('status')}: {info.get('error')}", device)
        else:
            result = _failure(run, "unavailable", unavailable, device)
    else:
        print(prefix + f"checking {folder.relative_to(results)}", flush=True)
        calibrated = calibration.before_run(None, device, _threads(folder))  # the machine, as for a run
        command = [python, "-m", "common.onnx_check", str(folder), "--device", device, "--out", str(out)]
        environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout,
                                  env=environment)
        except subprocess.TimeoutExpired:
            done = None
        if done is not None and done.returncode in (0, 1) and out.is_file():
            result = json.loads(out.read_text())
        else:
            why = f"no result after {timeout:.0f} s" if done is None else \
                f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-1500:]}"
            result = _failure(run, "failed", f"the check did not finish: {why}", device)
        result["calibration"] = calibrated
    result["device_group"] = report.device_group(run)  # the report's tables are per device
    result["run"] = run.get("notebook")
    result["export_dir"] = run["export"]
    result["git_commit"] = (run.get("environment") or {}).get("git_commit")
    record.write_json(out, result)
    print(prefix + result["message"], flush=True)
    return result


def _threads(folder: Path) -> int | None:
    """The CPU threads the check times with: the run's, as its export record says (None: every core)."""
    try:
        threads = export.read(folder).get("threads")
    except (ValueError, AttributeError):
        return None
    return threads if record._positive_integer(threads) else None


def _calibration(value) -> bool:
    """A machine's calibration (``harness.calibration``) as a run's record holds it."""
    if not isinstance(value, dict):
        return False
    try:
        record._check_fields(value, record.NESTED["calibration"], "", "")
    except ValueError:
        return False
    return True


def check_all(results: Path, frameworks: list[Framework] | None = None, benchmarks: list[str] | None = None,
              flavour: str | None = None, existing: list[str] = ()) -> list[dict]:
    """Every latest exported run, checked in ``interpreter``'s choice (``existing``: interpreters
    given with ``--python``); the ONNX Runtime environment built first where needed."""
    runs = exported_runs(results, frameworks, benchmarks)
    if not runs:
        print("onnx: no run with an export to check (run `rosetta run` with its export on first).")
        return []
    python, unavailable = interpreter(flavour or venvs.default_flavour(), existing)
    if unavailable:
        print(f"onnx: {unavailable}", file=sys.stderr)
    return [check(run, results, python, unavailable) for run in runs]


def latest(results: Path) -> dict[tuple[str, str, str], dict]:
    """The newest ONNX check record of each (framework label, benchmark, device); a file that is not
    one (not a regular file, too large, not JSON, a field of the wrong kind) is skipped with a warning."""
    found = {}
    for path in sorted(onnx_dir(results).glob("*.json")):
        try:
            data = validate(record.read_json(path, strict=False), str(path))  # NaN: a difference not finite
        except (OSError, ValueError) as error:
            print(f"warning: skipping {path}: {error}", file=sys.stderr)
            continue
        found[(data["framework"], data["benchmark"], data.get("device") or "cpu")] = data
    return found


def _number(value) -> bool:
    """A number, NaN and infinities included (a difference that is not finite is a result)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checks(value) -> bool:
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


def _latencies(value) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(
        isinstance(e, dict) and record._positive_integer(e.get("batch_size"))
        and record._natural(e.get("runs")) and record._natural(e.get("warmup"))
        and record._non_negative(e.get("median_seconds")) and record._non_negative(e.get("p90_seconds"))
        and (e.get("samples_per_second") is None or record._non_negative(e.get("samples_per_second")))
        for e in value)


def _graph(value) -> bool:
    return (isinstance(value, dict) and record._integer(value.get("opset")) and record._non_negative(value.get("bytes"))
            and (value.get("gru_form") is None or record._text(value.get("gru_form"))))


FIELDS = {"framework": (record._text, "a text"),
          "benchmark": (lambda v: isinstance(v, str) and v in BENCHMARKS, f"one of {sorted(BENCHMARKS)}")}
OPTIONAL = {name: (record._text, "a text") for name in ("device", "device_group", "run", "status", "message",
                                                        "timing_skipped", "exporter", "export_forward",
                                                        "onnxruntime")}
OPTIONAL.update({
    "ok": (lambda v: isinstance(v, bool), "true or false"),
    "threads": (record._positive_integer, "a positive integer"),
    "calibration": (_calibration, "a calibration: an object with device, threads, gflops, gbps, how, seconds"),
    "exporter_versions": (record._mapping_of(record._scalar), "an object of versions"),
    "graph": (_graph, "an object with opset (an integer), bytes (a number >= 0) and gru_form (a text or null)"),
    "checks": (_checks, "a list of checks, each with its name, and reference, framework and classes with "
                        "ok, their differences and counts"),
    "framework_latencies": (_latencies, "a list of timings (batch_size, runs, warmup, median_seconds, p90_seconds)"),
    "onnxruntime_latencies": (_latencies, "a list of timings (batch_size, runs, warmup, median_seconds, "
                                          "p90_seconds)"),
})


def validate(data, where: str) -> dict:
    """Raises ValueError naming ``where``, the field, its value and what was expected where an ONNX check
    record lacks what the report reads (``FIELDS``; ``OPTIONAL``, where not null)."""
    record.check_object(data, where, "ONNX check record", FIELDS, OPTIONAL)
    if data.get("onnxruntime_latencies") and not data.get("framework_latencies"):
        raise ValueError(f"{where}: field framework_latencies is {record._shown(data.get('framework_latencies'))}; "
                         "expected the framework's timings beside ONNX Runtime's.")
    return data
