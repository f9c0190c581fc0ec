"""The node trust DaemonSet's Pod, run locally by the pod runner against the real API server.

The DaemonSet, its ConfigMap and its RBAC come from `nodetrust.builders` (applied as the operator would);
a Node object makes the DaemonSet controller create a Pod for it (there is no kubelet: the runner plays it,
publishing the ConfigMap volume and its updates the way kubelet does). The agent authenticates with its own
ServiceAccount's token, so the Role the builders render is what is tested.

Covers:
- the agent installs each runtime's CA files for every host of the ConfigMap under the node's root and
  reports the fingerprints on its own Pod (annotation), with only its Role's permissions;
- a ConfigMap update (next CA beside the current one) reaches the node files and the report within seconds;
- an emptied ConfigMap removes every directory the agent created and leaves a foreign one alone;
- SIGTERM stops the agent cleanly (exit 0) and leaves the files in place.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import lightkube
import lightkube.codecs
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.types
import pytest

from dockyard_common import pki
from dockyard_operator.nodetrust import builders, layout
from tests.integration.nodetrust import nodes
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
NOW = datetime.datetime.now(datetime.UTC)
HOST = "localhost:30555"
OTHER = "registry.example.test"


def ca_pem(name: str) -> str:
    return pki.new_ca(common_name=name, now=NOW, duration=datetime.timedelta(days=1)).cert_pem.decode()


def put_data(
    client: lightkube.Client, namespace: str, hosts: dict[str, tuple[str, tuple[layout.Target, ...]]]
) -> None:
    client.patch(
        core.ConfigMap,
        builders.NAME,
        [{"op": "replace", "path": "/data", "value": layout.encode(hosts)}],
        namespace=namespace,
        patch_type=lightkube.types.PatchType.JSON,
    )


def test_the_agent_pod_installs_reacts_and_cleans_up_on_a_node(
    control_plane: kube.ControlPlane,
    kube_client: lightkube.Client,
    namespace: str,
    node: str,
    tmp_path: Path,
) -> None:
    current, upcoming = ca_pem("current"), ca_pem("next")
    data = layout.encode({HOST: (current, layout.TARGETS), OTHER: (current, ("containerd",))})
    for manifest in builders.desired(namespace=namespace, image="dockyard-operator:test", data=data):
        kube_client.create(lightkube.codecs.from_dict(manifest))
    runner, pod = nodes.agent_runner(
        plane=control_plane, client=kube_client, namespace=namespace, node=node, root=tmp_path / "node"
    )
    foreign = runner.host_path("/etc/docker/certs.d/someone.else:5000")
    foreign.mkdir(parents=True)
    (foreign / "ca.crt").write_text("theirs")

    with runner:
        crio_ca = runner.host_path(f"/{layout.ca_path('crio', HOST)}")
        kube.eventually(lambda: crio_ca.is_file(), what="the CA under etc/containers/certs.d")
        first = kube.eventually(
            lambda: nodes.reported(kube_client, namespace, pod), what="the agent's report on its Pod"
        )
        installed = {t: runner.host_path(f"/{layout.ca_path(t, HOST)}").read_text() for t in layout.TARGETS}
        other_docker = runner.host_path(f"/{layout.ca_path('docker', OTHER)}").exists()
        toml = runner.host_path(f"/etc/containerd/certs.d/{HOST}/hosts.toml").read_text()

        put_data(kube_client, namespace, {HOST: (layout.bundle([current, upcoming]), layout.TARGETS)})
        runner.refresh()  # kubelet publishes the new ConfigMap version into the volume
        both = [layout.fingerprint(current), layout.fingerprint(upcoming)]
        second = kube.eventually(
            lambda: (r := nodes.reported(kube_client, namespace, pod)).hosts.get(HOST) == tuple(both) and r,
            what="the report of both CAs",
        )
        bundle_on_node = layout.fingerprints(crio_ca.read_text())
        other_gone = not runner.host_path(f"/etc/containerd/certs.d/{OTHER}").exists()

        put_data(kube_client, namespace, {})
        runner.refresh()
        kube.eventually(lambda: not crio_ca.exists(), what="the CA to be removed")
        runner.check_alive()
        remaining = {
            t: sorted(p.name for p in runner.host_path(f"/{layout.CERTS_DIRS[t]}").iterdir())
            for t in layout.TARGETS
        }
    codes = runner.stop()
    logs = runner.container("agent").output()

    assert set(installed.values()) == {current}
    assert first.node == node and first.errors == ()
    assert first.hosts == {HOST: (layout.fingerprint(current),), OTHER: (layout.fingerprint(current),)}
    assert not other_docker, "a host narrowed to containerd must not get docker files"
    assert 'server = "https://localhost:30555"' in toml
    assert second.applied != first.applied
    assert bundle_on_node == both and other_gone
    assert remaining == {"docker": ["someone.else:5000"], "containerd": [], "crio": []}
    assert (foreign / "ca.crt").read_text() == "theirs"
    assert codes == {"agent": 0}, logs
    assert "Forbidden" not in logs and "could not publish" not in logs, logs
