"""Two frameworks' notebooks side by side, step by step, as a static HTML page.

    rosetta compare pytorch jax                    # results/compare/pytorch-vs-jax-BENCHMARK.html, one per benchmark
    rosetta compare pytorch jax --benchmark NAME   # one benchmark only
    rosetta compare --all [--out DIR]              # every pair, and DIR/index.html linking them
    make compare A=pytorch B=jax                   # the same through make (no A and B: --all)

Each page has one row per step of the notebook contract (the cells tagged ``step:NAME``),
in the order of the first notebook's tags: on the left the first framework's cells, on the
right the second's, each step's markdown (rendered simply) above its code (highlighted
with pygments). Code lines that have no counterpart in the other column (difflib,
whitespace ignored) are marked. Above the steps: a link to each full notebook (and to the
executed copy of its latest run, where ``results/records`` has one) and the latest results
of both frameworks, read from the records by ``harness.records`` and shown in the columns of
``harness.columns`` that the page takes.

The pages use no script and no network: open them from the disk in any browser. Links
are relative, so a page keeps working where the repository is moved, not where the page
alone is copied.

Bad input stops with a ValueError naming it: an unknown framework, or a notebook with a
step missing, a step tag this contract does not know, or a tagged cell of no step.
"""
from __future__ import annotations

import difflib
import functools
import html
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from common import REPOSITORY
from common.benchmarks import BENCHMARKS
from harness import columns, records, report
from harness.frameworks import FRAMEWORKS, Framework, select
from harness.notebooks import STEPS, cell_steps

STYLE = "default"


@dataclass
class Step:
    name: str
    markdown: str = ""
    code: str = ""


@dataclass
class Notebook:
    path: Path
    title: str            # the untagged markdown before the first step
    steps: dict           # step name -> Step, in the notebook's order


@dataclass
class Row:
    step: str
    left: Step
    right: Step
    left_differs: list    # one bool per code line of left: True where it has no counterpart
    right_differs: list


def read_notebook(path: Path) -> Notebook:
    """The title and steps of one notebook; a ValueError naming the file where a step is
    missing, unknown, or given twice on one cell."""
    notebook = nbformat.read(path, as_version=4)
    title, steps = [], {}
    for index, cell in enumerate(notebook.cells):
        tags = cell_steps(cell)
        if len(tags) > 1:
            raise ValueError(f"{path}: cell {index} has more than one step tag ({', '.join(tags)})")
        if not tags:
            if steps:  # an untagged cell after the first step belongs to the step before it
                tags = [next(reversed(steps))]
            else:
                if cell.cell_type == "markdown":
                    title.append(cell.source)
                continue
        name = tags[0]
        if name not in STEPS:
            raise ValueError(f"{path}: cell {index} has the unknown tag step:{name}; "
                             f"the steps are {', '.join(STEPS)}")
        step = steps.setdefault(name, Step(name))
        if cell.cell_type == "markdown":
            step.markdown = "\n\n".join(filter(None, [step.markdown, cell.source]))
        elif cell.cell_type == "code":
            step.code = "\n".join(filter(None, [step.code, cell.source]))
    missing = [name for name in STEPS if name not in steps]
    if missing:
        raise ValueError(f"{path}: no cell tagged step:{', step:'.join(missing)}")
    return Notebook(Path(path), "\n\n".join(title), steps)


@functools.lru_cache(maxsize=64)
def _read_cached(path: Path, modified: int) -> Notebook:
    return read_notebook(path)


def notebook_of(framework: Framework, benchmark: str) -> Notebook:
    """``read_notebook`` of the framework's notebook, read once while the file is unchanged."""
    path = framework.notebook(benchmark)
    return _read_cached(path, path.stat().st_mtime_ns)


def _normalise(line: str) -> str:
    return " ".join(line.split())


def differing_lines(left: list[str], right: list[str]) -> tuple[list[bool], list[bool]]:
    """For each line of ``left`` and of ``right``: True where difflib finds no counterpart
    in the other list (lines compared with their whitespace collapsed)."""
    left_differs, right_differs = [True] * len(left), [True] * len(right)
    matcher = difflib.SequenceMatcher(None, [_normalise(x) for x in left], [_normalise(x) for x in right],
                                      autojunk=False)
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            left_differs[block.a + offset] = False
            right_differs[block.b + offset] = False
    return left_differs, right_differs


