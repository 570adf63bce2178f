"""Small CIFAR-10 and IMDB archives in the exact official formats, for tests.

    make_cifar_tarball(path)  ->  a cifar-10-python.tar.gz (cifar-10-batches-py/ inside)
    make_imdb_npz(path)       ->  an imdb.npz (x_train, y_train, x_test, y_test)

Both are deterministic (the same arguments give the same arrays; the tarball's
bytes too, while np.savez stamps the time into the npz) and both carry a
learnable signal, so that a tiny training run on them can beat chance.

CIFAR-10 batches are written the way the originals were (Python 2, pickle
protocol 2): keys and strings are Python 2 ``str`` (SHORT_BINSTRING /
BINSTRING opcodes), and the pixel array is a ``numpy.core.multiarray
_reconstruct`` of a uint8 (N, 3072) array. So, like the originals, they load
with ``pickle.loads(raw, encoding="bytes")`` (keys ``b"data"``, ``b"labels"``,
``b"batch_label"``, ``b"filenames"``) and with ``encoding="latin1"`` (keys
``"data"``, ...), in NumPy 1 and NumPy 2 alike.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TARBALL = "cifar-10-python.tar.gz"
CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_BATCH = "test_batch"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]
# The member order of the official tarball.
CIFAR_MEMBER_ORDER = ["data_batch_4", "readme.html", "test_batch", "data_batch_3",
                      "batches.meta", "data_batch_2", "data_batch_5", "data_batch_1"]
# One mean colour (R, G, B) per class: the learnable signal.
CIFAR_CLASS_COLOURS = np.array([
    [40, 40, 200], [200, 40, 40], [40, 200, 40], [200, 200, 40], [40, 200, 200],
    [200, 40, 200], [120, 120, 120], [230, 150, 60], [60, 150, 230], [150, 60, 120],
], dtype=np.float64)
CIFAR_NOISE = 40.0

IMDB_FILENAME = "imdb.npz"
# Raw word indices (before Keras' +3 shift) by role: shared by both labels, typical
# of one label, and rare ones (some beyond the 30,000-word vocabulary after the shift).
IMDB_COMMON = (1, 2000)
IMDB_POSITIVE = (2000, 6000)
IMDB_NEGATIVE = (6000, 10000)
IMDB_RARE = (10000, 40000)
IMDB_MAX_WORD = IMDB_RARE[1] - 1


# --- CIFAR-10 --------------------------------------------------------------------------

class _Global:
    """A module attribute written as a GLOBAL opcode, named as Python 2 named it."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle insists that a reduce function is callable
        raise TypeError("a placeholder for pickling only")


class _Python2Pickler(pickle._Pickler):
    """Writes protocol 2 as Python 2's cPickle wrote the CIFAR-10 batches.

    ``bytes`` become Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), and uint8
    arrays and dtypes reduce to ``numpy.core.multiarray._reconstruct`` and
    ``numpy.dtype``, the names in the original files.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global_placeholder(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[_Global] = save_global_placeholder

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            if obj.dtype != np.uint8:
                raise TypeError("only uint8 arrays are written the Python 2 way")
            array = np.ascontiguousarray(obj)
            return (_Global("numpy.core.multiarray", "_reconstruct"),
                    (_Global("numpy", "ndarray"), (0,), b"b"),
                    (1, array.shape, array.dtype, False, array.tobytes()))
        if isinstance(obj, np.dtype):
            if obj != np.uint8:
                raise TypeError("only the uint8 dtype is written the Python 2 way")
            return (_Global("numpy", "dtype"), (b"u1", 0, 1),
                    (3, b"|", None, None, None, -1, -1, 0))
        return NotImplemented


def python2_pickle(obj) -> bytes:
    """``obj`` pickled as the CIFAR-10 batches were (protocol 2, Python 2 strings)."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 3072) rows, channel-major like CIFAR's: each class's mean colour plus noise."""
    means = CIFAR_CLASS_COLOURS[labels]                                   # (N, 3)
    pixels = means[:, :, None] + rng.normal(0.0, CIFAR_NOISE, (len(labels), 3, 1024))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def cifar_batches(per_batch: int = 40, test: int = 100, seed: int = 0) -> dict[str, dict]:
    """The batch dicts by file name (bytes keys, as ``pickle.loads(..., encoding="bytes")`` gives them)."""
    rng = np.random.default_rng(seed)
    batches = {}
    for number, name in enumerate(CIFAR_TRAIN_BATCHES + [CIFAR_TEST_BATCH], start=1):
        size = test if name == CIFAR_TEST_BATCH else per_batch
        labels = rng.permutation(np.arange(size) % 10)  # every class, when size >= 10
        label = (b"testing batch 1 of 1" if name == CIFAR_TEST_BATCH
                 else f"training batch {number} of 5".encode())
        batches[name] = {
            b"batch_label": label,
            b"labels": [int(c) for c in labels],
            b"data": cifar_images(labels, rng),
            b"filenames": [f"{CIFAR_CLASSES[c]}_s_{number:02d}{row:04d}.png".encode()
                           for row, c in enumerate(labels)],
        }
    return batches


