"""Shared fixtures: tiny data sets in the official formats, and loopback HTTP servers.

    tiny_cifar        Path to a small cifar-10-python.tar.gz (session-wide; do not modify it)
    tiny_imdb         Path to a small imdb.npz (session-wide; do not modify it)
    real_data         the real CIFAR-10 and IMDB of ../shared/data, or None where they are absent
    short_runs        short_runs(framework): its two notebooks run once per session on the CPU, 1 thread
    (autouse)         $ROSETTA_LOCK: the test session's own machine lock (see suite_lock_of_the_tests)
    (autouse)         $ROSETTA_QUIET_WAIT=0 and _THRESHOLD=1000: runs neither wait nor count as busy
                      (see no_quiet_wait_in_the_tests)
    http_server       base URL (a str) of a server for the folder ``http_server.directory``
    truncated_server  the same, but every body stops halfway short of its Content-Length
    closed_port_url   base URL of a loopback port that refuses connections

Servers listen on 127.0.0.1 only, on a free port, from a background thread. The
URL objects are ``str`` (``f"{http_server}/imdb.npz"`` works) with extras:
``.directory`` (the folder served; put files there, before or after the start),
``.requests`` (the paths asked for, in order) and ``.stop()`` (shut down now).
``serve(directory, handler=...)`` is the context manager behind them, for any folder.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakedata import make_cifar_tarball, make_imdb_npz  # noqa: E402

LOOPBACK = "127.0.0.1"


class ServerURL(str):
    """A server's base URL, ``http://127.0.0.1:PORT``, with what the tests need to watch it."""

    directory: Path
    requests: list
    stop: callable


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the files of one folder, logs each path asked for, prints nothing."""

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):  # keep the test output clean
        pass


class TruncatingHandler(QuietHandler):
    """Announces a file's full Content-Length, sends half of it, then hangs up.

    The client sees what an interrupted download looks like: a connection closed
    before the promised number of bytes arrived.
    """

    def do_GET(self):
        self.server.requests.append(self.path)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def serve(directory, handler=QuietHandler):
    """Serve ``directory`` on 127.0.0.1 at a free port; yield its ServerURL; shut down after."""
    directory = Path(directory)
    server = http.server.ThreadingHTTPServer(
        (LOOPBACK, 0), functools.partial(handler, directory=str(directory)))
    server.daemon_threads = True
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"http-server-{server.server_address[1]}", daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            stopped.append(True)
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    url = ServerURL(f"http://{LOOPBACK}:{server.server_address[1]}")
    url.directory, url.requests, url.stop = directory, server.requests, stop
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def loopback_only(monkeypatch):
    """No proxy from the environment may carry a request to 127.0.0.1 elsewhere."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def http_server(tmp_path, loopback_only):
    """A server for a fresh folder (``http_server.directory``); yields its base URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    with serve(folder) as url:
        yield url


@pytest.fixture
def truncated_server(tmp_path, loopback_only):
    """Like http_server, but each body is cut off halfway: an interrupted download."""
    folder = tmp_path / "served-truncated"
    folder.mkdir()
    with serve(folder, TruncatingHandler) as url:
        yield url


@pytest.fixture
def closed_port_url(loopback_only):
    """``http://127.0.0.1:PORT`` where nothing listens: connections are refused.

    The port stays bound (without listening) for the whole test, so no other
    program can take it meanwhile.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield f"http://{LOOPBACK}:{sock.getsockname()[1]}"


@pytest.fixture(scope="session", autouse=True)
def suite_lock_of_the_tests(tmp_path_factory):
    """The test session takes a machine lock of its own (harness/guard.py, $ROSETTA_LOCK), not the
    machine's: its runs are short checks, no benchmarks, and some run side by side on purpose
    (short_runs); a suite timing on this machine should neither wait for the tests nor make them
    wait. Processes the tests start inherit it; the tests of the lock name a lock of their own."""
    previous = os.environ.get("ROSETTA_LOCK")
    os.environ["ROSETTA_LOCK"] = str(tmp_path_factory.mktemp("lock") / "suite.lock")
    yield
    if previous is None:
        os.environ.pop("ROSETTA_LOCK", None)
    else:
        os.environ["ROSETTA_LOCK"] = previous


@pytest.fixture(scope="session", autouse=True)
def no_quiet_wait_in_the_tests():
    """The runs of the tests wait for no quiet machine and are never busy ($ROSETTA_QUIET_WAIT=0,
    $ROSETTA_QUIET_THRESHOLD=1000 cores: harness/quiet.py): the machine that runs them is busy with
    the tests themselves, and they are checks, not benchmarks. They still measure the machine and
    record it; the tests of the guard pass --quiet-wait and --quiet-threshold themselves. Processes
    the tests start inherit both."""
    previous = {name: os.environ.get(name) for name in ("ROSETTA_QUIET_WAIT", "ROSETTA_QUIET_THRESHOLD")}
    os.environ.update(ROSETTA_QUIET_WAIT="0", ROSETTA_QUIET_THRESHOLD="1000")
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    """A small ``cifar-10-python.tar.gz``: 5 x 40 training and 100 test images."""
    return make_cifar_tarball(tmp_path_factory.mktemp("tiny_cifar") / "cifar-10-python.tar.gz")


