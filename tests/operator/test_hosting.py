"""The KEP-1755 `kube-public/local-registry-hosting` ConfigMap as a dict.

Covers: its fixed name and namespace; the `localRegistryHosting.v1` document parses as YAML with the node
endpoint for pushes and kubelet pulls and the Service name for in-cluster clients; ownership is recognised
only for the registry that wrote it.
"""

from __future__ import annotations

import yaml

from dockyard_operator import hosting


def test_the_configmap_tells_tools_where_to_push_and_pull() -> None:
    cm = hosting.configmap(
        owner=hosting.owner_of("team", "demo"),
        node_endpoint="localhost:30500",
        cluster_endpoint="demo.team.svc:443",
    )

    doc = yaml.safe_load(cm["data"][hosting.KEY])

    assert (cm["metadata"]["namespace"], cm["metadata"]["name"]) == ("kube-public", "local-registry-hosting")
    assert doc["host"] == doc["hostFromContainerRuntime"] == "localhost:30500"
    assert doc["hostFromClusterNetwork"] == "demo.team.svc:443"
    assert doc["help"].startswith("https://")


def test_only_the_registry_that_wrote_it_owns_it() -> None:
    cm = hosting.configmap(owner="team/demo", node_endpoint="localhost:1", cluster_endpoint="x:443")

    assert hosting.owned_by(cm, "team/demo")
    assert not hosting.owned_by(cm, "team/other")
    assert not hosting.owned_by({"metadata": {"name": hosting.NAME}}, "team/demo")
    assert not hosting.owned_by(None, "team/demo")
