"""The parity check: every framework's model, from the same weights, against the reference.

The harness writes one inputs file per model: canonical initial weights with
non-zero biases, and :data:`STEPS` fixed batches with their labels. A notebook in
parity mode first writes its own initial weights (the framework's initialisation,
before anything is loaded), then loads the canonical ones into its model and, with
dropout off, takes one optimiser step on each batch in turn. It writes the logits
of the first batch before the first step, the loss of every step, the weights after
the first step and after the last, back in the canonical layout, to its outputs file.
:func:`compare` then measures each against the NumPy float64 reference.

What "equivalent" means: every output within float32 tolerances of the reference
(:data:`TOLERANCES`; docs/parity.md gives the measurements they were chosen from):
- logits: max |framework - reference| <= 1e-4 x max |reference| (relative to the logits' scale);
- loss at step 1: |framework - reference| <= 1e-4 x |reference|;
- weights after step 1: max |framework - reference| <= 1e-5, over every array;
- loss at every step t: relative difference <= 1e-4 x t;
- weights after the last step T: max |framework - reference| <= 2e-5 x T.
The initial weights are checked against the design's scheme (:func:`check_initial`), and the
dropout rate at each site in training mode against the design's (:func:`check_dropout`).
"""
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from common import canonical, reference
from common.benchmarks import BENCHMARKS, of_layout

PARITY_SEED = 2017
BATCH = 16
SHAPES = canonical.LAYOUTS  # the canonical shape of each array, for notebooks that must reshape
STEPS = {b.layout: b.parity_steps for b in BENCHMARKS.values()}  # per model: common.benchmarks says why
BIAS_SCALE = 0.1
TOLERANCES = {"logits": 1e-4, "loss": 1e-4, "weights": 1e-5, "losses": 1e-4, "final_weights": 2e-5,
              "initial": 0.02, "dropout": 1e-7}
KINDS = {"logits": "relative", "loss": "relative", "weights": "absolute", "losses": "relative, x step",
         "final_weights": "absolute, x steps", "initial": "relative std", "dropout": "absolute"}


