"""Helpers the install tests share: rendering the chart with helm, and RBAC rules as comparable sets.

Must not: start anything (the control plane comes from tests/integration/conftest.py) or assert
behaviour (tests do).
"""

from __future__ import annotations

import collections.abc
import subprocess
import types
from pathlib import Path
from typing import Any

import yaml

import tests.support

ROOT = tests.support.ROOT
CHART = ROOT / "charts" / "dockyard"
DEPLOY = ROOT / "deploy"
EXAMPLES = ROOT / "examples"
# Helm's default capabilities (v1.20 in a `go install` build) are below the chart's kubeVersion.
KUBE_VERSION = "1.35.0"

# One permission: (API group, resource, verb, resourceName or "" for any name).
Grant = tuple[str, str, str, str]

# What kopf needs cluster-wide to discover CRDs and namespaces (every namespace watched; with watchNamespaces
# the operator turns kopf's scanning off and needs none of it).
KOPF_DISCOVERY_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


def helm(*args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the cached helm binary; with `check`, a failure raises with helm's stderr."""
    done = subprocess.run(
        [str(tests.support.tool("helm")), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr.strip()}")
    return done


def render(
    *,
    release: str = "dockyard",
    namespace: str = "dockyard-system",
    set_values: collections.abc.Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The chart's templates rendered by `helm template` (no CRDs), as parsed documents."""
    argv = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for value in set_values:
        argv += ["--set", value]
    return [doc for doc in yaml.safe_load_all(helm(*argv).stdout) if doc]


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single document of `kind` (and `name`); fails when there is none or more than one."""
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    )
    return found[0]


def covered(granted: set[Grant], allowed: set[Grant]) -> set[Grant]:
    """The grants of `granted` that `allowed` does not cover (a grant for any name covers one name)."""
    return {g for g in granted if g not in allowed and (*g[:3], "") not in allowed}


def grants(rules: collections.abc.Iterable[collections.abc.Mapping[str, Any]]) -> set[Grant]:
    """Expand PolicyRules into single grants, so rule lists written differently compare equal."""
    out: set[Grant] = set()
    for rule in rules:
        names = list(rule.get("resourceNames") or [""])
        for group in rule.get("apiGroups") or [""]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in names:
                        out.add((group, resource, verb, name))
    return out


def operator_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents of the operator itself (component label `operator`), without the node-trust agent's."""
    component = "app.kubernetes.io/component"
    return [d for d in docs if d["metadata"].get("labels", {}).get(component) == "operator"]


def bound_roles(docs: list[dict[str, Any]], *, account: str, namespace: str) -> list[dict[str, Any]]:
    """The ClusterRoles and Roles that the chart's bindings grant to ServiceAccount `namespace/account`."""
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    roles = []
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding") or subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        where = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        (role,) = [
            d
            for d in docs
            if d["kind"] == ref["kind"] and d["metadata"]["name"] == ref["name"]
            and d["metadata"].get("namespace") == where
        ]  # fmt: skip
        roles.append(role)
    return roles


def operator_grants(docs: list[dict[str, Any]], *, kind: str | None = None) -> set[Grant]:
    """Every grant the chart gives the operator's ServiceAccount (release dockyard in dockyard-system)."""
    roles = bound_roles(docs, account="dockyard", namespace="dockyard-system")
    return grants(rule for role in roles if kind in (None, role["kind"]) for rule in role["rules"])


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def scenario(module: types.ModuleType) -> dict[str, Any]:
    """The tests and module-level fixtures of an operator scenario module, to collect them again elsewhere.

    Placed into another test module's namespace, pytest collects them there and resolves their fixtures
    (notably `operator`) from that module's conftest, so the same scenario runs under other conditions.
    """
    return {
        name: value
        for name, value in vars(module).items()
        if (name.startswith("test_") and callable(value)) or isinstance(value, _fixture_type())
    }


def _fixture_type() -> type:
    import _pytest.fixtures  # the public API has no name for a decorated fixture function

    return _pytest.fixtures.FixtureFunctionDefinition
