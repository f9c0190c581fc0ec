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
- with the upstream stopped, the next pull makes it MirrorUpstreamUnreachable;
- the mirror's CA file (mounted like kubelet mounts the `caSecretRef` key) swapped for one that cannot be
  loaded: pulls still work, status.mirrors shows the registry's `caError` and MirrorsReady stays True with
  reason MirrorCABundleInvalid naming the Secret; the good CA back clears both.
"""

from __future__ import annotations

import collections.abc
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import lightkube
import lightkube.models.meta_v1
import lightkube.resources.core_v1
import pytest

from tests.integration.operator import cluster
from tests.integration.operator import conftest as operator_conftest
from tests.integration.registry import certs, harness, images
from tests.integration.registry import test_mirror_ca_rotation as rotation
from tests.integration.registry import test_mirror_real as real
from tests.support import procs

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
WRONG_PASSWORD = "not-the-Upstream-password-7"


@pytest.fixture
def upstream(tmp_path: Path) -> collections.abc.Iterator[real.Upstream]:
    """A real Distribution with htpasswd (Basic) auth; its right password is never given to Dockyard."""
    tmp = tmp_path / "distribution"
    auth, password, basic = _htpasswd_auth(tmp)
    with real._distribution(tmp, auth=auth, password=password, ready={"Authorization": basic}) as up:
        yield up


def _htpasswd_auth(directory: Path) -> tuple[str, str, str]:
    """A new upstream password in an htpasswd file in `directory` (created): Distribution's `auth` block
    for it, the password, and its Basic Authorization header value."""
    directory.mkdir()
    password = harness.new_password()
    htpasswd = directory / "htpasswd"
    subprocess.run(
        [harness.require_binary("htpasswd"), "-B", "-i", "-c", str(htpasswd), real.UPSTREAM_USER],
        input=password, text=True, check=True, capture_output=True,
    )  # fmt: skip
    auth = f"htpasswd:\n  realm: upstream\n  path: {htpasswd}"
    return auth, password, harness.Credentials(username=real.UPSTREAM_USER, password=password).basic()


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


def test_a_ca_bundle_that_cannot_be_loaded_is_named_while_the_mirror_stays_ready(
    kube_client: lightkube.Client,
    namespace: str,
    observing_operator: operator_conftest.Operator,
    metrics_port: procs.Port,
    tmp_path: Path,
) -> None:
    up_dir = tmp_path / "distribution"
    auth, password, basic = _htpasswd_auth(up_dir)
    tls = certs.write_server_tls(directory=tmp_path / "tls", ips=["127.0.0.1"])
    good_ca = tls.ca_file.read_bytes()
    mount = rotation.CaMount(tmp_path / "ca-secret", good_ca)
    (tmp_path / "user").write_text(real.UPSTREAM_USER + "\n")
    (tmp_path / "pass").write_text(password + "\n")
    with real._distribution(
        up_dir, auth=auth, password=password, ready={"Authorization": basic}, tls=tls
    ) as up:
        crane = real._crane(env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "upcfg"),
                                 "SSL_CERT_FILE": str(tls.ca_file)})  # fmt: skip
        crane(
            "auth", "login", up.address, "--username", real.UPSTREAM_USER, "--password-stdin", stdin=password
        )
        img = images.random_image(label="ca-status", layer_count=1, layer_size=1024)
        real._push(crane, img=img, ref=f"{up.address}/team/app:v1", tmp=tmp_path)
        doc = {"mirrors": [{"prefix": "hub", "upstream": f"https://{up.address}", "tagTTL": 0,
                            "caFile": str(mount.ca_file), "usernameFile": str(tmp_path / "user"),
                            "passwordFile": str(tmp_path / "pass")}]}  # fmt: skip
        (tmp_path / "mirrors.yaml").write_text(json.dumps(doc))
        kube_client.create(
            core.Secret(
                metadata=lightkube.models.meta_v1.ObjectMeta(name="hub-ca", namespace=namespace),
                stringData={"ca.crt": good_ca.decode()},
            )
        )
        spec = {
            "storage": {"emptyDir": {}},
            "mirrors": [
                {
                    "upstream": f"https://{up.address}",
                    "prefix": "hub",
                    "caSecretRef": {"name": "hub-ca"},
                    "wireNodes": False,
                }
            ],
        }
        metrics_port.release()  # the registry binds it now (the module's earlier registry has let it go)
        status_url = f"http://127.0.0.1:{metrics_port.number}/status"
        with harness.running_registry(
            tmp=tmp_path / "dockyard",
            tls_args=("--no-tls",),
            extra_args=["--no-auth", "--mirrors", str(tmp_path / "mirrors.yaml"),
                        "--metrics-listen", f"127.0.0.1:{metrics_port.number}"],
        ) as reg:  # fmt: skip
            client = reg.client(None)
            cluster.create_registry(kube_client, namespace=namespace, spec=spec)
            assert client.get_manifest("hub/team/app", "v1").status == 200
            cluster.wait_condition(
                kube_client,
                "demo",
                namespace,
                "MirrorsReady",
                "True",
                match=lambda c: c["reason"] == "MirrorsOK",
            )

            mount.swap(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
            harness.wait_for(
                "the registry to report the broken CA file (it looks at most every 5 s, before a request)",
                lambda: (
                    client.get_manifest("hub/team/app", "v1").status == 200
                    and rotation._status(status_url)["caError"] is not None
                ),
                timeout=60,
            )
            assert client.get_manifest("hub/team/app", "v1").status == 200  # answered: lastError is older
            named = cluster.wait_condition(
                kube_client,
                "demo",
                namespace,
                "MirrorsReady",
                "True",
                match=lambda c: c["reason"] == "MirrorCABundleInvalid",
            )
            assert "Secret 'hub-ca' (key 'ca.crt') cannot be loaded" in named["message"], named
            assert str(mount.ca_file) in named["message"], named
            (shown,) = _mirrors(kube_client, namespace)
            assert "cannot load the CA bundle" in shown["caError"] and shown["reachable"] is True, shown

            mount.swap(good_ca)
            harness.wait_for(
                "the registry to load the good CA file again",
                lambda: (
                    client.get_manifest("hub/team/app", "v1").status == 200
                    and rotation._status(status_url)["caError"] is None
                ),
                timeout=60,
            )
            cluster.wait_condition(
                kube_client,
                "demo",
                namespace,
                "MirrorsReady",
                "True",
                match=lambda c: c["reason"] == "MirrorsOK",
            )
            (shown,) = _mirrors(kube_client, namespace)
            assert "caError" not in shown, shown
