"""Package layout and layering rules that keep the operator testable.

Covers:
- `import operator` is the standard library's module (operator/ is a source root, not a package);
- only kube.py and handlers.py (and the node trust agent process) import kopf or lightkube;
- builders, policies, conditions, crypto, model, crd,
  names and diff import none of kopf, lightkube, aiohttp or the kube module;
- every module opens with a docstring.
"""

from __future__ import annotations

import ast
import operator
import pathlib
import sysconfig

import dockyard_operator

PACKAGE = pathlib.Path(dockyard_operator.__file__).parent
# The only modules that talk to the API: the operator's kube/handlers pair, and the node trust agent (a
# separate process on every node that reports on its own Pod).
IO_MODULES = {"kube.py", "handlers.py", "nodetrust/agent.py"}
PURE = {
    "model.py",
    "crd.py",
    "names.py",
    "diff.py",
    "policies.py",
    "conditions.py",
    "crypto.py",
    "settings.py",
}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_operator_is_the_standard_library_module() -> None:
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert pathlib.Path(operator.__file__).resolve().parent == stdlib


def test_only_kube_and_handlers_import_kopf_or_lightkube() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in _modules()
        if str(path.relative_to(PACKAGE)) not in IO_MODULES and _imports(path) & {"kopf", "lightkube"}
    ]
    assert offenders == []


def test_builders_and_pure_modules_do_no_io() -> None:
    forbidden = {
        "kopf",
        "lightkube",
        "aiohttp",
        "httpx2",
        "dockyard_operator.kube",
        "dockyard_operator.reconcile",
    }
    pure = [p for p in _modules() if p.parent.name == "builders" or p.name in PURE]
    assert len(pure) > 10
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(_imports(p) & forbidden) for p in pure if _imports(p) & forbidden
    }
    assert offenders == {}


def test_every_module_starts_with_a_docstring() -> None:
    missing = [
        str(p.relative_to(PACKAGE)) for p in _modules() if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []
