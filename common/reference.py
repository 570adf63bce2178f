"""The NumPy float64 reference of both models: forward pass, gradient, optimiser steps.

Written from docs/design.md's definitions and nothing else, in the canonical layout
of ``common.canonical``, with dropout off (the parity check runs every model
that way). The gradients are a hand-written backward pass; the tests check them
against finite differences.

    logits = reference.forward("cnn", weights, x)
    loss, gradients = reference.loss_and_gradients("cnn", weights, x, labels)
    updated = reference.sgd_momentum_step(weights, gradients)   # the CNN's optimiser
    updated = reference.adam_step(weights, gradients)           # the GRU's optimiser
    losses, first, final = reference.train("gru", weights, xs, labels)  # a step on each batch in turn
"""
from typing import Iterator, List, Tuple

import numpy as np

try:
    from numpy.lib.stride_tricks import sliding_window_view
except ImportError:  # NumPy < 1.20 (Python 3.6 has at most 1.19): the same read-only view, by strides
    from numpy.lib.stride_tricks import as_strided

    def sliding_window_view(x, window_shape, axis):
        shape = list(x.shape)
        for a, size in zip(axis, window_shape):
            shape[a] -= size - 1
        strides = x.strides + tuple(x.strides[a] for a in axis)
        return as_strided(x, tuple(shape) + tuple(window_shape), strides, writeable=False)

from common import params

H = params.GRU_HIDDEN


def _f64(weights: dict) -> dict:
    return {name: np.asarray(value, dtype=np.float64) for name, value in weights.items()}


# --- layers -------------------------------------------------------------------------

def _conv_forward(x, kernel, bias):
    """3x3 cross-correlation, 'same' zero padding, stride 1; x is (N, C, H, W)."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = sliding_window_view(padded, (3, 3), axis=(2, 3))  # N, C, H, W, 3, 3
    out = np.einsum("nchwij,ocij->nohw", windows, kernel, optimize=True)
    return out + bias[None, :, None, None], windows


def _conv_backward(d_out, windows, kernel, shape):
    d_kernel = np.einsum("nchwij,nohw->ocij", windows, d_out, optimize=True)
    d_bias = d_out.sum(axis=(0, 2, 3))
    n, c, h, w = shape
    d_padded = np.zeros((n, c, h + 2, w + 2))
    for i in range(3):
        for j in range(3):
            d_padded[:, :, i:i + h, j:j + w] += np.einsum("nohw,oc->nchw", d_out, kernel[:, :, i, j],
                                                          optimize=True)
    return d_padded[:, :, 1:-1, 1:-1], d_kernel, d_bias


def _pool_forward(x):
    """2x2 max-pooling, stride 2; the gradient goes to the first maximum of each window."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    first = blocks.argmax(axis=-1)
    return np.take_along_axis(blocks, first[..., None], axis=-1)[..., 0], first


