"""The engine's modules import one another in one direction only: no cycle, counting imports inside functions and
under TYPE_CHECKING, so any module can be imported first and the layers read top to bottom (DESIGN.md section 1)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "lamp_engine"


def module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> set[str]:
    """The modules an import statement runs, with the packages above them, less those above the importer (Python
    runs a package's __init__ before any of its modules, so those are never a cycle of their own)."""
    if isinstance(node, ast.Import):
        targets = {alias.name for alias in node.names}
    else:
        package = importer if is_package else importer.rpartition(".")[0]
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        targets = {base} | {f"{base}.{alias.name}" for alias in node.names}
    above_importer = {importer.rsplit(".", n)[0] for n in range(1, importer.count(".") + 1)}
    found = set()
    for target in targets:
        parts = target.split(".")
        found |= {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
    return found - above_importer - {importer}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in ENGINE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= imported(node, name, path.name == "__init__.py")
        graph[name] = edges & paths.keys()
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself, with the path back (depth-first search)."""
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return found


def test_the_engine_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "lamp_engine.prompts.lamp" in graph and "lamp_engine.backbones.base" in graph["lamp_engine.prompts.base"]
    assert cycles(graph) == []


def test_the_walk_finds_a_cycle_through_a_function_local_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    tree = ast.parse("def f():\n    from lamp_engine.backbones import offline\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert imported(node, "lamp_engine.aliases", False) == {"lamp_engine.backbones", "lamp_engine.backbones.offline"}


def test_torch_free_layers_import_nothing_of_the_engine_above_them() -> None:
    """aliases.py (the family and the alias table) imports nothing of the engine, so every layer can read it."""
    graph = import_graph()
    assert graph["lamp_engine.aliases"] == set()
