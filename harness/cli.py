"""`rosetta`: build the environments, fetch the data, run the notebooks, report.

    rosetta envs [NAME ...] [--flavour cpu|cuda] [--force] [--python [NAME=]PATH ...]
    rosetta data [--data-dir DIR] [--DATASET PATH ...]   # one data option per benchmark (common/benchmarks.py)
    rosetta run [NAME ...] [--benchmark BENCH ...] [--epochs N] [--train-samples N] ... [--repeats N] [--docker] [--resume]
                    [--variant fp32 compiled bf16 ...]   # each variant a run of its own (docs/variants.md)
                    [--build-envs]   # `rosetta envs NAME` first where NAME's kernel is not registered
    rosetta parity [NAME ...] [--benchmark BENCH ...] [--device cpu] [--variant NAME] [--build-envs] [--docker]
    rosetta onnx [NAME ...] [--benchmark BENCH ...] [--python [NAME=]PATH]   # each latest run's ONNX export checked and timed
    rosetta report [--results DIR]
    rosetta bench [NAME ...] [run options]    # envs, data, parity, run and report in one go
    rosetta bench [NAME ...] --cluster ADDRESS [--accelerator TYPE ...] [--retries N]   # runs as Ray tasks (docs/cluster.md)
    rosetta compare A B [--benchmark BENCH ...] [--out DIR]    # two notebooks side by side, as HTML
    rosetta compare --all [NAME ...] [--out DIR]               # every pair, and an index page
    rosetta list
    rosetta doctor [NAME ...] [--gpu sm_90] [--inspect]   # which rows can use this GPU (or a named one)

NAME selects frameworks (all of them by default): see `rosetta list`. Every option is checked
before anything starts (exit status 2). Ctrl-C, SIGTERM or SIGHUP stops the notebook that is running,
records it as interrupted and exits with 130, 143 or 129; `--resume` then skips what is already done.
One suite (run, bench, agree, onnx) runs at a time on a machine: a second waits for the first
(`--no-wait` refuses instead); each needs room on the results folder's disk ($ROSETTA_MIN_FREE_MIB).
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from common import REPOSITORY, data, machine, variants
from common.benchmarks import AGREEMENT, BENCHMARKS
from harness import (agree, compare, existing, gpus, guard, kernels, onnx, output, parity, processes, quiet, records,
                     report, runner, venvs)
from harness.frameworks import FRAMEWORKS, select

SEED_LIMIT = 2**32  # every framework's generator takes a seed in [0, 2**32)


def _whole_number(minimum: int, expected: str):
    """An argparse type: a whole number of at least ``minimum``, else ``expected, got ...``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


_positive = _whole_number(1, "a positive whole number")
_non_negative_int = _whole_number(0, "a whole number >= 0")


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {SEED_LIMIT - 1}, got {text!r}")
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {SEED_LIMIT - 1}, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text!r}")
    return value


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="download cache (default $ROSETTA_DATA_DIR or ~/.cache/dl-rosetta)")
    for benchmark in BENCHMARKS.values():
        parser.add_argument(benchmark.option, metavar="PATH", help=benchmark.source_help)


def _add_benchmark_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS),
                        help="which benchmarks (default: all)")


def _add_results_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=REPOSITORY / "results",
                        help="the results folder: records, checks and tables (default: results/ in the repository)")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("frameworks", nargs="*", metavar="NAME", help="frameworks to run (default: all)")
    _add_benchmark_option(parser)
    parser.add_argument("--epochs", type=_positive, help="override the benchmark's epochs (a subset run)")
    parser.add_argument("--batch-size", type=_positive)
    parser.add_argument("--train-samples", type=_positive, help="train on the first N samples only")
    parser.add_argument("--test-samples", type=_positive, help="evaluate on the first N test samples only")
    parser.add_argument("--seed", type=_seed, default=runner.RunSettings.seed)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--timeout", type=_seconds, default=runner.RunSettings.timeout,
                        help="seconds one notebook may run (default %(default).0f)")
    parser.add_argument("--threads", type=_positive, metavar="N",
                        help="CPU threads for every framework, each set the way it takes them "
                             f"(default: every core, here {machine.cores()}; CNTK's recurrent notebook's own "
                             "default is 1)")
    _add_results_option(parser)
    parser.add_argument("--resume", action="store_true",
                        help="skip each framework and benchmark that already has an ok record with the "
                             "same settings, data and code version")
    parser.add_argument("--docker", action="store_true",
                        help="run each notebook in its docker image dl-rosetta/ENV with the GPU "
                             "(build them with `make docker`) instead of its venv")
    parser.add_argument("--no-export", dest="export", action="store_false",
                        help="leave out the notebooks' export to ONNX (by default the first repeat of the fp32 "
                             "row exports)")
    parser.add_argument("--export-batch-sizes", type=_positive, nargs="+", metavar="N",
                        help="batch sizes at which the framework's and ONNX Runtime's prediction are timed "
                             "(default 1 64 1024)")
    parser.add_argument("--export-runs", type=_positive, metavar="N",
                        help="timed runs per batch size, after 5 warm-up runs (default 30)")
    _add_no_wait_option(parser)
    _add_quiet_options(parser)
    _add_data_options(parser)


