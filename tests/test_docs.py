"""docs/design.md: every reference to the design points there, and its figures are the code's."""
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
