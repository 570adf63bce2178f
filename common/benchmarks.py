"""The benchmarks, defined once: each one's name, model, title and sizes.

    from common.benchmarks import BENCHMARKS
    BENCHMARKS["cifar"].model      # "CNN", as records name it
    BENCHMARKS["cifar"].layout     # "cnn", its key in common.canonical.LAYOUTS
    BENCHMARKS["cifar"].title      # "CNN on CIFAR-10", for tables and pages

The sizes are docs/design.md's values, read from ``common.params``.
"""
from typing import NamedTuple

from common import params


class Benchmark(NamedTuple):
    name: str      # the command line's and the records' name: "cifar"
    model: str     # the model, as records and tables name it: "CNN"
    layout: str    # the model's canonical weight layout (common.canonical.LAYOUTS): "cnn"
    title: str     # "CNN on CIFAR-10"
    batch: int
    epochs: int
    train: int     # samples in the full training set
    test: int      # samples in the full test set
    unit: str      # what a sample is: "images"


BENCHMARKS = {benchmark.name: benchmark for benchmark in (
    Benchmark("cifar", "CNN", "cnn", "CNN on CIFAR-10", params.CNN_BATCH, params.CNN_EPOCHS,
              params.CIFAR_TRAIN, params.CIFAR_TEST, "images"),
    Benchmark("imdb", "GRU", "gru", "GRU on IMDB", params.GRU_BATCH, params.GRU_EPOCHS,
              params.IMDB_TRAIN, params.IMDB_TEST, "reviews"),
)}
