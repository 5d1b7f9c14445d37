"""The package's shape, read from its source with `ast`: no function longer than 80 lines, imports only downward
through the layers (docs/architecture.md), and the remote-code pair importing only what every checkpoint user has."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "mhe_transformers"
MAX_FUNCTION_LINES = 80

# Layers, lowest first: a module imports only from its own layer or lower ones. The package's __init__ (its public
# face) sits with the models it exports.
LAYERS = {
    "models": 0,
    "__init__": 0,
    "utils": 1,
    "metrics": 1,
    "data": 2,
    "hub": 3,
    "training": 4,
    "interop": 5,
    "experiments": 6,
}
REMOTE_CODE_PAIR = ("configuration_mhe.py", "modeling_mhe.py")
# What the remote-code pair may import besides the standard library and each other: transformers and the
# libraries it depends on itself, so that a checkpoint loads wherever transformers is installed.
REMOTE_CODE_IMPORTS = {"torch", "transformers", "huggingface_hub", "packaging"}


def python_files(*roots: Path) -> list[Path]:
    return sorted(path for root in roots for path in root.rglob("*.py") if "__pycache__" not in path.parts)


def function_lengths(path: Path):
    """(qualified name, lines) of every function and method in `path` ("Class.method", "outer.inner"), decorators
    and docstring included."""

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [decorator.lineno for decorator in child.decorator_list])
                yield f"{prefix}{child.name}", child.end_lineno - first + 1
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), "")


def test_no_function_is_longer_than_80_lines():
    too_long = [
        f"{path.relative_to(REPO_ROOT)}:{name} ({lines} lines)"
        for path in python_files(PACKAGE, REPO_ROOT / "scripts")
        for name, lines in function_lengths(path)
        if lines > MAX_FUNCTION_LINES
    ]
    assert not too_long, f"split these into named steps: {too_long}"


def test_the_length_check_sees_a_long_method(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"class A:\n    @decorator\n    def long(self):\n{body}\n")
    assert list(function_lengths(tmp_path / "long.py")) == [("A.long", MAX_FUNCTION_LINES + 2)]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in `path`, relative ones resolved against its package."""
    package = path.relative_to(REPO_ROOT).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
                # `from . import loop` imports a module: its name is part of the target
                targets = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            else:
                targets = [node.module]
            found += [(node.lineno, target) for target in targets]
    return found


def layer_of(module: str) -> int | None:
    """The layer of a `mhe_transformers.<subpackage>...` module, None for anything outside the package."""
    parts = module.split(".")
    if parts[0] != "mhe_transformers":
        return None
    return LAYERS["__init__" if len(parts) == 1 else parts[1]]


@pytest.mark.parametrize("path", python_files(PACKAGE), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_modules_import_only_their_own_layer_or_lower_ones(path):
    own = layer_of(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    upward = [
        f"line {line}: {module} (layer {layer_of(module)})"
        for line, module in imported_modules(path)
        if layer_of(module) is not None and layer_of(module) > own
    ]
    assert not upward, f"{path.relative_to(REPO_ROOT)} (layer {own}) imports upward: {upward}"


@pytest.mark.parametrize("name", REMOTE_CODE_PAIR)
def test_the_remote_code_pair_imports_only_torch_transformers_and_each_other(name):
    path = PACKAGE / "models" / "mhe" / name
    allowed = set(sys.stdlib_module_names) | REMOTE_CODE_IMPORTS
    pair = {f"mhe_transformers.models.mhe.{Path(other).stem}" for other in REMOTE_CODE_PAIR}
    foreign = [
        f"line {line}: {module}"
        for line, module in imported_modules(path)
        if module not in pair and module.split(".")[0] not in allowed
    ]
    assert not foreign, f"{name} is copied next to every checkpoint; it may not import {foreign}"


def test_the_import_reader_resolves_relative_imports():
    # training/loop.py imports the Hub layer relatively (`from ..hub.push import ...`): resolved, it is layer 3.
    modules = {module for _, module in imported_modules(PACKAGE / "training" / "loop.py")}
    assert "mhe_transformers.hub.push" in modules and "mhe_transformers.training.arguments" in modules
    assert layer_of("mhe_transformers.experiments.compare") == 6 and layer_of("torch") is None
