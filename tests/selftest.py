"""Small notebooks run in a kernel of the test's own Python, for the runner and docker tests."""
import json
import os
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from harness.frameworks import Framework

KERNEL = "rosetta-selftest"

PARAMETERS = """
epochs = None
batch_size = None
train_samples = None
test_samples = None
seed = 42
device = "auto"
variant = "fp32"
data_source = None
data_dir = None
record_path = None
"""


# A notebook body that writes an ok record of the sizes it is given.
WRITE_OK = """
from common import record
record.write(record_path, record.build(
    framework="Fake", api="test", benchmark="cifar", accuracy=0.25,
    timing={"train_seconds": 1.5, "first_epoch_seconds": 1.5}, epochs=epochs or 10, batch_size=64,
    train_samples=train_samples or 50000, test_samples=10000, seed=seed))
"""

def install_kernel(folder: Path, monkeypatch) -> None:
    """Registers the kernel rosetta-selftest (this Python) under ``folder``, found through JUPYTER_PATH."""
    kernel = folder / "jupyter" / "kernels" / KERNEL
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "selftest", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(folder / "jupyter"))


def framework(path: Path, body: str, name: str = "selftest") -> Framework:
    """A framework whose cifar notebook, written to ``path``, is a parameters cell and ``body``."""
    cell = new_code_cell(PARAMETERS.strip(), metadata={"tags": ["parameters"]})
    notebook = new_notebook(cells=[cell, new_code_cell(body.strip())], metadata={
        "kernelspec": {"name": KERNEL, "display_name": "selftest", "language": "python"},
        "language_info": {"name": "python"}})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return Framework(name=name, label=name.title(), api="test", env="selftest", notebooks={"cifar": str(path)})


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rfind(")") + 2] not in "ZX"
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path("/proc").is_dir()
