"""The side-by-side page: steps aligned by their tags, differences marked, results on top,
and the page as a real browser lays it out."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from helpers.browser import MEASURE, browse, chromium, layout

from common import record
from harness import cli, compare
from harness.frameworks import FRAMEWORKS


def _notebook(path: Path, steps: list[str], code: dict | None = None) -> Path:
    """A notebook with a title and, per step, a markdown and a code cell tagged with it."""
    code = code or {}
    cells = [nbformat.v4.new_markdown_cell("# Title\n\nSome `text`.")]
    for name in steps:
        cells.append(nbformat.v4.new_markdown_cell(f"## {name}", metadata={"tags": [f"step:{name}"]}))
        cells.append(nbformat.v4.new_code_cell(code.get(name, f"x = '{name}'"), metadata={"tags": [f"step:{name}"]}))
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def _record(results: Path, name: str, framework: str, benchmark: str = "cifar", **fields) -> None:
    record.write(results / "records" / f"{name}.json", record.build(
        framework=framework, api="api", benchmark=benchmark, epochs=10, batch_size=64, train_samples=50_000,
        test_samples=10_000, seed=42, **fields))


def test_every_step_of_both_notebooks_is_on_one_row_in_the_tags_order(tmp_path):
    order = list(compare.STEPS[::-1])  # another order than the contract's: the first notebook's wins
    left = compare.read_notebook(_notebook(tmp_path / "a.ipynb", order))
    right = compare.read_notebook(_notebook(tmp_path / "b.ipynb", list(compare.STEPS)))
    rows = compare.align(left, right)
    assert [row.step for row in rows] == order
    for row in rows:
        assert row.left.name == row.right.name == row.step
        assert row.left.code == row.right.code == f"x = '{row.step}'"
        assert row.left.markdown == row.right.markdown == f"## {row.step}"
    assert left.title == "# Title\n\nSome `text`."


def test_the_real_notebooks_align_step_for_step():
    left, right = (compare.read_notebook(FRAMEWORKS[n].notebook("imdb")) for n in ("pytorch", "cntk"))
    rows = compare.align(left, right)
    assert [row.step for row in rows] == list(left.steps) == list(right.steps)
    assert sorted(left.steps) == sorted(compare.STEPS)
    assert all(row.left.code and row.right.code for row in rows)


def test_differing_lines_are_marked_and_the_same_ones_not():
    left = ["import numpy as np", "import torch", "x = 1", "    y = 2", "print(x)"]
    right = ["import numpy as np", "import jax", "x = 1", "y  =  2", "z = 3", "print(x)"]
    assert compare.differing_lines(left, right) == ([False, True, False, False, False],
                                                     [False, True, False, False, True, False])


def test_the_page_marks_the_lines_that_differ_and_only_those(tmp_path):
    code = compare.code_html("a = 1\n\nb = 2", [False, False, True])
    assert code.count('class="line differs"') == 1 and code.count('class="line"') == 2
    assert '<span class="line differs">' in code.split("\n")[0] and "b" in code.rsplit("line differs", 1)[1]
    # multi-line tokens (a docstring) still give one closed line of HTML per source line
    lines = compare.highlight_lines('def f():\n    """one\n    two"""\n    return 1\n')
    assert len(lines) == 4 and all(line.count("<span") == line.count("</span>") for line in lines)


def test_a_notebook_missing_a_step_is_rejected_naming_it(tmp_path):
    path = _notebook(tmp_path / "short.ipynb", [s for s in compare.STEPS if s != "parity"])
    with pytest.raises(ValueError, match=r"short\.ipynb: no cell tagged step:parity"):
        compare.read_notebook(path)
    path = _notebook(tmp_path / "odd.ipynb", list(compare.STEPS) + ["extra"])
    with pytest.raises(ValueError, match=r"odd\.ipynb: cell \d+ has the unknown tag step:extra"):
        compare.read_notebook(path)


def test_unknown_frameworks_and_wrong_counts_are_rejected(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown framework.*nosuch"):
        compare.frameworks(["pytorch", "nosuch"])
    assert cli.main(["compare", "pytorch", "nosuch", "--out", str(tmp_path)]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert cli.main(["compare", "pytorch", "--out", str(tmp_path)]) == 2
    assert "two framework names" in capsys.readouterr().err
    assert cli.main(["compare", "jax", "jax", "--out", str(tmp_path)]) == 2
    assert "two different frameworks" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_markdown_is_rendered_simply_with_links_seen_from_the_page(tmp_path):
    text = "## 7. Parity\nSee [the notes](../../docs/parity.md#adam) and **this** `a_b*c`.\n\n- one\n- *two*"
    rendered = compare.markdown_html(text, base=tmp_path / "notebooks" / "imdb", out=tmp_path / "results" / "compare")
    assert "<h3>7. Parity</h3>" in rendered
    assert '<a href="../../docs/parity.md#adam">the notes</a>' in rendered
    assert "<strong>this</strong> <code>a_b*c</code>" in rendered
    assert "<ul><li>one</li><li><em>two</em></li></ul>" in rendered


def test_the_page_shows_the_latest_results_and_links_the_notebooks(tmp_path):
    results, out = tmp_path / "results", tmp_path / "results" / "compare"
    _record(results, "1-old", "PyTorch", accuracy=0.5, timing={"train_seconds": 999.0})
    _record(results, "2-new", "PyTorch", accuracy=0.7731, timing={"train_seconds": 123.4},
            notebook="records/2-new.ipynb")
    (results / "records" / "2-new.ipynb").write_text("{}")
    _record(results, "3-imdb", "JAX (Flax)", benchmark="imdb", accuracy=0.8, timing={"train_seconds": 5.0})
    page = compare.write_page(FRAMEWORKS["pytorch"], FRAMEWORKS["jax"], "cifar", results, out).read_text()
    assert "77.3 %" in page and "123.4" in page and "999.0" not in page
    assert 'href="../records/2-new.ipynb"' in page
    assert "no record of JAX (Flax) on cifar" in page
    repository = os.path.relpath(compare.REPOSITORY, out.resolve())
    for name in ("cifar/PyTorch_CIFAR.ipynb", "cifar/JAX_CIFAR.ipynb"):
        assert f'href="{repository}/notebooks/{name}"' in page


def test_all_writes_a_page_per_pair_and_an_index_linking_them(tmp_path):
    assert cli.main(["compare", "--all", "pytorch", "jax", "gluon", "--benchmark", "imdb",
                     "--out", str(tmp_path), "--results", str(tmp_path / "none")]) == 0
    pages = sorted(p.name for p in tmp_path.glob("*-vs-*.html"))
    assert pages == ["jax-vs-gluon-imdb.html", "pytorch-vs-gluon-imdb.html", "pytorch-vs-jax-imdb.html"]
    index = (tmp_path / "index.html").read_text()
    assert all(f'href="{name}"' in index for name in pages)


# --- the page in a real browser -------------------------------------------------------------

def _check_rows(boxes: list, left, right, benchmark: str, where: str = "") -> None:
    """Every step of both notebooks on one row, the left one's cell left of the right one's,
    the rows in the order of the left notebook's tags."""
    steps = list(compare.notebook_of(left, benchmark).steps)
    assert sorted(compare.notebook_of(right, benchmark).steps) == sorted(steps)
    tops = []
    for step in steps:
        cells = {box["framework"]: box for box in boxes if box["step"] == step}
        assert set(cells) == {left.name, right.name}, f"{where} step {step}: cells of {sorted(cells)}"
        a, b = cells[left.name], cells[right.name]
        assert abs(a["top"] - b["top"]) < 1 and abs(a["height"] - b["height"]) < 1, f"{where} step {step}: {a} {b}"
        assert a["right"] <= b["left"] + 1, f"{where} step {step}: the columns overlap"
        assert a["height"] > 20, f"{where} step {step}: an empty cell"
        tops.append(a["top"])
    assert tops == sorted(tops) and len(set(tops)) == len(tops), f"{where}: rows out of the tags' order"


