"""The layers only point down (the wheel and what runs from it: tests/core/test_wheel.py).

Layers, bottom to top (ganserve.core.layers holds the table; README "Architecture" draws it):
core, training, export, serving, benchmarks, pipeline. Every import statement in the code, at module level or inside
a function, is checked against the table, and each layer is imported whole in a fresh interpreter to see what it
really pulls in (torch included).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ganserve.core.layers import ALLOWED, FOLDERS, LAYERS, layer_of

ROOT = Path(__file__).resolve().parents[2]
OLD_TOP_NAMES = ("core", "training", "export", "serving", "benchmarks", "pipeline")


def _module_name(path: Path) -> str:
    """ganserve.<stage>... for a file under one of the mapped folders."""
    rel = path.relative_to(ROOT)
    folder = rel.parts[0]
    parts = list(rel.with_suffix("").parts[1:])
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([FOLDERS[folder], *parts])


def _code_files() -> list[Path]:
    files = [p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")]
    return sorted(p for p in files if "__pycache__" not in p.parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, however deeply nested."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from ganserve import serving` names a layer through its parent package
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names if name == "ganserve"]
    return found


def test_the_table_is_a_stack() -> None:
    """Each layer may import itself and what is below it, never what is above it."""
    for i, layer in enumerate(LAYERS):
        assert layer in ALLOWED[layer]
        assert not ALLOWED[layer] & set(LAYERS[i + 1:]), layer
    assert ALLOWED["serving"] == {"core", "serving"}  # serving never reaches training or export
    assert ALLOWED["core"] == {"core"}


def test_every_import_points_down() -> None:
    files = _code_files()
    assert len(files) > 100
    wrong, old_names, edges = [], [], set()
    for path in files:
        module = _module_name(path)
        here = layer_of(module)
        assert here, f"{path}: in no layer"
        for line, name in _imports(path, module):
            top = name.split(".")[0]
            if top in OLD_TOP_NAMES:
                old_names.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
            there = layer_of(name)
            if there is None:
                continue
            edges.add((here, there))
            if there not in ALLOWED[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {name} ({there})")
    assert not wrong, "\n".join(wrong)
    assert not old_names, "\n".join(old_names)
    # The edges the layers are for are really used (a table nobody follows would pass the check above).
    assert {("training", "core"), ("export", "training"), ("serving", "core"), ("benchmarks", "serving"),
            ("pipeline", "export"), ("pipeline", "serving")} <= edges


def test_tests_use_the_one_import_name() -> None:
    old = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for line, name in _imports(path, "tests"):
            if name.split(".")[0] in OLD_TOP_NAMES:
                old.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not old, "\n".join(old)


CHECK = """
import importlib, json, pkgutil, sys
from ganserve.core.layers import layer_of
root = importlib.import_module(sys.argv[1])
names = [sys.argv[1]] + [m.name for m in pkgutil.walk_packages(root.__path__, sys.argv[1] + ".")]
for name in names:
    importlib.import_module(name)
layers = sorted({layer_of(m) for m in sys.modules if layer_of(m)})
top = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"modules": len(names), "layers": layers, "top": top}))
"""


@pytest.mark.parametrize("layer", ["core", "training", "export", "serving", "benchmarks", "pipeline"])
def test_a_fresh_interpreter_loads_only_what_the_layer_may(layer: str, tmp_path: Path) -> None:
    """Import every module of the layer; the layers in sys.modules afterwards are the allowed ones, no more."""
    result = subprocess.run([sys.executable, "-c", CHECK, f"ganserve.{layer}"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["modules"] >= 3
    assert set(seen["layers"]) <= ALLOWED[layer], (layer, seen["layers"])
    assert layer in seen["layers"]
    assert not set(seen["top"]) & set(OLD_TOP_NAMES), seen["top"]  # nothing loaded under a second name
    if layer in ("core", "serving"):
        assert "torch" not in seen["top"]
    if layer == "training":
        assert "torch" in seen["top"]  # the check sees a real third-party edge when there is one


def test_pyproject_lists_every_package_folder() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    assert {mapping[name] for name in FOLDERS.values()} == set(FOLDERS) and set(mapping) == set(FOLDERS.values())
    folders = sorted(p.parent for folder in FOLDERS for p in (ROOT / folder).rglob("__init__.py")
                     if "__pycache__" not in p.parts)
    packages = {_module_name(f / "__init__.py") for f in folders}
    assert packages == set(config["packages"])


def test_no_module_imports_itself_through_others() -> None:
    """No circles: the graph of every import statement between our modules (function-level ones included, the way
    circles used to be held apart) has no cycle. A circle is reported as the modules on it."""
    files = {_module_name(p): p for p in _code_files() if "proto" not in p.relative_to(ROOT).parts}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for _, name in _imports(path, module):
            while name and name not in files:  # `from pkg import name` names a module or something in pkg
                name = name.rpartition(".")[0]
            if name and name != module:
                graph[module].add(name)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    circles: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                circles.append(" -> ".join(path[path.index(other):] + [other]))
            elif other not in state:
                visit(other)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not circles, "\n".join(circles)
