"""`rosetta bench --cluster ADDRESS`: the suite's runs spread over the nodes of a Ray cluster.

Each framework x benchmark x repeat x variant (x accelerator type, with ``--accelerator``) becomes
one Ray task, also a variant a notebook does not offer: the node's `rosetta run` records it as
``unsupported`` (its notebook there says so), with the node's machine, as on one machine. A task asks
for one GPU (``num_gpus=1``) on a GPU run, or ``--threads`` CPUs (default 1) on a CPU run, and with
``--accelerator TYPE`` for Ray's
accelerator type too (the resource ``accelerator_type:TYPE`` that Ray gives a node with such a GPU,
or that ``ray start --resources`` names), so that a node without that type is never used for it.

On its node a task runs exactly what ``rosetta run`` runs there: ``python -m harness.entry run``
of the node's own checkout, with the node's environments and kernels (built there on first use:
``--build-envs``) and the node's data, into a temporary results folder. The code is not shipped with
Ray's runtime_env: a node's kernels import ``common`` from the checkout that registered them, and its
environments are built in that checkout, so the node's checkout must be the one that runs. Each
record names the commit it ran at, as every record does. The record, the executed notebook, the
kernel's log, the task's whole output and the ONNX export come back to the driver, which writes them
into its results folder as a local run would, each record with a ``cluster`` field naming the node
that ran it (its host, IP address and Ray node id) and the accelerator type asked for. With
``bench``, each node a run may use first checks parity (`rosetta parity`, a task pinned to it), its
records brought back into ``results/parity`` naming the node; a node that joins later is checked by
its first task, before its run (``_check_first``). With ``--resume`` a run's earlier ok record goes
with its task, and the node's `rosetta run --resume` judges it there as on one machine.

A node lost mid-run (``ray.exceptions.NodeDiedError``, or a worker that died) gives a ``lost``
record naming the node; with ``--retries N`` such a run is started again (elsewhere, where the
node is gone) up to N times. The driver must run on a node of the cluster (``ray start`` was run
there, or it is the head); a Ray Client address (``ray://``) is refused in one line before anything starts.

Ray is an optional extra (``pip install -e '.[cluster]'``): without it ``--cluster`` says so in
one line before anything starts.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from common import REPOSITORY, record, variants
from harness import runner

EXTRA = "cluster"
INSTALL = f"{Path(sys.executable).parent / 'python'} -m pip install -e '{REPOSITORY}[{EXTRA}]'"
# What runs `rosetta COMMAND ...` on a node, instead of the node's own `python -m harness.entry` (a shell
# line, read on the node, the command and its options appended: for a node whose harness is elsewhere,
# and for the tests' selftest kernel).
NODE_RUN_VARIABLE = "ROSETTA_NODE_RUN"
CONNECT_SECONDS = 5.0
STOP_SECONDS = 60.0  # how long a cancelled task waits for `rosetta run` to record its run as interrupted


def import_ray():
    """Ray, or a ValueError in one line naming the extra and the command that installs it."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"--cluster needs Ray, which is in the optional extra {EXTRA!r}: install it with "
                         f"`{INSTALL}` (or `make bench CLUSTER=...`, which installs it).") from None
    return ray


def _reachable(address: str) -> str | None:
    """Why ``HOST:PORT`` cannot be reached (a TCP connection within ``CONNECT_SECONDS``), or None."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return "not HOST:PORT"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS):
            return None
    except OSError as error:
        return error.strerror or str(error) or type(error).__name__


def connect(address: str):
    """Joins the cluster at ``address`` (``auto``: the one running on this machine); Ray, connected.
    A cluster that cannot be reached is a ValueError in one line, before anything starts."""
    check(address)
    ray = import_ray()
    kept = ({number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGHUP)}
            if threading.current_thread() is threading.main_thread() else {})
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=True, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--cluster {address}: cannot join a Ray cluster ({first}); expected the address "
                         "`ray start --head` printed (HOST:PORT), or auto with `ray start` run on this "
                         "machine.") from None
    finally:  # ray.init installs a SIGTERM handler of its own: the harness's stops the tasks and says so
        for number, handler in kept.items():
            if handler is not None:
                signal.signal(number, handler)
    return ray


@dataclass
class Job:
    """One run on the cluster: a framework's notebook of one benchmark, one seed, one variant, one
    accelerator type."""

    framework: object
    benchmark: str
    repeat: int
    seed: int
    accelerator: str | None
    export: bool
    attempt: int = 1
    sizes: dict = field(default_factory=dict)  # the epochs, batch size and sample counts it runs with
    variant: str = variants.FP32
    # --resume: the ok record from the cluster of its configuration and commit (its file's name, its bytes),
    # sent with the task: the node's `rosetta run --resume` judges it as on one machine (data, kernel too)
    resume: tuple | None = None

    @property
    def key(self) -> str:
        return (f"{self.framework.name}/{self.benchmark}/seed {self.seed}"
                + ("" if self.variant == variants.FP32 else f"/{self.variant}")
                + (f"/{self.accelerator}" if self.accelerator else "") + f"/attempt {self.attempt}")

    @property
    def shown(self) -> str:
        """How the driver's lines name it: ``[NAME/BENCHMARK]``, or ``[NAME/BENCHMARK VARIANT]``."""
        return f"[{self.framework.name}/{self.benchmark}" + (
            "" if self.variant == variants.FP32 else f" {self.variant}") + "]"


