"""The data path of common/data.py: download, checksum, cache, local copies, parsing.

Everything runs on small archives in the official formats (tests/fakedata.py),
served from 127.0.0.1; no test reaches any other host. The one test on the real
IMDB file runs only where ../shared/data holds it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import pickletools
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pooch
import pytest

import fakedata
from common import cifar10, data, imdb, params

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REAL_IMDB = SHARED_DATA / "imdb" / "imdb.npz"


# --- helpers -----------------------------------------------------------------------

@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No ROSETTA_* variable of this machine may leak into a test, and the default cache folder
    (where a local copy's decoded arrays go) is the test's own, never the user's."""
    for name in ("ROSETTA_CIFAR10", "ROSETTA_IMDB", "ROSETTA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def sha256_hex(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def known_hash(path: Path, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, Path(path).read_bytes()).hexdigest()}"


def remote_like(official: data.RemoteFile, base_url: str, served: Path, algorithm="sha256"):
    """``official`` (its name, file name and env var) served from ``base_url`` with ``served``'s real hash."""
    return dataclasses.replace(official, url=f"{base_url}/{official.filename}",
                               known_hash=known_hash(served, algorithm))


def serve_copy(server, archive: Path, name: str) -> Path:
    """Put a copy of ``archive`` in the server's folder under ``name``."""
    served = Path(server.directory) / name
    shutil.copyfile(archive, served)
    return served


def expected_cifar(per_batch=40, test=100, seed=0):
    """The tiny CIFAR arrays straight from the generator, not through data.py."""
    batches = fakedata.cifar_batches(per_batch, test, seed)
    images = lambda names: np.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
    labels = lambda names: np.concatenate([batches[n][b"labels"] for n in names])
    train = fakedata.CIFAR_TRAIN_BATCHES
    return images(train), labels(train), images(["test_batch"]), labels(["test_batch"])


def cut(source: Path, destination: Path, keep: int) -> Path:
    destination.write_bytes(Path(source).read_bytes()[:keep])
    return destination


def listing(folder: Path) -> list[str]:
    """The downloads in a cache folder (its arrays/ folder is the array cache, tested in test_data_cache.py)."""
    if not Path(folder).exists():
        return []
    return sorted(p.name for p in Path(folder).iterdir() if p.name != data.ARRAYS_FOLDER)


def keras_numbering(reviews, num_words=30000, start_char=1, oov_char=2, index_from=3):
    """keras.datasets.imdb.load_data's numbering, written out as Keras writes it."""
    xs = [[start_char] + [w + index_from for w in x] for x in reviews]
    return [[w if w < num_words else oov_char for w in x] for x in xs]


def last_tokens_padded_right(sequences, maxlen=150):
    """pad_sequences(..., maxlen, truncating="pre", padding="post"), with plain lists."""
    rows = [list(s[-maxlen:]) + [0] * (maxlen - len(s[-maxlen:])) for s in sequences]
    return np.array(rows, dtype=np.int64)


def keras_shuffle(x_train, y_train, x_test, y_test, seed=113):
    """Keras' load_data shuffle: one RandomState, train first, then test."""
    rng = np.random.RandomState(seed)
    indices = np.arange(len(x_train))
    rng.shuffle(indices)
    x_train, y_train = x_train[indices], y_train[indices]
    indices = np.arange(len(x_test))
    rng.shuffle(indices)
    return x_train, y_train, x_test[indices], y_test[indices]


# --- the fake archives are in the official formats ------------------------------------

def test_fake_cifar_tarball_has_official_layout_and_pickles(tiny_cifar):
    assert tiny_cifar.name == "cifar-10-python.tar.gz"
    with tarfile.open(tiny_cifar, "r:gz") as archive:
        names = archive.getnames()
        raw = archive.extractfile("cifar-10-batches-py/data_batch_1").read()
        meta = pickle.loads(archive.extractfile("cifar-10-batches-py/batches.meta").read(),
                            encoding="bytes")
    assert names[0] == "cifar-10-batches-py"
    assert sorted(names[1:]) == sorted(f"cifar-10-batches-py/{n}" for n in fakedata.CIFAR_MEMBER_ORDER)
    opcodes = [(op.name, arg) for op, arg, _ in pickletools.genops(io.BytesIO(raw))]
    assert opcodes[0] == ("PROTO", 2)
    assert ("SHORT_BINSTRING", "data") in opcodes  # a Python 2 str key, as in the originals
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in opcodes
    as_bytes = pickle.loads(raw, encoding="bytes")
    as_latin1 = pickle.loads(raw, encoding="latin1")
    assert set(as_bytes) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert set(as_latin1) == {"batch_label", "labels", "data", "filenames"}
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (40, 3072)
    assert np.array_equal(as_bytes[b"data"], as_latin1["data"])
    assert as_bytes[b"batch_label"] == b"training batch 1 of 5"
    assert sorted(set(as_bytes[b"labels"])) == list(range(10))
    assert meta[b"label_names"][3] == b"cat" and meta[b"num_vis"] == 3072
    # The tarball is reproducible, byte for byte.
    assert make_again(tiny_cifar) == tiny_cifar.read_bytes()


def make_again(tiny_cifar: Path) -> bytes:
    other = fakedata.make_cifar_tarball(tiny_cifar.parent / "again" / tiny_cifar.name)
    try:
        return other.read_bytes()
    finally:
        shutil.rmtree(other.parent)


def test_fake_cifar_classes_are_learnable(tiny_cifar):
    x_train, y_train, x_test, y_test, _ = cifar10.load_cifar10(source=tiny_cifar)
    colour = lambda x: x.reshape(len(x), 3, -1).mean(axis=2)
    means = np.stack([colour(x_train[y_train == c]).mean(axis=0) for c in range(10)])
    distances = ((colour(x_test)[:, None, :] - means[None]) ** 2).sum(axis=2)
    accuracy = (distances.argmin(axis=1) == y_test).mean()
    assert accuracy > 0.5, accuracy  # chance is 0.1


def test_fake_imdb_has_official_keys_and_the_cases_we_need(tiny_imdb):
    with np.load(tiny_imdb, allow_pickle=True) as archive:
        assert sorted(archive.files) == ["x_test", "x_train", "y_test", "y_train"]
        x_train, y_train = archive["x_train"], archive["y_train"]
    assert x_train.dtype == object and len(x_train) == 200
    assert all(isinstance(review, list) for review in x_train)
    assert all(isinstance(word, int) for word in x_train[0])
    lengths = [len(review) for review in x_train]
    assert min(lengths) < 150 < max(lengths)
    words = np.concatenate([np.asarray(review) for review in x_train])
    assert words.min() >= 1 and words.max() <= fakedata.IMDB_MAX_WORD
    assert (words >= params.IMDB_VOCAB - params.IMDB_INDEX_FROM).any()  # some become OOV
    assert sorted(set(y_train.tolist())) == [0, 1] and y_train.sum() == 100
    # The label signal: words typical of one label.
    positive = np.concatenate([np.asarray(r) for r, y in zip(x_train, y_train) if y == 1])
    in_range = lambda w, r: ((w >= r[0]) & (w < r[1])).mean()
    assert in_range(positive, fakedata.IMDB_POSITIVE) > 0.2
    assert in_range(positive, fakedata.IMDB_NEGATIVE) == 0.0


# --- download, checksum, parse -------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_fetch_downloads_and_verifies(tiny_cifar, http_server, tmp_path, algorithm):
    served = serve_copy(http_server, tiny_cifar, cifar10.CIFAR10.filename)
    remote = remote_like(cifar10.CIFAR10, http_server, served, algorithm)
    cache = tmp_path / "cache"
    path = data.fetch(remote, cache=cache, progress=False)
    assert path == cache / "cifar-10-python.tar.gz"
    assert path.read_bytes() == tiny_cifar.read_bytes()
    assert http_server.requests == ["/cifar-10-python.tar.gz"]
    assert listing(cache) == ["cifar-10-python.tar.gz"]


def test_cifar_download_parses(tiny_cifar, http_server, tmp_path, monkeypatch):
    served = serve_copy(http_server, tiny_cifar, cifar10.CIFAR10.filename)
    remote = remote_like(cifar10.CIFAR10, http_server, served)
    monkeypatch.setattr(cifar10, "CIFAR10", remote)
    cache = tmp_path / "cache"

    x_train, y_train, x_test, y_test, provenance = cifar10.load_cifar10(cache=cache)

    assert x_train.dtype == np.uint8 and x_train.shape == (200, 3, 32, 32)
    assert x_test.dtype == np.uint8 and x_test.shape == (100, 3, 32, 32)
    assert y_train.dtype == np.int64 and y_train.shape == (200,)
    assert y_test.dtype == np.int64 and y_test.shape == (100,)
    assert set(np.unique(y_train)) == set(range(10))
    expected = expected_cifar()
    for got, want in zip((x_train, y_train, x_test, y_test), expected):
        assert np.array_equal(got, want)
    assert provenance == {"source": "official", "url": remote.url,
                          "path": str((cache / "cifar-10-python.tar.gz").resolve()),
                          "checksum": remote.known_hash}


def test_cifar_for_library_formats(tiny_cifar, http_server, tmp_path, monkeypatch):
    served = serve_copy(http_server, tiny_cifar, cifar10.CIFAR10.filename)
    monkeypatch.setattr(cifar10, "CIFAR10", remote_like(cifar10.CIFAR10, http_server, served))
    cache = tmp_path / "cache"
    raw_train, raw_y_train, raw_test, raw_y_test, _ = cifar10.load_cifar10(cache=cache)

    first = data.cifar_for_library(channels_first=True, cache=cache)
    x_train, y_train, x_test, y_test, provenance = first
    assert x_train.dtype == np.float32 and x_train.shape == (200, 3, 32, 32)
    assert x_test.dtype == np.float32 and x_test.shape == (100, 3, 32, 32)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert x_train.max() > 0.9 and x_train.min() < 0.1  # scaled by 1/255, not squashed
    np.testing.assert_allclose(x_train, raw_train / 255.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(x_test, raw_test / 255.0, rtol=0, atol=1e-6)
    assert np.array_equal(y_train, raw_y_train) and y_train.dtype == np.int64
    assert provenance["source"] == "official"

    last_x_train, _, last_x_test, *_ = data.cifar_for_library(channels_first=False, cache=cache)
    assert last_x_train.shape == (200, 32, 32, 3) and last_x_test.shape == (100, 32, 32, 3)
    assert last_x_train.dtype == np.float32 and last_x_train.flags["C_CONTIGUOUS"]
    assert np.array_equal(last_x_train, x_train.transpose(0, 2, 3, 1))
    assert np.array_equal(last_x_test, x_test.transpose(0, 2, 3, 1))
    # Row 0, pixel (2, 5): channels last holds CIFAR's R, G, B planes at bytes 2*32+5 + k*1024.
    flat = expected_cifar()[0].reshape(200, 3072)
    assert np.array_equal(np.rint(last_x_train[0, 2, 5] * 255), flat[0, [69, 1024 + 69, 2048 + 69]])

    _, hot_train, _, hot_test, _ = data.cifar_for_library(one_hot_labels=True, cache=cache)
    assert hot_train.dtype == np.float32 and hot_train.shape == (200, 10)
    assert hot_test.shape == (100, 10)
    assert np.array_equal(hot_train.argmax(axis=1), raw_y_train)
    assert np.array_equal(hot_train.sum(axis=1), np.ones(200, np.float32))
    assert set(np.unique(hot_train)) == {0.0, 1.0}
    assert http_server.requests == ["/cifar-10-python.tar.gz"]  # one download for all four calls


def test_imdb_download_parses(tiny_imdb, http_server, tmp_path, monkeypatch):
    served = serve_copy(http_server, tiny_imdb, imdb.IMDB.filename)
    remote = remote_like(imdb.IMDB, http_server, served)
    monkeypatch.setattr(imdb, "IMDB", remote)
    cache = tmp_path / "cache"

    x_train, y_train, x_test, y_test, provenance = imdb.load_imdb(cache=cache)
    with np.load(tiny_imdb, allow_pickle=True) as original:
        assert list(x_train) == list(original["x_train"]) and list(x_test) == list(original["x_test"])
        assert np.array_equal(y_train, original["y_train"]) and np.array_equal(y_test, original["y_test"])
    assert provenance == {"source": "official", "url": remote.url,
                          "path": str((cache / "imdb.npz").resolve()), "checksum": remote.known_hash}

    tokens_train, labels_train, tokens_test, labels_test, _ = data.imdb_for_library(cache=cache)
    assert tokens_train.dtype == np.int32 and tokens_train.shape == (200, 150)
    assert tokens_test.dtype == np.int32 and tokens_test.shape == (200, 150)
    assert labels_train.dtype == np.int64 and labels_train.shape == (200,)
    assert 0 <= tokens_train.min() and tokens_train.max() < 30000
    assert http_server.requests == ["/imdb.npz"]


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_wrong_checksum_rejected_and_not_cached(tiny_cifar, http_server, tmp_path, algorithm):
    served = serve_copy(http_server, tiny_cifar, cifar10.CIFAR10.filename)
    remote = remote_like(cifar10.CIFAR10, http_server, served, algorithm)
    wrong = f"{algorithm}:{'0' * len(remote.known_hash.split(':')[1])}"
    remote = dataclasses.replace(remote, known_hash=wrong)
    cache = tmp_path / "cache"
    with pytest.raises(data.DataError, match="checksum") as caught:
        data.fetch(remote, cache=cache, progress=False)
    assert remote.url in str(caught.value) and wrong in str(caught.value)
    assert "ROSETTA_CIFAR10" in str(caught.value)
    assert http_server.requests == ["/cifar-10-python.tar.gz"]  # it did download, then refused
    assert not (cache / "cifar-10-python.tar.gz").exists()
    assert listing(cache) == []  # no temporary file either


def test_wrong_checksum_through_the_loader(tiny_imdb, http_server, tmp_path, monkeypatch):
    serve_copy(http_server, tiny_imdb, imdb.IMDB.filename)
    bad = dataclasses.replace(imdb.IMDB, url=f"{http_server}/imdb.npz", known_hash="sha256:" + "ab" * 32)
    monkeypatch.setattr(imdb, "IMDB", bad)
    with pytest.raises(data.DataError, match="checksum"):
        data.imdb_for_library(cache=tmp_path / "cache")
    assert listing(tmp_path / "cache") == []


# --- truncated or corrupt local archives ---------------------------------------------

@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.9, 0.999])
def test_truncated_cifar_tarball_rejected(tiny_cifar, tmp_path, fraction):
    size = tiny_cifar.stat().st_size
    broken = cut(tiny_cifar, tmp_path / "cifar-10-python.tar.gz", int(size * fraction))
    with pytest.raises(data.DataError) as caught:
        cifar10.load_cifar10(source=broken, cache=tmp_path / "cache")
    message = str(caught.value)
    assert str(broken) in message
    assert re.search(r"truncated|corrupt", message)
    assert not (tmp_path / "cache").exists()  # a local copy never touches the cache


