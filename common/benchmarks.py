"""The benchmarks, defined once: every fact that differs from one benchmark to another.

    from common.benchmarks import BENCHMARKS
    BENCHMARKS["cifar"].model      # "CNN", as records name it
    BENCHMARKS["cifar"].layout     # "cnn", its key in common.canonical.LAYOUTS
    BENCHMARKS["cifar"].title      # "CNN on CIFAR-10", for tables and pages
    BENCHMARKS["cifar"].data()     # its data-set module, common.cifar10

The harness and ``common`` loop over ``BENCHMARKS`` as they loop over the frameworks; no other
module names a benchmark, its data set or its model (tests/test_benchmarks.py checks it). The
model's own code, keyed by its ``layout``, lives where the models are defined: ``common.params``
(the design's values, under the names the notebooks read), ``common.canonical`` (the weight
layout), ``common.reference`` (the float64 reference), ``common.flops`` (the FLOPs model) and
``common.layouts`` (the frameworks' weight conversions). Each data set has a module of its own,
named by ``dataset``: where it is downloaded from, how it is decoded and cached, and the arrays
a notebook starts from.

The users' names stay as they were: ``--cifar10`` and ``--imdb`` (``option``), ``$ROSETTA_CIFAR10``
and ``$ROSETTA_IMDB`` (``env_var``), and the Makefile's ``CIFAR10=`` and ``IMDB=`` (``variable``,
the one place outside this module and the data-set modules that spells a benchmark's data set,
listed in the Makefile's ``DATA_VARIABLES``). The notebooks call ``data.cifar_for_library`` and
``data.imdb_for_library`` (``loader``), names that ``common.data`` makes from this table.

The sizes are docs/design.md's values, read from ``common.params``.
"""
import importlib
from typing import NamedTuple, Optional, Tuple

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
    # --- its data
    dataset: str   # the data-set module: download, decode, cache ("common.cifar10")
    what: str      # the data set, as messages name it: "CIFAR-10"
    option: str    # the option naming a local copy: "--cifar10"
    env_var: str   # the environment variable naming one when the option does not
    source_help: str   # the option's help text
    expected: str      # what a local copy must be, for the message about a wrong one
    loader: str    # the name of common.data's function the notebooks load it with
    # --- its model
    classes: int
    parity_steps: int          # optimiser steps of the parity check (common.parity)
    dropout: Tuple[float, ...]  # the design's dropout rates, site by site, in order
    export_layouts: Tuple[str, ...]  # input layouts an ONNX export may take (common.export)
    recurrent: bool            # whether its ONNX graph holds a recurrence whose form is reported
    # --- its notebooks: the path under notebooks/ of a framework's, from the framework's stem
    notebook_pattern: str
    # --- the test accuracy the original comparison published for this model at full size (lowest,
    # highest of its rows), which a full-size table shows beside its own; None: none to compare with
    published: Optional[Tuple[float, float]] = None

    @property
    def dest(self) -> str:
        """The option's attribute in argparse's namespace: "cifar10"."""
        return self.option.lstrip("-").replace("-", "_")

    @property
    def variable(self) -> str:
        """The Makefile's variable for the option: "CIFAR10"."""
        return self.dest.upper()

    def data(self):
        """The data-set module (imported on first use: ``common.data`` imports this module)."""
        return importlib.import_module(self.dataset)

    def notebook(self, stem: str) -> str:
        """The path under notebooks/ of the notebook of the framework whose files are named ``stem``."""
        return self.notebook_pattern.format(stem=stem)


# Steps per model in the parity check. The GRU is smooth and stays within 2e-6 of the reference
# over 20 steps; the CNN's ReLUs and max-pooling make it chaotic: a float32 rounding flips a
# pooling window's maximum now and then, and from then on the weights drift (PyTorch: 1.3e-6
# after 5 steps, 1.7e-4 after 10, 2e-3 after 20). Five steps keep it clear of that.
BENCHMARKS = {benchmark.name: benchmark for benchmark in (
    Benchmark("cifar", "CNN", "cnn", "CNN on CIFAR-10", params.CNN_BATCH, params.CNN_EPOCHS,
              params.CIFAR_TRAIN, params.CIFAR_TEST, "images",
              dataset="common.cifar10", what="CIFAR-10", option="--cifar10", env_var="ROSETTA_CIFAR10",
              source_help="a local CIFAR-10 copy: cifar-10-python.tar.gz or a cifar-10-batches-py folder "
                          "(default $ROSETTA_CIFAR10, else download)",
              expected="a cifar-10-python.tar.gz, a cifar-10-batches-py folder or a folder holding either",
              loader="cifar_for_library",
              classes=params.CNN_CLASSES, parity_steps=5, dropout=tuple(params.CNN_DROPOUT),
              export_layouts=("NCHW", "NHWC"),  # N samples, C channels, H, W
              recurrent=False, notebook_pattern="cifar/{stem}_CIFAR.ipynb"),
    Benchmark("imdb", "GRU", "gru", "GRU on IMDB", params.GRU_BATCH, params.GRU_EPOCHS,
              params.IMDB_TRAIN, params.IMDB_TEST, "reviews",
              dataset="common.imdb", what="IMDB", option="--imdb", env_var="ROSETTA_IMDB",
              source_help="a local imdb.npz (default $ROSETTA_IMDB, else download)",
              expected="an imdb.npz or a folder holding one",
              loader="imdb_for_library",
              classes=params.GRU_CLASSES, parity_steps=20, dropout=(),
              export_layouts=("NT",),  # N samples, T time steps
              recurrent=True, notebook_pattern="imdb/{stem}_IMDB.ipynb",
              published=(0.85, 0.86)),  # 3 epochs on all 25,000 reviews, every framework 85 to 86 %
)}

# `rosetta agree`'s default configuration: every framework with several seeds on a short run.
AGREEMENT = {"benchmark": ["imdb"], "epochs": 2, "train_samples": 8000, "test_samples": 2000}


def of_layout(layout: str) -> Benchmark:
    """The benchmark whose model has the canonical layout ``layout`` ("cnn"), or a ValueError."""
    for benchmark in BENCHMARKS.values():
        if benchmark.layout == layout:
            return benchmark
    raise ValueError("model must be one of {}, got {!r}.".format(
        ", ".join(repr(b.layout) for b in BENCHMARKS.values()), layout))
