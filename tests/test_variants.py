"""Variants (common/variants.py, docs/variants.md): named by the harness, run by the same notebook, each
record stating the precision it observed; a framework without a variant says unsupported and runs nothing.

The harness's side runs in the selftest kernel (seconds); the PyTorch variants and their mutants run in
PyTorch's kernel at tiny sizes (marked kernel)."""
import dataclasses
import json
import subprocess

import nbformat
import pytest
import selftest

from common import REPOSITORY, parity as common_parity, record, reference, variants
from harness import cli, frameworks, kernels, parity, records, report, runner

# A selftest notebook that writes the record of a run of the variant it is given, with the precision
# that $ROSETTA_TEST_PRECISION (JSON: variant -> precision) says it observed.
WRITE_VARIANT = """
import json, os
from common import record
record.write(record_path, record.build(
    framework="Fake", api="test", benchmark="cifar", accuracy=0.25, variant=variant,
    precision=json.loads(os.environ["ROSETTA_TEST_PRECISION"]).get(variant),
    timing={"train_seconds": 1.5, "first_epoch_seconds": 1.5}, epochs=epochs or 10, batch_size=64,
    train_samples=train_samples or 50000, test_samples=10000, seed=seed))
"""
BF16 = variants.precision("torch.bfloat16", ["torch.float32"], where="conv2's output")
COMPILED = variants.precision("torch.float32", ["torch.float32"], where="conv2's output",
                              compiler={"mode": "default", "graphs": 2, "graph_breaks": 0})


def _framework(tmp_path, body, offered=None):
    """A selftest framework whose notebook runs ``body``, after a ``variants.require`` call offering ``offered``
    (a tuple of variants besides fp32; None: no call, fp32 only)."""
    if offered is not None:
        body = (f"from common import variants\nvariants.require(variant, {('fp32',) + tuple(offered)!r}, 'Fake', "
                "unsupported={'channels_last': 'no images here'})\n" + body)
    return selftest.framework(tmp_path / "selftest.ipynb", body)


def test_a_variant_the_framework_does_not_offer_is_recorded_unsupported_and_nothing_runs(tmp_path, selftest_kernel):
    body = "open(record_path + '.ran', 'w').close()\n" + selftest.WRITE_OK
    framework = _framework(tmp_path, body, offered=("compiled",))
    result = runner.execute(framework, "cifar", runner.RunSettings(variant="bf16"), tmp_path / "results")
    assert result["status"] == "unsupported" and result["variant"] == "bf16"
    assert result["error"] == "Selftest's notebook selftest.ipynb offers fp32, compiled, not bf16 (docs/variants.md)"
    folder = tmp_path / "results" / "records"
    assert not list(folder.glob("*.ran")) and not list(folder.glob("*.ipynb"))  # no fp32 run under its name
    assert [path.name.endswith("-selftest-cifar-bf16.json") for path in folder.glob("*.json")] == [True]
    assert record.read(next(folder.glob("*.json")))["status"] == "unsupported"
    assert framework.variant_unsupported("channels_last", "cifar") == "no images here"  # the notebook's reason
    assert framework.variant_unsupported("compiled", "cifar") is None


def test_a_variant_the_notebook_finds_it_cannot_run_here_is_recorded_unsupported(tmp_path, selftest_kernel):
    """Where it depends on the machine (Keras' jit_compile on a GPU), the notebook raises VariantUnsupported
    as it runs: recorded unsupported with its reason, for a run and for a step check alike."""
    framework = _framework(tmp_path, "raise variants.VariantUnsupported('no XLA form for gru')\n",
                           offered=("compiled",))
    notebook = nbformat.read(framework.notebooks["cifar"], as_version=4)
    notebook.cells[1].metadata["tags"] = ["step:parity"]  # a step the parity run keeps
    nbformat.write(notebook, framework.notebooks["cifar"])
    result = runner.execute(framework, "cifar", runner.RunSettings(variant="compiled"), tmp_path / "results")
    assert result["status"] == "unsupported" and result["error"] == "no XLA form for gru"
    checked = parity.check(framework, "cifar", tmp_path, variant="compiled")
    assert checked["status"] == "unsupported" and checked["equivalent"] is None
    assert checked["message"] == "no XLA form for gru"


def test_a_notebook_that_ignores_the_variant_fails_instead_of_running_fp32_under_its_name(tmp_path,
                                                                                         selftest_kernel):
    framework = _framework(tmp_path, selftest.WRITE_OK, offered=("bf16",))  # records fp32
    result = runner.execute(framework, "cifar", runner.RunSettings(variant="bf16"), tmp_path / "results")
    assert result["status"] == "failed"
    assert result["error"] == ("asked for variant bf16, the notebook recorded 'fp32': it does not run bf16 "
                               "(docs/variants.md)")


