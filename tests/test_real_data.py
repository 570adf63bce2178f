"""Learning on the real data sets where ../shared/data holds them (skipped on a user's fresh clone).

The short runs of ``conftest.short_runs`` (shared with tests/test_notebooks.py): the same
subset and epochs for every framework, CNN 3,000 training and 1,000 test images for 3
epochs, GRU 5,000 and 2,000 reviews for 3 epochs. They show each model learns (accuracy
well above chance) and that the record names the local copy the data came from.
"""
import pytest

from conftest import REAL_RUNS
from harness.frameworks import FRAMEWORKS

pytestmark = [pytest.mark.realdata, pytest.mark.kernel]


@pytest.fixture
def real_runs(short_runs, real_data):
    if not short_runs.real:
        pytest.skip("no real CIFAR-10 and IMDB here (../shared/data is absent)")
    return lambda framework: dict(zip(("cifar", "imdb"), short_runs(framework)[1]))


@pytest.mark.parametrize("framework", list(FRAMEWORKS.values()), ids=list(FRAMEWORKS))
def test_cnn_learns_real_cifar(framework, real_runs, real_data):
    result = real_runs(framework)["cifar"]
    assert result["status"] == "ok", result["error"]
    print(f"{framework.label} CIFAR-10: accuracy {result['test_accuracy']:.4f}, "
          f"training {result['train_seconds']:.1f} s")
    assert {k: result[k] for k in REAL_RUNS["cifar"]} == REAL_RUNS["cifar"]
    assert result["test_accuracy"] > 0.20  # chance is 0.10
    assert result["data"] == {**result["data"], "source": "local copy", "path": str(real_data["cifar"].resolve())}
    assert len(result["data"]["sha256"]) == 64


@pytest.mark.parametrize("framework", list(FRAMEWORKS.values()), ids=list(FRAMEWORKS))
def test_gru_learns_real_imdb(framework, real_runs, real_data):
    result = real_runs(framework)["imdb"]
    assert result["status"] == "ok", result["error"]
    print(f"{framework.label} IMDB: accuracy {result['test_accuracy']:.4f}, "
          f"training {result['train_seconds']:.1f} s")
    assert {k: result[k] for k in REAL_RUNS["imdb"]} == REAL_RUNS["imdb"]
    assert result["test_accuracy"] > 0.70  # chance is 0.50
    assert result["data"]["source"] == "local copy"
    assert result["data"]["path"] == str(real_data["imdb"].resolve())
