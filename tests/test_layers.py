"""The import graph: layers import downward only, and no module imports itself back in a cycle.

Layers, bottom first (DESIGN.md, "Layout"): a module may import from its own layer
or any layer below. Imports under ``if TYPE_CHECKING:`` are annotations only and
do not count.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "spendstream"

LAYERS: list[set[str]] = [
    {"schemas", "configfile", "settings", "batches", "data"},
    # the package root re-exports the emitter's instrument() (looked up lazily), so it sits with the emitter
    {"emitter", "kafka_admin", "localbroker", "gpu_exporter", "__init__"},
    {"pricing"},
    {"sinks"},
    {"startup", "detect", "reprice", "reconcile", "focus", "advisor", "invoices", "resale"},
    {"agents", "alerting", "report", "report_charts", "ingest"},
    {"demo", "replay"},
    {"cli", "__main__"},
]
LAYER = {part: n for n, parts in enumerate(LAYERS) for part in parts}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(every spendstream module imported, those imported at module level), outside TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
               and ast.unparse(stmt.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING") for node in ast.walk(stmt)}
    every, top = set(), set()
    top_level = {id(stmt) for stmt in tree.body}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spendstream"):
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("spendstream")]
        every.update(names)
        if id(node) in top_level:
            top.update(names)
    return every, top


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_part_of_the_package_has_a_layer() -> None:
    assert {_part(m) for m in GRAPH} <= set(LAYER), {_part(m) for m in GRAPH} - set(LAYER)


def test_layers_import_downward_only() -> None:
    upward = sorted(f"{m} -> {i}" for m, (every, _) in GRAPH.items() for i in every
                    if LAYER[_part(i)] > LAYER[_part(m)])
    assert upward == []


def test_no_import_cycles_at_module_level() -> None:
    edges = defaultdict(set)
    for module, (_, top) in GRAPH.items():
        for target in top:
            # `from spendstream.x import y` may name a module y: count the deepest module that exists
            edges[module].add(target if target in GRAPH else target.rsplit(".", 1)[0])
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(edges[module]):
            assert seen.get(target) != 1, " -> ".join([*path, module, target])
            if target not in seen and target in GRAPH:
                visit(target, [*path, module])
        seen[module] = 2

    for module in sorted(GRAPH):
        if module not in seen:
            visit(module, [])
