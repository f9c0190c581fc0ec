"""The pod runner (tests/support/podrunner.py): a Pod template as local processes.

Covers, with a stand-in API client:
- volumes published like kubelet (`..data` symlink, key symlinks, `items`, `defaultMode`), and `refresh()`
  swapping a changed ConfigMap atomically and dropping removed keys;
- per-container roots: two containers mounting different volumes at the same path stay apart, argv paths
  under, equal to or above a mount are rewritten, other paths (`/dev/stdout`, URL paths) are not;
- ports: declared and extra ports are remapped in argv and in mounted ConfigMap text (nginx `listen`);
- env from values, the downward API and Secret/ConfigMap keys; commands without a local stand-in, a subPath
  leaving its volume and unknown volume kinds are refused by name; a subPath mount shows that directory of
  its volume, also nested in a mount of the same volume (the sidecar's upload body directory);
Against the real API server, with the real operator:
- the Deployment of a PrivateRegistry runs locally (registry + nginx), answers over TLS verified by the
  registry's CA with the Basic challenge and the user from the user Secret, and stops by PID.
"""

from __future__ import annotations

import base64
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import lightkube
import lightkube.models.meta_v1
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import pytest

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import podrunner

core = lightkube.resources.core_v1
meta = lightkube.models.meta_v1


class FakeClient:
    """Answers `get` for Secrets and ConfigMaps from dicts (what the runner needs of lightkube.Client)."""

    def __init__(self) -> None:
        self.configmaps: dict[str, dict[str, str]] = {}
        self.secrets: dict[str, dict[str, bytes]] = {}

    def get(self, resource: Any, name: str, *, namespace: str) -> Any:
        if resource is core.ConfigMap:
            return core.ConfigMap(metadata=meta.ObjectMeta(name=name), data=dict(self.configmaps[name]))
        data = {k: base64.b64encode(v).decode() for k, v in self.secrets[name].items()}
        return core.Secret(metadata=meta.ObjectMeta(name=name), data=data)


def template(containers: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {}, "spec": {"containers": containers, "volumes": volumes}}


def runner(tmp_path: Path, client: FakeClient, tpl: dict[str, Any], **kwargs: Any) -> podrunner.PodRunner:
    return podrunner.PodRunner(
        template=tpl,
        namespace="ns",
        client=client,  # type: ignore[arg-type]
        root=tmp_path,
        **kwargs,
    )


def test_volumes_are_published_like_kubelet_and_refresh_swaps_them(tmp_path: Path) -> None:
    client = FakeClient()
    client.configmaps["cfg"] = {"a": "one", "b": "two"}
    client.secrets["sec"] = {"tls.crt": b"CERT", "tls.key": b"KEY"}
    tpl = template(
        [{"name": "c", "command": ["python", "-c", "pass"], "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"}]}],
        [{"name": "cfg", "configMap": {"name": "cfg"}},
         {"name": "sec", "secret": {"secretName": "sec", "items": [{"key": "tls.key", "path": "key.pem"}],
                                    "defaultMode": 0o400}}],
    )  # fmt: skip
    pod = runner(tmp_path, client, tpl)

    pod.refresh()
    cfg = pod.volumes["cfg"].path
    first = os.readlink(cfg / "..data")
    client.configmaps["cfg"] = {"a": "uno"}
    pod.refresh()

    sec = pod.volumes["sec"].path
    assert sorted(p.name for p in sec.iterdir() if not p.name.startswith("..")) == ["key.pem"]
    assert (sec / "key.pem").read_bytes() == b"KEY"
    assert oct((sec / "key.pem").stat().st_mode & 0o777) == "0o400"
    assert (cfg / "a").is_symlink() and (cfg / "a").read_text() == "uno"
    assert not (cfg / "b").exists(), "a removed key must disappear"
    assert os.readlink(cfg / "..data") != first and not (cfg / first).exists()


