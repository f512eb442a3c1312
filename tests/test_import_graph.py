"""The package's import graph, computed from its source, has no circle.

Every ``import`` counts, wherever it stands (module level, inside a function, under
``TYPE_CHECKING``): a lazy import hides a circle from the interpreter, not from the reader.
Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so it is an edge to
each enclosing package too, except a module's own packages (already being imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "solo_fgsynth"


def _modules(root: Path) -> dict[str, Path]:
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported_names(tree: ast.AST, package: str) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (with their enclosing packages)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported in _imported_names(ast.parse(path.read_text()), package):
            while imported and imported not in modules:  # `from pkg import function`
                imported = imported.rpartition(".")[0]
            parts = imported.split(".") if imported else []
            for depth in range(1, len(parts) + 1):
                target = ".".join(parts[:depth])
                own_package = name == target or name.startswith(target + ".")
                if target in modules and not own_package:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root / "pkg"


def test_the_package_has_no_import_circle() -> None:
    assert circles(import_graph(PACKAGE_ROOT)) == []


@pytest.mark.parametrize(
    "files",
    [
        {  # a plain circle
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import thing\n",
            "pkg/b.py": "import pkg.a\n",
        },
        {  # hidden in a function and under TYPE_CHECKING
            "pkg/__init__.py": "",
            "pkg/a.py": "def f():\n    from pkg import b\n",
            "pkg/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
            ),
        },
        {  # through a package's __init__, which importing a submodule runs first
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from pkg.sub.runner import main\n",
            "pkg/sub/runner.py": "import pkg.other\n",
            "pkg/sub/metrics.py": "",
            "pkg/other.py": "from pkg.sub.metrics import score\n",
        },
    ],
    ids=["plain", "lazy-and-type-checking", "through-package-init"],
)
def test_the_graph_finds_a_circle_however_it_is_written(tmp_path: Path, files: dict) -> None:
    assert circles(import_graph(_write(tmp_path, files))) != []


def test_a_child_importing_its_own_package_is_no_circle(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.sub.leaf import value\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/leaf.py": "from pkg.sub import other\n",
            "pkg/sub/other.py": "",
        },
    )
    graph = import_graph(package)
    assert graph["pkg"] == {"pkg.sub", "pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.sub.other"}
    assert circles(graph) == []