def _non_negative(unit: str):
    """An argument type: a finite number of ``unit`` (seconds, cores) that is 0 or more."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {unit} >= 0, got {text!r}")
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(f"expected a finite number of {unit} >= 0, got {text!r}")
        return value
    return parse


def _add_quiet_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet-wait", type=_non_negative("seconds"), default=None, metavar="SECONDS",
                        help="before each run, wait up to SECONDS for other processes to use at most "
                             "--quiet-threshold cores (and to leave the GPU); a machine still busy then runs "
                             "anyway, recorded and shown as busy; 0: no wait "
                             f"(default $ROSETTA_QUIET_WAIT, else {quiet.DEFAULT_WAIT:g})")
    parser.add_argument("--quiet-threshold", type=_non_negative("cores"), default=None,
                        metavar="CORES", help="other processes' CPU use, in cores, above which the machine "
                                              "counts as busy (default $ROSETTA_QUIET_THRESHOLD, else "
                                              f"{quiet.DEFAULT_THRESHOLD:g})")


def _add_no_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true",
                        help="where another suite holds this machine, refuse (exit status 2) instead of waiting "
                             f"for it (the lock: ${guard.LOCK_VARIABLE}, default {guard.DEFAULT_LOCK})")


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", metavar="ADDRESS",
                        help="run each notebook as a task on a Ray cluster (HOST:PORT of its head, or auto for "
                             "the cluster this machine is a node of): one GPU per task (--device cuda), or "
                             "--threads CPUs (default 1) per CPU task; each node runs its own checkout, "
                             "environments and data (docs/cluster.md). Needs the optional extra 'cluster'")
    parser.add_argument("--accelerator", nargs="+", metavar="TYPE",
                        help="with --cluster: every run once per Ray accelerator type (H100 A100 ...), each "
                             "only on nodes of that type; a table per GPU model")
    parser.add_argument("--retries", type=_non_negative_int, default=0, metavar="N",
                        help="with --cluster: a run whose node was lost starts again up to N times "
                             "(default %(default)s)")


def _add_build_envs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--build-envs", action="store_true",
                        help="build a framework's environment first (`rosetta envs NAME`, its output in this "
                             "command's) where its kernel is not registered here; a cluster's tasks do "
                             "(docs/cluster.md)")


def _variant(text: str) -> str:
    try:
        return variants.check_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error} (docs/variants.md)") from None


def _add_variant_option(parser: argparse.ArgumentParser, several: bool = True) -> None:
    parser.add_argument("--variant", type=_variant, nargs="+" if several else None, metavar="NAME",
                        default=[variants.FP32] if several else variants.FP32,
                        help=("how the notebooks run, each variant a run of its own: "
                              if several else "how the notebook's parity step runs: ")
                        + ", ".join(f"{name} ({what})" for name, what in variants.VARIANTS.items())
                        + "; a framework that does not offer one records it as unsupported (default fp32; "
                          "docs/variants.md)")


def _add_repeats_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=_positive, default=1,
                        help="run every notebook N times, repeat i with seed --seed + i; the table shows "
                             "medians with their spread (default %(default)s)")


def _add_env_options(parser: argparse.ArgumentParser, with_names: bool = True) -> None:
    if with_names:
        parser.add_argument("frameworks", nargs="*", metavar="NAME", help="frameworks (default: all)")
    parser.add_argument("--flavour", choices=venvs.FLAVOURS,
                        help="cpu or cuda builds (default: cuda where nvidia-smi sees a GPU)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--python", action="append", metavar="[NAME=]PATH", default=None,
                        help="use an interpreter that already has the framework instead of building an "
                             "environment: PATH for every selected framework, NAME=PATH for one framework "
                             "or environment (repeatable; default $ROSETTA_EXISTING_PYTHON). Nothing is "
                             "installed into it")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rosetta", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_env_options(commands.add_parser("envs", help="build framework environments and kernels"))
    _add_data_options(commands.add_parser("data", help="download and verify the data sets"))
    running = commands.add_parser("run", help="run notebooks and write their records")
    _add_run_options(running)
    _add_repeats_option(running)
    _add_cluster_options(running)
    _add_variant_option(running)
    _add_build_envs_option(running)
    checking = commands.add_parser("parity", help="check each model against the NumPy reference")
    checking.add_argument("frameworks", nargs="*", metavar="NAME", help="frameworks (default: all)")
    _add_benchmark_option(checking)
    checking.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                          help="where the parity step runs (default cpu: GPUs may use TF32)")
    _add_variant_option(checking, several=False)
    _add_results_option(checking)
    _add_build_envs_option(checking)
    checking.add_argument("--docker", action="store_true",
                          help="run each parity step in its docker image dl-rosetta/ENV, as `rosetta bench "
                               "--docker` checks them, instead of its venv")
    onnx_checks = commands.add_parser("onnx", help="check and time each latest run's ONNX export in ONNX Runtime")
    onnx_checks.add_argument("frameworks", nargs="*", metavar="NAME", help="frameworks (default: all)")
    _add_benchmark_option(onnx_checks)
    onnx_checks.add_argument("--flavour", choices=venvs.FLAVOURS,
                             help="onnxruntime (cpu) or onnxruntime-gpu (cuda) (default: cuda where nvidia-smi "
                                  "sees a GPU)")
    _add_results_option(onnx_checks)
    onnx_checks.add_argument("--python", action="append", metavar="[NAME=]PATH", default=None,
                             help="an existing interpreter to run the checks in where it imports onnxruntime and "
                                  "onnx (as `rosetta bench --python`; onnxruntime=PATH for the checks alone; default "
                                  "$ROSETTA_EXISTING_PYTHON); else the ONNX Runtime environment. $ROSETTA_ONNX_PYTHON "
                                  "overrides both")
    _add_no_wait_option(onnx_checks)
    reporting = commands.add_parser("report", help="render results/README.md, results.csv and plots")
    _add_results_option(reporting)
    bench = commands.add_parser("bench", help="envs, data, parity, run and report in one go")
    _add_run_options(bench)
    _add_repeats_option(bench)
    _add_cluster_options(bench)
    _add_variant_option(bench)
    bench.add_argument("--skip-parity", action="store_true", help="leave the parity check out")
    _add_env_options(bench, with_names=False)
    agreeing = commands.add_parser(
        "agree", help="every framework with several seeds on one configuration: accuracies beside PyTorch's",
        description="Runs every selected framework once per seed (--seed, --seed + 1, ...) on one "
                    "configuration, into RESULTS/agreement/, and writes RESULTS/agreement/README.md: each "
                    "framework's mean and range of test accuracy beside PyTorch's, flagged past 2 points. "
                    "Runs that already have an ok record of the same settings, data and commit are kept.")
    _add_run_options(agreeing)
    agreeing.add_argument("--seeds", type=_positive, default=agree.DEFAULT_SEEDS,
                          help="how many seeds (default %(default)s, at least 2)")
    agreeing.set_defaults(**AGREEMENT, device="cpu", export=False)
    commands.add_parser("list", help="the frameworks, their notebooks and environments")
    doctor = commands.add_parser(
        "doctor", help="which frameworks can use this machine's GPU (or one named with --gpu)",
        description="For the GPU nvidia-smi shows, or the one named with --gpu, says per framework whether it "
                    "trains on the GPU natively, through PTX JIT, on the CPU, or not at all, and whether the "
                    "driver is new enough, from the inspection in results/gpus/inspection.json. --inspect "
                    "makes that inspection first, in the CUDA environments built here (`rosetta envs --flavour "
                    "cuda`), no GPU needed, and rewrites results/gpus/.")
    doctor.add_argument("frameworks", nargs="*", metavar="NAME", help="frameworks (default: all)")
    doctor.add_argument("--gpu", metavar="CC", help="a compute capability instead of nvidia-smi's GPU: "
                        "sm_90, 90 or 9.0")
    doctor.add_argument("--driver", metavar="VERSION", help="with --gpu: a driver version to check (e.g. 550.54.15)")
    doctor.add_argument("--inspect", action="store_true",
                        help="inspect the built CUDA environments first and write results/gpus/")
    doctor.add_argument("--inspection", type=Path, default=gpus.INSPECTION,
                        help="the inspection to read and write (default %(default)s)")
    comparing = commands.add_parser("compare", help="an HTML page of two frameworks' notebooks side by side")
    comparing.add_argument("frameworks", nargs="*", metavar="NAME",
                           help="the two frameworks (with --all: those to pair, default all)")
    comparing.add_argument("--all", action="store_true", help="every pair, and an index page linking them")
    _add_benchmark_option(comparing)
    comparing.add_argument("--out", type=Path, default=REPOSITORY / "results" / "compare",
                           help="where the pages go (default %(default)s)")
    comparing.add_argument("--results", type=Path, default=REPOSITORY / "results",
                           help="whose records/ give the latest results (default %(default)s)")
    return parser.parse_args(argv)


def _absolute(path) -> str | None:
    """``path`` as an absolute path: the kernel runs in the repository's root, the user anywhere."""
    return os.path.abspath(os.path.expanduser(str(path))) if path else None