def test_each_container_sees_its_own_volumes_at_the_same_path(tmp_path: Path) -> None:
    tpl = template(
        [{"name": "one", "command": ["python", "/tmp/x", "/tmp", "/etc", "/dev/stdout", "http://h/tmp/x"],
          "volumeMounts": [{"name": "t1", "mountPath": "/tmp"}, {"name": "e", "mountPath": "/etc/app/conf"}]},
         {"name": "two", "command": ["python", "/tmp/x"],
          "volumeMounts": [{"name": "t2", "mountPath": "/tmp"}]}],
        [{"name": "t1", "emptyDir": {}}, {"name": "t2", "emptyDir": {}}, {"name": "e", "emptyDir": {}}],
    )  # fmt: skip
    pod = runner(tmp_path, FakeClient(), tpl)
    one, two = pod.container("one"), pod.container("two")

    assert one.argv[0] == sys.executable
    assert one.argv[1:] == [f"{one.rootfs}/tmp/x", f"{one.rootfs}/tmp", f"{one.rootfs}/etc", "/dev/stdout",
                            "http://h/tmp/x"]  # fmt: skip
    assert two.argv[1] == f"{two.rootfs}/tmp/x"
    (one.rootfs / "tmp" / "x").write_text("one's")
    assert not (two.rootfs / "tmp" / "x").exists()
    assert (pod.volumes["t1"].path / "x").read_text() == "one's"
    assert (one.rootfs / "etc" / "app" / "conf").resolve() == pod.volumes["e"].path.resolve()


def test_ports_are_remapped_in_argv_and_in_mounted_config_text(tmp_path: Path) -> None:
    client = FakeClient()
    client.configmaps["conf"] = {"nginx.conf": "listen 5443 ssl;\nserver 127.0.0.1:5000;\npid /run/n.pid;\n"}
    tpl = template(
        [{"name": "web", "command": ["nginx", "-c", "/etc/n/nginx.conf"], "args": ["-g", "daemon off;"],
          "ports": [{"name": "https", "containerPort": 5443}],
          "volumeMounts": [{"name": "conf", "mountPath": "/etc/n"}, {"name": "run", "mountPath": "/run"}]},
         {"name": "app", "command": ["dockyard-registry", "serve", "--listen", "127.0.0.1:5000"]}],
        [{"name": "conf", "configMap": {"name": "conf"}}, {"name": "run", "emptyDir": {}}],
    )  # fmt: skip
    pod = runner(tmp_path, client, tpl, extra_ports=[5000])

    pod.refresh()
    text = (pod.volumes["conf"].path / "nginx.conf").read_text()
    web, app = pod.container("web"), pod.container("app")

    assert pod.port(5443) != 5443 and pod.port(5000) != 5000
    assert f"listen 127.0.0.1:{pod.port(5443)} ssl;" in text
    assert f"server 127.0.0.1:{pod.port(5000)};" in text
    assert f"pid {web.rootfs}/run/n.pid;" in text
    assert app.argv[-1] == f"127.0.0.1:{pod.port(5000)}"
    assert app.argv[0] == str(Path(sys.executable).parent / "dockyard-registry")
    assert web.argv[0] == str(podrunner.NGINX)
    assert web.argv[1:3] == ["-c", f"{web.rootfs}/etc/n/nginx.conf"]
    if os.geteuid() == 0:
        assert web.argv[-1] == "daemon off; user root;"


