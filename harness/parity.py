"""`rosetta parity`: each framework's notebooks in parity mode, measured against the reference.

For each framework and benchmark: write the canonical inputs (``common.parity``),
execute the notebook's parity steps (parameters, imports, environment, model,
optimiser, parity; no data, no training) through papermill in its kernel on the
CPU, compare its outputs with the NumPy float64 reference, and write a parity
record ``results/parity/STAMP-NAME-BENCHMARK.json`` beside the executed notebook.
The results table's "Equivalent" column shows the latest of these.

``variant`` (common.variants) runs the parity steps as that variant runs them and holds them to the
relaxed step check instead (``common.parity.compare_variant``): the first step's logits and loss within
the variant's tolerance of the reference, and the precision the notebook observed as the variant
promises. A framework that does not offer the variant gets a record saying unsupported, and no run.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import nbformat

from common import parity, record, variants
from common.benchmarks import BENCHMARKS
from harness import docker, kernels, records, runner
from harness.frameworks import Framework
from harness.notebooks import PARITY_STEPS, cell_steps


def parity_notebook(source: Path, target: Path) -> Path:
    """A copy of ``source`` holding only the parity steps (and the untagged title)."""
    notebook = nbformat.read(source, as_version=4)
    if not any("parity" in cell_steps(cell) for cell in notebook.cells):
        raise ValueError(f"{source} has no cell tagged step:parity; it cannot run in parity mode.")
    notebook.cells = [c for c in notebook.cells if not cell_steps(c) or set(cell_steps(c)) & set(PARITY_STEPS)]
    nbformat.write(notebook, target)
    return target


def check(framework: Framework, benchmark: str, results: Path, device: str = "cpu",
          timeout: float = 900.0, in_docker: bool = False, variant: str = variants.FP32) -> dict:
    """Runs one notebook in parity mode and returns (and writes) its parity record.

    ``in_docker`` runs it in the framework's image rather than its venv; ``variant`` runs it as that
    variant, held to the relaxed step check.
    """
    model = BENCHMARKS[benchmark].layout
    folder = records.parity_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    named = "" if variant == variants.FP32 else f"-{variant}"
    stem = runner.new_stem(folder, f"{framework.name}-{benchmark}{named}")
    result = {"schema_version": record.SCHEMA_VERSION, "kind": "parity", "framework": framework.label,
              "api": framework.api, "benchmark": benchmark, "model": model, "device": device, "variant": variant,
              "tolerances": parity.TOLERANCES if variant == variants.FP32 else variants.TOLERANCES[variant],
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "kernel_environment": runner.kernel_provenance(framework, runner.RunSettings(docker=in_docker))}
    prefix = f"[{framework.name}/{benchmark}{named.replace('-', ' ')} parity] "
    unsupported = framework.variant_unsupported(variant, benchmark)
    unavailable = docker.unavailable_reason if in_docker else kernels.unavailable_reason
    reason = None if unsupported else unavailable(framework)
    if unsupported:
        result.update(status="unsupported", equivalent=None, message=unsupported)
    elif reason:
        result.update(status="unavailable", equivalent=None, message=reason)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            inputs = parity.write_inputs(scratch / "inputs.npz", model)
            outputs = scratch / "outputs.npz"
            notebook = parity_notebook(framework.notebook(benchmark), scratch / f"{framework.name}-parity.ipynb")
            executed = stem.parent / (stem.name + ".ipynb")
            parameters = {"device": device, "parity_inputs": str(inputs), "parity_outputs": str(outputs),
                          "variant": variant}
            # in docker the scratch folder, outside the repository, is mounted (docker.run_command)
            outcome = runner.launch(framework, notebook, executed, parameters, results, timeout, prefix,
                                    in_docker=in_docker, device=device)
            result["notebook"] = executed.name if executed.is_file() else None
            if outcome.status == "ok" and outputs.is_file() and variant != variants.FP32:
                result.update(status="ok", **parity.compare_variant(model, inputs, outputs, variant,
                                                                    variants.read_observed(outputs)))
            elif outcome.status == "ok" and outputs.is_file():
                comparison = parity.compare(model, inputs, outputs)
                result.update(status="ok", **comparison)
            elif outcome.status == "ok":
                result.update(status="failed", equivalent=False,
                              message="the notebook wrote no parity outputs (is its parity cell guarded "
                                      "by `if parity_inputs:` and does it call parity.write_outputs?)")
            elif outcome.status == "unsupported":  # the notebook found it cannot run the variant here
                result.update(status="unsupported", equivalent=None, message=outcome.message)
            else:
                result.update(status=outcome.status, equivalent=False,
                              message=f"not equivalent: the parity run {outcome.status}: {outcome.message}")
    print(prefix + result["message"])
    path = record.write_json(stem.parent / (stem.name + ".json"), result)
    runner.release(path)
    return result


def check_all(frameworks: list[Framework], benchmarks: list[str], results: Path,
              device: str = "cpu", in_docker: bool = False, variant: str = variants.FP32) -> list[dict]:
    return [check(f, b, results, device, in_docker=in_docker, variant=variant)
            for f in frameworks for b in benchmarks if b in f.notebooks]


