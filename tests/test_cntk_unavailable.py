"""CNTK on a machine without Python 3.6: `rosetta run cntk` records it as unavailable, and says why."""
import json

from harness import cli

REASON = "CNTK needs Python 3.6; none found (set ROSETTA_PYTHON36 or use docker/cntk)"


def test_cntk_without_python36_is_recorded_and_shown_as_unavailable(tmp_path, monkeypatch, tiny_cifar, tiny_imdb):
    monkeypatch.setenv("ROSETTA_PYTHON36", str(tmp_path / "no-such-python3.6"))
    monkeypatch.setenv("ROSETTA_ENVS_DIR", str(tmp_path / "envs"))  # empty: no CNTK environment built
    (tmp_path / "envs").mkdir()
    results = tmp_path / "results"

    status = cli.main(["run", "cntk", "--epochs", "1", "--cifar10", str(tiny_cifar), "--imdb", str(tiny_imdb),
                       "--results", str(results)])

    assert status == 1  # a run that is not ok
    records = [json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))]
    assert sorted(r["benchmark"] for r in records) == ["cifar", "imdb"]
    for r in records:
        assert (r["framework"], r["status"], r["error"]) == ("CNTK", "unavailable", REASON)
    table = (results / "README.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| CNTK |") and "**unavailable**" in line]
    assert len(rows) == 2  # one per benchmark, in its main table
    assert all(REASON in row for row in rows)