@pytest.mark.parametrize("variant, observed, words", [
    ("bf16", BF16, None),
    ("bf16", {**BF16, "activation": "float32"}, "its activation at conv2's output computed in float32, not bfloat16"),
    ("bf16", {**BF16, "weights": ["bfloat16"]}, "its weights are stored in bfloat16, not float32"),
])
def test_a_variant_run_is_held_to_the_precision_it_observed(tmp_path, selftest_kernel, monkeypatch, variant,
                                                            observed, words):
    monkeypatch.setenv("ROSETTA_TEST_PRECISION", json.dumps({variant: observed}))
    framework = _framework(tmp_path, WRITE_VARIANT, offered=(variant,))
    result = runner.execute(framework, "cifar", runner.RunSettings(variant=variant), tmp_path / "results")
    assert result["variant"] == variant and result["precision"] == observed
    if words is None:
        assert result["status"] == "ok", result["error"]
    else:
        assert result["status"] == "failed" and result["error"] == f"variant {variant} not as promised: {words}"
        assert record.read(next((tmp_path / "results" / "records").glob("*.json")))["status"] == "failed"


def test_each_broken_promise_is_named():
    assert variants.problems("bf16", BF16) == [] and variants.problems("compiled", COMPILED) == []
    assert variants.problems("compiled", {**COMPILED, "compiler": {"mode": "default", "graphs": 0}}) == [
        "no graph was compiled (0 graphs): the model ran eagerly"]
    assert variants.problems("compiled", {**COMPILED, "compiler": None}) == [
        "it names no compile mode", "no graph was compiled (None graphs): the model ran eagerly"]
    broken = {**COMPILED, "compiler": {"mode": "default", "graphs": 2, "graph_breaks": 1, "break_reasons": ["x"]}}
    assert variants.problems("compiled", broken) == [
        "the compiler broke the model into pieces run eagerly between (1 graph breaks: x)"]
    eager = {**COMPILED, "compiler": {"mode": "jit_compile=True", "graphs": 1, "eager": True}}
    assert variants.problems("compiled", eager) == ["the framework was told to run its functions eagerly"]
    gluon = {"mode": "hybridize(static_alloc=True, static_shape=True)", "hybridized": True, "static_alloc": True,
             "static_shape": True, "graphs": 1, "operators": 17}
    assert variants.problems("compiled", {**COMPILED, "compiler": gluon}) == []
    plain = {**gluon, "mode": "hybridize()", "static_alloc": False, "static_shape": False}  # the fp32 row's graph
    assert variants.problems("compiled", {**COMPILED, "compiler": plain}) == [
        "it was hybridized without static_alloc=True", "it was hybridized without static_shape=True"]
    imperative = {**gluon, "hybridized": False, "graphs": 0, "operators": 0}
    assert variants.problems("compiled", {**COMPILED, "compiler": imperative}) == [
        "no graph was compiled (0 graphs): the model ran eagerly",
        "the block is not hybridized: it ran imperatively, op by op"]
    assert variants.problems("fp32", {**COMPILED, "compiler": plain}) == []  # fp32 makes no promise of its graph
    assert variants.problems("channels_last", {**COMPILED, "memory_format": "contiguous"}) == [
        "its activation is in memory format contiguous, not channels_last"]
    assert variants.problems("bf16", None) == [
        "the run recorded no observed precision (expected the dtype of an activation and of the weights)"]
    assert variants.problems("fp8", BF16) == ["'fp8' is no known variant (expected one of fp32, compiled, bf16, "
                                              "fp16, channels_last)"]
    fp16 = variants.precision("float16", ["float32"], where="conv2's output", loss_scale=65536.0)
    assert variants.problems("fp16", fp16) == []
    assert variants.problems("fp16", {**fp16, "loss_scale": None}) == [
        "no loss scaling ran (loss scale None): float16 gradients under 6e-8 vanish without it"]
    with pytest.raises(variants.VariantUnsupported, match="PyTorch offers the variants fp32, bf16, not 'compiled'"):
        variants.require("compiled", ("fp32", "bf16"), "PyTorch")
    assert variants.precision("<dtype: 'bfloat16'>", ["float32", "torch.float32"])["weights"] == ["float32"]


def test_rosetta_run_runs_each_variant_asked_for(tmp_path, selftest_kernel, monkeypatch, capsys):
    monkeypatch.setenv("ROSETTA_TEST_PRECISION", json.dumps({"bf16": BF16}))
    framework = _framework(tmp_path, WRITE_VARIANT, offered=("bf16",))
    monkeypatch.setitem(frameworks.FRAMEWORKS, "selftest", framework)
    monkeypatch.setattr(cli, "load_data", lambda args, benchmarks: ({}, {}))
    results = tmp_path / "results"
    status = cli.main(["run", "selftest", "--benchmark", "cifar", "--device", "cpu", "--no-export",
                       "--results", str(results), "--variant", "fp32", "bf16", "compiled"])
    out = capsys.readouterr().out
    found = {r["variant"]: r for r in records.load_records(results)}
    assert status == 0, out  # unsupported is an answer, not a failure
    assert {v: r["status"] for v, r in found.items()} == {"fp32": "ok", "bf16": "ok", "compiled": "unsupported"}
    assert found["bf16"]["precision"]["activation"] == "bfloat16"
    assert "unsupported: Selftest cifar (compiled): Selftest's notebook selftest.ipynb offers fp32, bf16, not compiled" \
        in out
    readme = (results / "README.md").read_text()
    assert "| Fake (bf16) |" in readme