def cifar_meta(per_batch: int) -> dict:
    return {b"num_cases_per_batch": per_batch,
            b"label_names": [name.encode() for name in CIFAR_CLASSES],
            b"num_vis": 3072}


def cifar_files(per_batch: int = 40, test: int = 100, seed: int = 0) -> dict[str, bytes]:
    """The bytes of every file in ``cifar-10-batches-py``, by name."""
    files = {name: python2_pickle(batch)
             for name, batch in cifar_batches(per_batch, test, seed).items()}
    files["batches.meta"] = python2_pickle(cifar_meta(per_batch))
    files["readme.html"] = (b"<html><body><p>A small stand-in for CIFAR-10, made by "
                            b"tests/fakedata.py.</p></body></html>\n")
    return files


def _target(path, default_name: str) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def make_cifar_tarball(path, per_batch: int = 40, test: int = 100, seed: int = 0) -> Path:
    """Write a ``cifar-10-python.tar.gz`` at ``path`` (or inside it, if it is a folder).

    It holds ``cifar-10-batches-py/`` with ``data_batch_1..5`` (``per_batch``
    images each), ``test_batch`` (``test`` images), ``batches.meta`` and
    ``readme.html``, in the official member order.
    """
    path = _target(path, CIFAR_TARBALL)
    files = cifar_files(per_batch, test, seed)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as archive:
        folder = tarfile.TarInfo(CIFAR_FOLDER)
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 1244000000
        archive.addfile(folder)
        for name in CIFAR_MEMBER_ORDER:
            member = tarfile.TarInfo(f"{CIFAR_FOLDER}/{name}")
            member.size, member.mode, member.mtime = len(files[name]), 0o644, 1244000000
            archive.addfile(member, io.BytesIO(files[name]))
    return path


def make_cifar_folder(path, per_batch: int = 40, test: int = 100, seed: int = 0) -> Path:
    """Write ``path/cifar-10-batches-py/`` (what the tarball unpacks to); return that folder."""
    folder = Path(path) / CIFAR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in cifar_files(per_batch, test, seed).items():
        (folder / name).write_bytes(content)
    return folder


# --- IMDB ------------------------------------------------------------------------------

def _review(label: int, length: int, rng: np.random.Generator) -> list[int]:
    """Raw word indices: half shared words, a third typical of the label, the rest rare."""
    kind = rng.choice(3, size=length, p=[0.5, 0.3, 0.2])
    typical = IMDB_POSITIVE if label == 1 else IMDB_NEGATIVE
    words = np.where(kind == 0, rng.integers(*IMDB_COMMON, size=length),
                     np.where(kind == 1, rng.integers(*typical, size=length),
                              rng.integers(*IMDB_RARE, size=length)))
    return [int(w) for w in words]


def imdb_split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` reviews and labels in the original file's order: positive ones first, then negative."""
    labels = (np.arange(n) < (n + 1) // 2).astype(np.int64)
    lengths = rng.integers(10, 400, size=n)
    # Always some reviews longer than 150 tokens and some shorter, and the largest word.
    lengths[:2] = [300, 30][:n]
    if n > 3:
        lengths[-2:] = [30, 300]
    reviews = np.empty(n, dtype=object)
    for i in range(n):
        reviews[i] = _review(int(labels[i]), int(lengths[i]), rng)
    if n:
        reviews[0][-1] = IMDB_MAX_WORD
    return reviews, labels


def make_imdb_npz(path, train: int = 200, test: int = 200, seed: int = 0) -> Path:
    """Write an ``imdb.npz`` at ``path`` (or inside it, if it is a folder), as Keras' is.

    ``x_train``/``x_test`` are object arrays of Python lists of raw word indices
    (1 to 39,999, so that some fall outside the 30,000-word vocabulary after
    Keras' +3 shift), of lengths 10 to 399; ``y_train``/``y_test`` are int64
    0/1 labels. Load with ``np.load(path, allow_pickle=True)``.
    """
    path = _target(path, IMDB_FILENAME)
    rng = np.random.default_rng(seed)
    x_train, y_train = imdb_split(train, rng)
    x_test, y_test = imdb_split(test, rng)
    with open(path, "wb") as f:  # a file object, so that np.savez adds no second suffix
        np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path
