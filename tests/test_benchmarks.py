"""One place per benchmark: common/benchmarks.py holds every fact that differs from one benchmark to
another, and the harness and ``common`` loop over ``BENCHMARKS`` instead of naming one."""
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from common import REPOSITORY, data
from common.benchmarks import BENCHMARKS, Benchmark
from harness import bundle, cli, existing
from harness.frameworks import FRAMEWORKS, Framework

# The names that say which benchmark: its own, its data set's (module and title) and its model's.
BENCHMARK_WORDS = sorted({word.lower() for b in BENCHMARKS.values()
                          for word in [b.name, b.dataset.rsplit(".", 1)[1], b.dest, *re.findall(r"[A-Za-z]+", b.what)]})
MODEL_WORDS = sorted({word.lower() for b in BENCHMARKS.values() for word in (b.model, b.layout)})

# Modules that may name a benchmark: the table itself and the data-set modules it names.
BENCHMARK_MODULES = {"common/benchmarks.py", *(b.dataset.replace(".", "/") + ".py" for b in BENCHMARKS.values())}
# Modules that hold the models' own code, keyed by the model's layout: they name models, never benchmarks.
MODEL_MODULES = {
    "common/params.py": "the design's values, under the names the notebooks read (CNN_LR, GRU_HIDDEN...)",
    "common/canonical.py": "each model's canonical weight layout",
    "common/reference.py": "each model's float64 forward and backward pass and optimiser",
    "common/flops.py": "each model's FLOPs, product by product",
    "common/layouts.py": "the frameworks' weight conversions, such as a GRU's gate order",
}
# A word that names a model for another reason, in one file.
WORD_EXCEPTIONS = {
    ("common/onnx_check.py", "gru"): "ONNX's GRU operator, whose form the check reports",
}
# Names kept as they are, wherever they appear: the design's values under the names the notebooks
# read (params.IMDB_VOCAB), and the ONNX check records' field gru_form (records already written hold it).
KEPT = re.compile(r"\bparams\.[A-Z0-9_]+\b|\bgru_form\b")


def _scanned():
    files = sorted(REPOSITORY.glob("harness/*.py")) + sorted(REPOSITORY.glob("common/*.py"))
    return [path for path in files if path.relative_to(REPOSITORY).as_posix() not in BENCHMARK_MODULES]


def _pattern(words):
    return re.compile(r"(?<![A-Za-z])(" + "|".join(map(re.escape, words)) + r")(?![A-Za-z])", re.IGNORECASE)


def _findings(name: str, text: str):
    """Each line of ``text`` (the file ``name``) that names a benchmark, or a model where it may not."""
    allowed_models = name in MODEL_MODULES
    words = BENCHMARK_WORDS + ([] if name == "common/params.py" or allowed_models else MODEL_WORDS)
    pattern = _pattern(words)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in pattern.finditer(KEPT.sub("", line)):
            word = match.group(1).lower()
            if name == "common/params.py" and word in BENCHMARK_WORDS:
                continue  # its constants' names (IMDB_VOCAB, CIFAR_TRAIN) are what the notebooks read
            if (name, word) in WORD_EXCEPTIONS:
                continue
            found.append(f"{name}:{number}: {match.group(1)!r} in {line.strip()}")
    return found


def test_no_module_outside_the_benchmarks_names_a_benchmark():
    """No harness or common module names a benchmark, its data set or (outside the model modules) its
    model: not in code, strings, comments or docstrings. The exceptions are the lists above."""
    found = []
    for path in _scanned():
        found += _findings(path.relative_to(REPOSITORY).as_posix(), path.read_text())
    assert not found, "\n".join(found)


def test_the_makefile_names_benchmarks_only_by_their_data_variables():
    """The Makefile keeps the users' CIFAR10= and IMDB= (Benchmark.variable), listed once in DATA_VARIABLES
    and passed on generically; it names no benchmark otherwise."""
    text = (REPOSITORY / "Makefile").read_text()
    variables = [b.variable for b in BENCHMARKS.values()]
    listed = re.search(r"^DATA_VARIABLES = (.*)$", text, re.MULTILINE)
    assert listed and listed.group(1).split() == variables
    stripped = re.sub(r"\b(" + "|".join(variables) + r")\b", "", text)  # the variables, case-sensitive
    found = [f"Makefile:{n}: {line.strip()}" for n, line in enumerate(stripped.splitlines(), 1)
             if _pattern(BENCHMARK_WORDS + MODEL_WORDS).search(line)]
    assert not found, "\n".join(found)


