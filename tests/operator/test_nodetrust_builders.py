"""Node trust children as dicts: the ConfigMap, the DaemonSet and the agent's RBAC.

Covers: everything lands in the operator's namespace with our labels, in apply order (what the pod uses
before the DaemonSet); the DaemonSet tolerates every taint, requests little, mounts only the selected
runtimes' certs.d directories (DirectoryOrCreate, under /host), runs as root with every capability dropped,
no privilege escalation and a read-only root file system, no host namespaces; the agent's arguments match
its CLI (parsed by the agent's own parser) and its env comes from the downward API; the Role only lets the
agent get and update Pods in its namespace; the ConfigMap records each host's owner in an annotation that
reads back (anything unreadable reads as no owners).
"""

from __future__ import annotations

from typing import Any

from dockyard_operator.nodetrust import agent, builders, layout

NS = "dockyard-system"
IMAGE = "ghcr.io/dockyard-dev/dockyard-operator:0.1.0"


def pod_spec(ds: dict[str, Any]) -> dict[str, Any]:
    spec = ds["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def test_children_come_in_apply_order_in_the_operators_namespace() -> None:
    children = builders.desired(namespace=NS, image=IMAGE, data={"h": "pem"})

    assert [c["kind"] for c in children] == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "DaemonSet",
    ]
    assert {c["metadata"]["namespace"] for c in children} == {NS}
    assert {c["metadata"]["name"] for c in children} == {builders.NAME}
    assert children[3]["data"] == {"h": "pem"}


def test_the_daemonset_tolerates_every_taint_and_asks_for_little() -> None:
    spec = pod_spec(builders.daemonset(namespace=NS, image=IMAGE))
    container = spec["containers"][0]

    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert container["resources"]["requests"] == {"cpu": "5m", "memory": "32Mi"}
    assert "hostNetwork" not in spec and "hostPID" not in spec


def test_the_agent_runs_as_root_without_any_capability_or_escalation() -> None:
    security = pod_spec(builders.daemonset(namespace=NS, image=IMAGE))["containers"][0]["securityContext"]

    assert security["runAsUser"] == 0
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True


def test_only_the_selected_runtimes_certs_dirs_are_mounted() -> None:
    spec = pod_spec(builders.daemonset(namespace=NS, image=IMAGE, targets=("crio", "containerd")))
    host_paths = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}

    assert host_paths == {
        "/etc/containerd/certs.d": "DirectoryOrCreate",
        "/etc/containers/certs.d": "DirectoryOrCreate",
        "/etc/containers/registries.conf.d": "DirectoryOrCreate",  # the crio target's mirrors drop-in
    }
    assert mounts == {
        builders.CONFIG_DIR,
        builders.CREDENTIALS_DIR,
        "/host/etc/containerd/certs.d",
        "/host/etc/containers/certs.d",
        "/host/etc/containers/registries.conf.d",
    }
    containerd_only = pod_spec(builders.daemonset(namespace=NS, image=IMAGE, targets=("containerd",)))
    assert [v["hostPath"]["path"] for v in containerd_only["volumes"] if "hostPath" in v] == [
        "/etc/containerd/certs.d"
    ]


def test_the_agent_arguments_are_accepted_by_the_agents_own_parser() -> None:
    container = pod_spec(
        builders.daemonset(namespace=NS, image=IMAGE, targets=("docker",), resync_seconds=30)
    )["containers"][0]

    args = agent.parser().parse_args(container["args"])

    assert container["command"] == ["python", "-m", "dockyard_operator.nodetrust.agent"]
    assert container["image"] == IMAGE
    assert args.targets == ("docker",)
    assert args.resync_interval == 30.0
    assert str(args.config_dir) == builders.CONFIG_DIR and str(args.host_root) == builders.HOST_ROOT


def test_the_agent_learns_its_node_and_pod_from_the_downward_api() -> None:
    env = pod_spec(builders.daemonset(namespace=NS, image=IMAGE))["containers"][0]["env"]

    assert {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in env} == {
        "NODE_NAME": "spec.nodeName",
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
    }


def test_the_daemonset_mounts_the_configmap_and_selects_its_own_pods() -> None:
    ds = builders.daemonset(namespace=NS, image=IMAGE)
    spec = pod_spec(ds)

    assert {"name": "config", "configMap": {"name": builders.NAME}} in spec["volumes"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert spec["serviceAccountName"] == builders.NAME


def test_the_agents_role_only_reads_and_updates_pods_in_its_namespace() -> None:
    role = builders.role(namespace=NS)
    binding = builders.role_binding(namespace=NS)

    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "update"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": builders.NAME, "namespace": NS}]


def test_the_configmap_carries_the_data_as_given() -> None:
    data = layout.encode({})
    assert builders.configmap(namespace=NS, data=data)["data"] == {}


def test_the_configmap_records_each_hosts_owner_and_reads_it_back() -> None:
    owners = {"b.example": ("team", "b"), "a.example": ("team", "a")}

    cm = builders.configmap(namespace=NS, data={}, owners=owners)

    assert cm["metadata"]["annotations"][builders.OWNERS_ANNOTATION] == (
        '{"a.example": "team/a", "b.example": "team/b"}'
    )
    assert builders.owners_of(cm) == owners
    assert "annotations" not in builders.configmap(namespace=NS, data={})["metadata"]
    for broken in ("{", "[]", '{"h": "no-slash"}'):
        assert builders.owners_of({"metadata": {"annotations": {builders.OWNERS_ANNOTATION: broken}}}) == {}
    assert builders.owners_of(None) == {}


def test_the_next_ca_secret_is_named_after_the_registry_and_carries_the_pair() -> None:
    secret = builders.next_ca_secret(registry="demo", cert_pem=b"CERT", key_pem=b"KEY")

    assert secret["metadata"]["name"] == builders.next_ca_name("demo") == "demo-ca-next"
    assert secret["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    assert secret["data"] == {"ca.crt": "Q0VSVA==", "ca.key": "S0VZ"}
    assert "namespace" not in secret["metadata"], "adopted into the registry's namespace by the caller"
