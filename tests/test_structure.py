"""How the harness's modules depend on each other, read from their source with ast (nothing is imported)."""
import ast
from pathlib import Path

from common import REPOSITORY

PACKAGES = ("harness", "common")
# Reading a record's file, in common.record: only harness/records.py calls these.
RECORD_READERS = {"read", "read_json", "loads", "read_limited"}
# Where another module may call them, and why: runner.execute completes the record its notebook has just
# written (the record of the run it launched), which no table reads before the runner has done so.
READERS_ALLOWED = {("harness/runner.py", "execute")}


def _modules() -> dict[str, ast.Module]:
    return {f"{package}.{path.stem}": ast.parse(path.read_text(), str(path))
            for package in PACKAGES for path in sorted((REPOSITORY / package).glob("*.py"))
            if path.stem != "__init__"}


def imports(tree: ast.Module, known) -> set[str]:
    """The modules of ``known`` that ``tree`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & set(known)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: imports(tree, modules) - {name} for name, tree in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in import order, the first again at the end), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == "open":
                return path[path.index(other):] + [other]
            if other not in state:
                found = visit(other)
                if found:
                    return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "harness.records" in graph and "harness.report" in graph["harness.compare"]  # the graph is read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_common_never_imports_the_harness():
    """The kernels import common; the harness, with its dependencies, is not in their environments."""
    graph = import_graph()
    wrong = sorted(f"{name} -> {other}" for name, others in graph.items() if name.startswith("common.")
                   for other in others if other.startswith("harness"))
    assert not wrong, wrong


def test_find_cycle_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def record_reads(tree: ast.Module) -> list[tuple[str, str]]:
    """(function, reader) for each call of ``record.READER(...)`` (``RECORD_READERS``) in ``tree``."""
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "record"
                    and node.func.attr in RECORD_READERS):
                found.append((function.name, node.func.attr))
    return found


def test_only_the_records_module_reads_record_files():
    """The tables, the side-by-side pages, parity, ONNX and --resume read records through harness/records.py."""
    wrong = []
    for path in sorted((REPOSITORY / "harness").glob("*.py")):
        where = path.relative_to(REPOSITORY).as_posix()
        if where == "harness/records.py":
            assert {reader for _, reader in record_reads(ast.parse(path.read_text()))} >= {"read", "read_json"}
            continue
        wrong += [f"{where}: {function} calls record.{reader}" for function, reader in
                  record_reads(ast.parse(path.read_text())) if (where, function) not in READERS_ALLOWED]
    assert not wrong, wrong


def test_record_reads_are_found():
    tree = ast.parse("from common import record\ndef f(path):\n    return record.read_json(path)\n"
                     "def g(path):\n    return record.write(path, {})\n")
    assert record_reads(tree) == [("f", "read_json")]
