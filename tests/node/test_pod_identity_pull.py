"""Pods pull from Dockyard with their own ServiceAccount identity: no pull Secret, no anonymous pull.

The node's kubelet (1.35) runs `dockyard-credential-provider` for `localhost:30501` with KEP-4412's
`tokenAttributes` (tests/node/pod_identity.py has the exact CredentialProviderConfig; docs/security.md
shows it): for each pull it requests a token of the Pod's ServiceAccount for the registry's audience,
bound to the Pod, and passes it to the provider, which answers it as the Basic password for that host.

Steps (each failure names its step; the report carries every component's and Pod's log):
1. nodes may request tokens for the registry's audience (ServiceAccountNodeAudienceRestriction, on by
   default: a ClusterRole with verb `request-serviceaccounts-token-audience` bound to system:nodes);
   `helm install` the chart;
2. a `PrivateRegistry` on NodePort 30501 with node trust, a push user, and
   `spec.auth.serviceAccounts` granting pull to exactly one ServiceAccount (`idapps/puller`); no
   `pullSecrets`, no anonymous pull;
3. an image with per-run content (never one the node has) is pushed with the push user's password;
   without credentials the registry refuses it (401);
4. in a namespace with no Secret at all and ServiceAccounts without imagePullSecrets, a Pod of
   `puller` (no imagePullSecrets, `imagePullPolicy: Always`) runs the image;
   containerd's token request carries the provider's user name (`serviceaccount`, in nginx's log);
5. a Pod of `stranger` (same namespace, not granted) cannot pull it: its token is valid but grants
   nothing, the registry answers 403, and the Pod's events show the failed pull (`403 Forbidden`);
6. negative control: with the node's audience binding removed, the kubelet's token request for a Pod of
   `puller` is refused by NodeRestriction (the kubelet logs it), the kubelet pulls with no credentials
   and the registry refuses that (401);
7. `kubectl delete preg` (the node's certs.d entries for it are withdrawn before the agent goes), `helm
   uninstall`, the RBAC removed.
"""

from __future__ import annotations

import base64
import collections.abc
import contextlib
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

import tests.support
from dockyard_operator import names
from tests.node import pod_identity
from tests.support import cluster, kube

pytestmark = [pytest.mark.integration, pytest.mark.node, pytest.mark.timeout(1200)]

RELEASE, SYSTEM = "dockyard", "dockyard-system"
TEAM, APPS = pod_identity.REGISTRY_NAMESPACE, "idapps"
REGISTRY = pod_identity.REGISTRY
HOST = pod_identity.HOST
IMAGE_TAG = "dev"
APP = f"{HOST}/apps/hello:1"
BUSYBOX_IMAGE = "localhost/dockyard/busybox:stable"
GREETING = "pulled with my own identity"
N = names.Names.of(REGISTRY)


@contextlib.contextmanager
def step(name: str) -> collections.abc.Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"step '{name}' failed: {exc}") from None


