"""`rosetta onnx`: every exported model checked and timed in ONNX Runtime.

A run with its export on (``rosetta run``'s default, the first repeat only) leaves the notebook's
export folder in ``RESULTS/exports/STEM/`` (not committed: the models are megabytes each) and names
it in its record (``export``). For the latest such run of each framework, benchmark and device, this
runs ``common/onnx_check.py`` in the ONNX Runtime environment (``envs/onnxruntime``, built from
``harness/envs/onnxruntime-FLAVOUR.txt``; ``$ROSETTA_ONNX_PYTHON`` names an interpreter that
already has onnxruntime and onnx instead) and writes its record ``RESULTS/onnx/STEM.json``, which
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
from harness import kernels, report, venvs
from harness.frameworks import Framework

ONNXRUNTIME = Framework(
    name="onnxruntime", label="ONNX Runtime", api="onnxruntime.InferenceSession", env="onnxruntime",
    versions_probe="import onnxruntime, onnx; print('onnxruntime', onnxruntime.__version__, 'onnx', onnx.__version__)")
TIMEOUT = 1800.0  # seconds for the checks and timing of one export


def onnx_dir(results: Path) -> Path:
    return results / "onnx"


def interpreter(flavour: str) -> tuple[str | None, str | None]:
    """The Python that runs the checks, and None; or None and why there is none. Builds the
    environment where it is not up to date (``$ROSETTA_ONNX_PYTHON`` instead names one)."""
    given = os.environ.get("ROSETTA_ONNX_PYTHON")
    if given:
        probe = subprocess.run([given, "-c", ONNXRUNTIME.versions_probe], capture_output=True, text=True)
        if probe.returncode != 0:
            return None, (f"ROSETTA_ONNX_PYTHON={given} cannot import onnxruntime and onnx ({probe.stderr.strip()[-300:]});"
                          f" expected an interpreter that has both (`{given} -m pip install onnxruntime onnx`)")
        return given, None
    try:
        kernels.create(ONNXRUNTIME, flavour)
    except (venvs.EnvironmentBuildError, ValueError) as error:
        return None, f"the ONNX Runtime environment could not be built: {error}"
    return str(venvs.env_python(ONNXRUNTIME)), None


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
    result["device_group"] = report.device_group(run)  # the report's tables are per device
    result["run"] = run.get("notebook")
    result["export_dir"] = run["export"]
    result["git_commit"] = (run.get("environment") or {}).get("git_commit")
    record.write_json(out, result)
    print(prefix + result["message"], flush=True)
    return result


def check_all(results: Path, frameworks: list[Framework] | None = None, benchmarks: list[str] | None = None,
              flavour: str | None = None) -> list[dict]:
    """Every latest exported run, checked; the ONNX Runtime environment built first where needed."""
    runs = exported_runs(results, frameworks, benchmarks)
    if not runs:
        print("onnx: no run with an export to check (run `rosetta run` with its export on first).")
        return []
    python, unavailable = interpreter(flavour or venvs.default_flavour())
    if unavailable:
        print(f"onnx: {unavailable}", file=sys.stderr)
    return [check(run, results, python, unavailable) for run in runs]


def latest(results: Path) -> dict[tuple[str, str, str], dict]:
    """The newest ONNX check record of each (framework label, benchmark, device)."""
    found = {}
    for path in sorted(onnx_dir(results).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            found[(data["framework"], data["benchmark"], data.get("device") or "cpu")] = data
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path}: not an ONNX check record ({error}).") from error
    return found
