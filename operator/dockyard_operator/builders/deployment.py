"""The `<registry>` Deployment: the registry container (localhost only) and the nginx TLS/auth sidecar.

Pod shape: the registry listens on 127.0.0.1:5000 without TLS, so the only way in is the sidecar on 5443,
which terminates TLS, asks the registry's /auth, and serves blobs from the storage volume (mounted read-only
into nginx). nginx writes blob upload bodies to files in one directory of that volume (its only writable
mount of it, a subPath) and hands the registry their paths (`--body-file-dir`), which the registry renames
into place; for that nginx runs as the registry's uid (its body files are mode 0600).
With spec.storage.s3 there is no data volume at all: the registry gets the bucket as
`--storage-driver s3 --s3-*` arguments, its access key as environment variables that reference the
credentials Secret (`valueFrom.secretKeyRef`: the values never pass through the operator), a custom CA
mounted from its Secret or ConfigMap, no `--accel-redirect` (nginx cannot read a bucket), and nginx the
config variant without the internal blob location; only `/tmp` (an emptyDir) is writable for it.
Both containers run as non-root with a read-only root file system, no privilege escalation, no
capabilities and the RuntimeDefault seccomp profile; emptyDirs provide the few writable paths nginx needs.
The pod annotation `dockyard.dev/config-hash` digests the nginx config, htpasswd/access rules and TLS
material (and, with S3, the credentials Secret's version and the CA bundle), so a change to any of them
rolls the pods. The retention file (`maintenance_configmap`) is not in
it: the registry re-reads it before each gc run.

Probes: readiness asks the registry's `/readyz` through nginx (storage writable and below
spec.storage.maxFillPercent, checked by the registry in the background, so the probe never waits on the
disk); liveness asks `/healthz`, which never touches storage: a slow or full disk takes the pod out of the
Service but never restarts it.

Must not: decide readiness or read anything; it only describes the wanted Deployment.
"""

from __future__ import annotations

from typing import Any

from dockyard_operator import model, names
from dockyard_operator.builders import htpasswd_secret, maintenance_configmap, mirrors_config, nginx_configmap
from dockyard_operator.builders import inputs as inputs_mod
from dockyard_registry import bodyfile

REGISTRY_UID = 65532
# The sidecar runs as the registry's user: the upload bodies it writes (mode 0600, nginx's choice) must be
# readable and renameable by the registry. Its data mount stays read-only; only the body directory is
# writable for it (a subPath mount of the same volume, see _nginx_mounts).
NGINX_UID = REGISTRY_UID
AUTH_DIR = "/etc/dockyard/auth"
S3_CA_DIR = "/etc/dockyard/s3-ca"
S3_CA_FILE = "ca.crt"
ACCESS_KEY_ID_ENV = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY_ENV = "AWS_SECRET_ACCESS_KEY"  # noqa: S105  # an environment variable's name
HEALTH_PATH = "/healthz"
# Requests a registry container gets for what its spec.resources names neither as request nor as limit:
# enough for the scheduler to account for it, never above a limit the user set.
DEFAULT_REQUESTS = {"cpu": "50m", "memory": "64Mi"}
READY_PATH = "/readyz"

_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def registry_args(inputs: inputs_mod.Inputs) -> list[str]:
    """`dockyard-registry serve` arguments per the registry/operator contract."""
    args = ["serve", "--listen", nginx_configmap.UPSTREAM, "--no-tls"]
    args += storage_args(inputs.spec.storage)
    args += ["--htpasswd", f"{AUTH_DIR}/htpasswd", "--access", f"{AUTH_DIR}/access.yaml"]
    if inputs.spec.storage.kind != "s3":
        # nginx serves blob bytes from the volume; a bucket it cannot read, so S3 has no accel-redirect.
        args += ["--accel-redirect", nginx_configmap.BLOB_PREFIX]
        # nginx writes upload bodies to files on the volume; the registry adopts them (issue 15).
        args += ["--body-file-dir", nginx_configmap.NginxPaths().body_dir]
    if not inputs.spec.storage.delete_enabled:
        args.append("--no-delete")
    if inputs.spec.auth.anonymous_pull:
        args.append("--anonymous-pull")
    if htpasswd_secret.identities(inputs):
        args += ["--identities", f"{AUTH_DIR}/{htpasswd_secret.IDENTITIES_FILE}"]
    if inputs.token_key:
        args += ["--token-key", f"{AUTH_DIR}/{htpasswd_secret.TOKEN_KEY_FILE}"]
    if inputs.spec.auth.token_flow:
        # A path: the registry names /token on whichever host the client reached nginx by.
        args += ["--token-realm", nginx_configmap.TOKEN_PATH]
    args += ["--realm", inputs.registry]
    args += ["--metrics-listen", f"0.0.0.0:{names.METRICS_PORT}"]
    args += ["--storage-max-fill", str(inputs.spec.storage.max_fill_percent)]
    if inputs.spec.mirrors:
        args += mirrors_config.args()
    return args + gc_args(inputs.spec.maintenance)