def align(left: Notebook, right: Notebook) -> list[Row]:
    """One row per step, in the order of ``left``'s tags, each holding both notebooks' cells."""
    rows = []
    for name, step in left.steps.items():
        other = right.steps[name]
        marks = differing_lines(step.code.splitlines(), other.code.splitlines())
        rows.append(Row(name, step, other, *marks))
    return rows


@functools.lru_cache(maxsize=1024)
def highlight_lines(code: str) -> tuple[str, ...]:
    """``code`` as HTML, one string per source line, each with its spans closed."""
    if not code:
        return ()
    lexer = PythonLexer(stripnl=False, ensurenl=True)
    lines = highlight(code, lexer, HtmlFormatter(nowrap=True, style=STYLE)).split("\n")
    return tuple(lines[:len(code.splitlines())])


def _link(target: str, base: Path, out: Path) -> str:
    """A markdown link's target as seen from ``out``: relative ones are taken from ``base``."""
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):
        return target
    path, _, fragment = target.partition("#")
    moved = os.path.relpath(base / path, out)
    return moved + ("#" + fragment if fragment else "")


def _inline(text: str, base: Path, out: Path) -> str:
    parts = re.split(r"(`[^`]*`)", text)
    done = []
    for part in parts:
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            done.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part, quote=False)
        part = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)",
                      lambda m: f'<a href="{html.escape(_link(html.unescape(m[2]), base, out))}">{m[1]}</a>', part)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        part = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", part)
        done.append(part)
    return "".join(done)


