"""The package's layering, read from its own imports (docs/development.md draws it).

Floors, from the bottom: the leaves (``errors``, ``reasons``, ``redact``, ``tuples``) import
nothing of the package; the core (``core`` and the stages it calls: ``auth`` with ``dpop``,
``request``, ``response``, ``events``, the store protocol ``stores/base``, ``adapter``, the
base every adapter stands on, and the CIBA family's routes ``ciba/answers``) imports only the
core and the leaves; each store backend imports only the leaves and ``stores/``; adapters and
tools (the WSGI middleware, the framework glue, ``config``, ``cli``, ...) sit on top. A
framework is imported only by the one module made for it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GRANTS

import ciba_middleware

PACKAGE = Path(ciba_middleware.__file__).parent
LEAVES = {"errors", "reasons", "redact", "tuples"}
CORE = {"core", "adapter", "auth", "dpop", "request", "response", "events", "stores", "stores.base", "ciba.answers"}
#: The adapters: each a translation of its server's request and answer, on the one base.
ADAPTERS = ("middleware", "asgi", "django")
#: Modules that exist to glue the package to one framework, and that framework.
FRAMEWORK_GLUE = {"flask": "flask", "django": "django", "asgi": "starlette"}
FRAMEWORKS = ("flask", "django", "starlette", "fastapi")


def _modules() -> dict[str, Path]:
    """Every module of the package, by its name below ``ciba_middleware`` (``stores.redis``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    found.pop("", None)
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports when it is imported (not under TYPE_CHECKING,
    not inside functions), by their names below ``ciba_middleware``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("ciba_middleware."):
                        found.add(alias.name.removeprefix("ciba_middleware."))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                elif node.module and node.module.startswith("ciba_middleware"):
                    target = node.module.removeprefix("ciba_middleware").lstrip(".")
                else:
                    continue
                modules = _modules()
                for alias in node.names:
                    sub = f"{target}.{alias.name}" if target else alias.name
                    found.add(sub if sub in modules else target)

    visit(tree.body)
    found.discard("")
    return found


GRAPH = {name: _imports(name, path) for name, path in _modules().items()}


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_the_leaves_import_nothing_of_the_package(name: str) -> None:
    assert GRAPH[name] == set()


@pytest.mark.parametrize("name", sorted(CORE))
def test_the_core_imports_only_the_core_and_the_leaves(name: str) -> None:
    assert GRAPH[name] - CORE - LEAVES == set()


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if n.startswith("stores.")))
def test_a_store_imports_only_stores_and_the_leaves(name: str) -> None:
    assert {m for m in GRAPH[name] if not m.startswith("stores")} - LEAVES == set()


@pytest.mark.parametrize("name", ADAPTERS)
def test_every_adapter_stands_on_the_base(name: str) -> None:
    assert "adapter" in GRAPH[name]


def test_only_the_command_lines_import_the_cli() -> None:
    """``python -m ciba_middleware`` and ``manage.py ciba``; no library module borrows from it."""
    assert sorted(name for name, imports in GRAPH.items() if "cli" in imports) == [
        "__main__",
        "django.management.commands.ciba",
    ]


def test_there_is_no_import_cycle() -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done:
            return
        for imported in GRAPH.get(name, ()):
            # A package's __init__ importing its own submodules is not a cycle.
            if not imported.startswith(name + "."):
                visit(imported, (*path, name))
        done.add(name)

    for name in GRAPH:
        visit(name, ())


def test_no_module_but_its_glue_imports_a_framework() -> None:
    """Import every module but the framework glue, in a fresh interpreter: no framework loads."""
    names = [f"ciba_middleware.{n}" for n in GRAPH if n.split(".")[0] not in FRAMEWORK_GLUE and n != "__main__"]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    # wsgi.py builds the application when imported: give it a configuration.
    env = {**os.environ, "CIBA_TOKENS": json.dumps(GRANTS), "CIBA_STORE_URL": "memory://", "CIBA_AUDIT_LOG": "off"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, env=env
    )
    assert result.stdout == "[]\n"
    assert len(names) >= 20


def test_the_observers_do_not_import_each_other() -> None:
    """The audit log and the metrics both read events; neither borrows from the other."""
    assert "metrics" not in GRAPH["audit"]
    assert "audit" not in GRAPH["metrics"]