def test_only_the_fp32_row_exports_whatever_order_the_variants_are_asked_in(tmp_path, monkeypatch, capsys):
    """A bf16 model exported to ONNX does not load in ONNX Runtime's CPU build (bfloat16 inputs to Conv):
    the export, and so the ONNX check, is the fp32 row's alone."""
    asked = []
    monkeypatch.setattr(cli, "load_data", lambda args, benchmarks: ({}, {}))
    monkeypatch.setattr(runner, "run_all", lambda frameworks, benchmarks, settings, results, **kw:
                        asked.append((settings.variant, settings.seed, settings.export)) or [])
    monkeypatch.setattr(cli.report, "render", lambda results: results / "README.md")
    assert cli.main(["run", "pytorch", "--benchmark", "cifar", "--device", "cpu", "--results", str(tmp_path),
                     "--repeats", "2", "--variant", "bf16", "fp32"]) == 0
    assert asked == [("bf16", 42, False), ("fp32", 42, True), ("bf16", 43, False), ("fp32", 43, False)]
    assert "no ONNX export" not in capsys.readouterr().out
    asked.clear()
    assert cli.main(["run", "pytorch", "--benchmark", "cifar", "--device", "cpu", "--results", str(tmp_path),
                     "--variant", "bf16", "compiled"]) == 0
    assert asked == [("bf16", 42, False), ("compiled", 42, False)]
    assert ("note: no ONNX export: only the fp32 row is exported (ONNX Runtime cannot load every variant's model, "
            "e.g. bfloat16 convolutions), and --variant asks for bf16, compiled alone") in capsys.readouterr().out


def test_on_a_cluster_too_only_the_fp32_rows_first_repeat_exports():
    from harness import cluster

    jobs = cluster.plan([frameworks.FRAMEWORKS["pytorch"]], ["cifar"], 2, 42, None, True, wanted=["bf16", "fp32"])
    assert [(job.variant, job.seed, job.export) for job in jobs] == [
        ("bf16", 42, False), ("fp32", 42, True), ("bf16", 43, False), ("fp32", 43, False)]
    assert not any(job.export for job in cluster.plan([frameworks.FRAMEWORKS["pytorch"]], ["cifar"], 1, 42, None,
                                                      True, wanted=["bf16"]))


def test_the_variant_option_takes_known_names_only(capsys):
    assert cli.parse(["run", "--variant", "fp32", "bf16"]).variant == ["fp32", "bf16"]
    assert cli.parse(["run"]).variant == ["fp32"] and cli.parse(["parity"]).variant == "fp32"
    assert cli.parse(["parity", "--variant", "compiled"]).variant == "compiled"
    with pytest.raises(SystemExit):
        cli.parse(["bench", "--variant", "fp64"])
    assert "variant must be one of fp32, compiled, bf16, fp16, channels_last, got 'fp64'" in capsys.readouterr().err


def test_make_variants_passes_the_option():
    done = subprocess.run(["make", "-n", "bench", "FRAMEWORKS=pytorch", "VARIANTS=fp32 bf16"], cwd=REPOSITORY,
                          capture_output=True, text=True)
    line = next(line for line in done.stdout.splitlines() if "rosetta bench" in line).split()
    assert line[line.index("--variant"):][:3] == ["--variant", "fp32", "bf16"]


def test_parity_of_a_variant_not_offered_is_unsupported_and_runs_nothing(tmp_path, selftest_kernel):
    framework = _framework(tmp_path, "raise RuntimeError('ran')")
    result = parity.check(framework, "cifar", tmp_path, variant="bf16")
    assert result["status"] == "unsupported" and result["equivalent"] is None and result["variant"] == "bf16"
    assert result["message"] == "Selftest's notebook selftest.ipynb offers fp32, not bf16 (docs/variants.md)"
    assert records.latest_parity(tmp_path) == {}  # never shown as the fp32 row's parity
    assert list(records.latest_variant_checks(tmp_path)) == [("Selftest", "cifar", "bf16")]


def _outputs(tmp_path, model, observed, scale=1.0):
    """Parity inputs, and outputs as a variant would write them: the reference's own logits and loss,
    the logits times ``scale``."""
    inputs = common_parity.write_inputs(tmp_path / "inputs.npz", model)
    weights, xs, labels = common_parity.read_inputs(inputs, model)
    logits = reference.forward(model, weights, xs[0]) * scale
    losses, first, final = reference.train(model, weights, xs, labels)
    outputs = common_parity.write_outputs(tmp_path / "outputs.npz", model, logits, losses, first, final, weights, [])
    if observed is not None:
        variants.write_observed(outputs, observed)
    return inputs, outputs


