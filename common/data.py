"""The data sets: download, verify, cache, and cut to size, for every benchmark alike.

    from common import data
    train, test, provenance = data.prepare(benchmark)      # before the notebooks: verified and cached
    x_train, y_train, x_test, y_test, provenance = data.<loader>(...)   # in a notebook

Each benchmark's data set has a module of its own (``common.benchmarks``: ``dataset``) that
knows its archive and decodes it; this module is what they share. Each data-set module's
loader is also here under the name the notebooks call (``Benchmark.loader``). Every loader
returns the same five: training inputs and labels, test inputs and labels, and where the data
came from.

Where the data comes from, first match wins:
1. a local copy named by the ``source`` argument, or by the benchmark's environment variable
   (``Benchmark.env_var``; what the copy may be is ``Benchmark.expected``);
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
entry's name holds the source's checksum and the decoding code's version (a hash of this file,
the data-set modules and common/params.py), so another archive or a change in decoding gets an
entry of its own.
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
import importlib.util
import tempfile
import warnings
from dataclasses import dataclass  # on Python 3.6 (CNTK's env): the `dataclasses` backport
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from common import params
from common.benchmarks import BENCHMARKS


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


def corrupt_advice(remote: RemoteFile, local: bool) -> str:
    """What to do about an unreadable archive: a cached download can be fetched again, while
    a named local copy is the user's own, to be replaced rather than deleted."""
    if local:
        return (f"Replace it with a good copy, or name none ({remote.flag}, {remote.env_var}) "
                "to use the official download.")
    return (f"Delete it and run again to download a fresh copy, or point {remote.env_var} "
            f"({remote.flag}) at a good one.")


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


def resolve(remote: RemoteFile, source, cache) -> Tuple[Path, dict]:
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
    """A hash of the code that decodes and converts the data (this file, the data-set modules and
    common/params.py): a cache entry made by other code is never used."""
    if not _DECODER:
        digest = hashlib.sha256(f"format {CACHE_FORMAT}\n".encode())
        modules = [importlib.util.find_spec(b.dataset).origin for b in BENCHMARKS.values()]
        for source in [__file__] + modules + [params.__file__]:
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
    (1.6 GB for the largest data set), while two checkouts of different code sharing one cache folder keep
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
                  about: Optional[dict] = None, copy: Optional[List[Path]] = None) -> Dict[str, np.ndarray]:
    """The arrays ``names`` of ``dataset`` decoded from the source whose checksum is ``checksum``:
    memory-mapped from the cache where a valid entry is there, else ``build()`` (a dict of them),
    written to the cache for the next load. ``copy``: the files of the local copy it was decoded from,
    whose ``file_stamps`` the entry remembers for ``local_sha256``."""
    folder = arrays_folder(cache)
    if folder is None:
        return build()
    name = _entry_name(dataset, checksum, extra)
    stamps = file_stamps(copy) if copy is not None else None  # a local copy's, remembered under "copies"
    arrays = _read_entry(folder, name, names)
    if arrays is not None:
        if stamps is not None:
            _remember_copy(folder / (name + ".json"), stamps)
        return arrays
    arrays = build()
    about = dict(about or {}, **({"copies": [stamps]} if stamps is not None else {}))
    _write_entry(folder, name, arrays, dict(about, dataset=dataset, checksum=checksum, extra=extra))
    return arrays


KEEP_COPIES = 8  # local copies an entry remembers (local_sha256), the newest last


def _remember_copy(manifest: Path, copy: list) -> None:
    """Adds a local copy's file stamps to an entry's manifest (an entry made before they were kept, or
    the same data read from another copy), so that local_sha256 finds its checksum next time."""
    try:
        found = json.loads(manifest.read_text())
        copies = found.get("copies")
        copies = [c for c in copies if c != copy] if isinstance(copies, list) else []
        if copies + [copy] == found.get("copies"):
            return
        found["copies"] = (copies + [copy])[-KEEP_COPIES:]
        _write_atomically(manifest, lambda f: f.write(json.dumps(found, indent=1, sort_keys=True).encode()))
    except (OSError, ValueError, AttributeError):
        pass  # a read-only or odd manifest: the copy is hashed again next time, nothing else lost


# --- helpers of the data-set modules -------------------------------------------------

def combined_sha256(files: List[Path]) -> str:
    if len(files) == 1:
        return sha256_of(files[0])
    return hashlib.sha256("".join(sha256_of(f) for f in files).encode()).hexdigest()


def file_stamps(files: List[Path]) -> Optional[list]:
    """Each file's resolved path, size and modification time (nanoseconds): what an entry of the array
    cache made from a local copy remembers of it (None where a file cannot be read)."""
    try:
        stats = [(str(Path(f).resolve()), os.stat(str(f))) for f in files]
    except OSError:
        return None
    return [[name, stat.st_size, stat.st_mtime_ns] for name, stat in stats]


def local_sha256(dataset: str, files: List[Path], cache=None) -> str:
    """``combined_sha256(files)`` of a local copy, taken from the array cache where an entry of
    ``dataset`` was decoded from these very files (the same paths, sizes and times: ``file_stamps``),
    else read from the files. Hashing a local copy of 178 MB took 0.76 s on Python 3.6 (0.13 s on 3.11),
    most of a data phase served from the cache; a changed file is hashed again."""
    stamps, folder = file_stamps(files), arrays_folder(cache)
    if stamps is not None and folder is not None:
        for manifest in folder.glob(f"{dataset}-*.json"):
            try:
                found = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            checksum = found.get("checksum") if isinstance(found, dict) else None
            copies = found.get("copies") if isinstance(found, dict) else None
            if isinstance(copies, list) and stamps in copies and isinstance(checksum, str) \
                    and checksum.startswith("sha256:") and len(checksum) == len("sha256:") + 64:
                return checksum[len("sha256:"):]
    return combined_sha256(files)


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    encoded = np.zeros((len(labels), classes), dtype=np.float32)
    encoded[np.arange(len(labels)), labels] = 1.0
    return encoded



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
    """What the harness does before any notebook starts: verify ``benchmark``'s data and decode
    it into the array cache (once per checksum), so that the notebooks only memory-map it.
    Returns the training and test counts and the provenance."""
    arrays, provenance = BENCHMARKS[benchmark].data().arrays(source, cache)
    return len(arrays["x_train"]), len(arrays["x_test"]), provenance


# --- the loaders, under the names the notebooks call ----------------------------------

def _loader(benchmark: str):
    def load(*args, **kwargs):
        return BENCHMARKS[benchmark].data().for_library(*args, **kwargs)

    load.__name__ = BENCHMARKS[benchmark].loader
    load.__doc__ = "{}'s data as every notebook starts from it: see {}.for_library.".format(
        BENCHMARKS[benchmark].what, BENCHMARKS[benchmark].dataset)
    return load


for _name, _benchmark in BENCHMARKS.items():
    globals()[_benchmark.loader] = _loader(_name)
