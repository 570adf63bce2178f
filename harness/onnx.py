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
from harness import calibration, kernels, records, venvs
from harness.frameworks import Framework

ONNXRUNTIME = Framework(
    name="onnxruntime", label="ONNX Runtime", api="onnxruntime.InferenceSession", env="onnxruntime",
    versions_probe="import onnxruntime, onnx; print('onnxruntime', onnxruntime.__version__, 'onnx', onnx.__version__)")
TIMEOUT = 1800.0  # seconds for the checks and timing of one export


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
    for run in records.load_records(results):
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
    out = records.onnx_dir(results) / (folder.name + ".json")
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
    record.write_json(out, of_run(result, run))
    print(prefix + result["message"], flush=True)
    return result


def of_run(result: dict, run: dict) -> dict:
    """``result`` (a check's record) with what it takes from the run whose export it checked: the device
    group the report's tables are per, the run's notebook and export folder, its commit."""
    result["device_group"] = records.device_group(run)
    result["run"] = run.get("notebook")
    result["export_dir"] = run["export"]
    result["git_commit"] = (run.get("environment") or {}).get("git_commit")
    if isinstance(run.get("cluster"), dict):  # made on a cluster's node (harness/cluster.py): which one
        result["cluster"] = run["cluster"]
    return result


def failed(run: dict, message: str) -> dict:
    """The record of a check that did not finish (``message``: why), for ``run``."""
    return of_run(_failure(run, "failed", message, (run.get("environment") or {}).get("device") or "cpu"), run)


def _threads(folder: Path) -> int | None:
    """The CPU threads the check times with: the run's, as its export record says (None: every core)."""
    try:
        threads = export.read(folder).get("threads")
    except (ValueError, AttributeError):
        return None
    return threads if record._positive_integer(threads) else None


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


