"""The notebooks themselves: the shared contract, and each run through papermill in its real kernel."""
import json
from pathlib import Path

import nbformat
import pytest

from common import canonical
from common.benchmarks import BENCHMARKS
from conftest import REAL_RUNS, TINY_RUNS
from harness import report
from harness.frameworks import FRAMEWORKS
from harness.notebooks import STEPS, cell_steps
NOTEBOOKS = [(f, b) for f in FRAMEWORKS.values() for b in f.notebooks]
IDS = [f"{f.name}-{b}" for f, b in NOTEBOOKS]


def _steps(path: Path) -> list[str]:
    notebook = nbformat.read(path, as_version=4)
    return [step for cell in notebook.cells if cell.cell_type == "code" for step in cell_steps(cell)]


@pytest.mark.parametrize("framework, benchmark", NOTEBOOKS, ids=IDS)
def test_notebook_follows_the_contract(framework, benchmark):
    path = framework.notebook(benchmark)
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert _steps(path) == list(STEPS), f"{path}: steps out of order"
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0].metadata["tags"] == ["step:parameters", "parameters"]
    for name in ("epochs", "train_samples", "test_samples", "seed", "device", "record_path", "data_source",
                 "parity_inputs", "parity_outputs"):
        assert f"\n{name} = " in "\n" + parameters[0].source, f"{path}: no parameter {name}"
    assert notebook.metadata.kernelspec["name"] == framework.kernel
    assert notebook.metadata.kernelspec["language"] == "python"
    assert notebook.metadata.language_info["name"] == "python"


@pytest.mark.parametrize("framework, benchmark", NOTEBOOKS, ids=IDS)
def test_timer_waits_for_the_device_or_says_why_it_need_not(framework, benchmark):
    """A timer without a synchronise stops its clock while a GPU may still be working, unless
    the framework's steps return only once done: a notebook that passes none says why, in a
    comment on the line or the one before."""
    lines = [line for cell in nbformat.read(framework.notebook(benchmark), as_version=4).cells
             if cell.cell_type == "code" for line in cell.source.splitlines()]
    timers = [i for i, line in enumerate(lines) if "timing.Timer(" in line]
    assert len(timers) == 1, f"{framework.notebook(benchmark)}: {len(timers)} timers"
    line = lines[timers[0]]
    if "Timer()" in line or "Timer(sync=None)" in line:
        assert "#" in line or lines[timers[0] - 1].lstrip().startswith("#"), \
            f"{framework.notebook(benchmark)}: the timer waits for no device, and no comment says why: {line.strip()}"


@pytest.mark.parametrize("framework, benchmark", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_without_outputs(framework, benchmark):
    notebook = nbformat.read(framework.notebook(benchmark), as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.kernel
@pytest.mark.parametrize("framework", list(FRAMEWORKS.values()), ids=list(FRAMEWORKS))
def test_notebooks_run_in_their_kernel(framework, short_runs):
    """Both notebooks through papermill in the framework's kernel (on the real data where it is
    here, else on the tiny archives): ok records, every test sample evaluated, the table renders."""
    results, done = short_runs(framework)
    # test samples and epochs: the real runs' subsets, or the tiny archives' 100 images, 200 reviews
    sizes = {b: (REAL_RUNS[b]["test_samples"], REAL_RUNS[b]["epochs"]) for b in REAL_RUNS} if short_runs.real \
        else {"cifar": (100, TINY_RUNS["cifar"]["epochs"]), "imdb": (200, TINY_RUNS["imdb"]["epochs"])}
    for result in done:
        assert result["status"] == "ok", f"{framework.label} {result['benchmark']}: {result['error']}"
        assert result["framework"] == framework.label and result["api"] == framework.api
        assert 0.0 <= result["test_accuracy"] <= 1.0
        test_samples, epochs = sizes[result["benchmark"]]
        assert result["test_samples"] == test_samples  # every test sample asked for, evaluated
        assert result["train_seconds"] > 0 and result["epochs"] == epochs and result["subset"]
        assert result["data"]["source"] == "local copy"
        assert result["environment"]["device"] == "cpu"
        assert (results / result["notebook"]).is_file()
    cifar, imdb = done
    readme = report.render(results).read_text()
    for benchmark in ("CNN on CIFAR-10", "GRU on IMDB"):
        assert f"## {benchmark}" in readme
    assert readme.count(f"| {framework.label} |") == 2
    assert "CPU:" in readme and f"subset: {cifar['epochs']} epochs" in readme
    executed = nbformat.read(results / cifar["notebook"], as_version=4)
    assert any("3,441,592 parameters" in json.dumps(cell.get("outputs", [])) for cell in executed.cells)


@pytest.mark.kernel
def test_parameter_counts_agree_across_frameworks(short_runs):
    """The parameter count each notebook's own model reports, equal everywhere and to the layout."""
    counts = {"cifar": {}, "imdb": {}}
    for framework in FRAMEWORKS.values():
        for result in short_runs(framework)[1]:
            counts[result["benchmark"]][framework.label] = result.get("parameters")
    for benchmark, found in counts.items():
        expected = canonical.parameter_count(BENCHMARKS[benchmark].layout)  # summed from the layout's shapes
        assert found and set(found.values()) == {expected}, f"{benchmark}: {found}"