def test_env_comes_from_values_the_downward_api_and_referenced_keys(tmp_path: Path) -> None:
    client = FakeClient()
    client.secrets["s"] = {"token": b"t0k"}
    client.configmaps["c"] = {"level": "debug"}
    tpl = template(
        [{"name": "c", "command": ["python"], "env": [
            {"name": "PLAIN", "value": "v"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "level"}}},
        ]}],
        [],
    )  # fmt: skip
    env = (
        runner(tmp_path, client, tpl, pod_name="p-1", node_name="n-1", env={"EXTRA": "x"}).container("c").env
    )

    assert {k: env[k] for k in ("PLAIN", "POD", "NODE", "NS", "TOKEN", "LEVEL", "EXTRA")} == {
        "PLAIN": "v", "POD": "p-1", "NODE": "n-1", "NS": "ns", "TOKEN": "t0k", "LEVEL": "debug", "EXTRA": "x",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("container", "volumes", "message"),
    [
        ({"name": "c", "command": ["/bin/busybox", "sh"]}, [], "no local stand-in"),
        ({"name": "c", "args": ["x"]}, [], "no command"),
        ({"name": "c", "command": ["python"],
          "volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "../y"}]},
         [{"name": "v", "emptyDir": {}}], "subPath"),
        ({"name": "c", "command": ["python"]}, [{"name": "v", "nfs": {"server": "s"}}], "unsupported source"),
    ],
)  # fmt: skip
def test_what_cannot_run_locally_is_refused_by_name(
    tmp_path: Path, container: dict[str, Any], volumes: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(podrunner.PodRunnerError, match=message):
        runner(tmp_path, FakeClient(), template([container], volumes))


def test_a_subpath_mount_shows_that_directory_of_its_volume_even_inside_a_mount_of_it(tmp_path: Path) -> None:
    tpl = template(
        [{"name": "c", "command": ["python", "/data", "/bodies"],
          "volumeMounts": [{"name": "v", "mountPath": "/data/.inner", "subPath": ".inner"},
                           {"name": "v", "mountPath": "/data", "readOnly": True},
                           {"name": "v", "mountPath": "/bodies", "subPath": ".inner"}]}],
        [{"name": "v", "emptyDir": {}}],
    )  # fmt: skip
    c = runner(tmp_path, FakeClient(), tpl).container("c")

    (Path(c.argv[2]) / "file").write_text("x")

    assert (Path(c.argv[1]) / ".inner" / "file").read_text() == "x"
    assert (Path(c.argv[1]) / ".inner").resolve() == (Path(c.argv[2])).resolve()


def test_a_nodes_host_path_lives_under_the_runner_root(tmp_path: Path) -> None:
    tpl = template(
        [{"name": "c", "command": ["python", "--host-root", "/host"],
          "volumeMounts": [{"name": "h", "mountPath": "/host/etc/docker/certs.d"}]}],
        [{"name": "h", "hostPath": {"path": "/etc/docker/certs.d", "type": "DirectoryOrCreate"}}],
    )  # fmt: skip
    pod = runner(tmp_path, FakeClient(), tpl)
    c = pod.container("c")

    (Path(c.argv[2]) / "etc/docker/certs.d/file").write_text("x")

    assert pod.host_path("/etc/docker/certs.d/file").read_text() == "x"
    assert pod.host_path("/etc/docker/certs.d").is_relative_to(tmp_path / "host")


# ---------------------------------------------------------------------------------- real API server


@pytest.mark.integration
def test_the_operators_registry_pod_runs_locally_and_serves_verified_tls(
    kube_client: lightkube.Client, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    password = "correct horse battery staple"
    spec = {
        "storage": {"emptyDir": {}},
        "auth": {"users": [cluster.user("pusher", "pusher-password", access="push")]},
    }
    cluster.create_registry(kube_client, namespace=namespace, spec=spec, passwords={"pusher": password})
    n = names.Names.of("demo")
    deployment: Any = cluster.wait_child(
        kube_client, lightkube.resources.apps_v1.Deployment, n.deployment, namespace
    )
    tls: Any = cluster.wait_child(kube_client, core.Secret, n.tls_secret, namespace)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(cluster.secret_data(tls)["ca.crt"])
    tpl = deployment.to_dict()["spec"]["template"]

    with podrunner.PodRunner(
        template=tpl, namespace=namespace, client=kube_client, root=tmp_path / "pod", extra_ports=[5000]
    ) as pod:
        url = f"https://localhost:{pod.port(5443)}/v2/"
        context = ssl.create_default_context(cafile=str(ca))
        with pytest.raises(urllib.error.HTTPError) as challenge:
            urllib.request.urlopen(url, context=context, timeout=30)
        request = urllib.request.Request(url)
        request.add_header(
            "Authorization", "Basic " + base64.b64encode(f"pusher:{password}".encode()).decode()
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as response:  # noqa: S310
            status = response.status
        pod.check_alive()
        processes = [c.process for c in pod.containers]

    assert challenge.value.code == 401
    assert challenge.value.headers["WWW-Authenticate"] == 'Basic realm="demo"'
    assert status == 200
    assert all(p is not None and not p.alive() for p in processes)
