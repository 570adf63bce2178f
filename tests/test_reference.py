"""The canonical layout and the NumPy float64 reference, checked without any framework."""
import numpy as np
import pytest

from common import canonical, params, parity, reference


def test_layouts_have_the_design_parameter_counts():
    # summed from the shapes of the layout, not read from a constant
    assert sum(int(np.prod(s)) for s in canonical.LAYOUTS["cnn"].values()) == 3_441_592
    assert sum(int(np.prod(s)) for s in canonical.LAYOUTS["gru"].values()) == 3_818_302


def test_initial_weights_are_glorot_uniform_with_zero_biases():
    weights = canonical.initial_weights("cnn", seed=3)
    assert weights["conv1.bias"].dtype == np.float32 and not weights["conv1.bias"].any()
    limit = np.sqrt(6 / (3 * 9 + 50 * 9))
    assert np.abs(weights["conv1.weight"]).max() <= limit
    assert np.abs(weights["conv1.weight"]).max() > 0.95 * limit
    fc1 = weights["fc1.weight"]
    assert abs(fc1.std() - np.sqrt(6 / (6400 + 512)) / np.sqrt(3)) < 1e-3  # variance of U(-a, a) is a²/3
    again = canonical.initial_weights("cnn", seed=3)
    assert all(np.array_equal(weights[k], again[k]) for k in weights)


def test_check_names_what_is_wrong():
    weights = canonical.initial_weights("gru", seed=0)
    weights["gru.input_kernel"] = weights["gru.input_kernel"].T
    with pytest.raises(ValueError, match=r"gru.input_kernel has shape \(300, 125\)"):
        canonical.check("gru", weights)
    del weights["fc.bias"]
    with pytest.raises(ValueError, match="missing.*fc.bias"):
        canonical.check("gru", weights)


def _loss(model, weights, x, labels) -> float:
    """The mean softmax cross-entropy of the reference's logits, written out here (a forward pass
    only: the shifted losses of a finite difference need no gradients)."""
    logits = reference.forward(model, weights, x)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def _finite_difference_check(model, x, labels, coordinates=3):
    weights = {k: v.astype(np.float64) for k, v in canonical.initial_weights(model, 5, bias_scale=0.1).items()}
    loss, gradients = reference.loss_and_gradients(model, weights, x, labels)
    assert loss == pytest.approx(_loss(model, weights, x, labels), rel=1e-12)  # the loss differentiated
    rng = np.random.default_rng(0)
    for name, value in weights.items():
        for _ in range(coordinates):
            if name == "embedding.weight":  # only rows of tokens in the batch have gradients
                index = (int(x[rng.integers(len(x)), rng.integers(x.shape[1])]), int(rng.integers(value.shape[1])))
            else:
                index = tuple(int(rng.integers(n)) for n in value.shape)
            shifted = []
            for sign in (1, -1):
                changed = dict(weights)
                changed[name] = value.copy()
                changed[name][index] += sign * 1e-6
                shifted.append(_loss(model, changed, x, labels))
            numeric = (shifted[0] - shifted[1]) / 2e-6
            assert gradients[name][index] == pytest.approx(numeric, rel=1e-4, abs=1e-9), (name, index)


def test_cnn_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    _finite_difference_check("cnn", rng.uniform(0, 1, (2, 3, 32, 32)), rng.integers(0, 10, 2))


def test_gru_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 200, (3, 12))
    tokens[0, 8:] = 0  # right padding
    _finite_difference_check("gru", tokens, np.array([0, 1, 1]))


def test_gru_applies_the_reset_gate_after_the_recurrent_product():
    """One step from h = 0 by hand: n = tanh(x Wi_n + bi_n + r * bh_n), h = (1 - z) n."""
    weights = canonical.initial_weights("gru", 9, bias_scale=0.5)
    tokens = np.array([[7]])
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    x = w["embedding.weight"][7]
    gi = x @ w["gru.input_kernel"] + w["gru.input_bias"]
    bh = w["gru.recurrent_bias"]
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    r, z = sigmoid(gi[:100] + bh[:100]), sigmoid(gi[100:200] + bh[100:200])
    h = (1 - z) * np.tanh(gi[200:] + r * bh[200:])
    expected = h @ w["fc.weight"] + w["fc.bias"]
    assert np.allclose(reference.forward("gru", weights, tokens)[0], expected, rtol=1e-12)


def test_cnn_forward_by_hand_on_a_constant_image():
    """Zero kernels except the biases: every layer's output is a known constant."""
    weights = {k: np.zeros_like(v) for k, v in canonical.initial_weights("cnn", 0).items()}
    weights["fc2.bias"] = np.arange(10, dtype=np.float32)
    logits = reference.forward("cnn", weights, np.ones((1, 3, 32, 32)))
    assert np.array_equal(logits[0], np.arange(10))