def test_the_relaxed_step_check_holds_logits_and_precision_to_the_variants_tolerance(tmp_path):
    inputs, outputs = _outputs(tmp_path, "gru", {**BF16, "activation_at": "the GRU's outputs"}, scale=1.005)
    result = common_parity.compare_variant("gru", inputs, outputs, "bf16", variants.read_observed(outputs))
    assert result["equivalent"], result["message"]  # 0.5% off: within bf16's 2%
    assert result["message"].startswith("bf16 within its step tolerance: logits ")
    strict = common_parity.compare_variant("gru", inputs, outputs, "compiled", COMPILED)
    assert not strict["equivalent"] and "logits differs by" in strict["message"]  # compiled keeps fp32's 1e-4
    inputs, outputs = _outputs(tmp_path, "gru", {**BF16, "weights": ["bfloat16"]}, scale=1.05)
    result = common_parity.compare_variant("gru", inputs, outputs, "bf16", variants.read_observed(outputs))
    assert not result["equivalent"]
    assert "logits differs by" in result["message"] and "relative tolerance 0.02" in result["message"]
    assert "variant bf16 not as promised: its weights are stored in bfloat16, not float32" in result["message"]
    assert not common_parity.compare_variant("gru", inputs, outputs, "bf16", None)["equivalent"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


# The variants, run by the harness at tiny sizes in their frameworks' kernels: (framework, benchmark, variant).
PYTORCH = frameworks.FRAMEWORKS["pytorch"]
# The other frameworks' variants only through their step check, which reads their observed precision too.
RUNS = [("pytorch", "cifar", "bf16"), ("pytorch", "cifar", "channels_last"), ("pytorch", "cifar", "compiled"),
        ("pytorch", "imdb", "bf16"), ("pytorch", "imdb", "fp16")]
CHECKS = [("pytorch", "cifar", "bf16"), ("pytorch", "cifar", "compiled"), ("pytorch", "imdb", "bf16"),
          ("pytorch", "cifar", "fp16"), ("jax", "cifar", "bf16"), ("tensorflow", "cifar", "compiled")]
# Keras 3: each of its variants through its step check (which reads the observed precision too); a run of
# the compiled CNN and of bf16 on each backend, the two benchmarks shared between them.
RUNS += [("keras-tensorflow", "cifar", "compiled"), ("keras-tensorflow", "imdb", "bf16"),
         ("keras-torch", "cifar", "bf16"), ("keras-jax", "imdb", "bf16")]
CHECKS += [("keras-tensorflow", "cifar", "compiled"), ("keras-tensorflow", "imdb", "compiled")]
CHECKS += [(f"keras-{backend}", benchmark, "bf16") for backend in ("tensorflow", "torch", "jax")
           for benchmark in ("cifar", "imdb")]
# TensorFlow (tf.function + GradientTape): the compiled GRU and bf16 on both, each run once and step-checked.
RUNS += [("tensorflow", "imdb", "compiled"), ("tensorflow", "imdb", "bf16"), ("tensorflow", "cifar", "bf16")]
CHECKS += [("tensorflow", "imdb", "compiled"), ("tensorflow", "cifar", "bf16"), ("tensorflow", "imdb", "bf16")]
# fp16 (mixed_float16 and a LossScaleOptimizer): TensorFlow's own loop on both benchmarks, Keras on each backend
# once, the benchmarks shared between them; a run of TensorFlow's CNN and of Keras' GRU on JAX.
RUNS += [("tensorflow", "cifar", "fp16"), ("keras-jax", "imdb", "fp16")]
CHECKS += [("tensorflow", "cifar", "fp16"), ("tensorflow", "imdb", "fp16"), ("keras-tensorflow", "imdb", "fp16"),
           ("keras-torch", "cifar", "fp16"), ("keras-jax", "imdb", "fp16")]
# Mutants: (benchmark, variant, text in the notebook, its replacement, what the check says, how it is run:
# its relaxed step check, or a run; a notebook whose weights are bfloat16 cannot hand them to NumPy for the
# step check, so that one is run), and the framework whose notebook it changes where not PyTorch's.
MUTANTS = {
    # autocast turned off: the step computes in float32 under the name bf16
    "bf16-computes-in-float32": ("cifar", "bf16", "torch.autocast(torch_device.type, dtype=half)",
                                 "torch.autocast(torch_device.type, dtype=half, enabled=False)",
                                 "its activation at conv2's output computed in float32, not bfloat16", "check"),
    # the weights themselves in bfloat16 (and the input made bfloat16 to match): no float32 master copy
    "bf16-stores-bfloat16-weights": ("cifar", "bf16", "model.apply(glorot_uniform_zero_bias)\n",
                                     "model.apply(glorot_uniform_zero_bias)\nmodel.to(torch.bfloat16)\n"
                                     "model.register_forward_pre_hook(lambda module, args: (args[0].bfloat16(),))\n",
                                     "its weights are stored in bfloat16, not float32", "run"),
    # Dynamo does not trace nn.GRU unless told to: the compiled model runs eagerly
    "compiled-falls-back-to-eager": ("imdb", "compiled", "    torch._dynamo.config.allow_rnn = True\n", "    pass\n",
                                     "no graph was compiled (0 graphs): the model ran eagerly", "run"),
    # float16 without its loss scaling: small gradients would vanish; the record says no scaling ran
    "fp16-without-loss-scaling": ("cifar", "fp16", 'enabled=variant == "fp16")', "enabled=False)",
                                  "no loss scaling ran (loss scale None)", "check"),
    # Keras: the policy left at float32, the model built and trained in float32 under the name bf16
    "keras-bf16-policy-left-at-float32": ("cifar", "bf16", 'half_policy.get(variant, "float32")', '"float32"',
                                          "its activation at conv2's output computed in float32, not bfloat16",
                                          "check", "keras-torch"),
    # Keras: jit_compile turned off again after the notebook's guard, the step a plain tf.function (no XLA)
    "keras-compiled-without-xla": ("cifar", "compiled", "model.make_train_function()  #",
                                   "model.jit_compile = False\nmodel.make_train_function()  #",
                                   "no graph was compiled (0 graphs): the model ran eagerly", "check",
                                   "keras-tensorflow"),
    # TensorFlow: the model built under the float32 policy, the GRU trained in float32 under the name bf16
    "tensorflow-bf16-computes-in-float32": ("imdb", "bf16", 'half_policy.get(variant, "float32")', '"float32"',
                                            "its activation at the GRU's output computed in float32, not bfloat16",
                                            "check", "tensorflow"),
    # Keras: compile told not to wrap the optimiser: float16 with no loss scaling under the name fp16
    "keras-fp16-without-loss-scaling": ("cifar", "fp16", "SparseCategoricalCrossentropy(from_logits=True))",
                                        "SparseCategoricalCrossentropy(from_logits=True), auto_scale_loss=False)",
                                        "no loss scaling ran (loss scale None)", "check", "keras-tensorflow"),
    # TensorFlow: the LossScaleOptimizer left out of its own loop, the loss unscaled
    "tensorflow-fp16-without-loss-scaling": ("imdb", "fp16", "optimizer = keras.optimizers.LossScaleOptimizer(optimizer)",
                                             "pass", "no loss scaling ran (loss scale None)", "check", "tensorflow"),
}


def mutant(tmp_path, name):
    benchmark, _, old, new, _, _, *framework = {**MUTANTS, **JAX_GLUON_MUTANTS}[name]
    framework = frameworks.FRAMEWORKS[framework[0]] if framework else PYTORCH
    notebook = nbformat.read(framework.notebook(benchmark), as_version=4)
    assert sum(cell.source.count(old) for cell in notebook.cells) == 1, f"{old!r} is not in the notebook once"
    for cell in notebook.cells:
        cell.source = cell.source.replace(old, new)
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(notebook, path)
    return dataclasses.replace(framework, notebooks={benchmark: str(path)})  # it offers what the notebook says


# The tests that read variant_runs, and the kind of job each of their cases asks for.
JOB_KINDS = {"test_the_variants_run_as_they_promise": "run", "test_the_variants_pass_their_step_check": "check",
             "test_a_variant_that_breaks_its_promise_fails_its_check": "mutant"}


def collected_jobs(items) -> set:
    """The keys of variant_runs that the collected tests of this module read (``-k tensorflow`` runs the
    TensorFlow jobs alone)."""
    found = set()
    for item in items:
        kind = JOB_KINDS.get(getattr(item, "originalname", None))
        if kind is None or getattr(item, "module", None) is None or item.module.__name__ != __name__:
            continue
        case = item.callspec.params
        found.add((kind, case["name"]) if kind == "mutant" else (kind, case["framework"], case["benchmark"],
                                                                 case["variant"]))
    return found


def job_framework(key) -> str:
    """The framework whose kernel a key of variant_runs runs in."""
    return key[1] if key[0] != "mutant" else (MUTANTS[key[1]][6:] or ["pytorch"])[0]


def _variant_jobs(tmp_path_factory, tiny_cifar, tiny_imdb, monkeypatch_module, kernels_needed, runs, checks,
                  mutants, wanted=None):
    """``runs``, ``checks`` (relaxed step checks) and ``mutants``' runs or checks, once, spread over the cores:
    {("run", framework, benchmark, variant): record, ("check", ...): parity record, ("mutant", name): the mutant's
    record or parity record}; only the keys in ``wanted`` where it is given; skipped where a kernel of
    ``kernels_needed`` is not here."""
    import concurrent.futures

    from common import data
    from shortruns import pinned_pool, worker_count

    for name in kernels_needed:
        if kernels.unavailable_reason(frameworks.FRAMEWORKS[name]):
            pytest.skip(f"{name}'s kernel: {kernels.unavailable_reason(frameworks.FRAMEWORKS[name])}")
    folder = tmp_path_factory.mktemp("variants")
    # torch.compile's cache and precompiled headers (TMPDIR/torchinductor_USER) in the test's own folder, not /tmp
    monkeypatch_module.setenv("TORCHINDUCTOR_CACHE_DIR", str(folder / "inductor"))
    monkeypatch_module.setenv("TMPDIR", str(folder))
    cache, sources = str(folder / "cache"), {"cifar": str(tiny_cifar), "imdb": str(tiny_imdb)}
    for benchmark in sources:
        data.prepare(benchmark, sources[benchmark], cache)
    def run(framework, benchmark, variant):
        return (runner.execute, framework, benchmark, runner.RunSettings(
            device="cpu", threads=1, epochs=1, batch_size=32, data_dir=cache, data_sources=sources, variant=variant,
            timeout=900), folder / "runs")

    def check(framework, benchmark, variant):
        return parity.check, framework, benchmark, folder / "checks", "cpu", 900.0, False, variant

    jobs = {("run", f, b, v): run(frameworks.FRAMEWORKS[f], b, v) for f, b, v in runs}
    jobs.update({("check", f, b, v): check(frameworks.FRAMEWORKS[f], b, v) for f, b, v in checks})
    jobs.update({("mutant", name): (check if how == "check" else run)(mutant(folder, name), b, v)
                 for name, (b, v, _, _, _, how, *_) in mutants.items()})
    if wanted is not None:
        jobs = {key: job for key, job in jobs.items() if key in wanted}
    with pinned_pool(worker_count(len(jobs))) as pool:
        futures = {key: pool.submit(*job) for key, job in jobs.items()}
        concurrent.futures.wait(futures.values())
        return {key: future.result() for key, future in futures.items()}


@pytest.fixture(scope="module")
def variant_runs(request, tmp_path_factory, tiny_cifar, tiny_imdb, monkeypatch_module):
    """The variant runs (RUNS), relaxed step checks (CHECKS) and the mutants' runs or checks (MUTANTS) that
    the collected tests read (``-k tensorflow`` starts the TensorFlow jobs alone)."""
    wanted = collected_jobs(request.session.items)
    return _variant_jobs(tmp_path_factory, tiny_cifar, tiny_imdb, monkeypatch_module,
                         sorted({job_framework(key) for key in wanted}), RUNS, CHECKS, MUTANTS, wanted)


@pytest.mark.kernel
@pytest.mark.parametrize("framework, benchmark, variant", RUNS)
def test_the_variants_run_as_they_promise(variant_runs, framework, benchmark, variant):
    _holds_its_promise(variant_runs["run", framework, benchmark, variant], framework, variant)


def _holds_its_promise(result, framework, variant):
    assert result["status"] == "ok", result["error"]
    assert result["variant"] == variant and result["framework"] == frameworks.FRAMEWORKS[framework].label
    observed = result["precision"]
    assert observed["activation"] == variants.PROMISED[variant][0]
    assert observed["weights"] == ["float32"]
    if variant == "fp16":
        assert observed["loss_scale"] > 0
    if framework.startswith("keras-"):  # what Keras' "auto" chose, the fp32 row's step: on the CPU, XLA on JAX alone
        assert observed["compiler"]["auto"] is (framework == "keras-jax"), observed
    if variant == "compiled" and "tensorflow" in framework:  # XLA on the whole step (Keras: where "auto" left it off)
        assert observed["compiler"]["mode"] == "jit_compile=True" and observed["compiler"]["graphs"] >= 1
        assert observed["compiler"]["eager"] is False
    elif variant == "compiled" and framework == "gluon":  # one cached graph of the whole block, made static
        compiler = observed["compiler"]
        assert compiler["mode"] == "hybridize(static_alloc=True, static_shape=True)" and compiler["graphs"] == 1
        assert compiler["hybridized"] is compiler["static_alloc"] is compiler["static_shape"] is True
        assert compiler["operators"] >= 10, compiler  # the model's operators, in the one graph
    elif variant == "compiled":
        assert observed["compiler"]["mode"] == "default" and observed["compiler"]["graphs"] >= 1
        assert observed["compiler"]["graph_breaks"] == 0
    if variant == "channels_last":
        assert observed["memory_format"] == "channels_last"


@pytest.mark.kernel
@pytest.mark.parametrize("framework, benchmark, variant", CHECKS)
def test_the_variants_pass_their_step_check(variant_runs, framework, benchmark, variant):
    _passes_its_step_check(variant_runs["check", framework, benchmark, variant], variant)


def _passes_its_step_check(result, variant):
    assert result["status"] == "ok" and result["equivalent"], result["message"]
    assert result["variant"] == variant and result["tolerances"] == variants.TOLERANCES[variant]
    logits = next(c for c in result["checks"] if c["output"] == "logits")
    assert 0 < logits["max_abs_difference"] <= logits["bound"]
    observed = result["precision"]
    assert observed["activation"] == variants.PROMISED[variant][0] and observed["weights"] == ["float32"]
    if variant == "compiled":
        assert observed["compiler"]["graphs"] >= 1, observed
    if variant in ("bf16", "fp16"):  # half precision really computed: further from the reference than float32 gets
        assert logits["max_abs_difference"] > 1e-4 * logits["bound"] / variants.TOLERANCES[variant]["logits"]


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(MUTANTS))
def test_a_variant_that_breaks_its_promise_fails_its_check(variant_runs, name):
    _fails_its_check(variant_runs["mutant", name], name)


