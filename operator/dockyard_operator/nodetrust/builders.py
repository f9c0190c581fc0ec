"""The node trust children of one operator installation, as manifest dicts: ConfigMap, node credentials
Secret, DaemonSet and the agent's ServiceAccount, Role and RoleBinding, all in the operator's namespace.

The DaemonSet runs the operator image's `python -m dockyard_operator.nodetrust.agent` on every Linux node:
- it tolerates every taint (control-plane and tainted nodes pull images too) and requests next to nothing;
- it mounts only the certs.d directory of each selected runtime (hostPath `DirectoryOrCreate`, under
  `/host`), with the crio target also `/etc/containers/registries.conf.d` (its mirrors drop-in, never
  registries.conf or policy.json), plus the ConfigMap and the node credentials Secret (mirror tokens,
  `layout.NODE_CREDENTIALS`), read-only root file system, no service links;
- it runs as root because those directories are root-owned `0755` on every distribution; as their owner,
  root can write there with every capability dropped (no DAC override, no chown), no privilege escalation,
  the RuntimeDefault seccomp profile, no host network or PID namespace;
- it keeps a ServiceAccount token only to annotate its own Pod with its report (Role: get/update Pods in
  this namespace; RBAC cannot narrow that to "its own" Pod, but a Pod annotation grants nothing);
- no `system-node-critical` priority: the default admission allows it only in kube-system, and a CA
  installer that waits for room is harmless (a node without it simply does not trust the registry yet).

The ConfigMap, the Secret and the DaemonSet are owned by the agent's ServiceAccount, which the chart
installs: the operator creates them at run time, so `helm uninstall` knows nothing of them, but deleting
the chart's ServiceAccount lets the garbage collector take them (and every agent Pod) along.

Must not: perform I/O, read the clock or depend on kopf/lightkube.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from dockyard_operator import names
from dockyard_operator.nodetrust import layout

NAME = "dockyard-node-trust"
CONFIG_DIR = "/etc/dockyard/node-trust"
CREDENTIALS_NAME = layout.NODE_CREDENTIALS
"""The node credentials Secret, next to the ConfigMap: `<NAME>-credentials`."""
CREDENTIALS_DIR = "/etc/dockyard/node-credentials"
HOST_ROOT = "/host"
COMPONENT = "node-trust"
LABELS = {
    "app.kubernetes.io/name": NAME,
    "app.kubernetes.io/component": COMPONENT,
    "app.kubernetes.io/managed-by": "dockyard",
    "app.kubernetes.io/part-of": "dockyard",
}
SELECTOR = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": COMPONENT}
AGENT_MODULE = "dockyard_operator.nodetrust.agent"


def _metadata(namespace: str, name: str = NAME) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(LABELS)}


def _owned_metadata(namespace: str, owner_uid: str | None, name: str = NAME) -> dict[str, Any]:
    meta = _metadata(namespace, name)
    if owner_uid is not None:
        meta["ownerReferences"] = [owner_reference(service_account_uid=owner_uid)]
    return meta


def owner_reference(*, service_account_uid: str) -> dict[str, Any]:
    """The agent's ServiceAccount (uid of the live one) as the owner of the ConfigMap and DaemonSet."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "name": NAME,
        "uid": service_account_uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


OWNERS_ANNOTATION = f"{names.GROUP}/node-trust-owners"
"""On the ConfigMap: JSON {host: "namespace/name"}, the registry each published host belongs to, so a host
keeps its first owner across operator restarts (see `aggregate`); the agent does not read it."""


def configmap(
    *,
    namespace: str,
    data: Mapping[str, str],
    owner_uid: str | None = None,
    owners: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The ConfigMap the agents mount: encoded host → CA bundle (see `layout`), and who owns each host."""
    meta = _owned_metadata(namespace, owner_uid)
    if owners:
        meta["annotations"] = {
            OWNERS_ANNOTATION: json.dumps({h: f"{ns}/{n}" for h, (ns, n) in sorted(owners.items())})
        }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}


def credentials_secret(
    *, namespace: str, tokens: Mapping[str, str], owner_uid: str | None = None
) -> dict[str, Any]:
    """The Secret the agents mount next to the ConfigMap: encoded image host (`layout.host_key`) → the
    node credential containerd sends that host's mirror (see `layout.NODE_CREDENTIALS`); empty when no
    wired mirror needs one."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _owned_metadata(namespace, owner_uid, CREDENTIALS_NAME),
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(tokens.items())},
    }


