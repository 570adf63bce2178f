"""The canonical weight layout of each model, and seeded initial weights in it.

One ``.npz`` per model: every array named below, float32, in the shape given.
Notebooks convert between this layout and their framework's own.

CNN (a conv kernel is out-channels x in-channels x 3 x 3 and is applied as a
cross-correlation; a dense kernel is in x out, applied as ``x @ kernel + bias``;
``fc1.weight``'s 6,400 rows are the flattened (channel, row, column) positions,
channel slowest, the order of a channels-first flatten):

    conv1.weight (50, 3, 3, 3)     conv1.bias (50,)
    conv2.weight (50, 50, 3, 3)    conv2.bias (50,)
    conv3.weight (100, 50, 3, 3)   conv3.bias (100,)
    conv4.weight (100, 100, 3, 3)  conv4.bias (100,)
    fc1.weight (6400, 512)         fc1.bias (512,)
    fc2.weight (512, 10)           fc2.bias (10,)

GRU (the cuDNN form; each gate kernel is in x out; the three gates are stacked
along the last axis in the order reset, update, new: columns 0-99 reset, 100-199
update, 200-299 new):

    embedding.weight (30000, 125)  row i embeds token i
    gru.input_kernel (125, 300)    gru.input_bias (300,)
    gru.recurrent_kernel (100, 300) gru.recurrent_bias (300,)
    fc.weight (100, 2)             fc.bias (2,)

    r = sigmoid(x Wi_r + bi_r + h Wh_r + bh_r)
    z = sigmoid(x Wi_z + bi_z + h Wh_z + bh_z)
    n = tanh(x Wi_n + bi_n + r * (h Wh_n + bh_n))     # reset gate after the recurrent product
    h = (1 - z) * n + z * h                            # h starts at zero

Initial weights are Glorot-uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)):
fans are in x 9 and out x 9 for a conv kernel, the two dimensions of any other
matrix (the stacked gate kernels included, as frameworks compute them).
Biases are zero for training; parity weights draw them from U(-0.1, 0.1) too,
so that where each bias enters the model is checked as well.
"""
import os
from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np

from common import params

LAYOUTS: Dict[str, Dict[str, Tuple[int, ...]]] = {
    "cnn": {
        "conv1.weight": (50, 3, 3, 3), "conv1.bias": (50,),
        "conv2.weight": (50, 50, 3, 3), "conv2.bias": (50,),
        "conv3.weight": (100, 50, 3, 3), "conv3.bias": (100,),
        "conv4.weight": (100, 100, 3, 3), "conv4.bias": (100,),
        "fc1.weight": (6400, 512), "fc1.bias": (512,),
        "fc2.weight": (512, 10), "fc2.bias": (10,),
    },
    "gru": {
        "embedding.weight": (params.IMDB_VOCAB, params.GRU_EMBEDDING),
        "gru.input_kernel": (params.GRU_EMBEDDING, 3 * params.GRU_HIDDEN),
        "gru.input_bias": (3 * params.GRU_HIDDEN,),
        "gru.recurrent_kernel": (params.GRU_HIDDEN, 3 * params.GRU_HIDDEN),
        "gru.recurrent_bias": (3 * params.GRU_HIDDEN,),
        "fc.weight": (params.GRU_HIDDEN, params.GRU_CLASSES), "fc.bias": (params.GRU_CLASSES,),
    },
}
GATES = ("reset", "update", "new")


def _check_model(model: str) -> dict:
    if model not in LAYOUTS:
        raise ValueError(f"model must be one of {sorted(LAYOUTS)}, got {model!r}.")
    return LAYOUTS[model]


def parameter_count(model: str) -> int:
    return sum(int(np.prod(shape)) for shape in _check_model(model).values())


def glorot_limit(shape: Tuple[int, ...]) -> float:
    if len(shape) == 4:  # conv: out x in x kh x kw
        receptive = shape[2] * shape[3]
        fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    else:
        fan_in, fan_out = shape
    return float(np.sqrt(6.0 / (fan_in + fan_out)))


def initial_weights(model: str, seed: int, bias_scale: float = 0.0) -> Dict[str, np.ndarray]:
    """Glorot-uniform weights in the canonical layout; biases U(-bias_scale, bias_scale)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in _check_model(model).items():
        limit = bias_scale if len(shape) == 1 else glorot_limit(shape)
        weights[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32) if limit else \
            np.zeros(shape, np.float32)
    return weights


def check(model: str, weights: dict, where: str = "weights") -> Dict[str, np.ndarray]:
    """The canonical arrays of ``weights`` as float32, or a ValueError naming what is wrong."""
    layout = _check_model(model)
    missing = [n for n in layout if n not in weights]
    extra = [n for n in weights if n not in layout]
    if missing or extra:
        raise ValueError(f"{where}: not the canonical {model} layout "
                         f"(missing {missing or 'none'}, unexpected {extra or 'none'}).")
    for name, shape in layout.items():
        if tuple(np.shape(weights[name])) != shape:
            raise ValueError(f"{where}: {name} has shape {tuple(np.shape(weights[name]))}, "
                             f"the canonical layout has {shape}.")
    return {name: np.asarray(weights[name], dtype=np.float32) for name in layout}


def save(path: Union[str, os.PathLike], model: str, weights: dict, **extra) -> Path:
    """Writes canonical ``weights`` (checked) and ``extra`` arrays to one .npz."""
    checked = check(model, weights, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"weights/{n}": a for n, a in checked.items()}, **extra)
    return path


def load(path: Union[str, os.PathLike], model: str) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """The canonical weights and the other arrays of a file written by :func:`save`."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    weights = {k[len("weights/"):]: v for k, v in arrays.items() if k.startswith("weights/")}
    others = {k: v for k, v in arrays.items() if not k.startswith("weights/")}
    return check(model, weights, str(path)), others


assert parameter_count("cnn") == params.CNN_PARAMETERS
assert parameter_count("gru") == params.GRU_PARAMETERS
