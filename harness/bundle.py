"""One archive to carry to an offline machine: the checkout, its wheels, and the data if given.

    python -m harness.bundle dl-rosetta-bundle.tar --python-version 3.12      # what `make bundle` runs
    python -m harness.bundle OUT.tar --DATASET PATH ...                        # data copies, one option per benchmark
    python -m harness.bundle OUT.tar.gz --wheelhouse wheels --no-gather        # a folder gathered before

The archive holds one folder, ``dl-rosetta/``:

- the checkout at HEAD (``git archive``), with a ``COMMIT`` file at its root naming that commit,
  which the records then carry where there is no ``.git``. Uncommitted changes are not included
  (a warning says so);
- ``wheels/``: the wheelhouse for the offline machine's Python (``harness.wheels``, in an
  interpreter of that version), gathered into a temporary folder, or into ``--wheelhouse DIR``;
- ``data/``: copies of the files given with the benchmarks' data options (``rosetta data``'s, one per
  benchmark in ``common.benchmarks``), under their own names.

It prints the size of each part, the archive's, and the commands to run on the other side.
A name ending in ``.tar.gz`` or ``.tgz`` is compressed with gzip (the wheels and the data
sets are compressed already, so this gains little). Only the standard library is used here.
"""
from __future__ import annotations

import argparse
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from common import REPOSITORY
from common.benchmarks import BENCHMARKS
from harness import venvs, wheels
from harness.venvs import KERNEL_LIST, KERNEL_NO_DEPS

TOP = "dl-rosetta"


