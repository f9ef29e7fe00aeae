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


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name `from ..x import y` (level 2, module "x") means inside `module`."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The hftl modules `path` imports, anywhere in the file: top-level, inside functions, relative imports
    (`from a import b` counts `a.b` if it is a module), and `importlib.import_module("a.b")` with a literal."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = node.module if node.level == 0 else _absolute(module, path, node)
            if source:
                found.add(source)
                found |= {f"{source}.{alias.name}" for alias in node.names}
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return {name for name in found if name in modules and name not in ("hftl", module)}


#: the task registry imports every module of its package on first use (`hftl.tasks._discover`, with a computed
#: name no import statement shows): edges from the registry to each of them
REGISTRY = "hftl.tasks"


def _registry_edges(modules: dict[str, Path]) -> set[str]:
    return {name for name in modules if name.startswith(REGISTRY + ".") and name.count(".") == REGISTRY.count(".") + 1}


def _graph() -> dict[str, set[str]]:
    """Module -> the hftl modules it imports. A submodule's implicit import of its parent package is no edge:
    `hftl/tasks/__init__.py` imports no task module when a task module is imported, only when asked for tasks."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    graph[REGISTRY] |= _registry_edges(modules)
    return graph


def test_the_registry_edges_are_the_modules_it_imports():
    """The edges the graph adds for the registry are what it really imports: after asking for the tasks, every
    module of the package is loaded."""
    import subprocess
    import sys

    code = ("import sys; from hftl.tasks import registered_tasks; registered_tasks(); "
            f"print(sorted(m for m in sys.modules if m.startswith('{REGISTRY}.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert _registry_edges(_modules()) <= set(eval(out))  # noqa: S307 (a list of names printed above)


def test_the_graph_sees_the_imports_inside_functions(tmp_path):
    """Imports inside functions and relative imports are edges as much as top-level ones."""
    init = PACKAGE / "tasks" / "__init__.py"
    modules = _modules()
    assert _registry_edges(modules) <= _graph()[REGISTRY]
    assert "hftl.runner" in _imports("hftl.commands.train", PACKAGE / "commands" / "train.py", modules)
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from ..run_dir import RunDir\n    import hftl.errors\n", encoding="utf-8")
    assert _absolute("hftl.tasks.probe", init.parent / "probe.py",
                     ast.parse("from ..run_dir import RunDir").body[0]) == "hftl.run_dir"
    assert {"hftl.run_dir", "hftl.errors"} <= _imports("hftl.tasks.probe", module, modules)


def test_config_imports_nothing_above_it():
    forbidden = ("hftl.tasks", "hftl.trainer", "hftl.modeling", "hftl.strategies", "hftl.recipe", "hftl.preflight")
    for module, imported in _graph().items():
        if module.startswith("hftl.config"):
            assert not [m for m in imported if m.startswith(forbidden)], module


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through them."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
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
                components.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [_one_cycle(graph, component) for component in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths, queue = {start: [start]}, [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    return sorted(component)


def test_no_import_cycles():
    """No cycle, counting every import anywhere in a module and the registry's imports of the task modules. A
    task module imports `register_task` from `hftl.recipe`, never from the registry (`hftl.tasks`); the
    recipe base imports nothing above the tasks (running a recipe is `hftl.runner`'s, finding a task by name the
    registry's, the checks that need no registry `hftl.checks`')."""
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


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