def _fails_its_check(result, name):
    _, variant, _, _, words, how, *_ = {**MUTANTS, **JAX_GLUON_MUTANTS}[name]
    if how == "check":
        assert result["status"] == "ok", result["message"]  # it ran; its check says no
        assert result["equivalent"] is False and words in result["message"], result["message"]
    else:
        assert result["status"] == "failed", result["error"]  # it trained, but not as the variant promises
        assert result["error"] == f"variant {variant} not as promised: {words}"


# JAX's GRU in bf16 and Gluon's compiled CNN and GRU, in a fixture of their own, so that `-k jax` or `-k gluon`
# runs them without the others' kernels: a run and a step check of each, and one Gluon mutant.
JAX_GLUON = [("jax", "imdb", "bf16"), ("gluon", "cifar", "compiled"), ("gluon", "imdb", "compiled")]
JAX_GLUON_MUTANTS = {
    # the block never hybridized: Gluon runs it imperatively, op by op, under the name compiled
    "gluon-compiled-not-hybridized": ("cifar", "compiled", "model.hybridize(**hybridize_flags)",
                                      "model.hybridize(False, **hybridize_flags)",
                                      "no graph was compiled (0 graphs): the model ran eagerly; the block is not "
                                      "hybridized: it ran imperatively, op by op", "run", "gluon"),
}


