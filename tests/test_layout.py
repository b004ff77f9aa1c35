"""The packages' boundaries: one package reaches another only through its public names
(`flotilla.runtime` is the services' kit), never into an underscore module; and the worker's
modules import each other without a cycle."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flotilla", "gateway", "ops", "router", "schemas", "workers")


def _private_imports(source: str, own: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
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


def _module_imports(package: str) -> dict[str, set[str]]:
    """Each module of `package` and the modules of `package` it imports when it is imported
    (imports under `if TYPE_CHECKING:` and inside functions are not followed then)."""
    paths = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (ROOT / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        imported = graph.setdefault(module, set())
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from workers import _metrics` is the submodule
                    target = f"{node.module}.{alias.name}"
                    imported.add(target if target in paths else node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[module] = {name for name in imported if name in paths and name != module}
    return graph


def test_the_workers_modules_import_each_other_without_a_cycle() -> None:
    graphlib.TopologicalSorter(_module_imports("workers")).prepare()  # CycleError names it


def test_the_drawing_follows_imports_made_at_import_time_only() -> None:
    graph = _module_imports("workers")
    assert "workers._turn" in graph["workers._ops"]  # from workers._turn import TurnRunner
    assert "workers._metrics" in graph["workers._ops"]  # from workers import _metrics
    assert "workers._actor" not in graph["workers._ops"]  # under TYPE_CHECKING
    graph["workers._turn_end"].add("workers._ops")  # the cycle this layout removed
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()
