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

The array cache: the arrays a notebook starts from are decoded once per source checksum and
kept as ``.npy`` files in ``arrays/`` of the cache folder (the download's folder; for a local
copy too, whose own folder may be read-only), then memory-mapped by every later load. An
entry's name holds the source's checksum and the decoding code's version (a hash of this file
and common/params.py), so another archive or a change in decoding gets an entry of its own.
Each file is written to a temporary name and renamed into place, so that two processes
building the same entry at once leave complete files; on reading, each file's header, shape,
dtype and length are checked against the entry's manifest, and an entry that fails is decoded
again, with a :class:`DataCacheWarning`. A folder that cannot be written means decoding in
memory, as without a cache. The arrays of a cached entry are memory-mapped copy-on-write
(writable, never written back); :func:`subset` turns them into ordinary in-memory arrays.
"""
import hashlib
import json
import mmap
import os
import pickle
import sys
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass  # on Python 3.6 (CNTK's env): the `dataclasses` backport
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from common import params


class DataError(RuntimeError):
    """A data set could not be obtained or read; the message says what to do."""


class DataCacheWarning(UserWarning):
    """The array cache could not be used (a corrupt file, a folder that cannot be written); the
    data was decoded from its source instead."""


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
    if target.exists():
        if _hash_matches(target, remote.known_hash):
            return target  # verified: pooch would only hash it again
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


# --- the array cache ----------------------------------------------------------------

CACHE_FORMAT = 1        # the layout of an entry; the decoder's version adds the code itself
ARRAYS_FOLDER = "arrays"
_DECODER = []           # the decoding code's version, computed once


def decoder_version() -> str:
    """A hash of the code that decodes and converts the data (this file and common/params.py):
    a cache entry made by other code is never used."""
    if not _DECODER:
        digest = hashlib.sha256(f"format {CACHE_FORMAT}\n".encode())
        for source in (__file__, params.__file__):
            with open(source, "rb") as f:
                digest.update(f.read())
        _DECODER.append(digest.hexdigest()[:16])
    return _DECODER[0]


def arrays_folder(cache=None) -> Optional[Path]:
    """Where the decoded arrays are kept: ``arrays/`` in the cache folder (None where the cache
    folder cannot be named, e.g. without pooch)."""
    try:
        return cache_dir(cache) / ARRAYS_FOLDER
    except ImportError:
        return None


def _entry_name(dataset: str, checksum: str, extra: dict) -> str:
    key = json.dumps({"dataset": dataset, "checksum": checksum, "decoder": decoder_version(),
                      "extra": extra}, sort_keys=True)
    return f"{dataset}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def _is_mapped(array) -> bool:
    """Whether ``array`` (or what it views) is a memory map of a cache file."""
    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


def _npy_problem(path: Path, shape: list, dtype: str) -> Optional[str]:
    """What is wrong with the cache file ``path`` for an array of ``shape`` and ``dtype`` (None: nothing)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            found_shape, fortran, found_dtype = header(f)
            offset = f.tell()
    except (OSError, ValueError, EOFError, SyntaxError) as error:
        return f"is unreadable ({type(error).__name__}: {error})"
    if list(found_shape) != list(shape) or np.dtype(found_dtype) != np.dtype(dtype) or fortran:
        return (f"holds a {found_dtype} array of shape {tuple(found_shape)}, expected {dtype} "
                f"of shape {tuple(shape)}")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if size != expected:
        return f"is {size:,} bytes long, expected {expected:,} (truncated or corrupt)"
    return None


def _read_entry(folder: Path, name: str, names: List[str]) -> Optional[Dict[str, np.ndarray]]:
    """The arrays of a complete, valid entry, memory-mapped; None where there is none. A damaged
    entry is reported (DataCacheWarning) and treated as absent, so that it is rebuilt."""
    manifest = folder / (name + ".json")
    if not manifest.is_file():
        return None
    try:
        specs = json.loads(manifest.read_text())["arrays"]
        wanted = [(key, folder / f"{name}.{key}.npy", specs[key]["shape"], specs[key]["dtype"]) for key in names]
    except (OSError, ValueError, KeyError, TypeError) as error:
        warnings.warn(f"the data cache manifest {manifest} is unreadable ({type(error).__name__}: {error}); "
                      "decoding the data again to rebuild it.", DataCacheWarning, stacklevel=3)
        return None
    arrays = {}
    for key, path, shape, dtype in wanted:
        problem = _npy_problem(path, shape, dtype)
        if problem is None:
            try:
                arrays[key] = np.asarray(np.load(str(path), mmap_mode="c", allow_pickle=False))
            except (OSError, ValueError) as error:
                problem = f"is unreadable ({type(error).__name__}: {error})"
        if problem is not None:
            warnings.warn(f"the data cache file {path} {problem}; decoding the data again to rebuild it.",
                          DataCacheWarning, stacklevel=3)
            return None
    return arrays