def test_truncated_cifar_tarball_in_a_folder_rejected(tiny_cifar, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    broken = cut(tiny_cifar, folder / "cifar-10-python.tar.gz", tiny_cifar.stat().st_size // 2)
    with pytest.raises(data.DataError, match="truncated or corrupt") as caught:
        data.cifar_for_library(source=folder)
    assert str(broken) in str(caught.value)


def test_corrupt_cifar_batch_rejected(tmp_path):
    folder = fakedata.make_cifar_folder(tmp_path)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(data.DataError, match="not a CIFAR-10 batch") as caught:
        cifar10.load_cifar10(source=folder)
    assert str(batch) in str(caught.value)


@pytest.mark.parametrize("keep", ["half", "all_but_one", 10])
def test_truncated_imdb_rejected(tiny_imdb, tmp_path, keep):
    size = tiny_imdb.stat().st_size
    keep = {"half": size // 2, "all_but_one": size - 1}.get(keep, keep)
    broken = cut(tiny_imdb, tmp_path / "imdb.npz", keep)
    with pytest.raises(data.DataError) as caught:
        data.imdb_for_library(source=broken)
    message = str(caught.value)
    assert str(broken) in message
    assert re.search(r"truncated|corrupt", message)


def test_corrupt_imdb_rejected(tiny_imdb, tmp_path):
    content = bytearray(tiny_imdb.read_bytes())
    middle = len(content) // 2
    content[middle:middle + 4] = bytes(255 - b for b in content[middle:middle + 4])
    broken = tmp_path / "imdb.npz"
    broken.write_bytes(bytes(content))
    with pytest.raises(data.DataError, match="truncated or corrupt") as caught:
        imdb.load_imdb(source=broken)
    assert str(broken) in str(caught.value)


@pytest.mark.parametrize("kind", ["npy", "pickle"])
def test_imdb_that_is_not_an_npz_rejected(tmp_path, kind):
    wrong = tmp_path / "imdb.npz"
    if kind == "npy":
        with open(wrong, "wb") as f:
            np.save(f, np.arange(3))
    else:
        wrong.write_bytes(pickle.dumps({"x_train": [[1, 2]]}))
    with pytest.raises(data.DataError, match="not an .npz archive") as caught:
        data.imdb_for_library(source=wrong)
    assert str(wrong) in str(caught.value)


def test_imdb_missing_array_rejected(tmp_path):
    incomplete = tmp_path / "imdb.npz"
    np.savez(incomplete, x_train=np.zeros(3), y_train=np.zeros(3))
    with pytest.raises(data.DataError, match="x_test"):
        imdb.load_imdb(source=incomplete)


# --- the cache ---------------------------------------------------------------------

def test_second_call_uses_the_cache_without_network(tiny_cifar, http_server, closed_port_url,
                                                    tmp_path, monkeypatch):
    served = serve_copy(http_server, tiny_cifar, cifar10.CIFAR10.filename)
    remote = remote_like(cifar10.CIFAR10, http_server, served)
    cache = tmp_path / "cache"
    first = data.fetch(remote, cache=cache, progress=False)
    stamp = first.stat().st_mtime_ns
    http_server.stop()

    again = data.fetch(remote, cache=cache, progress=False)  # the server is gone
    assert again == first and again.stat().st_mtime_ns == stamp
    assert again.read_bytes() == tiny_cifar.read_bytes()

    elsewhere = dataclasses.replace(remote, url=f"{closed_port_url}/cifar-10-python.tar.gz")
    assert data.fetch(elsewhere, cache=cache, progress=False) == first
    monkeypatch.setattr(cifar10, "CIFAR10", elsewhere)
    x_train, *_, provenance = cifar10.load_cifar10(cache=cache)
    assert x_train.shape == (200, 3, 32, 32) and provenance["source"] == "official"
    assert http_server.requests == ["/cifar-10-python.tar.gz"]
    assert listing(cache) == ["cifar-10-python.tar.gz"]


def test_interrupted_download_is_not_trusted(tiny_cifar, truncated_server, http_server, tmp_path):
    served = serve_copy(truncated_server, tiny_cifar, cifar10.CIFAR10.filename)
    remote = remote_like(cifar10.CIFAR10, truncated_server, served)
    cache = tmp_path / "cache"
    with pytest.raises(data.DataError) as caught:
        data.fetch(remote, cache=cache, progress=False)
    assert remote.url in str(caught.value)
    assert truncated_server.requests == ["/cifar-10-python.tar.gz"]
    assert listing(cache) == []  # neither the target nor a half-written temporary file

    # A later run, with the network back, downloads it whole.
    serve_copy(http_server, tiny_cifar, cifar10.CIFAR10.filename)
    good = dataclasses.replace(remote, url=f"{http_server}/cifar-10-python.tar.gz")
    path = data.fetch(good, cache=cache, progress=False)
    assert sha256_hex(path) == sha256_hex(tiny_cifar)
    assert http_server.requests == ["/cifar-10-python.tar.gz"]


def test_corrupted_cache_is_downloaded_again(tiny_cifar, http_server, tmp_path, capsys):
    served = serve_copy(http_server, tiny_cifar, cifar10.CIFAR10.filename)
    remote = remote_like(cifar10.CIFAR10, http_server, served)
    cache = tmp_path / "cache"
    path = data.fetch(remote, cache=cache, progress=False)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(content))
    capsys.readouterr()

    again = data.fetch(remote, cache=cache, progress=False)
    assert again == path
    assert again.read_bytes() == tiny_cifar.read_bytes()
    assert http_server.requests == ["/cifar-10-python.tar.gz"] * 2
    assert "does not match" in capsys.readouterr().out
    assert listing(cache) == ["cifar-10-python.tar.gz"]


def test_corrupted_cache_without_network_is_not_used(tiny_imdb, http_server, closed_port_url,
                                                      tmp_path, monkeypatch):
    served = serve_copy(http_server, tiny_imdb, imdb.IMDB.filename)
    remote = remote_like(imdb.IMDB, http_server, served)
    cache = tmp_path / "cache"
    path = data.fetch(remote, cache=cache, progress=False)
    path.write_bytes(path.read_bytes()[:-100])  # truncated in the cache
    offline = dataclasses.replace(remote, url=f"{closed_port_url}/imdb.npz")
    monkeypatch.setattr(imdb, "IMDB", offline)
    with pytest.raises(data.DataError, match="could not download"):
        data.imdb_for_library(cache=cache)


# --- no network, no copy -------------------------------------------------------------

@pytest.mark.parametrize("official", [cifar10.CIFAR10, imdb.IMDB], ids=["cifar", "imdb"])
def test_no_network_and_no_copy(official, closed_port_url, tmp_path, monkeypatch):
    remote = dataclasses.replace(official, url=f"{closed_port_url}/{official.filename}")
    monkeypatch.setattr(*((cifar10, "CIFAR10") if official is cifar10.CIFAR10 else (imdb, "IMDB")), remote)
    loader = cifar10.load_cifar10 if official.env_var == "ROSETTA_CIFAR10" else imdb.load_imdb
    cache = tmp_path / "cache"
    with pytest.raises(data.DataError) as caught:
        loader(cache=cache)
    message = str(caught.value)
    assert remote.url in message
    assert official.env_var in message and "local copy" in message
    assert listing(cache) == []


def test_the_official_remotes_are_as_published():
    assert cifar10.CIFAR10.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar10.CIFAR10.known_hash == "md5:c58f30108f718f92721af3b95e74349a"
    assert cifar10.CIFAR10.env_var == "ROSETTA_CIFAR10"
    assert imdb.IMDB.url == "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"
    assert imdb.IMDB.known_hash == ("sha256:69664113be75683a8fe16e3ed0ab59fda8886cb3"
                                    "cd7ada244f7d9544e4676b9f")
    assert imdb.IMDB.env_var == "ROSETTA_IMDB"


# --- local copies --------------------------------------------------------------------

def unpack(tarball: Path, destination: Path) -> Path:
    with tarfile.open(tarball, "r:gz") as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(destination, filter="data")
        else:
            archive.extractall(destination)
    return destination


def test_cifar_local_copies_agree(tiny_cifar, tmp_path):
    unpacked = unpack(tiny_cifar, tmp_path / "unpacked")
    batches_folder = unpacked / "cifar-10-batches-py"
    holding_tarball = tmp_path / "holding"
    holding_tarball.mkdir()
    shutil.copyfile(tiny_cifar, holding_tarball / "cifar-10-python.tar.gz")
    cache = tmp_path / "cache"
    expected = expected_cifar()

    results = {}
    for source in (tiny_cifar, str(tiny_cifar), batches_folder, unpacked, holding_tarball):
        *arrays, provenance = cifar10.load_cifar10(source=source, cache=cache)
        for got, want in zip(arrays, expected):
            assert np.array_equal(got, want), source
        results[str(source)] = provenance
        assert provenance["source"] == "local copy"
        assert re.fullmatch(r"[0-9a-f]{64}", provenance["sha256"])

    assert results[str(tiny_cifar)] == {"source": "local copy", "path": str(tiny_cifar.resolve()),
                                        "sha256": sha256_hex(tiny_cifar)}
    assert results[str(holding_tarball)]["path"] == str((holding_tarball / tiny_cifar.name).resolve())
    assert results[str(holding_tarball)]["sha256"] == sha256_hex(tiny_cifar)
    # A folder and the folder holding it name the same batches, with one combined digest.
    assert results[str(batches_folder)] == results[str(unpacked)]
    assert results[str(batches_folder)]["path"] == str(batches_folder.resolve())
    combined = hashlib.sha256("".join(
        sha256_hex(batches_folder / n) for n in fakedata.CIFAR_TRAIN_BATCHES + ["test_batch"]
    ).encode()).hexdigest()
    assert results[str(batches_folder)]["sha256"] == combined
    assert listing(cache) == []  # local copies never download (the cache holds only their arrays)


def test_cifar_local_copy_digest_changes_with_content(tiny_cifar, tmp_path):
    folder = unpack(tiny_cifar, tmp_path / "unpacked") / "cifar-10-batches-py"
    *_, before = cifar10.load_cifar10(source=folder)
    other = fakedata.make_cifar_folder(tmp_path / "other", seed=1)
    shutil.copyfile(other / "test_batch", folder / "test_batch")
    *_, after = cifar10.load_cifar10(source=folder)
    assert before["sha256"] != after["sha256"]


def test_cifar_for_library_from_a_folder(tiny_cifar, tmp_path):
    unpacked = unpack(tiny_cifar, tmp_path / "unpacked")
    from_tarball = data.cifar_for_library(channels_first=False, one_hot_labels=True, source=tiny_cifar)
    from_folder = data.cifar_for_library(channels_first=False, one_hot_labels=True, source=unpacked)
    for a, b in zip(from_tarball[:4], from_folder[:4]):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_environment_variables_name_local_copies(tiny_cifar, tiny_imdb, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROSETTA_CIFAR10", str(tiny_cifar))
    x_train, *_, provenance = cifar10.load_cifar10(cache=cache)
    assert x_train.shape == (200, 3, 32, 32)
    assert provenance == {"source": "local copy", "path": str(tiny_cifar.resolve()),
                          "sha256": sha256_hex(tiny_cifar)}

    monkeypatch.setenv("ROSETTA_IMDB", str(tiny_imdb.parent))  # a folder holding imdb.npz
    tokens, *_, provenance = data.imdb_for_library(cache=cache)
    assert tokens.shape == (200, 150)
    assert provenance == {"source": "local copy", "path": str(tiny_imdb.resolve()),
                          "sha256": sha256_hex(tiny_imdb)}
    assert listing(cache) == []  # nothing downloaded: the cache holds only the decoded arrays


def test_source_argument_wins_over_environment(tiny_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("ROSETTA_CIFAR10", str(tmp_path / "elsewhere"))
    *_, provenance = cifar10.load_cifar10(source=tiny_cifar)
    assert provenance["path"] == str(tiny_cifar.resolve())


@pytest.mark.parametrize("loader", [cifar10.load_cifar10, data.cifar_for_library,
                                    imdb.load_imdb, data.imdb_for_library])
def test_missing_source_named(loader, tmp_path):
    missing = tmp_path / "no" / "such" / "copy"
    with pytest.raises(data.DataError, match="does not exist") as caught:
        loader(source=missing, cache=tmp_path / "cache")
    assert str(missing) in str(caught.value)
    assert not (tmp_path / "cache").exists()


def test_missing_copy_named_by_environment(tmp_path, monkeypatch):
    missing = tmp_path / "gone.npz"
    monkeypatch.setenv("ROSETTA_IMDB", str(missing))
    with pytest.raises(data.DataError, match="ROSETTA_IMDB") as caught:
        imdb.load_imdb(cache=tmp_path / "cache")
    assert str(missing) in str(caught.value)


def test_folders_without_the_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DataError, match="data_batch_1") as caught:
        cifar10.load_cifar10(source=empty)
    assert str(empty) in str(caught.value)
    with pytest.raises(data.DataError, match="imdb.npz") as caught:
        imdb.load_imdb(source=empty)
    assert str(empty) in str(caught.value)


def test_imdb_local_copies_agree(tiny_imdb):
    from_file = imdb.load_imdb(source=tiny_imdb)
    from_folder = imdb.load_imdb(source=tiny_imdb.parent)
    for a, b in zip(from_file[:4], from_folder[:4]):
        assert list(a) == list(b)
    assert from_file[4] == from_folder[4] == {"source": "local copy", "path": str(tiny_imdb.resolve()),
                                              "sha256": sha256_hex(tiny_imdb)}


# --- where the cache is --------------------------------------------------------------

def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    default = data.cache_dir()
    assert default == Path(pooch.os_cache("dl-rosetta"))
    assert default == tmp_path / "xdg" / "dl-rosetta"

    monkeypatch.setenv("ROSETTA_DATA_DIR", str(tmp_path / "from-env"))
    assert data.cache_dir() == tmp_path / "from-env"
    assert data.cache_dir(None) == tmp_path / "from-env"
    assert data.cache_dir(tmp_path / "from-arg") == tmp_path / "from-arg"
    assert data.cache_dir(str(tmp_path / "from-arg")) == tmp_path / "from-arg"

    monkeypatch.setenv("ROSETTA_DATA_DIR", "~/rosetta-data")
    assert data.cache_dir() == Path.home() / "rosetta-data"
    assert data.cache_dir("~/elsewhere") == Path.home() / "elsewhere"


def test_fetch_follows_the_cache_precedence(tiny_imdb, http_server, tmp_path, monkeypatch):
    served = serve_copy(http_server, tiny_imdb, imdb.IMDB.filename)
    remote = remote_like(imdb.IMDB, http_server, served)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("ROSETTA_DATA_DIR", str(tmp_path / "from-env"))

    assert data.fetch(remote, cache=tmp_path / "from-arg", progress=False) == \
        tmp_path / "from-arg" / "imdb.npz"
    assert not (tmp_path / "from-env").exists()
    assert data.fetch(remote, progress=False) == tmp_path / "from-env" / "imdb.npz"
    monkeypatch.delenv("ROSETTA_DATA_DIR")
    assert data.fetch(remote, progress=False) == tmp_path / "xdg" / "dl-rosetta" / "imdb.npz"
    assert http_server.requests == ["/imdb.npz"] * 3


def test_unusable_cache_folder(tiny_imdb, http_server, tmp_path):
    served = serve_copy(http_server, tiny_imdb, imdb.IMDB.filename)
    remote = remote_like(imdb.IMDB, http_server, served)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(data.DataError, match="ROSETTA_DATA_DIR") as caught:
        data.fetch(remote, cache=blocker / "cache", progress=False)
    assert str(blocker / "cache") in str(caught.value)
    assert http_server.requests == []


# --- IMDB numbering, Keras' way ------------------------------------------------------

def test_number_reviews_short_review():
    row = imdb.number_reviews([[5, 10, 29996, 29997, 40000]])
    assert row.dtype == np.int32 and row.shape == (1, 150)
    # start token, words shifted by 3, words shifted to 30000 or more become 2, zeros after.
    assert row[0, :6].tolist() == [1, 8, 13, 29999, 2, 2]
    assert not row[0, 6:].any()


def test_number_reviews_long_review():
    words = list(range(1, 201))                    # 200 words: 201 tokens with the start
    row = imdb.number_reviews([words])[0]
    assert row.tolist() == [w + 3 for w in range(51, 201)]  # the last 150; start token dropped
    assert row[0] != 1 and row.all()


def test_number_reviews_at_the_length_boundary():
    rows = imdb.number_reviews([list(range(4, 153)), list(range(4, 154)), []])
    assert rows[0].tolist() == [1] + [w + 3 for w in range(4, 153)]  # 149 words: fits exactly
    assert rows[1].tolist() == [w + 3 for w in range(4, 154)]        # 150 words: start dropped
    assert rows[2].tolist() == [1] + [0] * 149                        # empty review


def test_number_reviews_other_sizes():
    rows = imdb.number_reviews([[1, 2, 3, 4, 5, 6], [7]], vocab=8, seq_len=4)
    assert rows.tolist() == [[6, 7, 2, 2], [1, 2, 0, 0]]


def test_number_reviews_matches_keras(tiny_imdb):
    with np.load(tiny_imdb, allow_pickle=True) as archive:
        reviews = list(archive["x_train"]) + list(archive["x_test"])
    got = imdb.number_reviews(reviews)
    want = last_tokens_padded_right(keras_numbering(reviews))
    assert np.array_equal(got, want)
    assert (got == 2).any() and (got[:, -1] == 0).any() and (got[:, 0] != 1).any()


def test_imdb_for_library_uses_keras_order(tiny_imdb):
    with np.load(tiny_imdb, allow_pickle=True) as archive:
        raw = [archive[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    x_train, y_train, x_test, y_test = keras_shuffle(*raw)

    tokens_train, labels_train, tokens_test, labels_test, _ = data.imdb_for_library(source=tiny_imdb)

    assert np.array_equal(tokens_train, last_tokens_padded_right(keras_numbering(x_train)))
    assert np.array_equal(tokens_test, last_tokens_padded_right(keras_numbering(x_test)))
    assert labels_train.dtype == np.int64 and np.array_equal(labels_train, y_train)
    assert np.array_equal(labels_test, y_test)
    # The order is shuffled (the file holds positives first) ...
    assert labels_train[:100].sum() not in (0, 100)
    # ... and the test set is shuffled by the same generator after the training set,
    # not by a fresh RandomState(113) (which would repeat the training order).
    fresh = np.arange(len(raw[2]))
    np.random.RandomState(113).shuffle(fresh)
    assert not np.array_equal(tokens_test, last_tokens_padded_right(keras_numbering(raw[2][fresh])))


# --- subsets -------------------------------------------------------------------------

def test_subset_first_rows():
    x, y = np.arange(20).reshape(10, 2), np.arange(10) * 10
    sub_x, sub_y = data.subset(x, y, 3)
    assert sub_x.tolist() == [[0, 1], [2, 3], [4, 5]] and sub_y.tolist() == [0, 10, 20]
    assert data.subset(x, y, np.int64(10))[1].tolist() == y.tolist()
    all_x, all_y = data.subset(x, y, None)
    assert all_x is x and all_y is y


@pytest.mark.parametrize("samples", [11, 0, -2, 2.5, "3"])
def test_subset_rejects_bad_sizes(samples):
    x, y = np.zeros((10, 2)), np.zeros(10)
    with pytest.raises(ValueError) as caught:
        data.subset(x, y, samples, what="train_samples")
    message = str(caught.value)
    assert repr(samples) in message or str(samples) in message
    assert "train_samples" in message


def test_subset_too_many_names_what_is_available():
    with pytest.raises(ValueError, match=r"train_samples=11 .*10 available"):
        data.subset(np.zeros((10, 2)), np.zeros(10), 11, what="train_samples")


# --- the real IMDB, where this machine has it ----------------------------------------

def test_real_imdb_local_copy():
    if not REAL_IMDB.is_file():
        pytest.skip(f"no real IMDB copy at {REAL_IMDB} (only some machines have ../shared/data)")
    x_train, y_train, x_test, y_test, provenance = data.imdb_for_library(source=REAL_IMDB)
    assert x_train.shape == (25_000, 150) and x_test.shape == (25_000, 150)
    assert x_train.dtype == np.int32 and x_test.dtype == np.int32
    assert max(x_train.max(), x_test.max()) < 30_000
    assert min(x_train.min(), x_test.min()) >= 0
    assert (x_train == 2).any()                         # out-of-vocabulary words exist
    assert np.bincount(y_train).tolist() == [12_500, 12_500]
    assert np.bincount(y_test).tolist() == [12_500, 12_500]
    assert provenance["source"] == "local copy"
    assert provenance["path"] == str(REAL_IMDB.resolve())
    assert provenance["sha256"] == sha256_hex(REAL_IMDB)
    # Keras' first training review (218 tokens, positive): ends "... 5345, 19, 178, 32",
    # so its last 150 tokens fill the row and its start token is gone.
    assert y_train[0] == 1 and y_train[:10].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 1, 0]
    assert x_train[0, -4:].tolist() == [5345, 19, 178, 32] and x_train[0, 0] != 1


# --- what the messages advise -------------------------------------------------------------------

def test_a_corrupt_local_copy_is_to_be_replaced_not_deleted(tiny_cifar, tiny_imdb, tmp_path):
    for load, original, flag in ((cifar10.load_cifar10, tiny_cifar, "--cifar10"), (imdb.load_imdb, tiny_imdb, "--imdb")):
        broken = cut(original, tmp_path / original.name, original.stat().st_size // 2)
        with pytest.raises(data.DataError) as caught:
            load(source=broken, cache=tmp_path / "cache")
        message = str(caught.value)
        assert "Replace it with a good copy" in message and flag in message
        assert "Delete it" not in message  # the user's own copy: not ours to delete


def test_a_missing_copy_names_the_options_that_exist(tmp_path):
    with pytest.raises(data.DataError) as caught:
        imdb.load_imdb(source=tmp_path / "nowhere.npz")
    assert "--imdb or ROSETTA_IMDB" in str(caught.value) and "--source" not in str(caught.value)
