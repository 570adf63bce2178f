"""common.parity without a kernel: the comparison over several steps and the initialisation check."""
import numpy as np
import pytest

from common import canonical, parity, reference


def _outputs(tmp_path, model, optimiser=None, initial=None, dropout=None):
    """Writes the reference's own outputs (with ``optimiser`` in place of the model's) and returns
    the inputs and outputs paths."""
    inputs = parity.write_inputs(tmp_path / "inputs.npz", model)
    weights, xs, labels = parity.read_inputs(inputs, model)
    saved = reference.OPTIMISERS[model]
    if optimiser:
        reference.OPTIMISERS[model] = optimiser
    try:
        losses, first, final = reference.train(model, weights, xs, labels)
    finally:
        reference.OPTIMISERS[model] = saved
    f32 = lambda w: {n: v.astype(np.float32) for n, v in w.items()}  # noqa: E731
    initial = initial if initial is not None else canonical.initial_weights(model, seed=3)
    outputs = parity.write_outputs(tmp_path / "outputs.npz", model, reference.forward(model, weights, xs[0]),
                                   losses, f32(first), f32(final), initial,
                                   parity.DROPOUT[model] if dropout is None else dropout, versions={})
    return inputs, outputs


class DampenedMomentum(reference.SGDMomentum):
    """PyTorch's SGD with dampening 0.1: the first step is the same, the later ones are not."""

    def step(self, weights, gradients):
        if not self.velocity:
            return super().step(weights, gradients)
        return super().step(weights, {n: 0.9 * g for n, g in gradients.items()})


class EpsilonKeptAtStepOne(reference.Adam):
    """Adam whose epsilon conversion (to the uncorrected second moment's root) keeps t = 1."""

    def step(self, weights, gradients):
        saved, t = self.epsilon, self.t + 1
        self.epsilon = saved * np.sqrt(1 - self.beta2) / np.sqrt(1 - self.beta2 ** t)
        try:
            return super().step(weights, gradients)
        finally:
            self.epsilon = saved


def test_inputs_hold_a_batch_for_every_step():
    for model in ("cnn", "gru"):
        inputs = parity.make_inputs(model)
        assert inputs["x"].shape[:2] == (parity.STEPS[model], parity.BATCH)
        assert inputs["labels"].shape == (parity.STEPS[model], parity.BATCH)
        assert not np.array_equal(inputs["x"][0], inputs["x"][1])


@pytest.mark.parametrize("model", ["cnn", "gru"])
def test_the_reference_against_itself_is_equivalent(model, tmp_path):
    result = parity.compare(model, *_outputs(tmp_path, model))
    assert result["equivalent"], result["message"]
    assert result["steps"] == parity.STEPS[model] and len(result["losses"]) == parity.STEPS[model]
    assert f"after {parity.STEPS[model]} steps" in result["message"]


@pytest.mark.parametrize("model, optimiser", [("cnn", DampenedMomentum), ("gru", EpsilonKeptAtStepOne)])
def test_an_optimiser_right_at_step_one_only_fails_at_the_last_step(model, optimiser, tmp_path):
    result = parity.compare(model, *_outputs(tmp_path, model, optimiser))
    verdicts = {c["output"]: c["ok"] for c in result["checks"]}
    assert verdicts["logits"] and verdicts["loss"] and verdicts["weights"]  # the first step agrees
    assert not verdicts["final_weights"], result["message"]
    assert "weights after the last step differ by" in result["message"]


def test_pytorchs_default_gru_initialisation_is_not_the_designs(tmp_path):
    rng = np.random.default_rng(0)
    initial = canonical.initial_weights("gru", seed=5)
    for name in ("gru.input_kernel", "gru.recurrent_kernel", "gru.input_bias", "gru.recurrent_bias"):
        initial[name] = rng.uniform(-0.1, 0.1, size=initial[name].shape).astype(np.float32)  # U(+-1/sqrt(100))
    check = parity.check_initial("gru", initial)
    assert not check["ok"]
    assert any("gru.input_bias is not zero" in p for p in check["problems"])
    assert any("gru.input_kernel's standard deviation" in p for p in check["problems"])


def test_glorot_weights_pass_and_one_past_the_limit_fails():
    initial = canonical.initial_weights("cnn", seed=11)
    assert parity.check_initial("cnn", initial)["ok"]
    initial["conv1.weight"][0, 0, 0, 0] = 1.01 * canonical.glorot_limit((50, 3, 3, 3))
    problems = parity.check_initial("cnn", initial)["problems"]
    assert len(problems) == 1 and "past the Glorot limit" in problems[0]


def test_the_initial_bound_allows_for_small_arrays():
    assert parity.initial_bound(200) == pytest.approx(5 * np.sqrt(0.2 / 200))  # fc.weight: 100 x 2
    assert parity.initial_bound(3_750_000) == parity.TOLERANCES["initial"]


def test_outputs_without_a_loss_per_step_are_rejected(tmp_path):
    inputs, outputs = _outputs(tmp_path, "gru")
    data = dict(np.load(outputs))
    data["losses"] = data["losses"][:3]
    np.savez(outputs, **data)
    with pytest.raises(ValueError, match="3 losses, expected one for each of the 20 steps"):
        parity.compare("gru", inputs, outputs)


def test_the_dropout_rates_are_the_designs_site_by_site():
    assert parity.check_dropout("cnn", [0.25, 0.25, 0.5])["ok"]
    assert parity.check_dropout("gru", [])["ok"] and parity.check_dropout("gru", [0.0])["ok"]  # a rate of 0 drops nothing
    swapped = parity.check_dropout("cnn", [0.5, 0.25, 0.25])
    assert not swapped["ok"] and swapped["max_abs_difference"] == pytest.approx(0.25)
    missing = parity.check_dropout("cnn", [0.25, 0.25])
    assert not missing["ok"] and "[0.25, 0.25], the design's [0.25, 0.25, 0.5]" in missing["problems"][0]
    assert not parity.check_dropout("gru", [0.2])["ok"]


def test_a_dropout_rate_off_the_design_fails_the_comparison(tmp_path):
    result = parity.compare("gru", *_outputs(tmp_path, "gru", dropout=[0.5]))
    assert not result["equivalent"]
    assert "the dropout differs: the rates in training mode are [0.5], the design's none" in result["message"]
