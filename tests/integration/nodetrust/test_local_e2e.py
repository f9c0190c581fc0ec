"""The whole chain on the real API server, without a container engine: one `PrivateRegistry` and every node
pulls from it over verified TLS, through a CA rotation, until the registry is deleted.

Steps (the pod runner plays kubelet and kube-proxy; there is one Node, played by the test):
1. apply a PrivateRegistry (NodePort, a push user) → the operator creates its children and publishes node
   trust (ConfigMap + DaemonSet in the operator's namespace, whose static RBAC the chart would install);
2. run the registry Deployment's Pod locally (registry + Debian nginx), reachable at `localhost:<nodePort>`;
3. push an image with skopeo using the password from the user's Secret;
4. run the node agent Pod locally: it writes the CA under the node's root and reports it on its Pod; the
   registry's `status.nodeTrust` and `NodeTrustReady` follow;
5. `skopeo copy` pulls the image verifying TLS with only the directory the agent wrote
   (`--src-cert-dir <root>/etc/containers/certs.d/localhost:<nodePort>`);
6. rotate the CA (annotation `dockyard.dev/rotate-ca`): the next CA reaches the node beside the old one,
   the serving certificate switches only then, the old CA stays on the node until the Deployment has rolled
   out (the test restarts the local registry Pod on the new Secret and marks the pods ready, as kubelet
   would), then it is retired; the pull works with the node's directory at every step;
7. delete the registry: the node's files are gone.
"""

from __future__ import annotations

import collections.abc
import threading
from pathlib import Path
from typing import Any

import lightkube
import lightkube.codecs
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.types
import pytest

from dockyard_common import pki
from dockyard_operator import names, settings
from dockyard_operator.nodetrust import builders, layout, sources
from tests.integration.nodetrust import nodes
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.integration.registry import clients, harness, images
from tests.support import kube, podrunner

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
N = names.Names.of("demo")
PUSHER = "pusher"
ROTATE = "dockyard.dev/rotate-ca"


@pytest.fixture
def trust_namespace(
    control_plane: kube.ControlPlane, kube_client: lightkube.Client
) -> collections.abc.Iterator[str]:
    """The operator's namespace with the agent's RBAC (what the chart installs); emptied afterwards."""
    namespace = settings.Settings.from_env().namespace
    control_plane.kubectl("create", "namespace", namespace, check=False)
    for manifest in builders.desired(namespace=namespace, image="unused", data={})[:3]:
        control_plane.kubectl("apply", "--server-side", "-f", "-", input=lightkube.codecs.dump_all_yaml(
            [lightkube.codecs.from_dict(manifest)]))  # fmt: skip
    yield namespace
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


class Refresher:
    """Plays kubelet's volume sync for running pods: republishes their Secrets/ConfigMaps every 0.5 s."""

    def __init__(self, *runners: podrunner.PodRunner) -> None:
        self.runners = list(runners)
        self._round = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            with self._round:
                for runner in self.runners:
                    try:
                        runner.refresh()
                    except lightkube.ApiError:
                        continue  # deleted while we looked: the next round sees the final state

    def add(self, runner: podrunner.PodRunner) -> None:
        with self._round:
            self.runners.append(runner)

    def drop(self, runner: podrunner.PodRunner) -> None:
        """Stop refreshing `runner`; returns only once no round is touching its volumes."""
        with self._round:
            self.runners.remove(runner)

    def __enter__(self) -> Refresher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def registry_runner(
    client: lightkube.Client, namespace: str, root: Path, node_port: int
) -> podrunner.PodRunner:
    deployment: Any = client.get(apps.Deployment, N.deployment, namespace=namespace)
    return podrunner.PodRunner(
        template=deployment.to_dict()["spec"]["template"],
        namespace=namespace,
        client=client,
        root=root,
        extra_ports=[5000],
        ports={5443: node_port},
    )


def tls_data(client: lightkube.Client, namespace: str) -> dict[str, bytes]:
    return cluster.secret_data(client.get(core.Secret, N.tls_secret, namespace=namespace))


