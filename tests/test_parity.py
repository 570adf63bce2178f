"""Parity through papermill in the framework's own kernel: PyTorch passes, and the check has teeth.

The teeth: copies of the PyTorch notebooks with one deliberate difference each
must fail parity, with a message that says which output differs and by how much.
"""
import json

import nbformat
import pytest

from harness import parity, report
from harness.frameworks import FRAMEWORKS, Framework

pytestmark = pytest.mark.kernel


# Outputs a framework is known to get wrong, each explained in docs/parity.md; the test fails
# as soon as the framework gets them right (or others wrong), so that this list stays true.
KNOWN_DIFFERENCES: dict = {}  # (framework name, benchmark): {output}; none today


@pytest.mark.parametrize("benchmark", ["cifar", "imdb"])
@pytest.mark.parametrize("framework", list(FRAMEWORKS.values()), ids=list(FRAMEWORKS))
def test_framework_passes_parity(framework, benchmark, tmp_path):
    result = parity.check(framework, benchmark, tmp_path)
    assert result["status"] == "ok", result["message"]
    known = KNOWN_DIFFERENCES.get((framework.name, benchmark), set())
    failing = {check["output"] for check in result["checks"] if not check["ok"]}
    assert failing == known, result["message"]
    assert result["equivalent"] == (not known), result["message"]
    written = json.loads(next((tmp_path / "parity").glob("*.json")).read_text())
    assert written["equivalent"] == (not known) and written["framework"] == framework.label
    assert (tmp_path / "parity" / written["notebook"]).is_file()
    assert not any((tmp_path / "parity" / ".reserved").iterdir()), "the parity run's reservation was left"


def test_equivalent_column_shows_the_latest_parity_run(tmp_path):
    from common import record

    record.write(tmp_path / "records" / "r.json", record.build(
        framework="PyTorch", api="x", benchmark="imdb", accuracy=0.8, timing={"train_seconds": 3.0},
        epochs=3, batch_size=64, train_samples=25_000, test_samples=25_000, seed=42))
    assert "| not checked |" in report.render(tmp_path).read_text()
    parity.check(FRAMEWORKS["pytorch"], "imdb", tmp_path)
    assert "| yes: weights within " in report.render(tmp_path).read_text()


def _mutant(tmp_path, benchmark, old, new, name, source="pytorch"):
    """A framework's notebook (PyTorch's unless ``source`` says) with ``old`` replaced by ``new``
    in its code, as a framework of its own."""
    original = FRAMEWORKS[source]
    path_in = original.notebook(benchmark)
    notebook = nbformat.read(path_in, as_version=4)
    hits = 0
    for cell in notebook.cells:
        if cell.cell_type == "code" and old in cell.source:
            cell.source = cell.source.replace(old, new)
            hits += 1
    assert hits == 1, f"{old!r} not found once in {path_in}"
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(notebook, path)
    return Framework(name=name, label=name, api="mutant", env=original.env, notebooks={benchmark: str(path)})


