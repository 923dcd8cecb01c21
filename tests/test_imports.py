"""Issues 15 and 31: imports point down. Every module sits in one layer of :data:`LAYERS` and imports only its own
layer or lower ones; no import cycle among thce's modules and packages (module-level, function-level and
TYPE_CHECKING imports all count, and importing ``thce.a.b`` runs ``thce/a/__init__.py`` first, so it imports the
package ``thce.a`` too); neither library code nor benchmarks import the command line (thce.cli). docs/design.md
describes the layers."""

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


#: The layers, lowest first: a module (or every module of a package) named here imports only from its layer and
#: those below; the longest name that contains a module places it.
#: ``thce.detection.events`` (the event-list format) is data too: the strong-label readers read reference events.
LAYERS = (
    ("base", ("thce", "thce.errors", "thce.io", "thce.locks", "thce.progress", "thce.seeds", "thce.allocator",
              "thce.workers", "thce.distributed", "thce.config_reader", "thce.devices", "thce.machine")),
    ("signals and data", ("thce.audio", "thce.data", "thce.augment", "thce.metrics", "thce.stats", "thce.sampling",
                          "thce.results", "thce.detection.events")),
    ("networks and losses", ("thce.models", "thce.frame_models", "thce.recurrent", "thce.pretrained", "thce.encoders", "thce.losses",
                             "thce.cluster")),
    ("training", ("thce.training",)),
    ("run setup", ("thce.config", "thce.methods", "thce.reference", "thce.checkpoint", "thce.rundir", "thce.variants",
                   "thce.pretrained.frozen", "thce.run_data")),
    ("products", ("thce.experiment", "thce.repeats", "thce.sweep", "thce.join", "thce.report", "thce.figures",
                  "thce.toy", "thce.detection")),
    ("command line", ("thce.cli", "thce.__main__")),
)  # fmt: skip


def _layer(module: str) -> int | None:
    """Index in :data:`LAYERS` of ``module``'s layer; None if no entry names it (``thce`` itself names only itself)."""
    level = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in level and (n > 1 or module == "thce"):
            return level[prefix]
    return None


def _packages_of(module: str) -> set[str]:
    """The packages whose ``__init__`` runs before ``module`` (``thce.a.b`` -> thce, thce.a)."""
    parts = module.split(".")
    return {".".join(parts[:n]) for n in range(1, len(parts))}


def _graph(*, packages: bool = True) -> dict[str, set[str]]:
    """Module or package -> the thce modules and packages it imports; with ``packages``, an imported ``thce.a.b``
    adds ``thce.a`` (its ``__init__`` runs first), unless the importer is inside ``thce.a`` (initialised before it)."""
    paths = {_module_name(path): path for path in (SRC / "thce").rglob("*.py")}
    known = set(paths)
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = _imports(path, package, known)
        if packages:
            targets |= {p for t in targets for p in _packages_of(t)} & known
        own = _packages_of(name) | ({name} if path.name == "__init__.py" else set())
        graph[name] = targets - own - {name}
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


def test_the_package_graph_sees_a_loop_through_an_init():
    # thce.models importing thce.pretrained.panns runs thce/pretrained/__init__.py, which imports encoder -> models
    graph = _graph()
    assert "thce.pretrained" in graph["thce.config"]  # config imports thce.pretrained.panns
    assert "thce.pretrained" not in graph["thce.pretrained.encoder"]  # its own package: initialised before it
    fake = {**graph, "thce.models": graph["thce.models"] | {"thce.pretrained.panns", "thce.pretrained"}}
    assert _cycle(fake) is not None


def test_every_module_has_a_layer_and_imports_point_down():
    graph = _graph(packages=False)  # the imports the code makes; the packages they pass through count for cycles
    unplaced = sorted(name for name in graph if _layer(name) is None)
    assert not unplaced, f"place these in LAYERS (and docs/design.md): {unplaced}"
    upward = sorted(
        f"{name} ({LAYERS[_layer(name)][0]}) -> {target} ({LAYERS[_layer(target)][0]})"
        for name, targets in graph.items()
        for target in targets
        if _layer(target) > _layer(name)
    )
    assert not upward, upward


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
