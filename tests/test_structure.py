"""The import structure, read from the imports as written (every ``import`` statement of the three packages,
at module level and inside functions): no circle, no module importing a package above it (its own parent
``__init__``, which imports everything), at most 8 floors, and the core at the bottom.

A floor is a step of the longest import chain: a module that imports nothing of ours is on floor 1, any other
module one floor above the highest module it imports. RecBole-GNN, the model for extending RecBole, has 5.
"""
from __future__ import annotations

import ast
import functools
import os

import recgoat_cli
import recgoat_core
import recgoat_recbole

PACKAGES = {p.__name__: os.path.dirname(p.__file__) for p in (recgoat_core, recgoat_recbole, recgoat_cli)}
MAX_FLOORS = 8


def _modules() -> dict[str, str]:
    """``{dotted module name: file}`` for every module of the three packages."""
    found = {}
    for package, folder in PACKAGES.items():
        for root, _, files in os.walk(folder):
            for name in files:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(root, name[:-3]), folder).replace(os.sep, ".")
                    module = package if rel == "__init__" else f"{package}.{rel.removesuffix('.__init__')}"
                    found[module] = os.path.join(root, name)
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: the modules of ours it imports}``; ``from package import name`` is the submodule ``name``
    where one exists, else ``package`` itself; a name that is no module of ours is an error."""
    modules = _modules()

    def resolve(name: str, where: str) -> str:
        assert name in modules, f"{where}: imports {name}, which does not exist"
        return name

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            targets |= {resolve(n, path) for n in names if n.split(".")[0] in PACKAGES}
        graph[module] = targets - {module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [m, t] if t in path else [m, t]
            if not state.get(t):
                found = visit(t, path + [m])
                if found:
                    return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if not state.get(m):
            found = visit(m, [])
            if found:
                return found
    return None


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    @functools.lru_cache(maxsize=None)
    def floor(m: str) -> int:
        return 1 + max((floor(t) for t in graph[m]), default=0)

    return {m: floor(m) for m in graph}


def test_no_import_circle():
    assert _cycle(import_graph()) is None


def test_no_import_runs_back_up_to_a_package_above():
    graph = import_graph()
    up = [f"{m} -> {t}" for m, targets in graph.items() for t in targets if m.startswith(t + ".")]
    assert up == []


def test_at_most_eight_floors_with_the_core_at_the_bottom():
    graph = import_graph()
    level = floors(graph)
    top = max(level, key=level.get)
    chain = [top]
    while graph[chain[-1]]:
        chain.append(max(graph[chain[-1]], key=level.get))
    assert level[top] <= MAX_FLOORS, " -> ".join(chain)
    # the core imports nothing above it: every core module's imports are core modules
    assert all(t.startswith("recgoat_core") for m, ts in graph.items() if m.startswith("recgoat_core") for t in ts)
    # and nothing of the adapter or the core imports the command line
    assert not [m for m, ts in graph.items() if not m.startswith("recgoat_cli") and any(
        t.startswith("recgoat_cli") for t in ts)]


def test_the_check_sees_a_circle_an_upward_import_and_a_missing_module(tmp_path, monkeypatch):
    """The checks above can fail: a toy package with each fault."""
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from toy import a\n")
    (pkg / "a.py").write_text("def f():\n    from toy import b\n")
    (pkg / "b.py").write_text("from toy.a import f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import toy\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGES"]), "PACKAGES", {"toy": str(pkg)})
    graph = import_graph()
    assert _cycle(graph) is not None
    assert "toy" in graph["toy.sub.c"]
    (pkg / "b.py").write_text("from toy.missing import f\n")
    try:
        import_graph()
    except AssertionError as exc:
        assert "toy.missing" in str(exc)
    else:
        raise AssertionError("a missing module was not reported")
