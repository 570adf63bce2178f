"""`rosetta` on a node of the tests' Ray cluster, with the selftest kernel (tests/test_cluster.py).

    ROSETTA_TEST_NOTEBOOKS=DIR python cluster_node_run.py COMMAND [options]     (run, parity)

Named by $ROSETTA_NODE_RUN on the nodes (harness/cluster.py), it registers the frameworks of
``register`` (their notebooks written into DIR) and runs `rosetta COMMAND` as a node would, without
an environment check and without data: the kernels read none. The driver registers the same ones.
Their notebooks have a parity step that writes no parity outputs: `rosetta parity` finds them not
equivalent ("the notebook wrote no parity outputs").

    selftest   writes an ok record at once, its data's checksum that of DIR/data.sha256 (else
               "selftest-data"), as the node's `rosetta run` finds the data (for --resume); offers the variants fp32 and channels_last (its record says it
               observed float32 and that memory format), and says bf16 is unsupported
    selfbuild  as selftest, but its environment counts as built only once DIR/selfbuild.built exists: its
               `rosetta envs` (kernels.create) writes that file and a line to DIR/selfbuild.builds, and
               builds nothing
    selfslow   writes DIR/STEM.started (its kernel's pid) and sleeps 600 s before its ok record; where
               DIR/selfslow.started exists already (a run started again), writes it at once
"""
import os
import sys
from pathlib import Path

# this checkout's harness and common, not those of the checkout the venv was installed from (editable)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for selftest
import selftest  # noqa: E402

COMMIT = "cluster-selftest"  # the commit the selftest records give (for --resume)

OK = """
import os, time
from common import machine, record, variants
variants.require(variant, ("fp32", "channels_last"), {label!r}, unsupported={{"bf16": "no bfloat16 in a selftest"}})
precision = variants.precision("float32", ["float32"], where="selftest",
                               memory_format="channels_last" if variant == "channels_last" else "channels_first")
environment = machine.capture("cpu", {{}})
environment["git_commit"] = {commit!r}
data_file = os.path.join({folder!r}, "data.sha256")  # the data's checksum, as the node's `rosetta run` finds it
data = {{"source": "path", "path": "selftest", "sha256": open(data_file).read().strip() if os.path.exists(data_file) else "selftest-data"}}
{wait}
record.write(record_path, record.build(
    framework={label!r}, api="test", benchmark="cifar", accuracy=0.25,
    timing={{"train_seconds": 1.5, "first_epoch_seconds": 1.5}}, epochs=epochs or 10, batch_size=batch_size or 64,
    train_samples=train_samples or 50000, test_samples=test_samples or 10000, seed=seed, environment=environment,
    variant=variant, precision=precision, data=data))
"""

WAIT = """
started = os.path.join({folder!r}, "selfslow.started")
if not os.path.exists(started):
    with open(started + ".part", "w") as marker:
        marker.write(str(os.getpid()))
    os.replace(started + ".part", started)
    time.sleep(600)
"""


PARITY = """
if globals().get("parity_inputs"):
    print("a selftest notebook writes no parity outputs")
"""


def register(folder: Path) -> dict:
    """The frameworks selftest and selfslow, their notebooks in ``folder``, added to the registry."""
    import nbformat
    from harness import frameworks

    made = {}
    for name, wait in (("selftest", ""), ("selfslow", WAIT.format(folder=str(folder))), ("selfbuild", "")):
        body = OK.format(commit=COMMIT, wait=wait, label=name.title(), folder=str(folder))
        path, draft = folder / f"{name}.ipynb", folder / f".{name}.{os.getpid()}.ipynb"
        made[name] = frameworks.FRAMEWORKS[name] = selftest.framework(draft, body, name=name)
        made[name].notebooks["cifar"] = str(path)
        notebook = nbformat.read(draft, as_version=4)  # the body a training step, then a parity step
        notebook.cells[1].metadata["tags"] = ["step:train"]
        notebook.cells.append(nbformat.v4.new_code_cell(PARITY.strip(), metadata={"tags": ["step:parity"]}))
        nbformat.write(notebook, draft)
        os.replace(draft, path)  # whole: a node's kernel may be reading it as another process registers
    return made


if __name__ == "__main__":
    from harness import cli, kernels

    folder = Path(os.environ["ROSETTA_TEST_NOTEBOOKS"])
    made = register(folder)
    if set(sys.argv[2:]) & set(made):  # a real framework runs as the node's `rosetta` would
        built = folder / "selfbuild.built"

        def unavailable(framework):
            if framework.name == "selfbuild" and not built.exists():
                return "its environment is not built: run `rosetta envs selfbuild`"
            return None

        def create(framework, flavour, force=False):
            print(f"building {framework.name} ({flavour} flavour): a selftest, nothing is installed", flush=True)
            with open(folder / "selfbuild.builds", "a") as builds:
                builds.write(f"{os.getpid()}\n")
            built.write_text(flavour)
            return built

        kernels.unavailable_reason, kernels.create = unavailable, create
        def load_data(args, benchmarks):  # no data: the selftest notebooks read none, and record DIR/data.sha256
            sha = folder / "data.sha256"
            return {"cifar": {"source": "path", "path": "selftest",
                              "sha256": sha.read_text().strip() if sha.exists() else "selftest-data"}}, {}

        cli.load_data = load_data
        cli.machine.git_commit = lambda: COMMIT  # as the records say (for --resume)
    sys.exit(cli.main(sys.argv[1:]))
