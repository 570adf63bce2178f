"""The notebooks themselves: the shared contract, and each run through papermill in its real kernel."""
import json
import re
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
    for name in ("epochs", "train_samples", "test_samples", "seed", "device", "threads", "record_path",
                 "data_source", "parity_inputs", "parity_outputs"):
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
        assert result["environment"]["threads"] == 1 and result["environment"]["threads_requested"] == 1, \
            f"{framework.label} {result['benchmark']}: threads {result['environment']['threads']}"  # as asked
        assert (results / result["notebook"]).is_file()
    cifar, imdb = done
    readme = report.render(results).read_text()
    for benchmark in ("CNN on CIFAR-10", "GRU on IMDB"):
        assert f"## {benchmark}" in readme
    assert readme.count(f"| {framework.label} |") == 4  # each benchmark: its main table and its setup table
    assert "CPU:" in readme and f"subset: {cifar['epochs']} epoch{'' if cifar['epochs'] == 1 else 's'}," in readme
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


def _cells(path: Path) -> dict:
    """{(step, cell type): source} of a notebook; the untagged title as ("title", "markdown")."""
    cells = {}
    for cell in nbformat.read(path, as_version=4).cells:
        steps = cell_steps(cell) or ["title"]
        cells[(steps[0], cell.cell_type)] = cell.source
    return cells


# What every notebook calls the same things: (step, text its code cell must contain).
SHARED_NAMES = [
    ("imports", "use_cuda = "), ("imports", "epochs = epochs or params."),
    ("imports", "batch_size = batch_size or params."),
    ("environment", "env = "),
    ("data", "x_train, "), ("data", 'data.subset(x_train, y_train, train_samples, "train_samples")'),
    ("data", 'data.subset(x_test, y_test, test_samples, "test_samples")'),
    ("model", "parameter_count"), ("model", "assert parameter_count == params."),
    ("train", "timer = timing.Timer("), ("train", "steps_per_epoch = iterator.batches_per_epoch(len(x_train), batch_size)"),
    ("train", "iterator.train_batches(x_train, y_train, batch_size, seed, epoch)"), ("train", "mean_loss"),
    ("train", "record.check_loss("),
    ("predict", "y_predicted = "),
    ("evaluate", "accuracy = float((y_predicted == y_test).mean())"),
    ("evaluate", "timing_summary = timer.summary(steps_per_epoch * batch_size)"), ("evaluate", "record.build("),
    ("parity", "canonical_layout = {  # canonical name: ("),
    ("parity", "def canonical_weights("), ("parity", "    return {name: conversion.to_canonical("),
    ("parity", "            for name, (variable, conversion) in canonical_layout.items()}"),
    ("parity", "if parity_inputs:\n    weights, x_parity, y_parity = parity.read_inputs(parity_inputs, "),
    ("parity", "def dropout_rates():"), ("parity", "    initial, rates = canonical_weights("),
    ("parity", "dropout_rates()  # this framework's own"),
    ("parity", "for name, (variable, conversion) in canonical_layout.items()"),
    ("parity", "conversion.to_framework(weights[name]"),
    ("parity", "for x_batch, y_batch in zip(x_parity, y_parity):  # one step on each batch"),
    ("parity", "losses.append("), ("parity", "first_logits, after_first = "),
    ("parity", "parity.write_outputs(parity_outputs, "),
    ("parity", "first_logits, losses, after_first,\n                         canonical_weights("),
    ("parity", "initial, rates, versions=env[\"versions\"])"),
]


@pytest.mark.parametrize("framework, benchmark", NOTEBOOKS, ids=IDS)
def test_notebook_calls_the_shared_things_by_the_shared_names(framework, benchmark):
    cells = _cells(framework.notebook(benchmark))
    missing = [f"{step}: {text!r}" for step, text in SHARED_NAMES if text not in cells[(step, "code")]]
    assert not missing, f"{framework.notebook(benchmark)} lacks the shared names: " + "; ".join(missing)


@pytest.mark.parametrize("framework, benchmark", NOTEBOOKS, ids=IDS)
def test_parity_step_uses_only_the_shared_conversions(framework, benchmark):
    """Every conversion a parity step names is one of common.layouts', and it defines none of its own."""
    from common import layouts

    code = _cells(framework.notebook(benchmark))[("parity", "code")]
    used = set(re.findall(r"\blayouts\.(\w+)", code))
    assert used and used <= set(dir(layouts)), f"unknown conversions: {used - set(dir(layouts))}"
    assert not re.search(r"(?<!x_parity)\.transpose\(|np\.split\(|np\.concatenate\(|\[::-1", code), \
        "a conversion written in the notebook: it belongs in common/layouts.py"


