"""The export step of every notebook: the trained model as ONNX, and what it is checked against.

In a notebook (step 11, run when ``export_dir`` is set):

    with export.step(export_dir, "PyTorch", benchmark, predict_logits, x_test, y_predicted,
                     canonical_weights(), layout="NT", threads=threads,
                     batch_sizes=export_batch_sizes, runs=export_runs, sync=None) as out:
        torch.onnx.export(model, (torch.from_numpy(out.batch),), out.model_path, dynamo=True)
        out.exporter("torch.onnx.export (dynamo)", {"onnxscript": onnxscript.__version__})

``predict_logits(x)`` is the framework's own prediction (a batch in the notebook's layout in,
NumPy logits out). Before the export, the step writes the first :data:`BATCH` test samples
with the framework's logits for them, the whole test set with its predicted classes, the
model's weights in the canonical layout, and times ``predict_logits`` at each batch size
(:func:`latencies`). An export that raises is recorded as ``export failed`` with its error
and does not fail the notebook: the run's training record stands. A framework that has no
exporter calls :func:`no_exporter` instead.

The folder then holds, for ``rosetta onnx`` (``common/onnx_check.py``):

    model.onnx      the export (or model-bN.onnx for an exporter whose batch size is fixed)
    export.json     status, framework, benchmark, exporter and versions, layout, latencies
    arrays.npz      batch, logits (the framework's), x_test, predicted
    weights.npz     the weights, canonical layout (common.canonical)

NumPy and the standard library only; runs on Python 3.6 (CNTK's kernel).
"""
import contextlib
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from common import canonical, record
from common.benchmarks import BENCHMARKS

BATCH = 16               # the batch whose logits are compared element by element
BATCH_SIZES = (1, 64, 1024)
RUNS = 30                # timed runs per batch size, after the warm-up
WARMUP = 5
LAYOUTS = {b.name: tuple(b.export_layouts) for b in BENCHMARKS.values()}  # the input layouts each may take
SCHEMA_VERSION = 1


def batch_of(x, size):
    """``size`` samples of ``x``, cycling through it where it has fewer: every batch size can be timed."""
    return np.ascontiguousarray(x[np.arange(size) % len(x)])


def latencies(predict, x, batch_sizes=BATCH_SIZES, runs=RUNS, warmup=WARMUP, sync=None):
    """Median and 90th-percentile seconds of ``predict`` on ``x`` at each batch size, and samples per
    second at the median: ``warmup`` untimed calls, then ``runs`` timed ones, the device synchronised
    (``sync``) before each start and each stop."""
    found = []
    for size in batch_sizes:
        inputs = batch_of(x, size)
        for _ in range(warmup):
            predict(inputs)
        seconds = []
        for _ in range(runs):
            if sync is not None:
                sync()
            started = time.perf_counter()
            predict(inputs)
            if sync is not None:
                sync()
            seconds.append(time.perf_counter() - started)
        median = float(np.median(seconds))
        found.append({"batch_size": int(size), "runs": int(runs), "warmup": int(warmup), "median_seconds": median,
                      "p90_seconds": float(np.percentile(seconds, 90)),
                      "samples_per_second": float(size / median) if median > 0 else None})
    return found


def _check_sizes(batch_sizes, runs):
    """The batch sizes and runs a notebook was given (None: :data:`BATCH_SIZES`, :data:`RUNS`), checked."""
    batch_sizes = BATCH_SIZES if batch_sizes is None else batch_sizes
    runs = RUNS if runs is None else runs
    sizes = [int(size) for size in batch_sizes]
    if not sizes or any(size < 1 for size in sizes):
        raise ValueError("export_batch_sizes must be positive whole numbers, got {!r}".format(batch_sizes))
    if int(runs) < 1:
        raise ValueError("export_runs must be a positive whole number, got {!r}".format(runs))
    return sizes, int(runs)


class Export:
    """The folder of one export; what the notebook's export code uses of it."""

    def __init__(self, folder, benchmark, batch):
        self.folder = Path(folder)
        self.benchmark = benchmark
        self.batch = batch                              # the first BATCH test samples, the notebook's layout
        self.model_path = str(self.folder / "model.onnx")
        self.info = {}

    def fixed_batch_path(self, size):
        """Where an exporter whose batch size is fixed writes the model for ``size`` samples."""
        return str(self.folder / "model-b{}.onnx".format(int(size)))

    def exporter(self, name, versions, **notes):
        """Names the exporter and its versions (package -> version); ``notes`` are kept as they are,
        for example ``export_forward="..."`` where the export is not the benchmark's own model."""
        self.info.update(exporter=name, exporter_versions={k: str(v) for k, v in versions.items()}, **notes)


