"""The array cache of common/data.py: decoded once per checksum, memory-mapped after, rebuilt
when damaged, safe with two writers, the same arrays bit for bit, readable by every NumPy of the
environments. Everything runs on the tiny archives of tests/fakedata.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import fakedata
from common import cifar10, data, imdb

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in ("ROSETTA_CIFAR10", "ROSETTA_IMDB", "ROSETTA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # never the user's cache folder


@pytest.fixture
def decodes(monkeypatch):
    """How often each data set was decoded from its archive in this process."""
    counts = {"cifar": 0, "imdb": 0}
    decode_cifar, decode_imdb = cifar10._decode_cifar, imdb._decode_imdb

    def count_cifar(*args, **kwargs):
        counts["cifar"] += 1
        return decode_cifar(*args, **kwargs)

    def count_imdb(*args, **kwargs):
        counts["imdb"] += 1
        return decode_imdb(*args, **kwargs)

    monkeypatch.setattr(cifar10, "_decode_cifar", count_cifar)
    monkeypatch.setattr(imdb, "_decode_imdb", count_imdb)
    return counts


def entry_files(cache: Path, dataset: str) -> list[Path]:
    return sorted((cache / data.ARRAYS_FOLDER).glob(f"{dataset}-*"))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == \
        np.ascontiguousarray(b).tobytes()


def test_built_once_then_memory_mapped(tiny_cifar, tiny_imdb, tmp_path, decodes):
    cache = tmp_path / "cache"
    first = data.cifar_for_library(source=tiny_cifar, cache=cache)
    tokens = data.imdb_for_library(source=tiny_imdb, cache=cache)
    assert decodes == {"cifar": 1, "imdb": 1}
    files = entry_files(cache, "cifar10")
    assert len(files) == 1 + len(cifar10.CIFAR_ARRAYS)  # the manifest and one .npy per array
    stamps = {f: f.stat().st_mtime_ns for f in files}

    for _ in range(2):
        again = data.cifar_for_library(source=tiny_cifar, cache=cache)
        raw = cifar10.load_cifar10(source=tiny_cifar, cache=cache)
        tokens_again = data.imdb_for_library(source=tiny_imdb, cache=cache)
    assert decodes == {"cifar": 1, "imdb": 1}  # neither archive decoded again
    assert {f: f.stat().st_mtime_ns for f in entry_files(cache, "cifar10")} == stamps  # nor rewritten
    assert all(data._is_mapped(a) for a in again[:4] + raw[:4] + tokens_again[:4])
    for a, b in zip(first[:4] + tokens[:4], again[:4] + tokens_again[:4]):
        assert same_bits(a, b)
    assert again[4] == first[4] and tokens_again[4] == tokens[4]  # the provenance is the source's


def test_keyed_by_checksum_and_decoder(tiny_cifar, tmp_path, decodes, monkeypatch):
    cache = tmp_path / "cache"
    other = fakedata.make_cifar_tarball(tmp_path / "other" / "cifar-10-python.tar.gz", seed=1)
    x_one, *_ = cifar10.load_cifar10(source=tiny_cifar, cache=cache)
    x_two, *_ = cifar10.load_cifar10(source=other, cache=cache)
    assert decodes["cifar"] == 2 and not np.array_equal(x_one, x_two)
    names = {json.loads(f.read_text())["checksum"] for f in (cache / data.ARRAYS_FOLDER).glob("cifar10-*.json")}
    assert names == {"sha256:" + data.sha256_of(tiny_cifar), "sha256:" + data.sha256_of(other)}

    # The same file under another name is the same data: the same entry.
    renamed = tmp_path / "renamed.tar.gz"
    renamed.write_bytes(tiny_cifar.read_bytes())
    assert np.array_equal(cifar10.load_cifar10(source=renamed, cache=cache)[0], x_one)
    assert decodes["cifar"] == 2

    # Other decoding code: the entry is not used. The newest entry of other code stays beside the
    # new one (two checkouts sharing a cache keep one each); older ones go; other archives' stay.
    def decoders():
        found = [json.loads(f.read_text()) for f in (cache / data.ARRAYS_FOLDER).glob("cifar10-*.json")]
        return sorted(m["decoder"] for m in found if m["checksum"] == "sha256:" + data.sha256_of(tiny_cifar))

    first = decoders()
    for number, decoder in enumerate(["second-decoder", "third-decoder"], start=1):
        time.sleep(0.01)  # manifests of distinct times
        monkeypatch.setattr(data, "_DECODER", [decoder])
        assert np.array_equal(cifar10.load_cifar10(source=tiny_cifar, cache=cache)[0], x_one)
        assert decodes["cifar"] == 2 + number
    assert decoders() == ["second-decoder", "third-decoder"]  # the first one's entry is gone
    assert first[0] not in decoders()
    assert len(entry_files(cache, "cifar10")) == 3 * (1 + len(cifar10.CIFAR_ARRAYS))  # and every file of it
    monkeypatch.setattr(data, "_DECODER", ["second-decoder"])
    cifar10.load_cifar10(source=tiny_cifar, cache=cache)
    assert decodes["cifar"] == 4  # the kept entry is used as it is


def test_the_decoder_version_follows_the_code(tmp_path):
    """The version is a hash of common/data.py and common/params.py: an edit changes it."""
    script = "from common import data; print(data.decoder_version())"
    copy = tmp_path / "repo"
    (copy / "common").mkdir(parents=True)
    for name in ("__init__.py", "data.py", "params.py"):
        (copy / "common" / name).write_bytes((REPOSITORY / "common" / name).read_bytes())

    def version():
        return subprocess.run([sys.executable, "-c", script], cwd=copy, capture_output=True, text=True,
                              check=True).stdout.strip()

    before = version()
    assert before == data.decoder_version()
    with open(copy / "common" / "data.py", "a") as f:
        f.write("\n# a change in decoding\n")
    assert version() != before


@pytest.mark.parametrize("damage", ["truncated", "header", "shape", "manifest", "missing"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(tiny_cifar, tmp_path, decodes, damage):
    cache = tmp_path / "cache"
    expected = data.cifar_for_library(source=tiny_cifar, cache=cache)
    name = entry_files(cache, "cifar10")[0].name.split(".")[0]
    target = cache / data.ARRAYS_FOLDER / f"{name}.x_train.npy"
    blob = target.read_bytes()
    if damage == "truncated":  # a write cut short
        target.write_bytes(blob[: len(blob) // 2])
    elif damage == "header":  # not an .npy file at all
        target.write_bytes(b"\0" * 16 + blob[16:])
    elif damage == "shape":  # a whole .npy file, of other data
        np.save(target, np.zeros((3, 3), dtype=np.float32))
    elif damage == "manifest":
        (cache / data.ARRAYS_FOLDER / f"{name}.json").write_text("{not json")
    else:
        target.unlink()

    with pytest.warns(data.DataCacheWarning, match="decoding the data again to rebuild it"):
        again = data.cifar_for_library(source=tiny_cifar, cache=cache)
    assert decodes["cifar"] == 2  # decoded again, never read from the damaged file
    for a, b in zip(expected[:4], again[:4]):
        assert same_bits(a, b)
    assert target.read_bytes() == blob  # rebuilt as it was

    with warnings.catch_warnings():
        warnings.simplefilter("error", data.DataCacheWarning)
        data.cifar_for_library(source=tiny_cifar, cache=cache)  # and used from then on
    assert decodes["cifar"] == 2


def test_a_cache_folder_that_cannot_be_written(tiny_imdb, tmp_path, decodes):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / data.ARRAYS_FOLDER).write_text("a file where the folder should be")
    with pytest.warns(data.DataCacheWarning, match="cannot write the data cache"):
        tokens, labels, *_ = data.imdb_for_library(source=tiny_imdb, cache=cache)
    assert tokens.shape == (200, 150) and not data._is_mapped(tokens)  # decoded in memory, as before


def test_two_writers_at_once(tiny_cifar, tiny_imdb, tmp_path, decodes):
    """Two processes decode the same archives into one empty cache at the same moment; both get
    the right arrays, the entry is whole, no temporary file is left, and a third load decodes nothing."""
    cache, go = tmp_path / "cache", tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(REPOSITORY)!r})
        from common import data
        open(sys.argv[1], "w").close()  # imported and ready
        while not os.path.exists({str(go)!r}):
            time.sleep(0.005)
        x = data.cifar_for_library(source={str(tiny_cifar)!r}, cache={str(cache)!r})[0]
        t = data.imdb_for_library(source={str(tiny_imdb)!r}, cache={str(cache)!r})[0]
        print(float(x.sum()), int(t.sum()))
    """)
    ready = [tmp_path / f"ready-{n}" for n in range(2)]
    writers = [subprocess.Popen([sys.executable, "-c", script, str(flag)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for flag in ready]
    deadline = time.monotonic() + 60
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both imported and waiting: they decode and write at the same moment
    outputs = [writer.communicate(timeout=60) for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], outputs
    expected = cifar10._decode_cifar(tiny_cifar, True)["x_train"]
    assert outputs[0][0] == outputs[1][0]
    assert float(outputs[0][0].split()[0]) == float(expected.sum())
    assert not [f for f in (cache / data.ARRAYS_FOLDER).iterdir() if f.name.endswith(".part")]
    decodes["cifar"] = 0  # the direct decode above
    x = data.cifar_for_library(source=tiny_cifar, cache=cache)[0]
    data.imdb_for_library(source=tiny_imdb, cache=cache)
    assert decodes == {"cifar": 0, "imdb": 0} and same_bits(x, expected)


def test_cached_arrays_are_the_decoded_ones(tiny_cifar, tiny_imdb, tmp_path):
    """What a notebook holds after data.subset is the same with the cache as without it, bit for
    bit, and an ordinary in-memory C-ordered array (not a view of the cache file)."""
    cache = tmp_path / "cache"
    for _ in range(2):  # the first load builds the cache, the second maps it
        for channels_first in (True, False):
            for one_hot in (False, True):
                mapped = data.cifar_for_library(channels_first, one_hot, source=tiny_cifar, cache=cache)
                plain = data.cifar_for_library(channels_first, one_hot, source=tiny_cifar,
                                               cache=tmp_path / f"fresh-{time.monotonic_ns()}")
                for a, b in zip(mapped[:4], plain[:4]):
                    assert same_bits(a, b)
                for samples in (50, None):
                    for a, b in zip(data.subset(*mapped[:2], samples) + data.subset(*mapped[2:4], samples),
                                    data.subset(*plain[:2], samples) + data.subset(*plain[2:4], samples)):
                        assert same_bits(a, b) and a.flags.c_contiguous and a.flags.writeable
                        assert not data._is_mapped(a)
        tokens = data.imdb_for_library(source=tiny_imdb, cache=cache)
        fresh = data.imdb_for_library(source=tiny_imdb, cache=tmp_path / f"fresh-{time.monotonic_ns()}")
        for a, b in zip(tokens[:4], fresh[:4]):
            assert same_bits(a, b)
    # and both equal the decoding without any cache machinery
    decoded = cifar10._decode_cifar(tiny_cifar, True)
    x_train, y_train, x_test, y_test, _ = data.cifar_for_library(False, source=tiny_cifar, cache=cache)
    assert same_bits(x_train, np.ascontiguousarray(decoded["x_train"].transpose(0, 2, 3, 1)))
    assert same_bits(x_train, np.ascontiguousarray((decoded["x_train_raw"].astype(np.float32) / 255.0)
                                                   .transpose(0, 2, 3, 1)))


def _environment_pythons() -> dict:
    """{NumPy version: an environment's python} for every environment of envs/ ($ROSETTA_ENVS_DIR)."""
    from harness import venvs

    found = {}
    for python in sorted(venvs.envs_dir().glob("*/bin/python")):
        probe = subprocess.run([str(python), "-c", "import numpy, sys; print(numpy.__version__)"],
                               capture_output=True, text=True, timeout=120)
        if probe.returncode == 0:
            found.setdefault(probe.stdout.strip(), python)
    return found


READ_IN_ENVIRONMENT = """
import sys
sys.path.insert(0, REPOSITORY)
import numpy as np
from common import cifar10, data, imdb

def no_decoding(*args, **kwargs):
    raise AssertionError("decoded the archive: the cache was not used")

decode_cifar, decode_imdb = cifar10._decode_cifar, imdb._decode_imdb
cifar10._decode_cifar = imdb._decode_imdb = no_decoding
for channels_first in (True, False):
    x_train, y_train, x_test, y_test, _ = data.cifar_for_library(channels_first, source=CIFAR, cache=CACHE)
    assert data._is_mapped(x_train), type(x_train)
    decoded = decode_cifar(data.Path(CIFAR), True)  # this NumPy's own decoding, in memory
    layout = "" if channels_first else "_last"
    for got, want in ((x_train, decoded["x_train" + layout]), (x_test, decoded["x_test" + layout]),
                      (y_train, decoded["y_train"]), (y_test, decoded["y_test"])):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()
    x, y = data.subset(x_train, y_train, 50)
    assert not data._is_mapped(x) and x.flags.c_contiguous
tokens = data.imdb_for_library(source=IMDB, cache=CACHE)[0]
assert data._is_mapped(tokens) and tokens.dtype == np.int32
print("read", np.__version__)
"""


def test_every_numpy_of_the_environments_reads_the_cache(tiny_cifar, tiny_imdb, tmp_path):
    """The harness (this NumPy) builds the cache; the kernels' interpreters, down to the oldest
    NumPy (Python 3.6's), memory-map it without decoding, and get what they would have decoded."""
    pythons = _environment_pythons()
    if not pythons:
        pytest.skip("no environment is built in envs/ ($ROSETTA_ENVS_DIR): no kernel NumPy to try")
    cache = tmp_path / "cache"
    data.prepare("cifar", tiny_cifar, cache)
    data.prepare("imdb", tiny_imdb, cache)
    script = (f"REPOSITORY, CIFAR, IMDB, CACHE = {str(REPOSITORY)!r}, {str(tiny_cifar)!r}, {str(tiny_imdb)!r}, "
              f"{str(cache)!r}\n" + READ_IN_ENVIRONMENT)
    for version, python in pythons.items():  # the oldest NumPy among them
        done = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (python, done.stderr[-2000:])
        assert done.stdout.split() == ["read", version]


def test_the_harness_prepares_before_the_notebooks(tiny_cifar, tiny_imdb, tmp_path, decodes, capsys):
    """rosetta's load_data decodes into the cache; a notebook's own load then only maps it."""
    from harness import cli

    cache = tmp_path / "cache"
    args = cli.resolve_paths(cli.parse(["data", "--data-dir", str(cache), "--cifar10", str(tiny_cifar),
                                             "--imdb", str(tiny_imdb)]))
    provenances, errors = cli.load_data(args, ["cifar", "imdb"])
    assert errors == {} and decodes == {"cifar": 1, "imdb": 1}
    assert "CIFAR-10: 200 + 100 images, local copy" in capsys.readouterr().out
    x, *_, provenance = data.cifar_for_library(channels_first=False, source=str(tiny_cifar), cache=str(cache))
    tokens, *_, imdb_provenance = data.imdb_for_library(source=str(tiny_imdb), cache=str(cache))
    assert decodes == {"cifar": 1, "imdb": 1} and data._is_mapped(x) and data._is_mapped(tokens)
    assert provenance == provenances["cifar"] and imdb_provenance == provenances["imdb"]


def test_a_local_copys_checksum_is_read_once_until_its_files_change(tiny_cifar, tiny_imdb, tmp_path, monkeypatch):
    """A local copy is hashed once; later runs find its SHA-256 in the array cache's entry, which remembers
    its files' paths, sizes and times (on Python 3.6 hashing CIFAR-10 took most of a cached data phase).
    A changed file is hashed again, and the arrays are then the new file's."""
    cache = tmp_path / "cache"
    hashed = []
    sha256_of = data.sha256_of
    monkeypatch.setattr(data, "sha256_of", lambda path: hashed.append(Path(path).name) or sha256_of(path))
    copy = tmp_path / "copy" / "cifar-10-python.tar.gz"
    copy.parent.mkdir()
    copy.write_bytes(tiny_cifar.read_bytes())
    reviews = tmp_path / "copy" / "imdb.npz"
    reviews.write_bytes(tiny_imdb.read_bytes())
    first = cifar10.load_cifar10(source=copy, cache=cache)
    tokens = data.imdb_for_library(source=reviews, cache=cache)
    assert sorted(hashed) == ["cifar-10-python.tar.gz", "imdb.npz"]
    again = cifar10.load_cifar10(source=copy, cache=cache)
    tokens_again = data.imdb_for_library(source=reviews, cache=cache)
    assert sorted(hashed) == ["cifar-10-python.tar.gz", "imdb.npz"]  # neither read again
    assert again[4]["sha256"] == first[4]["sha256"] == sha256_of(copy)
    assert tokens_again[4]["sha256"] == tokens[4]["sha256"] == sha256_of(reviews)

    # Other contents under the same name: a new time, so hashed again, and the other data's arrays.
    other = fakedata.make_cifar_tarball(tmp_path / "other" / "cifar-10-python.tar.gz", seed=1)
    copy.write_bytes(other.read_bytes())
    stat = copy.stat()
    os.utime(str(copy), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    changed = cifar10.load_cifar10(source=copy, cache=cache)
    assert hashed.count("cifar-10-python.tar.gz") == 2 and changed[4]["sha256"] == sha256_of(other)
    assert not np.array_equal(changed[0], first[0])

    # An entry made before entries remembered their copies learns this one on its next read.
    for manifest in (cache / data.ARRAYS_FOLDER).glob("cifar10-*.json"):
        found = json.loads(manifest.read_text())
        del found["copies"]
        manifest.write_text(json.dumps(found))
    for expected in (3, 3):
        assert cifar10.load_cifar10(source=copy, cache=cache)[4]["sha256"] == sha256_of(other)
        assert hashed.count("cifar-10-python.tar.gz") == expected