@pytest.fixture(scope="session")
def tiny_imdb(tmp_path_factory) -> Path:
    """A small ``imdb.npz``: 200 training and 200 test reviews."""
    return make_imdb_npz(tmp_path_factory.mktemp("tiny_imdb") / "imdb.npz")


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> dict | None:
    """The real data sets where ../shared/data holds them: {"cifar": the cifar-10-batches-py
    folder rebuilt by its build.py (about 15 s), "imdb": imdb.npz}; None where either is absent."""
    build, imdb = SHARED_DATA / "cifar10" / "build.py", SHARED_DATA / "imdb" / "imdb.npz"
    if not (build.is_file() and imdb.is_file()):
        return None
    out = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(build), str(out)], check=True, capture_output=True)
    return {"cifar": out / "cifar-10-batches-py", "imdb": imdb}


# One identical short run per framework and benchmark: on the real data where it is here (a
# subset, a few epochs: enough to show the model learns), else on the tiny archives.
REAL_RUNS = {"cifar": {"epochs": 3, "train_samples": 3000, "test_samples": 1000},
             "imdb": {"epochs": 3, "train_samples": 5000, "test_samples": 2000}}
TINY_RUNS = {"cifar": {"epochs": 1, "batch_size": 32}, "imdb": {"epochs": 1, "batch_size": 32}}
# Every short run also exports its model to ONNX (tests/test_onnx.py checks it), timed briefly.
SHORT_EXPORT = {"batch_sizes": [1, 8], "runs": 3}


def frameworks_needing_short_runs(items) -> list:
    """The frameworks whose short runs the collected tests use, in the registry's order: those
    named by a test's ``framework`` parameter, or all of them for a test without one."""
    from harness.frameworks import FRAMEWORKS

    needed = set()
    for item in items:
        if "short_runs" in getattr(item, "fixturenames", ()):
            framework = getattr(getattr(item, "callspec", None), "params", {}).get("framework")
            needed |= {framework.name} if framework is not None else set(FRAMEWORKS)
    return [framework for name, framework in FRAMEWORKS.items() if name in needed]


@pytest.fixture(scope="session")
def short_runs(request, real_data, tiny_cifar, tiny_imdb, tmp_path_factory):
    """short_runs(framework) -> (results folder, [cifar record, imdb record]): both notebooks
    through papermill in the framework's kernel, once per session, so that the tests of the
    notebooks, of learning and of parameter counts share one run each. Every run the collected
    tests need starts at the first call, spread over the cores (tests/shortruns.py); the first
    call for a framework prints its runs' output. The runs are on the real data where it is
    here and a collected test is marked realdata, else on the tiny archives."""
    from harness import runner
    from shortruns import ShortRuns

    # The real data where it is here, unless no collected test asks for it (-m "not realdata").
    if not any(item.get_closest_marker("realdata") for item in request.session.items):
        real_data = None
    sources = real_data or {"cifar": tiny_cifar, "imdb": tiny_imdb}
    sizes = REAL_RUNS if real_data else TINY_RUNS
    folders, printed = {}, set()
    # The data decoded once, as the harness does before its notebooks, into a cache of the session's
    # own (not the user's): the kernels then only memory-map it, however many start at once.
    from common import data

    data_dir = str(tmp_path_factory.mktemp("data-cache"))
    for benchmark in ("cifar", "imdb"):
        data.prepare(benchmark, str(sources[benchmark]), data_dir)

    def job(framework, benchmark):
        if framework.name not in folders:
            folders[framework.name] = tmp_path_factory.mktemp(f"results-{framework.name}")
        settings = runner.RunSettings(device="cpu", timeout=900, data_dir=data_dir,
                                      data_sources={b: str(sources[b]) for b in sources}, threads=1, export=True,
                                      export_batch_sizes=SHORT_EXPORT["batch_sizes"],
                                      export_runs=SHORT_EXPORT["runs"], **sizes[benchmark])
        return framework, benchmark, settings, folders[framework.name]

    pool = ShortRuns([job(framework, benchmark)
                      for framework in frameworks_needing_short_runs(request.session.items)
                      for benchmark in ("cifar", "imdb")])

    def run(framework):
        records = []
        for benchmark in ("cifar", "imdb"):
            if (framework.name, benchmark) not in pool.futures:
                pool.submit(*job(framework, benchmark))
            record, log = pool.result(framework.name, benchmark)
            if (framework.name, benchmark) not in printed:
                print(log, end="")
                printed.add((framework.name, benchmark))
            records.append(record)
        return folders[framework.name], records

    run.real = real_data is not None
    yield run
    pool.close()


@pytest.fixture
def selftest_kernel(tmp_path, monkeypatch):
    """The selftest kernel (this Python) registered for the test, and every framework taken as available."""
    import selftest
    from harness import kernels

    selftest.install_kernel(tmp_path, monkeypatch)
    monkeypatch.setattr(kernels, "unavailable_reason", lambda framework: None)
