"""harness.phases: where a run's time went, from papermill's stamps in the executed notebook."""
import nbformat
import pytest

from harness import phases


def _stamp(seconds):
    return None if seconds is None else f"2026-12-03T10:00:{seconds:09.6f}+00:00"


def _executed(tmp_path, cells, started=0.0, ended=None):
    """An executed notebook: ``cells`` are (tags, start second, duration); papermill ended at ``ended``."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["papermill"] = {"start_time": _stamp(started), "end_time": _stamp(ended), "duration": 50.0}
    for tags, begun, duration in cells:
        cell = nbformat.v4.new_code_cell("pass", metadata={"tags": tags})
        cell.metadata["papermill"] = {"start_time": _stamp(begun), "duration": duration}
        notebook.cells.append(cell)
    path = tmp_path / "run.ipynb"
    nbformat.write(notebook, path)
    return path


CELLS = [(["step:parameters", "parameters"], 2.0, 0.01), (["injected-parameters"], 2.1, 0.01),
         (["step:imports"], 2.2, 3.0), (["step:data"], 5.2, 2.5), (["step:model"], 7.7, 0.5),
         (["step:optimiser"], 8.2, 0.3), (["step:train"], 8.5, 30.0), (["step:train"], 38.5, 1.0),
         (["step:predict"], 39.5, 4.0), (["step:evaluate"], 43.5, 0.2), (["step:parity"], 43.7, 0.1)]


def test_each_step_gets_its_cells_seconds_and_the_kernel_start_is_the_wait_for_the_first_cell(tmp_path):
    parts = phases.from_notebook(_executed(tmp_path, CELLS), harness_seconds=50.0)
    assert parts["kernel_start"] == pytest.approx(2.0)
    assert (parts["imports"], parts["data"], parts["model"], parts["optimiser"]) == (3.0, 2.5, 0.5, 0.3)
    assert parts["train"] == 31.0 and parts["predict"] == 4.0 and parts["parity"] == 0.1
    assert parts["harness"] == 50.0
    measured = sum(value for part, value in parts.items() if part not in ("harness", "other"))
    assert measured <= parts["harness"]
    assert parts["other"] == pytest.approx(50.0 - measured)  # the parts add up to the wall time
    assert phases.overhead(parts) == pytest.approx(50.0 - 31.0 - 4.0)


def test_a_harness_time_shorter_than_the_cells_leaves_no_negative_rest(tmp_path):
    parts = phases.from_notebook(_executed(tmp_path, CELLS), harness_seconds=10.0)
    assert parts["other"] == 0.0 and phases.overhead(parts) == 0.0


def test_a_notebook_without_stamps_or_missing_gives_none(tmp_path):
    assert phases.from_notebook(tmp_path / "missing.ipynb") is None
    assert phases.from_notebook(_executed(tmp_path, [(["step:imports"], None, None)])) is None
    assert phases.overhead(None) is None and phases.overhead({"train": 1.0}) is None


def test_the_kernel_stop_is_the_wait_from_the_last_cell_to_papermills_end_and_is_the_harnesss(tmp_path):
    """The last cell ends at 43.8 s and papermill at 45.0 s, once the kernel has exited: 1.2 s of
    kernel stop, counted with the kernel's start, the data and the rest as the harness's own cost,
    apart from the framework's set-up."""
    parts = phases.from_notebook(_executed(tmp_path, CELLS, ended=45.0), harness_seconds=50.0)
    assert parts["kernel_stop"] == pytest.approx(1.2)
    measured = sum(value for part, value in parts.items() if part not in ("harness", "other"))
    assert parts["other"] == pytest.approx(50.0 - measured)
    assert phases.overhead(parts) == pytest.approx(50.0 - 31.0 - 4.0)
    assert sum(parts[p] for p in phases.HARNESS) == pytest.approx(2.0 + 1.2 + 2.5 + parts["other"])
    assert sum(parts[p] for p in phases.SET_UP) == pytest.approx(3.0 + 0.5 + 0.3 + 0.2 + 0.1)
    assert set(phases.HARNESS) | set(phases.SET_UP) | set(phases.WORK) == set(phases.PARTS) | {"other"}
    assert phases.from_notebook(_executed(tmp_path, CELLS), harness_seconds=50.0)["kernel_stop"] == 0.0  # no end
