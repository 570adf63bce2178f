"""Parity through papermill in the framework's own kernel: PyTorch passes, and the check has teeth.

The teeth: copies of the PyTorch notebooks with one deliberate difference each
must fail parity, with a message that says which output differs and by how much.
"""
import json

import nbformat
import pytest

from harness import parity_runs, report
from harness.frameworks import FRAMEWORKS, Framework

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("benchmark", ["cifar", "imdb"])
@pytest.mark.parametrize("framework", list(FRAMEWORKS.values()), ids=list(FRAMEWORKS))
def test_framework_passes_parity(framework, benchmark, tmp_path):
    result = parity_runs.check(framework, benchmark, tmp_path)
    assert result["status"] == "ok", result["message"]
    assert result["equivalent"], result["message"]
    for check in result["checks"]:
        assert check["max_abs_difference"] <= check["bound"]
    written = json.loads(next((tmp_path / "parity").glob("*.json")).read_text())
    assert written["equivalent"] is True and written["framework"] == framework.label
    assert (tmp_path / "parity" / written["notebook"]).is_file()


def test_equivalent_column_shows_the_latest_parity_run(tmp_path):
    from common import record

    record.write(tmp_path / "records" / "r.json", record.build(
        framework="PyTorch", api="x", benchmark="imdb", accuracy=0.8, timing={"train_seconds": 3.0},
        epochs=3, batch_size=64, train_samples=25_000, test_samples=25_000, seed=42))
    assert "| not checked |" in report.render(tmp_path).read_text()
    parity_runs.check(FRAMEWORKS["pytorch"], "imdb", tmp_path)
    assert "| yes |" in report.render(tmp_path).read_text()


def _mutant(tmp_path, benchmark, old, new, name):
    """The PyTorch notebook with ``old`` replaced by ``new`` in its code, as its own framework."""
    source = FRAMEWORKS["pytorch"].notebook(benchmark)
    notebook = nbformat.read(source, as_version=4)
    hits = 0
    for cell in notebook.cells:
        if cell.cell_type == "code" and old in cell.source:
            cell.source = cell.source.replace(old, new)
            hits += 1
    assert hits == 1, f"{old!r} not found once in {source}"
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(notebook, path)
    return Framework(name=name, label=name, api="mutant", env="pytorch", notebooks={benchmark: str(path)})


MUTANTS = {
    "dropout-on-at-prediction": (
        "cifar",
        "x = self.dropout3(F.relu(self.fc1(torch.flatten(x, 1))))",
        "x = F.dropout(F.relu(self.fc1(torch.flatten(x, 1))), params.CNN_DROPOUT[2], training=True)",
        ["logits differ by", "loss differs by", "weights differ by"]),
    "padding-valid": (
        "cifar",
        "self.conv1 = nn.Conv2d(3, 50, kernel_size=3, padding=1)",
        "self.conv1 = nn.Conv2d(3, 50, kernel_size=3, padding=0)",
        ["not equivalent: the parity run failed", "16x4900 and 6400x512"]),
    "gates-swapped": (
        "imdb",
        "tensor.copy_(value.T if transposed else value)",
        "value = value.T if transposed else value\n"
        "            if value.shape[0] == 300:  # reset and update swapped\n"
        "                value = torch.cat([value[100:200], value[:100], value[200:]])\n"
        "            tensor.copy_(value)",
        ["logits differ by", "weights differ by"]),
    "adam-epsilon-inside-the-correction": (
        "imdb",
        "eps=params.GRU_EPSILON)",
        "eps=params.GRU_EPSILON / (1 - params.GRU_BETAS[1]) ** 0.5)",  # TF's epsilon-hat, at step 1
        ["weights differ by"]),
}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_one_deliberate_difference_fails_parity(name, tmp_path):
    benchmark, old, new, expected = MUTANTS[name]
    result = parity_runs.check(_mutant(tmp_path, benchmark, old, new, name), benchmark, tmp_path)
    assert result["equivalent"] is False
    for words in expected:
        assert words in result["message"], result["message"]
    if result["status"] == "ok":  # a numeric difference: the message gives the size and the bound
        failing = [c for c in result["checks"] if not c["ok"]]
        assert failing and all(c["max_abs_difference"] > c["bound"] for c in failing)
        for check in failing:
            assert f"by {check['max_abs_difference']:.3g}" in result["message"]
