"""IMDB: where it comes from, how it is decoded, and the arrays the notebooks start from.

    from common import imdb
    x_train, y_train, x_test, y_test, provenance = imdb.imdb_for_library()

(The notebooks call it as ``data.imdb_for_library``.) Downloading, checksums, the array cache
and subsets are ``common.data``'s; this module knows the ``imdb.npz`` and Keras' numbering.
"""
import pickle
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from common import data, params
from common.benchmarks import BENCHMARKS

BENCHMARK = BENCHMARKS["imdb"]

IMDB = data.RemoteFile(
    name=BENCHMARK.what,
    url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz",
    filename="imdb.npz",
    known_hash="sha256:69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
    env_var=BENCHMARK.env_var,
    flag=BENCHMARK.option,
)


def _alias_numpy_core() -> None:
    """NumPy 2 pickles object arrays as ``numpy._core``; NumPy < 1.26 (Python 3.6 has at most
    1.19) names that module ``numpy.core``: alias it, as NumPy 1.26 itself does."""
    import numpy.core.multiarray  # noqa: F401 (what pickled arrays refer to)

    for name, module in list(sys.modules.items()):
        if name == "numpy.core" or name.startswith("numpy.core."):
            sys.modules.setdefault("numpy._core" + name[len("numpy.core"):], module)


def _imdb_source(source, cache) -> Tuple[Path, dict, str]:
    """The imdb.npz to read, its provenance, and the checksum that keys its cache."""
    path, provenance = data.resolve(IMDB, source, cache)
    if path.is_dir():
        path = path / IMDB.filename
        if not path.is_file():
            raise data.DataError(f"{path.parent} holds no {IMDB.filename}.")
    provenance["path"] = str(path.resolve())
    if provenance["source"] == "local copy":
        provenance["sha256"] = data.local_sha256("imdb", [path], cache)
        return path, provenance, "sha256:" + provenance["sha256"]
    return path, provenance, provenance["checksum"]


def _decode_imdb(path: Path, local: bool):
    """The four arrays of an imdb.npz: object arrays of word-index lists, and their labels."""
    if not hasattr(np, "_core"):
        _alias_numpy_core()
    try:
        # Open the file here: np.load leaves its own handle open when the zip is unreadable.
        with open(path, "rb") as f:
            archive = np.load(f, allow_pickle=True)
            if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file or a pickle
                raise data.DataError(f"{path} is not an .npz archive: an imdb.npz holds "
                                "x_train, y_train, x_test and y_test.")
            with archive:
                return tuple(archive[key] for key in ("x_train", "y_train", "x_test", "y_test"))
    except KeyError as error:
        raise data.DataError(f"{path} lacks the array {error}: an imdb.npz holds "
                        "x_train, y_train, x_test and y_test.") from error
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error, pickle.UnpicklingError) as error:
        raise data.DataError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}). "
                        + data.corrupt_advice(IMDB, local)) from error


def load_imdb(source=None, cache=None):
    """The raw ``imdb.npz`` arrays, (x_train, y_train, x_test, y_test, provenance): object arrays of
    word-index lists and their labels (decoded on every call: object arrays cannot be memory-mapped;
    :func:`imdb_for_library` gives the cached, numbered form)."""
    path, provenance, _ = _imdb_source(source, cache)
    arrays = _decode_imdb(path, provenance["source"] == "local copy")
    return (*arrays, provenance)


def number_reviews(reviews, vocab: int = params.IMDB_VOCAB, seq_len: int = params.IMDB_SEQ_LEN) -> np.ndarray:
    """Keras' numbering, then the last ``seq_len`` tokens, left-aligned, zero-padded right.

    Each review becomes [1 (start)] + [word + 3 ...], words at or beyond ``vocab``
    becoming 2 (out of vocabulary), exactly as ``keras.datasets.imdb.load_data``
    numbers them.
    """
    out = np.zeros((len(reviews), seq_len), dtype=np.int32)
    for row, words in enumerate(reviews):
        tokens = np.asarray(words, dtype=np.int64) + params.IMDB_INDEX_FROM
        tokens = np.concatenate([[params.IMDB_START], tokens])
        tokens[tokens >= vocab] = params.IMDB_OOV
        tokens = tokens[-seq_len:]
        out[row, : len(tokens)] = tokens
    return out


IMDB_ARRAYS = ["x_train", "y_train", "x_test", "y_test"]


def imdb_for_library(vocab: int = params.IMDB_VOCAB, seq_len: int = params.IMDB_SEQ_LEN,
                     source=None, cache=None):
    """IMDB as every notebook starts from it: int32 (N, seq_len) tokens, int64 labels.

    The order is Keras' (``load_data`` shuffles train, then test, with one
    ``RandomState(113)``), so ``x_train[0]`` is Keras' first review. From the array cache
    the arrays are memory-mapped (:func:`subset` makes in-memory copies).
    """
    path, provenance, checksum = _imdb_source(source, cache)

    def build():
        x_train, y_train, x_test, y_test = _decode_imdb(path, provenance["source"] == "local copy")
        rng = np.random.RandomState(params.IMDB_SHUFFLE_SEED)
        order = np.arange(len(x_train))
        rng.shuffle(order)
        x_train, y_train = x_train[order], y_train[order]
        order = np.arange(len(x_test))
        rng.shuffle(order)
        x_test, y_test = x_test[order], y_test[order]
        return {"x_train": number_reviews(x_train, vocab, seq_len), "y_train": np.asarray(y_train, dtype=np.int64),
                "x_test": number_reviews(x_test, vocab, seq_len), "y_test": np.asarray(y_test, dtype=np.int64)}

    arrays = data.cached_arrays("imdb", checksum, {"vocab": int(vocab), "seq_len": int(seq_len)}, IMDB_ARRAYS, build,
                                cache, about={"source": provenance["path"]},
                                copy=[path] if provenance["source"] == "local copy" else None)
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], provenance


# --- what common.data and common.parity ask of every data-set module --------------------

for_library = imdb_for_library


def arrays(source=None, cache=None):
    """The arrays the notebooks start from (``x_train``, ``x_test``...), decoded into the array
    cache, and their provenance: what ``data.prepare`` does before any notebook starts."""
    x_train, y_train, x_test, y_test, provenance = imdb_for_library(source=source, cache=cache)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}, provenance


def parity_batch(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """A batch of the parity check: reviews of every length from 20 tokens to the full 150,
    numbered as Keras numbers them, with some out-of-vocabulary words, and random labels."""
    x = np.zeros((size, params.IMDB_SEQ_LEN), dtype=np.int32)
    lengths = np.linspace(20, params.IMDB_SEQ_LEN, size).astype(int)  # short and full reviews
    for row, length in enumerate(lengths):
        tokens = rng.integers(params.IMDB_INDEX_FROM, params.IMDB_VOCAB, size=length)
        tokens[rng.random(length) < 0.05] = params.IMDB_OOV
        tokens[0] = params.IMDB_START
        x[row, :length] = tokens
    labels = rng.integers(0, params.GRU_CLASSES, size=size)
    return x, labels.astype(np.int64)
