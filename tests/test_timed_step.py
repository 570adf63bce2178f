"""The timed step is the step parity proves: each notebook trains through one function, read from the notebook.

Where the timed loop is the notebook's own, the notebook defines ``train_step`` once, in a step that parity
mode runs (before the timed loop); the timed loop and the parity step both call it, and neither takes a step
or computes a loss by any other call (``FORBIDDEN``). Where the timed path is Keras' ``fit``, the parity step
trains through the train function ``fit`` compiles and runs (``model.train_on_batch``, or
``model.train_function`` itself), and by no other call.

The mutants: a change inside ``train_step`` of three frameworks must fail ``rosetta parity``
(``parity.check``, the function the command calls). That the notebooks as they are pass it is
``tests/test_parity.py::test_framework_passes_parity``.
"""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import nbformat
import pytest

from harness import parity
from harness.frameworks import FRAMEWORKS
from harness.notebooks import PARITY_STEPS, cell_steps

NOTEBOOKS = [(f, b) for f in FRAMEWORKS.values() for b in f.notebooks]
IDS = [f"{f.name}-{b}" for f, b in NOTEBOOKS]

# The calls that take an optimiser step or compute a loss: none may appear in a parity step, nor in a
# timed loop that calls train_step (each is matched by the last name of what is called).
FORBIDDEN = {
    "backward": "a backward pass",  # PyTorch, Chainer, Gluon
    "zero_grad": "PyTorch's gradient reset",
    "cleargrads": "Chainer's gradient reset",
    "step": "an optimiser's step",  # optimizer.step (PyTorch), trainer.step (Gluon)
    "update": "an optimiser's update",  # optimizer.update (Chainer), Module.update (MXNet)
    "record": "Gluon's autograd.record",
    "forward_backward": "MXNet's forward_backward",
    "value_and_grad": "JAX's gradient", "grad": "a gradient", "gradient": "a gradient",
    "gradients": "a gradient", "GradientTape": "TensorFlow's GradientTape",
    "apply_gradients": "an update",  # Optax's TrainState, Keras optimisers
    "train_minibatch": "CNTK's step",
    "RunNet": "Caffe2's net", "AddGradientOperators": "Caffe2's backward pass",
    "build_sgd": "Caffe2's optimiser", "build_adam": "Caffe2's optimiser",
    "function": "theano.function",
    "get_updates": "a Keras optimiser's updates", "stateless_apply": "a Keras optimiser's update",
    "compute_loss": "a Keras model's loss", "criterion": "the loss", "loss_function": "the loss",
    "SoftmaxWithLoss": "Caffe2's loss", "SoftmaxOutput": "MXNet's loss",
}
# Keras' compiled train function, as fit runs it: called directly, or through train_on_batch (Keras 2
# calls it directly where it must feed the test phase, learning phase 0: train_on_batch feeds 1).
KERAS_TRAIN_FUNCTIONS = ("train_on_batch", "train_function")
LOSS_WORDS = ("cross_entropy", "crossentropy")  # any call whose name holds one of these computes a loss


def _called(node: ast.Call) -> str:
    """The dotted name a call calls (``optimizer.step``, ``F.softmax_cross_entropy``), or '' if it has none."""
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    elif isinstance(func, ast.Call):  # chainer.using_config(...).x(): keep the attribute chain
        parts.append(_called(func) + "()")
    return ".".join(reversed(parts))


def _forbidden(name: str) -> str | None:
    last = name.rsplit(".", 1)[-1]
    if last in FORBIDDEN:
        return FORBIDDEN[last]
    if any(word in last.lower() for word in LOSS_WORDS):
        return "a loss"
    return None


def _calls(node) -> list[tuple[int, str]]:
    """(line, called name) of every call under ``node``."""
    return sorted((n.lineno, n.col_offset, _called(n)) for n in ast.walk(node) if isinstance(n, ast.Call))


