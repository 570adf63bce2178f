"""Theano 1.0.5 and Lasagne 0.1 together: every compatibility fix, in one place.

    import os
    from common import theano_compat
    os.environ["THEANO_FLAGS"] = ",".join(["floatX=float32", "device=cpu", *theano_compat.blas_flags()])
    theano_compat.install()   # after THEANO_FLAGS is set: it imports theano
    import theano, lasagne

Why each fix is needed (the ``theano`` environment runs on Python 3.9 with the
NumPy and SciPy of Theano's time; see ``harness/envs/theano-cpu.txt``):

- Lasagne 0.1 (the only Lasagne on PyPI) imports ``theano.tensor.signal.downsample``,
  which Theano 0.9 renamed ``theano.tensor.signal.pool``; :func:`install` registers
  a ``downsample`` module whose ``max_pool_2d`` calls ``pool.pool_2d`` with the new
  argument names (``ds``/``st``/``padding`` became ``ws``/``stride``/``pad``).
- NumPy's wheels carry their own OpenBLAS (in ``numpy.libs``), but Theano looks for a
  BLAS through NumPy's build configuration, which does not lead to it, and falls back
  to slower paths (no ``CorrMM`` convolution); :func:`blas_flags` names that OpenBLAS
  for ``blas.ldflags``.
- Lasagne 0.1 calls ``conv2d(..., image_shape=...)``, which Theano 1.0 renamed
  ``input_shape``; :func:`install` silences that one deprecation warning.
- (NumPy 1.19 reading an object array pickled by NumPy 2 is handled by the data-set module
  that reads one, for every old NumPy, not here.)
- Theano's GPU back end needs ``pygpu`` (libgpuarray), which PyPI does not ship as a
  wheel; :func:`gpu_usable` says whether it is there and a GPU is visible, and
  :func:`cuda_version` reads the CUDA toolkit libgpuarray compiles with (Theano,
  unlike PyTorch, has no built-in CUDA version to report).
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
import warnings


def blas_flags() -> list[str]:
    """A ``blas.ldflags=...`` THEANO_FLAGS entry linking NumPy's bundled OpenBLAS ([] if none).

    ``-lNAME`` for ``libNAME.so`` (the wheel's file name is versioned); Theano adds the
    run-time search path for the ``-L`` folder itself.
    """
    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.origin:
        return []
    libs = os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "numpy.libs")
    found = sorted(glob.glob(os.path.join(libs, "libopenblas*.so")))
    if not found:
        return []
    name = os.path.basename(found[0])[len("lib"):-len(".so")]
    return [f"blas.ldflags=-L{libs} -l{name}"]


def gpu_usable() -> bool:
    """Whether Theano could train on a GPU here: pygpu installed and nvidia-smi on the PATH."""
    return importlib.util.find_spec("pygpu") is not None and shutil.which("nvidia-smi") is not None


def cuda_version() -> str | None:
    """The CUDA toolkit's version, from ``nvcc --version`` (None without nvcc)."""
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"release ([0-9.]+)", out)
    return found.group(1) if found else None


def _max_pool_2d(input, ds, ignore_border=None, st=None, padding=(0, 0), mode="max"):
    """Theano < 0.9's ``downsample.max_pool_2d``, as Lasagne 0.1 calls it."""
    from theano.tensor.signal import pool
    return pool.pool_2d(input, ws=ds, ignore_border=ignore_border, stride=st, pad=padding, mode=mode)


def install() -> None:
    """Makes ``import lasagne`` (0.1) work on Theano 1.0 (adds ``theano.tensor.signal.downsample``);
    call it after setting THEANO_FLAGS."""
    import theano.tensor.signal
    warnings.filterwarnings("ignore", message="The `image_shape` keyword argument to `tensor.nnet.conv2d`",
                            category=UserWarning)
    if "theano.tensor.signal.downsample" in sys.modules:
        return
    downsample = types.ModuleType("theano.tensor.signal.downsample",
                                  "Theano < 0.9's pooling module, as Lasagne 0.1 uses it (common.theano_compat).")
    downsample.max_pool_2d = _max_pool_2d
    sys.modules[downsample.__name__] = downsample
    theano.tensor.signal.downsample = downsample
