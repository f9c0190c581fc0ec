"""The whole product on a real node: `helm install` to a Pod pulling from Dockyard, every step real.

The node is `tests/support/cluster.py`: kubelet, containerd with Debian's runc and a CNI bridge, kube-proxy,
CoreDNS and a control plane, in a network namespace of this machine. The images are the shipped Dockerfiles,
built with podman on a Debian base (`hack/images.sh`); the sidecar is Debian's nginx. docs/install.md
describes the same steps for any cluster.

Steps (each failure names its step; the report carries every component's and Pod's log):
1. `helm install` the chart with values pointing at the local images; the operator Pod runs under the
   chart's ServiceAccount;
2. `kubectl apply` a `PrivateRegistry` on a NodePort with node trust and `pullSecrets`, plus its user
   Secrets and a hostPath PersistentVolume on this node; `kubectl wait` for Ready and NodeTrustReady;
3. `docker login` (the CLI alone, no engine; through the node IP, because the CLI never verifies TLS on
   loopback, with the CA node trust put in this machine's `/etc/docker/certs.d`, byte for byte the cluster's),
   `podman login` and a `skopeo copy` of a three-layer image to `localhost:<nodePort>/team/app:1`, both
   verifying TLS against the CA read from the cluster;
4. a Pod in another namespace runs that image, by `localhost:<nodePort>` and by `<node IP>:<nodePort>` (an
   extra `nodeTrust.hostnames` entry), pulled by kubelet → containerd → the agent's `hosts.toml` with the
   operator's pull-secret copy; nothing anywhere says insecure or skip_verify;
4b. pull-through mirror: a real Distribution on the node's network (plain HTTP, `UPSTREAM`) holds the app
   image; the registry mirrors it (`spec.mirrors` with wireNodes, the host in the chart's
   `nodeTrust.allowedHosts`), closed to anonymous pulls (`anonymousPull: false`, as for an upstream with
   credentials: an anonymous pull of the mirror's prefix and of the pushed `team/app` is refused), so the
   agent's `hosts.toml` for the upstream host carries the node credential (root-only); the image is
   pulled once through Dockyard, the upstream is stopped, and a Pod whose image is the upstream's own
   name (`<upstream>/lib/app:1`) runs: kubelet → containerd → that `hosts.toml` → the registry's mirror,
   which only that credential opens; status.mirrors counts the node as wired and MirrorsReady reports it;
5. negative control: with node trust disabled, `docker login` fails on the certificate, the pull by node IP
   fails with an x509 error in the Pod's events, and the pull by `localhost` fails too (containerd 1.6 speaks
   plain HTTP to localhost without a `hosts.toml`; the agent's file is what makes it use verified TLS);
6. staged CA rotation: once the node trusts only the new CA, a new Pod pulls again; containerd was never
   restarted;
7. the registry Pod is deleted: the pushed image is still there when it comes back (the PersistentVolume);
8. `kubectl delete preg`: the node's certs.d entries for it are gone, a foreign entry is untouched; the claim
   is retained (deletionPolicy Retain, the default: labelled, no owner reference) and then deleted by hand;
9. `helm uninstall`: no Dockyard object in the cluster, no file on the node, no iptables rule for it.
"""

from __future__ import annotations

import base64
import collections.abc
import contextlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import tests.support
from dockyard_operator import names, tenancy
from dockyard_operator.nodetrust import layout
from tests.integration.registry import clients
from tests.support import cluster, kube, procs

pytestmark = [pytest.mark.integration, pytest.mark.node, pytest.mark.timeout(1500)]