def storage_args(storage: model.Storage) -> list[str]:
    """Where the registry keeps its data: the volume's mount, or the bucket (credentials come from env)."""
    s3 = storage.s3
    if s3 is None:
        return ["--data-dir", nginx_configmap.DATA_DIR]
    args = [
        "--storage-driver",
        "s3",
        "--s3-endpoint",
        s3.endpoint,
        "--s3-bucket",
        s3.bucket,
        "--s3-region",
        s3.region,
        "--s3-addressing",
        s3.addressing,
    ]
    if s3.prefix:
        args += ["--s3-prefix", s3.prefix]
    if s3.ca_secret is not None or s3.ca_config_map is not None:
        args += ["--s3-ca", f"{S3_CA_DIR}/{S3_CA_FILE}"]
    args.append("--s3-redirect" if s3.redirect else "--no-s3-redirect")
    return args


def s3_env(storage: model.Storage) -> list[dict[str, Any]]:
    """The bucket's access key as references to the credentials Secret (never its values)."""
    if storage.s3 is None:
        return []
    secret = storage.s3.credentials_secret
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}}
        for env, key in (
            (ACCESS_KEY_ID_ENV, secret.access_key_id_key),
            (SECRET_ACCESS_KEY_ENV, secret.secret_access_key_key),
        )
    ]


def gc_args(maintenance: model.Maintenance) -> list[str]:
    """The online gc's `serve` arguments; none when suspended (the registry then schedules nothing)."""
    if maintenance.suspend:
        return []
    args = [
        "--gc-schedule",
        maintenance.schedule,
        "--gc-grace",
        maintenance.grace_period,
        # Always given, even without rules: rules added later then reach the pod without a restart.
        "--gc-retention",
        maintenance_configmap.RETENTION_PATH,
    ]
    if maintenance.delete_untagged:
        args.append("--gc-delete-untagged")
    if maintenance.dry_run:
        args.append("--gc-dry-run")
    return args


def config_hash(inputs: inputs_mod.Inputs) -> str:
    """Digest of everything the pod reads at start-up and that should roll it when it changes."""
    parts = [nginx_configmap.render_for(inputs), inputs.htpasswd, inputs.access_yaml, inputs.tls_digest]
    # Only when there is one: other registries' pods keep their hash.
    if inputs.spec.mirrors:
        parts.append(mirrors_config.render(inputs.spec.mirrors))
    if inputs.object_storage is not None:
        parts.append(inputs.object_storage.digest)
    identities = htpasswd_secret.identities(inputs)
    if identities:  # only then: registries without tokens keep their hash (no roll on upgrade)
        parts.append(identities)
    if inputs.token_key:
        parts.append(inputs.token_key)
    return inputs_mod.digest(*parts)


def _probe(*, path: str, failure_threshold: int, period: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "https", "scheme": "HTTPS"},
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
            *_data_mounts(inputs, read_only=False),
            {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
            {"name": "registry-tmp", "mountPath": nginx_configmap.TMP_DIR},
            {"name": "maintenance", "mountPath": maintenance_configmap.MOUNT_DIR, "readOnly": True},
        ],
    }
    if inputs.spec.mirrors:
        container["volumeMounts"].append(mirrors_config.mount())
    if _s3_ca_volume(inputs.spec.storage) is not None:
        container["volumeMounts"].append({"name": "s3-ca", "mountPath": S3_CA_DIR, "readOnly": True})
    env = s3_env(inputs.spec.storage)
    if env:
        container["env"] = env
    if inputs.spec.auth.service_accounts is not None:
        container["volumeMounts"].append(
            {"name": KUBE_IDENTITY_VOLUME, "mountPath": htpasswd_secret.KUBE_DIR, "readOnly": True}
        )
    container["resources"] = _registry_resources(inputs)
    return container


KUBE_IDENTITY_VOLUME = "kube-identity"


def kube_identity_volume() -> dict[str, Any]:
    """The registry's own API token (default audience, 1 h, rotated by the kubelet) and the cluster's CA:
    enough to read the ServiceAccount issuer's discovery and JWKS (and TokenReviews, if bound), and only
    in the registry container; the Pod keeps automountServiceAccountToken off."""
    return {
        "name": KUBE_IDENTITY_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            ]
        },
    }


def _data_mounts(inputs: inputs_mod.Inputs, *, read_only: bool) -> list[dict[str, Any]]:
    """The data volume's mount; none with object storage."""
    if inputs.spec.storage.kind == "s3":
        return []
    mount: dict[str, Any] = {"name": "data", "mountPath": nginx_configmap.DATA_DIR}
    if read_only:
        mount["readOnly"] = True
    return [mount]


