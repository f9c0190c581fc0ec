"""Pure builders, tested as dicts.

Covers:
- desired_children order and optional children (PVC only for pvc storage, Ingress only when asked, CA and TLS
  Secrets only with material); adopt() sets one controller owner reference and the namespace;
- the Deployment runs the registry on localhost with the contract's arguments and the nginx sidecar on 5443
  with probes, both hardened; the sidecar mounts the TLS Secret, the nginx config and the data volume
  read-only; the config hash changes with config, htpasswd and TLS material; placement passes through;
- the Service maps 443 to 5443; the Ingress talks HTTPS to the backend; Secrets hold the documented keys;
- pod hygiene: the metrics Service targets the registry container's metrics port; a PodDisruptionBudget only
  with more than one replica; default requests for what spec.resources leaves out; the default topology
  spread unless the spec sets one; the NetworkPolicy admits nginx's port from anywhere and the metrics port
  only from the operator's and the listed namespaces; optional_children says which ones a spec does not want.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from dockyard_common import pki
from dockyard_operator import builders, model, names
from dockyard_operator.builders import (
    deployment,
    htpasswd_secret,
    ingress,
    inputs,
    metrics_service,
    network_policy,
    nginx_configmap,
    pod_disruption_budget,
    pvc,
    service,
    tls_secret,
)


def make_inputs(spec: dict[str, Any] | None = None, **overrides: Any) -> inputs.Inputs:
    parsed = model.parse_spec(spec or {})
    values: dict[str, Any] = {
        "registry": "demo",
        "namespace": "ns",
        "spec": parsed,
        "names": names.Names.of("demo"),
        "registry_image": "registry:default",
        "nginx_image": "nginx:test",
        "htpasswd": "alice:$2b$04$hash\n",
        "access_yaml": htpasswd_secret.access_yaml(parsed.auth),
        "tls_secret_name": "demo-tls",
        "tls_digest": "d1",
        "tls": inputs.TlsMaterial(cert_pem=b"CERT", key_pem=b"KEY", ca_pem=b"CA"),
        "ca": pki.KeyPair(b"CA", b"CAKEY"),
    }
    values.update(overrides)
    return inputs.Inputs(**values)


def container(dep: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in c["volumeMounts"]}


def volumes(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}


def decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def test_desired_children_come_in_apply_order() -> None:
    kinds = [(c["kind"], c["metadata"]["name"]) for c in builders.desired_children(make_inputs())]
    assert kinds == [
        ("Secret", "demo-ca"),
        ("Secret", "demo-tls"),
        ("Secret", "demo-htpasswd"),
        ("ConfigMap", "demo-nginx"),
        ("ConfigMap", "demo-maintenance"),
        ("PersistentVolumeClaim", "demo-data"),
        ("Service", "demo"),
        ("Deployment", "demo"),
        ("Service", "demo-metrics"),
    ]


def test_optional_children_appear_only_when_wanted() -> None:
    spec = {"storage": {"emptyDir": {}}, "expose": {"ingress": {"host": "r.example.com"}}}
    kinds = [c["kind"] for c in builders.desired_children(make_inputs(spec, tls=None, ca=None))]
    assert kinds == ["Secret", "ConfigMap", "ConfigMap", "Service", "Deployment", "Service", "Ingress"]
    spec = {"storage": {"emptyDir": {}}, "replicas": 2, "networkPolicy": {"enabled": True}}
    kinds = [c["kind"] for c in builders.desired_children(make_inputs(spec, tls=None, ca=None))]
    assert kinds == [
        "Secret", "ConfigMap", "ConfigMap", "Service", "Deployment", "Service", "NetworkPolicy",
        "PodDisruptionBudget",
    ]  # fmt: skip


def test_adopt_sets_one_controller_owner_and_the_namespace() -> None:
    owner = inputs.Owner(name="demo", namespace="ns", uid="u-1")
    child = {"metadata": {"name": "x", "ownerReferences": [{"uid": "u-1", "kind": "Old"}, {"uid": "other"}]}}
    adopted = builders.adopt(child, owner=owner)
    assert adopted["metadata"]["namespace"] == "ns"
    refs = adopted["metadata"]["ownerReferences"]
    assert refs[0] == {"uid": "other"}
    assert refs[1]["uid"] == "u-1" and refs[1]["controller"] is True and refs[1]["kind"] == names.KIND
    assert child["metadata"]["ownerReferences"][0]["kind"] == "Old"  # the input is not mutated
    assert (
        child["metadata"].keys() == {"name", "ownerReferences"}
        and len(child["metadata"]["ownerReferences"]) == 2
    )


def test_adopting_a_retained_child_drops_only_the_registry_owner_reference_and_leaves_the_input_alone() -> (
    None
):
    owner = inputs.Owner(name="demo", namespace="ns", uid="u-1")
    labels = {names.RETAINED_FROM: "demo"}
    child = {
        "metadata": {"name": "d", "labels": labels, "ownerReferences": [{"uid": "u-1"}]},
        "spec": {"a": 1},
    }
    adopted = builders.adopt(child, owner=owner)
    assert "ownerReferences" not in adopted["metadata"] and adopted["metadata"]["namespace"] == "ns"
    assert adopted["spec"] == {"a": 1}
    assert child == {
        "metadata": {"name": "d", "labels": labels, "ownerReferences": [{"uid": "u-1"}]},
        "spec": {"a": 1},
    }


def test_registry_container_listens_on_localhost_with_the_contract_arguments() -> None:
    reg = container(deployment.build(make_inputs({"auth": {"anonymousPull": True}})), "registry")
    assert reg["image"] == "registry:default"
    assert reg["command"] == ["dockyard-registry"]
    assert reg["args"] == [
        "serve", "--listen", "127.0.0.1:5000", "--no-tls", "--data-dir", "/var/lib/registry",
        "--htpasswd", "/etc/dockyard/auth/htpasswd", "--access", "/etc/dockyard/auth/access.yaml",
        "--accel-redirect", "/_dockyard_blobs/", "--body-file-dir", "/var/lib/registry/.nginx-bodies",
        "--no-delete", "--anonymous-pull", "--realm", "demo",
        "--metrics-listen", "0.0.0.0:9102", "--storage-max-fill", "95",
        "--gc-schedule", "17 3 * * *", "--gc-grace", "1h",
        "--gc-retention", "/etc/dockyard/maintenance/retention.json",
    ]  # fmt: skip
    assert reg["ports"] == [{"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]
    assert mounts(reg)["auth"] == {"name": "auth", "mountPath": "/etc/dockyard/auth", "readOnly": True}


def test_delete_enabled_drops_no_delete_and_spec_image_wins() -> None:
    reg = container(
        deployment.build(make_inputs({"storage": {"deleteEnabled": True}, "image": "mine:1"})), "registry"
    )
    assert "--no-delete" not in reg["args"] and reg["image"] == "mine:1"


def test_deployment_mounts_tls_secret_into_sidecar() -> None:
    dep = deployment.build(make_inputs(tls_secret_name="byo-secret"))
    nginx = container(dep, "nginx")
    assert mounts(nginx)["tls"] == {"name": "tls", "mountPath": "/etc/dockyard/tls", "readOnly": True}
    assert volumes(dep)["tls"] == {"name": "tls", "secret": {"secretName": "byo-secret"}}
    assert "tls" not in mounts(container(dep, "registry"))


def test_sidecar_reads_config_and_blobs_and_writes_only_to_empty_dirs_and_the_body_dir() -> None:
    dep = deployment.build(make_inputs())
    nginx = container(dep, "nginx")
    m = {mount["mountPath"]: mount for mount in nginx["volumeMounts"]}
    assert (
        m[nginx_configmap.CONFIG_DIR]["name"] == "nginx-config" and m[nginx_configmap.CONFIG_DIR]["readOnly"]
    )
    assert m["/var/lib/registry"] == {"name": "data", "mountPath": "/var/lib/registry", "readOnly": True}
    # Upload bodies: the one writable directory of the data volume, at the path the registry sees it.
    assert m["/var/lib/registry/.nginx-bodies"] == {
        "name": "data", "mountPath": "/var/lib/registry/.nginx-bodies", "subPath": ".nginx-bodies",
    }  # fmt: skip
    assert nginx["command"][-1] == f"{nginx_configmap.CONFIG_DIR}/nginx.conf"
    writable = {path for path, mount in m.items() if not mount.get("readOnly")}
    assert writable == {nginx_configmap.CACHE_DIR, nginx_configmap.TMP_DIR, "/var/lib/registry/.nginx-bodies"}
    assert volumes(dep)["nginx-cache"] == {"name": "nginx-cache", "emptyDir": {}}
    assert volumes(dep)["nginx-config"] == {"name": "nginx-config", "configMap": {"name": "demo-nginx"}}


def test_sidecar_serves_https_on_5443_ready_on_readyz_and_live_on_healthz() -> None:
    nginx = container(deployment.build(make_inputs()), "nginx")
    assert nginx["image"] == "nginx:test"
    assert nginx["ports"] == [{"name": "https", "containerPort": 5443, "protocol": "TCP"}]
    # Readiness follows the registry's storage check; liveness never touches storage.
    assert nginx["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert nginx["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}


def test_both_containers_are_hardened() -> None:
    dep = deployment.build(make_inputs())
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        ctx = c["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0
    # nginx runs as the registry's user: the registry reads and renames the body files nginx writes (0600).
    assert container(dep, "nginx")["securityContext"]["runAsUser"] == deployment.REGISTRY_UID
    assert container(dep, "registry")["securityContext"]["runAsUser"] == deployment.REGISTRY_UID


@pytest.mark.parametrize(
    "change",
    [
        {"htpasswd": "alice:$2b$04$other\n"},
        {"access_yaml": "anonymousPull: true\n"},
        {"tls_digest": "d2"},
        {"spec": model.parse_spec({"nginx": {"proxyReadTimeout": "10s"}})},
    ],
)
def test_the_config_hash_changes_with_config_credentials_and_certificates(change: dict[str, Any]) -> None:
    base = deployment.build(make_inputs())["spec"]["template"]["metadata"]["annotations"][names.CONFIG_HASH]
    changed = deployment.build(make_inputs(**change))["spec"]["template"]["metadata"]["annotations"][
        names.CONFIG_HASH
    ]
    assert base != changed


def test_the_config_hash_ignores_replicas() -> None:
    one = deployment.build(make_inputs({"replicas": 1}))["spec"]["template"]
    three = deployment.build(make_inputs({"replicas": 3}))["spec"]["template"]
    assert one == three


def test_placement_and_resources_pass_through() -> None:
    spec = {
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"x": 1}},
        "resources": {"requests": {"memory": "64Mi"}},
    }
    dep = deployment.build(make_inputs(spec))
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["affinity"] == {"nodeAffinity": {"x": 1}}
    assert container(dep, "registry")["resources"] == {"requests": {"memory": "64Mi", "cpu": "50m"}}


def test_selector_matches_pod_labels_and_storage_picks_the_strategy() -> None:
    dep = deployment.build(make_inputs())
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )
    assert dep["spec"]["strategy"] == {
        "type": "Recreate"
    }  # a ReadWriteOnce claim cannot be shared by a surge pod
    assert volumes(dep)["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "demo-data"}}
    shared = deployment.build(make_inputs({"storage": {"pvc": {"accessModes": ["ReadWriteMany"]}}}))
    assert shared["spec"]["strategy"]["type"] == "RollingUpdate"
    scratch = deployment.build(make_inputs({"storage": {"emptyDir": {"sizeLimit": "1Gi"}}}))
    assert volumes(scratch)["data"] == {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}


def test_service_maps_443_to_the_sidecar_and_honours_expose() -> None:
    svc = service.build(make_inputs({"expose": {"type": "NodePort", "nodePort": 30443}}))
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": 5443, "protocol": "TCP", "nodePort": 30443}
    ]
    assert svc["spec"]["selector"] == names.selector_labels("demo")


def test_ingress_talks_https_to_the_backend_with_unlimited_bodies() -> None:
    ing = ingress.build(
        make_inputs(
            {
                "expose": {
                    "ingress": {
                        "host": "r.example.com",
                        "className": "nginx",
                        "annotations": {"cert-manager.io/cluster-issuer": "corp"},
                    }
                }
            }
        )
    )
    annotations = ing["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert annotations["cert-manager.io/cluster-issuer"] == "corp"
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["r.example.com"], "secretName": "demo-tls"}]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": "demo", "port": {"name": "https"}}}


def test_ingress_copies_only_allowed_annotations_and_never_a_snippet() -> None:
    requested = {
        "nginx.ingress.kubernetes.io/configuration-snippet": "more_set_headers x;",
        "nginx.ingress.kubernetes.io/server-snippet": "location /x {}",
        "nginx.ingress.kubernetes.io/auth-url": "http://attacker.example/",
        "example.com/snippet-ish": "x",
        "example.com/team": "a",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "600",
    }
    ing = ingress.build(
        make_inputs(
            {"expose": {"ingress": {"host": "r.example.com", "annotations": requested}}},
            ingress_annotations_allowed=("nginx.ingress.kubernetes.io/*", "example.com/*"),
        )
    )
    annotations = ing["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "600"
    assert annotations["nginx.ingress.kubernetes.io/auth-url"] == "http://attacker.example/"
    assert annotations["example.com/team"] == "a"
    assert not [key for key in annotations if "snippet" in key]


def test_ingress_leaves_out_annotations_the_default_allowlist_does_not_name() -> None:
    requested = {"nginx.ingress.kubernetes.io/auth-url": "http://attacker.example/", "a": "b"}
    ing = ingress.build(
        make_inputs({"expose": {"ingress": {"host": "r.example.com", "annotations": requested}}})
    )
    annotations = ing["metadata"]["annotations"]
    assert "nginx.ingress.kubernetes.io/auth-url" not in annotations and "a" not in annotations
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"


def test_pvc_requests_the_size_class_and_modes() -> None:
    claim = pvc.build(make_inputs({"storage": {"pvc": {"size": "5Gi", "storageClassName": "fast"}}}))
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "5Gi"}},
        "storageClassName": "fast",
    }


def test_secrets_hold_the_documented_keys() -> None:
    i = make_inputs()
    assert decoded(htpasswd_secret.build(i)) == {
        "htpasswd": i.htpasswd.encode(),
        "access.yaml": i.access_yaml.encode(),
    }
    tls = tls_secret.build(i)
    assert tls["type"] == "kubernetes.io/tls"
    assert decoded(tls) == {"tls.crt": b"CERT", "tls.key": b"KEY", "ca.crt": b"CA"}
    assert decoded(tls_secret.build_ca(i)) == {"ca.crt": b"CA", "ca.key": b"CAKEY"}


def test_access_yaml_lists_every_user_with_access_and_repositories() -> None:
    import yaml

    auth = model.parse_spec(
        {
            "auth": {
                "users": [
                    {
                        "name": "ci",
                        "access": "push",
                        "repositories": ["team/*"],
                        "passwordSecretRef": {"name": "s"},
                    }
                ]
            }
        }
    ).auth
    assert yaml.safe_load(htpasswd_secret.access_yaml(auth)) == {
        "anonymousPull": False,
        "users": {"ci": {"access": "push", "repositories": ["team/*"]}},
    }


def test_builders_are_deterministic() -> None:
    assert builders.desired_children(make_inputs()) == builders.desired_children(make_inputs())


# ------------------------------------------------------------------------------------------- pod hygiene


def test_metrics_service_targets_the_registry_containers_metrics_port() -> None:
    made = make_inputs()
    svc = metrics_service.build(made)
    assert svc["metadata"]["name"] == "demo-metrics"
    assert svc["metadata"]["labels"][names.LABEL_COMPONENT] == "metrics"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == names.selector_labels("demo")
    assert svc["spec"]["ports"] == [
        {"name": names.METRICS_PORT_NAME, "port": names.METRICS_PORT, "targetPort": names.METRICS_PORT_NAME,
         "protocol": "TCP"}
    ]  # fmt: skip
    reg_ports = container(deployment.build(made), "registry")["ports"]
    port = {"name": names.METRICS_PORT_NAME, "containerPort": names.METRICS_PORT, "protocol": "TCP"}
    assert port in reg_ports


def test_pod_disruption_budget_only_with_more_than_one_replica() -> None:
    assert not pod_disruption_budget.wanted(make_inputs({"replicas": 1}))
    assert not pod_disruption_budget.wanted(make_inputs({"replicas": 0}))
    made = make_inputs({"replicas": 3, "storage": {"emptyDir": {}}})
    assert pod_disruption_budget.wanted(made)
    pdb = pod_disruption_budget.build(made)
    assert pdb["apiVersion"] == "policy/v1" and pdb["metadata"]["name"] == "demo"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": names.selector_labels("demo")}}


def test_registry_container_gets_default_requests_for_what_resources_leave_out() -> None:
    assert container(deployment.build(make_inputs()), "registry")["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"}
    }
    # A limit alone makes Kubernetes request as much: no default request that could exceed it.
    limited = make_inputs({"resources": {"limits": {"memory": "32Mi"}}})
    assert container(deployment.build(limited), "registry")["resources"] == {
        "requests": {"cpu": "50m"},
        "limits": {"memory": "32Mi"},
    }
    both = make_inputs({"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "1Gi"}}})
    assert container(deployment.build(both), "registry")["resources"] == {
        "requests": {"cpu": "1"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }


def test_pods_spread_over_nodes_unless_the_spec_sets_constraints() -> None:
    pod = deployment.build(make_inputs())["spec"]["template"]["spec"]
    assert pod["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": names.selector_labels("demo")},
        }
    ]
    own = {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}
    pod = deployment.build(make_inputs({"topologySpreadConstraints": [own]}))["spec"]["template"]["spec"]
    assert pod["topologySpreadConstraints"] == [own]
    pod = deployment.build(make_inputs({"topologySpreadConstraints": []}))["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in pod


def test_network_policy_admits_https_from_anywhere_and_metrics_from_chosen_namespaces() -> None:
    assert not network_policy.wanted(make_inputs())
    made = make_inputs(
        {"networkPolicy": {"enabled": True, "metricsFromNamespaces": ["monitoring", "dockyard-system"]}},
        operator_namespace="dockyard-system",
    )
    assert network_policy.wanted(made)
    policy = network_policy.build(made)
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": names.selector_labels("demo")}
    assert spec["policyTypes"] == ["Ingress"]
    https, metrics = spec["ingress"]
    # No `from`: node-port pulls from every node and the ingress controller's namespace are admitted.
    assert https == {"ports": [{"protocol": "TCP", "port": nginx_configmap.LISTEN_PORT}]}
    assert metrics["ports"] == [{"protocol": "TCP", "port": names.METRICS_PORT}]
    namespaces = ["dockyard-system", "monitoring"]  # sorted, once each
    selector = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
    assert metrics["from"] == [{"namespaceSelector": {"matchExpressions": [selector]}}]


def test_optional_children_name_what_a_spec_does_not_want() -> None:
    plain = {(o.kind, o.name): o.wanted for o in builders.optional_children(make_inputs())}
    assert plain == {("Ingress", "demo"): False, ("PodDisruptionBudget", "demo"): False,
                     ("NetworkPolicy", "demo"): False, ("ConfigMap", "demo-mirrors"): False}  # fmt: skip
    spec = {
        "replicas": 2,
        "storage": {"emptyDir": {}},
        "networkPolicy": {"enabled": True},
        "expose": {"ingress": {"host": "r.example.com"}},
        "mirrors": [{"upstream": "https://registry-1.docker.io", "prefix": "dockerhub"}],
    }
    assert all(o.wanted for o in builders.optional_children(make_inputs(spec)))
