"""The import graph of src/rmu, read with ``ast`` (imports inside functions count): no cycles.

An import ``from rmu.a import b`` is an edge to the module ``rmu.a.b`` when that file exists, else
to ``rmu.a`` (its ``__init__``). Importing a submodule also runs its package's ``__init__``; that
implicit edge is not counted (every package that re-exports its submodules would be a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(package: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of the package folder ``package``."""
    modules = {}
    for file in sorted(package.rglob("*.py")):
        parts = list(file.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = file
    return modules


def imported_modules(name: str, file: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``file`` imports anywhere (top level, functions, classes)."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from its package, one level up per extra dot
                package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {module for module in found if module in known and module != name}


def import_graph(package: Path) -> dict[str, set[str]]:
    modules = module_files(package)
    return {name: imported_modules(name, file, modules) for name, file in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan), each a set of names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_sees_imports_inside_functions(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.b import thing\n")
    (package / "a.py").write_text("import pkg.sub.b\n")
    (package / "sub" / "b.py").write_text("def thing():\n    from ..a import x\n")
    (package / "c.py").write_text("from pkg import a\n")
    graph = import_graph(package)
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.sub"] == {"pkg.sub.b"}
    assert cycles(graph) == [{"pkg.a", "pkg.sub.b"}]


def test_the_evaluation_package_has_no_import_cycle():
    graph = import_graph(SRC / "rmu")
    evaluation = {name for name in graph if name.startswith("rmu.eval")} | {
        "rmu.evaluate", "rmu.tasks", "rmu.lm_eval_backend", "rmu.cli.eval"}
    assert evaluation <= set(graph)
    assert [cycle for cycle in cycles(graph) if cycle & evaluation] == []
    # The shared modules never import a backend or the entry: the backends import them, not back.
    shared = ("rmu.eval.tasks", "rmu.eval.prompts", "rmu.eval.results", "rmu.eval.scoring")
    backends = {"rmu.eval", "rmu.eval.entry", "rmu.eval.native", "rmu.eval.lm_eval_backend"}
    assert all(not graph[name] & backends for name in shared)


def test_src_rmu_has_no_import_cycle():
    # Counting imports inside functions; the losses live below the engine (rmu.losses) for this.
    assert cycles(import_graph(SRC / "rmu")) == []
