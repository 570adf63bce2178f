"""Variants: the same notebook run another way than the proven fp32 row (docs/variants.md).

A notebook takes a ``variant`` parameter ("fp32" unless told otherwise). A notebook that offers
other variants says which, and why it offers no others where there is a reason (``require``: anything
else raises ``VariantUnsupported``; the harness reads the call and runs nothing else), changes a
few marked lines for them, and records the precision it observed at run time (``precision``): the
dtype of an activation inside the model and of the stored weights, read from the tensors, and for
``compiled`` what the compiler did. ``problems`` holds that against what the variant promises; the
harness fails a run whose record breaks a promise, so a variant cannot run as fp32 under another name.

    variants.require(variant, ("fp32", "compiled", "bf16"), "PyTorch")
    ...
    record.build(..., variant=variant, precision=variants.precision(
        activation=str(seen_dtype), weights=sorted(weight_dtypes), compiler=...))

Only the standard library: the kernels import this module, some of them on Python 3.6.
"""
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

FP32 = "fp32"
# Each variant: what it changes, in a line (docs/variants.md says how each framework does it).
VARIANTS = {
    "fp32": "the framework's plain float32 default: the row proven equal to the reference",
    "compiled": "the training step compiled by the framework's own compiler (the mode is recorded)",
    "bf16": "mixed precision: bfloat16 compute, float32 master weights",
    "fp16": "mixed precision: float16 compute with loss scaling, float32 master weights (GPUs without bfloat16)",
    "channels_last": "image activations and weights in NHWC memory order (float32)",
}
# The dtypes a variant promises: the activation inside the model, the stored weights.
PROMISED = {
    "fp32": ("float32", "float32"),
    "compiled": ("float32", "float32"),
    "bf16": ("bfloat16", "float32"),
    "fp16": ("float16", "float32"),
    "channels_last": ("float32", "float32"),
}
# The relaxed step check of a variant (common.parity.compare_variant): the first step's logits and
# loss, relative to the float64 reference on the canonical weights. bfloat16 keeps 8 bits of
# mantissa (a relative step of 2^-8 = 0.4%); measured on the CPU, the logits land 0.2% to 0.65% of
# their scale from the reference (docs/variants.md): they are held to 2%, the loss to 1%. The others compute in float32 and keep the fp32 row's tolerances.
# float16 keeps 11 bits of significand (a relative step of 2^-11 = 0.05 %), eight times finer than bfloat16.
FP16_LOGITS, FP16_LOSS = 5e-3, 2.5e-3
TOLERANCES = {
    "fp32": {"logits": 1e-4, "loss": 1e-4},
    "compiled": {"logits": 1e-4, "loss": 1e-4},
    "channels_last": {"logits": 1e-4, "loss": 1e-4},
    "bf16": {"logits": 2e-2, "loss": 1e-2},
    "fp16": {"logits": FP16_LOGITS, "loss": FP16_LOSS},
}


class VariantUnsupported(RuntimeError):
    """The notebook does not offer the variant it was asked for."""


def check_name(variant: str) -> str:
    """``variant`` where it is a known variant's name; a ValueError naming the known ones otherwise."""
    if variant not in VARIANTS:
        raise ValueError("variant must be one of {}, got {!r}".format(", ".join(VARIANTS), variant))
    return variant


def require(variant: str, offered, framework: str, unsupported: Optional[Dict[str, str]] = None) -> str:
    """``variant`` where the notebook offers it; VariantUnsupported otherwise (with the reason ``unsupported``
    gives for it, if any), never an fp32 run under its name. The harness reads the literal arguments of
    this call from the notebook (harness.frameworks.offered_variants) and starts no run of another variant."""
    check_name(variant)
    if variant not in offered:
        reason = (unsupported or {}).get(variant)
        raise VariantUnsupported(reason or "{} offers the variants {}, not {!r} (docs/variants.md)".format(
            framework, ", ".join(offered), variant))
    return variant


