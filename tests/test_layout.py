"""The packages' boundaries: one package reaches another only through its public names
(`flotilla.runtime` is the services' kit), never into an underscore module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flotilla", "gateway", "ops", "router", "schemas", "workers")


def _private_imports(source: str, own: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, where)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] in PACKAGES and parts[0] != own and any(p.startswith("_") for p in parts):
                found.append(f"{where}:{node.lineno} imports {name}")
    return found


def test_no_package_imports_another_ones_private_modules() -> None:
    found = [
        hit
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for hit in _private_imports(path.read_text(), package, str(path.relative_to(ROOT)))
    ]
    assert found == []


def test_the_check_sees_a_private_import() -> None:
    source = "from flotilla._connect import connect_nats\nimport gateway._app\nfrom . import _x\n"
    assert _private_imports(source, "workers", "w.py") == [
        "w.py:1 imports flotilla._connect",
        "w.py:2 imports gateway._app",
    ]
    assert _private_imports("from workers._actor import SessionActor\n", "workers", "w.py") == []