def _body_mounts(inputs: inputs_mod.Inputs) -> list[dict[str, Any]]:
    """nginx's only writable place on the data volume: the directory it writes upload bodies to, mounted
    over its read-only data mount at the same path, so the path it hands the registry is the registry's
    too (and a rename from it into an upload stays on one file system). None with object storage."""
    if inputs.spec.storage.kind == "s3":
        return []
    return [
        {
            "name": "data",
            "mountPath": nginx_configmap.NginxPaths().body_dir,
            "subPath": bodyfile.DIR_NAME,
        }
    ]


def _s3_ca_volume(storage: model.Storage) -> dict[str, Any] | None:
    """The custom CA of the bucket's endpoint, as one file `ca.crt` whatever its key is called."""
    s3 = storage.s3
    if s3 is None:
        return None
    if s3.ca_secret is not None:
        items = [{"key": s3.ca_secret.key, "path": S3_CA_FILE}]
        return {"name": "s3-ca", "secret": {"secretName": s3.ca_secret.name, "items": items}}
    if s3.ca_config_map is not None:
        items = [{"key": s3.ca_config_map.key, "path": S3_CA_FILE}]
        return {"name": "s3-ca", "configMap": {"name": s3.ca_config_map.name, "items": items}}
    return None


def _registry_resources(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    """spec.resources, with a default request for each of cpu and memory it leaves out entirely (a limit
    alone already makes Kubernetes request that much)."""
    given = inputs.spec.resources
    requests = dict(given.requests or {}) if given is not None else {}
    limits = dict(given.limits or {}) if given is not None else {}
    for resource, quantity in DEFAULT_REQUESTS.items():
        if resource not in requests and resource not in limits:
            requests[resource] = quantity
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def _topology_spread(inputs: inputs_mod.Inputs) -> list[dict[str, Any]]:
    """spec.topologySpreadConstraints as given, else one spreading the pods over nodes where possible."""
    given = inputs.spec.topology_spread_constraints
    if given is not None:
        return [dict(c) for c in given]
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": names.selector_labels(inputs.registry)},
        }
    ]


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
        "readinessProbe": _probe(path=READY_PATH, failure_threshold=3, period=5),
        "livenessProbe": _probe(path=HEALTH_PATH, failure_threshold=6, period=10),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        "securityContext": {**_CONTAINER_SECURITY, "runAsUser": NGINX_UID, "runAsGroup": NGINX_UID},
        "volumeMounts": [
            {"name": "nginx-config", "mountPath": nginx_configmap.CONFIG_DIR, "readOnly": True},
            {"name": "tls", "mountPath": nginx_configmap.TLS_DIR, "readOnly": True},
            *_data_mounts(inputs, read_only=True),
            *_body_mounts(inputs),
            {"name": "nginx-cache", "mountPath": nginx_configmap.CACHE_DIR},
            {"name": "nginx-tmp", "mountPath": nginx_configmap.TMP_DIR},
        ],
    }


def _storage_volumes(inputs: inputs_mod.Inputs) -> list[dict[str, Any]]:
    """The data volume, or with object storage only the CA bundle (if any)."""
    storage = inputs.spec.storage
    if storage.kind == "s3":
        ca = _s3_ca_volume(storage)
        return [ca] if ca is not None else []
    if storage.kind == "pvc":
        return [{"name": "data", "persistentVolumeClaim": {"claimName": inputs.names.pvc}}]
    empty: dict[str, Any] = {}
    if storage.empty_dir is not None and storage.empty_dir.size_limit is not None:
        empty["sizeLimit"] = storage.empty_dir.size_limit
    return [{"name": "data", "emptyDir": empty}]


def _strategy(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    storage = inputs.spec.storage
    # A ReadWriteOnce claim can be attached to one node only: a surge pod elsewhere would hang forever.
    # A bucket (like a ReadWriteMany claim) is shared, so pods are replaced one at a time, never all at once.
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
            *_storage_volumes(inputs),
            {"name": "auth", "secret": {"secretName": inputs.names.htpasswd_secret}},
            {"name": "tls", "secret": {"secretName": inputs.tls_secret_name}},
            {"name": "nginx-config", "configMap": {"name": inputs.names.nginx_configmap}},
            {"name": "nginx-cache", "emptyDir": {}},
            {"name": "nginx-tmp", "emptyDir": {}},
            {"name": "registry-tmp", "emptyDir": {}},
            {"name": "maintenance", "configMap": {"name": inputs.names.maintenance_configmap}},
        ],
    }
    if spec.mirrors:
        pod_spec["volumes"].append(mirrors_config.volume(inputs))
    if spec.auth.service_accounts is not None:
        pod_spec["volumes"].append(kube_identity_volume())
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    if spec.affinity:
        pod_spec["affinity"] = dict(spec.affinity)
    spread = _topology_spread(inputs)
    if spread:
        pod_spec["topologySpreadConstraints"] = spread
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