# The modules that write or read ONNX, none of which a training run needs: each is imported only
# inside the export step's `with export.step(...)` block (or in a function of that cell called only
# there), so that a kernel without it records "export failed" and keeps its training record.
EXPORTER_MODULES = ("onnx", "onnxscript", "onnxruntime", "tf2onnx", "jax2onnx", "onnx_chainer", "keras2onnx",
                    "onnxmltools", "caffe2.python.onnx", "mxnet.onnx", "torch.onnx", "cntk.onnx")


def _exporter(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in EXPORTER_MODULES)


def _imported(node) -> list[str]:
    """The modules an import statement loads: ``from a.b import c`` loads a.b and perhaps a.b.c."""
    import ast

    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def _in_export_step(with_node) -> bool:
    import ast

    return any(isinstance(item.context_expr, ast.Call) and isinstance(item.context_expr.func, ast.Attribute)
               and item.context_expr.func.attr == "step" and isinstance(item.context_expr.func.value, ast.Name)
               and item.context_expr.func.value.id == "export" for item in with_node.items)


def _exporter_imports_outside_the_export_step(path: Path) -> list[str]:
    """Each import of an exporter module that a run without ``export_dir``, or one whose exporter is
    missing, would reach outside ``export.step``: 'NOTEBOOK: step S, line N: import X'."""
    import ast

    found, calls_outside, export_functions = [], [], {}

    def visit(node, step, inside, function):
        if isinstance(node, (ast.With, ast.AsyncWith)) and _in_export_step(node):
            inside = True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if step == "export" and not inside:
                export_functions[node.name] = node
            function = node.name
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not inside:
            calls_outside.append((node.func.id, step, node.lineno, function))
        for module in _imported(node):
            if _exporter(module) and not inside:
                found.append((step, node.lineno, module, function))
        for child in ast.iter_child_nodes(node):
            visit(child, step, inside, function)

    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code":
            visit(ast.parse(cell.source), (cell_steps(cell) or ["untagged"])[0], False, None)
    # an import in a function of the export cell is reached only by a call: every call must be inside
    called_outside = {name for name, _, _, caller in calls_outside if name in export_functions and caller != name}
    return [f"{path.name}: step {step}, line {line} of its cell: {module}"
            + (f" (in {function}, called outside export.step)" if function else "")
            for step, line, module, function in found
            if not (step == "export" and function in export_functions and function not in called_outside)]


@pytest.mark.parametrize("framework, benchmark", NOTEBOOKS, ids=IDS)
def test_exporters_are_imported_only_inside_the_export_step(framework, benchmark):
    outside = _exporter_imports_outside_the_export_step(framework.notebook(benchmark))
    assert not outside, ("an exporter imported where a missing one fails the training run, not only the export: "
                         + "; ".join(outside))


def test_the_exporter_check_finds_what_it_looks_for(tmp_path):
    """The check above on notebooks made to fail it, and on the patterns the notebooks use."""
    def notebook(*cells):
        path = tmp_path / f"n{len(list(tmp_path.iterdir()))}.ipynb"
        made = [nbformat.v4.new_code_cell(source, metadata={"tags": [f"step:{step}"]}) for step, source in cells]
        nbformat.write(nbformat.v4.new_notebook(cells=made), path)
        return _exporter_imports_outside_the_export_step(path)

    step = "    with export.step(export_dir, 'X', 'cifar') as out:\n"
    assert notebook(("imports", "import numpy as np\nimport jax2onnx")) == \
        ["n0.ipynb: step imports, line 2 of its cell: jax2onnx"]
    assert len(notebook(("export", "if export_dir:\n    import onnx\n    from jax2onnx import to_onnx\n" + step
                         + "        to_onnx()"))) == 3  # onnx, jax2onnx and jax2onnx.to_onnx
    assert notebook(("export", "from caffe2.python import onnx")) == \
        ["n2.ipynb: step export, line 1 of its cell: caffe2.python.onnx"]
    assert notebook(("export", "if export_dir:\n" + step + "        import onnx\n        from jax2onnx import to_onnx")) == []
    helper = "def export_onnx(path):\n    import onnx_chainer\n    onnx_chainer.export(path)\n\n\n"
    assert notebook(("export", helper + "if export_dir:\n" + step + "        export_onnx(out.model_path)")) == []
    outside = notebook(("export", helper + "export_onnx('a')\nif export_dir:\n" + step + "        export_onnx(1)"))
    assert len(outside) == 1 and "onnx_chainer (in export_onnx, called outside export.step)" in outside[0]
    assert len(notebook(("model", helper))) == 1  # a helper of another step is not the export step's


