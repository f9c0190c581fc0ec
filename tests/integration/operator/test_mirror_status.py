"""status.mirrors and MirrorsReady against the real kube-apiserver, a real registry and a real upstream.

The upstream is CNCF Distribution (from the tool cache) with htpasswd auth; the registry is the real
`dockyard-registry serve --mirrors` whose mirror logs in with a wrong password (the same wrong password the
registry's `credentialsSecretRef` Secret holds); the operator reads that registry's `/status` through
`DOCKYARD_METRICS_URL_OVERRIDE` (this cluster has no pod network), replacing the session's operator while
the module runs.

Covers:
- before any pull, MirrorsReady is Unknown (MirrorsUnobserved) or True; status.mirrors lists the mirror;
- a pull through the mirror that the upstream refuses (wrong password) turns MirrorsReady False with reason
  MirrorUpstreamAuthFailed and a message naming the upstream and the Secret to check; status.mirrors shows
  the error (reason `auth`, its time); the upstream password is in no status field;
- with the upstream stopped, the next pull makes it MirrorUpstreamUnreachable.
"""

from __future__ import annotations

import collections.abc
import json
import subprocess
from pathlib import Path
from typing import Any

import lightkube
import lightkube.models.meta_v1
import lightkube.resources.core_v1
import pytest

from tests.integration.operator import cluster
from tests.integration.operator import conftest as operator_conftest
from tests.integration.registry import harness
from tests.integration.registry import test_mirror_real as real
from tests.support import procs

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
WRONG_PASSWORD = "not-the-Upstream-password-7"


@pytest.fixture
def upstream(tmp_path: Path) -> collections.abc.Iterator[real.Upstream]:
    """A real Distribution with htpasswd (Basic) auth; its right password is never given to Dockyard."""
    tmp = tmp_path / "distribution"
    tmp.mkdir()
    password = harness.new_password()
    htpasswd = tmp / "htpasswd"
    subprocess.run(
        [harness.require_binary("htpasswd"), "-B", "-i", "-c", str(htpasswd), real.UPSTREAM_USER],
        input=password, text=True, check=True, capture_output=True,
    )  # fmt: skip
    auth = f"htpasswd:\n  realm: upstream\n  path: {htpasswd}"
    basic = harness.Credentials(username=real.UPSTREAM_USER, password=password).basic()
    with real._distribution(tmp, auth=auth, password=password, ready={"Authorization": basic}) as up:
        yield up


def _mirrors(client: lightkube.Client, namespace: str) -> list[dict[str, Any]]:
    obj = client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
    return list(cluster.status_of(obj).get("mirrors") or [])


def test_a_wrong_upstream_password_and_a_stopped_upstream_are_clear_in_status(
    kube_client: lightkube.Client,
    namespace: str,
    observing_operator: operator_conftest.Operator,
    metrics_port: procs.Port,
    upstream: real.Upstream,
    tmp_path: Path,
) -> None:
    (tmp_path / "user").write_text(real.UPSTREAM_USER + "\n")
    (tmp_path / "pass").write_text(WRONG_PASSWORD + "\n")
    doc = {
        "mirrors": [
            {
                "prefix": "hub",
                "upstream": f"https://{upstream.address}",
                "caFile": str(upstream.tls.ca_file),
                "usernameFile": str(tmp_path / "user"),
                "passwordFile": str(tmp_path / "pass"),
            }
        ]
    }
    (tmp_path / "mirrors.yaml").write_text(json.dumps(doc))  # JSON is YAML
    kube_client.create(
        core.Secret(
            metadata=lightkube.models.meta_v1.ObjectMeta(name="hub-login", namespace=namespace),
            stringData={"username": real.UPSTREAM_USER, "password": WRONG_PASSWORD},
        )
    )
    spec = {
        "storage": {"emptyDir": {}},
        "mirrors": [
            {
                "upstream": f"https://{upstream.address}",
                "prefix": "hub",
                "credentialsSecretRef": {"name": "hub-login"},
                "wireNodes": False,
            }
        ],
    }
    metrics_port.release()  # the registry binds it now
    with harness.running_registry(
        tmp=tmp_path / "dockyard",
        tls_args=("--no-tls",),
        extra_args=[
            "--no-auth",
            "--mirrors",
            str(tmp_path / "mirrors.yaml"),
            "--metrics-listen",
            f"127.0.0.1:{metrics_port.number}",
        ],
    ) as reg:
        cluster.create_registry(kube_client, namespace=namespace, spec=spec)
        first = cluster.wait_condition(
            kube_client, "demo", namespace, "MirrorsReady", "True", match=lambda c: c["reason"] == "MirrorsOK"
        )
        assert "1 mirror" in first["message"]
        assert [m["prefix"] for m in _mirrors(kube_client, namespace)] == ["hub"]

        refused = reg.client(None).get_manifest("hub/team/app", "v1")
        assert refused.status == 502, refused.describe()
        failed = cluster.wait_condition(kube_client, "demo", namespace, "MirrorsReady", "False")
        assert failed["reason"] == "MirrorUpstreamAuthFailed"
        assert upstream.address in failed["message"] and "'hub-login'" in failed["message"]
        (shown,) = _mirrors(kube_client, namespace)
        assert shown["lastErrorReason"] == "auth" and shown["reachable"] is True
        assert shown["lastErrorTime"] and "credentials" in shown["lastError"]
        obj = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
        assert upstream.password not in json.dumps(cluster.status_of(obj), default=str)

        upstream.process.stop()
        down = reg.client(None).get_manifest("hub/team/app", "v2")
        assert down.status == 502, down.describe()
        cluster.wait_condition(
            kube_client,
            "demo",
            namespace,
            "MirrorsReady",
            "False",
            match=lambda c: c["reason"] == "MirrorUpstreamUnreachable",
        )
        (shown,) = _mirrors(kube_client, namespace)
        assert (shown["lastErrorReason"], shown["reachable"]) == ("unavailable", False)
