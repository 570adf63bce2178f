"""docs/design.md: every reference to the design points there, and its figures are the code's."""
import functools
import re
import subprocess

import nbformat
import pytest

from common import REPOSITORY, params
from harness.frameworks import FRAMEWORKS

DESIGN = REPOSITORY / "docs" / "design.md"
OLD_NAME = "DESIGN" + ".md"  # spelled apart so that this file does not mention it


def _tracked_files() -> list:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout ({error}): no list of tracked files")
    return [REPOSITORY / name for name in listed.split("\0") if name]


def test_no_tracked_file_mentions_the_old_design_file():
    """The project's own files; results/ holds executed notebooks as their runs' commits had them."""
    files = _tracked_files()
    assert len(files) > 50 and DESIGN in files
    results = REPOSITORY / "results"
    mentioning = [str(path.relative_to(REPOSITORY)) for path in files
                  if path.is_file() and results not in path.parents and OLD_NAME in path.read_text(errors="replace")]
    assert not mentioning, f"{OLD_NAME} is mentioned in {mentioning}; the design is docs/design.md"


def _section(text: str, heading: str) -> str:
    return text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("heading, count", [("The CNN", params.CNN_PARAMETERS), ("The GRU", params.GRU_PARAMETERS)])
def test_design_states_the_parameter_counts_of_params_and_its_tables_add_up_to_them(heading, count):
    section = _section(DESIGN.read_text(), heading)
    assert f"**{count:,} parameters**" in section
    rows = [line.split("|")[-2] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    counted = [int(n.replace(",", "")) for cell in rows[1:] for n in re.findall(r"\d[\d,]*", cell)]
    assert sum(counted) == count, f"{heading}'s table adds up to {sum(counted):,}"


@pytest.mark.parametrize("framework, benchmark", [(f, b) for f in FRAMEWORKS.values() for b in f.notebooks],
                         ids=lambda value: getattr(value, "name", value))
def test_every_notebook_title_links_the_design(framework, benchmark):
    path = framework.notebook(benchmark)
    title = nbformat.read(path, as_version=4).cells[0].source
    links = re.findall(r"\]\(([^)#]*design\.md)[)#]", title)
    assert links and all((path.parent / link).resolve() == DESIGN for link in links), \
        f"{path}: the title cell does not link docs/design.md"


# Every relative link of the prose resolves: the file exists, and an #anchor is an <a id> or a heading there.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _without_code(text: str) -> str:
    """Markdown without its fenced blocks and code spans, where a bracket is not a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


@functools.lru_cache(maxsize=None)
def _anchors(path) -> set:
    """The anchors of one file, read once however many links point there."""
    from harness.report import anchor

    text = path.read_text()
    ids = set(re.findall(r"<a id=\"([^\"]+)\"></a>", text))
    headings = {anchor(line.lstrip("#").strip()) for line in _without_code(text).splitlines()
                if re.match(r"#{1,6} ", line)}
    return ids | headings


def _broken_links(sources) -> list:
    """sources: [(where, folder links are relative to, markdown)]."""
    broken = []
    for where, folder, text in sources:
        for target in LINK.findall(_without_code(text)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # http:, https:, mailto:
            name, _, fragment = target.partition("#")
            path = (folder / name).resolve() if name else where
            if not path.exists():
                broken.append(f"{where}: {target} (no such file)")
            elif fragment and (path.is_dir() or fragment not in _anchors(path)):
                broken.append(f"{where}: {target} (no anchor {fragment!r} there)")
    return broken


def _prose():
    docs = sorted((REPOSITORY / "docs").glob("*.md")) + [REPOSITORY / "README.md"]
    sources = [(path, path.parent, path.read_text()) for path in docs]
    for framework in FRAMEWORKS.values():
        for benchmark in framework.notebooks:
            path = framework.notebook(benchmark)
            sources += [(path, path.parent, cell.source) for cell in nbformat.read(path, as_version=4).cells
                        if cell.cell_type == "markdown"]
    return sources


def test_every_relative_link_in_the_docs_and_the_notebooks_resolves():
    sources = _prose()
    assert sum(len(LINK.findall(text)) for _, _, text in sources) > 100
    broken = _broken_links(sources)
    assert not broken, "broken links: " + "; ".join(broken)


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.md").write_text('<a id="here"></a>\n## A heading, in full\n')
    text = "[ok](a.md#here) [ok](a.md#a-heading-in-full) [no](b.md) [no](a.md#there) [ok](https://x.org/#y) `[no](c.md)`"
    broken = _broken_links([(tmp_path / "x.md", tmp_path, text)])
    assert len(broken) == 2 and "b.md (no such file)" in broken[0] and "no anchor 'there'" in broken[1]


def test_the_framework_notes_are_listed_in_the_readme_and_the_design():
    notes = REPOSITORY / "docs" / "frameworks.md"
    assert notes.exists()
    assert "(docs/frameworks.md)" in (REPOSITORY / "README.md").read_text()
    assert "(frameworks.md" in DESIGN.read_text()


# --- "Adding a framework" names every file an entry of the registry needs -------------------------

# Each file (or place) a framework needs, as docs/design.md's list writes it, and how to see that one
# framework of the registry has it: a list of what is missing, empty when all is there.
def _needs():
    from harness import gpus

    from common.benchmarks import BENCHMARKS

    def notebooks(f):
        paths = {b: f.notebook(b).relative_to(REPOSITORY).as_posix() for b in f.notebooks}
        stems = {re.fullmatch(rf"notebooks/{b}/(\w+)_{b.upper()}\.ipynb", path) for b, path in paths.items()}
        wrong = [path for b, path in paths.items() if not f.notebook(b).is_file()]
        if None in stems or len({m.group(1) for m in stems if m}) != 1:
            wrong.append(f"{sorted(paths.values())} (not notebooks/BENCHMARK/STEM_BENCHMARK.ipynb with one STEM)")
        return wrong

    def exists(template):
        def check(f):
            path = REPOSITORY / template.replace("ENV", f.env)
            return [] if path.is_file() else [str(path.relative_to(REPOSITORY))]
        return check

    def build_spec(f):
        present = (REPOSITORY / "harness" / "envs" / f"{f.env}-build.txt").is_file()
        return [] if present == f.build_first else [f"harness/envs/{f.env}-build.txt (build_first={f.build_first})"]

    def text(path, line):
        return lambda f: [] if line(f) in (REPOSITORY / path).read_text() else [f"{path}: {line(f)!r}"]

    frameworks_md = (REPOSITORY / "docs" / "frameworks.md").read_text()
    written_in = frameworks_md.split("## What each notebook is written in", 1)[1].split("\n## ", 1)[0]
    return {
        "notebooks/BENCHMARK/STEM_BENCHMARK.ipynb": notebooks,
        "harness/envs/ENV-cpu.txt": exists("harness/envs/ENV-cpu.txt"),
        "harness/envs/ENV-cuda.txt": exists("harness/envs/ENV-cuda.txt"),
        "harness/envs/ENV-build.txt": build_spec,
        "common/benchmarks.py": lambda f: [f"{f.notebooks[b]} is not {BENCHMARKS[b].notebook(f.stem)}"
                                           for b in f.notebooks if f.notebooks[b] != BENCHMARKS[b].notebook(f.stem)],
        "harness/frameworks.py": lambda f: [] if FRAMEWORKS.get(f.name) == f else [f"no entry {f.name!r}"],
        "docker/ENV/Dockerfile": exists("docker/ENV/Dockerfile"),
        "docker/ENV/Dockerfile.dockerignore": exists("docker/ENV/Dockerfile.dockerignore"),
        "harness/gpus.py": lambda f: [] if f.env in gpus.PROBES else [f"harness/gpus.py: no probe {f.env!r}"],
        "results/gpus/README.md": text("results/gpus/README.md", lambda f: f"| {f.label} | `{f.env}` |"),
        "README.md": text("README.md", lambda f: f"| {f.label} (`{f.name}`)"),
        "docs/frameworks.md": lambda f: ([] if re.search(rf"^(- )?\*\*{re.escape(f.label.split(' (')[0])}\*\*", written_in, re.M)
                                         else [f"docs/frameworks.md: no paragraph '**{f.label.split(' (')[0]}**'"]),
    }


def _adding_a_framework() -> str:
    return DESIGN.read_text().split("## Adding a framework\n", 1)[1].split("\n## ", 1)[0]


def test_adding_a_framework_names_every_file_the_registry_needs():
    """The design's list names each file the test knows a framework needs, names no other, and every
    framework of the registry has them all."""
    section, needs = _adding_a_framework(), _needs()
    named = {token for token in re.findall(r"`([^`\s]+)`", section) if "/" in token or token.endswith(".md")}
    assert not [need for need in needs if f"`{need}`" not in section], "not in docs/design.md's list"
    examples = ("notebooks/cifar/", "notebooks/imdb/", "results/gpus/inspection.json", "tests/")  # not needs
    assert not [token for token in named if token not in needs and not token.startswith(examples)], named
    missing = {f.name: problems for f in FRAMEWORKS.values() for need in needs.values() if (problems := need(f))}
    assert not missing, missing


def test_a_framework_without_its_files_is_caught():
    """An entry with a new environment and notebooks that do not exist misses every file of the list."""
    import dataclasses

    pytorch = FRAMEWORKS["pytorch"]
    ghost = dataclasses.replace(pytorch, name="ghost", label="Ghost", env="ghost", build_first=True, stem="Ghost",
                                notebooks={b: path.replace("PyTorch", "Gost") for b, path in pytorch.notebooks.items()})
    assert [need for need, check in _needs().items() if not check(ghost)] == []
