"""Training on the real data sets where ../shared/data holds them (skipped on a user's fresh clone).

Short runs on subsets: they show the models learn (accuracy well above chance)
and that the record names the local copy the data came from.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from harness import runner
from harness.frameworks import FRAMEWORKS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = [pytest.mark.realdata, pytest.mark.kernel]


@pytest.fixture(scope="session")
def real_cifar(tmp_path_factory):
    """CIFAR-10 rebuilt with ../shared/data/cifar10/build.py (about 15 s)."""
    build = SHARED / "cifar10" / "build.py"
    if not build.is_file():
        pytest.skip(f"no real CIFAR-10 here ({build} is absent)")
    out = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(build), str(out)], check=True, capture_output=True)
    return out / "cifar-10-batches-py"


@pytest.fixture(scope="session")
def real_imdb():
    path = SHARED / "imdb" / "imdb.npz"
    if not path.is_file():
        pytest.skip(f"no real IMDB here ({path} is absent)")
    return path


@pytest.mark.parametrize("framework", list(FRAMEWORKS.values()), ids=list(FRAMEWORKS))
def test_cnn_learns_real_cifar(framework, real_cifar, tmp_path):
    settings = runner.RunSettings(epochs=3, train_samples=3000, test_samples=1000, device="cpu",
                                  timeout=900, cifar_source=str(real_cifar))
    result = runner.execute(framework, "cifar", settings, tmp_path)
    assert result["status"] == "ok", result["error"]
    print(f"{framework.label} CIFAR-10: accuracy {result['test_accuracy']:.4f}, "
          f"training {result['train_seconds']:.1f} s")
    assert result["test_accuracy"] > 0.20  # chance is 0.10
    assert result["data"] == {**result["data"], "source": "local copy", "path": str(real_cifar.resolve())}
    assert len(result["data"]["sha256"]) == 64


@pytest.mark.parametrize("framework", list(FRAMEWORKS.values()), ids=list(FRAMEWORKS))
def test_gru_learns_real_imdb(framework, real_imdb, tmp_path):
    settings = runner.RunSettings(epochs=3, train_samples=5000, test_samples=2000, device="cpu",
                                  timeout=900, imdb_source=str(real_imdb))
    result = runner.execute(framework, "imdb", settings, tmp_path)
    assert result["status"] == "ok", result["error"]
    print(f"{framework.label} IMDB: accuracy {result['test_accuracy']:.4f}, "
          f"training {result['train_seconds']:.1f} s")
    assert result["test_accuracy"] > 0.70  # chance is 0.50
    assert result["data"]["source"] == "local copy"
    assert result["data"]["path"] == str(real_imdb.resolve())