def _header(framework, benchmark, layout, threads):
    if benchmark not in BENCHMARKS:
        raise ValueError("benchmark must be one of {}, got {!r}".format(", ".join(BENCHMARKS), benchmark))
    if layout not in LAYOUTS[benchmark]:
        raise ValueError("layout for {} must be one of {}, got {!r}".format(benchmark, ", ".join(LAYOUTS[benchmark]),
                                                                           layout))
    return {"schema_version": SCHEMA_VERSION, "framework": framework, "benchmark": benchmark,
            "model": BENCHMARKS[benchmark].layout, "layout": layout, "threads": threads,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def no_exporter(export_dir, framework, benchmark, layout, reason, threads=None):
    """Records that this framework's model cannot be exported, and why."""
    folder = Path(export_dir)
    folder.mkdir(parents=True, exist_ok=True)
    info = _header(framework, benchmark, layout, threads)
    info.update(status="no exporter", error=reason)
    record.write_json(folder / "export.json", info)
    print("export: no exporter: " + reason)
    return info


@contextlib.contextmanager
def step(export_dir, framework, benchmark, predict, x_test, predicted, weights, layout, threads=None,
         batch_sizes=BATCH_SIZES, runs=RUNS, sync=None):
    """The export step (see the module's docstring); yields the :class:`Export` to write into."""
    folder = Path(export_dir)
    folder.mkdir(parents=True, exist_ok=True)
    info = _header(framework, benchmark, layout, threads)
    sizes, runs = _check_sizes(batch_sizes, runs)
    batch = batch_of(x_test, min(BATCH, len(x_test)))
    logits = np.asarray(predict(batch), np.float32)
    np.savez(str(folder / "arrays.npz"), batch=batch, logits=logits, x_test=np.asarray(x_test),
             predicted=np.asarray(predicted, np.int64))
    canonical.save(folder / "weights.npz", BENCHMARKS[benchmark].layout, weights)
    info["framework_latencies"] = latencies(predict, x_test, sizes, runs, sync=sync)
    out = Export(folder, benchmark, batch)
    started = time.perf_counter()
    try:
        yield out
        made = sorted(path.name for path in folder.glob("model*.onnx"))
        if not made:
            raise RuntimeError("the export code wrote no model.onnx (nor model-bN.onnx) into " + str(folder))
        info.update(status="exported", models=made)
    except Exception as error:  # the training record stands; the failure is recorded and shown
        info.update(status="export failed", error="{}: {}".format(type(error).__name__, error),
                    traceback=traceback.format_exc()[-4000:])
        print("export failed: {}: {}".format(type(error).__name__, error), file=sys.stderr)
    info["export_seconds"] = time.perf_counter() - started
    info.update(out.info)
    record.write_json(folder / "export.json", info)
    if info["status"] == "exported":
        print("export: {} in {:.1f} s by {}".format(", ".join(info["models"]), info["export_seconds"],
                                                   info.get("exporter", "an unnamed exporter")))


def drop_weight_inputs(model):
    """Removes from an ONNX model's graph inputs the weights it also holds as initializers, which some
    exporters list in both places (mx.onnx, onnx_chainer, CNTK): ONNX Runtime then treats them as
    constants, and the data is the first input. Returns the model (an onnx ModelProto)."""
    weights = {tensor.name for tensor in model.graph.initializer}
    kept = [given for given in model.graph.input if given.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model


def restamp_opset(path, version):
    """Sets an exported model's opset stamp to ``version``, the one its operators follow, for an
    exporter that stamps another (MXNet 1.9.1's mx.onnx stamps the newest opset the installed onnx
    knows); drops its weights from the graph inputs and runs onnx's full checker. Needs onnx."""
    import onnx

    graph = drop_weight_inputs(onnx.load(str(path)))
    graph.opset_import[0].version = version
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))


