"""common.kernel_launcher: every rosetta kernel's entry point. A kernel shut down cleanly runs its
exit handlers, flushes what C libraries printed, and leaves without tearing its interpreter down."""
from __future__ import annotations

import json
import sys
import time

import pytest
from jupyter_client.manager import start_new_kernel

from common import REPOSITORY
from harness import kernels

CODE = """
import atexit, ctypes, sys
atexit.register(lambda: open({atexit!r}, "w").write("ran"))
import types
class Teardown:
    def __del__(self, open=open):
        open({teardown!r}, "w").write("torn down")
held = types.ModuleType("held_until_teardown")  # not the user's namespace, which IPython clears at exit
held.keep = Teardown()
sys.modules[held.__name__] = held
del held  # only the interpreter's teardown of sys.modules deletes it now
libc = ctypes.CDLL(None)
libc.printf(b"from C, no newline")  # C's stdout to a file is fully buffered: lost unless flushed
"""


def _kernel(tmp_path, monkeypatch, module: str) -> str:
    folder = tmp_path / "jupyter" / "kernels" / module
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", module, "-f", "{connection_file}"],
        "display_name": module, "language": "python", "env": {"PYTHONPATH": str(REPOSITORY)}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return module


def _shut_down(kernel: str, tmp_path):
    """Runs CODE in ``kernel``, shuts it down cleanly; (exit code, the files it left, its log)."""
    ran, torn, log = tmp_path / "atexit", tmp_path / "teardown", tmp_path / "kernel.log"
    with open(log, "w") as out:
        manager, client = start_new_kernel(kernel_name=kernel, stdout=out, stderr=out, cwd=str(tmp_path))
        reply = client.execute_interactive(CODE.format(atexit=str(ran), teardown=str(torn)), timeout=60)
        assert reply["content"]["status"] == "ok"
        process = manager.provisioner.process
        manager.shutdown_kernel(now=False)
        client.stop_channels()
    return process.poll(), ran.exists(), torn.exists(), log.read_text()


def test_a_clean_shutdown_runs_the_exit_handlers_flushes_c_and_skips_the_teardown(tmp_path, monkeypatch):
    code, ran, torn, log = _shut_down(_kernel(tmp_path, monkeypatch, "common.kernel_launcher"), tmp_path)
    assert code == 0 and ran  # the handlers registered in the kernel ran
    assert "from C, no newline" in log  # C's buffer reached the log
    assert not torn  # the interpreter was not torn down: that is the time saved


def test_ipykernels_own_launcher_tears_the_interpreter_down(tmp_path, monkeypatch):
    """The control: the same kernel through ipykernel_launcher deletes what sys.modules held."""
    code, ran, torn, log = _shut_down(_kernel(tmp_path, monkeypatch, "ipykernel_launcher"), tmp_path)
    assert code == 0 and ran and torn and "from C, no newline" in log


def test_every_registered_kernel_starts_through_the_launcher(tmp_path, monkeypatch):
    from harness.frameworks import FRAMEWORKS

    monkeypatch.setattr(kernels, "kernel_dir", lambda framework: tmp_path / framework.kernel)
    folder = kernels.write_kernel(FRAMEWORKS["pytorch"], "/some/python", {"kind": "built"}, {})
    argv = json.loads((folder / "kernel.json").read_text())["argv"]
    assert argv == ["/some/python", "-m", "common.kernel_launcher", "-f", "{connection_file}"]


def test_an_up_to_date_environment_whose_kernel_starts_the_old_way_is_registered_again(tmp_path, monkeypatch,
                                                                                        capsys):
    from harness import venvs
    from harness.frameworks import FRAMEWORKS

    framework = FRAMEWORKS["pytorch"]
    monkeypatch.setattr(kernels, "kernel_dir", lambda f: tmp_path / f.kernel)
    monkeypatch.setattr(venvs, "is_built", lambda f, flavour: True)
    python = str(venvs.env_python(framework))
    folder = kernels.write_kernel(framework, python, {"kind": "built", "python": python}, {})
    spec = json.loads((folder / "kernel.json").read_text())
    (folder / "kernel.json").write_text(json.dumps({**spec, "argv": [python, "-m", "ipykernel_launcher", "-f",
                                                                       "{connection_file}"]}))
    kernels.create(framework, "cpu")
    assert json.loads((folder / "kernel.json").read_text())["argv"][1:3] == ["-m", "common.kernel_launcher"]
    assert "registered its kernel" in capsys.readouterr().out
    kernels.create(framework, "cpu")  # now current: left as it is
    assert capsys.readouterr().out.strip().endswith("is up to date.")