def plan(frameworks, benchmarks, repeats: int, seed: int, accelerators, export: bool,
         resume: dict | None = None, wanted=(variants.FP32,)) -> list[Job]:
    """Every run, repeat by repeat and in each repeat variant by variant (as a local suite orders them),
    each for every accelerator type; ``resume``: (framework name, benchmark, seed, accelerator, variant) to
    the ok record that its task's node may find makes it unnecessary (``finished_runs``). Exports as a local
    suite does (``runner.exports``)."""
    jobs = []
    wanted = list(dict.fromkeys(wanted or [variants.FP32]))
    for repeat in range(repeats):
        for variant in wanted:
            for framework in frameworks:
                for benchmark in benchmarks:
                    if benchmark not in framework.notebooks:
                        continue
                    for accelerator in accelerators or [None]:
                        earlier = (resume or {}).get((framework.name, benchmark, seed + repeat, accelerator, variant))
                        jobs.append(Job(framework, benchmark, repeat, seed + repeat, accelerator,
                                        runner.exports(export, repeat, variant), variant=variant,
                                        resume=earlier))
    return jobs


def run_arguments(args, job: Job) -> list[str]:
    """The `rosetta run` options of one job, from the driver's own (``--results`` is the node's)."""
    argv = [job.framework.name, "--benchmark", job.benchmark, "--seed", str(job.seed), "--device", args.device,
            "--timeout", repr(float(args.timeout))]
    if job.variant != variants.FP32:
        argv += ["--variant", job.variant]
    for option in ("epochs", "batch_size", "train_samples", "test_samples", "threads", "export_runs"):
        value = getattr(args, option, None)
        if value is not None:
            argv += ["--" + option.replace("_", "-"), str(value)]
    if getattr(args, "export_batch_sizes", None):
        argv += ["--export-batch-sizes", *map(str, args.export_batch_sizes)]
    if not job.export:
        argv.append("--no-export")
    if job.resume:  # its earlier record goes with the task: the node judges it
        argv.append("--resume")
    if args.docker:
        argv.append("--docker")
    else:  # the environment built on first use on its node
        argv.append("--build-envs")
    if args.quiet_wait is not None:
        argv += ["--quiet-wait", repr(float(args.quiet_wait))]
    if args.quiet_threshold is not None:
        argv += ["--quiet-threshold", repr(float(args.quiet_threshold))]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    from common.benchmarks import BENCHMARKS
    for spec in BENCHMARKS.values():
        if getattr(args, spec.dest, None):
            argv += [spec.option, getattr(args, spec.dest)]
    return argv


# --- on the node ---------------------------------------------------------------------------------

def onnx_commands(args, job: Job) -> list[list[str]]:
    """What follows a job's run on its node: `rosetta bench`'s ONNX check of its export (`rosetta onnx NAME
    --benchmark BENCH` into the task's results folder), on the machine and device that made the export, as
    a local bench checks each export after its runs. None for `rosetta run`, or for a run without its export."""
    if getattr(args, "command", None) != "bench" or not job.export:
        return []
    command = ["onnx", job.framework.name, "--benchmark", job.benchmark]
    if getattr(args, "flavour", None):
        command += ["--flavour", args.flavour]
    return [command]


def node_command(command: str = "run") -> list[str]:
    """What runs `rosetta COMMAND` on this node: ``$ROSETTA_NODE_RUN COMMAND``, or this checkout's."""
    given = os.environ.get(NODE_RUN_VARIABLE, "").strip()
    return (shlex.split(given) if given else [sys.executable, "-m", "harness.entry"]) + [command]