# The Keras families, by the start of their labels, and how many backends each has: Keras 3 on
# three, Keras 2 (2.3.1) on Theano and CNTK.
KERAS_FAMILIES = {"Keras (": 3, "Keras 2 (": 2}
KERAS = {(family, b): [f for f in FRAMEWORKS.values() if f.label.startswith(family) and b in f.notebooks]
         for family in KERAS_FAMILIES for b in ("cifar", "imdb")}
# Where the Keras notebooks of a family and benchmark may differ: the backend is named, chosen and
# asked for its versions there (the title, the imports, the environment); the record names the row.
KERAS_BACKEND_CELLS = {("title", "markdown"), ("imports", "markdown"), ("imports", "code"), ("environment", "code")}


@pytest.mark.parametrize("family, benchmark", sorted(KERAS))
def test_the_keras_notebooks_differ_only_in_their_backend_cells(family, benchmark):
    assert len(KERAS[family, benchmark]) == KERAS_FAMILIES[family]
    notebooks = {f.label: _cells(f.notebook(benchmark)) for f in KERAS[family, benchmark]}
    first_label, first = next(iter(notebooks.items()))
    for label, cells in notebooks.items():
        assert cells.keys() == first.keys()
        for key in first:
            if key in KERAS_BACKEND_CELLS:
                continue
            ours, theirs = cells[key], first[key]
            if key in (("evaluate", "code"), ("export", "code")):  # the rows' labels, in the record
                for named in notebooks:
                    ours, theirs = ours.replace(f'"{named}"', "..."), theirs.replace(f'"{named}"', "...")
            assert ours == theirs, f"{label} and {first_label} ({benchmark}) differ in their {key[0]} {key[1]} cell"


# The prose: each markdown cell says what this framework does in its step, briefly; the reasons
# live once in docs/ (docs/frameworks.md and the others), which the cells link.
MARKDOWN_WORD_LIMIT = 80
# A sentence this long, met in two frameworks' notebooks, is a reason written twice: it belongs in docs/.
REPEATED_SENTENCE_WORDS = 12


def _markdown_cells(path: Path) -> list[tuple[str, str]]:
    """(heading, text) of each markdown cell; the heading is the cell's first line."""
    return [(cell.source.splitlines()[0] if cell.source else "", cell.source)
            for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"]


def _family(framework) -> str:
    """Frameworks whose notebooks may share prose: the Keras notebooks, Keras 3 or 2, whatever the backend."""
    return "Keras" if framework.label.startswith(tuple(KERAS_FAMILIES)) else framework.label


def _sentences(text: str) -> list[str]:
    """The sentences of a markdown cell below its heading, whitespace and case folded."""
    body = "\n".join(text.splitlines()[1:])
    return [" ".join(s.split()).lower() for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", body) if s.strip()]


def _markdown_over_the_limit(notebooks) -> list[str]:
    return [f"{path}: the cell {heading!r} has {len(text.split())} words"
            for path in notebooks for heading, text in _markdown_cells(path)
            if len(text.split()) > MARKDOWN_WORD_LIMIT]


def _sentences_in_two_families(notebooks: dict) -> list[str]:
    """notebooks: {path: family}. Each long sentence found in more than one family, and where."""
    seen = {}
    for path, family in notebooks.items():
        for heading, text in _markdown_cells(path):
            for sentence in _sentences(text):
                if len(sentence.split()) >= REPEATED_SENTENCE_WORDS:
                    seen.setdefault(sentence, {}).setdefault(family, f"{Path(path).name} {heading!r}")
    return [f"{sentence!r} in {', '.join(places.values())}" for sentence, places in seen.items() if len(places) > 1]


def test_no_markdown_cell_is_over_the_word_limit():
    over = _markdown_over_the_limit([f.notebook(b) for f, b in NOTEBOOKS])
    assert not over, f"markdown cells over {MARKDOWN_WORD_LIMIT} words (move the reasons to docs/): " + "; ".join(over)


def test_no_long_sentence_is_repeated_across_frameworks():
    repeated = _sentences_in_two_families({f.notebook(b): _family(f) for f, b in NOTEBOOKS})
    assert not repeated, ("sentences repeated in the notebooks of several frameworks (say it once in docs/ "
                          "and link it): " + "; ".join(repeated))


def test_the_prose_checks_find_what_they_look_for(tmp_path):
    """The two checks above on notebooks made to fail them."""
    long_sentence = "This sentence has well over twelve words in it, so it counts as a reason."
    paths = []
    for name, body in (("a", long_sentence), ("b", long_sentence + " " + "word " * 80)):
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"## 1. Step\n{body}")])
        paths.append(tmp_path / f"{name}.ipynb")
        nbformat.write(notebook, paths[-1])
    over = _markdown_over_the_limit(paths)
    assert len(over) == 1 and "b.ipynb" in over[0] and "'## 1. Step'" in over[0] and "98 words" in over[0]
    assert len(_sentences_in_two_families({paths[0]: "A", paths[1]: "B"})) == 1
    assert not _sentences_in_two_families({paths[0]: "A", paths[1]: "A"})


