"""The commit a record carries: git's, else the checkout's COMMIT file; results/ never makes it dirty."""
import subprocess

import pytest

from common import machine

HASH = "0123456789abcdef0123456789abcdef01234567"


def _git(folder, *args):
    done = subprocess.run(["git", "-C", str(folder), "-c", "user.name=Test", "-c", "user.email=test@example.org",
                           *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repository(tmp_path, monkeypatch):
    """A git repository with a tracked code file and a tracked results/README.md, as the checkout's REPOSITORY."""
    folder = tmp_path / "checkout"
    (folder / "results").mkdir(parents=True)
    (folder / "common").mkdir()
    (folder / "common" / "code.py").write_text("x = 1\n")
    (folder / "results" / "README.md").write_text("# Results\n")
    _git(folder, "init", "-q")
    _git(folder, "add", ".")
    _git(folder, "commit", "-q", "-m", "start")
    monkeypatch.setattr(machine, "REPOSITORY", folder)
    return folder


def test_a_clean_tree_gives_the_commit(repository):
    assert machine.git_commit() == _git(repository, "rev-parse", "HEAD")


def test_changed_results_do_not_make_the_tree_dirty(repository):
    (repository / "results" / "README.md").write_text("# Results\n\nrewritten by a report\n")
    (repository / "results" / "records").mkdir()
    (repository / "results" / "records" / "new.json").write_text("{}")  # untracked: never counted
    assert machine.git_commit() == _git(repository, "rev-parse", "HEAD")


def test_the_readmes_results_block_rewritten_does_not_make_the_tree_dirty(repository):
    """`rosetta report` rewrites the top-level README's results block after a suite; the runs that follow
    (make cpu-tables' next stage) ran the same code."""
    (repository / "README.md").write_text("# dl-rosetta\n")
    _git(repository, "add", "README.md")
    _git(repository, "commit", "-q", "-m", "readme")
    (repository / "README.md").write_text("# dl-rosetta\n\n- results rewritten by a report\n")
    assert machine.git_commit() == _git(repository, "rev-parse", "HEAD")


@pytest.mark.parametrize("changed", ["common/code.py", "results.py", "docs/README.md"])
def test_changed_code_makes_the_tree_dirty(repository, changed):
    (repository / changed).parent.mkdir(exist_ok=True)
    (repository / changed).write_text("x = 2\n")
    if changed in ("results.py", "docs/README.md"):  # tracked: a name that starts like the folder, another README
        _git(repository, "add", changed)
        _git(repository, "commit", "-q", "-m", "more")
        (repository / changed).write_text("x = 3\n")
    assert machine.git_commit() == _git(repository, "rev-parse", "HEAD") + "-dirty"


def test_git_is_asked_before_the_commit_file(repository):
    (repository / "COMMIT").write_text(HASH + "\n")
    assert machine.git_commit() == _git(repository, "rev-parse", "HEAD")


@pytest.fixture
def copy(tmp_path, monkeypatch):
    """A checkout copied without .git (not inside any repository), as the checkout's REPOSITORY."""
    folder = tmp_path / "copy"
    folder.mkdir()
    monkeypatch.setattr(machine, "REPOSITORY", folder)
    return folder


@pytest.mark.parametrize("written", [HASH, HASH + "\n", HASH + "-dirty\n"])
def test_a_copy_without_git_reads_its_commit_file(copy, written):
    (copy / "COMMIT").write_text(written)
    assert machine.git_commit() == written.strip()


def test_a_copy_without_git_and_without_commit_file_has_no_commit(copy):
    assert machine.git_commit() is None


def test_without_git_installed_the_commit_file_says(copy, monkeypatch):
    (copy / "COMMIT").write_text(HASH + "\n")
    monkeypatch.setenv("PATH", str(copy / "no-such-folder"))  # no git on the PATH
    assert machine.git_commit() == HASH


def test_a_copy_inside_another_repository_does_not_take_its_commit(repository, monkeypatch):
    inner = repository / "unpacked"
    inner.mkdir()
    monkeypatch.setattr(machine, "REPOSITORY", inner)
    assert machine.git_commit() is None
    (inner / "COMMIT").write_text(HASH + "-dirty\n")
    assert machine.git_commit() == HASH + "-dirty"


@pytest.mark.parametrize("written", ["abc123\n", HASH.upper() + "\n", HASH + "-modified\n", HASH + "\n" + HASH + "\n", ""])
def test_a_malformed_commit_file_is_reported_and_not_used(copy, written, capsys):
    (copy / "COMMIT").write_text(written)
    assert machine.git_commit() is None
    message = capsys.readouterr().err
    assert str(copy / "COMMIT") in message and repr(written) in message
    assert "40 hexadecimal digits" in message and "-dirty" in message


def test_the_commit_file_is_not_tracked():
    from common import REPOSITORY

    assert "/COMMIT" in (REPOSITORY / ".gitignore").read_text().splitlines()
