"""Issue 15: imports point down. No import cycle among thce's modules (module-level, function-level and
TYPE_CHECKING imports all count), and neither library code nor benchmarks import the command line (thce.cli)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str, known: set[str]) -> set[str]:
    """The thce modules ``path`` imports anywhere in its text (``from thce.x import y`` counts as thce.x.y if that
    is a module, else thce.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in (SRC / "thce").rglob("*.py")}
    known = set(paths)
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = _imports(path, package, known) - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    graph = _graph()
    assert "thce.methods" in graph and "thce.training.engine" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_library_and_benchmarks_do_not_import_the_command_line():
    graph = _graph()
    library = {name: targets for name, targets in graph.items() if not name.startswith("thce.cli")}
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in library.items()
        for target in targets
        if target.startswith("thce.cli") and name != "thce.__main__"  # `python -m thce` is the command line
    )
    known = set(graph)
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        offenders += [f"{path.name} -> {t}" for t in sorted(_imports(path, "", known)) if t.startswith("thce.cli")]
    assert not offenders, offenders
