"""The conversions between the canonical weight layout and each framework's own, written once.

Every notebook's parity step has a ``canonical_layout``: for each canonical array
(``common/canonical.py``), the framework's variable that holds it and the
:class:`Conversion` between the two layouts. A conversion is a pair of NumPy
functions, ``to_framework`` (canonical array -> the variable's value) and
``to_canonical`` (the variable's value -> canonical array), each the other's
inverse; ``tests/test_layouts.py`` checks that for every one below. ``to_canonical``
always returns new memory, never a view of the variable it reads (PyTorch's
``tensor.numpy()`` on the CPU is such a view).

Which framework needs which, and why, is in docs/parity.md#layouts.
"""
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from common import params

# The CNN's last feature maps, the input of fc1: channels x rows x columns.
_MAPS = (params.CNN_CHANNELS[1], 8, 8)


class Conversion(NamedTuple):
    """Canonical array <-> a framework variable's value; ``current`` is the variable's value now,
    needed only where one variable holds more than one canonical array (:func:`stacked_row`)."""
    name: str
    forward: Callable
    backward: Callable
    needs_current: bool = False

    def to_framework(self, array: np.ndarray, current: Optional[np.ndarray] = None):
        if self.needs_current:
            if current is None:
                raise ValueError(f"the conversion {self.name} writes one row of a stacked variable: "
                                 "pass the variable's current value as `current`")
            return self.forward(array, np.asarray(current))
        return self.forward(array)

    def to_canonical(self, value) -> np.ndarray:
        return self.backward(value)


def _same(array):  # a copy: a value read out must not change when the variable does
    return np.array(array, copy=True)


def _transpose(array):
    return np.ascontiguousarray(np.asarray(array).T)


def _gates(array):  # the three gates stacked along the last axis
    return np.split(np.asarray(array), 3, axis=-1)


def _swap_reset_update(array):
    reset, update, new = _gates(array)
    return np.concatenate([update, reset, new], axis=-1)


def _fc1_to_channels_last(weight):  # rows (channel, row, column) -> (row, column, channel)
    channels, rows, columns = _MAPS
    moved = np.asarray(weight).reshape(channels, rows, columns, -1).transpose(1, 2, 0, 3)
    return np.ascontiguousarray(moved.reshape(channels * rows * columns, -1))


def _fc1_to_channels_first(weight):  # rows (row, column, channel) -> (channel, row, column)
    channels, rows, columns = _MAPS
    moved = np.asarray(weight).reshape(rows, columns, channels, -1).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(moved.reshape(channels * rows * columns, -1))


# The same array in both layouts.
AS_IS = Conversion("as_is", _same, _same)

# A matrix stored out x in (the canonical one is in x out): PyTorch's nn.Linear and GRU weights,
# Chainer's, MXNet's and Gluon's dense and GRU weights.
TRANSPOSED = Conversion("transposed", _transpose, _transpose)

# A convolution kernel stored rows x columns x in x out (Keras, Flax); canonical: out x in x rows x columns.
CONV_HWIO = Conversion("conv_hwio", lambda k: np.ascontiguousarray(np.asarray(k).transpose(2, 3, 1, 0)),
                       lambda k: np.ascontiguousarray(np.asarray(k).transpose(3, 2, 0, 1)))

# A kernel applied as a true convolution (Theano, so Lasagne): the canonical cross-correlation
# kernel rotated by 180 degrees. Its own inverse.
CONV_FLIPPED = Conversion("conv_flipped", lambda k: np.ascontiguousarray(np.asarray(k)[:, :, ::-1, ::-1]),
                          lambda k: np.ascontiguousarray(np.asarray(k)[:, :, ::-1, ::-1]))

# Both: a kernel stored rows x columns x in x out and applied as a true convolution (Keras 2 on
# Theano, whose conv2d keeps Theano's filter flip).
CONV_HWIO_FLIPPED = Conversion(
    "conv_hwio_flipped", lambda k: CONV_HWIO.to_framework(CONV_FLIPPED.to_framework(k)),
    lambda k: CONV_FLIPPED.to_canonical(CONV_HWIO.to_canonical(k)))

# fc1's 6,400 rows in the order of a channels-last flatten, (row, column, channel), where the
# canonical rows follow a channels-first one, (channel, row, column): Keras' Flatten, Flax.
FC1_CHANNELS_LAST = Conversion("fc1_channels_last", _fc1_to_channels_last, _fc1_to_channels_first)

# GRU gates stacked update, reset, new (Keras) where the canonical order is reset, update, new.
# Swapping the first two is its own inverse.
GATES_UPDATE_FIRST = Conversion("gates_update_first", _swap_reset_update, _swap_reset_update)


def stacked_row(row: int, conversion: Conversion = GATES_UPDATE_FIRST) -> Conversion:
    """One canonical array as row ``row`` of a stacked variable, converted by ``conversion``:
    Keras keeps a GRU's input and recurrent biases as the two rows of one (2, 3 x units) array."""
    def forward(array, current):
        value = np.array(current, copy=True)
        value[row] = conversion.to_framework(array)
        return value

    return Conversion(f"row {row} of a stack, {conversion.name}", forward,
                      lambda value: conversion.to_canonical(np.asarray(value)[row]), needs_current=True)


def gates_apart(conversion: Conversion = AS_IS) -> Conversion:
    """A stacked GRU array as three variables, one per gate in the canonical order, each converted
    by ``conversion`` (Chainer's NStepGRU keeps w0 ... w5 and b0 ... b5 apart)."""
    def forward(array) -> Sequence[np.ndarray]:
        return [conversion.to_framework(gate) for gate in _gates(array)]

    return Conversion(f"gates apart, {conversion.name}", forward,
                      lambda values: np.concatenate([conversion.to_canonical(v) for v in values], axis=-1))


CONVERSIONS = (AS_IS, TRANSPOSED, CONV_HWIO, CONV_FLIPPED, CONV_HWIO_FLIPPED, FC1_CHANNELS_LAST,
               GATES_UPDATE_FIRST)
