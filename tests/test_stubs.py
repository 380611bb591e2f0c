"""sona/_core.pyi must describe exactly what the compiled sona._core exports.

The stub ships next to the extension (package data), so this runs against an installed wheel as
well as an in-place build. A public name on one side only, or a function whose parameter names
differ from its stub, fails here instead of drifting silently.
"""

import ast
import inspect
import types
from pathlib import Path

import pytest

import sona._core as core

STUB = Path(core.__file__).with_name("_core.pyi")


def _public(name: str) -> bool:
    return not name.startswith("_")


def _stub_tree() -> ast.Module:
    assert STUB.is_file(), f"{STUB} is missing (is it listed in package-data?)"
    return ast.parse(STUB.read_text(encoding="utf-8"), filename=str(STUB))


def _stub_members(body):
    """name -> ast node for the public functions, classes and constants of a stub body."""
    members = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            members[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    members[target.id] = node
    return {name: node for name, node in members.items() if _public(name)}


def _module_members():
    return {
        name: value
        for name, value in vars(core).items()
        if _public(name) and not isinstance(value, types.ModuleType)
    }


def _stub_params(node: ast.FunctionDef):
    a = node.args
    return [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]


def _runtime_params(func):
    params = inspect.signature(func).parameters.values()
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_module_names_match_stub():
    in_stub = set(_stub_members(_stub_tree().body))
    in_module = set(_module_members())
    assert in_module - in_stub == set(), f"exported by sona._core but missing from {STUB.name}"
    assert in_stub - in_module == set(), f"in {STUB.name} but not exported by sona._core"


def test_class_members_match_stub():
    stub = _stub_members(_stub_tree().body)
    for name, value in _module_members().items():
        if not isinstance(value, type):
            continue
        node = stub[name]
        assert isinstance(node, ast.ClassDef), f"{name} is a class at runtime, not in the stub"
        in_stub = set(_stub_members(node.body))
        in_class = {n for n in vars(value) if _public(n)}
        assert in_class - in_stub == set(), f"{name} members missing from {STUB.name}"
        assert in_stub - in_class == set(), f"{name} members in {STUB.name} but not at runtime"


def _functions():
    """(qualified name, runtime callable, stub node) for every public function and method."""
    stub = _stub_members(_stub_tree().body)
    for name, value in _module_members().items():
        node = stub.get(name)
        if isinstance(node, ast.FunctionDef):
            yield name, value, node
        elif isinstance(node, ast.ClassDef):
            for member, mnode in _stub_members(node.body).items():
                if isinstance(mnode, ast.FunctionDef) and "property" not in _decorators(mnode):
                    yield f"{name}.{member}", getattr(value, member), mnode


def _decorators(node: ast.FunctionDef):
    return {d.id for d in node.decorator_list if isinstance(d, ast.Name)}


@pytest.mark.parametrize("qualname", [q for q, _, _ in _functions()])
def test_parameter_names_match_stub(qualname):
    func, node = next((f, n) for q, f, n in _functions() if q == qualname)
    try:
        runtime = _runtime_params(func)
    except (TypeError, ValueError):
        pytest.skip(f"{qualname} exposes no signature")
    stub = _stub_params(node)
    if "classmethod" in _decorators(node):
        stub = stub[1:]  # getattr(cls, name) is bound: the runtime signature has no cls
    assert runtime == stub, f"{qualname}: runtime {runtime} vs stub {stub}"


def test_package_is_marked_typed():
    assert STUB.with_name("py.typed").is_file()
