"""docker/: one image per environment, and `rosetta run --docker`, checked without a docker engine.

The Dockerfiles are parsed (each must name a base image, install its environment's
spec from the repository, put the repository on the path and register the kernel the
notebooks name); the `docker run` command is built and read back (GPU, mounts, image,
kernel, container paths that lead back to the host's results); and the runner is
driven end to end through a stand-in `docker` that runs papermill locally with the
container paths translated back, as a real container would see them.
"""
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import helpers
import nbformat
import pytest
import selftest
from helpers.docker_run import option, papermill_part, to_host, volumes
from helpers.dockerfile import (arguments, base_cuda, base_image, commands, copied_to, cuda_of_suffix,
                                environment_variables, instructions, pip_installs, requirement_files)

from common import REPOSITORY
from harness import cli, docker, kernels, parity, records, runner, venvs
from harness.frameworks import FRAMEWORKS, Framework

ENVIRONMENTS = docker.env_names(FRAMEWORKS.values())
CUDA_PACKAGE = re.compile(r"^([A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*?)-cu(?:da)?(\d+)(x?)\b", re.I)


def notebook_kernels(env: str) -> set[str]:
    """The kernel the notebooks of ``env`` name (Framework.kernel where a notebook does not exist yet)."""
    names = set()
    for framework in FRAMEWORKS.values():
        if framework.env != env:
            continue
        for benchmark in framework.notebooks:
            path = framework.notebook(benchmark)
            if path.is_file():
                names.add(nbformat.read(path, as_version=4).metadata["kernelspec"]["name"])
            else:
                names.add(framework.kernel)
    return names


def frameworks_of(env: str) -> list[Framework]:
    return [f for f in FRAMEWORKS.values() if f.env == env]


# --- the Dockerfiles --------------------------------------------------------------------------

def test_every_environment_has_a_dockerfile_and_every_dockerfile_an_environment():
    missing = [env for env in ENVIRONMENTS if not docker.dockerfile(env).is_file()]
    assert not missing, f"no docker/ENV/Dockerfile for {missing}"
    stale = [p.parent.name for p in docker.DOCKER_DIR.glob("*/Dockerfile") if p.parent.name not in ENVIRONMENTS]
    assert not stale, f"Dockerfiles for environments the registry does not have: {stale}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_dockerfile_names_a_pinned_base_image(env):
    image = base_image(instructions(docker.dockerfile(env)))
    assert re.fullmatch(r"[a-z0-9][a-z0-9._/-]*:[\w][\w.-]*", image), f"{env}: FROM {image!r} is not name:tag"
    assert not image.endswith(":latest") and "$" not in image, f"{env}: FROM {image!r} is not pinned"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_dockerfile_installs_the_spec_from_the_repository(env):
    steps = instructions(docker.dockerfile(env))
    defaults = arguments(steps)
    spec = f"harness/envs/{env}-cuda.txt"
    inside = copied_to(steps, spec)
    assert inside, f"{env}: no COPY of {spec} from the repository"
    assert inside.startswith("/"), f"{env}: copy {spec} to an absolute path (got {inside})"
    installs = pip_installs(steps, defaults)
    spec_installs = [i for i, words in enumerate(installs) if inside in requirement_files(words)]
    assert spec_installs, f"{env}: no `pip install -r {inside}`"
    words = installs[spec_installs[0]]
    everything = set(venvs.COMMON_REQUIREMENTS) | {"papermill"}
    assert everything <= set(words), f"{env}: the spec's install lacks {sorted(everything - set(words))}"
    if any(f.build_first for f in frameworks_of(env)):
        build = f"harness/envs/{env}-build.txt"
        built = copied_to(steps, build)
        assert built, f"{env}: build_first, but no COPY of {build}"
        first = [i for i, w in enumerate(installs) if built in requirement_files(w)]
        assert first and first[0] < spec_installs[0], f"{env}: install {build} before the spec"
        assert "--no-build-isolation" in words, f"{env}: install the spec with --no-build-isolation"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_spec_a_dockerfile_copies_exists(env):
    """The image builds only from specs the repository has (the same ones `rosetta envs` reads)."""
    steps = instructions(docker.dockerfile(env))
    copied = [w for keyword, rest in steps if keyword == "COPY" and "--from" not in rest
              for w in shlex.split(rest)[:-1] if not w.startswith("--")]
    assert copied, f"{env}: copies nothing from the repository"
    missing = [path for path in copied if not (REPOSITORY / path).exists()]
    assert not missing, f"{env}: the Dockerfile copies {missing}, which the repository does not have"


