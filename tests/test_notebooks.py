"""The notebooks themselves: the shared contract, and each run through papermill in its real kernel."""
import json
from pathlib import Path

import nbformat
import pytest

from harness import report, runner
from harness.frameworks import FRAMEWORKS

STEPS = ["parameters", "imports", "environment", "data", "model", "optimiser", "parity", "train", "predict",
         "evaluate"]
NOTEBOOKS = [(f, b) for f in FRAMEWORKS.values() for b in f.notebooks]
IDS = [f"{f.name}-{b}" for f, b in NOTEBOOKS]


def _steps(path: Path) -> list[str]:
    notebook = nbformat.read(path, as_version=4)
    return [tag[5:] for cell in notebook.cells if cell.cell_type == "code"
            for tag in cell.metadata.get("tags", []) if tag.startswith("step:")]


@pytest.mark.parametrize("framework, benchmark", NOTEBOOKS, ids=IDS)
def test_notebook_follows_the_contract(framework, benchmark):
    path = framework.notebook(benchmark)
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert _steps(path) == STEPS, f"{path}: steps out of order"
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0].metadata["tags"] == ["step:parameters", "parameters"]
    for name in ("epochs", "train_samples", "test_samples", "seed", "device", "record_path", "data_source",
                 "parity_inputs", "parity_outputs"):
        assert f"\n{name} = " in "\n" + parameters[0].source, f"{path}: no parameter {name}"
    assert notebook.metadata.kernelspec["name"] == framework.kernel
    assert notebook.metadata.kernelspec["language"] == "python"
    assert notebook.metadata.language_info["name"] == "python"


@pytest.mark.parametrize("framework, benchmark", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_without_outputs(framework, benchmark):
    notebook = nbformat.read(framework.notebook(benchmark), as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.kernel
@pytest.mark.parametrize("framework", [f for f in FRAMEWORKS.values()], ids=list(FRAMEWORKS))
def test_notebooks_run_in_their_kernel(framework, tiny_cifar, tiny_imdb, tmp_path):
    """Both notebooks through papermill on the tiny archives: ok records, and the table renders."""
    settings = runner.RunSettings(epochs=1, batch_size=32, device="cpu", timeout=600,
                                  cifar_source=str(tiny_cifar), imdb_source=str(tiny_imdb))
    results = tmp_path / "results"
    done = runner.run_all([framework], ["cifar", "imdb"], settings, results)
    for result in done:
        assert result["status"] == "ok", f"{framework.label} {result['benchmark']}: {result['error']}"
        assert 0.0 <= result["test_accuracy"] <= 1.0
        assert result["train_seconds"] > 0 and result["epochs"] == 1 and result["subset"]
        assert result["data"]["source"] == "local copy"
        assert result["environment"]["device"] == "cpu"
        assert (results / result["notebook"]).is_file()
    cifar, imdb = done
    assert cifar["parameters"] == 3_441_592 and imdb["parameters"] == 3_818_302
    assert cifar["test_samples"] == 100 and imdb["test_samples"] == 200  # every test sample evaluated
    readme = report.render(results).read_text()
    for benchmark in ("CNN on CIFAR-10", "GRU on IMDB"):
        assert f"## {benchmark}" in readme
    assert readme.count(f"| {framework.label} |") == 2
    assert "CPU:" in readme and "subset: 1 epochs" in readme
    executed = nbformat.read(results / cifar["notebook"], as_version=4)
    assert any("3,441,592 parameters" in json.dumps(cell.get("outputs", [])) for cell in executed.cells)