def _write_atomically(target: Path, write) -> None:
    """``write(file)`` into a temporary file beside ``target``, then renamed onto it: a reader
    sees the old file or the whole new one, and two writers leave one complete file."""
    handle, temporary = tempfile.mkstemp(dir=str(target.parent), prefix="." + target.name + ".",
                                         suffix=".part")
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)  # mkstemp makes it 0600; the cache is as readable as a download
        os.replace(temporary, str(target))
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _write_entry(folder: Path, name: str, arrays: Dict[str, np.ndarray], about: dict) -> bool:
    """Every array of an entry, then its manifest (last: an entry without one is not there)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for key, array in arrays.items():
            _write_atomically(folder / f"{name}.{key}.npy",
                              lambda f, array=array: np.save(f, np.ascontiguousarray(array), allow_pickle=False))
        manifest = dict(about, decoder=decoder_version(), format=CACHE_FORMAT,
                        arrays={key: {"shape": list(array.shape), "dtype": array.dtype.str}
                                for key, array in arrays.items()})
        _write_atomically(folder / (name + ".json"),
                          lambda f: f.write(json.dumps(manifest, indent=1, sort_keys=True).encode()))
    except OSError as error:
        warnings.warn(f"cannot write the data cache in {folder} ({error.strerror or error}); the data is "
                      "decoded in memory on every run. Set ROSETTA_DATA_DIR (or --data-dir) to a writable "
                      "folder to keep it.", DataCacheWarning, stacklevel=3)
        return False
    _prune(folder, name, manifest)
    return True


KEEP_OTHER_DECODERS = 1  # entries of the same data by other decoding code kept beside the new one


def _prune(folder: Path, name: str, manifest: dict) -> None:
    """Removes the older entries of the same data made by other decoding code, keeping the newest
    ``KEEP_OTHER_DECODERS`` of them: each edit of this file would otherwise leave a stale copy
    (1.6 GB for CIFAR-10), while two checkouts of different code sharing one cache folder keep
    one entry each rather than rebuilding each other's. A process still mapping a removed file
    keeps its arrays (the file goes once unmapped); entries of other data are left alone."""
    same = {key: manifest.get(key) for key in ("dataset", "checksum", "extra")}
    others = []
    for other in folder.glob(f"{manifest.get('dataset')}-*.json"):
        stem = other.name[:-len(".json")]
        if stem == name:
            continue
        try:
            found = json.loads(other.read_text())
            built = other.stat().st_mtime
        except (OSError, ValueError):
            continue
        if isinstance(found, dict) and found.get("decoder") != manifest.get("decoder") and \
                {key: found.get(key) for key in same} == same:
            others.append((built, stem, other))
    for _, stem, other in sorted(others, reverse=True)[KEEP_OTHER_DECODERS:]:
        for path in [other] + list(folder.glob(stem + ".*.npy")):  # the manifest first: the entry is gone
            try:
                path.unlink()
            except OSError:
                pass


def cached_arrays(dataset: str, checksum: str, extra: dict, names: List[str], build, cache=None,
                  about: Optional[dict] = None) -> Dict[str, np.ndarray]:
    """The arrays ``names`` of ``dataset`` decoded from the source whose checksum is ``checksum``:
    memory-mapped from the cache where a valid entry is there, else ``build()`` (a dict of them),
    written to the cache for the next load."""
    folder = arrays_folder(cache)
    if folder is None:
        return build()
    name = _entry_name(dataset, checksum, extra)
    arrays = _read_entry(folder, name, names)
    if arrays is not None:
        return arrays
    arrays = build()
    _write_entry(folder, name, arrays, dict(about or {}, dataset=dataset, checksum=checksum, extra=extra))
    return arrays


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
    path, provenance = _resolve(CIFAR10, source, cache)
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
                raise DataError(f"{path} has no {missing[0]}: a {CIFAR_FOLDER} folder holds "
                                f"{', '.join(CIFAR_TRAIN_BATCHES)} and {CIFAR_TEST_BATCH}.")
        files = [path] if path.is_file() else [path / n for n in CIFAR_TRAIN_BATCHES + [CIFAR_TEST_BATCH]]
        provenance["sha256"] = _combined_sha256(files)
    checksum = "sha256:" + provenance["sha256"] if local else provenance["checksum"]
    return path, provenance, checksum


def _cifar_arrays(source, cache) -> Tuple[Dict[str, np.ndarray], dict]:
    path, provenance, checksum = _cifar_source(source, cache)
    arrays = cached_arrays("cifar10", checksum, {}, CIFAR_ARRAYS,
                           lambda: _decode_cifar(path, provenance["source"] == "local copy"), cache,
                           about={"source": provenance["path"]})
    return arrays, provenance


def load_cifar10(source=None, cache=None):
    """Raw CIFAR-10: (x_train, y_train, x_test, y_test, provenance), uint8 images (N, 3, 32, 32)
    and int64 labels (memory-mapped from the array cache where it holds them)."""
    arrays, provenance = _cifar_arrays(source, cache)
    return arrays["x_train_raw"], arrays["y_train"], arrays["x_test_raw"], arrays["y_test"], provenance


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
    int64 class numbers, or float32 one-hot rows with ``one_hot_labels``. From the array
    cache the arrays are memory-mapped (:func:`subset` makes in-memory copies).
    """
    arrays, provenance = _cifar_arrays(source, cache)
    layout = "" if channels_first else "_last"
    x_train, x_test = arrays["x_train" + layout], arrays["x_test" + layout]
    y_train, y_test = arrays["y_train"], arrays["y_test"]
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