def _git(*arguments: str) -> str:
    done = subprocess.run(["git", "-C", str(REPOSITORY), *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"git {' '.join(arguments)} in {REPOSITORY} failed: {done.stderr.strip()}; "
                         "a bundle is made from a git checkout.")
    return done.stdout


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _add_tree(archive: tarfile.TarFile, source: Path, name: str) -> tuple[int, int]:
    """Adds a file or a folder under ``name``; returns (files, bytes)."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        archive.add(path, arcname=name if path == source else f"{name}/{path.relative_to(source).as_posix()}",
                    recursive=False)
    return len(files), sum(p.stat().st_size for p in files)


def user_step(wheelhouse: str) -> str:
    """The README's user step: what the harness and the exporters need, into an existing interpreter."""
    pip = ["$PY", "-m", "pip", "install", "--no-index", "--find-links", wheelhouse]
    return "\n".join([
        venvs.shell_words([*pip, "-r", f"{wheelhouse}/{KERNEL_LIST}", "pooch", wheels.keras_requirement(),
                           *wheels.exporter_requirements()]),
        venvs.shell_words([*pip, "--no-deps", *KERNEL_NO_DEPS])])


def make(out: Path, python_version: str, wheelhouse: Path | None = None, gather: bool = True,
         skip: list[str] = (), interpreter: str | None = None, arch: str | None = None, glibc: str = "2.28",
         copies: dict | None = None, specs: list[str] = ()) -> dict:
    """Writes the bundle ``out`` with ``copies`` (benchmark -> a local copy of its data, or None);
    returns the parts' sizes (bytes) and counts."""
    copies = copies or {}
    for benchmark, path in copies.items():
        option = BENCHMARKS[benchmark].option
        if path is not None and not path.exists():
            raise ValueError(f"{option} {path}: no such file or folder; expected a local copy of the data set.")
    if not gather and (wheelhouse is None or not wheelhouse.is_dir()):
        raise ValueError(f"--no-gather packs --wheelhouse DIR as it is; {wheelhouse} is not a folder.")
    commit = _git("rev-parse", "HEAD").strip()
    changed = [line for line in _git("status", "--porcelain").splitlines() if line.strip()]
    if changed:
        print(f"warning: {len(changed)} uncommitted change(s) in {REPOSITORY} are not in the bundle, which "
              f"holds the commit {commit[:12]} (commit them first to carry them):", file=sys.stderr)
        for line in changed[:10]:
            print(f"  {line}", file=sys.stderr)
    sizes = {"commit": commit}
    with tempfile.TemporaryDirectory(prefix="rosetta-bundle-") as scratch:
        folder = wheelhouse or Path(scratch) / "wheels"
        if gather:
            kept = wheels.gather(folder, python_version, arch or platform.machine() or "x86_64", glibc, list(skip),
                                 list(specs), interpreter=interpreter)
        else:
            kept = sorted(folder.glob("*.whl"))
        checkout = Path(scratch) / "checkout.tar"
        _git("archive", "--format=tar", f"--prefix={TOP}/", "-o", str(checkout), "HEAD")
        out.parent.mkdir(parents=True, exist_ok=True)
        mode = "w:gz" if out.name.endswith((".tar.gz", ".tgz")) else "w"
        with tarfile.open(out, mode) as archive:
            files = size = 0
            with tarfile.open(checkout) as source:
                for member in source.getmembers():
                    archive.addfile(member, source.extractfile(member) if member.isfile() else None)
                    if member.isfile():
                        files, size = files + 1, size + member.size
            data = f"{commit}\n".encode()
            info = tarfile.TarInfo(f"{TOP}/COMMIT")
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
            sizes["checkout"] = (files + 1, size + len(data))
            count = total = 0
            for path in [*kept, folder / KERNEL_LIST]:
                if path.is_file():
                    archive.add(path, arcname=f"{TOP}/wheels/{path.name}", recursive=False)
                    count, total = count + (path.suffix == ".whl"), total + path.stat().st_size
            sizes["wheels"] = (count, total)
            sizes["largest"] = wheels.largest(kept)
            sizes["data"] = {}
            for path in filter(None, copies.values()):
                sizes["data"][path.name] = _add_tree(archive, path, f"{TOP}/data/{path.name}")
    sizes["total"] = out.stat().st_size
    return sizes


def report(out: Path, sizes: dict, python_version: str, copies: dict | None = None) -> str:
    files, size = sizes["checkout"]
    count, wheel_bytes = sizes["wheels"]
    lines = [f"bundle {out}:",
             f"  checkout  {_mib(size):>10}  {files} files at {sizes['commit']} (COMMIT)",
             f"  wheels    {_mib(wheel_bytes):>10}  {count} wheels for Python {python_version}"]
    for name, (n, data_bytes) in sizes["data"].items():
        lines.append(f"  data      {_mib(data_bytes):>10}  {name}" + (f" ({n} files)" if n > 1 else ""))
    if not sizes["data"]:
        lines.append("  data            none  ({} add copies)".format(
            " ".join(f"{b.variable}=..." for b in BENCHMARKS.values())))
    lines.append(f"  total     {_mib(sizes['total']):>10}  the archive")
    if sizes.get("largest"):
        lines.append("  largest wheels: " + ", ".join(f"{name} {_mib(size)}" for name, size in sizes["largest"]))
    data = "".join(f" {BENCHMARKS[benchmark].variable}=data/{path.name}"
                   for benchmark, path in (copies or {}).items() if path)
    lines += ["on the offline machine (PY: the interpreter that has the frameworks):",
              f"  tar -xf {out.name} && cd {TOP}",
              *(f"  {line}" for line in user_step("wheels").splitlines()),
              f"  make bench PYTHON=$PY VENV_BASE=$PY WHEELHOUSE=wheels EXISTING_PYTHON=$PY{data}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bundle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the archive to write (.tar, or .tar.gz / .tgz compressed)")
    parser.add_argument("--python-version", default="%d.%d" % sys.version_info[:2],
                        help="the offline machine's Python, e.g. 3.12 (default: this one's)")
    parser.add_argument("--wheelhouse", type=Path, metavar="DIR",
                        help="gather the wheels into DIR and keep it (default: a temporary folder)")
    parser.add_argument("--no-gather", dest="gather", action="store_false",
                        help="pack --wheelhouse DIR as it is, downloading nothing")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="as `python -m harness.wheels --skip`")
    parser.add_argument("--spec", nargs="+", default=[], metavar="ENV-FLAVOUR",
                        help="as `python -m harness.wheels --spec`: a framework environment's wheels too")
    parser.add_argument("--interpreter", metavar="PATH", help="as `python -m harness.wheels --interpreter`")
    parser.add_argument("--arch", help="x86_64 or aarch64 (default: this machine's)")
    parser.add_argument("--glibc", default="2.28", help="as `python -m harness.wheels --glibc` (default 2.28)")
    for benchmark in BENCHMARKS.values():
        parser.add_argument(benchmark.option, type=Path, metavar="PATH",
                            help=f"a local {benchmark.what} copy to carry along")
    args = parser.parse_args(argv)
    copies = {name: getattr(args, benchmark.dest) for name, benchmark in BENCHMARKS.items()}
    try:
        sizes = make(args.out, args.python_version, args.wheelhouse, args.gather, args.skip, args.interpreter,
                     args.arch, args.glibc, copies, args.spec)
    except ValueError as error:
        print(f"harness.bundle: {error}", file=sys.stderr)
        return 2
    print(report(args.out, sizes, args.python_version, copies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