def _pool_backward(d_out, first, shape):
    n, c, h, w = shape
    d_blocks = np.zeros((n, c, h // 2, w // 2, 4))
    np.put_along_axis(d_blocks, first[..., None], d_out[..., None], axis=-1)
    return d_blocks.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)


def _softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -log_probabilities[np.arange(n), labels].mean()
    d_logits = np.exp(log_probabilities)
    d_logits[np.arange(n), labels] -= 1.0
    return loss, d_logits / n


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --- the CNN ------------------------------------------------------------------------

def _cnn(w, x):
    cache = {}
    a, cache["w1"] = _conv_forward(x, w["conv1.weight"], w["conv1.bias"])
    cache["a1"] = a
    a = np.maximum(a, 0)
    b, cache["w2"] = _conv_forward(a, w["conv2.weight"], w["conv2.bias"])
    cache["b_shape"] = b.shape
    p, cache["p1"] = _pool_forward(b)
    cache["p1_out"] = p
    p = np.maximum(p, 0)                      # dropout 0.25 is off
    c, cache["w3"] = _conv_forward(p, w["conv3.weight"], w["conv3.bias"])
    cache["c"] = c
    c = np.maximum(c, 0)
    d, cache["w4"] = _conv_forward(c, w["conv4.weight"], w["conv4.bias"])
    cache["d_shape"] = d.shape
    q, cache["p2"] = _pool_forward(d)
    cache["p2_out"] = q
    flat = np.maximum(q, 0).reshape(len(x), -1)  # channels-first flatten; dropout off
    cache["flat"] = flat
    e = flat @ w["fc1.weight"] + w["fc1.bias"]
    cache["e"] = e
    hidden = np.maximum(e, 0)                 # dropout 0.5 is off
    cache["hidden"] = hidden
    return hidden @ w["fc2.weight"] + w["fc2.bias"], cache


def _cnn_backward(w, x, cache, d_logits):
    g = {}
    g["fc2.weight"] = cache["hidden"].T @ d_logits
    g["fc2.bias"] = d_logits.sum(0)
    d_e = (d_logits @ w["fc2.weight"].T) * (cache["e"] > 0)
    g["fc1.weight"] = cache["flat"].T @ d_e
    g["fc1.bias"] = d_e.sum(0)
    d_q = (d_e @ w["fc1.weight"].T).reshape(cache["p2_out"].shape) * (cache["p2_out"] > 0)
    d_d = _pool_backward(d_q, cache["p2"], cache["d_shape"])
    d_c, g["conv4.weight"], g["conv4.bias"] = _conv_backward(d_d, cache["w4"], w["conv4.weight"], cache["c"].shape)
    d_c = d_c * (cache["c"] > 0)
    d_p, g["conv3.weight"], g["conv3.bias"] = _conv_backward(d_c, cache["w3"], w["conv3.weight"],
                                                             cache["p1_out"].shape)
    d_p = d_p * (cache["p1_out"] > 0)
    d_b = _pool_backward(d_p, cache["p1"], cache["b_shape"])
    d_a, g["conv2.weight"], g["conv2.bias"] = _conv_backward(d_b, cache["w2"], w["conv2.weight"], cache["a1"].shape)
    d_a = d_a * (cache["a1"] > 0)
    _, g["conv1.weight"], g["conv1.bias"] = _conv_backward(d_a, cache["w1"], w["conv1.weight"], x.shape)
    return g


# --- the GRU ------------------------------------------------------------------------

def _gru(w, tokens):
    embedded = w["embedding.weight"][tokens]           # N, T, E
    h = np.zeros((len(tokens), H))
    steps = []
    for t in range(tokens.shape[1]):
        x_t = embedded[:, t]
        gi = x_t @ w["gru.input_kernel"] + w["gru.input_bias"]
        gh = h @ w["gru.recurrent_kernel"] + w["gru.recurrent_bias"]
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        steps.append((x_t, h, r, z, n, gh[:, 2 * H:]))
        h = (1 - z) * n + z * h
    return h @ w["fc.weight"] + w["fc.bias"], {"steps": steps, "h": h}


def _gru_backward(w, tokens, cache, d_logits):
    g = {name: np.zeros_like(value) for name, value in w.items() if name != "embedding.weight"}
    g["fc.weight"] = cache["h"].T @ d_logits
    g["fc.bias"] = d_logits.sum(0)
    d_h = d_logits @ w["fc.weight"].T
    d_embedded = np.zeros(tokens.shape + (w["embedding.weight"].shape[1],))
    for t in reversed(range(tokens.shape[1])):
        x_t, h_prev, r, z, n, gh_n = cache["steps"][t]
        d_n = d_h * (1 - z) * (1 - n ** 2)
        d_z = d_h * (h_prev - n) * z * (1 - z)
        d_r = d_n * gh_n * r * (1 - r)
        d_gi = np.concatenate([d_r, d_z, d_n], axis=1)
        d_gh = np.concatenate([d_r, d_z, d_n * r], axis=1)
        g["gru.input_kernel"] += x_t.T @ d_gi
        g["gru.input_bias"] += d_gi.sum(0)
        g["gru.recurrent_kernel"] += h_prev.T @ d_gh
        g["gru.recurrent_bias"] += d_gh.sum(0)
        d_embedded[:, t] = d_gi @ w["gru.input_kernel"].T
        d_h = d_h * z + d_gh @ w["gru.recurrent_kernel"].T
    g["embedding.weight"] = np.zeros_like(w["embedding.weight"])
    np.add.at(g["embedding.weight"], tokens, d_embedded)
    return g


# --- the public functions -------------------------------------------------------------

_MODELS = {"cnn": (_cnn, _cnn_backward), "gru": (_gru, _gru_backward)}
_INPUTS = {"cnn": np.float64, "gru": np.int64}  # pixels, tokens


def _model(model: str):
    if model not in _MODELS:
        raise ValueError(f"model must be 'cnn' or 'gru', got {model!r}.")
    return _MODELS[model]


def forward(model: str, weights: dict, x: np.ndarray) -> np.ndarray:
    """float64 logits; x is (N, 3, 32, 32) pixels for the CNN, (N, T) tokens for the GRU."""
    run, _ = _model(model)
    inputs = np.asarray(x, dtype=_INPUTS[model])
    return run(_f64(weights), inputs)[0]


def loss_and_gradients(model: str, weights: dict, x: np.ndarray, labels: np.ndarray):
    """The mean softmax cross-entropy and its float64 gradient for every canonical array."""
    run, backward = _model(model)
    w = _f64(weights)
    inputs = np.asarray(x, dtype=_INPUTS[model])
    logits, cache = run(w, inputs)
    loss, d_logits = _softmax_cross_entropy(logits, np.asarray(labels, dtype=np.int64))
    return loss, backward(w, inputs, cache, d_logits)


class SGDMomentum:
    """SGD with momentum in PyTorch's form: v = momentum v + g; w = w - lr v (v starts at zero)."""

    def __init__(self, lr: float = params.CNN_LR, momentum: float = params.CNN_MOMENTUM):
        self.lr, self.momentum, self.velocity = lr, momentum, {}

    def step(self, weights: dict, gradients: dict) -> dict:
        updated = {}
        for name, value in weights.items():
            self.velocity[name] = self.momentum * self.velocity.get(name, 0.0) + gradients[name]
            updated[name] = np.asarray(value, np.float64) - self.lr * self.velocity[name]
        return updated


class Adam:
    """Adam as Kingma and Ba's algorithm 1 writes it: epsilon added to the root of v-hat, the
    bias corrections those of the step t being taken (t = 1, 2, ...)."""

    def __init__(self, lr: float = params.GRU_LR, betas=params.GRU_BETAS, epsilon: float = params.GRU_EPSILON):
        self.lr, (self.beta1, self.beta2), self.epsilon = lr, betas, epsilon
        self.t, self.m, self.v = 0, {}, {}

    def step(self, weights: dict, gradients: dict) -> dict:
        self.t += 1
        updated = {}
        for name, value in weights.items():
            g = gradients[name]
            self.m[name] = self.beta1 * self.m.get(name, 0.0) + (1 - self.beta1) * g
            self.v[name] = self.beta2 * self.v.get(name, 0.0) + (1 - self.beta2) * g * g
            m_hat = self.m[name] / (1 - self.beta1 ** self.t)
            v_hat = self.v[name] / (1 - self.beta2 ** self.t)
            updated[name] = np.asarray(value, np.float64) - self.lr * m_hat / (np.sqrt(v_hat) + self.epsilon)
        return updated


OPTIMISERS = {"cnn": SGDMomentum, "gru": Adam}


def sgd_momentum_step(weights: dict, gradients: dict, lr: float = params.CNN_LR,
                      momentum: float = params.CNN_MOMENTUM) -> dict:
    """The first step of SGD with momentum: v = g, w = w - lr * v."""
    return SGDMomentum(lr, momentum).step(weights, gradients)


def adam_step(weights: dict, gradients: dict, lr: float = params.GRU_LR, betas=params.GRU_BETAS,
              epsilon: float = params.GRU_EPSILON) -> dict:
    """The first step of Adam (Kingma and Ba, algorithm 1; epsilon added to the root of v-hat)."""
    return Adam(lr, betas, epsilon).step(weights, gradients)


STEPS = {"cnn": sgd_momentum_step, "gru": adam_step}


def one_step(model: str, weights: dict, x: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, float, dict]:
    """The reference's logits, loss and weights after one optimiser step on (x, labels)."""
    logits = forward(model, weights, x)
    loss, gradients = loss_and_gradients(model, weights, x, labels)
    return logits, loss, STEPS[model](weights, gradients)


def steps(model: str, weights: dict, xs: np.ndarray, labels: np.ndarray) -> Iterator[Tuple[float, dict]]:
    """One optimiser step on each batch ``xs[t], labels[t]`` in turn, from ``weights``, with the
    model's optimiser: yields the loss before each step and the weights after it."""
    optimiser = OPTIMISERS[model]()
    current = _f64(weights)
    for x, y in zip(xs, labels):
        loss, gradients = loss_and_gradients(model, current, x, y)
        current = optimiser.step(current, gradients)
        yield float(loss), current


def train(model: str, weights: dict, xs: np.ndarray, labels: np.ndarray) -> Tuple[List[float], dict, dict]:
    """:func:`steps` run through: every step's loss, and the weights after the first step and after
    the last (only those two are kept: 20 GRU steps hold 3.8 million float64 weights each)."""
    losses, first, final = [], None, None
    for loss, after in steps(model, weights, xs, labels):
        losses.append(loss)
        first = after if first is None else first
        final = after
    return losses, first, final
