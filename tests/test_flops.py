"""common.flops: its counts are PyTorch's own FlopCounterMode's, layer by layer, and its arithmetic.

The comparison builds docs/design.md's two models with nn.Conv2d, nn.Linear, nn.Embedding and
nn.GRU (batch_first, which computes the reset-after form the design uses) in the PyTorch
environment's Python, counts a prediction (no_grad) and a training step (forward, loss,
backward) on a batch of 4 under FlopCounterMode, and compares every module's count per sample
with common.flops'. FlopCounterMode counts what common.flops counts (2 FLOPs a multiply-add,
convolutions and matrix products only, no bias, no gradient for an input that needs none), so
the comparison is exact; its per-module counts include the backward pass's products.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common import canonical, flops
from harness import kernels, venvs
from harness.frameworks import FRAMEWORKS

BATCH = 4

# The figures worked by hand, for the docs and as a check on the code's derivation:
# CNN, a multiply-add per input channel x 9 per output value: conv1 50*32*32 * 27, conv2 50*32*32 * 450,
# conv3 100*16*16 * 450, conv4 100*16*16 * 900, fc1 6400*512, fc2 512*10; times 2. Training: three
# times that, less conv1's input gradient (the image needs none).
# GRU, per step 125*300 + 100*300 multiply-adds, 150 steps, and the dense 100*2; times 2. Training: three
# times that, less the first recurrent product's input gradient (the zero state needs none).
EXPECTED = {
    ("cifar", False): 124_528_640, ("cifar", True): 370_821_120,
    ("imdb", False): 20_250_400, ("imdb", True): 60_691_200,
}

SCRIPT = r'''
import json, sys
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from common import params

torch.manual_seed(0)
batch = int(sys.argv[1])


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        a, b = params.CNN_CHANNELS
        self.conv1 = nn.Conv2d(3, a, 3, padding="same")
        self.conv2 = nn.Conv2d(a, a, 3, padding="same")
        self.conv3 = nn.Conv2d(a, b, 3, padding="same")
        self.conv4 = nn.Conv2d(b, b, 3, padding="same")
        self.fc1 = nn.Linear(b * 8 * 8, params.CNN_DENSE)
        self.fc2 = nn.Linear(params.CNN_DENSE, params.CNN_CLASSES)
        self.drop = nn.ModuleList(nn.Dropout(p) for p in params.CNN_DROPOUT)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = self.drop[0](torch.relu(nn.functional.max_pool2d(self.conv2(x), 2)))
        x = torch.relu(self.conv3(x))
        x = self.drop[1](torch.relu(nn.functional.max_pool2d(self.conv4(x), 2)))
        x = self.drop[2](torch.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


class GRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(params.IMDB_VOCAB, params.GRU_EMBEDDING)
        self.gru = nn.GRU(params.GRU_EMBEDDING, params.GRU_HIDDEN, batch_first=True)
        self.fc = nn.Linear(params.GRU_HIDDEN, params.GRU_CLASSES)

    def forward(self, x):
        _, state = self.gru(self.embedding(x))   # the state after the last of the 150 steps
        return self.fc(state[0])


cases = {
    "cifar": (CNN(), torch.rand(batch, 3, 32, 32), torch.randint(0, params.CNN_CLASSES, (batch,))),
    "imdb": (GRU(), torch.randint(0, params.IMDB_VOCAB, (batch, params.IMDB_SEQ_LEN)),
             torch.randint(0, params.GRU_CLASSES, (batch,))),
}
found = {}
for benchmark, (model, x, y) in cases.items():
    for training in (False, True):
        model.train(training)
        counter = FlopCounterMode(display=False)
        with counter:
            if training:
                nn.functional.cross_entropy(model(x), y).backward()
            else:
                with torch.no_grad():
                    model(x)
        modules = {name.split(".", 1)[1]: sum(ops.values())
                   for name, ops in counter.get_flop_counts().items() if "." in name}
        found["{} {}".format(benchmark, "training" if training else "prediction")] = {
            "total": counter.get_total_flops(), "modules": modules}
print("FLOPS " + json.dumps(found))
'''


def _pytorch():
    """The PyTorch environment's Python and the environment its kernel runs in, or a skip."""
    framework = FRAMEWORKS["pytorch"]
    info = kernels.kernel_info(framework) or {}
    for python in (info.get("python"), venvs.env_python(framework)):
        if python and Path(python).exists():
            return str(python), kernels.kernel_environment(framework)
    pytest.skip("PyTorch's environment is not here ({}), so FlopCounterMode cannot be run".format(
        kernels.unavailable_reason(framework) or venvs.env_python(framework)))


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    python, environment = _pytorch()
    script = tmp_path_factory.mktemp("flops") / "count.py"
    script.write_text(SCRIPT)
    done = subprocess.run([python, str(script), str(BATCH)], capture_output=True, text=True,
                          timeout=600, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [line for line in done.stdout.splitlines() if line.startswith("FLOPS ")][-1]
    return json.loads(line[len("FLOPS "):])


def _ours_by_module(benchmark: str, training: bool) -> dict:
    """common.flops' products per sample, summed by module (the GRU's two kernels are one nn.GRU)."""
    found = {}
    for product in flops.products(benchmark):
        found[product.layer] = found.get(product.layer, 0) + (product.training if training else product.forward)
    return found


@pytest.mark.kernel
@pytest.mark.parametrize("training", [False, True], ids=["prediction", "training"])
@pytest.mark.parametrize("benchmark", ["cifar", "imdb"])
def test_counts_are_flop_counter_modes_layer_by_layer(counted, benchmark, training):
    theirs = counted["{} {}".format(benchmark, "training" if training else "prediction")]
    assert all(n % BATCH == 0 for n in [theirs["total"], *theirs["modules"].values()]), theirs
    per_sample = {module: n // BATCH for module, n in theirs["modules"].items() if n}
    assert per_sample == _ours_by_module(benchmark, training)
    assert theirs["total"] // BATCH == flops.per_sample(benchmark, training) == EXPECTED[benchmark, training]


# --- the counts on their own ---------------------------------------------------------------

@pytest.mark.parametrize("benchmark", ["cifar", "imdb"])
def test_the_breakdown_adds_up_to_the_totals_and_training_costs_more(benchmark):
    found = flops.products(benchmark)
    assert sum(p.forward for p in found) == flops.per_sample(benchmark, False) == EXPECTED[benchmark, False]
    assert sum(p.training for p in found) == flops.per_sample(benchmark, True) == EXPECTED[benchmark, True]
    assert flops.per_sample(benchmark, True) > flops.per_sample(benchmark, False)
    assert all(p.weight_gradient == p.forward and p.input_gradient <= p.forward for p in found)


def test_only_the_image_and_the_zero_state_need_no_input_gradient():
    cnn = {p.layer: p for p in flops.products("cifar")}
    assert cnn["conv1"].input_gradient == 0
    assert all(p.input_gradient == p.forward for name, p in cnn.items() if name != "conv1")
    gru = {p.weight: p for p in flops.products("imdb")}
    assert gru["gru.input_kernel"].input_gradient == gru["gru.input_kernel"].forward   # the embedding is trained
    recurrent = gru["gru.recurrent_kernel"]
    assert recurrent.input_gradient == recurrent.forward * (recurrent.uses - 1) // recurrent.uses


@pytest.mark.parametrize("layout", ["cnn", "gru"])
def test_every_product_multiplies_a_weight_matrix_of_the_canonical_layout(layout):
    shapes = canonical.LAYOUTS[layout]
    found = flops.products(layout)
    matrices = [name for name in shapes if name.endswith(("weight", "kernel")) and name != "embedding.weight"]
    assert [p.weight for p in found] == matrices
    for p in found:
        size = 1
        for n in shapes[p.weight]:
            size *= n
        assert p.shape[0] * p.shape[1] == size, p.weight


def test_names_benchmarks_and_layouts_alike_and_refuses_others():
    assert flops.per_sample("cifar", True) == flops.per_sample("cnn", True) == flops.per_sample("CNN", True)
    assert flops.products("imdb") == flops.products("gru")
    with pytest.raises(ValueError, match="cifar"):
        flops.per_sample("mnist", False)


def test_achieved_is_flops_times_samples_over_seconds():
    assert flops.achieved(100, 50, 2.0) == 2500.0
    assert flops.achieved(flops.per_sample("cifar", True), 50_000, 10.0) == pytest.approx(1.8541056e12)
    with pytest.raises(ValueError):
        flops.achieved(100, 50, 0)


# --- the peaks ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, key", [
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 SXM5 80GB", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA A100-SXM4-40GB", "A100"), ("NVIDIA A100-PCIE-40GB", "A100"),
    ("NVIDIA A100 80GB PCIe", "A100"), ("NVIDIA L4", "L4"), ("Tesla T4", "T4"),
    ("Tesla V100-SXM2-16GB", "V100 SXM2"), ("Tesla V100-SXM2-32GB", "V100 SXM2"), ("Tesla V100-PCIE-32GB", "V100 PCIe"),
])
def test_device_names_as_the_driver_prints_them_find_their_entry(name, key):
    assert flops.peak(name) is flops.PEAKS[key]
    assert flops.peak("  " + name.lower() + " ") is flops.PEAKS[key]


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 4090", "NVIDIA L40S", "NVIDIA L40", "Tesla V100S-PCIE-32GB",
                                  "NVIDIA H100 NVL", "NVIDIA A100-SXM4-80GB MIG 1g.10gb", "cpu", "", None])
