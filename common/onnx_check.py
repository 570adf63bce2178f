"""The three checks of an exported model, and its prediction timed in ONNX Runtime.

    python -m common.onnx_check EXPORT_DIR [--device cpu|cuda] [--out CHECK.json]

Runs in an ONNX Runtime environment (``harness/envs/onnxruntime-FLAVOUR.txt``: onnxruntime or
onnxruntime-gpu, onnx, NumPy), on a folder that a notebook's export step wrote (``common.export``):

1. **framework**: ONNX Runtime's logits for the export batch against the framework's own, within
   the parity bound on logits (1e-4 x their largest magnitude), and the predicted class of every
   test sample the same as the framework's (a sample whose two best logits lie within that bound
   is a tie, and either class counts);
2. **reference**: ONNX Runtime's logits against the NumPy float64 reference (``common.reference``)
   computed from the weights the export step read out of the model, within the same bound: the
   exported graph computes the design's model with exactly the trained weights;
3. **graph**: opset, operators, file size and the GRU's form (one fused ``GRU`` node, a ``Loop`` or
   ``Scan``, or unrolled). A fused GRU node must have ``linear_before_reset=1``, the cuDNN form the
   design defines; with 0 it applies the reset gate before the recurrent product, another GRU.

The checks run on ONNX Runtime's CPU provider. Then its prediction is timed like the framework's
was (``common.export.latencies``: the same batch sizes, warm-up, runs and thread count) on the
run's device: the CPU provider for a CPU run, the CUDA provider (onnxruntime-gpu) for a GPU run;
where that provider cannot load, the record says why and holds no ONNX Runtime times, rather than
a CPU time beside a GPU one. The result is one JSON record; the exit status is 0 when every check
passes.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common import canonical, export, parity, reference
from common.benchmarks import BENCHMARKS

TOLERANCE = parity.TOLERANCES["logits"]  # relative to the largest logit's magnitude, as in parity
CHUNK = 1024                             # test samples per ONNX Runtime call
KIND = "onnx"
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def graph_summary(path, benchmark):
    """What the exported graph is: opset, file size, operator counts, its input, and the GRU's form."""
    import onnx

    model = onnx.load(str(path))
    operators = {}
    for node in model.graph.node:
        operators[node.op_type] = operators.get(node.op_type, 0) + 1
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)
    grus = [node for node in model.graph.node if node.op_type == "GRU"]
    linear_before_reset = [next((int(a.i) for a in node.attribute if a.name == "linear_before_reset"), 0)
                           for node in grus]
    if not BENCHMARKS[benchmark].recurrent:
        form = None
    elif grus:
        form = "fused GRU node" if len(grus) == 1 else f"{len(grus)} GRU nodes"
    elif "Loop" in operators or "Scan" in operators:
        form = "Loop" if "Loop" in operators else "Scan"
    else:
        form = "unrolled"
    given = model.graph.input[0]
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in given.type.tensor_type.shape.dim]
    data = Path(str(path) + ".data")  # weights kept outside the graph's file, where an exporter does that
    size = Path(path).stat().st_size + (data.stat().st_size if data.is_file() else 0)
    return {"opset": opset, "bytes": size, "operators": operators, "nodes": len(model.graph.node),
            "gru_form": form, "linear_before_reset": linear_before_reset, "input": given.name, "input_shape": dims,
            "producer": f"{model.producer_name} {model.producer_version}".strip()}


def gru_problems(graph):
    """What makes a GRU node another GRU than the design's."""
    return [f"the graph's GRU node has linear_before_reset={value}: it applies the reset gate before the "
            "recurrent product, not after it as the design's cuDNN form does (linear_before_reset=1)"
            for value in graph["linear_before_reset"] if value != 1]


