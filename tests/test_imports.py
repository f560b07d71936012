"""No import cycle anywhere in factory/, lazy (function-level) imports included; `factory.run` (the
graph of `factory run`) is imported by the CLI alone; and the library never imports its commands."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "factory"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the factory modules it imports. `from a.b import c` is an edge to a.b.c when that is a
    module (else to a.b), as import-linter counts it: a package's __init__ re-exporting its modules is not
    a cycle with them."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_factory():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_cli_imports_the_run_graph():
    importers = sorted(name for name, targets in import_graph().items() if "factory.run" in targets)
    assert importers == ["factory.cli"]


# The command layer: the CLI, the graph of `factory run`, the commands and `factory eval`. Budgets, prices,
# manifests and the referral rule are library (factory/executor/budget.py, factory/rundir/manifest.py,
# factory/referral.py), so that no module below this layer imports one above it.
COMMAND_LAYER = ("factory.cli", "factory.run", "factory.commands", "factory.evaluation")


def in_layer(module: str, layer: tuple[str, ...]) -> bool:
    return any(module == top or module.startswith(top + ".") for top in layer)


def upward_imports(graph: dict[str, set[str]], layer: tuple[str, ...] = COMMAND_LAYER) -> list[str]:
    """'importer -> imported' for every module outside `layer` that imports one inside it."""
    return sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if not in_layer(name, layer)
        for target in targets
        if in_layer(target, layer)
    )


def test_nothing_below_the_command_layer_imports_a_command():
    graph = import_graph()
    assert "factory.commands.report" in graph and "factory.executor.budget" in graph
    assert upward_imports(graph) == []


def test_the_layer_check_finds_an_upward_import():
    graph = {"factory.session": {"factory.commands.cost"}, "factory.commands.plan": {"factory.session"},
             "factory.run": {"factory.commands.page"}}  # fmt: skip
    assert upward_imports(graph) == ["factory.session -> factory.commands.cost"]