# The notebooks of a benchmark differ only where the frameworks differ. Three checks, each over the
# 14 notebooks of a benchmark, PyTorch's the one the others are read against:
# - the parameters, data and evaluation cells are the same, line for line, but for the lines
#   SHARED_CELL_EXCEPTIONS lists;
# - a line of code that two notebooks share, in the same step, carries the same comment in both
#   (where both carry one), but for the lines SHARED_COMMENT_EXCEPTIONS lists;
# - the names the versions dicts of two notebooks share come in the same order.
SHARED_CELLS = ("parameters", "data", "evaluate")
REFERENCE_NOTEBOOK = "pytorch"
# (step, the line's start once stripped): why a framework's line differs from PyTorch's.
SHARED_CELL_EXCEPTIONS = {
    ("parameters", "threads = None"): "CNTK's GRU notebook runs on one CPU thread unless told more; its comment says so",
    ("data", "channels_first="): "the image layout is the framework's: channels last where its CPU kernels need it",
    ("evaluate", "framework="): "the record names the row and its API",
    ("evaluate", "seed=seed, environment=env, data=provenance"):
        "a notebook that offers variants records the one it ran and the precision it observed (docs/variants.md)",
}
# The start of a line of code whose comment gives a framework's own reason, so it may differ.
SHARED_COMMENT_EXCEPTIONS = {
    "timer = timing.Timer(sync=None)": "why the framework's step needs no wait before the clock reads",
    "canonical_layout = {": "what the framework calls a weight: a parameter, a blob, a variable, a path",
    "def dropout_rates():": "where the framework's dropout sites are found",
    "export.free_batch_axis(out.model_path)": "what the framework's exporter writes as the batch axis",
    "torch.set_num_threads(": "whose threads it sets: PyTorch's or Caffe2's operators'",
    "if threads:": "which library reads its thread count as it loads",
    "if use_cuda:": "what the framework does on the GPU",
    "np.random.seed(seed)": "what draws from NumPy's generator",
    "threads = None": "CNTK's GRU notebook runs on one CPU thread unless told more",
}


def _code_and_comment(line: str) -> tuple:
    """(the code, its comment or None): a comment is what follows the first "  # " outside a string."""
    start = 0
    while True:
        at = line.find("  # ", start)
        if at < 0:
            return line.strip(), None
        if line[:at].count('"') % 2 == 0 and line[:at].count("'") % 2 == 0:
            return line[:at].strip(), line[at + 4:].strip()
        start = at + 1


def _differences_in_shared_cells(notebooks: dict, reference: str) -> list:
    """notebooks: {name: cells}. Each line of a shared cell that differs from the reference's."""
    problems = []
    for name, cells in notebooks.items():
        for step in SHARED_CELLS:
            ours, theirs = cells[(step, "code")].splitlines(), notebooks[reference][(step, "code")].splitlines()
            if len(ours) != len(theirs):
                problems.append(f"{name}: step {step} has {len(ours)} lines, {reference} {len(theirs)}")
                continue
            for number, (line, other) in enumerate(zip(ours, theirs), 1):
                excepted = any(step == s and line.strip().startswith(start) and other.strip().startswith(start)
                               for s, start in SHARED_CELL_EXCEPTIONS)
                if line != other and not excepted:
                    problems.append(f"{name}: step {step}, line {number}: {line.strip()!r}, "
                                    f"where {reference} has {other.strip()!r}")
    return problems


