"""`rosetta`: build the environments, fetch the data, run the notebooks, report.

    rosetta envs [NAME ...] [--flavour cpu|cuda] [--force] [--python [NAME=]PATH ...]
    rosetta data [--data-dir DIR] [--cifar10 PATH] [--imdb PATH]
    rosetta run [NAME ...] [--benchmark cifar imdb] [--epochs N] [--train-samples N] ... [--docker]
    rosetta parity [NAME ...] [--benchmark cifar imdb] [--device cpu]
    rosetta report [--results DIR]
    rosetta bench [NAME ...] [run options]    # envs, data, parity, run and report in one go
    rosetta compare A B [--benchmark cifar imdb] [--out DIR]   # two notebooks side by side, as HTML
    rosetta compare --all [NAME ...] [--out DIR]               # every pair, and an index page
    rosetta list

NAME selects frameworks (all of them by default): see `rosetta list`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import data
from harness import REPOSITORY, compare, environments, existing, parity, report, runner
from harness.frameworks import BENCHMARKS, FRAMEWORKS, select


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="download cache (default $ROSETTA_DATA_DIR or ~/.cache/dl-rosetta)")
    parser.add_argument("--cifar10", metavar="PATH", help="a local CIFAR-10 copy: cifar-10-python.tar.gz "
                        "or a cifar-10-batches-py folder (default $ROSETTA_CIFAR10, else download)")
    parser.add_argument("--imdb", metavar="PATH", help="a local imdb.npz (default $ROSETTA_IMDB, else download)")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("frameworks", nargs="*", metavar="NAME", help="frameworks to run (default: all)")
    parser.add_argument("--benchmark", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--epochs", type=_positive, help="override the benchmark's epochs (a subset run)")
    parser.add_argument("--batch-size", type=_positive)
    parser.add_argument("--train-samples", type=_positive, help="train on the first N samples only")
    parser.add_argument("--test-samples", type=_positive, help="evaluate on the first N test samples only")
    parser.add_argument("--seed", type=int, default=runner.RunSettings.seed)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--timeout", type=float, default=runner.RunSettings.timeout,
                        help="seconds one notebook may run (default %(default).0f)")
    parser.add_argument("--results", type=Path, default=REPOSITORY / "results")
    parser.add_argument("--docker", action="store_true",
                        help="run each notebook in its docker image dl-rosetta/ENV with the GPU "
                             "(build them with `make docker`) instead of its venv")
    _add_data_options(parser)


def _add_env_options(parser: argparse.ArgumentParser, with_names: bool = True) -> None:
    if with_names:
        parser.add_argument("frameworks", nargs="*", metavar="NAME", help="frameworks (default: all)")
    parser.add_argument("--flavour", choices=environments.FLAVOURS,
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
    _add_run_options(commands.add_parser("run", help="run notebooks and write their records"))
    checking = commands.add_parser("parity", help="check each model against the NumPy reference")
    checking.add_argument("frameworks", nargs="*", metavar="NAME", help="frameworks (default: all)")
    checking.add_argument("--benchmark", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    checking.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                          help="where the parity step runs (default cpu: GPUs may use TF32)")
    checking.add_argument("--results", type=Path, default=REPOSITORY / "results")
    reporting = commands.add_parser("report", help="render results/README.md, results.csv and plots")
    reporting.add_argument("--results", type=Path, default=REPOSITORY / "results")
    bench = commands.add_parser("bench", help="envs, data, parity, run and report in one go")
    _add_run_options(bench)
    bench.add_argument("--skip-parity", action="store_true", help="leave the parity check out")
    _add_env_options(bench, with_names=False)
    commands.add_parser("list", help="the frameworks, their notebooks and environments")
    comparing = commands.add_parser("compare", help="an HTML page of two frameworks' notebooks side by side")
    comparing.add_argument("frameworks", nargs="*", metavar="NAME",
                           help="the two frameworks (with --all: those to pair, default all)")
    comparing.add_argument("--all", action="store_true", help="every pair, and an index page linking them")
    comparing.add_argument("--benchmark", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    comparing.add_argument("--out", type=Path, default=REPOSITORY / "results" / "compare",
                           help="where the pages go (default %(default)s)")
    comparing.add_argument("--results", type=Path, default=REPOSITORY / "results",
                           help="whose records/ give the latest results (default %(default)s)")
    return parser.parse_args(argv)


def cmd_envs(args) -> int:
    frameworks = select(args.frameworks)
    chosen = existing.existing_interpreters(
        args.python if args.python is not None else existing.from_variable(), frameworks)
    needs_build = any(framework.env not in chosen for framework in frameworks)
    flavour = args.flavour or (environments.default_flavour() if needs_build else "cpu")
    failures = []
    for framework in frameworks:
        python = chosen.get(framework.env)
        try:
            if python is None:
                environments.create(framework, flavour, force=args.force)
                continue
            [(_, probe)] = existing.use_existing([framework], python)
        except environments.EnvironmentBuildError as error:
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
    """Fetches and verifies what the benchmarks need before any notebook starts."""
    if "cifar" in benchmarks:
        x_train, x_test, _, _, provenance = data.load_cifar10(args.cifar10, args.data_dir)
        print(f"CIFAR-10: {len(x_train)} + {len(x_test)} images, {provenance['source']} {provenance['path']}")
    if "imdb" in benchmarks:
        x_train, _, x_test, _, provenance = data.load_imdb(args.imdb, args.data_dir)
        print(f"IMDB: {len(x_train)} + {len(x_test)} reviews, {provenance['source']} {provenance['path']}")
    return 0


def cmd_run(args) -> int:
    frameworks = select(args.frameworks)
    cmd_data(args, args.benchmark)
    settings = runner.RunSettings(
        epochs=args.epochs, batch_size=args.batch_size, train_samples=args.train_samples,
        test_samples=args.test_samples, seed=args.seed, device=args.device, timeout=args.timeout,
        data_dir=args.data_dir, cifar_source=args.cifar10, imdb_source=args.imdb, docker=args.docker)
    if settings.device != "cpu" and environments.default_flavour() == "cpu":
        print("note: no NVIDIA GPU found; " + ("`--docker` runs ask docker for one (--gpus all), so they "
              "will fail: add --device cpu to run the images on the CPU." if settings.docker else
              "every notebook trains on the CPU, and the table says so."))
    done = runner.run_all(frameworks, args.benchmark, settings, args.results)
    print(f"report: {report.render(args.results)}")
    failed = [f"{r['framework']} {r['benchmark']}: {r['status']}" for r in done if r["status"] != "ok"]
    for line in failed:
        print("not ok:", line)
    return 1 if failed else 0


def cmd_parity(args) -> int:
    done = parity.check_all(select(args.frameworks), args.benchmark, args.results, args.device)
    print(f"report: {report.render(args.results)}")
    differing = [f"{r['framework']} {r['benchmark']}: {r['message']}" for r in done if not r["equivalent"]]
    for line in differing:
        print("not equivalent:", line)
    return 1 if differing else 0


def cmd_report(args) -> int:
    print(report.render(args.results).read_text())
    return 0


def cmd_list(args) -> int:
    frameworks = list(FRAMEWORKS.values())
    name_w, label_w, api_w = (max(len(getattr(f, field)) for f in frameworks) for field in ("name", "label", "api"))
    for framework in frameworks:
        reason = environments.unavailable_reason(framework)
        source = environments.provenance(framework) or {}
        kind = f"existing {source['python']}" if source.get("kind") == "existing" else source.get("flavour")
        state = reason or f"ready ({kind})"
        print(f"{framework.name:{name_w}}  {framework.label:{label_w}}  {framework.api:{api_w}}  "
              f"kernel {framework.kernel}: {state}")
        for benchmark, notebook in framework.notebooks.items():
            print(f"{'':4}{benchmark:6} notebooks/{notebook}")
    return 0


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
    args = parse(argv)
    try:
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
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "bench":
            if args.docker:  # the images hold the environments
                print("docker: the notebooks run in the images dl-rosetta/ENV (`make docker` builds them); "
                      "no venvs are built.")
            else:
                cmd_envs(args)
            if not args.skip_parity:
                parity.check_all(select(args.frameworks), args.benchmark, args.results, in_docker=args.docker)
            return cmd_run(args)
    except (ValueError, data.DataError, environments.EnvironmentBuildError) as error:
        print(f"rosetta: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