@pytest.fixture
def browser():
    found = chromium()
    if found is None:
        pytest.skip("no chromium found (`make chromium` installs Debian's; or set ROSETTA_CHROMIUM)")
    return found


def test_every_step_is_on_one_row_in_headless_chromium(browser, tmp_path):
    left, right = FRAMEWORKS["pytorch"], FRAMEWORKS["tensorflow"]
    results = tmp_path / "results"
    _record(results, "1", "PyTorch", accuracy=0.77, timing={"train_seconds": 100.0})
    page = compare.write_page(left, right, "cifar", results, tmp_path / "compare")
    measured = page.with_name("measured.html")
    measured.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    _check_rows(layout(browser, measured), left, right, "cifar")

    shot = tmp_path / "compare.png"
    taken = browse(browser, page, "--window-size=1400,2400", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000, taken.stderr[-2000:]


def test_every_pair_lays_out_step_for_step_in_headless_chromium(browser, tmp_path):
    """All the pages of --all, their bodies one after another in one document (one browser
    start instead of 110), each checked as above."""
    out = tmp_path / "compare"
    compare.write_all(None, ("cifar", "imdb"), tmp_path / "no-results", out)
    pages = sorted(out.glob("*-vs-*.html"))
    assert len(pages) == len(FRAMEWORKS) * (len(FRAMEWORKS) - 1)  # each pair once, for both benchmarks
    head = pages[0].read_text().split("<body>", 1)[0]
    bodies = [f'<section class="page" data-page="{p.stem}">' + p.read_text().split("<body>", 1)[1].split("</body>")[0]
              + "</section>" for p in pages]
    combined = out / "all-pages.html"
    combined.write_text(head + "<body>" + "".join(bodies) + MEASURE + "</body></html>")
    boxes = layout(browser, combined)
    for page in pages:
        left, right = (FRAMEWORKS[name] for name in page.stem.rsplit("-", 1)[0].split("-vs-"))
        _check_rows([b for b in boxes if b["page"] == page.stem], left, right, page.stem.rsplit("-", 1)[1],
                    where=page.name)


def test_text_from_a_record_is_shown_as_text_in_the_page(tmp_path):
    results, out = tmp_path / "results", tmp_path / "results" / "compare"
    hostile = "<script>alert(1)</script> | [x](http://e.example)"
    _record(results, "1-ok", "PyTorch", accuracy=0.5, timing={"train_seconds": 9.0}, variant="amp " + hostile,
            environment={"device": "cuda", "gpu": "GPU " + hostile, "versions": {}},
            differs_from_benchmark=[hostile])
    _record(results, "2-failed", "PyTorch", status="failed", error="boom " + hostile)
    page = compare.write_page(FRAMEWORKS["pytorch"], FRAMEWORKS["jax"], "cifar", results, out).read_text()
    assert "<script>" not in page and page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3
    assert "boom &lt;script&gt;" in page and "\\|" not in page  # HTML escaping, not markdown's


def test_the_lines_a_variant_adds_are_marked_apart():
    """docs/variants.md: every line a notebook adds for its variants says "variant" in a comment (or asks
    which variant runs); the page marks those lines apart from the lines that merely differ."""
    code = compare.code_html('x = model(x)\nforward = torch.compile(model) if variant == "compiled" else model\n'
                             'with autocast():  # variant bf16: bfloat16 compute\ninvariant = 1  # not a variants line',
                             [False, True, False, True])
    lines = code.split('<span class="line')[1:]
    assert [line.split('"')[0] for line in lines] == ["", " differs variant", " variant", " differs"], lines
    pytorch = compare.notebook_of(FRAMEWORKS["pytorch"], "cifar")
    marked = [line for step in pytorch.steps.values() for line in step.code.splitlines() if compare.variant_line(line)]
    assert any("torch.compile" in line for line in marked) and any("autocast" in line for line in marked)
    # no variant but fp32: only the parameter every notebook takes, and the comment over its reasons for that
    mxnet = compare.notebook_of(FRAMEWORKS["mxnet"], "cifar")
    marked = [line for step in mxnet.steps.values() for line in step.code.splitlines() if compare.variant_line(line)]
    assert [line.split()[0] for line in marked] == ["variant", "#"], marked
    assert marked[1].startswith("# Variant (docs/variants.md): fp32 alone"), marked
