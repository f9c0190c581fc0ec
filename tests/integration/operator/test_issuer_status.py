"""status.identities and Degraded IssuerUnreachable from a real registry's /status, on the real API server.

The registry is a real `dockyard-registry serve` on loopback with an identities file naming two issuers:
the control plane's own ServiceAccount issuer (read through the API server with a ServiceAccount token
under the chart's issuer-discovery binding) and an OIDC issuer nobody serves. This cluster has no pod
network, so the operator of this module reads the registry's /status through `DOCKYARD_METRICS_URL_OVERRIDE`.
Covers: status.identities lists both issuers (the Kubernetes one reachable, with its learned URL and keys);
Degraded is True with reason IssuerUnreachable naming the unreachable one; no token in status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightkube
import pytest
import yaml

from tests.integration.operator import cluster
from tests.integration.operator import conftest as operator_conftest
from tests.integration.registry import harness
from tests.support import kube, procs

pytestmark = pytest.mark.integration


def test_status_lists_token_issuers_and_degraded_names_an_unreachable_one(
    kube_client: lightkube.Client,
    control_plane: kube.ControlPlane,
    namespace: str,
    observing_operator: operator_conftest.Operator,
    metrics_port: procs.Port,
    tmp_path: Path,
) -> None:
    plane = control_plane
    cluster.issuer_discovery_binding(plane)
    plane.kubectl("create", "serviceaccount", "registry", "-n", namespace)
    own = tmp_path / "token"
    own.write_text(plane.kubectl("create", "token", "registry", "-n", namespace).stdout.strip())
    nobody = procs.reserve_port()  # reserved, never listened on: connection refused
    identities = tmp_path / "identities.yaml"
    identities.write_text(
        yaml.safe_dump(
            {
                "issuers": [
                    {
                        "name": "kubernetes",
                        "kind": "kubernetes",
                        "audience": "dockyard",
                        "apiServer": plane.server,
                        "caFile": str(plane.pki / "ca.crt"),
                        "tokenFile": str(own),
                    },
                    {"name": "dex", "url": f"http://127.0.0.1:{nobody.number}", "audience": "dockyard"},
                ]
            }
        )
    )
    spec = {
        "auth": {
            "serviceAccounts": {"rules": [{"namespace": namespace}]},
            "oidc": [{"name": "dex", "issuer": "https://dex.example", "audience": "dockyard"}],
        }
    }
    try:
        with harness.running_registry(
            tmp=tmp_path,
            extra_args=[
                "--identities",
                str(identities),
                "--metrics-listen",
                f"127.0.0.1:{metrics_port.number}",
            ],
        ):
            cluster.create_registry(kube_client, namespace=namespace, spec=spec)
            degraded = cluster.wait_condition(
                kube_client,
                "demo",
                namespace,
                "Degraded",
                "True",
                match=lambda c: c.get("reason") == "IssuerUnreachable",
            )
            assert "dex" in degraded["message"]

            def issuers() -> dict[str, Any] | None:
                obj = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
                listed = {i["name"]: i for i in cluster.status_of(obj).get("identities") or []}
                return listed if len(listed) == 2 else None

            listed = kube.eventually(issuers, what="status.identities")
            assert listed["kubernetes"]["reachable"] is True
            assert listed["kubernetes"]["issuer"] == "https://kubernetes.default.svc.cluster.local"
            assert listed["kubernetes"]["keys"] >= 1
            assert listed["dex"]["reachable"] is False
            obj = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
            assert own.read_text() not in str(cluster.status_of(obj))
    finally:
        nobody.release()