def markdown_html(text: str, base: Path = REPOSITORY, out: Path = REPOSITORY) -> str:
    """A simple rendering of notebook markdown: headings, paragraphs, lists, inline code,
    bold, italics and links (relative links rewritten from ``base`` to ``out``)."""
    blocks, paragraph, items = [], [], []

    def flush():
        if paragraph:
            blocks.append(f"<p>{_inline(' '.join(paragraph), base, out)}</p>")
            paragraph.clear()
        if items:
            blocks.append("<ul>" + "".join(f"<li>{_inline(i, base, out)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        item = re.match(r"^\s*(?:[-*]|\d+\.)\s+(.*)$", line)
        if heading:
            flush()
            level = min(len(heading[1]) + 1, 6)
            blocks.append(f"<h{level}>{_inline(heading[2], base, out)}</h{level}>")
        elif not line.strip():
            flush()
        elif item and not paragraph:
            items.append(item[1])
        elif items and line.startswith((" ", "\t")):
            items[-1] += " " + line.strip()
        else:
            if items:
                flush()
            paragraph.append(line.strip())
    flush()
    return "\n".join(blocks)


# A line a variant adds (docs/variants.md): its comment says "variant", or its code asks which variant runs.
VARIANT_LINE = re.compile(r"#.*\bvariant\b|\bvariant\s*[!=]=", re.IGNORECASE)


def variant_line(line: str) -> bool:
    """Whether ``line`` is one a notebook adds for its variants (not run as it reads in the fp32 row, or
    there for a variant only), by the mark docs/variants.md asks of every such line."""
    return bool(VARIANT_LINE.search(line))


def code_html(code: str, differs: list[bool]) -> str:
    """The highlighted code of one step, each line a block, the differing ones marked, and the lines a
    variant adds marked apart (whether or not the other column has them too)."""
    if not code:
        return '<p class="none">no code</p>'
    lines = []
    for source, text, marked in zip(code.splitlines(), highlight_lines(code), differs):
        classes = "line" + (" differs" if marked else "") + (" variant" if variant_line(source) else "")
        lines.append(f'<span class="{classes}">{text or " "}</span>')
    return f'<pre class="code">{"".join(lines)}</pre>'


def page_name(left: Framework, right: Framework, benchmark: str) -> str:
    return f"{left.name}-vs-{right.name}-{benchmark}.html"


def _relative(path: Path, out: Path) -> str:
    return html.escape(os.path.relpath(path, out))


def records_frame(results: Path):
    """``report.to_frame`` of every record under ``results/records`` (``records.load_records``; none: an
    empty frame)."""
    return report.to_frame(records.load_records(results) if (results / "records").is_dir() else [])


def latest_results(framework: Framework, benchmark: str, frame):
    """The latest record(s) of ``framework`` on ``benchmark`` in ``frame`` (one per variant);
    empty where there is none."""
    if frame.empty:
        return frame
    rows = frame[(frame["framework"] == framework.label) & (frame["benchmark"] == benchmark)]
    return report.latest(rows)


def results_html(framework: Framework, benchmark: str, results: Path, out: Path, frame=None) -> str:
    """The table rows of one framework's latest results, or a row saying it has none; the measured
    columns are those of ``columns.RESULTS`` with a ``page`` heading."""
    rows = latest_results(framework, benchmark, records_frame(results) if frame is None else frame)
    label = html.escape(framework.label)
    measured = columns.page_columns()
    if rows.empty:
        return (f'<tr class="no-record"><th>{label}</th><td colspan="{len(measured) + 5}">no record of {label} on '
                f'{benchmark} in {html.escape(str(results / "records"))}</td></tr>')
    lines = []
    for _, r in rows.iterrows():
        ok = r["status"] == "ok"
        status = "ok" if ok else f'{html.escape(str(r["status"]))}: {html.escape(columns.short(r["error"]))}'
        executed = results / str(r["notebook"]) if isinstance(r.get("notebook"), str) else None
        run = (f'<a href="{_relative(executed, out)}">executed notebook</a>'
               if executed is not None and executed.is_file() else "")
        lines.append(
            f'<tr><th>{label}{"" if r["variant"] == "fp32" else " (" + html.escape(r["variant"]) + ")"}</th>'
            f'<td>{status}</td>'
            + "".join(f'<td>{html.escape(column.page_cell(r) if ok else columns.number(None, 0))}</td>'
                      for column in measured)
            + f'<td>{html.escape(columns.short(r["data"]))}</td>'
            f'<td>{html.escape(columns.short(r["device"]))}</td>'
            f'<td>{html.escape(str(r["timestamp"])[:16])}</td><td>{run}</td></tr>')
    return "\n".join(lines)


def results_header(benchmark: str) -> str:
    """The heading row of the results table on a page (``results_html``'s columns)."""
    measured = "".join(f"<th>{html.escape(column.page.format(unit=BENCHMARKS[benchmark].unit))}</th>"
                       for column in columns.page_columns())
    return (f"<tr><th>Framework</th><th>Status</th>{measured}<th>Data</th><th>Device</th>\n"
            "<th>When (UTC)</th><th>Run</th></tr>")


CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 1.5em 2em; color: #1f2328; }
h1 { font-size: 1.5em; margin: .6em 0 .2em; }
table { border-collapse: collapse; }
table.results td, table.results th { border: 1px solid #d0d7de; padding: .2em .6em; text-align: left; }
table.steps { width: 100%; table-layout: fixed; margin-top: 1em; }
table.steps > thead th { position: sticky; top: 0; background: #f6f8fa; border-bottom: 2px solid #d0d7de;
  padding: .4em .6em; text-align: left; z-index: 1; }
table.steps > tbody > tr > td { vertical-align: top; padding: .3em .6em .8em; border-top: 1px solid #d0d7de;
  width: 50%; }
td.side h2, td.side h3, td.side h4 { font-size: 1.1em; margin: .3em 0; }
td.side p, td.side ul { margin: .3em 0; }
code { background: #eff1f3; padding: 0 .2em; border-radius: 3px; font-size: 90%; }
pre.code { font: 12.5px/1.4 ui-monospace, monospace; background: #f8f8f8; padding: .4em 0; margin: .4em 0;
  white-space: pre-wrap; overflow-wrap: anywhere; border-radius: 4px; }
pre.code .line { display: block; padding: 0 .5em; border-left: 3px solid transparent; }
pre.code .line.differs { background: #fff5b1; border-left-color: #d4a72c; }
.legend .differs { background: #fff5b1; border-left: 3px solid #d4a72c; padding: 0 .4em; }
pre.code .line.variant { border-left-color: #8250df; box-shadow: inset 3px 0 0 #8250df; color: #3b2a66; }
pre.code .line.variant:not(.differs) { background: #f3effc; }
.legend .variant { background: #f3effc; border-left: 3px solid #8250df; padding: 0 .4em; }
.none { color: #656d76; font-style: italic; }
"""


def _header(framework: Framework, notebook: Notebook, out: Path) -> str:
    link = f'<a href="{_relative(notebook.path, out)}">{html.escape(notebook.path.name)}</a>'
    return f'<th data-framework="{framework.name}">{html.escape(framework.label)} · {link}</th>'


def page(left: Framework, right: Framework, benchmark: str, results: Path, out: Path, frame=None) -> str:
    """The HTML of one side-by-side page, with links relative to the folder ``out``;
    ``frame``: the records of ``results`` (``records_frame``), where already read."""
    frame = records_frame(results) if frame is None else frame
    notebooks = [notebook_of(f, benchmark) for f in (left, right)]
    rows = align(*notebooks)
    body = []
    for row in rows:
        cells = []
        for framework, notebook, step, differs in ((left, notebooks[0], row.left, row.left_differs),
                                                   (right, notebooks[1], row.right, row.right_differs)):
            cells.append(f'<td class="side" data-framework="{framework.name}" data-step="{row.step}">'
                         f'{markdown_html(step.markdown, notebook.path.parent, out)}'
                         f'{code_html(step.code, differs)}</td>')
        body.append(f'<tr class="step" id="step-{row.step}" data-step="{row.step}">{"".join(cells)}</tr>')
    titles = "".join(f'<td class="side">{markdown_html(n.title, n.path.parent, out)}</td>' for n in notebooks)
    title = f"{left.label} and {right.label}: {BENCHMARKS[benchmark].title}"
    headers = "".join(_header(f, n, out) for f, n in zip((left, right), notebooks))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}{HtmlFormatter(style=STYLE).get_style_defs("pre.code")}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>The two notebooks step by step, aligned by their <code>step:</code> tags.
<span class="legend"><span class="differs">Marked lines</span> have no counterpart in the other column;
<span class="variant">lines with a violet edge</span> are there for a variant (compiled, bf16…) and change nothing
the fp32 row computes (<a href="{html.escape(os.path.relpath(REPOSITORY / "docs" / "variants.md", out))}">variants</a>).</span></p>
<h2>Latest results</h2>
<table class="results"><thead>{results_header(benchmark)}</thead>
<tbody>{results_html(left, benchmark, results, out, frame)}{results_html(right, benchmark, results, out, frame)}</tbody></table>
<table class="steps"><thead><tr>{headers}</tr></thead>
<tbody><tr class="title">{titles}</tr>
{chr(10).join(body)}</tbody></table>
</body></html>
"""


def frameworks(names: list[str]) -> list[Framework]:
    """The frameworks named, in that order; a ValueError for an unknown one (see ``select``)."""
    if not names:
        raise ValueError("name the frameworks to compare (see `rosetta list`)")
    return select(names)


def write_page(left: Framework, right: Framework, benchmark: str, results: Path, out: Path,
               frame=None) -> Path:
    """Writes one page into ``out``; returns its path."""
    if left.name == right.name:
        raise ValueError(f"compare needs two different frameworks, got {left.name} twice")
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / page_name(left, right, benchmark)
    path.write_text(page(left, right, benchmark, results, out.resolve(), frame))
    return path


def write_all(chosen: list[Framework] | None, benchmarks, results: Path, out: Path) -> Path:
    """A page for every pair of ``chosen`` (default: every framework) and benchmark, and
    ``out/index.html`` linking them; returns the index's path."""
    chosen = chosen or list(FRAMEWORKS.values())
    frame, rows = records_frame(results), []
    for left, right in itertools.combinations(chosen, 2):
        links = [f'<td><a href="{write_page(left, right, b, results, out, frame).name}">{BENCHMARKS[b].title}</a></td>'
                 for b in benchmarks]
        rows.append(f"<tr><th>{html.escape(left.label)}</th><th>{html.escape(right.label)}</th>{''.join(links)}</tr>")
    index = out / "index.html"
    index.write_text(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dl-rosetta: side by side</title>
<style>{CSS}</style></head><body>
<h1>Every pair of frameworks, side by side</h1>
<p>{len(rows)} pairs; each page puts the two notebooks next to each other, step by step.</p>
<table class="results"><thead><tr><th>Left</th><th>Right</th>{''.join(f'<th>{b}</th>' for b in benchmarks)}</tr></thead>
<tbody>{chr(10).join(rows)}</tbody></table>
</body></html>
""")
    return index