def _run(*argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _apply(node: cluster.Cluster, *objects: dict[str, Any]) -> None:
    node.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def _json(node: cluster.Cluster, *args: str) -> Any:
    return json.loads(node.kubectl(*args, "-o", "json").stdout)


def _pod(name: str, service_account: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": APPS},
        "spec": {
            "serviceAccountName": service_account,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": APP, "imagePullPolicy": "Always"}],
        },
    }


def _waiting_reasons(node: cluster.Cluster, name: str) -> list[str]:
    pod = _json(node, "get", "pod", name, "-n", APPS)
    states = [s["state"].get("waiting") or {} for s in pod["status"].get("containerStatuses") or []]
    return [w.get("reason", "") for w in states]


def _pull_failures(node: cluster.Cluster, name: str) -> list[str]:
    events = _json(node, "get", "events", "-n", APPS, "--field-selector", f"involvedObject.name={name}")
    return [
        e.get("message", "")
        for e in events["items"]
        if e.get("reason") == "Failed" and "failed to pull" in e.get("message", "").lower()
    ]


def _certs_entries() -> dict[str, set[str]]:
    return {str(d): {p.name for p in d.iterdir()} if d.is_dir() else set() for d in cluster.CERTS_DIRS}


def _build_image(tmp: Path) -> None:
    context = tmp / "app"
    context.mkdir()
    (context / "greeting.txt").write_text(GREETING + "\n")
    (context / "build-id").write_text(secrets.token_hex(16))  # never identical to an image on the node
    (context / "Containerfile").write_text(
        f"FROM {BUSYBOX_IMAGE}\nCOPY greeting.txt /srv/greeting.txt\nCOPY build-id /srv/build-id\n"
        'CMD ["sh", "-c", "cat /srv/greeting.txt; exec sleep 3600"]\n'
    )
    _run(
        "podman", "--events-backend=file", "build", "--pull=never", "-q",
        "-t", "localhost/dockyard-e2e/identity-app:1", str(context), timeout=600,
    )  # fmt: skip


def test_a_pod_pulls_with_its_service_account_identity_and_a_stranger_is_refused(
    node: cluster.Cluster, tmp_path: Path
) -> None:
    env = {**os.environ, "KUBECONFIG": str(node.kubeconfig)}
    helm = str(tests.support.tool("helm"))
    rbac = pod_identity.node_audience_rbac()
    before = _certs_entries()

    with step("nodes may request the registry's audience; helm install"):
        _apply(node, *rbac)
        _run(
            helm, "upgrade", "--install", RELEASE, str(tests.support.ROOT / "charts" / "dockyard"),
            "--namespace", SYSTEM, "--create-namespace",
            "--set", "image.repository=ghcr.io/dockyard-dev/dockyard-operator",
            "--set", f"image.tag={IMAGE_TAG}",
            "--set", "image.pullPolicy=Never",
            "--set", f"registry.image=ghcr.io/dockyard-dev/dockyard-registry:{IMAGE_TAG}",
            "--set", "registry.nginxImage=localhost/dockyard/nginx:bookworm",
            "--wait", "--timeout=5m",
            env=env, timeout=400,
        )  # fmt: skip

    with step("a PrivateRegistry granting pull to one ServiceAccount"):
        push_password = secrets.token_urlsafe(18)
        for namespace in (TEAM, APPS):
            node.kubectl("create", "namespace", namespace)
        _apply(
            node,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "ci-push", "namespace": TEAM},
                "stringData": {"password": push_password},
            },
            *(
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": APPS}}
                for sa in ("puller", "stranger")
            ),
        )
        node.host_volume(name=f"{TEAM}-{N.pvc}", size="2Gi", uid=65532, gid=65532, claim=(TEAM, N.pvc))
        spec = {
            "expose": {"type": "NodePort", "nodePort": pod_identity.NODE_PORT},
            "nodeTrust": {"enabled": True},
            "storage": {"pvc": {"size": "1Gi", "storageClassName": ""}},
            "auth": {
                "users": [{"name": "ci", "access": "push", "passwordSecretRef": {"name": "ci-push"}}],
                "serviceAccounts": {"rules": [{"namespace": APPS, "name": "puller", "access": "pull"}]},
            },
        }
        _apply(
            node,
            {
                "apiVersion": "dockyard.dev/v1alpha1",
                "kind": "PrivateRegistry",
                "metadata": {"name": REGISTRY, "namespace": TEAM},
                "spec": spec,
            },
        )
        for condition in ("Ready", "NodeTrustReady"):
            node.kubectl(
                "wait", f"--for=condition={condition}", f"preg/{REGISTRY}", "-n", TEAM, "--timeout=300s",
                timeout=330,
            )  # fmt: skip

    ca = base64.b64decode(
        node.kubectl("get", "secret", N.tls_secret, "-n", TEAM, "-o", "jsonpath={.data.ca\\.crt}").stdout
    )
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(ca)

    with step("push an image with the push user's password; anonymous pulls refused"):

        def answers() -> bool:
            probe = node.inside(
                "curl", "-s", "--cacert", str(certs / "ca.crt"), "-m", "5", "-o", "/dev/null",
                "-w", "%{http_code}", f"https://{HOST}/v2/", check=False,
            )  # fmt: skip
            return probe.stdout == "401"

        kube.eventually(answers, timeout=60, what=f"{HOST} to answer on the node")
        _build_image(tmp_path)
        node.inside(
            "skopeo", "copy", "--quiet", "--dest-cert-dir", str(certs), "--dest-creds", f"ci:{push_password}",
            "containers-storage:localhost/dockyard-e2e/identity-app:1", f"docker://{APP}", timeout=300,
        )  # fmt: skip
        anonymous = node.inside(
            "skopeo", "inspect", "--raw", "--cert-dir", str(certs), "--no-creds", f"docker://{APP}",
            check=False,
        )  # fmt: skip
        assert anonymous.returncode != 0, anonymous.stdout
        assert "unauthorized" in anonymous.stderr.lower() or "401" in anonymous.stderr, anonymous.stderr

    with step("a Pod of the granted ServiceAccount pulls with no pull Secret anywhere"):
        secrets_there = _json(node, "get", "secrets", "-n", APPS)["items"]
        assert secrets_there == [], [s["metadata"]["name"] for s in secrets_there]
        for account in _json(node, "get", "serviceaccounts", "-n", APPS)["items"]:
            assert not account.get("imagePullSecrets"), account
        _apply(node, _pod("granted", "puller"))

        def running() -> bool:
            reasons = _waiting_reasons(node, "granted")
            assert not {"ErrImagePull", "ImagePullBackOff"} & set(reasons), (
                reasons,
                _pull_failures(node, "granted"),
            )
            return bool(_json(node, "get", "pod", "granted", "-n", APPS)["status"].get("phase") == "Running")

        kube.eventually(running, timeout=180, what="Pod granted Running")
        kube.eventually(
            lambda: GREETING in node.kubectl("logs", "granted", "-n", APPS, check=False).stdout,
            timeout=60,
            what="the image's greeting in the Pod's log",
        )
        assert not _json(node, "get", "pod", "granted", "-n", APPS)["spec"].get("imagePullSecrets")
        # What containerd sent came from the provider: its user name `serviceaccount` (nginx logs it, and
        # never a password) on the token request of that pull.
        nginx_log = node.kubectl(
            "logs", "-n", TEAM, f"deployment/{N.deployment}", "-c", "nginx", "--tail=-1"
        ).stdout
        assert any(
            " - serviceaccount [" in line and "GET /token" in line and "containerd" in line
            for line in nginx_log.splitlines()
        ), nginx_log

    with step("a Pod of a ServiceAccount without access cannot pull"):
        _apply(node, _pod("stranger", "stranger"))
        failure = kube.eventually(
            lambda: next((m for m in _pull_failures(node, "stranger") if HOST in m), None),
            timeout=180,
            what="a failed pull in the events of Pod stranger",
        )
        # The token is valid, its ServiceAccount has no grant: the registry answers 403 to the manifest.
        assert "403 forbidden" in failure.lower(), failure
        kube.eventually(
            lambda: {"ErrImagePull", "ImagePullBackOff"} & set(_waiting_reasons(node, "stranger")),
            timeout=60,
            what="Pod stranger waiting with ErrImagePull or ImagePullBackOff",
        )
        assert _json(node, "get", "pod", "stranger", "-n", APPS)["status"].get("phase") == "Pending"

    with step("without the node's audience binding the kubelet gets no token: anonymous, refused"):
        binding = next(obj for obj in rbac if obj["kind"] == "ClusterRoleBinding")
        node.kubectl("delete", "clusterrolebinding", binding["metadata"]["name"])
        _apply(node, _pod("unbound", "puller"))
        failure = kube.eventually(
            lambda: next((m for m in _pull_failures(node, "unbound") if HOST in m), None),
            timeout=180,
            what="a failed pull in the events of Pod unbound",
        )
        assert "401 unauthorized" in failure.lower(), failure
        kubelet_log = node.component_log("kubelet").read_text(errors="replace")
        refusals = [
            line
            for line in kubelet_log.splitlines()
            if "Failed to provide credentials" in line and 'pod="idapps/unbound"' in line
        ]
        assert refusals, "no credential provider failure for Pod unbound in the kubelet's log"
        assert "not authorized to request tokens for this audience" in refusals[0], refusals[0]

    with step("helm uninstall"):
        node.kubectl("delete", "namespace", APPS, "--wait=false")
        node.kubectl("delete", "preg", REGISTRY, "-n", TEAM, "--timeout=180s", timeout=200)
        # The node-trust agent withdraws the registry's hosts before it is uninstalled: the node is left as
        # this test found it (the next test's agent must not find entries of a registry it never knew).
        kube.eventually(
            lambda: _certs_entries() == before,
            timeout=120,
            what="the registry's certs.d entries to be removed",
        )
        node.kubectl("delete", "pvc", N.pvc, "-n", TEAM, "--timeout=120s", timeout=140)
        node.kubectl("delete", "namespace", TEAM, "--wait=false")
        _run(
            helm, "uninstall", RELEASE, "--namespace", SYSTEM, "--wait", "--timeout=3m", env=env, timeout=240
        )
        for obj in rbac:
            node.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found")