@pytest.fixture(scope="module")
def jax_gluon_runs(tmp_path_factory, tiny_cifar, tiny_imdb, monkeypatch_module):
    return _variant_jobs(tmp_path_factory, tiny_cifar, tiny_imdb, monkeypatch_module, ("jax", "gluon"),
                         JAX_GLUON, JAX_GLUON, JAX_GLUON_MUTANTS)


@pytest.mark.kernel
@pytest.mark.parametrize("framework, benchmark, variant", JAX_GLUON)
def test_jax_and_gluon_variants_run_as_they_promise_and_pass_their_step_check(jax_gluon_runs, framework, benchmark,
                                                                              variant):
    _holds_its_promise(jax_gluon_runs["run", framework, benchmark, variant], framework, variant)
    _passes_its_step_check(jax_gluon_runs["check", framework, benchmark, variant], variant)
    where = {"cifar": "conv2's output", "imdb": "the GRU's outputs"}[benchmark]
    assert jax_gluon_runs["check", framework, benchmark, variant]["precision"]["activation_at"] == where


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(JAX_GLUON_MUTANTS))
def test_a_jax_or_gluon_variant_that_breaks_its_promise_fails_its_check(jax_gluon_runs, name):
    _fails_its_check(jax_gluon_runs["mutant", name], name)


