"""The Keras notebooks' parity step runs the train function that `fit` runs, read from the notebooks,
and a copy of a Keras notebook whose compiled step differs fails parity.

The step is built once, in the optimiser cell, and kept as ``train_function``: the training cell
checks that ``fit`` (Keras 2: ``fit_generator``) ran that very function, and the parity cell checks
that its steps ran it too and that it had not run before them (a step traced with dropout on keeps
it, and Adam's step count starts at 1). Keras 3's parity cell trains through ``model.train_on_batch``.
Keras 2's CIFAR parity cell calls ``train_function`` itself, with the learning phase fed as 0 (the
test phase: no dropout), since ``train_on_batch`` feeds 1 and Keras 2 builds dropout into the graph
with the model; its IMDB model has no dropout and trains through ``model.train_on_batch``.
"""

import re

import pytest

from harness.frameworks import FRAMEWORKS
from test_notebooks import _cells
from test_parity import _mutant

KERAS = [(f, b) for f in FRAMEWORKS.values() if f.label.startswith("Keras") for b in f.notebooks]
IDS = [f"{f.name}-{b}" for f, b in KERAS]

KEPT = "train_function = model.train_function"
SAME = "assert model.train_function is train_function"
# How a Keras notebook builds the step fit runs: Keras 3's public method, Keras 2's private one.
BUILD = {3: "model.make_train_function()", 2: "model._make_train_function()"}
FIT = {3: "model.fit(", 2: "model.fit_generator("}
# The ways a parity step may train: the step fit runs, through train_on_batch or called itself.
TRAIN_CALLS = ("model.train_on_batch(", "train_function(")
# What a parity step that trains through the train function has no need of: a forward pass of its
# own, a loss, a gradient or an update written again.
RETYPED = ("GradientTape", ".backward(", "apply_gradients", "optimizer.apply", ".update_step(", "get_updates",
           "K.gradients", "stateless_call", "compute_loss", "model.train_step", "value_and_grad", "jax.grad",
           "Crossentropy", "crossentropy", "model(", "model.call(", "learning_rate")


def _version(framework) -> int:
    return 2 if framework.label.startswith("Keras 2") else 3


def _line(code: str, text: str) -> int:
    """The number of the first line of ``code`` that holds ``text`` (0: none)."""
    return next((n for n, line in enumerate(code.splitlines(), 1) if text in line), 0)


def _problems(cells: dict, version: int) -> list:
    """What keeps a Keras notebook's parity step from being the step its fit runs, one line each."""
    optimiser, train, parity = (cells[(step, "code")] for step in ("optimiser", "train", "parity"))
    problems = []
    if not (_line(optimiser, BUILD[version]) and _line(optimiser, KEPT) > _line(optimiser, BUILD[version])):
        problems.append(f"optimiser: the step is not built once and kept ({BUILD[version]}, then {KEPT!r})")
    if not (_line(train, FIT[version]) and _line(train, SAME) > _line(train, FIT[version])):
        problems.append(f"train: no {SAME!r} after {FIT[version]}")
    if BUILD[version] in parity or "force=True" in parity or KEPT in parity:
        problems.append("parity: the step is built again")
    loop = _line(parity, "for x_batch, y_batch in zip(x_parity, y_parity):")
    guard = _line(parity, "if parity_inputs:")  # the parity mode's code, below the functions it calls
    calls = [n for n, line in enumerate(parity.splitlines(), 1) if guard and n > guard
             and any(call in line for call in TRAIN_CALLS + ("train_step(",))]  # Keras 2 CIFAR's train_step
    if not calls or not any(call in parity for call in TRAIN_CALLS):
        problems.append("parity: no step on each batch through " + " or ".join(TRAIN_CALLS))
    unrun = next((n for n, line in enumerate(parity.splitlines(), 1)
                  if re.search(r"assert .*model\.optimizer\.iterations\)* == 0", line)), 0)
    if not unrun or (calls and unrun > min(calls)):
        problems.append("parity: no check that the step has not run before its first parity step")
    if not (loop and _line(parity, SAME) > loop):
        problems.append(f"parity: no {SAME!r} after the steps")
    dropout_off = _line(parity, "dropout.rate = 0.0")
    if dropout_off and calls and dropout_off > min(calls):
        problems.append("parity: the dropout is switched off after the step has run (its trace keeps it)")
    for text in RETYPED:
        for n, line in enumerate(parity.splitlines(), 1):
            if text in line.split("#")[0]:
                problems.append(f"parity: line {n} retypes the step: {line.strip()!r}")
    return problems