def test_an_unknown_device_or_one_not_in_the_table_has_no_peak(name):
    assert flops.peak(name) is None
    assert flops.share_of_peak(1e12, name, "fp32") is None


def test_share_of_peak_divides_by_the_dense_peak_at_that_precision():
    assert flops.share_of_peak(494.5e12 / 2, "NVIDIA H200", "tf32") == pytest.approx(0.5)
    assert flops.share_of_peak(19.5e12, "NVIDIA A100-SXM4-40GB", "fp32") == pytest.approx(1.0)
    assert flops.share_of_peak(6.5e12, "Tesla T4", "fp16") == pytest.approx(0.1)
    assert flops.share_of_peak(1e12, "Tesla T4", "tf32") is None          # Turing has no TF32 tensor cores
    assert flops.share_of_peak(1e12, "Tesla V100-SXM2-16GB", "bf16") is None
    with pytest.raises(ValueError, match="precision"):
        flops.share_of_peak(1e12, "NVIDIA H200", "fp8")


def test_every_peak_names_its_datasheet_and_is_dense():
    for peak in flops.PEAKS.values():
        assert "datasheet" in peak.source and "https://" in peak.source and "nvidia.com" in peak.source, peak.name
        assert peak.fp32 and peak.fp16, peak.name
        for value in (peak.tf32, peak.bf16):
            assert value is None or value > peak.fp32, peak.name
        # Tensor cores run FP16 at twice TF32's rate and BF16 at FP16's, where they have both.
        if peak.tf32 is not None:
            assert peak.bf16 == peak.fp16 == pytest.approx(2 * peak.tf32, rel=0.01), peak.name


def test_the_module_prints_the_docs_tables():
    done = subprocess.run([sys.executable, "-m", "common.flops"], capture_output=True, text=True, check=True,
                          cwd=str(Path(flops.__file__).resolve().parent.parent))
    document = (Path(flops.__file__).resolve().parent.parent / "docs" / "measurements.md").read_text()
    for benchmark in ("cifar", "imdb"):
        table = "\n".join(flops.table(benchmark))
        assert table in done.stdout and table in document, benchmark
