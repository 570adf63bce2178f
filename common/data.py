"""CIFAR-10 and IMDB: download, verify, cache, parse, and convert for a framework.

    from common import data
    x_train, y_train, x_test, y_test, provenance = data.cifar_for_library(channels_first=True)
    x_train, y_train, x_test, y_test, provenance = data.imdb_for_library()

Every loader returns the same five: training inputs and labels, test inputs and labels, and
where the data came from.

Where the data comes from, first match wins:
1. a local copy named by the ``source`` argument, or by the environment variable
   ``ROSETTA_CIFAR10`` (a ``cifar-10-python.tar.gz``, a ``cifar-10-batches-py``
   folder or a folder holding either) or ``ROSETTA_IMDB`` (an ``imdb.npz`` or a
   folder holding one);
2. the official archive in the cache folder (``cache_dir`` argument, else
   ``ROSETTA_DATA_DIR``, else the user cache folder ``~/.cache/dl-rosetta``),
   downloaded from the official URL on first use with a progress bar and
   verified against the official checksum. pooch writes the download to a
   temporary file and moves it into place only once its checksum matches, so a
   half-written file is never trusted; a cached file whose checksum no longer
   matches is downloaded again.

Every loader returns a ``provenance`` dict for the result record: whether the
data is the official archive or a named local copy, its path and SHA-256.
"""
import hashlib
import os
import pickle
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass  # on Python 3.6 (CNTK's env): the `dataclasses` backport
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from common import params


class DataError(RuntimeError):
    """A data set could not be obtained or read; the message says what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """An official archive: where it lives and the checksum it must have."""

    name: str
    url: str
    filename: str
    known_hash: str  # "md5:..." or "sha256:...", as pooch takes it
    env_var: str     # the variable that names a local copy instead
    flag: str        # the `rosetta` option that names one


def _corrupt_advice(remote: RemoteFile, local: bool) -> str:
    """What to do about an unreadable archive: a cached download can be fetched again, while
    a named local copy is the user's own, to be replaced rather than deleted."""
    if local:
        return (f"Replace it with a good copy, or name none ({remote.flag}, {remote.env_var}) "
                "to use the official download.")
    return (f"Delete it and run again to download a fresh copy, or point {remote.env_var} "
            f"({remote.flag}) at a good one.")


CIFAR10 = RemoteFile(
    name="CIFAR-10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    known_hash="md5:c58f30108f718f92721af3b95e74349a",
    env_var="ROSETTA_CIFAR10",
    flag="--cifar10",
)
IMDB = RemoteFile(
    name="IMDB",
    url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz",
    filename="imdb.npz",
    known_hash="sha256:69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
    env_var="ROSETTA_IMDB",
    flag="--imdb",
)

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_BATCH = "test_batch"


# --- where files live ---------------------------------------------------------------