def _collect(folder: Path, given=()) -> dict:
    """Every file a `rosetta run` wrote into ``folder`` (its records, notebooks, logs and exports), by
    its path relative to ``folder``; the reservations, and the files ``given`` to it, are left out."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and ".reserved" not in relative.parts and relative.as_posix() not in given:
            found[relative.as_posix()] = path.read_bytes()
    return found


def _stop(process: subprocess.Popen) -> None:
    """SIGINT to `rosetta run`'s process group (it stops its kernel and records the run as interrupted),
    then SIGKILL to whatever is left of the group after ``STOP_SECONDS``."""
    for number, wait in ((signal.SIGINT, STOP_SECONDS), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, number)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


STAGING = "rosetta-cluster-"  # a task's results folder on its node: rosetta-cluster-PID-XXXX in the temp folder


def _remove_stale() -> None:
    """The folders that tasks whose worker is gone left behind (a lost node's raylet, a killed worker)."""
    from harness import processes
    for folder in Path(tempfile.gettempdir()).glob(STAGING + "*-*"):
        pid = folder.name[len(STAGING):].split("-", 1)[0]
        if pid.isdigit() and not processes.alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    for mark in (Path(tempfile.gettempdir()) / PARITY_MARKS).glob("*"):  # the parity marks of earlier benches
        try:
            if time.time() - mark.stat().st_mtime > MARKS_KEPT:
                mark.unlink()
        except OSError:
            pass


def _end_with_parent() -> None:
    """In `rosetta run`'s process before it starts: SIGTERM to it should the Ray worker that started it die
    (its node's raylet lost, the worker killed), so that it stops its kernel instead of running on alone;
    and SIGINT and SIGTERM handled again (a Ray worker blocks them, and ignores SIGINT: both stay so across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def node_run(argv: list[str], tracker=None, key: str = "", commands: list[list[str]] | None = None,
             given: dict | None = None, parity: dict | None = None, after: list[list[str]] | None = None) -> dict:
    """A Ray task's body: one `rosetta run` on this node (``argv``: its options), or ``commands`` one
    after the other (each a `rosetta` command and its options), into a temporary results folder; what
    they wrote, their output's tail, the first exit status that is not 0 (else 0) and the node.
    ``given``: files (by their path in the results folder) put there first, as the earlier record that
    `--resume` judges; they do not come back. ``parity``: the bench's parity check (``commands``, the nodes
    ``checked`` at the start, the bench's ``session``): on a node not among them (one that joined after
    the start) its first task checks it before its run (``_check_first``), and what that brought comes back
    as ``parity``. ``after``: commands that follow the run where it exited 0 with a record of its own (its
    ONNX check: ``onnx_commands``), into the same folder. A cancelled task (Ctrl-C on the driver) stops the
    one running."""
    import ray

    context = ray.get_runtime_context()
    node = {"host": socket.gethostname(), "ip": ray.util.get_node_ip_address(), "node_id": context.get_node_id()}
    gpus = [str(g) for g in ray.get_gpu_ids()]
    if gpus:
        node["gpus"] = gpus
    if tracker is not None:  # not awaited: a task blocked in ray.get gives its CPU back to Ray meanwhile
        tracker.started.remote(key, node)
    described = None if commands else _machine(argv, bool(gpus))  # a run: the node's machine, for a record
    if tracker is not None and described:  # made without the run's (nothing came back, its task interrupted)
        tracker.described.remote(key, described)
    environment = dict(os.environ)
    if gpus:  # a node runs one task per GPU at once: each GPU has its own suite lock, not the machine's
        from harness import guard
        environment[guard.LOCK_VARIABLE] = f"{guard.lock_path()}.gpu{'-'.join(gpus)}"
    _remove_stale()
    checked, said = None, []
    if parity and node["node_id"] not in parity["checked"]:  # a node that joined after the start
        checked = _check_first(parity, node, environment, said)
    outcome = {"node": node, **_commands(commands or [["run", *argv]], environment, given or {}, said,
                                         [] if commands else after or [])}
    if checked is not None:
        outcome["parity"] = checked
    if described:
        outcome["machine"] = described
    return outcome


def _machine(argv: list[str], gpu: bool) -> dict | None:
    """The ``environment`` of this node for a run of ``argv`` (its `rosetta run` options), as a record that
    did not get as far as its kernel has it (``runner._write_failure``): the device it was meant for, the
    threads asked for, the CPU or GPU model, the commit."""
    try:
        from common import machine
        option = lambda name: argv[argv.index(name) + 1] if name in argv[:-1] else None  # noqa: E731
        device = option("--device") if option("--device") in ("cpu", "cuda") else ("cuda" if gpu else "cpu")
        threads = option("--threads")
        return machine.capture(device=device, versions={}, threads_requested=int(threads) if threads else None)
    except Exception:  # noqa: BLE001 - the run matters more than this description of it
        return None


PARITY_MARKS = "rosetta-cluster-parity"  # in the temp folder: SESSION-NODE.lock, and .done once checked
MARKS_KEPT = 7 * 86400.0  # seconds: a bench's marks outlive it that long (its tasks may run for days)


def _check_first(parity: dict, node: dict, environment: dict, said: list) -> dict | None:
    """On a node that joined after the start (no pinned check): this node's parity check, where no other task
    of this bench made it here, what it brought; None where one did. One check per node: a file lock on the
    node (not a Ray call, which would give the task's CPU back while it waits) held while checking, and a
    mark once it is done; the tasks that land meanwhile wait for it. Lines for the task's log go to ``said``."""
    import fcntl

    folder = Path(tempfile.gettempdir()) / PARITY_MARKS
    folder.mkdir(exist_ok=True)
    stem = folder / f"{parity['session']}-{node['node_id']}"
    done = stem.with_suffix(".done")
    descriptor = os.open(stem.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    said.append("parity: another task is checking this node (it joined after the start); "
                                "waiting for it\n")
                    print(said[-1], end="", flush=True)
                time.sleep(0.5)  # a loop, not a blocking lock: Ray's cancel raises KeyboardInterrupt here
        if done.exists():
            return None
        said.append("parity: this node joined after the start: its parity check first, in this task\n")
        print(said[-1], end="", flush=True)
        checked = {"node": node, **_commands(parity["commands"], environment)}
        done.touch()  # not where the check was stopped: the node's next task checks it
        return checked
    finally:
        os.close(descriptor)  # the lock goes with it


def _commands(commands: list[list[str]], environment: dict, given: dict | None = None, said=(), after=()) -> dict:
    """``commands`` (each a `rosetta` command and its options) one after the other into a temporary results
    folder (``given``: files put there first, which do not come back; ``said``: lines the log begins with):
    what they wrote, their output's tail and the first exit status that is not 0 (else 0). ``after``: more
    commands, run only where all those exited 0 and wrote a record (not a run that `--resume` skipped);
    their exit status is not counted (what they check, they record)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-"))
    tail: list[str] = []
    given = given or {}
    for name, content in given.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    try:
        returncode = 0
        with open(folder / TASK_LOG, "w", encoding="utf-8", errors="replace") as log:
            log.writelines(said)
            def rosetta(command: list[str]) -> int:
                return _node_command(node_command(command[0]) + command[1:] + ["--results", str(folder)],
                                     environment, tail, log)

            for command in commands:
                returncode = returncode or rosetta(command)
            wrote = any(f"records/{path.name}" not in given for path in (folder / "records").glob("*.json"))
            for command in after if returncode == 0 and wrote else ():
                rosetta(command)
        return {"returncode": returncode, "output": "".join(tail), "files": _collect(folder, given)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


TASK_LOG = "task.log"  # a task's whole output on its node; it comes back as records/STEM.task.log


def _node_command(argv: list[str], environment: dict, tail: list[str], log) -> int:
    """One `rosetta` command on this node, its output forwarded to the driver, written to ``log`` and its
    last lines kept in ``tail``; its exit status."""
    process = subprocess.Popen(argv, cwd=REPOSITORY, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True, env=environment,
                               preexec_fn=_end_with_parent)

    def read():
        for line in process.stdout:
            tail.append(line)
            del tail[:-40]
            log.write(line)
            print(line, end="", flush=True)  # Ray forwards it to the driver

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while process.poll() is None:  # a loop, not wait(): Ray's cancel raises KeyboardInterrupt here
            time.sleep(0.2)
    except BaseException:
        _stop(process)
        raise
    reader.join(timeout=10)
    return process.returncode


# --- on the driver -------------------------------------------------------------------------------

class _Tracker:
    """Which node each started job runs on (an actor on the driver's node: it outlives any other)."""

    def __init__(self):
        self.nodes = {}
        self.machines = {}

    def started(self, key: str, node: dict) -> None:
        self.nodes[key] = node

    def described(self, key: str, environment: dict | None) -> None:
        self.machines[key] = environment

    def machine(self, key: str) -> dict | None:
        """The node's machine as the job's task described it (``_machine``), or None."""
        return self.machines.get(key)

    def where(self) -> dict:
        return dict(self.nodes)


def _node_text(node: dict | None) -> str:
    if not node or not node.get("node_id"):
        return "no node (the task had not started on one)"
    return f"node {node.get('host')} ({node.get('ip')}, Ray node {str(node.get('node_id'))[:12]})"


def store(results: Path, job: Job, outcome: dict, checked: bool = False) -> dict:
    """Writes what a job's `rosetta run` wrote on its node into ``results`` as a local run would: the
    record (with ``cluster``: the node and the accelerator type), the executed notebook, the kernel's
    log, the export and its ONNX check (``checked``: one was asked for, ``onnx_commands``; an ok export
    that brought none back gets a failed check naming the node), under a name of this results folder.
    Returns the record."""
    files = outcome["files"]
    found = [name for name in files if name.startswith("records/") and name.endswith(".json")
             and name.count("/") == 1]
    if len(found) != 1:
        message = (f"the run on {_node_text(outcome['node'])} wrote {len(found)} records (exit status "
                   f"{outcome['returncode']}); its output ended: {outcome['output'][-1500:].strip()}")
        return write_failure(results, job, "failed", message, outcome["node"], outcome.get("machine"))
    source_stem = found[0][len("records/"):-len(".json")]
    record_path, executed = runner.run_paths(results, job.framework, job.benchmark, job.variant)
    stem = record_path.name[:-len(".json")]
    result = json.loads(files[found[0]])
    for name, content in files.items():
        if name == found[0]:
            continue
        if name.startswith(f"records/{source_stem}."):
            target = results / "records" / (stem + name[len(f"records/{source_stem}"):])
        elif name.startswith(f"exports/{source_stem}/"):
            target = results / "exports" / stem / name[len(f"exports/{source_stem}/"):]
        elif name == TASK_LOG:
            target = results / "records" / f"{stem}.task.log"
        else:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    if result.get("notebook"):
        result["notebook"] = f"records/{stem}.ipynb"
    if result.get("export"):
        result["export"] = f"exports/{stem}"
    result["cluster"] = {**outcome["node"], "accelerator": job.accelerator, "attempt": job.attempt}
    record.write(record_path, result)
    runner.release(record_path)
    made = files.get(f"onnx/{source_stem}.json")
    if result["status"] == "ok" and result.get("export") and (made is not None or checked):
        from harness import onnx, records
        if made is not None:  # its names, its device group (a type's table) and its node: this folder's
            found = onnx.of_run(json.loads(made), result)
        else:
            found = onnx.failed(result, f"the ONNX check on {_node_text(outcome['node'])} brought no record back; "
                                        f"its output ended: {outcome['output'][-1500:].strip()}")
        record.write_json(records.onnx_dir(results) / f"{stem}.json", found)
    return result


def write_failure(results: Path, job: Job, status: str, message: str, node: dict | None,
                  environment: dict | None = None) -> dict:
    """The record of a job that brought no record back (a lost node, an interrupted or failed task), its
    ``cluster`` naming the node it ran on; ``node`` None where the task had not started on one (its
    ``cluster`` then says so, with None for the host, IP and node id)."""
    record_path, _ = runner.run_paths(results, job.framework, job.benchmark, job.variant)
    from common.benchmarks import BENCHMARKS
    spec = BENCHMARKS[job.benchmark]
    sizes = job.sizes
    result = record.build(
        framework=job.framework.label, api=job.framework.api, benchmark=job.benchmark, status=status,
        error=message, epochs=sizes.get("epochs", spec.epochs), batch_size=sizes.get("batch_size", spec.batch),
        train_samples=sizes.get("train_samples", spec.train), test_samples=sizes.get("test_samples", spec.test),
        seed=job.seed, notebook=None, environment=environment, variant=job.variant,
        cluster={**(node or {"host": None, "ip": None, "node_id": None, "not_started": True}),
                 "accelerator": job.accelerator, "attempt": job.attempt})
    record.write(record_path, result)
    runner.release(record_path)
    return result


# --- the parity check, once per node ------------------------------------------------------------

def parity_commands(args, frameworks) -> list[list[str]]:
    """The `rosetta parity` commands of a node: every framework and benchmark of the suite, one command
    per variant asked for (as `rosetta bench` checks each variant on one machine), in the docker images
    where the runs use them (``--docker``)."""
    names = [f.name for f in frameworks if any(b in f.notebooks for b in args.benchmark)]
    wanted = list(dict.fromkeys(getattr(args, "variant", None) or [variants.FP32]))
    built = ["--docker"] if args.docker else ["--build-envs"]  # in the images, or on first use, as the runs do
    return [["parity", *names, "--benchmark", *args.benchmark, "--variant", variant, *built] for variant in wanted]


def parity_nodes(ray, args, gpu: bool) -> list[dict]:
    """The live nodes that a run of this suite may be placed on (a GPU, or ``--threads`` CPUs; of an
    ``--accelerator`` type where given), each as {host, ip, node_id, cpus}."""
    found = []
    for node in ray.nodes():
        have = node.get("Resources") or {}
        if not node.get("Alive"):
            continue
        if (have.get("GPU", 0) < 1) if gpu else (have.get("CPU", 0) < (args.threads or 1)):
            continue
        if args.accelerator and not any(have.get(f"accelerator_type:{kind}", 0) > 0 for kind in args.accelerator):
            continue
        found.append({"host": node.get("NodeManagerHostname"), "ip": node.get("NodeManagerAddress"),
                      "node_id": node.get("NodeID"), "cpus": have.get("CPU", 0)})
    return found


def store_parity(results: Path, frameworks, args, node: dict, outcome: dict | None, failure: str = "") -> list[dict]:
    """Writes the parity records one node's `rosetta parity` brought back into ``results/parity`` under
    names of this folder, each with ``cluster``: the node. Each check it should have made and brought
    no record of (its `rosetta parity` failed, or the task: ``failure``) gets a failed record naming
    the node and why, so that the table says so. Returns the records."""
    from common.benchmarks import BENCHMARKS
    from harness import records
    folder = records.parity_dir(results)
    files = outcome["files"] if outcome else {}
    node = dict(outcome["node"]) if outcome else {k: v for k, v in node.items() if k != "cpus"}
    done, seen = [], set()
    for name in sorted(files):
        if not (name.startswith("parity/") and name.endswith(".json") and name.count("/") == 1):
            continue
        source = name[len("parity/"):-len(".json")]
        found = json.loads(files[name])
        stem = runner.new_stem(folder, source.split("-", 2)[-1])  # STAMP-NAME: STAMP is DATE-TIME
        for other, content in files.items():
            if other.startswith(f"parity/{source}.") and other != name:
                (folder / (stem.name + other[len(f"parity/{source}"):])).write_bytes(content)
        if found.get("notebook"):
            found["notebook"] = stem.name + ".ipynb"
        found["cluster"] = node
        runner.release(record.write_json(stem.parent / (stem.name + ".json"), found))
        seen.add((found.get("framework"), found.get("benchmark"), found.get("variant") or variants.FP32))
        done.append(found)
    if TASK_LOG in files:  # the task's whole output (an environment built first among it)
        stem = runner.new_stem(folder, f"node-{str(node.get('node_id'))[:12]}")
        (folder / f"{stem.name}.task.log").write_bytes(files[TASK_LOG])
        runner.release(stem.parent / (stem.name + ".json"))
    if not failure:
        failure = (f"the parity check on {_node_text(node)} brought no record of it back (exit status "
                   f"{outcome['returncode']}); its output ended: {outcome['output'][-1500:].strip()}")
    wanted = list(dict.fromkeys(getattr(args, "variant", None) or [variants.FP32]))
    for variant in wanted:
        for framework in frameworks:
            for benchmark in args.benchmark:
                if benchmark not in framework.notebooks or (framework.label, benchmark, variant) in seen:
                    continue
                named = "" if variant == variants.FP32 else f"-{variant}"
                stem = runner.new_stem(folder, f"{framework.name}-{benchmark}{named}")
                result = {"schema_version": record.SCHEMA_VERSION, "kind": "parity", "framework": framework.label,
                          "api": framework.api, "benchmark": benchmark, "model": BENCHMARKS[benchmark].layout,
                          "device": "cpu", "variant": variant, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "status": "failed", "equivalent": False, "message": failure, "notebook": None,
                          "cluster": node}
                runner.release(record.write_json(stem.parent / (stem.name + ".json"), result))
                done.append(result)
    return done


def _parity_line(result: dict) -> str:
    variant = result.get("variant") or variants.FP32
    return (f"[parity {result['framework']} {result['benchmark']}"
            + ("" if variant == variants.FP32 else f" {variant}")
            + f"] on {_node_text(result.get('cluster'))}: {result.get('message')}")


LOST_ERRORS = ("NodeDiedError", "WorkerCrashedError", "LocalRayletDiedError", "ObjectLostError",
               "OwnerDiedError", "RaySystemError")


def run(args, frameworks, results: Path, address: str, resume: dict | None = None,
        parity: bool = False) -> list[dict]:
    """Every job on the cluster at ``address``; their records, written into ``results`` as they come.
    ``parity``: first `rosetta parity` once on each node a run may be placed on, a task pinned to it, its
    records into ``results/parity``. Ctrl-C (``processes.Interrupted``) cancels every task, records the
    started runs as interrupted and propagates."""
    ray = connect(address)
    try:
        return _run(ray, args, frameworks, results, address, resume, parity)
    finally:
        ray.shutdown()


def _sizes(args, benchmark: str) -> dict:
    from common.benchmarks import BENCHMARKS
    spec = BENCHMARKS[benchmark]
    return {"epochs": args.epochs or spec.epochs, "batch_size": args.batch_size or spec.batch,
            "train_samples": args.train_samples or spec.train, "test_samples": args.test_samples or spec.test}


def session() -> str:
    """A bench's name for its parity marks on the nodes (``_check_first``)."""
    import uuid
    return uuid.uuid4().hex


def _run(ray, args, frameworks, results: Path, address: str, resume, parity: bool = False) -> list[dict]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    jobs = plan(frameworks, args.benchmark, getattr(args, "repeats", 1), args.seed, args.accelerator,
                args.export, resume, getattr(args, "variant", None))
    for job in jobs:
        job.sizes = _sizes(args, job.benchmark)
    done = []
    here = ray.get_runtime_context().get_node_id()
    tracker = ray.remote(_Tracker).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
    task = ray.remote(node_run)
    gpu = runner.target_device(runner.RunSettings(device=args.device)) == "cuda"
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    print(f"cluster: {len(nodes)} node(s) at {address}; {len(jobs)} run(s), each a task asking for "
          + ("one GPU" if gpu else f"{args.threads or 1} CPU(s)")
          + (f" of type {' or '.join(args.accelerator)} (a table per type)" if args.accelerator else ""), flush=True)

    def submit(job: Job):
        options = {"num_gpus": 1, "num_cpus": 0} if gpu else {"num_cpus": args.threads or 1}
        if job.accelerator:
            options["accelerator_type"] = job.accelerator
        given = {f"records/{job.resume[0]}": job.resume[1]} if job.resume else None
        return task.options(max_retries=0, **options).remote(run_arguments(args, job), tracker, job.key, None, given,
                                                             checks, onnx_commands(args, job))

    caught, previous = [], {}  # which signal stopped the driver: Ray's wait gives only a KeyboardInterrupt

    def note(number, frame):
        handler = previous.get(number)
        if handler == signal.SIG_IGN:
            return
        caught.append(number)
        if callable(handler):
            handler(number, frame)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        from harness import processes
        previous = {number: signal.signal(number, note) for number in processes.STOPPING}
    pending, checking, resumed = {}, {}, []
    # with parity: a task on a node not checked at the start (it joined later) checks it first (_check_first)
    checks = None

    def check_on(node: dict, cpus: float) -> None:
        """The node's parity check, a task pinned to it (``cpus``: the node's CPUs, of which it asks one)."""
        pinned = NodeAffinitySchedulingStrategy(node["node_id"], soft=False)
        checking[task.options(max_retries=0, num_cpus=min(1, cpus), scheduling_strategy=pinned).remote(
            [], None, "", checks["commands"])] = node

    if parity and jobs:  # each node's own parity check, before any timed run starts
        checks = {"commands": parity_commands(args, frameworks), "session": session(), "checked": []}
        for node in parity_nodes(ray, args, gpu):
            check_on(node, node["cpus"])
            checks["checked"].append(node["node_id"])
        print(f"cluster: the parity check first, on each of the {len(checking)} node(s) the runs may use, "
              "a task pinned to it; a node that joins later checks parity in its first task, before its run",
              flush=True)

    def collect_checks():
        while checking:
            ready, _ = ray.wait(list(checking), num_returns=1, timeout=1.0)
            for ref in ready:
                node = checking.pop(ref)
                try:
                    outcome, failure = ray.get(ref), ""
                except Exception as error:
                    name = type(error).__name__
                    lost = name in LOST_ERRORS or isinstance(error, ray.exceptions.NodeDiedError)
                    outcome, failure = None, (f"the parity check on {_node_text(node)} "
                                              + ("was lost with its node" if lost else "failed") + f" ({name})")
                for result in store_parity(results, frameworks, args, node, outcome, failure):
                    print(_parity_line(result), flush=True)

    came_back, late = {}, set()  # the nodes runs came back from; those whose late check came back in a task
    try:
        collect_checks()
        for job in jobs:
            pending[submit(job)] = job
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as error:  # the task brought nothing back
                    name = type(error).__name__
                    node = ray.get(tracker.where.remote()).get(job.key)
                    if name in LOST_ERRORS or isinstance(error, ray.exceptions.NodeDiedError):
                        message = (f"{_node_text(node)} was lost while the run was on it ({name}); nothing came "
                                   "back from it")
                        status = "lost"
                    else:
                        first = str(error).strip().splitlines()[-1] if str(error).strip() else name
                        message, status = f"the task on {_node_text(node)} failed: {name}: {first}", "failed"
                    result = write_failure(results, job, status, message, node,
                                           ray.get(tracker.machine.remote(job.key)))
                    print(f"{job.shown} {status}: {message}", flush=True)
                    done.append(result)
                    if status == "lost" and job.attempt <= args.retries:
                        again = replace(job, attempt=job.attempt + 1)
                        print(f"{job.shown} started again (attempt {again.attempt} "
                              f"of {args.retries + 1})", flush=True)
                        pending[submit(again)] = again
                    continue
                if outcome.get("parity"):  # its node joined after the start: checked first, in this task
                    print(f"cluster: {_node_text(outcome['node'])} joined after the start; its parity check ran "
                          f"first, in the task of {job.shown}", flush=True)
                    for checked in store_parity(results, frameworks, args, outcome["node"], outcome["parity"]):
                        print(_parity_line(checked), flush=True)
                    late.add(outcome["node"]["node_id"])
                came_back.setdefault(outcome["node"]["node_id"], outcome["node"])
                if job.resume and skipped(outcome):
                    print(f"{job.shown} skipped (--resume) on {_node_text(outcome['node'])}: its ok record "
                          f"{job.resume[0]} holds there, as `rosetta run --resume` judges it (the same sizes, "
                          "seed, variant, threads, device, commit, data checksum and kernel)", flush=True)
                    resumed.append(f"{job.framework.name} {job.benchmark} seed {job.seed}"
                                   + ("" if job.variant == variants.FP32 else f" {job.variant}")
                                   + (f" on {job.accelerator}" if job.accelerator else ""))
                    continue
                result = store(results, job, outcome, bool(onnx_commands(args, job)))
                state = result["status"]
                if job.resume:
                    said = [line.strip() for line in outcome["files"].get(TASK_LOG, b"").decode(
                        "utf-8", "replace").splitlines() if line.startswith("resume: nothing skipped")]
                    print(f"{job.shown} run again (--resume) on {_node_text(outcome['node'])}: its ok record "
                          f"{job.resume[0]} did not hold there: "
                          + (said[0] if said else runner.resume_difference(json.loads(job.resume[1]), result)),
                          flush=True)
                print(f"{job.shown} {state} on {_node_text(outcome['node'])}"
                      + (f": accuracy {result['test_accuracy']:.4f}" if state == "ok" else
                         f": {result.get('error')}"), flush=True)
                done.append(result)
        if checks is not None:  # a node whose check was made in a task lost before it returned: checked now
            unchecked = {i: n for i, n in came_back.items() if i not in checks["checked"] and i not in late}
            have = {n.get("NodeID"): n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")}
            for node_id, node in unchecked.items():
                if node_id not in have:
                    failure = (f"the parity check on {_node_text(node)} was made in a task lost before it returned, "
                               "and the node has left the cluster, so it cannot be checked again")
                    for result in store_parity(results, frameworks, args, node, None, failure):
                        print(_parity_line(result), flush=True)
                    continue
                print(f"cluster: runs came back from {_node_text(node)}, whose parity check did not (it was made in "
                      "a task lost before it returned); checking it now, a task pinned to it", flush=True)
                check_on(node, have[node_id].get("CPU", 0))
            collect_checks()
    except KeyboardInterrupt as interrupt:  # Ray's wait turns the signal's Interrupted into a KeyboardInterrupt
        from harness import processes
        _cancel(ray, pending, tracker, results, list(checking))
        if isinstance(interrupt, processes.Interrupted):
            raise
        raise processes.Interrupted(caught[0] if caught else signal.SIGINT) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if resumed:
        print(f"resume: skipped {len(resumed)} run(s) whose ok record held on their node: " + ", ".join(resumed),
              flush=True)
    return done


def skipped(outcome: dict) -> bool:
    """Whether a task's `rosetta run --resume` skipped its run (its earlier record held there): it exited
    0, wrote no record, and said so."""
    files = outcome["files"]
    return (outcome["returncode"] == 0
            and not any(n.startswith("records/") and n.endswith(".json") and n.count("/") == 1 for n in files)
            and runner.RESUME_SKIPPED in files.get(TASK_LOG, b"").decode("utf-8", "replace"))


def _cancel(ray, pending: dict, tracker, results: Path, checks: list = ()) -> None:
    """Ctrl-C on the driver: every task cancelled (a running one stops its `rosetta run`, which stops its
    kernel), and each run that had started recorded as interrupted, naming its node; ``checks``: the
    parity tasks, cancelled too (a parity check that did not finish leaves no record)."""
    from harness import processes

    with processes.interrupts_held():
        for ref in [*pending, *checks]:
            ray.cancel(ref)
        started = ray.get(tracker.where.remote())
        deadline = time.monotonic() + STOP_SECONDS + 15
        remaining = [*pending, *checks]
        while remaining and time.monotonic() < deadline:  # the nodes stop their kernels
            _, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=1.0)
        started = ray.get(tracker.where.remote())
        for ref, job in pending.items():
            if job.key in started:
                write_failure(results, job, "interrupted",
                              f"interrupted on the driver; the task on {_node_text(started[job.key])} was "
                              "cancelled and its run stopped", started[job.key],
                              ray.get(tracker.machine.remote(job.key)))
        print(f"cluster: {len(pending)} task(s) cancelled, {sum(j.key in started for j in pending.values())} "
              "of them started (recorded as interrupted)"
              + (f"; {len(checks)} parity check(s) stopped, leaving no record." if checks else "."),
              file=sys.stderr, flush=True)


def check(address: str) -> None:
    """Before anything starts: Ray installed, and (but for ``auto``) something listening at ``address``."""
    if address.strip().lower().startswith("ray://"):
        raise ValueError(f"--cluster {address}: Ray Client (ray://) is not supported, as the driver must be a node "
                         "of the cluster (each node runs its own checkout); run rosetta on the head (ssh, or "
                         "kubectl exec into the head pod) with --cluster auto, or from a machine that joined with "
                         "`ray start --address HOST:6379` with --cluster HOST:6379.")
    import_ray()
    if address != "auto":
        why = _reachable(address)
        if why:
            raise ValueError(f"--cluster {address}: cannot reach a Ray cluster there ({why}); expected the "
                             "address `ray start --head` printed (HOST:PORT), or auto for the cluster this "
                             "machine is a node of.")


def finished_runs(args, frameworks, results: Path, commit: str | None) -> dict:
    """For ``--resume`` across the cluster: each (framework name, benchmark, seed, accelerator type, variant)
    with an ok record that a cluster's node made with these sizes, threads, device and this clean commit,
    mapped to the newest such record (its file's name and bytes). Its task takes it to its node, whose
    `rosetta run --resume` judges it there with the same rule as on one machine (``runner.finished_runs``:
    the data's checksum and the kernel too) and skips the run, or runs it again."""
    from harness import records as found_records
    if not commit or commit.endswith("-dirty"):
        print("resume: nothing skipped, as the code version is not a clean git commit "
              f"({commit or 'no git'}); every selected notebook runs.")
        return {}
    labels = {framework.label: framework for framework in frameworks}
    device = "cuda" if args.device == "cuda" else ("cpu" if args.device == "cpu" else None)
    done = {}
    for path, run_record in found_records.read_runs(found_records.records_dir(results), warn=False):
        placed = run_record.get("cluster")
        framework = labels.get(run_record["framework"])
        if (not isinstance(placed, dict) or not placed.get("node_id") or framework is None
                or run_record["status"] != "ok" or run_record["benchmark"] not in args.benchmark):
            continue
        env = run_record.get("environment") or {}
        if (all(run_record.get(k) == v for k, v in _sizes(args, run_record["benchmark"]).items())
                and env.get("git_commit") == commit
                and env.get("threads_requested") == args.threads and (device is None or env.get("device") == device)):
            key = (framework.name, run_record["benchmark"], run_record["seed"], placed.get("accelerator"),
                   run_record.get("variant") or variants.FP32)
            if key not in done or path.name > done[key][0]:  # the newest: STAMP-NAME
                done[key] = (path.name, path.read_bytes())
    if done:
        print(f"resume: {len(done)} run(s) already have an ok record from the cluster of these sizes, threads, "
              "device and commit; each goes with its task, and its node skips the run where that record holds "
              "there as on one machine (its data checksum and kernel too), or runs it again.", flush=True)
    return done