# What each notebook offers today, by its variants.require call (docs/variants.md's table).
OFFERED = {("pytorch", "cifar"): {"fp32", "compiled", "bf16", "fp16", "channels_last"},
           ("pytorch", "imdb"): {"fp32", "compiled", "bf16", "fp16"}, ("jax", "cifar"): {"fp32", "bf16"},
           **{("tensorflow", b): {"fp32", "compiled", "bf16", "fp16"} for b in ("cifar", "imdb")},
           ("jax", "imdb"): {"fp32", "bf16"},
           **{("gluon", b): {"fp32", "compiled"} for b in ("cifar", "imdb")},
           **{("keras-tensorflow", b): {"fp32", "compiled", "bf16", "fp16"} for b in ("cifar", "imdb")},
           **{(f"keras-{backend}", b): {"fp32", "bf16", "fp16"} for backend in ("torch", "jax")
              for b in ("cifar", "imdb")}}


def test_each_notebook_takes_the_variant_parameter_and_says_which_variants_it_offers():
    """Every notebook takes the parameter, fp32 unless told otherwise; what the harness reads of its
    ``variants.require`` call is what docs/variants.md lists (fp32 alone for the others)."""
    for framework in frameworks.FRAMEWORKS.values():
        for benchmark in framework.notebooks:
            cells = nbformat.read(framework.notebook(benchmark), as_version=4).cells
            parameters = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
            assert '\nvariant = "fp32"' in parameters.source, framework.notebook(benchmark)
            offered, _ = frameworks.offered_variants(framework.notebook(benchmark))
            assert set(offered) == OFFERED.get((framework.name, benchmark), {"fp32"}), framework.notebook(benchmark)
    reason = frameworks.FRAMEWORKS["pytorch"].variant_unsupported("channels_last", "imdb")
    assert reason == "channels_last is a memory order of 4-D image tensors; the GRU has none to reorder"
    assert frameworks.FRAMEWORKS["jax"].variant_unsupported("compiled", "cifar").startswith(
        "JAX's step is already compiled (jax.jit)")
    for benchmark in ("cifar", "imdb"):
        assert frameworks.FRAMEWORKS["keras-jax"].variant_unsupported("compiled", benchmark).startswith(
            "Keras' jit_compile is already True on JAX")
        assert "18 graph breaks" in frameworks.FRAMEWORKS["keras-torch"].variant_unsupported("compiled", benchmark)


