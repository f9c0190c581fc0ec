"""Helm charts as OCI artifacts in the session registry (helm 3 `oci://`), TLS verified with `--ca-file`.

Covers:
- `helm registry login --password-stdin`, `helm push` of a packaged chart and `helm pull` back:
  the pulled .tgz is byte-identical; `helm show chart` reads it straight from the registry;
- the stored manifest is an OCI image manifest with Helm's config media type, tagged with the
  chart version — the registry accepts non-image artifacts as they are.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import support
from tests.integration.registry import harness

pytestmark = pytest.mark.integration

Helm = Callable[..., str]
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"


@pytest.fixture
def helm(registry: harness.Registry, tmp_path: Path) -> Helm:
    state = tmp_path / "helm-state"
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(state / "config"),
        "HELM_CACHE_HOME": str(state / "cache"),
        "HELM_DATA_HOME": str(state / "data"),
        "HELM_REGISTRY_CONFIG": str(state / "registry.json"),
    }

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(support.tool("helm")), *args],
            input=stdin,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, f"helm {args[0]} exited {done.returncode}: {done.stderr}"
        return done.stdout + done.stderr  # helm reports pushes on stderr

    return run


def test_helm_pushes_a_chart_and_pulls_back_the_identical_package(
    registry: harness.Registry, admin: harness.Credentials, client: harness.Client, helm: Helm, tmp_path: Path
) -> None:
    ca = ["--ca-file", str(registry.ca)]
    helm("create", "dockyard-demo")
    helm("package", "dockyard-demo", "--destination", str(tmp_path / "dist"))
    package = tmp_path / "dist" / "dockyard-demo-0.1.0.tgz"
    helm("registry", "login", registry.address, "--username", admin.username, "--password-stdin", *ca,
         stdin=admin.password)  # fmt: skip

    pushed = helm("push", str(package), f"oci://{registry.address}/charts", *ca)
    (tmp_path / "pulled").mkdir()
    helm("pull", f"oci://{registry.address}/charts/dockyard-demo", "--version", "0.1.0",
         "--destination", str(tmp_path / "pulled"), *ca)  # fmt: skip
    shown = helm("show", "chart", f"oci://{registry.address}/charts/dockyard-demo", "--version", "0.1.0", *ca)

    assert (tmp_path / "pulled" / "dockyard-demo-0.1.0.tgz").read_bytes() == package.read_bytes()
    assert "name: dockyard-demo" in shown
    digest = re.search(r"Digest: (sha256:[0-9a-f]{64})", pushed)
    assert digest, pushed
    stored = client.get_manifest("charts/dockyard-demo", "0.1.0")
    assert stored.status == 200 and harness.sha256(stored.body) == digest.group(1), stored.describe()
    assert json.loads(stored.body)["config"]["mediaType"] == HELM_CONFIG
