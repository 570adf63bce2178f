"""The FLOPs of one prediction and of one training step, per sample, and GPU peak throughputs.

    from common import flops
    flops.per_sample("cnn", training=True)         # 370,821,120: one image's share of a step
    flops.products("gru")                          # the breakdown, one Product per weight matrix
    rate = flops.achieved(flops.per_sample("cnn", True), samples, seconds)     # FLOP/s
    flops.share_of_peak(rate, "NVIDIA H200", "tf32")                          # 0 to 1, or None

The convention is the one of model FLOPs utilisation: only the matrix products and the
convolutions are counted, a multiply-add as 2 FLOPs, from the shapes of docs/design.md's models
(``common.params``). Left out: biases, activations, the GRU's gates and other element-wise work,
pooling, dropout, the embedding lookup and its gradient (a gather and a scatter-add), the loss
and the optimiser's update. A convolution counts every output position times its whole 3 x 3
window, the zero padding included, as a dense implementation computes it.

Prediction is the forward products. A training step adds, for each product, the gradient with
respect to its weights and the gradient with respect to its input, where that input needs one:
the image does not (so conv1 has no input gradient), nor does the GRU's initial state, which is
zero and no parameter (so the first of the 150 recurrent products has none). The embedding's
output does need one, the embedding table being trained. The GRU's first recurrent product, on
the zero state, is counted in the forward pass, since the frameworks compute it. These are the
counts PyTorch's ``torch.utils.flop_counter.FlopCounterMode`` gives for the same models
(tests/test_flops.py checks them layer by layer).

Per sample means per image or per review: a batch of B samples costs B times as much, and
the batch size does not enter.

``PEAKS`` holds the dense peak throughputs (no structured sparsity) of a few NVIDIA GPUs, from
their datasheets; ``peak(device_name)`` finds the entry for a name as
``torch.cuda.get_device_name()`` or ``nvidia-smi`` prints it. ``python -m common.flops`` prints
the figures and the table.

Standard library only, and Python 3.6 syntax: this module installs into every environment.
"""
import re
import sys
from typing import List, NamedTuple, Optional

from common import params
from common.benchmarks import BENCHMARKS

IMAGE = (3, 32, 32)        # the CNN's input: channels, height, width (docs/design.md)
KERNEL = 3                 # every convolution is 3 x 3, stride 1, "same" padding
CONVS_PER_BLOCK = 2        # each block: two convolutions, then a 2 x 2 max-pool, stride 2


class Product(NamedTuple):
    """One weight matrix's products, in FLOPs per sample (a multiply-add counted as 2)."""
    weight: str            # its canonical array (common.canonical.LAYOUTS): "conv2.weight"
    shape: tuple           # (rows, columns) of the matrix multiplied: (in channels x 9, out channels)
    uses: int              # input vectors it multiplies per sample: output positions, or steps
    forward: int           # the product itself: prediction, and the forward pass of training
    weight_gradient: int   # its gradient with respect to the weights (training only)
    input_gradient: int    # its gradient with respect to its input (training, where one is needed)

    @property
    def layer(self) -> str:
        return self.weight.split(".")[0]

    @property
    def training(self) -> int:
        return self.forward + self.weight_gradient + self.input_gradient


def _product(weight, rows, columns, uses, input_gradient_uses):
    # type: (str, int, int, int, int) -> Product
    """``uses`` products of a vector of ``rows`` by the (rows x columns) weights; the input gradient
    for ``input_gradient_uses`` of them (the same count, or fewer where an input needs none)."""
    one = 2 * rows * columns
    return Product(weight, (rows, columns), uses, one * uses, one * uses, one * input_gradient_uses)


def _cnn() -> List[Product]:
    channels, height, width = IMAGE
    found = []
    for block, out_channels in enumerate(params.CNN_CHANNELS):
        for _ in range(CONVS_PER_BLOCK):
            number = len(found) + 1
            positions = height * width   # "same" padding, stride 1: the size is kept
            first = number == 1          # its input is the image, which needs no gradient
            found.append(_product("conv{}.weight".format(number), channels * KERNEL * KERNEL,
                                  out_channels, positions, 0 if first else positions))
            channels = out_channels
        height, width = height // 2, width // 2   # the block's 2 x 2 max-pool, stride 2
    flat = channels * height * width
    found.append(_product("fc1.weight", flat, params.CNN_DENSE, 1, 1))
    found.append(_product("fc2.weight", params.CNN_DENSE, params.CNN_CLASSES, 1, 1))
    return found


