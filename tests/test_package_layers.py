"""The import direction between the packages of ``matta_rec``.

Packages form layers, lowest first; a module may import its own package and
any package below it, never one above (function-level imports included, so
a cycle cannot hide inside a function).  ``docs/design.md`` explains the
order; ``pipelines/`` and ``bench/`` may import anything.
"""

import ast
import os

import matta_rec

ORDER = ("errors", "utils", "metrics", "data", "features", "layers", "models", "optimizers",
         "training", "export", "evaluation", "cli")
PACKAGE = os.path.dirname(matta_rec.__file__)


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, PACKAGE)[:-3].split(os.sep)
                yield path, rel


def _imports(path, rel):
    """``(line, module)`` of every absolute and relative import in the file."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    here = ["matta_rec", *rel[:-1]]  # the package the module is in
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module


def _layer(rel):
    top = rel[0]
    return None if top == "__init__" else top


def test_every_module_belongs_to_a_known_layer():
    unknown = sorted({rel[0] for _, rel in _modules() if _layer(rel) and _layer(rel) not in ORDER})
    assert not unknown, f"packages missing from the layer order {ORDER}: {unknown}"


def test_no_import_points_up_the_layer_order():
    rank = {name: i for i, name in enumerate(ORDER)}
    upward = []
    for path, rel in _modules():
        layer = _layer(rel)
        if layer is None:
            continue
        for line, module in _imports(path, rel):
            parts = module.split(".")
            if parts[0] != "matta_rec" or len(parts) < 2:
                continue
            if parts[1] not in rank:
                upward.append(f"{os.path.relpath(path, PACKAGE)}:{line} imports unknown {module}")
            elif rank[parts[1]] > rank[layer]:
                upward.append(f"{os.path.relpath(path, PACKAGE)}:{line} ({layer}) imports {module}")
    assert not upward, "imports against the package order:\n" + "\n".join(upward)


def test_the_check_sees_function_level_imports(tmp_path):
    """The walker must find an import nested in a function (guards the guard)."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from matta_rec.cli import main\n")
    assert (2, "matta_rec.cli") in list(_imports(str(source), ["data", "m"]))


#: The longest a function of the package may be, ``def`` to last line, docstring included.
MAX_FUNCTION_LINES = 120


def test_no_function_is_longer_than_the_limit():
    long = []
    for path, _ in _modules():
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{os.path.relpath(path, PACKAGE)}:{node.lineno} "
                                f"{node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
