"""Run a Pod template the operator created as local processes: the pod without a kubelet or an image.

`PodRunner(template=…, namespace=…, client=…, root=…)` takes the Pod template of a Deployment or DaemonSet
read from the real API server and, for each container:
- maps the command to this checkout: `dockyard-registry` → the virtualenv's console script, `python` →
  the interpreter running the tests (so `python -m dockyard_operator…` is this checkout), `nginx` → Debian's
  `/usr/sbin/nginx`; anything else is refused with its name;
- gives it a private root directory `<root>/rootfs/<container>/` in which every volumeMount is a symlink to
  the volume's local directory (or to its `subPath` directory, created when missing; parents first), and
  rewrites every absolute path in its argv (and in the text of the
  ConfigMaps it mounts) that is a mount path, lies under one or is a parent of one into that root, so two
  containers mounting different volumes at the same path (both nginx and the registry mount `/tmp`) stay
  apart, exactly like mount namespaces;
- materializes volumes: Secret and ConfigMap volumes are fetched with the client and written the way kubelet
  does (a timestamped directory, the `..data` symlink flipped atomically, one symlink per key; `items` and
  `defaultMode` honoured; a missing `optional` one is an empty volume), emptyDir and PVC volumes are
  directories under `<root>/volumes/`, hostPath volumes live under `<root>/host/`
  (`host_path("/etc/containers/certs.d")` finds them);
- remaps ports: every containerPort, and every port in `extra_ports` (ports a pod uses on loopback without
  declaring them, like the registry's 5000), gets a reserved loopback port unless `ports` pins it (a Service's
  node port, so `localhost:<nodePort>` reaches the pod as kube-proxy would make it); `127.0.0.1:P`,
  `localhost:P`, `0.0.0.0:P` and nginx's `listen P` are rewritten in argv and mounted ConfigMap text;
- resolves env: plain values, `fieldRef` (metadata.name/namespace, spec.nodeName, status.podIP), and keys of
  Secrets and ConfigMaps.
`refresh()` re-fetches Secrets and ConfigMaps and republishes them atomically, as kubelet does on an update.
Processes are stopped by their own PIDs (SIGTERM, then SIGKILL); `stop()` runs on context exit.

Why nginx gets `user root;` when the tests run as root: nginx would otherwise drop its workers to `nobody`,
who cannot enter pytest's private temp directories; a non-root run needs no change.

Must not: contact anything but the API server, run containers with commands it does not know, or leave a
process behind.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import datetime
import os
import re
import shutil
import ssl
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import lightkube
import lightkube.resources.core_v1

from tests.support import kube, procs

NGINX = Path("/usr/sbin/nginx")
START_TIMEOUT = 60.0


class PodRunnerError(RuntimeError):
    """The template uses something the runner cannot reproduce locally; the message names it."""


def write_projected(
    directory: Path, files: collections.abc.Mapping[str, bytes], *, mode: int = 0o644
) -> bool:
    """Publish `files` in `directory` the way kubelet publishes a Secret/ConfigMap volume; False if unchanged.

    A new `..<timestamp>` directory holds the files, the `..data` symlink is flipped to it with a rename (so a
    reader sees the old or the new version, never a mix), each key is a symlink through `..data`, and the
    previous version and keys that disappeared are removed afterwards. Like kubelet, an unchanged volume is
    left alone (a reader never races a needless swap).
    """
    directory.mkdir(parents=True, exist_ok=True)
    if _published(directory) == dict(files):
        return False
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    version = directory / stamp
    version.mkdir()
    for key, data in files.items():
        target = version / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
    data_link = directory / "..data"
    old = os.readlink(data_link) if data_link.is_symlink() else None
    tmp_link = directory / "..data_tmp"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    tmp_link.symlink_to(stamp)
    tmp_link.replace(data_link)
    top_level = {key.split("/", 1)[0] for key in files}
    for key in top_level:
        link = directory / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
    for entry in directory.iterdir():
        if not entry.name.startswith("..") and entry.is_symlink() and entry.name not in top_level:
            entry.unlink()
    if old is not None and old != stamp:
        shutil.rmtree(directory / old, ignore_errors=True)
    return True


def _published(directory: Path) -> dict[str, bytes] | None:
    """The files of the current version of a projected volume, None when there is none."""
    data_link = directory / "..data"
    if not data_link.is_symlink():
        return None
    version = directory / os.readlink(data_link)
    return {
        str(path.relative_to(version)): path.read_bytes()
        for path in sorted(version.rglob("*"))
        if path.is_file()
    }


@dataclasses.dataclass
class _Volume:
    name: str
    source: dict[str, Any]
    path: Path


@dataclasses.dataclass
class Container:
    """One container of the pod as a local process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    rootfs: Path
    log: Path
    probe: dict[str, Any] | None
    process: procs.Process | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class PodRunner:
    """The containers of one Pod template as local processes; use as a context manager."""

    def __init__(
        self,
        *,
        template: collections.abc.Mapping[str, Any],
        namespace: str,
        client: lightkube.Client,
        root: Path,
        pod_name: str = "local-pod",
        node_name: str = "local-node",
        extra_ports: collections.abc.Iterable[int] = (),
        ports: collections.abc.Mapping[int, int] | None = None,
        env: collections.abc.Mapping[str, str] | None = None,
    ) -> None:
        self.template = template
        self.namespace = namespace
        self.client = client
        self.root = root
        self.pod_name = pod_name
        self.node_name = node_name
        self.base_env = dict(env) if env is not None else {}
        spec = template["spec"]
        containers = spec.get("containers") or []
        declared = [p["containerPort"] for c in containers for p in c.get("ports") or []]
        # Reserved for the runner's lifetime (restarts included), released by `close()` (or `with`'s exit).
        self._reserved = {port: procs.reserve_port() for port in [*declared, *extra_ports]}
        self.ports = {port: reserved.number for port, reserved in self._reserved.items()}
        self.ports.update(ports or {})  # pinned: e.g. the Service's node port, as kube-proxy would forward it
        self.volumes = {v["name"]: self._volume(v) for v in spec.get("volumes") or []}
        self._refreshing = threading.Lock()
        self.containers = [self._container(c) for c in containers]

    # ------------------------------------------------------------------------------ public

    def __enter__(self) -> PodRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    def close(self) -> None:
        """Release the loopback ports reserved for the containers (after `stop()`)."""
        for reserved in self._reserved.values():
            reserved.release()

    def port(self, container_port: int) -> int:
        """The local loopback port standing in for `container_port`."""
        return self.ports[container_port]

    def host_path(self, path: str) -> Path:
        """Where a node path (a hostPath volume's file) lives locally."""
        return self.root / "host" / path.lstrip("/")

    def container(self, name: str) -> Container:
        for container in self.containers:
            if container.name == name:
                return container
        raise KeyError(name)

    def start(self, *, wait: bool = True) -> None:
        """Materialize volumes, start every container, and wait for readiness probes (if `wait`)."""
        self.refresh()
        try:
            for container in self.containers:
                container.process = procs.Process(
                    name=container.name, argv=container.argv, log=container.log, env=container.env
                )
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, *, timeout: float = START_TIMEOUT) -> None:
        """Wait until every container with an httpGet readiness probe passes it (no TLS verification, as
        kubelet's probes); every container must stay alive meanwhile."""
        for container in self.containers:
            probe = container.probe
            if probe is None or "httpGet" not in probe:
                continue
            get = probe["httpGet"]
            port = get["port"]
            if isinstance(port, str):
                port = self._named_port(port)
            url = f"{get.get('scheme', 'HTTP').lower()}://127.0.0.1:{self.ports.get(port, port)}{get['path']}"

            def ready(container: Container = container, url: str = url) -> bool:
                assert container.process is not None
                container.process.check_alive()
                return _http_ok(url)

            kube.eventually(ready, timeout=timeout, interval=0.25, what=f"{container.name} ready at {url}")

    def check_alive(self) -> None:
        for container in self.containers:
            assert container.process is not None, f"{container.name} was never started"
            container.process.check_alive()

    def stop(self) -> dict[str, int]:
        """Stop every container by PID (reverse order); their exit codes."""
        codes: dict[str, int] = {}
        for container in reversed(self.containers):
            if container.process is not None:
                codes[container.name] = container.process.stop()
        return codes

    def refresh(self) -> None:
        """(Re)publish every Secret and ConfigMap volume from the API server, atomically per volume.

        Safe to call from a thread playing kubelet's sync loop while the test also calls it.
        """
        with self._refreshing:
            self._refresh()

    def _refresh(self) -> None:
        for volume in self.volumes.values():
            if "secret" in volume.source:
                self._publish(volume, kind="secret")
            elif "configMap" in volume.source:
                self._publish(volume, kind="configMap")

    # ------------------------------------------------------------------------------ volumes

    def _volume(self, volume: dict[str, Any]) -> _Volume:
        name = volume["name"]
        if "hostPath" in volume:
            path = self.host_path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type", "") in ("", "DirectoryOrCreate", "Directory"):
                path.mkdir(parents=True, exist_ok=True)
        elif any(kind in volume for kind in ("emptyDir", "persistentVolumeClaim", "secret", "configMap")):
            path = self.root / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
        else:
            raise PodRunnerError(f"volume {name}: unsupported source {sorted(set(volume) - {'name'})}")
        return _Volume(name=name, source=volume, path=path)

    def _publish(self, volume: _Volume, *, kind: str) -> None:
        source = volume.source[kind]
        try:
            data = self._volume_data(source, kind=kind)
        except lightkube.ApiError as exc:
            if exc.status.code != 404 or not source.get("optional"):
                raise
            # kubelet mounts a missing optional Secret or ConfigMap as an empty volume
            write_projected(volume.path, {}, mode=source.get("defaultMode", 0o644))
            return
        if source.get("items"):
            data = {item["path"]: data[item["key"]] for item in source["items"]}
        if kind == "configMap":
            data = {key: self._rewrite_text(value, volume=volume) for key, value in data.items()}
        write_projected(volume.path, data, mode=source.get("defaultMode", 0o644))

    def _volume_data(self, source: dict[str, Any], *, kind: str) -> dict[str, bytes]:
        if kind == "secret":
            obj = self.client.get(
                lightkube.resources.core_v1.Secret, source["secretName"], namespace=self.namespace
            )
            return {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}
        cm = self.client.get(lightkube.resources.core_v1.ConfigMap, source["name"], namespace=self.namespace)
        data = {k: v.encode() for k, v in (cm.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.binaryData or {}).items()})
        return data

    def _rewrite_text(self, data: bytes, *, volume: _Volume) -> bytes:
        # A ConfigMap's text is read by the containers mounting it: rewrite paths for the first of them (a
        # config file shared by containers with different mounts at its paths cannot be run locally anyway).
        for container in self._spec_containers():
            if any(m["name"] == volume.name for m in container.get("volumeMounts") or []):
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    return data
                return self._rewrite(text, mounts=container.get("volumeMounts") or [],
                                     rootfs=self._rootfs(container["name"])).encode()  # fmt: skip
        return data

    # --------------------------------------------------------------------------- containers

    def _spec_containers(self) -> list[dict[str, Any]]:
        return list(self.template["spec"].get("containers") or [])

    def _rootfs(self, container: str) -> Path:
        return self.root / "rootfs" / container

    def _container(self, spec: dict[str, Any]) -> Container:
        name = spec["name"]
        mounts = spec.get("volumeMounts") or []
        rootfs = self._rootfs(name)
        rootfs.mkdir(parents=True, exist_ok=True)
        # Parents first, as container runtimes mount them: a mount inside another lands in its volume.
        for mount in sorted(mounts, key=lambda m: len(m["mountPath"].rstrip("/"))):
            source = self.volumes[mount["name"]].path
            sub = mount.get("subPath")
            if sub:
                if sub.startswith("/") or ".." in Path(sub).parts:
                    raise PodRunnerError(f"container {name}: subPath {sub!r} leaves its volume")
                source = source / sub
                source.mkdir(parents=True, exist_ok=True)  # kubelet creates a missing subPath directory
            link = rootfs / mount["mountPath"].lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or (link.exists() and link.resolve() == source.resolve()):
                continue  # already there (a subPath of the volume its parent mount shows at that place)
            link.symlink_to(source)
        command = [*(spec.get("command") or []), *(spec.get("args") or [])]
        if not spec.get("command"):
            raise PodRunnerError(f"container {name}: no command (image entrypoints are unknown locally)")
        argv = [self._rewrite(arg, mounts=mounts, rootfs=rootfs) for arg in command]
        argv[0] = _executable(command[0], container=name)
        if Path(command[0]).name == "nginx" and os.geteuid() == 0:
            argv = _nginx_as_root(argv)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1", **self.base_env}
        if os.environ.get("PYTHONPATH"):  # the checkout under test, when it is not the installed one
            env.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
        env.update(self._env(spec))
        return Container(
            name=name,
            argv=argv,
            env=env,
            rootfs=rootfs,
            log=self.root / f"{name}.log",
            probe=spec.get("readinessProbe"),
        )

    def _env(self, spec: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        fields = {
            "metadata.name": self.pod_name,
            "metadata.namespace": self.namespace,
            "spec.nodeName": self.node_name,
            "status.podIP": "127.0.0.1",
        }
        for item in spec.get("env") or []:
            source = item.get("valueFrom")
            if source is None:
                env[item["name"]] = item.get("value", "")
            elif "fieldRef" in source:
                env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                obj = self.client.get(
                    lightkube.resources.core_v1.Secret, ref["name"], namespace=self.namespace
                )
                env[item["name"]] = base64.b64decode((obj.data or {})[ref["key"]]).decode()
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                cm = self.client.get(
                    lightkube.resources.core_v1.ConfigMap, ref["name"], namespace=self.namespace
                )
                env[item["name"]] = (cm.data or {})[ref["key"]]
            else:
                raise PodRunnerError(f"env {item['name']}: unsupported valueFrom {sorted(source)}")
        return env

    def _named_port(self, name: str) -> int:
        for container in self._spec_containers():
            for port in container.get("ports") or []:
                if port.get("name") == name:
                    return int(port["containerPort"])
        raise PodRunnerError(f"no container port named {name!r}")

    # ------------------------------------------------------------------------------ rewriting

    def _rewrite(self, text: str, *, mounts: list[dict[str, Any]], rootfs: Path) -> str:
        """Paths reachable through mounts → the container's local root; pod ports → local ports."""
        mount_paths = sorted({m["mountPath"].rstrip("/") or "/" for m in mounts}, key=len, reverse=True)

        def path(match: re.Match[str]) -> str:
            candidate = match.group(0)
            bare = candidate.rstrip("/")
            for mount in mount_paths:
                if bare == mount or bare.startswith(mount + "/") or mount.startswith(bare + "/"):
                    return f"{rootfs}{candidate}"
            return candidate

        text = re.sub(r"(?<![\w.:/])/[\w.@+-]+(?:/[\w.@+-]*)*", path, text)
        for pod_port, local in self.ports.items():
            text = re.sub(rf"\b(127\.0\.0\.1|localhost|0\.0\.0\.0):{pod_port}\b", rf"\g<1>:{local}", text)
            text = re.sub(rf"\blisten {pod_port}\b", f"listen 127.0.0.1:{local}", text)
        return text


def _executable(command: str, *, container: str) -> str:
    """The local program standing in for a container image's command."""
    name = Path(command).name
    venv_bin = Path(sys.executable).parent
    if name in ("python", "python3"):
        return sys.executable
    if name.startswith("dockyard-"):
        local = venv_bin / name
        if local.is_file():
            return str(local)
    if name == "nginx":
        if NGINX.is_file():
            return str(NGINX)
        raise FileNotFoundError("nginx is not installed: run `make setup` (hack/setup.sh installs it)")
    raise PodRunnerError(f"container {container}: no local stand-in for command {command!r}")


def _nginx_as_root(argv: list[str]) -> list[str]:
    if "-g" in argv:
        index = argv.index("-g") + 1
        return [*argv[:index], f"{argv[index]} user root;", *argv[index + 1 :]]
    return [*argv, "-g", "user root;"]


def _http_ok(url: str) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # kubelet's HTTPS probes do not verify either
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310 - loopback
            return bool(200 <= response.status < 400)
    except (urllib.error.URLError, OSError):
        return False