def _gru() -> List[Product]:
    steps, gates = params.IMDB_SEQ_LEN, 3 * params.GRU_HIDDEN
    return [
        # x Wi at every step; the embedding's output needs its gradient (the table is trained).
        _product("gru.input_kernel", params.GRU_EMBEDDING, gates, steps, steps),
        # h Wh at every step, the first on the zero state; that state needs no gradient.
        _product("gru.recurrent_kernel", params.GRU_HIDDEN, gates, steps, steps - 1),
        _product("fc.weight", params.GRU_HIDDEN, params.GRU_CLASSES, 1, 1),
    ]


MODELS = {"cnn": _cnn, "gru": _gru}
_ALIASES = dict({b.name: b.layout for b in BENCHMARKS.values()}, **{layout: layout for layout in MODELS})


def _layout(model: str) -> str:
    key = _ALIASES.get(str(model).lower())
    if key is None:
        raise ValueError("model must be a benchmark ({}) or a layout ({}), got {!r}.".format(
            ", ".join(BENCHMARKS), ", ".join(sorted(MODELS)), model))
    return key


def products(model: str) -> List[Product]:
    """The breakdown: one Product per weight matrix of ``model`` (a benchmark's name, or its
    layout: "cnn" or "gru"), in the order the forward pass meets them."""
    return MODELS[_layout(model)]()


def per_sample(model: str, training: bool) -> int:
    """FLOPs per sample of a training step (``training``) or of a prediction."""
    return sum(p.training if training else p.forward for p in products(model))


def achieved(flops_per_sample: float, samples: float, seconds: float) -> float:
    """FLOP/s achieved: ``samples`` samples of ``flops_per_sample`` each in ``seconds``."""
    if seconds <= 0:
        raise ValueError("seconds must be positive, got {!r}.".format(seconds))
    return float(flops_per_sample) * samples / seconds


# --- peak throughputs ----------------------------------------------------------------------

class Peak(NamedTuple):
    """A GPU's dense peak throughputs in TFLOP/s (1e12 FLOP/s); None where it has no such unit.

    fp32 is the CUDA cores' rate; tf32, bf16 and fp16 are the tensor cores'. The datasheets of
    Ampere and later GPUs print the tensor figures with 2:4 sparsity, marked with an asterisk;
    the dense figure is half of that, which is what is written here.
    """
    name: str
    fp32: Optional[float]
    tf32: Optional[float]
    bf16: Optional[float]
    fp16: Optional[float]
    source: str
    note: str = ""


PRECISIONS = ("fp32", "tf32", "bf16", "fp16")

_HOPPER_NOTE = "the datasheet's tensor figures are with sparsity; halved here"
PEAKS = {peak.name: peak for peak in (
    Peak("H100 SXM", 67.0, 494.5, 989.5, 989.5,
         "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column "
         "(https://www.nvidia.com/en-us/data-center/h100/)", _HOPPER_NOTE),
    Peak("H100 PCIe", 51.0, 378.0, 756.5, 756.5,
         "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe column "
         "(https://www.nvidia.com/en-us/data-center/h100/)", _HOPPER_NOTE),
    Peak("H200 SXM", 67.0, 494.5, 989.5, 989.5,
         "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column "
         "(https://www.nvidia.com/en-us/data-center/h200/)", _HOPPER_NOTE),
    Peak("H200 NVL", 60.0, 417.5, 835.5, 835.5,
         "NVIDIA H200 Tensor Core GPU datasheet, H200 NVL column "
         "(https://www.nvidia.com/en-us/data-center/h200/)", _HOPPER_NOTE),
    Peak("A100", 19.5, 156.0, 312.0, 312.0,
         "NVIDIA A100 Tensor Core GPU datasheet, the same for the 40GB and 80GB, SXM and PCIe "
         "(https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
         "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf)",
         "the datasheet prints dense and sparse: 156 and 312 for TF32, 312 and 624 for BF16 and FP16"),
    Peak("L4", 30.3, 60.0, 121.0, 121.0,
         "NVIDIA L4 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/l4/)",
         "the datasheet's tensor figures (120, 242, 242) are with sparsity; halved here"),
    Peak("T4", 8.1, None, None, 65.0,
         "NVIDIA T4 Tensor Core GPU datasheet (https://www.nvidia.com/content/dam/en-zz/"
         "Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf)",
         "Turing: no TF32 or BF16 tensor cores; fp16 is the datasheet's mixed precision "
         "(FP16/FP32) figure"),
    Peak("V100 SXM2", 15.7, None, None, 125.0,
         "NVIDIA Tesla V100 GPU datasheet, V100 for NVLink column (https://images.nvidia.com/"
         "content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf)",
         "Volta: no TF32 or BF16 tensor cores; fp16 is the datasheet's tensor performance "
         "(mixed precision)"),
    Peak("V100 PCIe", 14.0, None, None, 112.0,
         "NVIDIA Tesla V100 GPU datasheet, V100 for PCIe column (https://images.nvidia.com/"
         "content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf)",
         "Volta: no TF32 or BF16 tensor cores; fp16 is the datasheet's tensor performance "
         "(mixed precision)"),
)}