def test_optimiser_first_steps():
    w = {"a": np.array([1.0, 2.0, 3.0])}
    g = {"a": np.array([0.5, -2.0, 0.0])}
    assert np.allclose(reference.sgd_momentum_step(w, g)["a"], [1.0 - 0.005, 2.0 + 0.02, 3.0])
    adam = reference.adam_step(w, g)["a"]
    assert np.allclose(adam, [1.0 - 1e-3 * 0.5 / (0.5 + 1e-8), 2.0 + 1e-3 * 2.0 / (2.0 + 1e-8), 3.0])


def test_later_steps_carry_the_optimiser_state():
    w = {"a": np.array([1.0, 2.0])}
    g = {"a": np.array([0.5, -2.0])}
    sgd = reference.SGDMomentum(lr=0.1, momentum=0.9)
    w1 = sgd.step(w, g)
    w2 = sgd.step(w1, g)
    assert np.allclose(w2["a"], w1["a"] - 0.1 * (0.9 * g["a"] + g["a"]))  # v = 0.9 v + g
    adam = reference.Adam(lr=0.01, betas=(0.9, 0.999), epsilon=1e-8)
    a1 = adam.step(w, g)
    a2 = adam.step(a1, {"a": np.array([0.1, 1.0])})
    m = 0.9 * 0.1 * g["a"] + 0.1 * np.array([0.1, 1.0])
    v = 0.999 * 0.001 * g["a"] ** 2 + 0.001 * np.array([0.1, 1.0]) ** 2
    expected = a1["a"] - 0.01 * (m / (1 - 0.9 ** 2)) / (np.sqrt(v / (1 - 0.999 ** 2)) + 1e-8)
    assert adam.t == 2 and np.allclose(a2["a"], expected, rtol=1e-12)


def test_train_takes_one_step_per_batch_and_its_first_is_one_step():
    inputs = parity.make_inputs("gru")
    losses, after = zip(*reference.steps("gru", inputs["weights"], inputs["x"][:3], inputs["labels"][:3]))
    assert len(losses) == len(after) == 3
    kept = reference.train("gru", inputs["weights"], inputs["x"][:3], inputs["labels"][:3])
    assert kept[0] == list(losses)
    assert all(np.array_equal(kept[1][n], after[0][n]) and np.array_equal(kept[2][n], after[-1][n]) for n in after[0])
    _, loss, updated = reference.one_step("gru", inputs["weights"], inputs["x"][0], inputs["labels"][0])
    assert losses[0] == pytest.approx(loss, rel=1e-12)
    assert all(np.array_equal(after[0][n], updated[n]) for n in updated)
    assert not np.allclose(after[1]["fc.bias"], after[0]["fc.bias"])


def test_compare_accepts_the_reference_in_float32_and_names_a_difference(tmp_path):
    inputs = parity.write_inputs(tmp_path / "in.npz", "cnn")
    weights, xs, labels = parity.read_inputs(inputs, "cnn")
    logits = reference.forward("cnn", weights, xs[0])
    losses, first, final = reference.train("cnn", weights, xs, labels)
    first, final = ({k: v.astype(np.float32) for k, v in w.items()} for w in (first, final))
    initial = canonical.initial_weights("cnn", 1)
    good = parity.write_outputs(tmp_path / "good.npz", "cnn", logits, losses, first, final, initial, parity.DROPOUT["cnn"])
    verdict = parity.compare("cnn", inputs, good)
    assert verdict["equivalent"], verdict["message"]
    logits_off = logits.copy()
    logits_off[3, 4] += 0.01
    first_off = dict(first, **{"conv2.bias": first["conv2.bias"] + 1e-4})
    bad = parity.write_outputs(tmp_path / "bad.npz", "cnn", logits_off, losses, first_off, final, initial, parity.DROPOUT["cnn"])
    verdict = parity.compare("cnn", inputs, bad)
    assert not verdict["equivalent"]
    assert "logits differ by 0.01" in verdict["message"]
    assert "weights after step 1 differ by 0.0001 (worst: conv2.bias)" in verdict["message"]
    assert "loss" not in verdict["message"]


def test_parity_inputs_are_fixed_and_exercise_padding():
    first, second = parity.make_inputs("gru"), parity.make_inputs("gru")
    assert np.array_equal(first["x"], second["x"])
    assert (first["x"][..., -1] == 0).any() and (first["x"][..., -1] != 0).any()  # short and full reviews
    assert first["x"].max() < params.IMDB_VOCAB and (first["x"] == params.IMDB_OOV).any()
    assert first["weights"]["gru.recurrent_bias"].any()  # non-zero biases, so their place is checked