def providers(device):
    return ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def session(path, threads, device="cpu"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    made = ort.InferenceSession(str(path), options, providers=providers(device))
    if device == "cuda" and "CUDAExecutionProvider" not in made.get_providers():
        raise RuntimeError(f"ONNX Runtime could not use its CUDA provider for {path} (it has "
                           f"{', '.join(made.get_providers())}); no GPU time is compared with a CPU time")
    return made


class Predictor:
    """ONNX Runtime's prediction of an export: a session for each model file, keyed by its fixed batch
    size (None: the batch size is free); ``__call__`` takes a batch in the notebook's layout."""

    def __init__(self, folder, models, threads, device):
        self.sessions = {}
        for name in models:
            made = session(Path(folder) / name, threads, device)
            size = made.get_inputs()[0].shape[0]
            self.sessions[size if isinstance(size, int) else None] = made
        self.folder = folder

    def __call__(self, x):
        made = self.sessions.get(len(x), self.sessions.get(None))
        if made is None:
            raise ValueError(f"{self.folder}: no model for a batch of {len(x)} (fixed batch sizes "
                             f"{sorted(self.sessions)})")
        given = made.get_inputs()[0]
        dtype = INPUT_TYPES.get(given.type)  # the graph's input type where the notebook's differs
        return made.run(None, {given.name: np.ascontiguousarray(x, dtype=dtype)})[0]

    def over(self, x, size=CHUNK):
        """Logits of every sample of ``x``, ``size`` at a time; where every model has a fixed batch size,
        at one of those sizes, the last chunk padded by repeating its samples."""
        fixed = None not in self.sessions
        if fixed and size not in self.sessions:
            size = max(self.sessions)
        parts = []
        for start in range(0, len(x), size):
            chunk = x[start:start + size]
            padded = export.batch_of(chunk, size) if fixed and len(chunk) != size else chunk
            parts.append(np.asarray(self(padded))[:len(chunk)])
        return np.concatenate(parts)


def to_reference_layout(x, layout):
    return np.transpose(x, (0, 3, 1, 2)) if layout == "NHWC" else x


def _logits_check(name, found, expected, scale):
    difference = float(np.max(np.abs(np.asarray(found, np.float64) - np.asarray(expected, np.float64))))
    bound = TOLERANCE * float(scale)
    return {"check": name, "max_abs_difference": difference, "bound": bound, "ok": bool(np.isfinite(difference)
                                                                                        and difference <= bound)}


def class_agreement(logits, predicted, bound):
    """How many samples ONNX Runtime classes as the framework did; a disagreement where ONNX Runtime's
    two best logits lie within ``bound`` of each other is a tie, not a difference."""
    ours = np.argmax(logits, axis=1)
    differ = np.flatnonzero(ours != predicted)
    margins = logits[differ, ours[differ]] - logits[differ, predicted[differ]]
    real = differ[margins > bound]
    return {"check": "classes", "samples": int(len(predicted)), "agree": int(len(predicted) - len(differ)),
            "ties": int(len(differ) - len(real)), "differ": int(len(real)), "first_differing": real[:5].tolist(),
            "ok": bool(len(real) == 0)}


def check(folder, device="cpu", threads=None):
    """Every check of one export folder, and ONNX Runtime's latencies: the check record."""
    import onnxruntime as ort

    folder = Path(folder)
    info = export.read(folder)
    result = {"schema_version": export.SCHEMA_VERSION, "kind": KIND, "export_dir": str(folder),
              **{key: info.get(key) for key in ("framework", "benchmark", "model", "layout", "exporter",
                                                "exporter_versions", "export_forward", "export_seconds",
                                                "framework_latencies", "models", "error")},
              "export_status": info.get("status"), "device": device, "onnxruntime": ort.__version__,
              "providers": providers(device), "checked_with": providers("cpu")}
    if info.get("status") != "exported":
        result.update(status=info.get("status") or "export failed", ok=False,
                      message=f"{info.get('status')}: {info.get('error')}")
        return result
    threads = threads or info.get("threads")
    result["threads"] = threads
    model = info["model"]
    arrays = np.load(folder / "arrays.npz")
    weights, _ = canonical.load(folder / "weights.npz", model)
    models = info.get("models") or ["model.onnx"]
    result["graph"] = graph_summary(folder / ("model.onnx" if "model.onnx" in models else models[0]), info["benchmark"])
    predict = Predictor(folder, models, threads, "cpu")  # the checks: ONNX Runtime's CPU kernels, in float32
    batch, framework_logits = arrays["batch"], arrays["logits"]
    logits = np.asarray(predict.over(batch, len(batch)), np.float64)
    expected = reference.forward(model, weights, to_reference_layout(batch, info["layout"]))
    checks = [_logits_check("framework", logits, framework_logits, np.max(np.abs(framework_logits))),
              _logits_check("reference", logits, expected, np.max(np.abs(expected)))]
    all_logits = np.asarray(predict.over(arrays["x_test"]), np.float64)
    checks.append(class_agreement(all_logits, arrays["predicted"], TOLERANCE * np.max(np.abs(all_logits))))
    problems = gru_problems(result["graph"])
    checks.append({"check": "graph", "ok": not problems, "problems": problems})
    result["checks"] = checks
    result["equivalent"] = checks[1]["ok"]
    result["ok"] = all(c["ok"] for c in checks)
    result["status"] = "ok" if result["ok"] else "failed"
    latencies = info.get("framework_latencies") or []
    try:  # timed on the device the framework was timed on: never a GPU time against a CPU time
        timed = predict if device == "cpu" else Predictor(folder, models, threads, device)
    except Exception as error:  # no CUDA provider here (onnxruntime, not onnxruntime-gpu; no CUDA libraries)
        timed, result["timing_skipped"] = None, f"{type(error).__name__}: {error}"
    if latencies and timed is not None:
        result["onnxruntime_latencies"] = export.latencies(
            timed, arrays["x_test"], [entry["batch_size"] for entry in latencies], latencies[0]["runs"],
            latencies[0]["warmup"])
    result["message"] = describe(result)
    return result


def describe(result):
    """One line: what passed, or what differs and by how much."""
    if result.get("export_status") != "exported":
        return result["message"]
    by_name = {c["check"]: c for c in result["checks"]}
    graph = result["graph"]
    shape = f"opset {graph['opset']}, {graph['bytes'] / 2**20:.1f} MiB" + (
        f", GRU: {graph['gru_form']}" if graph["gru_form"] else "")
    if result.get("timing_skipped"):
        shape += f"; not timed on {result['device']}: {result['timing_skipped']}"
    if result["ok"]:
        return (f"ok: logits {by_name['framework']['max_abs_difference']:.1e} from the framework's, "
                f"{by_name['reference']['max_abs_difference']:.1e} from the reference; "
                f"{by_name['classes']['agree'] + by_name['classes']['ties']}/{by_name['classes']['samples']} "
                f"classes agree; {shape}")
    parts = []
    for name, what in (("framework", "the framework's logits"), ("reference", "the float64 reference")):
        c = by_name[name]
        if not c["ok"]:
            parts.append(f"ONNX Runtime's logits differ from {what} by {c['max_abs_difference']:.3g}, more than "
                         f"the bound {c['bound']:.3g}")
    c = by_name["classes"]
    if not c["ok"]:
        parts.append(f"{c['differ']} of {c['samples']} test samples classed otherwise than by the framework "
                     f"(first: {c['first_differing']})")
    parts += by_name["graph"]["problems"]
    return "failed: " + "; ".join(parts) + f" ({shape})"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m common.onnx_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="ONNX Runtime's threads (default: the framework's, as recorded)")
    parser.add_argument("--out", type=Path, help="where to write the check record (default: print it only)")
    args = parser.parse_args(argv)
    try:
        result = check(args.export_dir, args.device, args.threads)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"onnx_check: {args.export_dir}: {error}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(result["message"])
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
