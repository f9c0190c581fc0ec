"""The children the operator wrote, run the way the registry pod runs them (no kubelet needed).

One test plays the pod: it takes the registry container's command and arguments from the
Deployment, the nginx.conf from the ConfigMap (re-rendered only through the renderer's own
path/port parameters, after checking the ConfigMap is exactly the default rendering), the
certificate from the TLS Secret and htpasswd/access.yaml from the htpasswd Secret, maps the pod's
mount paths onto temp directories, and starts the real `dockyard-registry` and the real nginx.

Covers, through nginx over TLS verified against the CA the operator published:
- /healthz (liveness) and /readyz (readiness: the registry's storage check) answer without credentials;
  /v2/ asks for Basic credentials with the registry's name as realm and the Docker-Distribution-API-Version
  header;
- a push user pushes a blob and a manifest inside its repository globs and is denied outside;
- a pull user pulls the manifest and the blob (bytes served by nginx via X-Accel-Redirect) and
  is denied a push; a wrong password is refused;
- DELETE is refused: for a push user by the access rules, for an admin because
  storage.deleteEnabled is false;
- with anonymousPull and deleteEnabled, anyone pulls, nobody anonymous pushes, and an admin
  deletes a manifest.
"""

from __future__ import annotations

import base64
import collections.abc
import hashlib
import json
import shutil
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import pytest

from dockyard_operator import model, names
from dockyard_operator.builders import deployment as deployment_builder
from dockyard_operator.builders import maintenance_configmap, nginx_configmap
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube, procs

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
N = names.Names.of("demo")
PASSWORDS = {"alice": "alice-Pod-pw-22", "bob": "bob-Pod-pw-23", "olga": "olga-Pod-pw-24"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Pod:
    """The registry and nginx processes of one simulated pod, and an HTTPS client for it."""

    def __init__(self, *, root: Path, port: int, ca: bytes) -> None:
        self.root = root
        self.base = f"https://localhost:{port}"
        self.context = ssl.create_default_context(cadata=ca.decode())
        self.processes: list[procs.Process] = []

    def request(
        self,
        method: str,
        path: str,
        *,
        user: str | None = None,
        password: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        url = self.base + path  # always https://localhost:<port>
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))  # noqa: S310
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:  # noqa: S310
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def _pod_paths(root: Path) -> dict[str, Path]:
    """The pod's mount paths (as the builders write them) → this test's directories."""
    return {
        nginx_configmap.DATA_DIR: root / "data",
        deployment_builder.AUTH_DIR: root / "auth",
        nginx_configmap.TLS_DIR: root / "tls",
        nginx_configmap.CACHE_DIR: root / "cache",
        maintenance_configmap.MOUNT_DIR: root / "maintenance",
    }


def _remap(argv: list[str], paths: dict[str, Path], upstream: str, metrics: str) -> list[str]:
    mapped = []
    for arg in argv:
        for pod_path, local in paths.items():
            if arg == pod_path or arg.startswith(pod_path + "/"):
                arg = str(local) + arg[len(pod_path) :]
        if arg == f"0.0.0.0:{names.METRICS_PORT}":
            arg = metrics  # a pod port: here a reserved loopback port
        mapped.append(upstream if arg == nginx_configmap.UPSTREAM else arg)
    return mapped


USERS = [
    cluster.user("alice", "alice-password", access="push", repositories=["team/**"]),
    cluster.user("bob", "bob-password", access="pull"),
    cluster.user("olga", "olga-password", access="admin"),
]
OPEN_SPEC = {
    "auth": {"users": USERS, "anonymousPull": True},
    "storage": {"deleteEnabled": True, "emptyDir": {}},
}