def cache_dir(override: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The download cache: ``override``, else ``$ROSETTA_DATA_DIR``, else the user cache."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("ROSETTA_DATA_DIR"):
        return Path(os.environ["ROSETTA_DATA_DIR"]).expanduser()
    import pooch

    return Path(pooch.os_cache("dl-rosetta"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_matches(path: Path, known_hash: str) -> bool:
    algorithm, expected = known_hash.split(":", 1)
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == expected


def fetch(remote: RemoteFile, cache: Optional[Union[str, os.PathLike]] = None, progress: bool = True) -> Path:
    """The verified official archive in the cache, downloading it first if needed."""
    import pooch
    import requests

    folder = cache_dir(cache)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create the data cache folder {folder}: {error}. "
                        "Set ROSETTA_DATA_DIR (or --data-dir) to a writable folder.") from error
    target = folder / remote.filename
    if target.exists() and not _hash_matches(target, remote.known_hash):
        print(f"{target} does not match the official {remote.name} checksum; downloading it again.")
    try:
        path = pooch.retrieve(
            remote.url,
            known_hash=remote.known_hash,
            fname=remote.filename,
            path=folder,
            progressbar=progress,
        )
    except ValueError as error:  # pooch: the downloaded file's hash differs
        raise DataError(
            f"the {remote.name} download from {remote.url} does not match its official checksum "
            f"{remote.known_hash} ({error}); it was discarded. Try again later, or point "
            f"{remote.env_var} at a copy you trust."
        ) from error
    except (requests.exceptions.RequestException, OSError) as error:
        raise DataError(
            f"could not download {remote.name} from {remote.url}: {error}. Check the network, "
            f"or point {remote.env_var} at a local copy (see README, 'Data')."
        ) from error
    return Path(path)


def _resolve(remote: RemoteFile, source, cache) -> Tuple[Path, dict]:
    """The file or folder to read and its provenance for the record."""
    source = source or os.environ.get(remote.env_var) or None
    if source is None:
        path = fetch(remote, cache)
        return path, {"source": "official", "url": remote.url, "path": str(path),
                      "checksum": remote.known_hash}
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"the {remote.name} copy named by {remote.flag} or {remote.env_var}, {path}, "
                        "does not exist.")
    return path, {"source": "local copy", "path": str(path.resolve())}


# --- CIFAR-10 -----------------------------------------------------------------------

def _unpickle_batch(raw: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(raw, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as error:  # any failure here means the file is not a CIFAR batch
        raise DataError(f"{where} is not a CIFAR-10 batch ({type(error).__name__}: {error}).") from error
    if len(images) != len(labels):
        raise DataError(f"{where} holds {len(images)} images but {len(labels)} labels.")
    return images, labels


def _read_cifar_tarball(path: Path, local: bool = False) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    batches = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for name in CIFAR_TRAIN_BATCHES + [CIFAR_TEST_BATCH]:
                member = f"{CIFAR_FOLDER}/{name}"
                try:
                    raw = archive.extractfile(member).read()
                except KeyError:
                    raise DataError(f"{path} has no {member}: it is not a cifar-10-python.tar.gz.")
                batches[name] = _unpickle_batch(raw, f"{member} in {path}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}). "
                        + _corrupt_advice(CIFAR10, local)) from error
    return batches


def _read_cifar_folder(folder: Path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    batches = {}
    for name in CIFAR_TRAIN_BATCHES + [CIFAR_TEST_BATCH]:
        file = folder / name
        if not file.is_file():
            raise DataError(f"{folder} has no {name}: a {CIFAR_FOLDER} folder holds "
                            f"{', '.join(CIFAR_TRAIN_BATCHES)} and {CIFAR_TEST_BATCH}.")
        batches[name] = _unpickle_batch(file.read_bytes(), str(file))
    return batches


def _cifar_batches(path: Path, local: bool = False) -> Tuple[dict, Path]:
    if path.is_dir():
        if (path / CIFAR_FOLDER).is_dir():
            path = path / CIFAR_FOLDER
        elif (path / CIFAR10.filename).is_file():
            path = path / CIFAR10.filename
    if path.is_dir():
        return _read_cifar_folder(path), path
    return _read_cifar_tarball(path, local), path


def load_cifar10(source=None, cache=None):
    """Raw CIFAR-10: (x_train, y_train, x_test, y_test, provenance), uint8 images (N, 3, 32, 32)
    and int64 labels."""
    path, provenance = _resolve(CIFAR10, source, cache)
    batches, path = _cifar_batches(path, provenance["source"] == "local copy")
    provenance["path"] = str(path.resolve())
    if provenance["source"] == "local copy":
        files = [path] if path.is_file() else [path / n for n in CIFAR_TRAIN_BATCHES + [CIFAR_TEST_BATCH]]
        provenance["sha256"] = _combined_sha256(files)
    x_train = np.concatenate([batches[n][0] for n in CIFAR_TRAIN_BATCHES])
    y_train = np.concatenate([batches[n][1] for n in CIFAR_TRAIN_BATCHES])
    x_test, y_test = batches[CIFAR_TEST_BATCH]
    return x_train, y_train, x_test, y_test, provenance


def _combined_sha256(files: List[Path]) -> str:
    if len(files) == 1:
        return sha256_of(files[0])
    return hashlib.sha256("".join(sha256_of(f) for f in files).encode()).hexdigest()


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    encoded = np.zeros((len(labels), classes), dtype=np.float32)
    encoded[np.arange(len(labels)), labels] = 1.0
    return encoded


def cifar_for_library(channels_first: bool = True, one_hot_labels: bool = False,
                      source=None, cache=None):
    """CIFAR-10 as every notebook starts from it: float32 pixels in [0, 1].

    ``channels_first`` gives (N, 3, 32, 32), else (N, 32, 32, 3); labels are
    int64 class numbers, or float32 one-hot rows with ``one_hot_labels``.
    """
    x_train, y_train, x_test, y_test, provenance = load_cifar10(source, cache)
    x_train = x_train.astype(np.float32) / 255.0
    x_test = x_test.astype(np.float32) / 255.0
    if not channels_first:
        x_train = np.ascontiguousarray(x_train.transpose(0, 2, 3, 1))
        x_test = np.ascontiguousarray(x_test.transpose(0, 2, 3, 1))
    if one_hot_labels:
        y_train = one_hot(y_train, params.CNN_CLASSES)
        y_test = one_hot(y_test, params.CNN_CLASSES)
    return x_train, y_train, x_test, y_test, provenance


# --- IMDB ---------------------------------------------------------------------------

def _alias_numpy_core() -> None:
    """NumPy 2 pickles object arrays as ``numpy._core``; NumPy < 1.26 (Python 3.6 has at most
    1.19) names that module ``numpy.core``: alias it, as NumPy 1.26 itself does."""
    import numpy.core.multiarray  # noqa: F401 (what pickled arrays refer to)

    for name, module in list(sys.modules.items()):
        if name == "numpy.core" or name.startswith("numpy.core."):
            sys.modules.setdefault("numpy._core" + name[len("numpy.core"):], module)


def load_imdb(source=None, cache=None):
    """The raw ``imdb.npz`` arrays, (x_train, y_train, x_test, y_test, provenance): object arrays of
    word-index lists and their labels."""
    if not hasattr(np, "_core"):
        _alias_numpy_core()
    path, provenance = _resolve(IMDB, source, cache)
    if path.is_dir():
        path = path / IMDB.filename
        if not path.is_file():
            raise DataError(f"{path.parent} holds no {IMDB.filename}.")
    provenance["path"] = str(path.resolve())
    if provenance["source"] == "local copy":
        provenance["sha256"] = sha256_of(path)
    try:
        # Open the file here: np.load leaves its own handle open when the zip is unreadable.
        with open(path, "rb") as f:
            archive = np.load(f, allow_pickle=True)
            if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file or a pickle
                raise DataError(f"{path} is not an .npz archive: an imdb.npz holds "
                                "x_train, y_train, x_test and y_test.")
            with archive:
                arrays = tuple(archive[key] for key in ("x_train", "y_train", "x_test", "y_test"))
    except KeyError as error:
        raise DataError(f"{path} lacks the array {error}: an imdb.npz holds "
                        "x_train, y_train, x_test and y_test.") from error
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error, pickle.UnpicklingError) as error:
        raise DataError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}). "
                        + _corrupt_advice(IMDB, provenance["source"] == "local copy")) from error
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