def _batch(model: str, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One fixed batch and its labels, drawn by the data-set module of the model's benchmark."""
    return of_layout(model).data().parity_batch(rng, BATCH)


def make_inputs(model: str, seed: int = PARITY_SEED) -> Dict[str, np.ndarray]:
    """Canonical weights (Glorot, biases U(-0.1, 0.1)) and STEPS[model] fixed batches with labels:
    ``x`` is (steps, 16, ...), ``labels`` (steps, 16)."""
    rng = np.random.default_rng([seed, 1])
    weights = canonical.initial_weights(model, seed, bias_scale=BIAS_SCALE)
    batches = [_batch(model, rng) for _ in range(STEPS[model])]
    return {"weights": weights, "x": np.stack([x for x, _ in batches]),
            "labels": np.stack([labels for _, labels in batches])}


def write_inputs(path: Union[str, os.PathLike], model: str, seed: int = PARITY_SEED) -> Path:
    inputs = make_inputs(model, seed)
    return canonical.save(path, model, inputs["weights"], x=inputs["x"], labels=inputs["labels"])


def read_inputs(path: Union[str, os.PathLike], model: str) -> Tuple[dict, np.ndarray, np.ndarray]:
    """What a notebook in parity mode starts from: canonical weights, the batches, their labels."""
    weights, batch = canonical.load(path, model)
    return weights, batch["x"], batch["labels"]


def write_outputs(path: Union[str, os.PathLike], model: str, logits, losses, first: dict, final: dict,
                  initial: dict, dropout, **info) -> Path:
    """What a notebook in parity mode writes: the logits of the first batch, the loss of every step,
    the canonical weights after the first step and after the last, its own initial weights, and
    the dropout rate of each dropout site of its model in training mode, in order."""
    path = Path(path)
    losses = np.asarray(losses, np.float64).reshape(-1)
    canonical.save(path.with_name(path.stem + "-initial.npz"), model, initial)
    canonical.save(path.with_name(path.stem + "-final.npz"), model, final)
    return canonical.save(path, model, first, logits=np.asarray(logits, np.float32), losses=losses,
                          dropout=np.asarray(list(dropout), np.float64), info=np.asarray(json.dumps(info)))


def read_outputs(path: Union[str, os.PathLike], model: str) -> Dict[str, object]:
    """The outputs :func:`write_outputs` wrote, as {"first", "final", "initial", "logits", "losses", "info"}."""
    path = Path(path)
    first, others = canonical.load(path, model)
    final, _ = canonical.load(path.with_name(path.stem + "-final.npz"), model)
    initial, _ = canonical.load(path.with_name(path.stem + "-initial.npz"), model)
    return {"first": first, "final": final, "initial": initial, "logits": others["logits"],
            "losses": np.asarray(others["losses"], np.float64), "dropout": [float(r) for r in others["dropout"]],
            "info": json.loads(str(others["info"]))}


def _check(output: str, difference: float, scale: float, worst: Optional[str] = None) -> dict:
    tolerance = TOLERANCES[output]
    bound = tolerance if KINDS[output] == "absolute" else tolerance * scale
    return {"output": output, "max_abs_difference": float(difference), "bound": float(bound),
            "tolerance": tolerance, "kind": KINDS[output], "worst": worst,
            "ok": bool(np.isfinite(difference) and difference <= bound)}


def initial_bound(size: int) -> float:
    """How far, relatively, an array's standard deviation may be from Glorot's limit / sqrt(3): five
    standard errors of the standard deviation of ``size`` uniform draws (sqrt(0.2 / size)), at
    least the tolerance (2%)."""
    return max(TOLERANCES["initial"], 5.0 * float(np.sqrt(0.2 / size)))


def check_initial(model: str, initial: dict) -> dict:
    """The design's initialisation, array by array: biases zero; every other array Glorot-uniform,
    every value within its limit and its standard deviation within :func:`initial_bound`."""
    problems, worst, worst_name, worst_bound = [], 0.0, None, TOLERANCES["initial"]
    for name, shape in canonical.LAYOUTS[model].items():
        values = np.asarray(initial[name], np.float64)
        if len(shape) == 1:
            if np.any(values != 0):
                problems.append(f"{name} is not zero (max |b| {np.max(np.abs(values)):.3g})")
            continue
        limit = canonical.glorot_limit(shape)
        expected, bound = limit / np.sqrt(3.0), initial_bound(values.size)
        off = abs(values.std() / expected - 1.0)
        if off / bound > worst / worst_bound:
            worst, worst_name, worst_bound = off, name, bound
        if np.max(np.abs(values)) > limit * (1 + 1e-6):
            problems.append(f"{name} has values up to {np.max(np.abs(values)):.4g}, past the Glorot limit {limit:.4g}")
        elif off > bound:
            problems.append(f"{name}'s standard deviation {values.std():.4g} is {off:.1%} off Glorot's "
                            f"{expected:.4g} (bound {bound:.1%})")
    return {"output": "initial", "max_abs_difference": float(worst), "bound": float(worst_bound),
            "tolerance": TOLERANCES["initial"], "kind": KINDS["initial"], "worst": worst_name,
            "ok": not problems, "problems": problems}


DROPOUT = {b.layout: tuple(b.dropout) for b in BENCHMARKS.values()}  # the design's rates, site by site


def check_dropout(model: str, rates) -> dict:
    """The rate at each dropout site in training mode, in order, against the design's; a site
    with rate 0 applies no dropout and is left out (a recurrent layer's own, unused dropout)."""
    applied = [float(rate) for rate in rates if rate > 0]
    expected = list(DROPOUT[model])
    same_sites = len(applied) == len(expected)
    difference = max((abs(a - b) for a, b in zip(applied, expected)), default=0.0) if same_sites else float("inf")
    check = _check("dropout", difference, 1.0)
    check["problems"] = [] if check["ok"] else [f"the rates in training mode are {applied or 'none'}, the "
                                                f"design's {expected or 'none'}"]
    return check


def compare(model: str, inputs_path: Union[str, os.PathLike], outputs_path: Union[str, os.PathLike]) -> dict:
    """Each output of a framework against the reference: differences, bounds, and a verdict."""
    weights, xs, labels = read_inputs(inputs_path, model)
    outputs = read_outputs(outputs_path, model)
    steps = len(xs)
    logits, losses = np.asarray(outputs["logits"], np.float64), outputs["losses"]
    expected = (len(xs[0]), of_layout(model).classes)
    if logits.shape != expected:
        raise ValueError(f"{outputs_path}: logits have shape {logits.shape}, expected {expected}.")
    if losses.shape != (steps,):
        raise ValueError(f"{outputs_path}: {losses.size} losses, expected one for each of the {steps} steps.")
    logits_ref = reference.forward(model, weights, xs[0])
    losses_ref, first_ref, final_ref = reference.train(model, weights, xs, labels)
    first = {n: float(np.max(np.abs(outputs["first"][n] - first_ref[n]))) for n in first_ref}
    final = {n: float(np.max(np.abs(outputs["final"][n] - final_ref[n]))) for n in final_ref}
    relative = np.abs(losses - losses_ref) / np.abs(losses_ref)
    # the loss at step t is held to t times the step-1 tolerance: the bound on the worst ratio
    worst_step = int(np.argmax(relative / np.arange(1, steps + 1)))
    checks = [
        _check("logits", np.max(np.abs(logits - logits_ref)), np.max(np.abs(logits_ref))),
        _check("loss", abs(losses[0] - losses_ref[0]), abs(losses_ref[0])),
        _check("weights", max(first.values()), 1.0, max(first, key=first.get)),
        _check("losses", relative[worst_step], worst_step + 1.0, f"step {worst_step + 1}"),
        _check("final_weights", max(final.values()), float(steps), max(final, key=final.get)),
        check_initial(model, outputs["initial"]),
        check_dropout(model, outputs["dropout"]),
    ]
    return {"model": model, "steps": steps, "equivalent": all(c["ok"] for c in checks), "checks": checks,
            "weight_differences": first, "final_weight_differences": final,
            "loss_differences": [float(d) for d in relative], "reference_losses": [float(v) for v in losses_ref],
            "losses": [float(v) for v in losses], "reference_loss": float(losses_ref[0]), "loss": float(losses[0]),
            "info": outputs["info"], "message": describe(checks, steps)}


def compare_variant(model: str, inputs_path: Union[str, os.PathLike], outputs_path: Union[str, os.PathLike],
                    variant: str, observed: Optional[dict]) -> dict:
    """The relaxed step check of a variant (common.variants): its first-step logits and loss within the
    variant's tolerance (``variants.TOLERANCES``, relative to the reference's scale) of the float64
    reference on the canonical weights, and the precision the notebook observed (``observed``) as the
    variant promises (``variants.problems``). Float64 parity cannot hold in bfloat16; this can."""
    from common import variants

    weights, xs, labels = read_inputs(inputs_path, model)
    outputs = read_outputs(outputs_path, model)
    logits, losses = np.asarray(outputs["logits"], np.float64), outputs["losses"]
    expected = (len(xs[0]), of_layout(model).classes)
    if logits.shape != expected:
        raise ValueError(f"{outputs_path}: logits have shape {logits.shape}, expected {expected}.")
    logits_ref = reference.forward(model, weights, xs[0])
    losses_ref, _, _ = reference.train(model, weights, xs[:1], labels[:1])
    tolerances = variants.TOLERANCES[variant]
    checks = []
    for output, difference, scale in (("logits", np.max(np.abs(logits - logits_ref)), np.max(np.abs(logits_ref))),
                                      ("loss", abs(losses[0] - losses_ref[0]), abs(losses_ref[0]))):
        bound = tolerances[output] * scale
        checks.append({"output": output, "max_abs_difference": float(difference), "bound": float(bound),
                       "tolerance": tolerances[output], "kind": "relative", "worst": None,
                       "ok": bool(np.isfinite(difference) and difference <= bound)})
    broken = variants.problems(variant, observed)
    checks.append({"output": "precision", "max_abs_difference": float(len(broken)), "bound": 0.0, "tolerance": 0.0,
                   "kind": "promises broken", "worst": None, "ok": not broken, "problems": broken})
    failing = [c for c in checks if not c["ok"]]
    if not failing:
        message = (f"{variant} within its step tolerance: logits {checks[0]['max_abs_difference']:.1e} (bound "
                   f"{checks[0]['bound']:.1e}), loss {checks[1]['max_abs_difference']:.1e} (bound "
                   f"{checks[1]['bound']:.1e}); observed activation {observed['activation']}, weights "
                   f"{', '.join(observed['weights'])}")
    else:
        parts = [f"{c['output']} differs by {c['max_abs_difference']:.3g}, more than the bound {c['bound']:.3g} "
                 f"(relative tolerance {c['tolerance']:g})" for c in failing if c["output"] != "precision"]
        parts += [f"variant {variant} not as promised: " + "; ".join(broken)] if broken else []
        message = f"{variant} not within its step check: " + "; ".join(parts)
    return {"model": model, "variant": variant, "equivalent": not failing, "checks": checks,
            "precision": observed, "reference_loss": float(losses_ref[0]), "loss": float(losses[0]),
            "info": outputs["info"], "message": message}


LABELS = {"logits": "logits", "loss": "loss", "weights": "weights after step 1", "losses": "the losses",
          "final_weights": "weights after the last step", "initial": "the initial weights", "dropout": "dropout"}


def describe(checks: List[dict], steps: Optional[int] = None) -> str:
    """One line: 'equivalent' or which outputs differ, by how much, against which bound."""
    failing = [c for c in checks if not c["ok"]]
    if not failing:
        shown = {c["output"]: c["max_abs_difference"] for c in checks}
        line = f"equivalent: logits {shown['logits']:.1e}, loss {shown['loss']:.1e}, weights {shown['weights']:.1e}"
        if "final_weights" in shown:
            line += f"; after {steps} steps: losses {shown['losses']:.1e}, weights {shown['final_weights']:.1e}"
        return line
    parts = []
    for c in failing:
        if c["output"] == "initial":
            parts.append("the initial weights are not the design's Glorot-uniform with zero biases: "
                         + "; ".join(c["problems"]))
            continue
        if c["output"] == "dropout":
            parts.append("the dropout differs: " + "; ".join(c["problems"]))
            continue
        where = f" (worst: {c['worst']})" if c["worst"] else ""
        verb = "differs" if c["output"] == "loss" else "differ"
        parts.append(f"{LABELS[c['output']]} {verb} by {c['max_abs_difference']:.3g}{where}, "
                     f"more than the bound {c['bound']:.3g} ({c['kind']} tolerance {c['tolerance']:g})")
    return "not equivalent: " + "; ".join(parts)