@pytest.fixture
def pod(
    request: pytest.FixtureRequest, kube_client: lightkube.Client, namespace: str, operator: Operator
) -> collections.abc.Iterator[Pod]:
    """The simulated pod of registry `demo`; the spec is `{"auth": {"users": USERS}}` unless parametrized."""
    spec = getattr(request, "param", {"auth": {"users": USERS}})
    cluster.create_registry(kube_client, namespace=namespace, spec=spec, passwords=PASSWORDS)
    deployment: Any = cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    configmap: Any = cluster.wait_child(kube_client, core.ConfigMap, N.nginx_configmap, namespace)
    maintenance: Any = cluster.wait_child(kube_client, core.ConfigMap, N.maintenance_configmap, namespace)
    tls = cluster.secret_data(cluster.wait_child(kube_client, core.Secret, N.tls_secret, namespace))
    auth = cluster.secret_data(cluster.wait_child(kube_client, core.Secret, N.htpasswd_secret, namespace))
    parsed = model.parse_spec(kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)["spec"])
    # A registry with a data volume: nginx writes upload bodies to files on it (issue 15).
    assert configmap.data[nginx_configmap.CONFIG_KEY] == nginx_configmap.render(
        nginx=parsed.nginx, body_files=True
    )

    # nginx's workers must read the blob files: a world-traversable directory, unlike tmp_path.
    root = Path(tempfile.mkdtemp(prefix="dockyard-pod-"))
    root.chmod(0o755)
    paths = _pod_paths(root)
    for directory in paths.values():
        directory.mkdir(mode=0o755)
    for key in ("tls.crt", "tls.key"):
        (paths[nginx_configmap.TLS_DIR] / key).write_bytes(tls[key])
    for key in ("htpasswd", "access.yaml"):
        (paths[deployment_builder.AUTH_DIR] / key).write_bytes(auth[key])
    for key, text in maintenance.data.items():
        (paths[maintenance_configmap.MOUNT_DIR] / key).write_text(text)

    upstream_port, https_port, metrics_port = procs.reserve_port(), procs.reserve_port(), procs.reserve_port()
    upstream = f"127.0.0.1:{upstream_port.number}"
    (container,) = [c for c in deployment.spec.template.spec.containers if c.name == "registry"]
    argv = _remap(
        [*container.command, *container.args], paths, upstream, metrics=f"127.0.0.1:{metrics_port.number}"
    )
    # The container's command is the console script; this interpreter's environment has it too.
    argv[0] = str(Path(sys.executable).parent / argv[0])
    config = root / "nginx.conf"
    config.write_text(
        nginx_configmap.render(
            nginx=parsed.nginx,
            paths=nginx_configmap.NginxPaths(
                cert=str(paths[nginx_configmap.TLS_DIR] / "tls.crt"),
                key=str(paths[nginx_configmap.TLS_DIR] / "tls.key"),
                pid=str(root / "nginx.pid"),
                temp_dir=str(paths[nginx_configmap.CACHE_DIR]),
                data_dir=str(paths[nginx_configmap.DATA_DIR]),
            ),
            upstream=upstream,
            listen_port=https_port.number,
            body_files=True,
        )
    )

    simulated = Pod(root=root, port=https_port.number, ca=tls["ca.crt"])
    try:
        simulated.processes.append(
            procs.Process(
                name="dockyard-registry",
                argv=argv,
                log=root / "registry.log",
                ports=[upstream_port, metrics_port],
            )
        )
        nginx = [
            "/usr/sbin/nginx",
            *("-p", str(root), "-e", str(root / "error.log"), "-c", str(config)),
            # The pod runs both containers as non-root users; here one root master runs its
            # workers as root too, so they can read what the registry wrote.
            *("-g", "daemon off; user root;"),
        ]
        simulated.processes.append(
            procs.Process(name="nginx", argv=nginx, log=root / "nginx.log", ports=[https_port])
        )

        def healthy() -> bool:
            for process in simulated.processes:
                process.check_alive()
            try:
                return simulated.request("GET", "/healthz")[0] == 200
            except OSError:
                return False

        kube.eventually(healthy, timeout=60, what="the simulated pod's /healthz through nginx")
        yield simulated
    finally:
        simulated.stop()
        shutil.rmtree(root, ignore_errors=True)


