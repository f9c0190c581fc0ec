"""The Helm chart and the generated install files, checked without a cluster (helm only).

Covers: `helm lint --strict` is clean; the chart's CRD is byte-identical to the generated one in
crds/; deploy/ is what hack/install-manifest.sh renders now; values.schema.json turns typos and
bad values into clear errors; every top-level value is documented; nodeTrust.allowedHosts reaches the
operator as one comma-separated variable; the operator Deployment is
non-root, read-only, probed through kopf's health endpoint, single-replica with Recreate and joins
the peering object the chart creates (cluster-wide or per watched namespace); log levels and image
digests reach the container; RBAC grants every rule of rbac.py's RBAC_RULES and nothing beyond
RBAC_RULES plus KOPF_RBAC_RULES, with no wildcard, peering access only to the chart's own peering
object, and the operator's rules cluster-wide only when every namespace is watched; an existing
ServiceAccount must be named, and then no RBAC objects are needed.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest
import yaml

import tests.support
from tests.integration.install import chart

RULE_KINDS = ("ClusterRole", "Role")
# Grants of RBAC_RULES the operator uses only in its own namespace (node trust's DaemonSets, and `get` of the
# agents' Pods): granted there alone, never cluster-wide. Listing Pods is needed where registries run (their
# /status, reconcile/observe.py).
HOME_ONLY = {("apps", "daemonsets", None), ("", "pods", "get")}
HOME = "dockyard-system"


def home_grants(docs: list[dict[str, Any]]) -> set[chart.Grant]:
    roles = chart.bound_roles(docs, account="dockyard", namespace=HOME)
    return chart.grants(rule for r in roles if r["metadata"].get("namespace") == HOME for rule in r["rules"])


def split(grants: set[chart.Grant]) -> tuple[set[chart.Grant], set[chart.Grant]]:
    """(grants on the operator's home-only resources, all others)."""
    home = {g for g in grants if (*g[:2], None) in HOME_ONLY or g[:3] in HOME_ONLY}
    return home, grants - home


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = chart.only(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def operator_rules() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The operator's RBAC_RULES and kopf's KOPF_RBAC_RULES, from the operator's rbac module."""
    from dockyard_operator import rbac  # imported here so a broken operator fails tests, not collection

    return [dict(r) for r in rbac.RBAC_RULES], [dict(r) for r in rbac.KOPF_RBAC_RULES]


def test_helm_lint_is_clean_in_strict_mode() -> None:
    done = chart.helm("lint", "--strict", str(chart.CHART), "--kube-version", chart.KUBE_VERSION, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


def test_chart_crd_is_identical_to_the_generated_crd() -> None:
    generated = chart.ROOT / "crds" / "privateregistries.dockyard.dev.yaml"
    shipped = chart.CHART / "crds" / generated.name
    assert shipped.read_bytes() == generated.read_bytes(), "run hack/install-manifest.sh after make crds"


def test_deploy_manifests_are_what_the_chart_renders_now() -> None:
    done = subprocess.run(
        ["bash", str(chart.ROOT / "hack" / "install-manifest.sh"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DOCKYARD_TOOLS_BIN": str(tests.support.tool("helm").parent)},
    )
    assert done.returncode == 0, done.stderr


def test_deploy_crds_hold_every_crd_of_the_chart_and_install_holds_none() -> None:
    chart_crds = {
        doc["metadata"]["name"]
        for path in (chart.CHART / "crds").glob("*.yaml")
        for doc in chart.load_yaml(path)
    }
    assert {
        "privateregistries.dockyard.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    } <= chart_crds
    deploy_crds = chart.load_yaml(chart.DEPLOY / "crds.yaml")
    assert {d["kind"] for d in deploy_crds} == {"CustomResourceDefinition"}
    assert {d["metadata"]["name"] for d in deploy_crds} == chart_crds
    install = chart.load_yaml(chart.DEPLOY / "install.yaml")
    assert "CustomResourceDefinition" not in {d["kind"] for d in install}
    assert install[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "dockyard-system", "labels": {"app.kubernetes.io/part-of": "dockyard"}},
    }, "the namespace must come first so kubectl creates it before the objects inside it"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("logLevl=debug", "additional properties 'logLevl' not allowed"),
        ("logLevel=loud", "/logLevel"),
        ("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0"),
        ("image.digest=latest", "/image/digest"),
        ("nodeTrust.allowedHosts[0]=corp.example:5000", "/nodeTrust/allowedHosts/0"),
    ],
)
def test_values_schema_turns_a_bad_value_into_a_clear_error(setting: str, message: str) -> None:
    done = chart.helm(
        "template", "x", str(chart.CHART), "--kube-version", chart.KUBE_VERSION, "--set", setting, check=False
    )
    assert done.returncode != 0
    assert message in done.stderr


def test_every_top_level_value_is_documented_by_a_comment_above_it() -> None:
    lines = (chart.CHART / "values.yaml").read_text().splitlines()
    keys = list(yaml.safe_load("\n".join(lines)))
    undocumented = []
    for key in keys:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        above = lines[index - 1].strip() if index else ""
        if not above.startswith("#"):
            undocumented.append(key)
    assert not undocumented, f"values without a comment: {undocumented}"
    schema_keys = set(yaml.safe_load((chart.CHART / "values.schema.json").read_text())["properties"]) - {
        "global"
    }
    assert set(keys) == schema_keys, "values.yaml and values.schema.json disagree"


def test_operator_pod_is_non_root_read_only_and_without_capabilities() -> None:
    docs = chart.render()
    pod = chart.only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = operator_container(docs)["securityContext"]
    assert context == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"] for m in operator_container(docs)["volumeMounts"]}
    assert mounts == {"/tmp"}, "the only writable path is an emptyDir /tmp"


def test_probes_use_kopfs_health_endpoint_on_the_port_the_operator_listens_on() -> None:
    container = operator_container(chart.render(set_values=["health.port=9090"]))
    assert "--liveness=http://0.0.0.0:9090/healthz" in container["args"]
    health = [p for p in container["ports"] if p["name"] == "health"]
    assert health == [{"name": "health", "containerPort": 9090, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_one_replica_replaced_with_recreate_so_two_operators_never_overlap() -> None:
    spec = chart.only(chart.render(), "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_all_namespaces_mode_joins_the_cluster_peering_object_the_chart_creates() -> None:
    docs = chart.render(release="ops")
    args = operator_container(docs)["args"]
    assert "--all-namespaces" in args
    assert "--peering=ops-dockyard" in args
    assert chart.only(docs, "ClusterKopfPeering", "ops-dockyard")
    assert not [d for d in docs if d["kind"] == "KopfPeering"]


def test_watched_namespaces_mode_joins_a_peering_object_in_each_namespace() -> None:
    docs = chart.render(set_values=["watchNamespaces={team-a,team-b}", "peering.name=registry-ops"])
    args = operator_container(docs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in args and "--peering=registry-ops" in args
    peerings = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "KopfPeering"
    }
    assert peerings == {("team-a", "registry-ops"), ("team-b", "registry-ops")}
    assert not [d for d in docs if d["kind"] == "ClusterKopfPeering"]


@pytest.mark.parametrize(
    ("level", "flags"), [("debug", ["--verbose"]), ("info", []), ("warning", ["--quiet"])]
)
def test_log_level_becomes_the_matching_kopf_flag(level: str, flags: list[str]) -> None:
    args = operator_container(chart.render(set_values=[f"logLevel={level}"]))["args"]
    assert [a for a in args if a in ("--verbose", "--debug", "--quiet")] == flags


def test_operator_image_defaults_to_app_version_and_a_digest_pins_it() -> None:
    app_version = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())["appVersion"]
    assert operator_container(chart.render())["image"].endswith(f"dockyard-operator:{app_version}")
    digest = "sha256:" + "ab" * 32
    image = operator_container(chart.render(set_values=[f"image.digest={digest}"]))["image"]
    assert image == f"ghcr.io/dockyard-dev/dockyard-operator@{digest}"


def test_registry_and_nginx_images_reach_the_operator_and_nginx_is_pinned_by_digest() -> None:
    env = {e["name"]: e.get("value") for e in operator_container(chart.render())["env"]}
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    assert env["DOCKYARD_REGISTRY_IMAGE"] == values["registry"]["image"]
    assert env["DOCKYARD_NGINX_IMAGE"] == values["registry"]["nginxImage"]
    assert re.fullmatch(r"nginx:[\w.-]+@sha256:[0-9a-f]{64}", env["DOCKYARD_NGINX_IMAGE"])


def test_node_trust_allowed_hosts_reach_the_operator_as_one_comma_separated_setting() -> None:
    def allowed(*set_values: str) -> str:
        env = {
            e["name"]: e.get("value")
            for e in operator_container(chart.render(set_values=list(set_values)))["env"]
        }
        return str(env["DOCKYARD_NODE_TRUST_ALLOWED_HOSTS"])

    assert allowed() == ""
    assert allowed("nodeTrust.allowedHosts={*.corp.example,docker.io}") == "*.corp.example,docker.io"


def test_no_rule_of_the_chart_uses_a_wildcard() -> None:
    for values in ([], ["watchNamespaces={team-a}"]):
        for doc in chart.render(set_values=values):
            if doc["kind"] in RULE_KINDS:
                for rule in doc["rules"]:
                    for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                        assert "*" not in rule.get(field, []), (
                            f"{doc['kind']} {doc['metadata']['name']}: {rule}"
                        )


def test_chart_grants_the_operator_nothing_beyond_its_rules_and_kopfs_needs() -> None:
    needed, kopf = operator_rules()
    allowed = chart.grants(needed + kopf)
    for values in ([], ["watchNamespaces={team-a,team-b}"]):
        granted = chart.operator_grants(chart.render(set_values=values))
        assert chart.covered(granted, allowed) == set(), f"beyond RBAC_RULES + KOPF_RBAC_RULES with {values}"


def test_all_namespaces_mode_grants_every_operator_rule_cluster_wide_but_node_trust_only_at_home() -> None:
    needed, _ = operator_rules()
    home_needed, elsewhere_needed = split(chart.grants(needed))
    docs = chart.render(release="dockyard")
    cluster_wide = chart.operator_grants(docs, kind="ClusterRole")
    assert elsewhere_needed - cluster_wide == set(), "the chart misses a permission the operator needs"
    assert split(cluster_wide)[0] == set(), (
        "node trust's DaemonSets and Pods must not be granted cluster-wide"
    )
    assert home_needed - home_grants(docs) == set(), "node trust misses a permission in the release namespace"


def test_every_role_of_the_chart_is_bound_to_one_of_its_service_accounts() -> None:
    for values in ([], ["watchNamespaces={team-a}"]):
        docs = chart.render(release="dockyard", set_values=values)
        accounts = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
        bound = [
            (r["kind"], r["metadata"]["name"], r["metadata"].get("namespace"))
            for account in accounts
            for r in chart.bound_roles(docs, account=account, namespace="dockyard-system")
        ]
        roles = [(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in docs]
        assert sorted(bound) == sorted(r for r in roles if r[0] in RULE_KINDS), (
            f"an unbound role with {values}"
        )


def test_peering_access_is_limited_to_the_charts_own_peering_object() -> None:
    docs = chart.render(release="dockyard")
    cluster_wide = chart.grants(rule for d in docs if d["kind"] == "ClusterRole" for rule in d["rules"])
    peering = {g for g in cluster_wide if g[0] == "kopf.dev"}
    assert peering == {
        ("kopf.dev", "clusterkopfpeerings", "get", "dockyard"),
        ("kopf.dev", "clusterkopfpeerings", "patch", "dockyard"),
        ("kopf.dev", "clusterkopfpeerings", "list", ""),
        ("kopf.dev", "clusterkopfpeerings", "watch", ""),
    }


def test_watched_namespaces_mode_is_roles_only_with_the_operator_rules_inside_those_namespaces() -> None:
    needed, _ = operator_rules()
    home_needed, elsewhere_needed = split(chart.grants(needed))
    # Namespaces cannot be listed through a Role: each Role lets the operator get its own Namespace instead.
    elsewhere_needed -= {("", "namespaces", "list", ""), ("", "namespaces", "get", "")}
    values = ["watchNamespaces={team-a,team-b}"]
    docs = chart.render(release="dockyard", set_values=values)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")], "a cluster-wide grant"
    assert home_needed - home_grants(docs) == set(), "node trust misses a permission in the release namespace"
    env = {item["name"]: item.get("value") for item in operator_container(docs)["env"]}
    assert env["DOCKYARD_WATCH_NAMESPACES"] == "team-a,team-b"
    roles = chart.bound_roles(docs, account="dockyard", namespace=HOME)
    namespaced = [r for r in roles if r["kind"] == "Role"]
    by_namespace = {r["metadata"]["namespace"]: r for r in namespaced if r["metadata"]["namespace"] != HOME}
    assert set(by_namespace) == {"team-a", "team-b"}
    for where, role in by_namespace.items():
        granted = chart.grants(role["rules"])
        assert elsewhere_needed - granted == set()
        assert split(granted)[0] == set(), "node trust's resources belong to the release namespace only"
        assert {g for g in granted if g[1] == "namespaces"} == {("", "namespaces", "get", where)}
        assert {g for g in granted if g[0] == "kopf.dev"} == {
            ("kopf.dev", "kopfpeerings", "get", "dockyard"),
            ("kopf.dev", "kopfpeerings", "patch", "dockyard"),
            ("kopf.dev", "kopfpeerings", "list", ""),
            ("kopf.dev", "kopfpeerings", "watch", ""),
        }


def test_the_operator_runs_as_the_charts_service_account() -> None:
    docs = chart.render(release="dockyard")
    account = chart.only(docs, "ServiceAccount", "dockyard")["metadata"]["name"]
    assert chart.only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account


def test_the_node_trust_agents_identity_is_what_the_operators_daemonset_expects() -> None:
    from dockyard_operator.nodetrust import builders

    expected = [
        builders.service_account(namespace="dockyard-system"),
        builders.role(namespace="dockyard-system"),
        builders.role_binding(namespace="dockyard-system"),
    ]
    docs = chart.render(release="dockyard")
    shipped = [d for d in docs if d["metadata"]["labels"]["app.kubernetes.io/component"] == "node-trust"]

    def essence(doc: dict[str, Any]) -> dict[str, Any]:
        meta = {"name": doc["metadata"]["name"], "namespace": doc["metadata"]["namespace"]}
        rest = {k: v for k, v in doc.items() if k in ("apiVersion", "kind", "rules", "roleRef", "subjects")}
        return {**rest, "metadata": meta}

    assert [essence(d) for d in shipped] == [essence(d) for d in expected]
    assert not [d for d in chart.render(set_values=["nodeTrust.enabled=false"]) if "node-trust" in str(d)]


def test_an_existing_service_account_must_be_named_and_is_then_used_without_rbac() -> None:
    done = chart.helm(
        "template", "x", str(chart.CHART), "--kube-version", chart.KUBE_VERSION,
        "--set", "serviceAccount.create=false", check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "serviceAccount.name is required when serviceAccount.create is false" in done.stderr
    existing = ["serviceAccount.create=false", "serviceAccount.name=mine", "rbac.create=false"]
    docs = chart.render(set_values=existing)
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == {
        ("Deployment", "dockyard"),
        ("ClusterKopfPeering", "dockyard"),
        ("ServiceAccount", "dockyard-node-trust"),  # the agent's, not the operator's
        # Admission control, not RBAC: it exempts the named ServiceAccount's own writes.
        ("ValidatingAdmissionPolicy", "dockyard-tenancy"),
        ("ValidatingAdmissionPolicyBinding", "dockyard-tenancy"),
        ("Service", "dockyard-operator-metrics"),  # the operator's /metrics (monitoring.operatorMetricsPort)
    }
    assert chart.only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    policy = chart.only(docs, "ValidatingAdmissionPolicy")
    assert "system:serviceaccount:dockyard-system:mine" in policy["spec"]["matchConditions"][0]["expression"]