def resolve_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Every path the user gave (options, or each benchmark's data variable / ROSETTA_DATA_DIR),
    made absolute once, here; the kernels receive these. ``args.origins`` says where each came from."""
    args.origins = {}
    for option, variable in [("data_dir", "ROSETTA_DATA_DIR")] + [(b.dest, b.env_var) for b in BENCHMARKS.values()]:
        if not hasattr(args, option):
            continue
        given = getattr(args, option)
        args.origins[option] = "--" + option.replace("_", "-")
        if not given and os.environ.get(variable):
            given, args.origins[option] = os.environ[variable], variable
        setattr(args, option, _absolute(given))
    if getattr(args, "results", None) is not None:
        args.results = Path(_absolute(args.results))
    return args


def _writable_folder(folder: Path, flag: str, what: str = "results") -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{flag} {folder}: cannot write {what} there ({error.strerror or error}); "
                         "expected a folder that exists or can be created, and is writable.") from None


def validate_run(args: argparse.Namespace) -> None:
    """Every run argument checked before any environment is built or kernel starts: a ValueError
    names the flag, the value and what is expected."""
    select(args.frameworks)
    downloads = False
    for benchmark, spec in BENCHMARKS.items():
        option, expected = spec.dest, spec.expected
        path = getattr(args, option)
        if benchmark not in args.benchmark:
            continue
        downloads = downloads or not path
        if path and not Path(path).exists():
            raise ValueError(f"{args.origins.get(option, '--' + option)} {path}: no such file or folder; "
                             f"expected {expected}.")
    if downloads and args.data_dir:
        _writable_folder(Path(args.data_dir), args.origins.get("data_dir", "--data-dir"), "the data cache")
    for benchmark in args.benchmark:
        spec = BENCHMARKS[benchmark]
        batch = args.batch_size or spec.batch
        train = args.train_samples or spec.train
        if args.train_samples and args.train_samples > spec.train:
            raise ValueError(f"--train-samples {args.train_samples}: {benchmark} has {spec.train} "
                             "training samples; expected at most that many.")
        if args.test_samples and args.test_samples > spec.test:
            raise ValueError(f"--test-samples {args.test_samples}: {benchmark} has {spec.test} "
                             "test samples; expected at most that many.")
        if train < batch:
            given = f"--train-samples {args.train_samples}" if args.train_samples else f"--batch-size {batch}"
            raise ValueError(f"{given}: {train} training samples make no complete batch of {batch} for "
                             f"{benchmark}; training uses complete batches only, so expected "
                             "--train-samples at least --batch-size.")
    if getattr(args, "cluster", None) is None and (getattr(args, "accelerator", None) or getattr(args, "retries", 0)):
        flag = "--accelerator" if args.accelerator else f"--retries {args.retries}"
        raise ValueError(f"{flag}: only with --cluster ADDRESS; expected --cluster too, or neither.")
    if getattr(args, "cluster", None) is not None:  # the nodes' GPUs, not this machine's, count
        from harness import cluster
        cluster.check(args.cluster)  # Ray installed, the cluster reachable: one line before anything starts
    elif args.device == "cuda" and not args.docker and venvs.default_flavour() == "cpu":
        raise ValueError("--device cuda: no NVIDIA GPU found (nvidia-smi lists none); expected "
                         "--device auto or cpu on this machine.")
    _writable_folder(args.results, "--results")
    guard.check_space(args.results)


def load_data(args: argparse.Namespace, benchmarks) -> tuple[dict, dict]:
    """Each benchmark's data, fetched, verified and decoded into the array cache before any notebook
    starts (the notebooks then only memory-map it): its provenance, and for a benchmark whose data
    cannot be read the error (its runs then fail; the others run)."""
    provenances, errors = {}, {}
    for benchmark in benchmarks:
        try:
            provenances[benchmark] = _prepare(args, benchmark)
        except data.DataError as error:
            errors[benchmark] = str(error)
            print(f"rosetta: {benchmark}: {error} Its runs are recorded as failed; the others still run.",
                  file=sys.stderr)
    return provenances, errors


def cmd_envs(args) -> int:
    frameworks = select(args.frameworks)
    chosen = existing.existing_interpreters(
        args.python if args.python is not None else existing.from_variable(), frameworks)
    needs_build = any(framework.env not in chosen for framework in frameworks)
    flavour = args.flavour or (venvs.default_flavour() if needs_build else "cpu")
    failures = []
    for framework in frameworks:
        python = chosen.get(framework.env)
        try:
            if python is None:
                kernels.create(framework, flavour, force=args.force)
                continue
            probe = existing.use_existing(framework, python)
        except venvs.EnvironmentBuildError as error:
            print(f"{framework.label}: {error}", file=sys.stderr)
            failures.append(framework.label)
            continue
        if probe.get("ok"):
            build = {True: ", a CUDA build", False: ", a CPU build"}.get(probe.get("cuda_build"), "")
            print(f"{framework.label}: existing environment {python} (Python {probe['python_version']}, "
                  f"{probe['versions']}{build}), kernel {framework.kernel}; nothing is installed into it.")
            for module in probe.get("missing_optional", []):
                print(f"  note: {python} has no {module}: {dict(existing.KERNEL_WANTS)[module]} "
                      f"({existing.install_hint(python, [module])} adds it)")
        else:
            print(f"{framework.label}: {probe['error']}", file=sys.stderr)
            failures.append(framework.label)
    if failures:
        print(f"not ready: {', '.join(failures)}; their runs will be recorded as unavailable.",
              file=sys.stderr)
    return 1 if failures else 0


def cmd_data(args, benchmarks=BENCHMARKS) -> int:
    """Fetches, verifies and decodes into the array cache what the benchmarks need."""
    for benchmark in BENCHMARKS:
        if benchmark in benchmarks:
            _prepare(args, benchmark)
    return 0


def _prepare(args, benchmark: str) -> dict:
    """One benchmark's data verified and in the array cache (data.prepare); its provenance."""
    spec = BENCHMARKS[benchmark]
    train, test, provenance = data.prepare(benchmark, getattr(args, spec.dest), args.data_dir)
    print(f"{spec.what}: {train} + {test} {spec.unit}, {provenance['source']} {provenance['path']}")
    return provenance


def run_settings(args, seed: int | None = None, variant: str = variants.FP32) -> runner.RunSettings:
    """What the run options ask every notebook for; ``seed`` in place of ``--seed``; ``variant``: one of
    ``--variant``'s."""
    return runner.RunSettings(variant=variant,
        epochs=args.epochs, batch_size=args.batch_size, train_samples=args.train_samples,
        test_samples=args.test_samples, seed=args.seed if seed is None else seed, device=args.device,
        timeout=args.timeout, data_dir=args.data_dir,
        data_sources={name: getattr(args, benchmark.dest) for name, benchmark in BENCHMARKS.items()},
        docker=args.docker, threads=args.threads, export=getattr(args, "export", False),
        export_batch_sizes=getattr(args, "export_batch_sizes", None), export_runs=getattr(args, "export_runs", None),
        quiet_wait=quiet.default_wait() if getattr(args, "quiet_wait", None) is None else args.quiet_wait,
        quiet_threshold=quiet.default_threshold() if getattr(args, "quiet_threshold", None) is None
        else args.quiet_threshold)


def cmd_run(args) -> int:
    """Every selected notebook, ``--repeats`` times: repeat i (from 0) with seed ``--seed`` + i,
    every framework in each repeat before the next, so that a disturbance of the machine falls
    on one repeat of several frameworks rather than on every repeat of one."""
    frameworks = select(args.frameworks)
    if getattr(args, "cluster", None) is not None:
        return cmd_run_cluster(args, frameworks)
    if getattr(args, "build_envs", False) and not args.docker:
        build_missing(frameworks)
    provenances, data_errors = load_data(args, args.benchmark)
    settings = run_settings(args)
    if args.command == "run" and settings.device != "cpu" and not settings.docker:
        gpu_notice(frameworks)
    if settings.device != "cpu" and venvs.default_flavour() == "cpu":
        print("note: no NVIDIA GPU found; " + ("`--docker` runs ask docker for one (--gpus all), so they "
              "will fail: add --device cpu to run the images on the CPU." if settings.docker else
              "every notebook trains on the CPU, and the table says so."))
    repeats, done = getattr(args, "repeats", 1), []
    wanted = list(dict.fromkeys(getattr(args, "variant", None) or [variants.FP32]))
    if getattr(args, "export", False) and variants.FP32 not in wanted:
        print(f"note: no ONNX export: only the fp32 row is exported (ONNX Runtime cannot load every variant's "
              f"model, e.g. bfloat16 convolutions), and --variant asks for {', '.join(wanted)} alone")
    try:
        for repeat in range(repeats):
            for variant in wanted:  # each variant of a repeat with its seed, before the next repeat
                settings = run_settings(args, args.seed + repeat, variant)
                settings.export = runner.exports(settings.export, repeat, variant)
                if repeats > 1 or len(wanted) > 1:
                    print(f"##### repeat {repeat + 1} of {repeats}: seed {settings.seed}, variant {variant} #####",
                          flush=True)
                skip = {}
                if args.resume:
                    skip = runner.finished_runs(frameworks, args.benchmark, settings, args.results, provenances,
                                                machine.git_commit())
                done += runner.run_all(frameworks, args.benchmark, settings, args.results, skip=skip,
                                       data_errors=data_errors)
    except processes.Interrupted as interrupt:  # the table of what finished; then on to main, which exits
        with processes.interrupts_held():  # the table first: output may fail (a closed terminal, a dead pipe)
            table = report.render(args.results)
            interrupt.reported = True
            print(f"rosetta: {interrupt.describe()}: the run in progress is recorded as interrupted.",
                  file=sys.stderr)
            print(f"report: {table}")
        raise
    except guard.DiskFull as full:  # no more runs: the table of what finished where it fits; main says it
        guard.finish_table(full, lambda: report.render(args.results))
        raise
    print(f"report: {report.render(args.results)}")
    return _summary(done)


ENVS_LOCK_SUFFIX = ".envs"  # beside the machine's lock: one build of an environment at a time here


def build_missing(frameworks) -> None:
    """``--build-envs``: `rosetta envs NAME` for each framework whose kernel is not registered here (its
    environment not built, or built by another clone in a shared $ROSETTA_ENVS_DIR), one build at a time
    on this machine (tasks of a cluster's node may start together), each looked at again once it is its
    turn. A kernel that names an existing interpreter is left as it is: `rosetta envs --python` made it.
    A build that fails leaves the framework's runs unavailable, saying why."""
    import fcntl

    def missing(framework) -> str | None:
        if (kernels.kernel_info(framework) or {}).get("kind") == "existing":
            return None
        return kernels.unavailable_reason(framework)

    for framework in frameworks:
        if not missing(framework):
            continue
        path = Path(f"{guard.lock_path()}{ENVS_LOCK_SUFFIX}")
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # Ctrl-C still stops the wait: the handler raises
            reason = missing(framework)
            if not reason:
                continue
            print(f"{framework.label}: {reason}; building it now: rosetta envs {framework.name}", flush=True)
            cmd_envs(parse(["envs", framework.name]))
        finally:
            os.close(descriptor)  # the lock goes with it


def cmd_run_cluster(args, frameworks) -> int:
    """``--cluster``: every run a task on the cluster's nodes (harness/cluster.py), their records in
    ``--results``; then the table, also after an interruption."""
    from harness import cluster
    resume = cluster.finished_runs(args, frameworks, args.results, machine.git_commit()) if args.resume else {}
    try:
        done = cluster.run(args, frameworks, args.results, args.cluster, resume,
                           parity=args.command == "bench" and not args.skip_parity)
    except processes.Interrupted as interrupt:
        with processes.interrupts_held():
            table = report.render(args.results)
            interrupt.reported = True
            print(f"rosetta: {interrupt.describe()}: every task on the cluster was cancelled.", file=sys.stderr)
            print(f"report: {table}")
        raise
    print(f"report: {report.render(args.results)}")
    return _summary(done)


def _summary(done: list[dict]) -> int:
    """The runs that were not ok, each on a line (an unsupported variant is an answer, not a failure); 1
    where there is one."""
    failed = [f"{r['framework']} {r['benchmark']}"
              + ("" if r.get("variant", variants.FP32) == variants.FP32 else f" ({r['variant']})")
              + f": {r['status']}" for r in done if r["status"] not in ("ok", "unsupported")]
    for r in done:
        if r["status"] == "unsupported":
            print(f"unsupported: {r['framework']} {r['benchmark']} ({r['variant']}): {r['error']}")
    for line in failed:
        print("not ok:", line)
    return 1 if failed else 0


def cmd_agree(args) -> int:
    """Every framework once per seed, then the agreement table (also after an interruption)."""
    frameworks = select(args.frameworks)
    wanted = agree.seeds(args.seeds, args.seed)
    folder = agree.agreement_dir(args.results)
    provenances, data_errors = load_data(args, args.benchmark)
    started, status, stopped = time.monotonic(), 0, None
    try:
        for number, seed in enumerate(wanted, start=1):
            print(f"##### seed {seed} ({number} of {len(wanted)}) #####", flush=True)
            settings = run_settings(args, seed)
            skip = runner.finished_runs(frameworks, args.benchmark, settings, folder, provenances,
                                        machine.git_commit())
            runner.run_all(frameworks, args.benchmark, settings, folder, skip=skip, data_errors=data_errors)
    except processes.Interrupted as interrupt:
        with processes.interrupts_held():
            print(f"rosetta: {interrupt.describe()}: the table shows the runs done so far.", file=sys.stderr)
        status = interrupt.exit_code
    except guard.DiskFull as full:  # the table of what finished where it fits, then main says it
        stopped, status = full, 2
    found = records.load_records(folder)
    settings = run_settings(args)
    configurations = []
    for benchmark in args.benchmark:
        sizes = settings.sizes(benchmark)
        configurations.append(agree.Configuration(
            benchmark=benchmark, epochs=sizes["epochs"], train_samples=sizes["train_samples"],
            test_samples=sizes["test_samples"], device=runner.target_device(settings),
            title=BENCHMARKS[benchmark].title))
    environment = next((r.get("environment") for r in reversed(found) if r.get("environment")), None)
    where = "this machine"
    if environment and environment.get("device") == "cuda":
        where = machine.describe(environment)
    elif environment:  # each record gives its own threads; the machine's cores are what they share
        where = f"CPU: {environment.get('cpu') or 'unknown model'} ({environment.get('cpu_count')} cores)"
    command = report.portable_text(" ".join(shlex.quote(a) for a in args.argv))  # no path of this machine
    how = (f"Made by `rosetta {command}` on {where}, at commit "
           f"{machine.git_commit() or 'unknown'}; this call took {time.monotonic() - started:.0f} s. The records "
           "and executed notebooks are in this folder.")
    if stopped is not None:
        guard.finish_table(stopped, lambda: agree.write(args.results, found, configurations, wanted, how,
                                                            machine.git_commit()))
        raise stopped
    try:
        print(f"agreement: {agree.write(args.results, found, configurations, wanted, how, machine.git_commit())}")
    except ValueError as error:  # no reference run to compare with
        print(f"rosetta: no agreement table: {error}", file=sys.stderr)
        return status or 1
    return status


def cmd_parity(args) -> int:
    if args.build_envs and not args.docker:  # the images hold the environments
        build_missing(select(args.frameworks))
    done = parity.check_all(select(args.frameworks), args.benchmark, args.results, args.device,
                            in_docker=args.docker, variant=args.variant)
    print(f"report: {report.render(args.results)}")
    differing = [f"{r['framework']} {r['benchmark']}: {r['message']}" for r in done
                 if not r["equivalent"] and r.get("status") != "unsupported"]
    for line in differing:
        print("not equivalent:", line)
    return 1 if differing else 0


def onnx_pythons(args) -> list[str]:
    """The existing interpreters (``--python``, ``$ROSETTA_EXISTING_PYTHON``) the ONNX checks may run in."""
    entries = args.python if args.python is not None else existing.from_variable()
    return onnx.existing_pythons(existing.existing_interpreters(entries, select(args.frameworks)))


def cmd_onnx(args) -> int:
    done = onnx.check_all(args.results, select(args.frameworks), args.benchmark, args.flavour,
                               onnx_pythons(args))
    print(f"report: {report.render(args.results)}")
    failing = [f"{r['framework']} {r['benchmark']}: {r['message']}" for r in done
               if not r.get("ok") and r.get("status") != "no exporter"]
    for line in failing:
        print("not ok:", line)
    return 1 if failing else 0


def cmd_report(args) -> int:
    print(report.render(args.results).read_text())
    return 0


def cmd_list(args) -> int:
    frameworks = list(FRAMEWORKS.values())
    name_w, label_w, api_w = (max(len(getattr(f, field)) for f in frameworks) for field in ("name", "label", "api"))
    for framework in frameworks:
        reason = kernels.unavailable_reason(framework)
        source = kernels.provenance(framework) or {}
        kind = f"existing {source['python']}" if source.get("kind") == "existing" else source.get("flavour")
        state = reason or f"ready ({kind})"
        print(f"{framework.name:{name_w}}  {framework.label:{label_w}}  {framework.api:{api_w}}  "
              f"kernel {framework.kernel}: {state}")
        for benchmark, notebook in framework.notebooks.items():
            print(f"{'':4}{benchmark:6} notebooks/{notebook}")
    return 0


def cmd_doctor(args) -> int:
    """Which rows can use the GPU: nvidia-smi's, or --gpu's; --inspect first inspects the built environments."""
    frameworks = select(args.frameworks)
    gpu = gpus.parse_gpu(args.gpu) if args.gpu else None
    if args.driver is not None and (gpu is None or not gpus.driver_tuple(args.driver)
                                    or not all(p.isdigit() for p in args.driver.split("."))):
        raise ValueError(f"--driver {args.driver!r}: expected a driver version such as 550.54.15, "
                         "with --gpu (without it, nvidia-smi gives the driver).")
    if args.inspect:
        wanted = list(dict.fromkeys(f.env for f in frameworks))
        inspection = gpus.load(args.inspection) if args.frameworks and args.inspection.is_file() else {}
        fresh = gpus.inspect_all(wanted)
        inspection = {**fresh, "environments": {**inspection.get("environments", {}), **fresh["environments"]}}
        inspection["environments"] = {env: inspection["environments"][env] for env in gpus.environments()
                                      if env in inspection["environments"]}
        print(f"table: {gpus.write(inspection, args.inspection.parent)}")
    else:
        inspection = gpus.load(args.inspection)
    if gpu is not None:
        lines = gpus.doctor_lines(inspection, gpu, f"sm_{gpu[0]}{gpu[1]}", args.driver, frameworks)
    else:
        found = gpus.local_gpu()
        if found is None and venvs.default_flavour() == "cuda":
            raise ValueError("nvidia-smi lists a GPU but does not give its compute capability (`nvidia-smi "
                             "--query-gpu=name,compute_cap,driver_version --format=csv,noheader` fails: a driver "
                             "older than 510?); expected --gpu with the GPU's, e.g. --gpu 8.0 for an A100.")
        if found is None:
            print("no NVIDIA GPU found (nvidia-smi lists none): every notebook trains on the CPU. "
                  "Name a GPU with --gpu (e.g. --gpu sm_90) to see what it would do there.")
            return 0
        lines = gpus.doctor_lines(inspection, found["compute_cap"], found["name"], found["driver"], frameworks)
    print("\n".join(lines))
    return 0


def gpu_notice(frameworks) -> None:
    """Before a suite on a GPU machine: the rows that will train on the CPU, or cannot use the GPU."""
    found = gpus.local_gpu()
    if found is None or not gpus.INSPECTION.is_file():
        return
    try:
        rows = gpus.cpu_rows(gpus.load(gpus.INSPECTION), found["compute_cap"], frameworks)
    except ValueError as error:
        print(f"note: {error}", file=sys.stderr)
        return
    for row in rows:
        what = "trains on the CPU" if row["verdict"] == gpus.CPU else "has no kernels for this GPU"
        print(f"note: {row['label']} {what} on {found['name']} ({row['why']}; `rosetta doctor` says more).")


def cmd_compare(args) -> int:
    if args.all:
        chosen = select(args.frameworks) if args.frameworks else None
        print(f"index: {compare.write_all(chosen, args.benchmark, args.results, args.out)}")
        return 0
    if len(args.frameworks) != 2:
        raise ValueError(f"compare takes two framework names (or --all), got {len(args.frameworks)}: "
                         f"{' '.join(args.frameworks) or 'none'}")
    left, right = (compare.frameworks([name])[0] for name in args.frameworks)
    for benchmark in args.benchmark:
        print(compare.write_page(left, right, benchmark, args.results, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = resolve_paths(parse(argv))
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    handlers = processes.raise_on_interrupts()  # SIGINT, SIGTERM and SIGHUP raise processes.Interrupted
    streams = output.tolerate_broken()  # a dead pipe or closed terminal stops the output, not the harness
    lock = guard.MachineLock()
    try:
        _validate(args)
        if getattr(args, "cluster", None) is None:  # a cluster's driver times nothing: its nodes hold their own
            guard.hold_machine(lock, args)  # a suite: one at a time on this machine (or --no-wait refuses)
        if args.command == "envs":
            return cmd_envs(args)
        if args.command == "data":
            return cmd_data(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "list":
            return cmd_list(args)
        if args.command == "parity":
            return cmd_parity(args)
        if args.command == "onnx":
            return cmd_onnx(args)
        if args.command == "agree":
            return cmd_agree(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "doctor":
            return cmd_doctor(args)
        if args.command == "bench" and args.cluster is not None:
            print("cluster: each node runs with its own environments (built there on first use) and checks "
                  "parity once before the runs; each run that exports is followed, in its task on its node, by "
                  "the ONNX check of its export.", flush=True)
            return cmd_run(args)
        if args.command == "bench":
            if args.device != "cpu" and not args.docker:
                gpu_notice(select(args.frameworks))
            if args.docker:  # the images hold the environments
                print("docker: the notebooks run in the images dl-rosetta/ENV (`make docker` builds them); "
                      "no venvs are built.")
            else:
                cmd_envs(args)
            if not args.skip_parity:
                for variant in dict.fromkeys(args.variant):
                    parity.check_all(select(args.frameworks), args.benchmark, args.results, in_docker=args.docker,
                                     variant=variant)
            status = cmd_run(args)
            if args.export:  # on the host, also for runs in docker: the exports are in --results
                onnx.check_all(args.results, select(args.frameworks), args.benchmark, args.flavour,
                                    onnx_pythons(args))
                print(f"report: {report.render(args.results)}")
            return status
    except (ValueError, data.DataError, venvs.EnvironmentBuildError) as error:
        print(f"rosetta: {error}", file=sys.stderr)
        return 2
    except processes.Interrupted as interrupt:  # nothing more starts: the table of what finished, and exit
        with processes.interrupts_held():
            if not interrupt.reported:  # outside the notebook runs: building environments, parity, ONNX checks
                if args.command in ("bench", "parity") and args.results.is_dir():
                    table = report.render(args.results)
                    print(f"rosetta: {interrupt.describe()}.", file=sys.stderr)
                    print(f"report: {table}")
                else:
                    print(f"rosetta: {interrupt.describe()}.", file=sys.stderr)
        return interrupt.exit_code
    except OSError as error:  # a full disk once things have started: one line, never a traceback
        if not guard.is_full(error):
            raise
        print(f"rosetta: {guard.full_disk_line(error, getattr(args, 'results', None))}", file=sys.stderr)
        return 2
    finally:
        lock.release()
        processes.restore_handlers(handlers)
        output.restore(streams)
    return 0


def _validate(args: argparse.Namespace) -> None:
    """What can be checked before anything starts."""
    if args.command in ("run", "bench", "agree"):
        validate_run(args)
        args.quiet_wait = quiet.default_wait() if args.quiet_wait is None else args.quiet_wait  # $ROSETTA_QUIET_*
        args.quiet_threshold = quiet.default_threshold() if args.quiet_threshold is None else args.quiet_threshold
    if args.command == "agree":
        agree.seeds(args.seeds, args.seed)  # at least two
        if args.seed + args.seeds > SEED_LIMIT:
            raise ValueError(f"--seed {args.seed} --seeds {args.seeds}: the last seed would be "
                             f"{args.seed + args.seeds - 1}; expected seeds below {SEED_LIMIT}.")
    elif args.command in ("parity", "onnx"):
        _writable_folder(args.results, "--results")
    elif args.command == "report" and not args.results.is_dir():
        raise ValueError(f"--results {args.results}: no such folder; expected the folder a run wrote "
                         "(holding records/).")
    elif args.command == "report":  # the table, results.csv and the plots are written there
        _writable_folder(args.results, "--results", "the table")


if __name__ == "__main__":
    sys.exit(main())