def _push_blob(pod: Pod, repository: str, data: bytes, *, user: str | None, password: str | None) -> int:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = pod.request("POST", f"/v2/{repository}/blobs/uploads/", user=user, password=password)
    if status != 202:
        return status
    location = headers["Location"]
    separator = "&" if "?" in location else "?"
    path = location.removeprefix(pod.base) + f"{separator}digest={digest}"
    return pod.request(
        "PUT",
        path,
        user=user,
        password=password,
        body=data,
        headers={"Content-Type": "application/octet-stream"},
    )[0]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_image(pod: Pod, repository: str, tag: str, *, user: str, password: str) -> tuple[bytes, bytes]:
    """Push a one-layer image; returns (manifest, layer)."""
    config = b"{}"
    layer = b"layer bytes served by nginx from the storage volume\n" * 100
    for blob in (config, layer):
        assert _push_blob(pod, repository, blob, user=user, password=password) == 201
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    put = pod.request(
        "PUT",
        f"/v2/{repository}/manifests/{tag}",
        user=user,
        password=password,
        body=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert put[0] == 201
    return manifest, layer


def test_the_operators_children_serve_a_working_registry(pod: Pod) -> None:
    assert pod.request("GET", "/healthz")[0] == 200
    kube.eventually(lambda: pod.request("GET", "/readyz")[0] == 200, what="/readyz (storage checked)")
    status, headers, _ = pod.request("GET", "/v2/")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="demo"'
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert pod.request("GET", "/v2/", user="alice", password="wrong-password")[0] == 401
    assert pod.request("GET", "/v2/", user="alice", password=PASSWORDS["alice"])[0] == 200

    manifest, layer = _push_image(pod, "team/app", "v1", user="alice", password=PASSWORDS["alice"])
    # Outside alice's repository globs: authenticated, but denied.
    assert _push_blob(pod, "other/app", b"{}", user="alice", password=PASSWORDS["alice"]) == 403

    status, _, body = pod.request(
        "GET",
        "/v2/team/app/manifests/v1",
        user="bob",
        password=PASSWORDS["bob"],
        headers={"Accept": OCI_MANIFEST},
    )
    assert (status, body) == (200, manifest)
    layer_digest = _digest(layer)
    status, headers, body = pod.request(
        "GET", f"/v2/team/app/blobs/{layer_digest}", user="bob", password=PASSWORDS["bob"]
    )
    assert (status, body) == (200, layer)
    assert headers["Docker-Content-Digest"] == layer_digest
    assert _push_blob(pod, "team/app", b"bob's", user="bob", password=PASSWORDS["bob"]) == 403

    # Deleting needs admin access, and even admin is refused while storage.deleteEnabled is false.
    manifest_path = "/v2/team/app/manifests/v1"
    assert pod.request("DELETE", manifest_path, user="alice", password=PASSWORDS["alice"])[0] == 403
    status, _, body = pod.request("DELETE", manifest_path, user="olga", password=PASSWORDS["olga"])
    assert status == 405 and b"UNSUPPORTED" in body


@pytest.mark.parametrize("pod", [OPEN_SPEC], indirect=True, ids=["anonymous-pull-and-delete"])
def test_anonymous_pull_and_delete_work_when_the_spec_allows_them(pod: Pod) -> None:
    manifest, _ = _push_image(pod, "team/app", "v1", user="alice", password=PASSWORDS["alice"])

    status, _, body = pod.request("GET", "/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert (status, body) == (200, manifest)
    assert _push_blob(pod, "team/app", b"anonymous", user=None, password=None) == 401
    deleted = pod.request(
        "DELETE", f"/v2/team/app/manifests/{_digest(manifest)}", user="olga", password=PASSWORDS["olga"]
    )
    assert deleted[0] == 202
    assert pod.request("GET", "/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})[0] == 404