def free_batch_axis(path):
    """CNTK 2.7 writes its batch axis as a fixed 1: makes it a free ``N`` in the input, the output and
    the first dimension of every Reshape of the data (-1), drops the weights from the graph inputs and
    the shapes inferred for a batch of 1, and runs onnx's checker. Needs onnx."""
    import onnx
    from onnx import numpy_helper

    exported = drop_weight_inputs(onnx.load(str(path)))
    graph = exported.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[0] not in constants:
            shape = numpy_helper.to_array(constants[node.input[1]]).copy()
            shape[0] = 0 if -1 in shape[1:] else -1  # 0: the input's own first dimension (one -1 at most)
            constants[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    del graph.value_info[:]
    onnx.checker.check_model(exported)
    onnx.save(exported, str(path))


def cntk_scan(path, output):
    """Makes CNTK 2.7's export of a recurrence (a Scan, as Keras 2's CNTK backend writes a recurrent
    layer) run for any batch: keeps only the graph output ``output`` (CNTK adds the recurrence's
    state and a bias as outputs); makes each slice that runs to the end of its axis (``[200:]``, which CNTK
    writes with the end 0, an empty slice for ONNX) end at the largest int32, in subgraphs too; and
    frees the batch axis (first) of each Scan body's inputs and outputs, written as 1. Run it before
    :func:`free_batch_axis`. Returns how many slices it changed. Needs onnx."""
    import onnx

    exported, changed = onnx.load(str(path)), 0
    kept = [value for value in exported.graph.output if value.name == output]
    if not kept:
        raise ValueError(f"{path} has no output {output!r}: {[v.name for v in exported.graph.output]}")
    del exported.graph.output[:]
    exported.graph.output.extend(kept)
    graphs = [exported.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            for body in (a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH):
                graphs.append(body)
                if node.op_type == "Scan":
                    for value in list(body.input) + list(body.output):
                        value.type.tensor_type.shape.dim[0].dim_param = "N"
                    del body.value_info[:]  # the shapes CNTK inferred for a batch of 1
            attributes = {attribute.name: attribute for attribute in node.attribute}
            if node.op_type == "Slice" and "ends" in attributes:  # opset 9: starts and ends are attributes
                ends, starts = attributes["ends"].ints, attributes["starts"].ints
                for i, (start, end) in enumerate(zip(starts, ends)):
                    if end == 0 and start != 0:
                        ends[i], changed = 2 ** 31 - 1, changed + 1
    onnx.save(exported, str(path))
    return changed


def max_pool_2d(model_path):
    """Rewrites each MaxPool over four axes in ``model_path`` as a 2-D MaxPool, in place; returns how many.

    jax2onnx (0.17) writes a max-pooling of an (N, H, W, C) or (N, C, H, W) array as
    Unsqueeze, Unsqueeze, MaxPool over all four axes (kernel 1x2x2x1 or 1x1x2x2), Squeeze: a valid
    ONNX graph that ONNX Runtime does not run (it pools 3 axes at most). Each such MaxPool becomes
    Transpose (the unpooled axes first), MaxPool over the pooled axes, Transpose back: the same values.
    Needs the onnx package (the export's environment has it)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)  # weights kept in a .data file stay there
    graph = model.graph
    made_by = {name: node for node in graph.node for name in node.output}
    used_by = {name: node for node in graph.node for name in node.input}
    rewritten = set()
    for pool in [node for node in graph.node if node.op_type == "MaxPool"]:
        found = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
        kernel = list(found["kernel_shape"])
        strides = list(found.get("strides", [1] * len(kernel)))
        if len(kernel) != 4:
            continue
        if any(found.get("pads", [])) or any(d != 1 for d in found.get("dilations", [])) or len(pool.output) != 1:
            raise ValueError("max_pool_2d: a 4-axis MaxPool with padding, dilations or indices: " + pool.name)
        inner = made_by.get(pool.input[0])
        outer = made_by.get(inner.input[0]) if inner is not None else None
        squeeze = used_by.get(pool.output[0])
        if not (outer and inner.op_type == outer.op_type == "Unsqueeze" and squeeze and squeeze.op_type == "Squeeze"):
            raise ValueError("max_pool_2d: a 4-axis MaxPool not between two Unsqueezes and a Squeeze: " + pool.name)
        pooled = [axis for axis in range(4) if kernel[axis] != 1 or strides[axis] != 1]
        order = [axis for axis in range(4) if axis not in pooled] + pooled  # (N, C, pooled axes)
        back = [order.index(axis) for axis in range(4)]
        for node, op_type, attributes in ((outer, "Transpose", {"perm": order}), (inner, "Identity", {}),
                                          (pool, "MaxPool", {"kernel_shape": [kernel[a] for a in pooled],
                                                             "strides": [strides[a] for a in pooled]}),
                                          (squeeze, "Transpose", {"perm": back})):
            node.op_type = op_type
            del node.input[1:]
            del node.attribute[:]
            node.attribute.extend(helper.make_attribute(k, v) for k, v in attributes.items())
        rewritten.update([outer.output[0], inner.output[0], pool.output[0]])
    kept = [info for info in graph.value_info if info.name not in rewritten]  # their old shapes no longer hold
    del graph.value_info[:]
    graph.value_info.extend(kept)
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]  # the Unsqueezes' axes
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(model_path))
    onnx.checker.check_model(str(model_path))
    return len(rewritten) // 3


def read(export_dir):
    """export.json of an export folder, with a ValueError naming the file where it is missing or unreadable."""
    path = Path(export_dir) / "export.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError("{}: not an export record ({})".format(path, error))
