"""Environment building helpers that need no network: interpreters and linked system libraries."""
import subprocess
import sys

from harness import environments
from harness.frameworks import Framework


def test_python_version_asks_the_interpreter(tmp_path):
    assert environments.python_version(sys.executable) == "%d.%d" % sys.version_info[:2]
    assert environments.python_version(str(tmp_path / "no-python")) is None


def test_old_interpreters_get_the_last_pip_they_run():
    assert environments.newest_pip(sys.executable) == environments.LAST_PIP.get(
        "%d.%d" % sys.version_info[:2], "pip")
    assert environments.LAST_PIP["3.6"] == "pip<22"


def test_system_libraries_are_linked_under_the_names_a_framework_needs(tmp_path, monkeypatch, capsys):
    listed = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    assert "libz.so.1 " in listed  # zlib is on every machine that runs Python
    monkeypatch.setenv("ROSETTA_ENVS_DIR", str(tmp_path))
    framework = Framework(name="old", label="Old", api="t", env="old",
                          sonames={"libz.so.0": "libz.so.", "libnothing.so.7": "libnothing-at-all.so."},
                          sonames_hint="install nothing")
    environments.link_sonames(framework)
    link = environments.sonames_dir(framework) / "libz.so.0"
    assert link.is_symlink() and link.resolve().name.startswith("libz.so.")
    assert "no libnothing-at-all.so.* found; Old needs it: install nothing" in capsys.readouterr().out
    assert environments.library_folders(framework) == [str(environments.sonames_dir(framework))]
    path = environments.kernel_environment(framework)["LD_LIBRARY_PATH"]
    assert path.split(":")[0] == str(environments.sonames_dir(framework))