def _comments_that_differ(notebooks: dict) -> list:
    """Each line of code two notebooks share, in the same step, with another comment in each."""
    seen, problems = {}, []
    for name, cells in notebooks.items():
        for (step, kind), source in cells.items():
            if kind != "code":
                continue
            for number, line in enumerate(source.splitlines(), 1):
                code, comment = _code_and_comment(line)
                if comment is None or code.startswith(tuple(SHARED_COMMENT_EXCEPTIONS)):
                    continue
                first = seen.setdefault((step, code), (name, number, comment))
                if first[2] != comment:
                    problems.append(f"{name}: step {step}, line {number}: {code!r} # {comment!r}, "
                                    f"where {first[0]} (line {first[1]}) has # {first[2]!r}")
    return problems


def _versions_out_of_order(notebooks: dict) -> list:
    """Each pair of notebooks whose versions dicts hold names they share in another order."""
    dicts = {name: [re.findall(r'"([\w.-]+)": [\w.]+\.__version__', found)  # a notebook may have two (GPU, CPU)
                    for found in re.findall(r"\{[^{}]*__version__[^{}]*\}", cells[("environment", "code")])]
             for name, cells in notebooks.items()}
    problems = []
    for name, ours_all in dicts.items():
        for other, theirs_all in dicts.items():
            for ours in ours_all:
                for theirs in theirs_all:
                    shared = set(ours) & set(theirs)
                    if name < other and [n for n in ours if n in shared] != [n for n in theirs if n in shared]:
                        problems.append(f"{name}: versions {ours}, where {other} has {theirs}")
    return problems


@pytest.mark.parametrize("benchmark", sorted(BENCHMARKS))
def test_the_notebooks_of_a_benchmark_share_their_shared_lines(benchmark):
    notebooks = {f.notebook(benchmark).name: _cells(f.notebook(benchmark))
                 for f in FRAMEWORKS.values() if benchmark in f.notebooks}
    assert len(notebooks) == len([f for f in FRAMEWORKS.values() if benchmark in f.notebooks])
    reference = FRAMEWORKS[REFERENCE_NOTEBOOK].notebook(benchmark).name
    problems = (_differences_in_shared_cells(notebooks, reference) + _comments_that_differ(notebooks)
                + _versions_out_of_order(notebooks))
    assert not problems, f"the {benchmark} notebooks differ where no framework does: " + "; ".join(problems)


def test_the_shared_line_checks_find_what_they_look_for():
    cells = _cells(FRAMEWORKS[REFERENCE_NOTEBOOK].notebook("imdb"))

    def changed(step, old, new):
        assert old in cells[(step, "code")], old
        return {**cells, (step, "code"): cells[(step, "code")].replace(old, new, 1)}

    same = {"A.ipynb": cells, "B.ipynb": dict(cells)}
    assert not _differences_in_shared_cells(same, "A.ipynb") and not _comments_that_differ(same)
    assert not _versions_out_of_order(same)
    data = {"A.ipynb": cells, "B.ipynb": changed("data", 'test_samples, "test_samples")', '"n")')}
    assert _differences_in_shared_cells(data, "A.ipynb") == [
        "B.ipynb: step data, line 4: 'x_test, y_test = data.subset(x_test, y_test, \"n\")', "
        "where A.ipynb has 'x_test, y_test = data.subset(x_test, y_test, test_samples, \"test_samples\")'"]
    labels = {"A.ipynb": cells, "B.ipynb": changed("evaluate", 'framework="PyTorch"', 'framework="X"')}
    assert not _differences_in_shared_cells(labels, "A.ipynb")  # an exception: the record's row
    reworded = {"A.ipynb": cells, "B.ipynb": changed("parameters", "# the shared iterator's order", "# the order")}
    comments = _comments_that_differ(reworded)
    assert comments == ["B.ipynb: step parameters, line 5: 'seed = 42' # \"the order and the framework's initial "
                        "weights\", where A.ipynb (line 5) has # \"the shared iterator's order and the framework's "
                        "initial weights\""]
    assert _code_and_comment('x = "a  # b"  # c') == ('x = "a  # b"', "c")
    assert _code_and_comment("y = 1") == ("y = 1", None)
    swapped = {"A.ipynb": {("environment", "code"): 'versions={"keras": k.__version__, "numpy": np.__version__}'},
               "B.ipynb": {("environment", "code"): 'versions={"numpy": np.__version__, "jax": j.__version__, '
                                                    '"keras": k.__version__}'}}
    assert _versions_out_of_order(swapped) == [
        "A.ipynb: versions ['keras', 'numpy'], where B.ipynb has ['numpy', 'jax', 'keras']"]