RELEASE, SYSTEM = "dockyard", "dockyard-system"
TEAM, APPS = "team", "apps"
REGISTRY = "team-registry"
NODE_PORT = 30500
HOST = f"localhost:{NODE_PORT}"
IMAGE_TAG = "dev"
OPERATOR_IMAGE = "ghcr.io/dockyard-dev/dockyard-operator"
REGISTRY_IMAGE = f"ghcr.io/dockyard-dev/dockyard-registry:{IMAGE_TAG}"
NGINX_IMAGE = "localhost/dockyard/nginx:bookworm"
BUSYBOX_IMAGE = "localhost/dockyard/busybox:stable"
APP = f"{HOST}/team/app:1"
BY_IP = f"{cluster.NODE_IP}:{NODE_PORT}"  # the same registry by the node's address: TLS on every containerd
APP_BY_IP = f"{BY_IP}/team/app:1"
FOREIGN = "foreign.example.test:5000"
UPSTREAM = f"{cluster.NODE_IP}:5001"  # a real Distribution in the node's network namespace
MIRRORED_APP = f"{UPSTREAM}/lib/app:1"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
N = names.Names.of(REGISTRY)


@contextlib.contextmanager
def step(name: str) -> collections.abc.Iterator[None]:
    """Prefix any failure inside with the step's name, so a report says where the chain broke."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"step '{name}' failed: {exc}") from None


def _run(
    *argv: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> str:
    done = subprocess.run(
        argv, input=input, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _json(node: cluster.Cluster, *args: str) -> Any:
    return json.loads(node.kubectl(*args, "-o", "json").stdout)


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind), None)


def _wait_condition(node: cluster.Cluster, kind: str, *, timeout: float = 300) -> None:
    node.kubectl(
        "wait",
        f"--for=condition={kind}",
        f"preg/{REGISTRY}",
        "-n",
        TEAM,
        f"--timeout={timeout:.0f}s",
        timeout=timeout + 30,
    )


def _secret(name: str, namespace: str, data: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": data,
        }
    )


def _pod(name: str, *images: str, pull_policy: str = "IfNotPresent") -> str:
    containers = [
        {"name": f"app-{i}", "image": image, "imagePullPolicy": pull_policy} for i, image in enumerate(images)
    ]
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": APPS},
            "spec": {
                "imagePullSecrets": [{"name": f"{REGISTRY}-pull"}],
                "terminationGracePeriodSeconds": 1,
                "containers": containers,
            },
        }
    )


def _pod_running(node: cluster.Cluster, name: str) -> bool:
    pod = _json(node, "get", "pod", name, "-n", APPS)
    waiting = [s["state"].get("waiting") for s in pod["status"].get("containerStatuses") or []]
    assert not any(w and w.get("reason") in ("ErrImagePull", "ImagePullBackOff") for w in waiting), waiting
    return bool(pod["status"].get("phase") == "Running")


def _pull_failure(node: cluster.Cluster, name: str, *, needle: str) -> str | None:
    """The message of a failed pull of Pod `name` that contains `needle`, from its events."""
    events = _json(node, "get", "events", "-n", APPS, "--field-selector", f"involvedObject.name={name}")
    messages = [e.get("message", "") for e in events["items"] if e.get("reason") == "Failed"]
    return next((m for m in messages if "failed to pull" in m.lower() and needle in m), None)


def _node_trust(node: cluster.Cluster, *, enabled: bool) -> None:
    patch = {"spec": {"nodeTrust": {"enabled": enabled}}}
    node.kubectl("patch", "preg", REGISTRY, "-n", TEAM, "--type=merge", "-p", json.dumps(patch))


def _answers(node: cluster.Cluster, host: str) -> bool:
    probe = node.inside(
        "curl", "-sk", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", f"https://{host}/v2/", check=False
    )
    return probe.stdout == "401"


def _digest(node: cluster.Cluster, *, certs: Path, auth: Path) -> str:
    """The digest of APP as the registry serves it now, TLS verified against `certs`."""
    done = node.inside(
        "skopeo",
        "inspect",
        "--format",
        "{{.Digest}}",
        "--cert-dir",
        str(certs),
        "--authfile",
        str(auth),
        f"docker://{APP}",
    )
    return done.stdout.strip()


def _certs_entries() -> dict[str, set[str]]:
    return {str(d): {p.name for p in d.iterdir()} if d.is_dir() else set() for d in cluster.CERTS_DIRS}


def _build_app_image(tmp: Path) -> None:
    """A three-layer image (busybox, a greeting, a per-run id: never identical to a preloaded image)."""
    context = tmp / "app"
    context.mkdir()
    (context / "greeting.txt").write_text("pulled from dockyard\n")
    (context / "build-id").write_text(secrets.token_hex(16))
    (context / "Containerfile").write_text(
        f"FROM {BUSYBOX_IMAGE}\nCOPY greeting.txt /srv/greeting.txt\nCOPY build-id /srv/build-id\n"
        'CMD ["sh", "-c", "cat /srv/greeting.txt; exec sleep 3600"]\n'
    )
    _run(
        "podman",
        "--events-backend=file",
        "build",
        "--pull=never",
        "-q",
        "-t",
        "localhost/dockyard-e2e/app:1",
        str(context),
        timeout=600,
    )


def test_helm_install_to_a_pod_pulling_from_dockyard_through_rotation_and_uninstall(
    node: cluster.Cluster, tmp_path: Path
) -> None:
    if not (clients.DOCKER.is_file() or shutil.which("docker")):
        pytest.fail("the Docker CLI (no engine needed) is missing: `docker login` is one of the steps")
    env = {**os.environ, "KUBECONFIG": str(node.kubeconfig)}
    helm = str(tests.support.tool("helm"))
    foreign = {d: d / FOREIGN for d in (cluster.CERTS_DIRS[0], cluster.CERTS_DIRS[1])}
    for directory in foreign.values():  # another tool's registry trust: must survive everything below
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hosts.toml").write_text(f'server = "https://{FOREIGN}"\n')
    before = _certs_entries()

    with step("helm install"):
        _run(
            helm,
            "install",
            RELEASE,
            str(tests.support.ROOT / "charts" / "dockyard"),
            "--namespace",
            SYSTEM,
            "--create-namespace",
            "--set",
            f"image.repository={OPERATOR_IMAGE}",
            "--set",
            f"image.tag={IMAGE_TAG}",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            f"registry.image={REGISTRY_IMAGE}",
            "--set",
            f"registry.nginxImage={NGINX_IMAGE}",
            "--set-json",
            f'nodeTrust.allowedHosts=["{cluster.NODE_IP}"]',  # the mirror step wires {UPSTREAM}
            "--wait",
            "--timeout=5m",
            env=env,
            timeout=400,
        )
        pods = _json(node, "get", "pods", "-n", SYSTEM, "-l", "app.kubernetes.io/name=dockyard")["items"]
        # An operator Pod of the release an earlier test uninstalled may still be terminating: not ours.
        pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        assert [p["spec"]["serviceAccountName"] for p in pods] == [RELEASE], pods
        assert all(p["status"]["phase"] == "Running" for p in pods)

    with step("apply a PrivateRegistry"):
        push_password, pull_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        for namespace in (TEAM, APPS):
            node.kubectl("create", "namespace", namespace)
        # apps accepts pull secrets from registries in team (docs/security.md: the opt-in label).
        node.kubectl("label", "namespace", APPS, f"{tenancy.opt_in_label(TEAM)}=true")
        for name, password in (("ci-push", push_password), ("nodes-pull", pull_password)):
            node.kubectl("apply", "-f", "-", input=_secret(name, TEAM, {"password": password}))
        node.host_volume(name=f"{TEAM}-{N.pvc}", size="2Gi", uid=65532, gid=65532, claim=(TEAM, N.pvc))
        spec = {
            "expose": {"type": "NodePort", "nodePort": NODE_PORT},
            "nodeTrust": {"enabled": True, "hostnames": [BY_IP]},
            "tls": {"ipAddresses": [cluster.NODE_IP]},  # BY_IP: the Docker CLI verifies no loopback TLS
            "storage": {"pvc": {"size": "1Gi", "storageClassName": ""}},
            "auth": {
                "users": [
                    {"name": "ci", "access": "push", "passwordSecretRef": {"name": "ci-push"}},
                    {"name": "nodes", "access": "pull", "passwordSecretRef": {"name": "nodes-pull"}},
                ]
            },
            "pullSecrets": {"user": "nodes", "namespaces": [APPS]},
        }
        resource = {
            "apiVersion": "dockyard.dev/v1alpha1",
            "kind": "PrivateRegistry",
            "metadata": {"name": REGISTRY, "namespace": TEAM},
            "spec": spec,
        }
        node.kubectl("apply", "-f", "-", input=json.dumps(resource))
        _wait_condition(node, "Ready")
        _wait_condition(node, "NodeTrustReady")
        hosts_toml = (cluster.CERTS_DIRS[0] / HOST / "hosts.toml").read_text()
        assert f'server = "https://{HOST}"' in hosts_toml and "skip_verify = true" not in hosts_toml, (
            hosts_toml
        )

    ca_pem = base64.b64decode(
        node.kubectl("get", "secret", N.tls_secret, "-n", TEAM, "-o", "jsonpath={.data.ca\\.crt}").stdout
    )
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(ca_pem)
    auth = tmp_path / "auth.json"

    with step("docker login, podman login, skopeo copy (TLS verified)"):
        # Ready means the registry Pod serves; kube-proxy programs the NodePort a moment later.
        kube.eventually(lambda: _answers(node, HOST), timeout=60, what=f"{HOST} to answer on the node")
        # The Docker CLI trusts the CA node trust installed for it on this machine (the node's root):
        # the very CA the cluster holds.
        docker_config = tmp_path / "docker"
        docker_config.mkdir()
        assert (clients.CERTS_D / BY_IP / "ca.crt").read_bytes() == ca_pem
        done = clients.docker_login(
            address=BY_IP, username="ci", password=push_password, config=docker_config
        )
        assert done.returncode == 0, done.stderr
        assert BY_IP in json.loads((docker_config / "config.json").read_text())["auths"]
        node.inside(
            "podman",
            "login",
            "--cert-dir",
            str(certs),
            "--authfile",
            str(auth),
            "--username",
            "ci",
            "--password-stdin",
            HOST,
            input=push_password,
        )
        _build_app_image(tmp_path)
        node.inside(
            "skopeo",
            "copy",
            "--quiet",
            "--dest-cert-dir",
            str(certs),
            "--dest-authfile",
            str(auth),
            "containers-storage:localhost/dockyard-e2e/app:1",
            f"docker://{APP}",
            timeout=300,
        )
        manifest = json.loads(
            node.inside(
                "skopeo",
                "inspect",
                "--raw",
                "--cert-dir",
                str(certs),
                "--authfile",
                str(auth),
                f"docker://{APP}",
            ).stdout
        )
        assert len(manifest["layers"]) == 3, manifest
        pushed_digest = _digest(node, certs=certs, auth=auth)

    with step("a Pod in another namespace pulls through node trust"):
        kube.eventually(
            lambda: (
                node.kubectl("get", "secret", f"{REGISTRY}-pull", "-n", APPS, check=False).returncode == 0
            ),
            timeout=120,
            what="the pull secret copy in the apps namespace",
        )
        node.kubectl("apply", "-f", "-", input=_pod("app", APP, APP_BY_IP))
        kube.eventually(lambda: _pod_running(node, "app"), timeout=180, what="Pod app Running")
        kube.eventually(
            lambda: (
                "pulled from dockyard"
                in node.kubectl("logs", "app", "-c", "app-0", "-n", APPS, check=False).stdout
            ),
            timeout=60,
            what="the app's greeting in its log",
        )

    with step("a Pod with the upstream's own image name runs through the mirror, upstream stopped"):
        _mirror_flow(node, tmp_path, certs=certs, auth=auth)

    with step("negative control: no node trust, an x509 error"):
        # Pulled by the node's address, containerd speaks TLS and cannot verify it: x509. Pulled by
        # `localhost`, containerd 1.6 without a hosts.toml speaks plain HTTP to the TLS port (nginx: 400);
        # only the agent's hosts.toml makes it use TLS there at all. Both fail; neither is insecure.
        _node_trust(node, enabled=False)
        kube.eventually(
            lambda: not any((d / host).exists() for d in cluster.CERTS_DIRS for host in (HOST, BY_IP)),
            timeout=120,
            what=f"the agent to withdraw {HOST} and {BY_IP} from every certs.d",
        )
        refused = clients.docker_login(
            address=BY_IP, username="ci", password=push_password, config=docker_config
        )
        assert refused.returncode != 0 and "certificate" in refused.stderr, refused.stderr
        node.kubectl("apply", "-f", "-", input=_pod("untrusted", APP_BY_IP, pull_policy="Always"))
        node.kubectl("apply", "-f", "-", input=_pod("untrusted-localhost", APP, pull_policy="Always"))
        failure = kube.eventually(
            lambda: _pull_failure(node, "untrusted", needle="x509"),
            timeout=180,
            what="an x509 pull failure in the events of Pod untrusted",
        )
        assert "certificate signed by unknown authority" in failure, failure
        kube.eventually(
            lambda: _pull_failure(node, "untrusted-localhost", needle=HOST),
            timeout=180,
            what="a failed pull in the events of Pod untrusted-localhost",
        )
        node.kubectl("delete", "pod", "untrusted", "untrusted-localhost", "-n", APPS, "--wait=false")
        _node_trust(node, enabled=True)
        kube.eventually(
            lambda: (cluster.CERTS_DIRS[0] / HOST / "hosts.toml").is_file(),
            timeout=120,
            what=f"{HOST} back in containerd's certs.d",
        )
        _wait_condition(node, "NodeTrustReady")

    with step("staged CA rotation, containerd never restarted"):
        containerd_pid = node.pid("containerd")
        old = layout.fingerprint(ca_pem.decode())
        node.kubectl("annotate", "preg", REGISTRY, "-n", TEAM, "dockyard.dev/rotate-ca=e2e-1")

        def ca_in_cluster() -> bytes:
            encoded = node.kubectl(
                "get", "secret", N.tls_secret, "-n", TEAM, "-o", "jsonpath={.data.ca\\.crt}"
            )
            return base64.b64decode(encoded.stdout)

        def rotated() -> bytes | None:
            # Done when nodes trust one CA, not the old one, and it is the CA clients read from the cluster.
            status = _json(node, "get", "preg", REGISTRY, "-n", TEAM)["status"]
            on_nodes = (status.get("nodeTrust") or {}).get("caFingerprintOnNodes") or []
            ready = _condition({"status": status}, "NodeTrustReady")
            pem = ca_in_cluster()
            done = (
                len(on_nodes) == 1
                and on_nodes[0] != old
                and layout.fingerprints(pem.decode()) == on_nodes
                and ready
                and ready["status"] == "True"
            )
            return pem if done else None

        new_pem = kube.eventually(rotated, timeout=420, interval=2, what="the node to trust only the next CA")
        (certs / "ca.crt").write_bytes(new_pem)
        node.kubectl("apply", "-f", "-", input=_pod("after-rotation", APP, APP_BY_IP, pull_policy="Always"))
        kube.eventually(
            lambda: _pod_running(node, "after-rotation"), timeout=180, what="Pod after-rotation Running"
        )
        assert node.pid("containerd") == containerd_pid and node.alive("containerd")

    with step("the registry Pod deleted: the image survives on the PersistentVolume"):
        selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(REGISTRY).items())
        node.kubectl("delete", "pod", "-n", TEAM, "-l", selector, "--wait=true")
        node.kubectl(
            "rollout", "status", f"deployment/{N.deployment}", "-n", TEAM, "--timeout=180s", timeout=200
        )

        def digest_again() -> str | None:
            try:
                return _digest(node, certs=certs, auth=auth)
            except cluster.ClusterError:
                return None

        assert kube.eventually(digest_again, timeout=120, what="the image served again") == pushed_digest

    with step("kubectl delete preg: the node forgets the registry, the claim and its images stay"):
        node.kubectl("delete", "preg", REGISTRY, "-n", TEAM, "--timeout=180s", timeout=200)
        # deletionPolicy Retain (the default): no owner reference, so garbage collection keeps the claim.
        claim = _json(node, "get", "pvc", N.pvc, "-n", TEAM)
        assert claim["metadata"]["labels"][names.RETAINED_FROM] == REGISTRY, claim["metadata"]
        assert not claim["metadata"].get("ownerReferences"), claim["metadata"]
        assert claim["metadata"].get("deletionTimestamp") is None

        kube.eventually(
            lambda: _certs_entries() == before,
            timeout=120,
            what="the registry's certs.d entries to be removed",
        )
        for directory in foreign.values():
            assert (directory / "hosts.toml").read_text() == f'server = "https://{FOREIGN}"\n'
        # Freeing the space is the user's decision (docs/install.md, "Storage survives deletion").
        node.kubectl("delete", "pvc", N.pvc, "-n", TEAM, "--timeout=120s", timeout=140)

    with step("helm uninstall: nothing of Dockyard left"):
        _run(
            helm, "uninstall", RELEASE, "--namespace", SYSTEM, "--wait", "--timeout=3m", env=env, timeout=240
        )

        def leftovers() -> list[str]:
            found = node.kubectl(
                "get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings", "-n", SYSTEM, "-o", "name"
            ).stdout.split()
            found = [f for f in found if not f.endswith(("/kube-root-ca.crt", "serviceaccount/default"))]
            found += [
                line
                for line in node.kubectl(
                    "get", "clusterroles,clusterrolebindings,clusterkopfpeerings", "-o", "name"
                ).stdout.split()
                if "dockyard" in line
            ]
            rules = node.inside("iptables-save").stdout
            # kube-proxy names every rule after its Service (`team/team-registry:https`).
            found += [
                line for line in rules.splitlines() if f"{TEAM}/{REGISTRY}" in line or f"{SYSTEM}/" in line
            ]
            return found

        def nothing_left() -> bool:
            left = leftovers()
            assert not left, left
            return True

        kube.eventually(nothing_left, timeout=120, what="no Dockyard object or iptables rule")
        assert _certs_entries() == before
        drop_in = Path("/") / layout.REGISTRIES_CONF_DIR / layout.REGISTRIES_CONF_FILE
        assert not drop_in.exists(), drop_in.read_text()  # the mirrors drop-in went with the registry
        for d in cluster.CERTS_DIRS:
            marked = [p for p in d.glob(f"*/{layout.MARKER}")] if d.is_dir() else []
            assert not marked, marked
    for directory in foreign.values():
        shutil.rmtree(directory)


@contextlib.contextmanager
def _upstream(tmp: Path) -> collections.abc.Iterator[procs.Process]:
    """CNCF Distribution (the tool cache's) on the node's address: plain HTTP, anonymous, stopped by PID."""
    (tmp / "upstream").mkdir()
    config = tmp / "upstream" / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp / 'upstream' / 'data'}\n"
        f"http:\n  addr: {UPSTREAM}\n  secret: node-mirror-{secrets.token_hex(8)}\n"
    )
    process = procs.Process(
        name="upstream",
        argv=[
            "nsenter", f"--net=/run/netns/{cluster.NETNS}", "--",
            str(tests.support.tool("distribution")), "serve", str(config),
        ],
        log=tmp / "upstream" / "distribution.log",
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
    )  # fmt: skip
    try:
        procs.wait_http(f"http://{UPSTREAM}/v2/", watch=[process], timeout=60)
        yield process
    finally:
        process.stop()


def _mirror_flow(node: cluster.Cluster, tmp: Path, *, certs: Path, auth: Path) -> None:
    with _upstream(tmp) as upstream:
        node.inside(
            "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
            "containers-storage:localhost/dockyard-e2e/app:1", f"docker://{MIRRORED_APP}", timeout=300,
        )  # fmt: skip
        # Neither spec.auth.anonymousPull nor the mirror's: containerd gets in with the node credential
        # alone (a pull-only token for upstream/**), which the agent writes into the mirror's hosts.toml.
        mirror = {
            "upstream": f"http://{UPSTREAM}",
            "prefix": "upstream",
            "wireNodes": True,
            "anonymousPull": False,
        }
        patch = json.dumps({"spec": {"mirrors": [mirror]}})
        node.kubectl("patch", "preg", REGISTRY, "-n", TEAM, "--type=merge", "-p", patch)
        hosts_toml = cluster.CERTS_DIRS[0] / UPSTREAM / "hosts.toml"

        def credentialed() -> bool:  # the Secret reaches the agent through kubelet's volume sync
            return hosts_toml.is_file() and 'Authorization = "Bearer ' in hosts_toml.read_text()

        kube.eventually(
            credentialed, timeout=180, what=f"the agent's hosts.toml for {UPSTREAM}, credentialed"
        )
        text = hosts_toml.read_text()
        assert f'server = "http://{UPSTREAM}"' in text and f"https://{HOST}/v2/upstream" in text
        assert hosts_toml.stat().st_mode & 0o777 == 0o600  # it holds a credential: root only
        node.kubectl(
            "rollout", "status", f"deployment/{N.deployment}", "-n", TEAM, "--timeout=180s", timeout=200
        )
        _wait_condition(node, "Ready")

        def pulled_once() -> bool:  # through Dockyard: fills the mirror's cache with every blob
            done = node.inside(
                "skopeo", "copy", "--quiet", "--src-cert-dir", str(certs), "--src-authfile", str(auth),
                f"docker://{HOST}/upstream/lib/app:1", f"dir:{tmp / 'through-mirror'}",
                check=False, timeout=300,
            )  # fmt: skip
            return done.returncode == 0

        kube.eventually(pulled_once, timeout=120, what="a pull through the mirror")

        def anonymous(path: str) -> str:  # the HTTP status of an anonymous GET, TLS verified
            return node.inside(
                "curl", "-s", "-m", "10", "--cacert", str(certs / "ca.crt"), "-o", "/dev/null",
                "-w", "%{http_code}", "-H", f"Accept: {MANIFEST_TYPES}", f"https://{HOST}{path}", check=False,
            ).stdout  # fmt: skip

        assert anonymous("/v2/upstream/lib/app/manifests/1") == "401"  # only the node credential opens it
        assert anonymous("/v2/team/app/manifests/1") == "401"  # and the rest of the registry stays closed
        upstream.stop()
    assert node.inside("curl", "-s", "-m", "3", f"http://{UPSTREAM}/v2/", check=False).returncode != 0

    node.kubectl("apply", "-f", "-", input=_pod("mirrored", MIRRORED_APP, pull_policy="Always"))
    kube.eventually(lambda: _pod_running(node, "mirrored"), timeout=180, what="Pod mirrored Running")
    pod = _json(node, "get", "pod", "mirrored", "-n", APPS)
    assert pod["spec"]["containers"][0]["image"] == MIRRORED_APP  # the upstream's own name, unchanged

    def wired() -> dict[str, Any] | None:
        status = _json(node, "get", "preg", REGISTRY, "-n", TEAM)["status"]
        mirrors = status.get("mirrors") or []
        ready = _condition({"status": status}, "MirrorsReady")
        if mirrors and mirrors[0].get("nodesWired") == 1 and ready is not None:
            return {"mirror": mirrors[0], "condition": ready}
        return None

    found = kube.eventually(wired, timeout=120, what="status.mirrors to count the wired node")
    assert found["mirror"]["nodeHost"] == UPSTREAM, found
    assert f"{UPSTREAM} wired on 1/1 nodes" in found["condition"]["message"], found
    node.kubectl("delete", "pod", "mirrored", "-n", APPS, "--wait=false")
