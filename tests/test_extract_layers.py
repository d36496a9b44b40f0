"""The extract stage's modules form no import cycle (every import counted, in functions too), and import no
higher stage, configuration, pipeline or command line."""

from __future__ import annotations

import ast
from pathlib import Path

import finsae.extract

HERE = Path(finsae.extract.__file__).parent
ALLOWED = ("finsae.extract", "finsae.data", "finsae._io", "finsae._paths", "finsae.errors", "finsae.parallel")


def _imports() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in HERE.glob("*.py"):
        if path.stem == "__init__":
            continue
        found = {node.module for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("finsae")}
        found |= {alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import)
                  for alias in node.names if alias.name.startswith("finsae")}
        out[path.stem] = found
    return out


def test_extract_imports_only_lower_stages():
    bad = {m: sorted(i for i in imps if not i.startswith(ALLOWED)) for m, imps in _imports().items()}
    assert not any(bad.values()), bad


def test_extract_modules_form_no_cycle():
    graph = {m: {i.removeprefix("finsae.extract.") for i in imps if i.startswith("finsae.extract.")}
             for m, imps in _imports().items()}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle {' -> '.join((*path[path.index(node):], node))}"
        if node in done:
            return
        for dep in graph.get(node, ()):
            visit(dep, (*path, node))
        done.add(node)

    for module in graph:
        visit(module, ())
