"""CIFAR-10: where it comes from, how it is decoded, and the arrays the notebooks start from.

    from common import cifar10
    x_train, y_train, x_test, y_test, provenance = cifar10.cifar_for_library(channels_first=True)

(The notebooks call it as ``data.cifar_for_library``.) Downloading, checksums, the array cache
and subsets are ``common.data``'s; this module knows the archive, its batches and its images.
"""
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from common import data, params
from common.benchmarks import BENCHMARKS

BENCHMARK = BENCHMARKS["cifar"]

CIFAR10 = data.RemoteFile(
    name=BENCHMARK.what,
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    known_hash="md5:c58f30108f718f92721af3b95e74349a",
    env_var=BENCHMARK.env_var,
    flag=BENCHMARK.option,
)

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_BATCH = "test_batch"


def _unpickle_batch(raw: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(raw, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as error:  # any failure here means the file is not a CIFAR batch
        raise data.DataError(f"{where} is not a CIFAR-10 batch ({type(error).__name__}: {error}).") from error
    if len(images) != len(labels):
        raise data.DataError(f"{where} holds {len(images)} images but {len(labels)} labels.")
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
                    raise data.DataError(f"{path} has no {member}: it is not a cifar-10-python.tar.gz.")
                batches[name] = _unpickle_batch(raw, f"{member} in {path}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise data.DataError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}). "
                        + data.corrupt_advice(CIFAR10, local)) from error
    return batches


def _read_cifar_folder(folder: Path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    batches = {}
    for name in CIFAR_TRAIN_BATCHES + [CIFAR_TEST_BATCH]:
        file = folder / name
        if not file.is_file():
            raise data.DataError(f"{folder} has no {name}: a {CIFAR_FOLDER} folder holds "
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


CIFAR_ARRAYS = ["x_train_raw", "y_train", "x_test_raw", "y_test", "x_train", "x_test", "x_train_last", "x_test_last"]


def _decode_cifar(path: Path, local: bool) -> Dict[str, np.ndarray]:
    """Every array of a CIFAR-10 source, decoded: the raw uint8 images, the labels, and the
    float32 pixels in [0, 1] that every notebook starts from, channels first (N, 3, 32, 32)
    and last (N, 32, 32, 3)."""
    batches, _ = _cifar_batches(path, local)
    x_train = np.concatenate([batches[n][0] for n in CIFAR_TRAIN_BATCHES])
    y_train = np.concatenate([batches[n][1] for n in CIFAR_TRAIN_BATCHES])
    x_test, y_test = batches[CIFAR_TEST_BATCH]
    arrays = {"x_train_raw": x_train, "y_train": y_train, "x_test_raw": x_test, "y_test": y_test,
              "x_train": x_train.astype(np.float32) / 255.0, "x_test": x_test.astype(np.float32) / 255.0}
    arrays["x_train_last"] = np.ascontiguousarray(arrays["x_train"].transpose(0, 2, 3, 1))
    arrays["x_test_last"] = np.ascontiguousarray(arrays["x_test"].transpose(0, 2, 3, 1))
    return arrays


def _cifar_source(source, cache) -> Tuple[Path, dict, str]:
    """The CIFAR-10 archive or folder to read, its provenance, and the checksum that keys its cache."""
    path, provenance = data.resolve(CIFAR10, source, cache)
    local = provenance["source"] == "local copy"
    if path.is_dir():
        if (path / CIFAR_FOLDER).is_dir():
            path = path / CIFAR_FOLDER
        elif (path / CIFAR10.filename).is_file():
            path = path / CIFAR10.filename
    provenance["path"] = str(path.resolve())
    if local:
        if path.is_dir():
            missing = [n for n in CIFAR_TRAIN_BATCHES + [CIFAR_TEST_BATCH] if not (path / n).is_file()]
            if missing:
                raise data.DataError(f"{path} has no {missing[0]}: a {CIFAR_FOLDER} folder holds "
                                f"{', '.join(CIFAR_TRAIN_BATCHES)} and {CIFAR_TEST_BATCH}.")
        provenance["sha256"] = data.local_sha256("cifar10", _files(path), cache)
    checksum = "sha256:" + provenance["sha256"] if local else provenance["checksum"]
    return path, provenance, checksum


def _files(path: Path) -> List[Path]:
    """The files of a local copy: the archive, or the folder's six batches."""
    return [path] if path.is_file() else [path / n for n in CIFAR_TRAIN_BATCHES + [CIFAR_TEST_BATCH]]


def _cifar_arrays(source, cache) -> Tuple[Dict[str, np.ndarray], dict]:
    path, provenance, checksum = _cifar_source(source, cache)
    local = provenance["source"] == "local copy"
    arrays = data.cached_arrays("cifar10", checksum, {}, CIFAR_ARRAYS, lambda: _decode_cifar(path, local), cache,
                                about={"source": provenance["path"]}, copy=_files(path) if local else None)
    return arrays, provenance


def load_cifar10(source=None, cache=None):
    """Raw CIFAR-10: (x_train, y_train, x_test, y_test, provenance), uint8 images (N, 3, 32, 32)
    and int64 labels (memory-mapped from the array cache where it holds them)."""
    arrays, provenance = _cifar_arrays(source, cache)
    return arrays["x_train_raw"], arrays["y_train"], arrays["x_test_raw"], arrays["y_test"], provenance



def cifar_for_library(channels_first: bool = True, one_hot_labels: bool = False,
                      source=None, cache=None):
    """CIFAR-10 as every notebook starts from it: float32 pixels in [0, 1].

    ``channels_first`` gives (N, 3, 32, 32), else (N, 32, 32, 3); labels are
    int64 class numbers, or float32 one-hot rows with ``one_hot_labels``. From the array
    cache the arrays are memory-mapped (:func:`subset` makes in-memory copies).
    """
    arrays, provenance = _cifar_arrays(source, cache)
    layout = "" if channels_first else "_last"
    x_train, x_test = arrays["x_train" + layout], arrays["x_test" + layout]
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    if one_hot_labels:
        y_train = data.one_hot(y_train, params.CNN_CLASSES)
        y_test = data.one_hot(y_test, params.CNN_CLASSES)
    return x_train, y_train, x_test, y_test, provenance


# --- what common.data and common.parity ask of every data-set module --------------------

for_library = cifar_for_library


def arrays(source=None, cache=None):
    """The arrays the notebooks start from (``x_train``, ``x_test``...), decoded into the array
    cache, and their provenance: what ``data.prepare`` does before any notebook starts."""
    return _cifar_arrays(source, cache)


def parity_batch(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """A batch of the parity check: uniform pixels in [0, 1] and random labels."""
    x = rng.uniform(0.0, 1.0, size=(size, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, params.CNN_CLASSES, size=size)
    return x, labels.astype(np.int64)