def test_the_scan_finds_a_benchmark_named_in_a_module():
    """The scan is not blind: a literal, an identifier or a comment naming one is found."""
    name, model = next(iter(BENCHMARKS.values())).name, next(iter(BENCHMARKS.values())).layout
    assert _findings("harness/runner.py", f'if benchmark == "{name}":')
    assert _findings("common/data.py", f"def _{name}_source(source):")
    assert _findings("common/parity.py", f"# the {model.upper()} is chaotic")
    assert _findings("common/reference.py", f"# the {model.upper()}'s backward pass") == []
    assert _findings("common/reference.py", f"# {name}")
    assert _findings("common/parity.py", "tokens = params.IMDB_VOCAB") == []


def test_every_framework_has_a_notebook_per_benchmark_from_the_pattern():
    for framework in FRAMEWORKS.values():
        assert set(framework.notebooks) == set(BENCHMARKS)
        for name, benchmark in BENCHMARKS.items():
            assert framework.notebooks[name] == benchmark.notebook(framework.stem)
            assert framework.notebook(name).is_file(), framework.notebook(name)


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """A third benchmark, with a data-set module of its own, added to BENCHMARKS for one test."""
    module = types.ModuleType("toy_dataset")
    module.calls = []

    def arrays(source=None, cache=None):
        module.calls.append(source)
        x = np.zeros((6, 2), np.float32)
        return {"x_train": x, "y_train": np.zeros(6), "x_test": x[:4], "y_test": np.zeros(4)}, \
            {"source": "local copy", "path": str(source)}

    module.arrays = arrays
    module.for_library = lambda source=None, cache=None: ("toy arrays", source)
    monkeypatch.setitem(sys.modules, "toy_dataset", module)
    spec = Benchmark("toy", "MLP", "mlp", "MLP on Toy", 8, 1, 6, 4, "points", dataset="toy_dataset", what="Toy",
                     option="--toy-data", env_var="ROSETTA_TOY", source_help="a local toy copy (default $ROSETTA_TOY)",
                     expected="a toy.npz", loader="toy_for_library", classes=2, parity_steps=3, dropout=(),
                     export_layouts=("NF",), recurrent=False, notebook_pattern="toy/{stem}_TOY.ipynb")
    monkeypatch.setitem(BENCHMARKS, "toy", spec)
    copy = tmp_path / "toy.npz"
    copy.write_bytes(b"")
    return module, copy


def test_a_new_benchmark_gets_its_options_data_notebooks_and_parameters(toy, monkeypatch, capsys, tmp_path):
    """An entry in BENCHMARKS is all the harness needs: its data option and variable, `rosetta data`,
    the notebooks' names, the notebook parameters and the bundle's option follow from it."""
    module, copy = toy
    args = cli.resolve_paths(cli.parse(["run", "pytorch", "--benchmark", "toy", "--toy-data", str(copy)]))
    assert args.benchmark == ["toy"] and args.toy_data == str(copy)
    monkeypatch.setenv("ROSETTA_TOY", str(copy))
    args = cli.resolve_paths(cli.parse(["data"]))
    assert args.toy_data == str(copy) and args.origins["toy_data"] == "ROSETTA_TOY"
    assert cli.cmd_data(args, ["toy"]) == 0
    assert module.calls == [str(copy)]
    assert f"Toy: 6 + 4 points, local copy {copy}" in capsys.readouterr().out
    settings = cli.run_settings(cli.parse(["run", "--toy-data", str(copy)]))
    assert settings.notebook_parameters("toy", tmp_path / "r.json")["data_source"] == str(copy)
    assert Framework(name="x", label="X", api="t", env="x", stem="PyTorch").notebooks["toy"] == \
        "toy/PyTorch_TOY.ipynb"
    with pytest.raises(ValueError, match="--toy-data .*missing.*expected a toy.npz"):
        cli.validate_run(cli.resolve_paths(cli.parse(["run", "--benchmark", "toy", "--toy-data",
                                                      str(tmp_path / "missing")])))
    with pytest.raises(SystemExit):
        bundle.main([str(tmp_path / "b.tar"), "--toy-data"])  # the option exists and takes a path
    assert "--toy-data: expected one argument" in capsys.readouterr().err


def test_the_notebooks_loaders_are_looked_up_through_the_table(toy):
    module, copy = toy
    for benchmark in BENCHMARKS.values():
        if benchmark.name != "toy":
            assert getattr(data, benchmark.loader).__name__ == benchmark.loader
    assert data.prepare("toy", str(copy)) == (6, 4, {"source": "local copy", "path": str(copy)})


def test_the_kernel_hint_names_every_data_option():
    pooch = dict(existing.KERNEL_WANTS)["pooch"]
    assert all(b.option in pooch for b in BENCHMARKS.values())


def test_the_design_says_what_a_new_benchmark_needs():
    design = (REPOSITORY / "docs" / "design.md").read_text()
    section = design.split("## Adding a benchmark", 1)[1].split("\n## ", 1)[0]
    for needed in ("common/benchmarks.py", "data-set module", "common/reference.py", "notebook_pattern",
                   "common/canonical.py", "common/flops.py"):
        assert needed in section, needed