def signer(client: lightkube.Client, namespace: str) -> str:
    """Fingerprint of the CA (among those in ca.crt) that signed the serving certificate."""
    data = tls_data(client, namespace)
    for pem in layout.split_pem(data["ca.crt"].decode()):
        if pki.signed_by(cert_pem=data["tls.crt"], ca_pem=pem.encode()):
            return layout.fingerprint(pem)
    raise AssertionError("the serving certificate is signed by none of the CAs in ca.crt")


def staged_ca(client: lightkube.Client, namespace: str) -> str:
    """Fingerprint of the CA in the registry's staged next-CA Secret."""
    data = cluster.secret_data(client.get(core.Secret, builders.next_ca_name("demo"), namespace=namespace))
    return layout.fingerprint(data["ca.crt"].decode())


def node_trust_status(client: lightkube.Client, namespace: str) -> dict[str, Any]:
    status = cluster.status_of(client.get(cluster.PrivateRegistry, "demo", namespace=namespace))
    return dict(status.get("nodeTrust") or {})


def test_a_registry_is_pulled_by_a_node_over_verified_tls_through_a_ca_rotation(
    control_plane: kube.ControlPlane,
    kube_client: lightkube.Client,
    namespace: str,
    operator: Operator,
    trust_namespace: str,
    node: str,
    tmp_path: Path,
) -> None:
    password = harness.new_password()
    spec = {
        "expose": {"type": "NodePort"},
        "storage": {"emptyDir": {}},
        "nodeTrust": {"enabled": True},
        "auth": {"users": [cluster.user(PUSHER, f"{PUSHER}-password", access="push")]},
    }
    cluster.create_registry(kube_client, namespace=namespace, spec=spec, passwords={PUSHER: password})
    service: Any = cluster.wait_child(kube_client, core.Service, N.service, namespace)
    node_port = int(service.spec.ports[0].nodePort)
    host = f"localhost:{node_port}"
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    first_ca = tls_data(kube_client, namespace)["ca.crt"]
    secret = cluster.secret_data(kube_client.get(core.Secret, f"{PUSHER}-password", namespace=namespace))
    creds = harness.Credentials(PUSHER, secret["password"].decode())
    pusher_certs = harness.ca_dir(
        ca_file=_write(tmp_path / "ca.crt", first_ca), into=tmp_path / "pusher-certs"
    )
    img = images.random_image(label="node-trust-e2e", layer_count=2)
    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels("demo").items())
    ref = f"{host}/e2e/app:v1"

    kube.eventually(
        lambda: kube_client.get(apps.DaemonSet, builders.NAME, namespace=trust_namespace),
        what="the node trust DaemonSet",
    )
    agent, agent_pod = nodes.agent_runner(
        plane=control_plane, client=kube_client, namespace=trust_namespace, node=node, root=tmp_path / "node"
    )
    node_dir = agent.host_path(f"/etc/containers/certs.d/{host}")
    registry = registry_runner(kube_client, namespace, tmp_path / "registry", node_port)

    def pull(label: str) -> images.LayoutContents:
        return clients.skopeo_pull(ref=ref, into=tmp_path / f"pull-{label}", cert_dir=node_dir, creds=creds)

    def node_fingerprints() -> list[str]:
        return layout.fingerprints((node_dir / "ca.crt").read_text())

    with Refresher(agent) as refresher, agent:
        registry.start()
        refresher.add(registry)
        try:
            clients.skopeo_push(img=img, ref=ref, tmp=tmp_path, cert_dir=pusher_certs, creds=creds)
            kube.eventually(lambda: (node_dir / "ca.crt").is_file(), what=f"the CA under {node_dir}")
            before = pull("before")
            ready = cluster.wait_condition(kube_client, "demo", namespace, "NodeTrustReady", "True")
            status = node_trust_status(kube_client, namespace)
            old_fp = layout.fingerprint(first_ca.decode())

            # --- rotation: staged, and the pull keeps working at every observed step
            kube_client.patch(
                cluster.PrivateRegistry,
                "demo",
                {"metadata": {"annotations": {ROTATE: "r1"}}},
                namespace=namespace,
                patch_type=lightkube.types.PatchType.MERGE,
            )

            def staged_on_node() -> list[str] | None:
                # The next CA is whatever the staged Secret holds now, seen on the node beside the old one.
                staged = staged_ca(kube_client, namespace)
                found = node_fingerprints()
                return found if staged != old_fp and sorted(found) == sorted([old_fp, staged]) else None

            both = kube.eventually(staged_on_node, what="the staged next CA on the node beside the old one")
            mid = pull("during-rotation")
            new_fp = next(fp for fp in both if fp != old_fp)
            seen: list[tuple[str, list[str]]] = []

            def switched() -> bool:
                agent.check_alive()  # a dead agent reports nothing: fail with its log, not a timeout
                seen.append((signer(kube_client, namespace), node_fingerprints()))
                return seen[-1][0] == new_fp

            try:
                kube.eventually(switched, what="the serving certificate to switch to the next CA")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{diagnose(kube_client, trust_namespace, agent)}") from None
            # Old pods still serve the old certificate until the rollout: the old CA must stay on nodes.
            still_both = node_fingerprints()
            # The Deployment rolls to pods with the new certificate; here: the same pod restarted (same data).
            refresher.drop(registry)
            registry.stop()
            registry = registry_runner(kube_client, namespace, tmp_path / "registry", node_port)
            registry.start()
            refresher.add(registry)
            switched_pull = pull("switched")

            def rolled_out() -> bool:
                control_plane.mark_pods_ready(namespace=namespace, selector=selector)
                deployment: Any = kube_client.get(apps.Deployment, N.deployment, namespace=namespace)
                return sources.rolled_out(deployment.to_dict())

            kube.eventually(rolled_out, what="the registry Deployment to roll out the new certificate")
            kube.eventually(
                lambda: node_fingerprints() == [new_fp], what="the old CA to be retired on the node"
            )
            after = pull("after-rotation")
            status_after = kube.eventually(
                lambda: (
                    (s := node_trust_status(kube_client, namespace)).get("caFingerprintOnNodes") == [new_fp]
                    and s
                ),
                what="status.nodeTrust to show only the new CA",
            )
            reports = nodes.reported(kube_client, trust_namespace, agent_pod)
        finally:
            registry.stop()

        # --- deletion: the node forgets the registry
        kube_client.delete(cluster.PrivateRegistry, "demo", namespace=namespace)
        kube.eventually(lambda: not node_dir.exists(), what=f"{node_dir} to be removed")
        remaining = {t: list(agent.host_path(f"/{layout.CERTS_DIRS[t]}").iterdir()) for t in layout.TARGETS}

    assert before.manifest_digest == img.digest
    assert mid.manifest_digest == img.digest and after.manifest_digest == img.digest
    assert ready["reason"] == "Installed"
    assert status["desired"] == 1 and status["caFingerprintOnNodes"] == [old_fp]
    assert host in status["hosts"]
    assert all(new_fp in fps for fp, fps in seen if fp == new_fp), f"switched before nodes trusted it: {seen}"
    assert sorted(still_both) == sorted([old_fp, new_fp])
    assert switched_pull.manifest_digest == img.digest
    assert set(both) == {old_fp, new_fp}
    assert status_after["desired"] == 1
    assert reports.hosts[host] == (new_fp,)
    assert remaining == {t: [] for t in layout.TARGETS}


def diagnose(client: lightkube.Client, namespace: str, agent: podrunner.PodRunner) -> str:
    """What node trust looked like: the DaemonSet's counts, its Pods and their reports, the agent's log."""
    ds: Any = client.get(apps.DaemonSet, builders.NAME, namespace=namespace)
    pods = [
        f"{pod.metadata.name}: {(pod.metadata.annotations or {}).get(layout.REPORT_ANNOTATION)}"
        for pod in client.list(core.Pod, namespace=namespace, labels=builders.SELECTOR)
    ]
    log = "\n".join(agent.container("agent").output().splitlines()[-30:])
    return f"DaemonSet status: {ds.status}\nagent Pods: {pods}\nagent log:\n{log}"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
