"""The frameworks this project compares: their environments, kernels and notebooks.

Adding a framework means adding its notebooks (one per benchmark, named by the benchmark's
``notebook_pattern`` in ``common.benchmarks`` from the framework's ``stem``), its requirement specs in
``harness/envs/`` (``ENV-cpu.txt`` and ``ENV-cuda.txt``, and ``ENV-build.txt`` for
what must be installed before them) and one entry here. Two frameworks may share
one environment (MXNet's Module API and Gluon do; Keras 3 runs in its backend's).
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

from common import REPOSITORY
from common.benchmarks import BENCHMARKS


@dataclass(frozen=True)
class Framework:
    name: str                  # what `rosetta run NAME` selects
    label: str                 # what the results table shows
    api: str                   # the API level the notebooks use
    env: str                   # the environment (and kernel) the notebooks run in
    stem: str = ""             # what its notebooks' names start with ("PyTorch"): see notebook_pattern
    notebooks: dict = field(default_factory=dict)  # benchmark -> path under notebooks/ (default: from stem)
    versions_probe: str = ""   # Python run in the environment; prints "name version" lines
    cpu_probe: str = ""        # Python that exits non-zero if a CPU flavour holds a CUDA build
    python: str | None = None  # the interpreter version it needs ("3.6"); None: the harness's own
    build_first: bool = False  # install ENV-build.txt first, then the spec without build isolation
    sonames: dict = field(default_factory=dict)  # system library name it needs -> prefix of the one to link
    sonames_hint: str = ""     # how to install those system libraries

    def __post_init__(self):
        if self.stem and not self.notebooks:
            object.__setattr__(self, "notebooks", {name: benchmark.notebook(self.stem)
                                                   for name, benchmark in BENCHMARKS.items()})

    @property
    def kernel(self) -> str:
        return kernel_name(self.env)

    def notebook(self, benchmark: str):
        return REPOSITORY / "notebooks" / self.notebooks[benchmark]

    def variant_unsupported(self, variant: str, benchmark: str) -> str | None:
        """Why this framework's ``benchmark`` notebook does not offer ``variant``; None where it does. The
        notebook says what it offers, in its ``variants.require`` call (``offered_variants``)."""
        if variant == "fp32":
            return None
        path = self.notebook(benchmark)
        offered, reasons = offered_variants(path)
        if variant in offered:
            return None
        return reasons.get(variant) or (f"{self.label}'s notebook {path.name} offers {', '.join(offered)}, "
                                        f"not {variant} (docs/variants.md)")


def offered_variants(path) -> tuple[tuple, dict]:
    """The variants a notebook offers and why it offers no others: the literal arguments of its
    ``variants.require(variant, OFFERED, NAME, unsupported={VARIANT: REASON})`` call (common.variants);
    ("fp32",) and {} for a notebook without one."""
    cells = json.loads(Path(path).read_text()).get("cells", [])
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", []))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "require"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "variants"
                    and len(node.args) >= 2):
                reasons = {k.arg: k.value for k in node.keywords}.get("unsupported")
                return (tuple(ast.literal_eval(node.args[1])),
                        ast.literal_eval(reasons) if reasons is not None else {})
    return ("fp32",), {}


def kernel_name(env: str) -> str:
    return f"rosetta-{env}"


# Python that exits non-zero where a CPU flavour holds a CUDA build, per framework.
TORCH_CPU_PROBE = "import torch, sys; sys.exit(torch.version.cuda is not None)"
TENSORFLOW_CPU_PROBE = "import tensorflow as tf, sys; sys.exit(tf.test.is_built_with_cuda())"
JAX_CPU_PROBE = "import importlib.util as u, sys; sys.exit(any(u.find_spec(f'jax_cuda{v}_plugin') for v in (12, 13)))"


def keras_on(backend: str, backend_label: str, env: str, cpu_probe: str) -> Framework:
    """Keras 3 on one backend (`backend`: KERAS_BACKEND's value, also the backend's module),
    in that backend's environment; its notebooks' stem is Keras_<backend label>."""
    stem = backend_label.replace(" ", "")
    return Framework(
        name=f"keras-{backend}",
        label=f"Keras ({backend_label})",
        api="Keras 3 fit/predict",
        env=env,
        stem=f"Keras_{stem}",
        versions_probe=f"import os; os.environ['KERAS_BACKEND'] = '{backend}'; import keras, {backend}; "
                       f"print('keras', keras.__version__, '{backend}', {backend}.__version__)",
        cpu_probe=cpu_probe,
    )


def keras2_on(backend: str, backend_label: str, env: str, python: str, sonames: dict | None = None,
              sonames_hint: str = "") -> Framework:
    """Keras 2.3.1, the last Keras with Theano and CNTK backends, on one of them (``backend``: KERAS_BACKEND's
    value, also the backend's module), in that backend's environment and interpreter (``python``) and with
    the system libraries it links; its notebooks' stem is Keras2_<backend label>."""
    return Framework(
        name=f"keras2-{backend}",
        label=f"Keras 2 ({backend_label})",
        api="Keras 2 fit_generator/predict",
        env=env,
        stem=f"Keras2_{backend_label}",
        versions_probe=f"import os; os.environ['KERAS_BACKEND'] = '{backend}'; import keras, {backend}; "
                       f"print('keras', keras.__version__, '{backend}', {backend}.__version__)",
        python=python,
        sonames=sonames or {},
        sonames_hint=sonames_hint,
    )


# CNTK 2.7 links OpenMPI 1.10 by its sonames; today's systems ship OpenMPI 3/4 (Debian's libopenmpi3:
# libmpi.so.40, libmpi_cxx.so.40), which CNTK loads under the old names.
OPENMPI_SONAMES = {"libmpi.so.12": "libmpi.so.", "libmpi_cxx.so.1": "libmpi_cxx.so."}
OPENMPI_HINT = "install OpenMPI (Debian/Ubuntu: apt-get install libopenmpi3)"

FRAMEWORKS = {
    "pytorch": Framework(
        name="pytorch",
        label="PyTorch",
        api="nn.Module + torch.optim",
        env="pytorch",
        stem="PyTorch",
        versions_probe="import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)",
        cpu_probe=TORCH_CPU_PROBE,
    ),
    "keras-torch": keras_on("torch", "PyTorch", env="pytorch", cpu_probe=TORCH_CPU_PROBE),
    "tensorflow": Framework(
        name="tensorflow",
        label="TensorFlow",
        api="tf.function + GradientTape",
        env="tensorflow",
        stem="TensorFlow",
        versions_probe="import tensorflow as tf; print('tensorflow', tf.__version__)",
        cpu_probe=TENSORFLOW_CPU_PROBE,
    ),
    "keras-tensorflow": keras_on("tensorflow", "TensorFlow", env="tensorflow", cpu_probe=TENSORFLOW_CPU_PROBE),
    "jax": Framework(
        name="jax",
        label="JAX (Flax)",
        api="Flax Linen + Optax, jax.jit",
        env="jax",
        stem="JAX",
        versions_probe="import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, "
                       "'optax', optax.__version__)",
        cpu_probe=JAX_CPU_PROBE,
    ),
    "keras-jax": keras_on("jax", "JAX", env="jax", cpu_probe=JAX_CPU_PROBE),
    "mxnet": Framework(
        name="mxnet",
        label="MXNet",
        api="Module (symbolic)",
        env="mxnet",
        stem="MXNet",
        versions_probe="import mxnet; print('mxnet', mxnet.__version__)",
    ),
    "gluon": Framework(
        name="gluon",
        label="Gluon",
        api="Gluon (hybridized)",
        env="mxnet",
        stem="Gluon",
        versions_probe="import mxnet; print('mxnet', mxnet.__version__)",
    ),
    "chainer": Framework(
        name="chainer",
        label="Chainer",
        api="Chain + optimizers",
        env="chainer",
        stem="Chainer",
        versions_probe="import chainer; print('chainer', chainer.__version__)",
        build_first=True,
    ),
    "lasagne": Framework(
        name="lasagne",
        label="Lasagne (Theano)",
        api="Lasagne layers + theano.function",
        env="theano",
        stem="Lasagne",
        versions_probe="from common import theano_compat; theano_compat.install(); import theano, lasagne; "
                       "print('theano', theano.__version__, 'lasagne', lasagne.__version__)",
        python="3.9",  # Theano 1.0.5's last supported interpreters; see harness/envs/theano-cpu.txt
    ),
    "cntk": Framework(
        name="cntk",
        label="CNTK",
        api="cntk.layers + Trainer",
        env="cntk",
        stem="CNTK",
        versions_probe="import cntk; print('cntk', cntk.__version__)",
        python="3.6",
        sonames=OPENMPI_SONAMES,
        sonames_hint=OPENMPI_HINT,
    ),
    "keras2-theano": keras2_on("theano", "Theano", env="theano", python="3.9"),
    "keras2-cntk": keras2_on("cntk", "CNTK", env="cntk", python="3.6", sonames=OPENMPI_SONAMES,
                             sonames_hint=OPENMPI_HINT),
    "caffe2": Framework(
        name="caffe2",
        label="Caffe2",
        api="model_helper + brew",
        env="caffe2",
        stem="Caffe2",
        versions_probe="import torch; from caffe2.python import workspace; "
                       "print('caffe2 (torch)', torch.__version__, 'cuda', torch.version.cuda)",
        # No cpu_probe: PyPI's torch 1.10.2, the last wheel with Caffe2's operators, is a CUDA
        # build only, and both flavours install it (harness/envs/caffe2-cpu.txt).
        python="3.9",  # torch 1.10.2's newest wheels; 1.11 dropped Caffe2's operators
    ),
}


def select(names: list[str] | None) -> list[Framework]:
    """The frameworks named (all of them for none), or a ValueError naming the unknown ones."""
    if not names:
        return list(FRAMEWORKS.values())
    unknown = [n for n in names if n.lower() not in FRAMEWORKS]
    if unknown:
        raise ValueError(f"unknown framework(s) {', '.join(unknown)}; "
                         f"known: {', '.join(FRAMEWORKS)}.")
    return [FRAMEWORKS[n.lower()] for n in dict.fromkeys(names)]