def _imdb_source(source, cache) -> Tuple[Path, dict, str]:
    """The imdb.npz to read, its provenance, and the checksum that keys its cache."""
    path, provenance = _resolve(IMDB, source, cache)
    if path.is_dir():
        path = path / IMDB.filename
        if not path.is_file():
            raise DataError(f"{path.parent} holds no {IMDB.filename}.")
    provenance["path"] = str(path.resolve())
    if provenance["source"] == "local copy":
        provenance["sha256"] = sha256_of(path)
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
                raise DataError(f"{path} is not an .npz archive: an imdb.npz holds "
                                "x_train, y_train, x_test and y_test.")
            with archive:
                return tuple(archive[key] for key in ("x_train", "y_train", "x_test", "y_test"))
    except KeyError as error:
        raise DataError(f"{path} lacks the array {error}: an imdb.npz holds "
                        "x_train, y_train, x_test and y_test.") from error
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error, pickle.UnpicklingError) as error:
        raise DataError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}). "
                        + _corrupt_advice(IMDB, local)) from error


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

    arrays = cached_arrays("imdb", checksum, {"vocab": int(vocab), "seq_len": int(seq_len)}, IMDB_ARRAYS, build,
                           cache, about={"source": provenance["path"]})
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], provenance


# --- subsets ------------------------------------------------------------------------

def subset(x: np.ndarray, y: np.ndarray, samples: Optional[int], what: str = "samples"):
    """The first ``samples`` rows of ``x`` and ``y`` (all of them for None). Arrays memory-mapped
    from the array cache come back as in-memory, C-ordered copies of those rows (the same values,
    bit for bit), so that the data phase reads only the rows asked for, and training never
    waits on the cache file."""
    if samples is not None:
        if not isinstance(samples, (int, np.integer)) or samples < 1:
            raise ValueError(f"{what} must be a positive whole number or None, got {samples!r}.")
        if samples > len(x):
            raise ValueError(f"{what}={samples} asks for more than the {len(x)} available.")
        x, y = x[:samples], y[:samples]
    return _in_memory(x), _in_memory(y)


def _in_memory(array):
    return np.array(array, order="C", copy=True) if _is_mapped(array) else array


# --- before the notebooks -----------------------------------------------------------

def prepare(benchmark: str, source=None, cache=None) -> Tuple[int, int, dict]:
    """What the harness does before any notebook starts: verify ``benchmark``'s data ("cifar" or
    "imdb") and decode it into the array cache (once per checksum), so that the notebooks only
    memory-map it. Returns the training and test counts and the provenance."""
    if benchmark == "cifar":
        arrays, provenance = _cifar_arrays(source, cache)
    else:
        x_train, _, x_test, _, provenance = imdb_for_library(source=source, cache=cache)
        arrays = {"x_train": x_train, "x_test": x_test}
    return len(arrays["x_train"]), len(arrays["x_test"]), provenance