def _loops_over(tree, iterated: str) -> list[ast.For]:
    """The ``for`` loops whose iterable is a call of ``iterated`` (a dotted name's end: ``train_batches``)."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.For) and isinstance(n.iter, ast.Call)
            and _called(n.iter).rsplit(".", 1)[-1] == iterated]


def _line(source: str, number: int) -> str:
    return source.splitlines()[number - 1].strip()


def _defines_train_step(node) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name == "train_step"
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Name) and t.id == "train_step" for t in targets)
    return False


def problems(path: Path) -> list[str]:
    """Each way the notebook at ``path`` trains in its parity step by other means than its timed step:
    'NOTEBOOK: step S, line N of its cell: what (the line)'; [] where it trains through it."""
    name = Path(path).name
    cells = [(i, (cell_steps(c) or ["untagged"])[0], c.source, ast.parse(c.source))
             for i, c in enumerate(nbformat.read(path, as_version=4).cells) if c.cell_type == "code"]
    by_step = {step: (i, source, tree) for i, step, source, tree in cells}
    if "train" not in by_step or "parity" not in by_step:
        return [f"{name}: no code cell tagged step:train or step:parity"]
    train_index, train_source, train_tree = by_step["train"]
    _, parity_source, parity_tree = by_step["parity"]
    found = []

    def where(step, source, line, what):
        found.append(f"{name}: step {step}, line {line} of its cell: {what} ({_line(source, line)})")

    parity_loops = _loops_over(parity_tree, "zip")  # for x_batch, y_batch in zip(x_parity, y_parity)
    if not parity_loops:
        found.append(f"{name}: step parity has no loop over zip(x_parity, y_parity)")
    for line, _, called in _calls(parity_tree):
        what = _forbidden(called)
        if what:
            where("parity", parity_source, line, f"calls {called}, {what}: the parity step must train through "
                                                  "the timed step, not by itself")
    fit = [(line, c) for line, _, c in _calls(train_tree) if c.rsplit(".", 1)[-1] in ("fit", "fit_generator")]
    if fit:  # Keras: the timed step is the compiled train function fit runs, which train_on_batch runs too
        helpers = {n.name: n for n in ast.walk(parity_tree) if isinstance(n, ast.FunctionDef)}
        called = [c for loop in parity_loops for _, _, c in _calls(loop)]
        called += [c for name_ in called if name_ in helpers for _, _, c in _calls(helpers[name_])]
        if not any(c.rsplit(".", 1)[-1] in KERAS_TRAIN_FUNCTIONS for c in called):
            found.append(f"{name}: the timed path is {fit[0][1]}, but step parity's loop does not call "
                         "model.train_on_batch or model.train_function (the train function fit runs)")
        return found

    definitions = [(step, n.lineno, source) for _, step, source, tree in cells for n in ast.walk(tree)
                   if _defines_train_step(n)]
    if len(definitions) != 1:
        found.append(f"{name}: train_step is defined {len(definitions)} times, expected once: "
                     + "; ".join(f"step {s}, line {line}" for s, line, _ in definitions))
    else:
        step, line, source = definitions[0]
        index = next(i for i, s, src, _ in cells if s == step and src == source)
        if step not in PARITY_STEPS or index > train_index:
            where(step, source, line, f"train_step is defined in step {step}, which parity mode does not run "
                                      f"or which comes after the timed loop (define it in step optimiser)")
    timed_loops = _loops_over(train_tree, "train_batches")
    if not timed_loops:
        found.append(f"{name}: step train has no loop over iterator.train_batches")
    elif not any(c == "train_step" for loop in timed_loops for _, _, c in _calls(loop)):
        where("train", train_source, timed_loops[0].lineno, "the timed loop does not call train_step")
    for loop in timed_loops:
        for line, _, called in _calls(loop):
            what = _forbidden(called)
            if what:
                where("train", train_source, line, f"calls {called}, {what}, outside train_step")
    if parity_loops and not any(c == "train_step" for loop in parity_loops for _, _, c in _calls(loop)):
        where("parity", parity_source, parity_loops[0].lineno, "the parity step's loop does not call train_step")
    return found


@pytest.mark.parametrize("framework, benchmark", NOTEBOOKS, ids=IDS)
def test_the_parity_step_trains_through_the_timed_step(framework, benchmark):
    found = problems(framework.notebook(benchmark))
    assert not found, "the parity step does not prove the timed step: " + "; ".join(found)


def _notebook(tmp_path, train, parity, optimiser="", name="n.ipynb"):
    cells = [nbformat.v4.new_code_cell(source, metadata={"tags": [f"step:{step}"]})
             for step, source in (("optimiser", optimiser), ("train", train), ("parity", parity))]
    path = tmp_path / name
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


TIMED = "for x_batch, y_batch in iterator.train_batches(x_train, y_train, batch_size, seed, epoch):\n" \
        "    epoch_loss += train_step(x_batch, y_batch)"
PARITY = "for x_batch, y_batch in zip(x_parity, y_parity):  # one step on each batch\n" \
         "    loss = train_step(x_batch, y_batch)"
STEP = "def train_step(x_batch, y_batch):\n    optimizer.zero_grad()\n    loss = criterion(model(x_batch), y_batch)\n" \
       "    loss.backward()\n    optimizer.step()\n    return loss.detach()"


def test_the_check_finds_what_it_looks_for(tmp_path):
    """The check above on notebooks made to fail it, one way each, and on one that passes."""
    assert problems(_notebook(tmp_path, TIMED, PARITY, STEP)) == []
    retyped = PARITY.replace("    loss = train_step(x_batch, y_batch)",
                             "    loss = criterion(model(x_batch), y_batch)\n    optimizer.zero_grad()\n"
                             "    loss.backward()\n    optimizer.step()")
    found = problems(_notebook(tmp_path, TIMED, retyped, STEP))
    assert len(found) == 5, found  # the loss, zero_grad, backward, step, and no call of train_step
    assert found[0] == ("n.ipynb: step parity, line 2 of its cell: calls criterion, the loss: the parity step must "
                        "train through the timed step, not by itself (loss = criterion(model(x_batch), y_batch))")
    assert "line 4 of its cell: calls loss.backward, a backward pass" in found[2]
    assert found[4] == ("n.ipynb: step parity, line 1 of its cell: the parity step's loop does not call train_step "
                        "(for x_batch, y_batch in zip(x_parity, y_parity):  # one step on each batch)")
    inline = TIMED.replace("epoch_loss += train_step(x_batch, y_batch)", "optimizer.step()")
    found = problems(_notebook(tmp_path, inline, PARITY, STEP))
    assert any("step train, line 1 of its cell: the timed loop does not call train_step" in p for p in found)
    assert any("step train, line 2 of its cell: calls optimizer.step, an optimiser's step, outside train_step" in p
               for p in found)
    assert problems(_notebook(tmp_path, TIMED, PARITY, STEP + "\n\n\ntrain_step = None")) == \
        ["n.ipynb: train_step is defined 2 times, expected once: step optimiser, line 1; step optimiser, line 9"]
    found = problems(_notebook(tmp_path, TIMED + "\n\n\n" + STEP, PARITY))
    assert len(found) == 1 and "step train, line 5 of its cell: train_step is defined in step train" in found[0]
    jax_parity = PARITY.replace("    loss = train_step(x_batch, y_batch)",
                                "    loss, g = jax.value_and_grad(loss_function)(w, x_batch, y_batch)\n"
                                "    state = state.apply_gradients(grads=g)\n    train_step(x_batch, y_batch)")
    found = problems(_notebook(tmp_path, TIMED, jax_parity, STEP))
    assert [p.split(": calls ")[1].split(",")[0] for p in found] == \
        ["jax.value_and_grad", "state.apply_gradients"], found


def test_the_keras_check_finds_what_it_looks_for(tmp_path):
    fit = "model.fit(shared_batches(), epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0)"
    keras_parity = PARITY.replace("train_step(x_batch, y_batch)", "model.train_on_batch(x_batch, y_batch)")
    assert problems(_notebook(tmp_path, fit, keras_parity)) == []
    with_tape = keras_parity + "\n    with tf.GradientTape() as tape:\n        tape.gradient(loss, weights)"
    found = problems(_notebook(tmp_path, fit, with_tape))
    assert len(found) == 2 and "line 3 of its cell: calls tf.GradientTape, TensorFlow's GradientTape" in found[0]
    found = problems(_notebook(tmp_path, fit, PARITY.replace("train_step(x_batch, y_batch)", "model(x_batch)")))
    assert found == ["n.ipynb: the timed path is model.fit, but step parity's loop does not call "
                     "model.train_on_batch or model.train_function (the train function fit runs)"]
    through = "def train_step(x, y):\n    return model.train_function([x, y, 0])[0]\n\n\n" + PARITY
    assert problems(_notebook(tmp_path, fit, through)) == []


# The mutants: (framework, benchmark, text inside train_step, its replacement, words the parity message holds).
MUTANTS = {
    # The first step is right (no gradient yet to keep), the later ones add the earlier gradients.
    "pytorch-zero-grad-dropped": ("pytorch", "cifar", "    optimizer.zero_grad()\n", "",
                                  "weights after the last step differ by"),
    # For SGD, a doubled gradient is a doubled learning rate.
    "jax-learning-rate-doubled": ("jax", "cifar", "state.apply_gradients(grads=gradients)",
                                  "state.apply_gradients(grads=jax.tree_util.tree_map(lambda g: 2 * g, gradients))",
                                  "weights after step 1 differ by"),
    # The loss doubled, and with it the gradient: for SGD, a doubled learning rate.
    "chainer-loss-doubled": ("chainer", "cifar", "loss = F.softmax_cross_entropy(model(x_batch), y_batch)",
                             "loss = 2 * F.softmax_cross_entropy(model(x_batch), y_batch)",
                             "weights after step 1 differ by"),
}


def mutant(tmp_path, name: str):
    """The framework of ``MUTANTS[name]`` with its notebook changed inside ``train_step`` only, as a framework
    of its own (its notebook an absolute path, which ``Framework.notebook`` keeps)."""
    source, benchmark, old, new, _ = MUTANTS[name]
    original = FRAMEWORKS[source]
    path_in = original.notebook(benchmark)
    notebook = nbformat.read(path_in, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert sum(cell.source.count(old) for cell in code) == 1, f"{old!r} is not in {path_in} once"
    cell = next(cell for cell in code if old in cell.source)
    step = next(n for n in ast.walk(ast.parse(cell.source)) if _defines_train_step(n))
    lines = cell.source.splitlines(keepends=True)
    start = sum(len(line) for line in lines[:step.lineno - 1])
    end = sum(len(line) for line in lines[:step.end_lineno])
    assert start <= cell.source.index(old) < end, f"{old!r} is not inside train_step in {path_in}"
    cell.source = cell.source.replace(old, new)
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(notebook, path)
    return dataclasses.replace(original, name=name, label=name, notebooks={benchmark: str(path)})


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(MUTANTS))
def test_a_change_in_the_timed_step_fails_parity(name, tmp_path):
    _, benchmark, _, _, words = MUTANTS[name]
    result = parity.check(mutant(tmp_path, name), benchmark, tmp_path)
    assert result["status"] == "ok", result["message"]  # the run went through; the outputs differ
    assert result["equivalent"] is False, result["message"]
    assert words in result["message"], result["message"]
    failing = [check for check in result["checks"] if not check["ok"]]
    assert failing and all(check["max_abs_difference"] > check["bound"] for check in failing), result["message"]
