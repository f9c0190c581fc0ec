"""From `make kind-up` to a Pod running an image pulled from a Dockyard registry, on a real kind cluster.

Needs a Docker engine (kind runs its node in a container) and skopeo; without an engine every test here is
skipped with the reason "needs a Docker engine: `docker info` failed".

Covers: hack/kind-up.sh creates the cluster from kind-config.yaml, builds and loads both images and installs
the chart, and the operator Deployment becomes available; examples/nodeport-node-trust.yaml becomes Ready; an
image pushed with skopeo to localhost:30500 (the registry's CA, the push user) is pulled by the node's
containerd, which trusts the CA through certs.d/hosts.toml written by the operator's node-trust DaemonSet
(the example enables it; no manual step), into a Pod that uses the pull-only user's imagePullSecret and runs
to completion; without the pull secret the pull is refused.

The cluster is named `dockyard-e2e` and deleted afterwards (set DOCKYARD_E2E_KEEP=1 to keep it). It maps
127.0.0.1:30500 like kind-config.yaml, so another cluster made by `make kind-up` must be deleted first.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

import tests.support
from tests.support import kube

CLUSTER = "dockyard-e2e"
NODE = f"{CLUSTER}-control-plane"
REGISTRY_HOST = "localhost:30500"
SOURCE_IMAGE = "ghcr.io/dockyard-dev/dockyard-registry:dev"  # built by kind-up.sh, so no download is needed
PUSHED = f"{REGISTRY_HOST}/e2e/hello:1"
GREETING = "pulled from dockyard"


def _engine_missing() -> str | None:
    if shutil.which("docker") is None:
        return "needs a Docker engine: no docker CLI on PATH"
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "needs a Docker engine: `docker info` timed out"
    if done.returncode != 0:
        return "needs a Docker engine: `docker info` failed"
    if shutil.which("skopeo") is None:
        return "needs skopeo to push the test image"
    return None


_SKIP = _engine_missing()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(_SKIP is not None, reason=_SKIP or ""),
    pytest.mark.timeout(2400),
]


def _kind() -> str:
    found = shutil.which("kind")
    if found:
        return found
    cached = Path(os.environ.get("DOCKYARD_TOOLS", Path.home() / ".cache/dockyard/tools")) / "bin" / "kind"
    return str(cached)  # hack/kind-up.sh builds it there when it is not on PATH


def _run(*argv: str, input: str | None = None, timeout: float = 600) -> str:
    done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _secret(name: str, data: dict[str, str]) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def _docker_config(*, user: str, password: str) -> dict[str, object]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"auths": {REGISTRY_HOST: {"auth": token}}}


@dataclasses.dataclass
class Kind:
    kubeconfig: Path

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300) -> str:
        kubectl = str(kube.kubectl_binary())
        return _run(kubectl, f"--kubeconfig={self.kubeconfig}", *args, input=input, timeout=timeout)


@pytest.fixture(scope="module")
def kind(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[Kind]:
    """`make kind-up` (hack/kind-up.sh) for a cluster of our own; deleted afterwards."""
    env = {**os.environ, "KIND_CLUSTER": CLUSTER, "IMAGE_TAG": "dev", "KUBECTL": str(kube.kubectl_binary())}
    try:
        done = subprocess.run(
            ["bash", str(tests.support.ROOT / "hack" / "kind-up.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        assert done.returncode == 0, f"kind-up failed:\n{done.stderr[-5000:]}"
        kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
        kubeconfig.write_text(_run(_kind(), "get", "kubeconfig", "--name", CLUSTER))
        yield Kind(kubeconfig=kubeconfig)
    finally:
        if not os.environ.get("DOCKYARD_E2E_KEEP"):
            subprocess.run(
                [_kind(), "delete", "cluster", "--name", CLUSTER], capture_output=True, check=False
            )


def test_kind_up_leaves_the_operator_available(kind: Kind) -> None:
    status = json.loads(kind.kubectl("get", "deployment", "dockyard", "-n", "dockyard-system", "-o", "json"))
    assert status["status"].get("availableReplicas") == 1


def test_a_pod_runs_an_image_pulled_from_the_private_registry(kind: Kind, tmp_path: Path) -> None:
    namespace = f"e2e-{secrets.token_hex(3)}"
    kind.kubectl("create", "namespace", namespace)
    push_password, pull_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    # Passwords travel on stdin and in files, never in an argv that an error message would print.
    for name, password in (("ci-push", push_password), ("nodes-pull", pull_password)):
        secret = _secret(name, {"password": password})
        kind.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(secret))
    example = tests.support.ROOT / "examples" / "nodeport-node-trust.yaml"
    kind.kubectl("apply", "-n", namespace, "-f", str(example))
    kind.kubectl(
        "wait", "--for=condition=Ready", "privateregistry/team-registry", "-n", namespace, "--timeout=300s"
    )

    # The registry's CA, as clients and nodes must trust it.
    encoded = kind.kubectl(
        "get", "secret", "team-registry-tls", "-n", namespace, "-o", "jsonpath={.data.ca\\.crt}"
    )
    ca = base64.b64decode(encoded).decode()
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_text(ca)

    # Push from this machine through the port kind-config.yaml maps to the NodePort.
    push_auth = tmp_path / "push-auth.json"
    push_auth.write_text(json.dumps(_docker_config(user="ci", password=push_password)))
    _run(
        "skopeo",
        "copy",
        f"--dest-cert-dir={certs}",
        f"--dest-authfile={push_auth}",
        f"docker-daemon:{SOURCE_IMAGE}",
        f"docker://{PUSHED}",
    )

    # Node trust: the operator's DaemonSet writes certs.d/localhost:30500/hosts.toml and the CA on the node.
    kind.kubectl(
        "wait", "--for=condition=NodeTrustReady", "privateregistry/team-registry", "-n", namespace,
        "--timeout=300s",
    )  # fmt: skip
    hosts = _run("docker", "exec", NODE, "cat", f"/etc/containerd/certs.d/{REGISTRY_HOST}/hosts.toml")
    assert f'server = "https://{REGISTRY_HOST}"' in hosts

    pull_config = json.dumps(_docker_config(user="nodes", password=pull_password))
    pull_secret = _secret("team-registry-pull", {".dockerconfigjson": pull_config})
    pull_secret["type"] = "kubernetes.io/dockerconfigjson"
    kind.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pull_secret))
    for name, pull_secrets in (("hello", [{"name": "team-registry-pull"}]), ("anonymous", [])):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "restartPolicy": "Never",
                "imagePullSecrets": pull_secrets,
                "containers": [
                    {
                        "name": "hello",
                        "image": PUSHED,
                        "imagePullPolicy": "Always",
                        "command": ["python", "-c", f"print({GREETING!r})"],
                    }
                ],
            },
        }
        kind.kubectl("apply", "-f", "-", input=json.dumps(pod))

    kind.kubectl(
        "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/hello", "-n", namespace, "--timeout=300s"
    )
    assert GREETING in kind.kubectl("logs", "hello", "-n", namespace)

    def refused() -> str | None:
        pod = json.loads(kind.kubectl("get", "pod", "anonymous", "-n", namespace, "-o", "json"))
        for status in pod["status"].get("containerStatuses") or []:
            reason = status.get("state", {}).get("waiting", {}).get("reason")
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                return str(reason)
        return None

    kube.eventually(refused, timeout=180, what="the pull without credentials to be refused")