def imdb_for_library(vocab: int = params.IMDB_VOCAB, seq_len: int = params.IMDB_SEQ_LEN,
                     source=None, cache=None):
    """IMDB as every notebook starts from it: int32 (N, seq_len) tokens, int64 labels.

    The order is Keras' (``load_data`` shuffles train, then test, with one
    ``RandomState(113)``), so ``x_train[0]`` is Keras' first review.
    """
    x_train, y_train, x_test, y_test, provenance = load_imdb(source, cache)
    rng = np.random.RandomState(params.IMDB_SHUFFLE_SEED)
    order = np.arange(len(x_train))
    rng.shuffle(order)
    x_train, y_train = x_train[order], y_train[order]
    order = np.arange(len(x_test))
    rng.shuffle(order)
    x_test, y_test = x_test[order], y_test[order]
    return (number_reviews(x_train, vocab, seq_len), np.asarray(y_train, dtype=np.int64),
            number_reviews(x_test, vocab, seq_len), np.asarray(y_test, dtype=np.int64), provenance)


# --- subsets ------------------------------------------------------------------------

def subset(x: np.ndarray, y: np.ndarray, samples: Optional[int], what: str = "samples"):
    """The first ``samples`` rows of ``x`` and ``y`` (all of them for None)."""
    if samples is None:
        return x, y
    if not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"{what} must be a positive whole number or None, got {samples!r}.")
    if samples > len(x):
        raise ValueError(f"{what}={samples} asks for more than the {len(x)} available.")
    return x[:samples], y[:samples]
