"""The parity check: every framework's model, from the same weights, against the reference.

The harness writes one inputs file per model (canonical initial weights with
non-zero biases, a fixed batch and its labels); a notebook in parity mode loads
them into its own model, and with dropout off (1) computes the logits of the
batch, (2) takes one optimiser step on it, and (3) writes the logits, the loss
and the updated weights, back in the canonical layout, to its outputs file.
:func:`compare` then measures each against the NumPy float64 reference.

What "equivalent" means: all three agree with the reference within float32
tolerances (:data:`TOLERANCES`):
- logits: max |framework - reference| <= 1e-4 x max |reference| (relative to the logits' scale);
- loss: |framework - reference| <= 1e-4 x |reference|;
- updated weights: max |framework - reference| <= 1e-5, over every array.
"""
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from common import canonical, params, reference

PARITY_SEED = 2017
BATCH = 16
BIAS_SCALE = 0.1
TOLERANCES = {"logits": 1e-4, "loss": 1e-4, "weights": 1e-5}
KINDS = {"logits": "relative", "loss": "relative", "weights": "absolute"}


def make_inputs(model: str, seed: int = PARITY_SEED) -> Dict[str, np.ndarray]:
    """Canonical weights (Glorot, biases U(-0.1, 0.1)), a fixed batch and its labels."""
    rng = np.random.default_rng([seed, 1])
    weights = canonical.initial_weights(model, seed, bias_scale=BIAS_SCALE)
    if model == "cnn":
        x = rng.uniform(0.0, 1.0, size=(BATCH, 3, 32, 32)).astype(np.float32)
        labels = rng.integers(0, params.CNN_CLASSES, size=BATCH)
    else:
        x = np.zeros((BATCH, params.IMDB_SEQ_LEN), dtype=np.int32)
        lengths = np.linspace(20, params.IMDB_SEQ_LEN, BATCH).astype(int)  # short and full reviews
        for row, length in enumerate(lengths):
            tokens = rng.integers(params.IMDB_INDEX_FROM, params.IMDB_VOCAB, size=length)
            tokens[rng.random(length) < 0.05] = params.IMDB_OOV
            tokens[0] = params.IMDB_START
            x[row, :length] = tokens
        labels = rng.integers(0, params.GRU_CLASSES, size=BATCH)
    return {"weights": weights, "x": x, "labels": labels.astype(np.int64)}


def write_inputs(path: Union[str, os.PathLike], model: str, seed: int = PARITY_SEED) -> Path:
    inputs = make_inputs(model, seed)
    return canonical.save(path, model, inputs["weights"], x=inputs["x"], labels=inputs["labels"])


def read_inputs(path: Union[str, os.PathLike], model: str) -> Tuple[dict, np.ndarray, np.ndarray]:
    """What a notebook in parity mode starts from: canonical weights, the batch, its labels."""
    weights, batch = canonical.load(path, model)
    return weights, batch["x"], batch["labels"]


def write_outputs(path: Union[str, os.PathLike], model: str, logits, loss, weights: dict, **info) -> Path:
    """What a notebook in parity mode writes: its logits, loss and updated canonical weights."""
    return canonical.save(path, model, weights, logits=np.asarray(logits, np.float32),
                          loss=np.asarray(loss, np.float64), info=np.asarray(json.dumps(info)))


def _check(output: str, difference: float, scale: float, worst: Optional[str] = None) -> dict:
    tolerance = TOLERANCES[output]
    bound = tolerance * scale if KINDS[output] == "relative" else tolerance
    return {"output": output, "max_abs_difference": float(difference), "bound": float(bound),
            "tolerance": tolerance, "kind": KINDS[output], "worst": worst,
            "ok": bool(np.isfinite(difference) and difference <= bound)}


def compare(model: str, inputs_path: Union[str, os.PathLike], outputs_path: Union[str, os.PathLike]) -> dict:
    """Each output of a framework against the reference: differences, bounds, and a verdict."""
    weights, x, labels = read_inputs(inputs_path, model)
    logits_ref, loss_ref, updated_ref = reference.one_step(model, weights, x, labels)
    updated, outputs = canonical.load(outputs_path, model)
    logits = np.asarray(outputs["logits"], np.float64)
    if logits.shape != logits_ref.shape:
        raise ValueError(f"{outputs_path}: logits have shape {logits.shape}, expected {logits_ref.shape}.")
    differences = {name: float(np.max(np.abs(updated[name] - updated_ref[name]))) for name in updated_ref}
    worst = max(differences, key=differences.get)
    checks = [
        _check("logits", np.max(np.abs(logits - logits_ref)), np.max(np.abs(logits_ref))),
        _check("loss", abs(float(outputs["loss"]) - loss_ref), abs(loss_ref)),
        _check("weights", differences[worst], 1.0, worst),
    ]
    return {"model": model, "equivalent": all(c["ok"] for c in checks), "checks": checks,
            "weight_differences": differences, "reference_loss": float(loss_ref),
            "loss": float(outputs["loss"]), "info": json.loads(str(outputs["info"])),
            "message": describe(checks)}


def describe(checks: List[dict]) -> str:
    """One line: 'equivalent' or which outputs differ, by how much, against which bound."""
    failing = [c for c in checks if not c["ok"]]
    if not failing:
        return "equivalent: " + ", ".join(f"{c['output']} {c['max_abs_difference']:.1e}" for c in checks)
    parts = []
    for c in failing:
        where = f" (worst: {c['worst']})" if c["worst"] else ""
        verb = "differs" if c["output"] == "loss" else "differ"
        parts.append(f"{c['output']} {verb} by {c['max_abs_difference']:.3g}{where}, "
                     f"more than the bound {c['bound']:.3g} ({c['kind']} tolerance {c['tolerance']:g})")
    return "not equivalent: " + "; ".join(parts)
