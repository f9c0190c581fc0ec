"""What the shipped packages import is what `pyproject.toml` declares.

Covers:
- every third-party module imported anywhere in `dockyard_operator`, `dockyard_registry` or
  `dockyard_common` comes from a distribution named in `[project].dependencies` (not one that only happens
  to be installed as a dependency of a dependency: `httpx2` came with lightkube 1.x and was imported without
  being declared).
"""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = [
    ROOT / "operator" / "dockyard_operator",
    ROOT / "registry_image" / "dockyard_registry",
    ROOT / "common" / "dockyard_common",
]
OWN = {"dockyard_operator", "dockyard_registry", "dockyard_common"}


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normalized(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> the files importing it, for modules outside the stdlib and this project."""
    found: dict[str, set[str]] = {}
    for source in SOURCES:
        for path in source.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_third_party_module_comes_from_a_declared_distribution() -> None:
    declared = _declared()
    providers = importlib.metadata.packages_distributions()
    undeclared = {
        module: sorted(files)
        for module, files in _third_party_imports().items()
        if not {_normalized(d) for d in providers.get(module, [])} & declared
    }
    assert undeclared == {}


def test_the_import_scan_sees_the_api_client_and_its_transport() -> None:
    assert {"kopf", "lightkube", "httpx2", "aiohttp"} <= _third_party_imports().keys()
