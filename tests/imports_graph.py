"""The import graph of foldconv, read from the source (every import, at module level or inside a function):
what tests/test_architecture.py checks for cycles and for imports of another module's private names.

A name imported from a package is attributed to the submodule its ``__init__`` takes it from, so that
``from ..check import Verdict`` is an edge to ``foldconv.check.verdict`` and a package never forms a cycle
with its own submodules through its re-exports.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

Edge = Tuple[str, str, str]  # (importer, imported module, name or "")


def module_names(root: Path, package: str = "foldconv") -> Dict[str, Path]:
    base = root / package
    names = {}
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _absolute(importer: str, is_package: bool, level: int, module: str) -> str:
    if level == 0:
        return module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def _reexports(modules: Dict[str, Path]) -> Dict[str, Dict[str, str]]:
    """package -> {name: submodule that defines it}, from the package's ``from .sub import name`` lines."""
    table: Dict[str, Dict[str, str]] = {}
    for name, path in modules.items():
        if path.name != "__init__.py":
            continue
        names: Dict[str, str] = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                for alias in node.names:
                    names[alias.asname or alias.name] = f"{name}.{node.module}"
        table[name] = names
    return table


def edges(root: Path, package: str = "foldconv") -> Iterator[Edge]:
    modules = module_names(root, package)
    exports = _reexports(modules)
    for importer, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == package:
                        yield importer, alias.name, ""
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(importer, is_package, node.level, node.module or "")
                if target.split(".")[0] != package:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:  # `from . import meta_cache`
                        yield importer, sub, ""
                    elif target in exports and alias.name in exports[target]:
                        yield importer, exports[target][alias.name], alias.name
                    else:
                        yield importer, target, alias.name


def cycles(root: Path, package: str = "foldconv") -> List[List[str]]:
    """Strongly connected groups of more than one module (a package's ``__init__`` re-exporting its own
    submodules is not an edge back)."""
    graph: Dict[str, Set[str]] = {}
    for importer, imported, _ in edges(root, package):
        if importer == imported or imported.startswith(importer + "."):  # a package importing its own submodules
            continue
        graph.setdefault(importer, set()).add(imported)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def private_imports(root: Path, package: str = "foldconv") -> List[str]:
    """``importer -> module._name`` for every import of a single-underscore name from another module."""
    found = []
    for importer, imported, name in edges(root, package):
        if name.startswith("_") and not name.startswith("__") and imported != importer:
            found.append(f"{importer} -> {imported}.{name}")
    return sorted(set(found))