def owners_of(live: Mapping[str, Any] | None) -> dict[str, tuple[str, str]]:
    """The host → (namespace, name) map a published ConfigMap records; empty when absent or unreadable."""
    text = (((live or {}).get("metadata") or {}).get("annotations") or {}).get(OWNERS_ANNOTATION)
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    found: dict[str, tuple[str, str]] = {}
    for host, owner in parsed.items():
        namespace, slash, name = str(owner).partition("/")
        if slash and namespace and name:
            found[str(host)] = (namespace, name)
    return found


def agent_args(*, targets: Sequence[layout.Target], resync_seconds: float) -> list[str]:
    return [
        "--config-dir",
        CONFIG_DIR,
        "--credentials-dir",
        CREDENTIALS_DIR,
        "--host-root",
        HOST_ROOT,
        "--targets",
        ",".join(t for t in layout.TARGETS if t in targets),
        "--resync-interval",
        f"{resync_seconds:g}",
    ]


def daemonset(
    *,
    namespace: str,
    image: str,
    targets: Sequence[layout.Target] = layout.TARGETS,
    resync_seconds: float = 60.0,
    owner_uid: str | None = None,
) -> dict[str, Any]:
    chosen = [t for t in layout.TARGETS if t in targets]
    host_volumes = [
        {
            "name": f"certs-{target}",
            "hostPath": {"path": f"/{layout.CERTS_DIRS[target]}", "type": "DirectoryOrCreate"},
        }
        for target in chosen
    ]
    host_mounts = [
        {"name": f"certs-{target}", "mountPath": f"{HOST_ROOT}/{layout.CERTS_DIRS[target]}"}
        for target in chosen
    ]
    if "crio" in chosen:
        # The mirrors drop-in for podman/CRI-O: only that directory, never registries.conf or policy.json.
        host_volumes.append(
            {
                "name": "registries-conf-d",
                "hostPath": {"path": f"/{layout.REGISTRIES_CONF_DIR}", "type": "DirectoryOrCreate"},
            }
        )
        host_mounts.append(
            {"name": "registries-conf-d", "mountPath": f"{HOST_ROOT}/{layout.REGISTRIES_CONF_DIR}"}
        )
    container = {
        "name": "agent",
        "image": image,
        "command": ["python", "-m", AGENT_MODULE],
        "args": agent_args(targets=chosen, resync_seconds=resync_seconds),
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "resources": {"requests": {"cpu": "5m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True},
            *host_mounts,
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _owned_metadata(namespace, owner_uid),
        "spec": {
            "selector": {"matchLabels": dict(SELECTOR)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 10,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"operator": "Exists"}],
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": NAME}},
                        # Optional: agents start (and install CAs) before the operator first writes it.
                        {
                            "name": "credentials",
                            "secret": {
                                "secretName": CREDENTIALS_NAME,
                                "optional": True,
                                "defaultMode": 0o400,
                            },
                        },
                        *host_volumes,
                    ],
                },
            },
        },
    }


def service_account(*, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(namespace)}


RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "update"]}]
"""What the agent may do: annotate its own Pod with its report (see the module docstring)."""


def role(*, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(namespace),
        "rules": [dict(rule) for rule in RULES],
    }


def role_binding(*, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
    }


NEXT_CA_SUFFIX = "-ca-next"


def next_ca_name(registry: str) -> str:
    """The Secret holding a registry's staged next CA (`ca.crt`, `ca.key`) during a rotation."""
    return names.dns_label(registry, NEXT_CA_SUFFIX)


def next_ca_secret(*, registry: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    """The staged next CA Secret, in the registry's namespace (the caller adopts it)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": next_ca_name(registry), "labels": names.labels(registry, component="ca-next")},
        "type": "Opaque",
        "data": {
            "ca.crt": base64.b64encode(cert_pem).decode(),
            "ca.key": base64.b64encode(key_pem).decode(),
        },
    }


def desired(
    *,
    namespace: str,
    image: str,
    data: Mapping[str, str],
    targets: Sequence[layout.Target] = layout.TARGETS,
    resync_seconds: float = 60.0,
) -> list[dict[str, Any]]:
    """Every node trust child in apply order: what the pods use exists before the DaemonSet."""
    return [
        service_account(namespace=namespace),
        role(namespace=namespace),
        role_binding(namespace=namespace),
        configmap(namespace=namespace, data=data),
        daemonset(namespace=namespace, image=image, targets=targets, resync_seconds=resync_seconds),
    ]
