"""common.layouts: each conversion is its inverse's inverse and means what its framework computes."""
import numpy as np
import pytest

from common import canonical, layouts

RNG = np.random.default_rng(7)
CNN = canonical.LAYOUTS["cnn"]
GRU = canonical.LAYOUTS["gru"]


def _random(shape):
    return RNG.standard_normal(shape).astype(np.float32)


# Every conversion, with the canonical arrays it is used on.
CASES = [(layouts.AS_IS, CNN["fc2.weight"]), (layouts.TRANSPOSED, CNN["fc1.weight"]),
         (layouts.TRANSPOSED, GRU["gru.input_kernel"]), (layouts.CONV_HWIO, CNN["conv2.weight"]),
         (layouts.CONV_FLIPPED, CNN["conv3.weight"]), (layouts.CONV_HWIO_FLIPPED, CNN["conv4.weight"]),
         (layouts.FC1_CHANNELS_LAST, CNN["fc1.weight"]),
         (layouts.GATES_UPDATE_FIRST, GRU["gru.recurrent_kernel"]), (layouts.GATES_UPDATE_FIRST, GRU["gru.input_bias"]),
         (layouts.gates_apart(layouts.TRANSPOSED), GRU["gru.input_kernel"]), (layouts.gates_apart(), GRU["gru.input_bias"])]


@pytest.mark.parametrize("conversion, shape", CASES, ids=[f"{c.name}-{s}" for c, s in CASES])
def test_a_conversion_round_trips(conversion, shape):
    array = _random(shape)
    back = conversion.to_canonical(conversion.to_framework(array))
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_every_named_conversion_is_tested():
    assert set(layouts.CONVERSIONS) <= {c for c, _ in CASES}


def test_transposed_is_a_dense_layer_kept_out_by_in():
    weight, x = _random((6400, 512)), _random((3, 6400))
    stored = layouts.TRANSPOSED.to_framework(weight)
    assert stored.shape == (512, 6400) and stored.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(stored.T, weight)


def test_conv_hwio_is_rows_columns_in_out():
    kernel = _random((50, 3, 3, 3))
    stored = layouts.CONV_HWIO.to_framework(kernel)
    assert stored.shape == (3, 3, 3, 50)
    assert stored[1, 2, 0, 7] == kernel[7, 0, 1, 2]


def _cross_correlate(image, kernel):  # image in x H x W, kernel out x in x 3 x 3, 'valid'
    out = np.zeros((kernel.shape[0], image.shape[1] - 2, image.shape[2] - 2))
    for i in range(3):
        for j in range(3):
            out += np.einsum("oc,chw->ohw", kernel[:, :, i, j], image[:, i:i + out.shape[1], j:j + out.shape[2]])
    return out


def _convolve(image, kernel):  # a true convolution, as Theano computes it
    out = np.zeros((kernel.shape[0], image.shape[1] - 2, image.shape[2] - 2))
    for i in range(3):
        for j in range(3):
            out += np.einsum("oc,chw->ohw", kernel[:, :, 2 - i, 2 - j], image[:, i:i + out.shape[1], j:j + out.shape[2]])
    return out


def test_a_flipped_kernel_convolved_is_the_canonical_kernel_cross_correlated():
    kernel, image = _random((4, 3, 3, 3)), _random((3, 6, 6))
    np.testing.assert_allclose(_convolve(image, layouts.CONV_FLIPPED.to_framework(kernel)),
                               _cross_correlate(image, kernel), rtol=1e-5, atol=1e-5)
    assert not np.allclose(_convolve(image, kernel), _cross_correlate(image, kernel))  # the flip matters


def test_fc1_channels_last_computes_the_same_layer_on_a_channels_last_flatten():
    maps, weight = _random((2, 100, 8, 8)).astype(np.float64), _random((6400, 512)).astype(np.float64)
    channels_first = maps.reshape(2, -1)  # (channel, row, column): the canonical rows
    channels_last = maps.transpose(0, 2, 3, 1).reshape(2, -1)  # (row, column, channel): Keras' Flatten, Flax
    np.testing.assert_allclose(channels_last @ layouts.FC1_CHANNELS_LAST.to_framework(weight),
                               channels_first @ weight, rtol=1e-9, atol=1e-9)
    assert not np.allclose(channels_last @ weight, channels_first @ weight, atol=1e-2)


def test_gates_update_first_puts_the_update_gate_first():
    kernel = _random((125, 300))
    stored = layouts.GATES_UPDATE_FIRST.to_framework(kernel)
    np.testing.assert_array_equal(stored[:, :100], kernel[:, 100:200])  # update
    np.testing.assert_array_equal(stored[:, 100:200], kernel[:, :100])  # reset
    np.testing.assert_array_equal(stored[:, 200:], kernel[:, 200:])  # new


def test_a_stacked_row_writes_its_row_and_keeps_the_other():
    current = _random((2, 300))
    before, bias = current.copy(), _random((300,))
    value = layouts.stacked_row(1).to_framework(bias, current=current)
    np.testing.assert_array_equal(value[0], current[0])
    np.testing.assert_array_equal(value[1], layouts.GATES_UPDATE_FIRST.to_framework(bias))
    np.testing.assert_array_equal(layouts.stacked_row(1).to_canonical(value), bias)
    np.testing.assert_array_equal(current, before)  # a new value: the one given is not written to
    with pytest.raises(ValueError, match="current"):
        layouts.stacked_row(0).to_framework(bias)


def test_gates_apart_gives_one_array_per_gate_in_the_canonical_order():
    kernel = _random((125, 300))
    reset, update, new = layouts.gates_apart(layouts.TRANSPOSED).to_framework(kernel)
    assert reset.shape == (100, 125)
    np.testing.assert_array_equal(update, kernel[:, 100:200].T)
    np.testing.assert_array_equal(new, kernel[:, 200:].T)


@pytest.mark.parametrize("conversion, shape", CASES, ids=[f"{c.name}-{s}" for c, s in CASES])
def test_a_value_read_out_is_a_copy_not_a_view_of_the_variable(conversion, shape):
    """PyTorch's tensor.numpy() shares the tensor's memory: what to_canonical returns must not change
    when the framework's optimiser later writes the variable in place."""
    stored = conversion.to_framework(_random(shape))
    read = conversion.to_canonical(stored)
    for part in stored if isinstance(stored, list) else [stored]:
        assert not np.shares_memory(read, part)