def precision(activation: str, weights, memory_format: Optional[str] = None,
              compiler: Optional[dict] = None, where: str = "", loss_scale: Optional[float] = None) -> dict:
    """What a record says of the precision a run observed: ``activation``, the dtype of an activation
    inside the model (``where``: which); ``weights``, the dtypes of the stored weights; the activation's
    ``memory_format`` where the framework has one; ``compiler``, what the compiler did (for ``compiled``:
    its ``mode``, ``graphs`` compiled, ``graph_breaks``); ``loss_scale``, the loss scale in use at the end
    (``fp16``: None where no loss scaling ran)."""
    found = {"activation": _dtype(activation), "weights": sorted({_dtype(w) for w in weights}),
             "activation_at": where}
    if memory_format is not None:
        found["memory_format"] = memory_format
    if compiler is not None:
        found["compiler"] = compiler
    if loss_scale is not None:
        found["loss_scale"] = float(loss_scale)
    return found


def _dtype(value) -> str:
    """A dtype's plain name: torch.bfloat16, <dtype: 'bfloat16'> and bfloat16 are all 'bfloat16'."""
    text = str(value)
    for strip in ("torch.", "<dtype: '", "'>", "dtype('", "')"):
        text = text.replace(strip, "")
    return text


def problems(variant: str, observed: Optional[dict]) -> List[str]:
    """Each way ``observed`` (a record's ``precision``) breaks what ``variant`` promises; [] where it keeps it."""
    if variant not in PROMISED:
        return ["{!r} is no known variant (expected one of {})".format(variant, ", ".join(VARIANTS))]
    if not isinstance(observed, dict):
        return ["the run recorded no observed precision (expected the dtype of an activation and of the weights)"]
    activation, weights = PROMISED[variant]
    found = []
    if observed.get("activation") != activation:
        found.append("its activation{} computed in {}, not {}".format(
            " at " + observed["activation_at"] if observed.get("activation_at") else "",
            observed.get("activation"), activation))
    if observed.get("weights") != [weights]:
        found.append("its weights are stored in {}, not {}".format(
            ", ".join(observed.get("weights") or ["nothing recorded"]), weights))
    if variant == "channels_last" and observed.get("memory_format") != "channels_last":
        found.append("its activation is in memory format {}, not channels_last".format(observed.get("memory_format")))
    if variant == "fp16" and not (isinstance(observed.get("loss_scale"), (int, float)) and observed["loss_scale"] > 0):
        found.append("no loss scaling ran (loss scale {}): float16 gradients under 6e-8 vanish without it".format(
            observed.get("loss_scale")))
    if variant == "compiled":
        compiler = observed.get("compiler") or {}
        if not compiler.get("mode"):
            found.append("it names no compile mode")
        if not isinstance(compiler.get("graphs"), int) or compiler["graphs"] < 1:
            found.append("no graph was compiled ({} graphs): the model ran eagerly".format(compiler.get("graphs")))
        if compiler.get("eager"):
            found.append("the framework was told to run its functions eagerly")
        if compiler.get("hybridized") is False:  # Gluon: a block not hybridized runs imperatively, op by op
            found.append("the block is not hybridized: it ran imperatively, op by op")
        for flag in ("static_alloc", "static_shape"):  # Gluon: compiled is the cached graph made static
            if compiler.get(flag) is False:
                found.append("it was hybridized without {}=True".format(flag))
        if compiler.get("graph_breaks"):
            found.append("the compiler broke the model into pieces run eagerly between ({} graph breaks: {})".format(
                compiler["graph_breaks"], "; ".join(compiler.get("break_reasons") or [])[:300]))
    return found


def describe(variant: str, observed: Optional[dict]) -> str:
    """One line: the promise broken, or '' where the variant keeps it."""
    found = problems(variant, observed)
    return "variant {} not as promised: {}".format(variant, "; ".join(found)) if found else ""


def observed_path(parity_outputs: Union[str, os.PathLike]) -> Path:
    """Where a parity run writes the precision it observed: beside its outputs, ``NAME-precision.json``."""
    path = Path(parity_outputs)
    return path.with_name(path.stem + "-precision.json")


def write_observed(parity_outputs: Union[str, os.PathLike], observed: dict) -> Path:
    """A parity run's observed precision, beside its outputs (``observed_path``)."""
    path = observed_path(parity_outputs)
    path.write_text(json.dumps(observed, indent=2) + "\n")
    return path


def read_observed(parity_outputs: Union[str, os.PathLike]) -> Optional[Dict]:
    """What ``write_observed`` wrote, or None where nothing was."""
    path = observed_path(parity_outputs)
    return json.loads(path.read_text()) if path.is_file() else None