@pytest.mark.parametrize("framework, benchmark", KERAS, ids=IDS)
def test_the_parity_step_runs_the_train_function_fit_runs(framework, benchmark):
    problems = _problems(_cells(framework.notebook(benchmark)), _version(framework))
    assert not problems, f"{framework.notebook(benchmark)}: " + "; ".join(problems)


def test_keras_3_trains_through_train_on_batch_and_keras_2_cifar_in_the_test_phase():
    for framework, benchmark in KERAS:
        parity = _cells(framework.notebook(benchmark))[("parity", "code")]
        if _version(framework) == 2 and benchmark == "cifar":
            assert "train_function(x_feed + y_feed + weights_feed + [0])" in parity, framework.notebook(benchmark)
        else:
            assert "model.train_on_batch(x_batch, y_batch)" in parity, framework.notebook(benchmark)


def test_the_check_finds_what_it_looks_for():
    framework = FRAMEWORKS["keras-tensorflow"]
    cells = _cells(framework.notebook("cifar"))

    def problems(step, old, new):
        changed = dict(cells)
        assert old in changed[(step, "code")], old
        changed[(step, "code")] = changed[(step, "code")].replace(old, new)
        return _problems(changed, 3)

    assert not problems("parity", "", "")
    assert problems("optimiser", KEPT, "") == [
        f"optimiser: the step is not built once and kept ({BUILD[3]}, then {KEPT!r})"]
    assert problems("train", SAME, "assert True") == [f"train: no {SAME!r} after model.fit("]
    assert problems("parity", "    losses = []\n", "    model.make_train_function(force=True)\n    losses = []\n") == [
        "parity: the step is built again"]
    assert problems("parity", SAME, "pass") == [f"parity: no {SAME!r} after the steps"]
    assert problems("parity", "model.train_on_batch(x_batch, y_batch)", "model.test_on_batch(x_batch, y_batch)") == [
        "parity: no step on each batch through model.train_on_batch( or train_function("]
    early = "    weights, x_parity"
    assert problems("parity", early, "    model.train_on_batch(x_parity[0], y_parity[0])\n" + early) == [
        "parity: no check that the step has not run before its first parity step",
        "parity: the dropout is switched off after the step has run (its trace keeps it)"]
    retyped = problems("parity", "        loss = model.train_on_batch(x_batch, y_batch)",
                       "        with tf.GradientTape() as tape:\n"
                       "            loss = model.loss(y_batch, model(x_batch, training=True))\n"
                       "        model.train_on_batch(x_batch, y_batch)")
    assert len(retyped) == 2 and "GradientTape" in retyped[0] and "model(x_batch" in retyped[1], retyped


# Copies of Keras notebooks whose compiled step differs from the original's: each must fail parity.
# name: (framework, benchmark, old, new, words in the message)
MUTANTS = {
    "keras-tensorflow-learning-rate-doubled": (
        "keras-tensorflow", "cifar",
        "keras.optimizers.SGD(learning_rate=params.CNN_LR,", "keras.optimizers.SGD(learning_rate=2 * params.CNN_LR,",
        ["weights after step 1 differ by"]),
    "keras-jax-adam-epsilon-as-keras-has-it": (
        "keras-jax", "imdb",
        "        self.epsilon = self.epsilon_on_v_hat * ops.sqrt(",
        "        self.epsilon_unused = self.epsilon_on_v_hat * ops.sqrt(",  # Keras' epsilon, on sqrt(v)
        ["weights after step 1 differ by"]),
    # The parity steps through a train function of their own, not the one fit runs: stopped.
    "keras-tensorflow-step-rebuilt-for-parity": (
        "keras-tensorflow", "cifar",
        "    losses = []\n", "    model.make_train_function(force=True)\n    losses = []\n",
        ["not equivalent: the parity run failed", "AssertionError"]),
}


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(MUTANTS))
def test_a_keras_step_that_differs_fails_parity(name, tmp_path):
    from harness import parity

    source, benchmark, old, new, expected = MUTANTS[name]
    result = parity.check(_mutant(tmp_path, benchmark, old, new, name, source), benchmark, tmp_path)
    assert result["status"] != "unavailable", result["message"]
    assert result["equivalent"] is False, result["message"]
    for words in expected:
        assert words in result["message"], result["message"]
