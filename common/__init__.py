"""Framework-neutral code that every notebook imports.

NumPy, pooch and the standard library only, so that it installs into every
framework's environment. One module, one job:

    params       the shared hyper-parameters (docs/design.md's values, one place)
    benchmarks   the benchmarks: every fact that differs from one to another (data set, model, sizes...)
    data         download, verify, cache and cut the data sets, for every benchmark alike
    (one module per data set, named in benchmarks: its archive, decoding and arrays)
    iterator     the seeded minibatch order every framework trains on
    timing       the training timer, synchronising the device at its ends
    machine      what the run ran on: device, drivers, versions, git commit
    record       the JSON result record
    canonical    the canonical weight layout of each model, and seeded initial weights
    layouts      the conversions between the canonical layout and each framework's own
    reference    the NumPy float64 reference: forward, gradient, optimiser steps
    parity       the parity check: its inputs, the notebooks' outputs, the comparison
    flops        the FLOPs of a prediction and of a training step per sample; GPU peak rates
"""
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent  # this clone: notebooks/, results/, envs/