STEP_ONE = ("logits", "loss", "weights")  # the checks of the first step
MUTANTS = {  # name: (benchmark, old, new, words in the message, checks that still pass, source notebook)
    "dropout-on-at-prediction": (
        "cifar",
        "x = self.dropout3(F.relu(self.fc1(torch.flatten(x, 1))))",
        "x = F.dropout(F.relu(self.fc1(torch.flatten(x, 1))), params.CNN_DROPOUT[2], training=True)",
        ["logits differ by", "loss differs by", "weights after step 1 differ by",
         "the dropout differs: the rates in training mode are [0.25, 0.25]"], ("initial",), "pytorch"),
    "padding-valid": (
        "cifar",
        "self.conv1 = nn.Conv2d(3, 50, kernel_size=3, padding=1)",
        "self.conv1 = nn.Conv2d(3, 50, kernel_size=3, padding=0)",
        ["not equivalent: the parity run failed", "x4900 and 6400x512"], (), "pytorch"),
    "gates-swapped": (
        "imdb",
        "variable.copy_(torch.from_numpy(conversion.to_framework(weights[name])))",
        "value = torch.from_numpy(conversion.to_framework(weights[name]))\n"
        "            if value.shape[0] == 300:  # reset and update swapped\n"
        "                value = torch.cat([value[100:200], value[:100], value[200:]])\n"
        "            variable.copy_(value)",
        ["logits differ by", "weights after step 1 differ by"], ("initial",), "pytorch"),
    "adam-epsilon-inside-the-correction": (
        "imdb",
        "eps=params.GRU_EPSILON)",
        "eps=params.GRU_EPSILON / (1 - params.GRU_BETAS[1]) ** 0.5)",  # TF's epsilon-hat, at step 1
        ["weights after step 1 differ by"], ("logits", "loss", "initial"), "pytorch"),
    # Right at the first step, wrong after it: only the steps after the first show these.
    "momentum-with-dampening": (
        "cifar",
        "momentum=params.CNN_MOMENTUM)",
        "momentum=params.CNN_MOMENTUM, dampening=0.1)",  # PyTorch skips the dampening at the first step
        ["weights after the last step differ by"], STEP_ONE + ("initial",), "pytorch"),
    "adam-epsilon-converted-as-at-step-1": (
        "imdb",
        "step = optimizer.t + 1  # the step about to be taken",
        "step = 1  # the first step's conversion, kept",
        ["weights after the last step differ by"], STEP_ONE + ("initial",), "chainer"),
    # Dropout in training: the parity steps run without it, so only the dropout check shows these.
    "dropout-rate-changed": (
        "cifar",
        "self.dropout2 = nn.Dropout(params.CNN_DROPOUT[1])",
        "self.dropout2 = nn.Dropout(0.5)",
        ["the dropout differs: the rates in training mode are [0.25, 0.5, 0.5], the design's [0.25, 0.25, 0.5]"],
        STEP_ONE + ("losses", "final_weights", "initial"), "pytorch"),
    "dropout-site-skipped": (
        "cifar",
        "x = self.dropout2(F.relu(F.max_pool2d(x, 2)))",
        "x = F.relu(F.max_pool2d(x, 2))  # dropout2 defined, never applied",
        ["the dropout differs: the rates in training mode are [0.25, 0.5], the design's [0.25, 0.25, 0.5]"],
        STEP_ONE + ("losses", "final_weights", "initial"), "pytorch"),
    # The framework's own initialisation: the canonical weights are loaded, so only this check shows it.
    "pytorch-default-gru-initialisation": (
        "imdb",
        "glorot_uniform_zero_bias(model)\nparameter_count",
        "glorot_uniform_zero_bias(model.embedding)\nglorot_uniform_zero_bias(model.fc)  # the GRU keeps PyTorch's\n"
        "parameter_count",
        ["the initial weights are not the design's", "gru.input_bias is not zero"],
        STEP_ONE + ("losses", "final_weights", "dropout"), "pytorch"),
}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_one_deliberate_difference_fails_parity(name, tmp_path):
    benchmark, old, new, expected, still_passing, source = MUTANTS[name]
    result = parity.check(_mutant(tmp_path, benchmark, old, new, name, source), benchmark, tmp_path)
    assert result["equivalent"] is False
    for words in expected:
        assert words in result["message"], result["message"]
    if result["status"] == "ok":  # a numeric difference: the message gives the size and the bound
        failing = [c for c in result["checks"] if not c["ok"]]
        assert failing and all(c["max_abs_difference"] > c["bound"] for c in failing)
        for check in failing:
            if check["output"] not in ("initial", "dropout"):  # these name what differs, not a size
                assert f"by {check['max_abs_difference']:.3g}" in result["message"]
        passing = {c["output"] for c in result["checks"] if c["ok"]}
        assert set(still_passing) <= passing, f"{name}: {set(still_passing) - passing} failed too"