# Device names as the driver reports them, to PEAKS' keys; the first pattern that matches
# wins, so a variant comes before the plain name it contains. A name none matches, or a
# variant not in the table (H100 NVL, V100S, A100X, ...), gives None rather than a guess.
_NAME_PATTERNS = (
    (r"\bMIG\b", None),                            # a MIG slice has a share of the peak only
    (r"\bH100\b.*\bNVL\b", None),
    (r"\bH100\b.*\bPCIE\b", "H100 PCIe"),
    (r"\bH100\b.*\b(SXM\d?|HBM3)\b", "H100 SXM"),   # "NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"
    (r"\bH200\b.*\bNVL\b", "H200 NVL"),
    (r"\bH200$", "H200 SXM"),                      # "NVIDIA H200"
    (r"\bH200\b.*\bSXM", "H200 SXM"),
    (r"\bA100[- ](SXM4?|PCIE)\b|\bA100[- ](40|80)GB\b", "A100"),
    (r"\bL4$", "L4"),                              # "NVIDIA L4", not L40 or L40S
    (r"\bT4$", "T4"),                              # "Tesla T4"
    (r"\bV100[- ]SXM2\b", "V100 SXM2"),            # "Tesla V100-SXM2-16GB"
    (r"\bV100[- ]PCIE\b", "V100 PCIe"),            # "Tesla V100-PCIE-32GB", not V100S
)


def peak(device_name: str) -> Optional[Peak]:
    """The PEAKS entry for a device name as torch.cuda.get_device_name() or nvidia-smi prints
    it ("NVIDIA A100-SXM4-80GB", "Tesla T4", "NVIDIA H100 80GB HBM3"), or None when unknown."""
    name = " ".join(str(device_name or "").upper().split())
    for pattern, key in _NAME_PATTERNS:
        if re.search(pattern, name):
            return None if key is None else PEAKS[key]
    return None


def share_of_peak(flops_per_second: float, device_name: str, precision: str) -> Optional[float]:
    """``flops_per_second`` as a share of the device's dense peak at ``precision`` (fp32, tf32,
    bf16 or fp16): 0.25 for a quarter. None for an unknown device, or one without that unit."""
    if precision not in PRECISIONS:
        raise ValueError("precision must be one of {}, got {!r}.".format(PRECISIONS, precision))
    found = peak(device_name)
    tflops = getattr(found, precision) if found is not None else None
    return None if tflops is None else flops_per_second / (tflops * 1e12)


# --- printing ------------------------------------------------------------------------------

def table(model: str) -> List[str]:
    """The breakdown of ``model`` as the lines of a Markdown table."""
    lines = ["| weights | products per sample x matrix | prediction | weight gradient | input gradient | training |",
             "|---|---|---:|---:|---:|---:|"]
    found = products(model)
    for p in found:
        lines.append("| {} | {:,} x ({:,} x {:,}) | {:,} | {:,} | {:,} | {:,} |".format(
            p.weight, p.uses, p.shape[0], p.shape[1], p.forward, p.weight_gradient,
            p.input_gradient, p.training))
    lines.append("| **total** | | **{:,}** | {:,} | {:,} | **{:,}** |".format(
        per_sample(model, False), sum(p.weight_gradient for p in found),
        sum(p.input_gradient for p in found), per_sample(model, True)))
    return lines


def main(out=None) -> None:
    out = out or sys.stdout
    for benchmark in BENCHMARKS:
        print("{}: FLOPs per sample (a multiply-add = 2)".format(benchmark), file=out)
        for line in table(benchmark):
            print(line, file=out)
        print(file=out)
    print("| GPU | FP32 | TF32 | BF16 | FP16 | |", file=out)
    print("|---|---:|---:|---:|---:|---|", file=out)
    for p in PEAKS.values():
        cells = ["" if v is None else "{:g}".format(v) for v in (p.fp32, p.tf32, p.bf16, p.fp16)]
        print("| {} | {} | {} |".format(p.name, " | ".join(cells), p.note), file=out)


if __name__ == "__main__":
    main()