def _require_statements(path):
    """Each ``variants.require(...)`` statement of a notebook, compiled as it stands in its cell."""
    import ast

    found = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and "variants.require(" in cell.source:
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Expr) and "variants.require(" in ast.unparse(node):
                    found.append(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"))
    return found


def test_each_notebook_gives_a_reason_of_its_own_for_every_variant_it_does_not_offer():
    """The harness reads each notebook's require call (offered_variants); run as the notebook runs it, the call
    raises that same reason for each variant not offered, and lets fp32 and the offered ones through."""
    for framework in frameworks.FRAMEWORKS.values():
        for benchmark in framework.notebooks:
            path = framework.notebook(benchmark)
            offered, reasons = frameworks.offered_variants(path)
            generic = {v for v in variants.VARIANTS if v not in offered and not reasons.get(v)}
            assert generic == set(), (path, generic)  # each variant not offered: a reason of its own
            assert "fp32" in offered and set(reasons) <= set(variants.VARIANTS) - set(offered), path
            statements = _require_statements(path)
            assert len(statements) == 1, path
            for variant in variants.VARIANTS:
                for statement in statements:
                    if variant in offered:
                        exec(statement, {"variants": variants, "variant": variant})
                        continue
                    with pytest.raises(variants.VariantUnsupported) as raised:
                        exec(statement, {"variants": variants, "variant": variant})
                    if variant in reasons:  # what the notebook raises is what the harness records, unrun
                        assert str(raised.value) == reasons[variant] == framework.variant_unsupported(
                            variant, benchmark), (path, variant)
            for variant, reason in reasons.items():  # a reason of its own: no stand-in, none the generic answer
                assert len(reason) > 40 and " offers the variants " not in reason and "offers fp32" not in reason, \
                    (path, variant, reason)


def test_the_variants_module_stays_python_3_6():
    """CNTK's kernel (Python 3.6) imports common/variants.py: no syntax newer than 3.6's."""
    import ast

    source = (REPOSITORY / "common" / "variants.py").read_text()
    ast.parse(source, feature_version=(3, 6))
    with pytest.raises(SyntaxError):  # the check does refuse newer syntax
        ast.parse("if (x := 1):\n    pass\n", feature_version=(3, 6))


def _write(results, name, **fields):
    found = dict(framework="PyTorch", api="nn.Module", benchmark="cifar", epochs=3, batch_size=64,
                 train_samples=50_000, test_samples=10_000, seed=42, accuracy=0.7,
                 environment={"device": "cpu", "cpu": "Test CPU", "threads": 2, "versions": {"torch": "2.13"}})
    found.update(fields)
    record.write(results / "records" / f"{name}.json", record.build(**found))


def test_the_table_shows_fp32_rows_first_then_each_variant_with_its_check_and_compile_time(tmp_path):
    timing = {"train_seconds": 30.0, "first_epoch_seconds": 12.0, "median_epoch_seconds": 9.0,
              "throughput_per_second": 5000.0}
    _write(tmp_path, "1-fp32", timing=timing)
    _write(tmp_path, "2-jax", framework="JAX", timing={**timing, "train_seconds": 40.0})
    _write(tmp_path, "3-compiled", variant="compiled", precision=COMPILED,
           timing={**timing, "train_seconds": 20.0, "first_epoch_seconds": 14.5, "median_epoch_seconds": 2.5})
    _write(tmp_path, "4-bf16", variant="bf16", precision=BF16, timing={**timing, "train_seconds": 25.0})
    _write(tmp_path, "5-cl", variant="channels_last", status="unsupported", error="no images to reorder")
    folder = records.parity_dir(tmp_path)
    folder.mkdir(parents=True)
    record.write_json(folder / "1-pytorch-cifar.json", {"framework": "PyTorch", "benchmark": "cifar", "status": "ok",
                                                        "equivalent": True, "checks": []})
    check = {"framework": "PyTorch", "benchmark": "cifar", "variant": "compiled", "status": "ok", "equivalent": True,
             "checks": [{"output": "logits", "max_abs_difference": 1.4e-7, "tolerance": 1e-4}]}
    record.write_json(folder / "2-pytorch-cifar-compiled.json", check)
    record.write_json(folder / "3-pytorch-cifar-bf16.json", {**check, "variant": "bf16", "equivalent": False,
                                                             "message": "bf16 not within its step check: x"})
    readme = report.render(tmp_path).read_text()
    rows = [line for line in readme.splitlines() if line.startswith(("| PyTorch", "| JAX"))][:5]
    names = [row.split(" | ")[0][2:] for row in rows]
    assert names == ["PyTorch", "JAX", "PyTorch (compiled)", "PyTorch (bf16)", "PyTorch (channels_last)"], names
    compiled, bf16, unsupported = rows[2], rows[3], rows[4]
    assert "| 20.0 | 12.0 |" in compiled  # training time, then compile: the first epoch less a steady one
    assert "| 30.0 | – | 1.00× |" in rows[0] and "| 25.0 | 3.0 | 0.83× |" in bf16  # fp32 rows have no compile time
    assert "| 0.67× |" in compiled  # against the fastest fp32 row, which stays 1.00×
    assert "within its step check: logits 1.4e-07 off (relative tolerance 0.0001)" in compiled
    assert "**no**: bf16 not within its step check: x" in bf16
    assert rows[0].count("| yes |") == 1  # the fp32 row's own parity
    assert "**unsupported**: no images to reorder" in unsupported


def test_the_compile_time_is_the_first_epochs_excess_and_never_negative():
    from harness import columns

    assert columns.compile_seconds({"variant": "compiled", "first_epoch_seconds": 30.0,
                                    "median_epoch_seconds": 10.0}) == 20.0
    assert columns.compile_seconds({"variant": "bf16", "first_epoch_seconds": 6.1,
                                    "median_epoch_seconds": 6.5}) == 0.0  # the first epoch was faster: no compile
    assert columns.compile_seconds({"variant": "fp32", "first_epoch_seconds": 30.0,
                                    "median_epoch_seconds": 10.0}) is None
