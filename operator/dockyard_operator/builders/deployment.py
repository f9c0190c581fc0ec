"""The `<registry>` Deployment: the registry container (localhost only) and the nginx TLS/auth sidecar.

Pod shape: the registry listens on 127.0.0.1:5000 without TLS, so the only way in is the sidecar on 5443,
which terminates TLS, asks the registry's /auth, and serves blobs from the storage volume (mounted read-only
into nginx). Both containers run as non-root with a read-only root file system, no privilege escalation, no
capabilities and the RuntimeDefault seccomp profile; emptyDirs provide the few writable paths nginx needs.
The pod annotation `dockyard.dev/config-hash` digests the nginx config, htpasswd/access rules and TLS
material, so a change to any of them rolls the pods.

Must not: decide readiness or read anything; it only describes the wanted Deployment.
"""

from __future__ import annotations

from typing import Any

from dockyard_operator import names
from dockyard_operator.builders import inputs as inputs_mod
from dockyard_operator.builders import mirrors_config, nginx_configmap

REGISTRY_UID = 65532
NGINX_UID = 101  # the `nginx` user of the official nginx images
AUTH_DIR = "/etc/dockyard/auth"
HEALTH_PATH = "/healthz"

_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def registry_args(inputs: inputs_mod.Inputs) -> list[str]:
    """`dockyard-registry serve` arguments per the registry/operator contract."""
    args = [
        "serve",
        "--listen",
        nginx_configmap.UPSTREAM,
        "--no-tls",
        "--data-dir",
        nginx_configmap.DATA_DIR,
        "--htpasswd",
        f"{AUTH_DIR}/htpasswd",
        "--access",
        f"{AUTH_DIR}/access.yaml",
        "--accel-redirect",
        nginx_configmap.BLOB_PREFIX,
    ]
    if not inputs.spec.storage.delete_enabled:
        args.append("--no-delete")
    if inputs.spec.auth.anonymous_pull:
        args.append("--anonymous-pull")
    args += ["--realm", inputs.registry]
    args += ["--metrics-listen", f"0.0.0.0:{names.METRICS_PORT}"]
    if inputs.spec.mirrors:
        args += mirrors_config.args()
    return args


def config_hash(inputs: inputs_mod.Inputs) -> str:
    """Digest of everything the pod reads at start-up and that should roll it when it changes."""
    # The mirrors file only when there is one, so registries without mirrors keep their hash.
    mirrors = [mirrors_config.render(inputs.spec.mirrors)] if inputs.spec.mirrors else []
    return inputs_mod.digest(
        nginx_configmap.render(nginx=inputs.spec.nginx),
        inputs.htpasswd,
        inputs.access_yaml,
        inputs.tls_digest,
        *mirrors,
    )


def _probe(*, failure_threshold: int, period: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": "https", "scheme": "HTTPS"},
        "periodSeconds": period,
        "failureThreshold": failure_threshold,
        "timeoutSeconds": 3,
    }


def _registry_container(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "registry",
        "image": inputs.spec.image or inputs.registry_image,
        "command": ["dockyard-registry"],
        "args": registry_args(inputs),
        "ports": [{"name": names.METRICS_PORT_NAME, "containerPort": names.METRICS_PORT, "protocol": "TCP"}],
        "securityContext": {**_CONTAINER_SECURITY, "runAsUser": REGISTRY_UID, "runAsGroup": REGISTRY_UID},
        "volumeMounts": [
            {"name": "data", "mountPath": nginx_configmap.DATA_DIR},
            {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
            {"name": "registry-tmp", "mountPath": nginx_configmap.TMP_DIR},
        ],
    }
    if inputs.spec.mirrors:
        container["volumeMounts"].append(mirrors_config.mount())
    if inputs.spec.resources is not None:
        resources = inputs.spec.resources.model_dump(by_alias=True, exclude_none=True)
        if resources:
            container["resources"] = resources
    return container


def _nginx_container(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    return {
        "name": "nginx",
        "image": inputs.nginx_image,
        "command": [
            "nginx",
            "-e",
            "stderr",
            "-c",
            f"{nginx_configmap.CONFIG_DIR}/{nginx_configmap.CONFIG_KEY}",
        ],
        "args": ["-g", "daemon off;"],
        "ports": [{"name": "https", "containerPort": nginx_configmap.LISTEN_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe(failure_threshold=3, period=5),
        "livenessProbe": _probe(failure_threshold=6, period=10),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        "securityContext": {**_CONTAINER_SECURITY, "runAsUser": NGINX_UID, "runAsGroup": NGINX_UID},
        "volumeMounts": [
            {"name": "nginx-config", "mountPath": nginx_configmap.CONFIG_DIR, "readOnly": True},
            {"name": "tls", "mountPath": nginx_configmap.TLS_DIR, "readOnly": True},
            {"name": "data", "mountPath": nginx_configmap.DATA_DIR, "readOnly": True},
            {"name": "nginx-cache", "mountPath": nginx_configmap.CACHE_DIR},
            {"name": "nginx-tmp", "mountPath": nginx_configmap.TMP_DIR},
        ],
    }


def _data_volume(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    storage = inputs.spec.storage
    if storage.kind == "pvc":
        return {"name": "data", "persistentVolumeClaim": {"claimName": inputs.names.pvc}}
    empty: dict[str, Any] = {}
    if storage.empty_dir is not None and storage.empty_dir.size_limit is not None:
        empty["sizeLimit"] = storage.empty_dir.size_limit
    return {"name": "data", "emptyDir": empty}


def _strategy(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    storage = inputs.spec.storage
    # A ReadWriteOnce claim can be attached to one node only: a surge pod elsewhere would hang forever.
    if storage.kind == "pvc" and "ReadWriteMany" not in storage.effective_pvc.access_modes:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    spec = inputs.spec
    pod_labels = {
        **names.labels(inputs.registry, component="registry"),
        **names.selector_labels(inputs.registry),
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": REGISTRY_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_registry_container(inputs), _nginx_container(inputs)],
        "volumes": [
            _data_volume(inputs),
            {"name": "auth", "secret": {"secretName": inputs.names.htpasswd_secret}},
            {"name": "tls", "secret": {"secretName": inputs.tls_secret_name}},
            {"name": "nginx-config", "configMap": {"name": inputs.names.nginx_configmap}},
            {"name": "nginx-cache", "emptyDir": {}},
            {"name": "nginx-tmp", "emptyDir": {}},
            {"name": "registry-tmp", "emptyDir": {}},
        ],
    }
    if spec.mirrors:
        pod_spec["volumes"].append(mirrors_config.volume(inputs))
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    if spec.affinity:
        pod_spec["affinity"] = dict(spec.affinity)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": inputs_mod.metadata(inputs, name=inputs.names.deployment, component="registry"),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": names.selector_labels(inputs.registry)},
            "strategy": _strategy(inputs),
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {names.CONFIG_HASH: config_hash(inputs)}},
                "spec": pod_spec,
            },
        },
    }