def ignored(patterns: list[str], path: str) -> bool:
    """Whether a .dockerignore keeps ``path`` out of the build context (the last match decides)."""
    out = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            out = not keep
    return out


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_build_context_holds_what_the_image_copies_and_not_the_venvs(env):
    ignore = docker.dockerfile(env).with_name("Dockerfile.dockerignore")
    assert ignore.is_file(), f"{env}: no {ignore.name}: the build would send envs/, data/ and .venv/"
    patterns = [line.strip() for line in ignore.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    steps = instructions(docker.dockerfile(env))
    copied = [w for keyword, rest in steps if keyword == "COPY" and "--from" not in rest
              for w in shlex.split(rest)[:-1] if not w.startswith("--")]
    assert not [path for path in copied if ignored(patterns, path)], f"{env}: {ignore.name} drops what it copies"
    for heavy in ("envs/pytorch/bin/python", ".venv/bin/python", "data/cifar10/x", "results/records/r.json"):
        assert ignored(patterns, heavy), f"{env}: the build context would include {heavy}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_dockerfile_registers_the_kernel_the_notebooks_name(env):
    steps = instructions(docker.dockerfile(env))
    registered = set()
    for words in commands(steps, arguments(steps)):
        if "ipykernel" in words and "install" in words:
            for i, word in enumerate(words):
                if word == "--name" and i + 1 < len(words):
                    registered.add(words[i + 1])
                elif word.startswith("--name="):
                    registered.add(word.split("=", 1)[1])
    expected = notebook_kernels(env)
    assert len(expected) == 1, f"the notebooks of {env} name different kernels: {expected}"
    assert expected <= registered, f"{env}: registers {registered or 'no kernel'}, the notebooks name {expected}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_dockerfile_puts_the_mounted_repository_on_the_path(env):
    steps = instructions(docker.dockerfile(env))
    workdirs = [rest for keyword, rest in steps if keyword == "WORKDIR"]
    assert workdirs and workdirs[-1] == str(docker.WORKSPACE), f"{env}: WORKDIR should be {docker.WORKSPACE}"
    on_path = str(docker.WORKSPACE) in environment_variables(steps).get("PYTHONPATH", "").split(":") or any(
        str(docker.WORKSPACE) in words and any(".pth" in w for w in words)
        for words in commands(steps, arguments(steps)))
    assert on_path, f"{env}: {docker.WORKSPACE} is neither on PYTHONPATH nor in a .pth file"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_dockerfile_python_is_the_one_the_registry_asks_for(env):
    steps = instructions(docker.dockerfile(env))
    version = arguments(steps).get("PYTHON_VERSION")
    assert version, f"{env}: declare the interpreter as ARG PYTHON_VERSION=X.Y"
    wanted = {f.python for f in frameworks_of(env) if f.python}
    if wanted:
        assert {version} == wanted, f"{env}: the image has Python {version}, the registry asks for {wanted}"
    else:  # the harness's own interpreter, which `rosetta envs` needs to be 3.9 or newer
        assert tuple(int(x) for x in version.split(".")) >= (3, 9)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_base_cuda_is_the_one_the_spec_was_built_for(env):
    """A package named for its CUDA (mxnet-cu112, cupy-cuda11x) must find that CUDA in the image."""
    steps = instructions(docker.dockerfile(env))
    cuda = base_cuda(steps)
    assert cuda, f"{env}: neither an nvidia/cuda base nor ENV CUDA_VERSION says which CUDA the image has"
    spec = REPOSITORY / "harness" / "envs" / f"{env}-cuda.txt"
    if not spec.is_file():
        pytest.skip(f"{spec.name} does not exist yet")
    for line in spec.read_text().splitlines():
        match = CUDA_PACKAGE.match(line.strip())
        if not match:
            continue
        wanted = cuda_of_suffix(match.group(2), match.group(3))
        assert cuda[0] == wanted[0] and (wanted[1] is None or cuda[1] == wanted[1]), \
            f"{env}: {line.strip()} is built for CUDA {wanted}, the image has {cuda}"


def test_the_dockerfile_parser_reads_continuations_arguments_and_copies(tmp_path):
    """The checks above can fail: a Dockerfile that gets each thing wrong is caught."""
    path = tmp_path / "Dockerfile"
    path.write_text("ARG BASE=nvidia/cuda:11.2.2-runtime\nFROM ${BASE}\nARG PYTHON_VERSION=3.9\n"
                    "COPY harness/envs/x-cuda.txt /opt/x.txt\n"
                    "RUN python -m pip install \\\n# a comment\n  -r /opt/other.txt ipykernel \\\n"
                    " && python -m ipykernel install --name rosetta-y\nWORKDIR /elsewhere\n")
    steps = instructions(path)
    assert base_image(steps) == "nvidia/cuda:11.2.2-runtime" and base_cuda(steps) == (11, 2)
    assert copied_to(steps, "harness/envs/x-cuda.txt") == "/opt/x.txt"
    installs = pip_installs(steps, arguments(steps))
    assert requirement_files(installs[0]) == ["/opt/other.txt"]  # not the copied spec: a failure
    assert "papermill" not in installs[0]
    assert [w for w in commands(steps, {}) if w[2:4] == ["ipykernel", "install"]][0][-1] == "rosetta-y"
    assert CUDA_PACKAGE.match("mxnet-cu112==1.9.1").group(2) == "112"
    assert CUDA_PACKAGE.match("cupy-cuda11x==13.3").group(2, 3) == ("11", "x")
    assert CUDA_PACKAGE.match("torch==2.13.0") is None
    assert cuda_of_suffix("112", "") == (11, 2) and cuda_of_suffix("92", "") == (9, 2)
    assert cuda_of_suffix("11", "x") == (11, None) and cuda_of_suffix("12", "") == (12, None)
    assert cuda_of_suffix("100", "") == (10, 0)


# --- building --------------------------------------------------------------------------------

def test_build_command_builds_each_environment_once_from_the_repository(monkeypatch):
    monkeypatch.delenv("ROSETTA_DOCKER", raising=False)
    envs = docker.env_names([FRAMEWORKS["gluon"], FRAMEWORKS["mxnet"], FRAMEWORKS["pytorch"]])
    assert envs == ["mxnet", "pytorch"]
    assert docker.build_command("mxnet", ["BASE_IMAGE=x:1"]) == [
        "docker", "build", "-f", "docker/mxnet/Dockerfile", "-t", "dl-rosetta/mxnet",
        "--build-arg", "BASE_IMAGE=x:1", "."]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_docker_builds_the_selected_images(monkeypatch):
    monkeypatch.delenv("ROSETTA_DOCKER", raising=False)
    done = subprocess.run(["make", "-s", "docker", "FRAMEWORKS=gluon lasagne", "DOCKER_FLAGS=--dry-run",
                           f"PYTHON={sys.executable}"], cwd=REPOSITORY, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "$ docker build -f docker/mxnet/Dockerfile -t dl-rosetta/mxnet .",
        "$ docker build -f docker/theano/Dockerfile -t dl-rosetta/theano ."]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_bench_docker_builds_the_images_then_runs_in_them():
    def planned(*variables):
        done = subprocess.run(["make", "-n", "bench", "FRAMEWORKS=pytorch", *variables], cwd=REPOSITORY,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if "harness.docker" in line or "rosetta bench" in line]

    with_docker = planned("DOCKER=1")
    assert "harness.docker build pytorch" in with_docker[0]
    bench = with_docker[1].split("rosetta bench", 1)[1].split("||")[0].split()  # its own arguments
    assert bench[0] == "pytorch" and bench[-1] == "--docker"
    without = planned()
    assert len(without) == 1 and "--docker" not in without[0]


# --- the docker run command ------------------------------------------------------------------

@pytest.fixture
def no_docker_override(monkeypatch):
    monkeypatch.delenv("ROSETTA_DOCKER", raising=False)
    for name in ("ROSETTA_CIFAR10", "ROSETTA_IMDB", "ROSETTA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def docker_run_command(framework, benchmark, executed, record_path, settings, results):
    """The ``docker run`` command of one run, and what stops its container, as ``runner.execute`` builds them."""
    parameters, cache = runner.docker_data(benchmark, settings.notebook_parameters(benchmark, record_path))
    return runner.launch_command(framework, framework.notebook(benchmark), executed, parameters, results,
                                 in_docker=True, device=settings.device, data_dir=cache)


def test_docker_run_command_runs_the_notebook_in_its_image_with_the_gpu(tmp_path, no_docker_override):
    framework = FRAMEWORKS["pytorch"]
    results = tmp_path / "results"  # outside the repository: mounted at /results
    record_path, executed = runner.run_paths(results, framework, "cifar")
    cifar = tmp_path / "copies" / "cifar-10-python.tar.gz"
    cifar.parent.mkdir()
    cifar.write_bytes(b"not read here")
    settings = runner.RunSettings(epochs=1, train_samples=500, data_dir=str(tmp_path / "cache"),
                                  data_sources={"cifar": str(cifar)}, docker=True)
    command, stop = docker_run_command(framework, "cifar", executed, record_path, settings, results)

    assert command[:3] == ["docker", "run", "--rm"] and callable(stop)
    assert option(command, "--gpus") == "all"
    assert volumes(command)[str(docker.WORKSPACE)] == str(REPOSITORY)
    assert volumes(command)[str(docker.RESULTS)] == str(results.resolve())
    assert option(command, "-w") == str(docker.WORKSPACE)
    if hasattr(os, "getuid"):
        assert option(command, "--user") == f"{os.getuid()}:{os.getgid()}"
    args = papermill_part(command, "dl-rosetta/pytorch")
    notebook_inside, executed_inside = args[0], args[1]
    assert notebook_inside == "/workspace/notebooks/cifar/PyTorch_CIFAR.ipynb"
    assert to_host(command, notebook_inside) == framework.notebook("cifar")
    assert to_host(command, executed_inside) == executed.resolve()
    kernel = nbformat.read(framework.notebook("cifar"), as_version=4).metadata["kernelspec"]["name"]
    assert option(args, "--kernel") == kernel == "rosetta-pytorch"
    assert option(args, "--cwd") == str(docker.WORKSPACE)
    parameters = json.loads(option(args, "--parameters_yaml"))
    assert parameters["epochs"] == 1 and parameters["train_samples"] == 500 and parameters["device"] == "auto"
    for key in ("record_path", "data_dir", "data_source"):
        assert PurePosixPath(parameters[key]).is_absolute() and not parameters[key].startswith(str(tmp_path)), \
            f"{key} is a host path: {parameters[key]}"
    assert parameters["record_path"].startswith(str(docker.RESULTS) + "/records/")
    assert to_host(command, parameters["record_path"]) == record_path.resolve()
    assert to_host(command, parameters["data_dir"]) == (tmp_path / "cache").resolve()
    assert to_host(command, parameters["data_source"]) == cifar.resolve()
    assert to_host(command, parameters["record_path"]).parent == to_host(command, executed_inside).parent
    assert option(command, "--name") == docker.container_name(executed)
    read_only = [w for w in command if w.endswith(":ro")]
    assert read_only == [f"{cifar.parent.resolve()}:/mnt/rosetta/0:ro"]  # the copy, mounted read-only


def test_results_inside_the_repository_need_no_extra_mount(tmp_path, no_docker_override):
    framework = FRAMEWORKS["pytorch"]
    stem = records.records_dir(REPOSITORY / "results") / "20260101-000000-pytorch-imdb"  # not reserved there:
    record_path, executed = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".ipynb")  # no run
    settings = runner.RunSettings(device="cpu", data_dir=str(tmp_path / "cache"), docker=True)
    command, _ = docker_run_command(framework, "imdb", executed, record_path, settings, REPOSITORY / "results")
    assert str(docker.RESULTS) not in volumes(command)
    assert "--gpus" not in command  # --device cpu asks for no GPU
    parameters = json.loads(option(papermill_part(command, "dl-rosetta/pytorch"), "--parameters_yaml"))
    assert parameters["record_path"] == f"/workspace/results/records/{record_path.name}"
    assert parameters["data_source"] is None


def test_environment_variables_of_the_host_reach_the_container_as_parameters(tmp_path, monkeypatch,
                                                                            no_docker_override):
    imdb = tmp_path / "imdb.npz"
    imdb.write_bytes(b"x")
    monkeypatch.setenv("ROSETTA_IMDB", str(imdb))
    monkeypatch.setenv("ROSETTA_DATA_DIR", str(tmp_path / "cache-from-env"))
    framework = FRAMEWORKS["pytorch"]
    record_path, executed = runner.run_paths(tmp_path / "results", framework, "imdb")
    settings = runner.RunSettings(docker=True)
    command, _ = docker_run_command(framework, "imdb", executed, record_path, settings, tmp_path / "results")
    parameters = json.loads(option(papermill_part(command, "dl-rosetta/pytorch"), "--parameters_yaml"))
    assert to_host(command, parameters["data_source"]) == imdb.resolve()
    assert to_host(command, parameters["data_dir"]) == (tmp_path / "cache-from-env").resolve()
    assert parameters["data_dir"] == str(docker.DATA)


def test_a_path_outside_every_mount_is_an_error_not_a_host_path(tmp_path):
    mounts = docker.Mounts()
    mounts.add(tmp_path / "a", PurePosixPath("/a"))
    assert mounts.container_path(tmp_path / "a" / "b.txt") == PurePosixPath("/a/b.txt")
    assert mounts.host_path("/a/b.txt") == (tmp_path / "a" / "b.txt").resolve()
    with pytest.raises(ValueError):
        mounts.container_path(tmp_path / "elsewhere.txt")


# --- rosetta run --docker end to end, through a stand-in docker --------------------------------


WRITE_OK = """
import os
from common import record
assert data_dir is not None and os.path.isdir(data_dir), data_dir
record.write(record_path, record.build(
    framework="Fake", api="test", benchmark="cifar", accuracy=0.5,
    timing={"train_seconds": 1.0, "first_epoch_seconds": 1.0}, epochs=epochs or 10, batch_size=64,
    train_samples=train_samples or 50000, test_samples=10000, seed=seed))
"""


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """ROSETTA_DOCKER names the stand-in (helpers/fake_docker.py); a kernel rosetta-selftest on this
    Python; returns the log."""
    script = tmp_path / "bin" / "docker"
    script.parent.mkdir()
    program = (Path(helpers.__file__).parent / "fake_docker.py").read_text()
    script.write_text(f"#!{sys.executable}\n" + program.split("\n", 1)[1])  # run by this Python
    script.chmod(0o755)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("ROSETTA_DOCKER", str(script))
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("ROSETTA_DATA_DIR", str(tmp_path / "cache"))
    selftest.install_kernel(tmp_path, monkeypatch)
    monkeypatch.setattr(kernels, "unavailable_reason",
                        lambda framework: pytest.fail("a docker run must not ask for the venv"))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []

    return calls


def _selftest(tmp_path, body: str) -> Framework:
    return selftest.framework(tmp_path / "notebooks" / "selftest.ipynb", body)


def test_docker_run_writes_record_and_executed_notebook_into_the_host_results(tmp_path, fake_docker):
    results = tmp_path / "results"
    settings = runner.RunSettings(epochs=2, train_samples=100, docker=True)
    result = runner.execute(_selftest(tmp_path, WRITE_OK), "cifar", settings, results)
    assert result["status"] == "ok", result.get("error")
    assert result["epochs"] == 2 and result["train_samples"] == 100
    records = list((results / "records").glob("*.json"))
    assert len(records) == 1 and (results / result["notebook"]) == records[0].with_suffix(".ipynb")
    run = [c for c in fake_docker() if c[0] == "run"]
    assert len(run) == 1 and option(run[0], "--gpus") == "all" and "dl-rosetta/selftest" in run[0]
    assert option(run[0], "--kernel") == "rosetta-selftest"


def test_docker_run_failure_is_recorded_with_its_error(tmp_path, fake_docker):
    result = runner.execute(_selftest(tmp_path, "raise ValueError('bad shape 7')"), "cifar",
                            runner.RunSettings(docker=True), tmp_path / "results")
    assert result["status"] == "failed" and result["error"] == "ValueError: bad shape 7"
    assert (tmp_path / "results" / result["notebook"]).is_file()


def test_docker_run_timeout_stops_the_container(tmp_path, fake_docker):
    body = "import time\ntime.sleep(600)"
    result = runner.execute(_selftest(tmp_path, body), "cifar", runner.RunSettings(timeout=3, docker=True),
                            tmp_path / "results")
    assert result["status"] == "timeout" and "3 s" in result["error"]
    calls = fake_docker()
    name = option([c for c in calls if c[0] == "run"][0], "--name")
    assert ["kill", name] in calls, calls


def test_missing_image_is_recorded_as_unavailable(tmp_path, fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_NO_IMAGE", "1")
    result = runner.execute(_selftest(tmp_path, WRITE_OK), "cifar", runner.RunSettings(docker=True),
                            tmp_path / "results")
    assert result["status"] == "unavailable"
    assert "dl-rosetta/selftest is not built" in result["error"] and "make docker" in result["error"]
    assert not [c for c in fake_docker() if c[0] == "run"]


def test_no_docker_is_recorded_as_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("ROSETTA_DOCKER", str(tmp_path / "no-such-docker"))
    result = runner.execute(FRAMEWORKS["pytorch"], "cifar", runner.RunSettings(docker=True), tmp_path / "results")
    assert result["status"] == "unavailable" and "not installed" in result["error"]


# --- the command line ------------------------------------------------------------------------

def test_run_docker_reaches_the_runner(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(runner, "run_all", lambda frameworks, benchmarks, settings, results, **options:
                        seen.setdefault("settings", settings) and [])
    monkeypatch.setattr(cli, "load_data", lambda args, benchmarks: ({}, {}))
    assert cli.main(["run", "pytorch", "--docker", "--results", str(tmp_path)]) == 0
    assert seen["settings"].docker is True
    assert cli.parse(["run"]).docker is False


def test_bench_docker_builds_no_venvs_and_checks_parity_in_the_images(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "cmd_envs", lambda args: pytest.fail("bench --docker built venvs"))
    checked = []
    monkeypatch.setattr(parity, "check_all", lambda *a, **k: checked.append(k.get("in_docker")) or [])
    ran = []
    monkeypatch.setattr(cli, "cmd_run", lambda args: ran.append(args.docker) or 0)
    assert cli.main(["bench", "pytorch", "--docker", "--results", str(tmp_path)]) == 0
    assert ran == [True] and checked == [True]


def test_parity_docker_checks_in_the_images_and_builds_no_venvs(monkeypatch, tmp_path):
    """`rosetta parity --docker` (what a cluster's node runs for `bench --cluster --docker`): in the images,
    even with --build-envs; without --docker, in the venvs, built first where asked."""
    built, checked = [], []
    monkeypatch.setattr(cli, "build_missing", lambda frameworks: built.append([f.name for f in frameworks]))
    monkeypatch.setattr(parity, "check_all", lambda *a, **k: checked.append(k.get("in_docker")) or [])
    assert cli.main(["parity", "pytorch", "--docker", "--build-envs", "--results", str(tmp_path)]) == 0
    assert checked == [True] and built == []
    assert cli.main(["parity", "pytorch", "--build-envs", "--results", str(tmp_path)]) == 0
    assert checked == [True, False] and built == [["pytorch"]]


PARITY_BODY = """
from common import canonical, parity, reference
if parity_inputs:
    weights, xs, labels = parity.read_inputs(parity_inputs, "cnn")
    losses, first, final = reference.train("cnn", weights, xs, labels)
    first, final = ({k: v.astype("float32") for k, v in w.items()} for w in (first, final))
    parity.write_outputs(parity_outputs, "cnn", reference.forward("cnn", weights, xs[0]), losses, first, final,
                         canonical.initial_weights("cnn", 0), parity.DROPOUT["cnn"])
"""


def test_parity_runs_in_the_image_with_its_scratch_files_mounted(tmp_path, fake_docker):
    framework = _selftest(tmp_path, PARITY_BODY)
    notebook = nbformat.read(framework.notebook("cifar"), as_version=4)
    notebook.cells[1].metadata["tags"] = ["step:parity"]
    nbformat.write(notebook, framework.notebook("cifar"))
    result = parity.check(framework, "cifar", tmp_path / "results", in_docker=True)
    assert result["status"] == "ok" and result["equivalent"], result["message"]
    run = [c for c in fake_docker() if c[0] == "run"]
    assert len(run) == 1 and "dl-rosetta/selftest" in run[0]
    assert "--gpus" not in run[0]  # parity runs on the CPU
    inside = json.loads(option(run[0], "--parameters_yaml"))
    assert to_host(run[0], inside["parity_inputs"]).name == "inputs.npz"  # the scratch folder is mounted
    assert to_host(run[0], inside["parity_outputs"]).name == "outputs.npz"
