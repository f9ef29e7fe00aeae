"""The package's shape, checked from its source: layers point one way, no import cycles, no task named outside
`hftl/tasks/`. Imports inside functions count as much as those at the top of a module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hftl"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The hftl modules `path` imports, anywhere in the file (`from a import b` counts `a.b` if it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in modules and name != "hftl"}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def test_config_imports_nothing_above_it():
    forbidden = ("hftl.tasks", "hftl.trainer", "hftl.modeling", "hftl.strategies", "hftl.recipe", "hftl.preflight")
    for module, imported in _graph().items():
        if module.startswith("hftl.config"):
            assert not [m for m in imported if m.startswith(forbidden)], module


def test_no_import_cycles():
    graph = _graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in graph.get(node, ()):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles


def test_no_task_is_named_outside_the_tasks_package():
    from hftl.tasks import task_names

    names = set(task_names())
    assert {"text-classification", "image-classification", "causal-lm", "masked-lm"} <= names
    for module, path in _modules().items():
        if module.startswith("hftl.tasks"):
            continue
        literals = [node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)]
        assert not [s for s in literals for name in names if name in s], module


def test_no_recipe_class_or_task_module_is_named_outside_the_tasks_package():
    """`from hftl import TokenClassificationRecipe` works through the registry: no list of recipes to extend."""
    import hftl
    from hftl.tasks import registered_tasks

    recipes = registered_tasks().values()
    words = {recipe.__name__ for recipe in recipes} | {recipe.__module__ for recipe in recipes}
    for module, path in _modules().items():
        if module.startswith("hftl.tasks") or module == "hftl.commands.demo":  # the demo is one text-classification run
            continue
        text = path.read_text(encoding="utf-8")
        assert not [w for w in words if re.search(rf"\b{re.escape(w)}\b", text)], module
    for recipe in recipes:
        assert getattr(hftl, recipe.__name__) is recipe and recipe.__name__ in dir(hftl)


@pytest.mark.parametrize("module", ["hftl.cli", "hftl.tasks"])
def test_start_up_modules_import_no_torch(module):
    """`hftl --help` lists the tasks: the registry and every task module must import without torch/transformers."""
    import subprocess
    import sys

    code = (f"import sys, {module}; from hftl.tasks import task_names; task_names(); "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
