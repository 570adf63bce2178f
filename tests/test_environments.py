"""Environment helpers that need no network: interpreters, linked system libraries, kernels
registered from a shared environment folder, and how existing interpreters are named."""
import json
import subprocess
import sys

import pytest

from common import REPOSITORY
from harness import existing, interpreters, kernels, venvs
from harness.frameworks import FRAMEWORKS, Framework


def test_python_version_asks_the_interpreter(tmp_path):
    assert interpreters.python_version(sys.executable) == "%d.%d" % sys.version_info[:2]
    assert interpreters.python_version(str(tmp_path / "no-python")) is None


def test_old_interpreters_get_the_last_pip_they_run():
    assert interpreters.newest_pip(sys.executable) == interpreters.LAST_PIP.get(
        "%d.%d" % sys.version_info[:2], "pip")
    assert interpreters.LAST_PIP["3.6"] == "pip<22"


def test_system_libraries_are_linked_under_the_names_a_framework_needs(tmp_path, monkeypatch, capsys):
    listed = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    assert "libz.so.1 " in listed  # zlib is on every machine that runs Python
    monkeypatch.setenv("ROSETTA_ENVS_DIR", str(tmp_path))
    framework = Framework(name="old", label="Old", api="t", env="old",
                          sonames={"libz.so.0": "libz.so.", "libnothing.so.7": "libnothing-at-all.so."},
                          sonames_hint="install nothing")
    kernels.link_sonames(framework)
    link = kernels.sonames_dir(framework) / "libz.so.0"
    assert link.is_symlink() and link.resolve().name.startswith("libz.so.")
    assert "no libnothing-at-all.so.* found; Old needs it: install nothing" in capsys.readouterr().out
    assert kernels.library_folders(framework) == [str(kernels.sonames_dir(framework))]
    path = kernels.kernel_environment(framework)["LD_LIBRARY_PATH"]
    assert path.split(":")[0] == str(kernels.sonames_dir(framework))


def test_a_shared_environment_is_registered_in_a_second_clone_and_never_rebuilt(tmp_path, monkeypatch, capsys):
    """Two clones share ROSETTA_ENVS_DIR: the second registers its kernel and keeps the environment
    the first one built, also when it follows `rosetta list`'s advice."""
    from harness import cli

    framework = FRAMEWORKS["mxnet"]
    monkeypatch.setenv("ROSETTA_ENVS_DIR", str(tmp_path / "shared-envs"))
    env = venvs.env_path(framework)
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(sys.executable)
    (env / venvs.MARKER).write_text(json.dumps(venvs._fingerprint(framework, "cpu")))
    (env / "built-by-the-first-clone").write_text("")
    second = tmp_path / "second-clone" / ".venv"
    monkeypatch.setattr(kernels, "kernels_prefix", lambda: second)
    assert "not registered here: run `rosetta envs mxnet`" in kernels.unavailable_reason(framework)

    def no_build(command, what):
        raise AssertionError(f"the shared environment was rebuilt: {command}")

    monkeypatch.setattr(venvs, "_run", no_build)
    assert cli.main(["envs", "mxnet", "--flavour", "cpu"]) == 0
    assert "registered its kernel rosetta-mxnet here" in capsys.readouterr().out
    assert (env / "built-by-the-first-clone").exists()
    spec = json.loads((second / "share" / "jupyter" / "kernels" / "rosetta-mxnet" / "kernel.json").read_text())
    assert spec["argv"][0] == str(env / "bin" / "python")
    assert spec["env"]["PYTHONPATH"].split(":")[0] == str(REPOSITORY)  # this clone's code, not the first's
    assert spec["metadata"]["rosetta"]["kind"] == "built"
    assert kernels.unavailable_reason(framework) is None


def test_existing_interpreters_are_named_per_framework_environment_or_for_all(tmp_path, monkeypatch):
    selected = [FRAMEWORKS["pytorch"], FRAMEWORKS["keras-torch"], FRAMEWORKS["jax"]]
    python = sys.executable
    assert existing.existing_interpreters([python], selected) == {"pytorch": python, "jax": python}
    assert existing.existing_interpreters([f"keras-torch={python}"], selected) == {"pytorch": python}
    assert existing.existing_interpreters([f"mxnet={python}"], selected) == {"mxnet": python}
    link = tmp_path / "bin" / "python3"
    link.parent.mkdir()
    link.symlink_to(sys.executable)
    assert existing.existing_interpreters([str(link)], selected[:1]) == {"pytorch": str(link)}  # not resolved
    with pytest.raises(ValueError, match="'tensorflw' is neither a framework nor an environment"):
        existing.existing_interpreters([f"tensorflw={python}"], selected)
    with pytest.raises(ValueError, match=f"--python {tmp_path}/none: .* is not an executable interpreter"):
        existing.existing_interpreters([f"{tmp_path}/none"], selected)
    with pytest.raises(ValueError, match="the environment pytorch was given two interpreters"):
        existing.existing_interpreters([f"pytorch={python}", f"keras-torch={link}"], selected)
    monkeypatch.setenv("ROSETTA_EXISTING_PYTHON", f"jax={python} pytorch={link}")
    assert existing.from_variable() == [f"jax={python}", f"pytorch={link}"]


def test_a_wheelhouse_turns_every_install_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("ROSETTA_WHEELHOUSE", raising=False)
    assert venvs.pip_source_flags() == []
    monkeypatch.setenv("ROSETTA_WHEELHOUSE", str(tmp_path))
    assert venvs.pip_source_flags() == ["--no-index", "--find-links", str(tmp_path)]
    monkeypatch.setenv("ROSETTA_WHEELHOUSE", str(tmp_path / "missing"))
    with pytest.raises(venvs.EnvironmentBuildError, match="missing, which is not a folder"):
        venvs.pip_source_flags()
