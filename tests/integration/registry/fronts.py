"""nginx with the operator's rendered config in front of a real registry: a pod without Kubernetes.

Owns: `Front` (what clients see: nginx's address, the CA of its certificate, the registry behind it, both
logs) and `nginx_in_front`, which renders `nginx_configmap.render` for temp paths, starts Debian's nginx on a
reserved loopback port and stops it by its PID. The registry is the caller's (started before, stopped after).
Must not: choose the registry's arguments (each test passes the pod's, see deployment.registry_args).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path

from dockyard_operator import model
from dockyard_operator.builders import nginx_configmap
from tests.integration.registry import certs, harness
from tests.support import procs


@dataclasses.dataclass
class Front:
    """nginx in front of a registry: what clients see."""

    host: str
    port: int
    ca: Path
    registry: harness.Registry
    nginx_log: Path
    data: Path  # the registry's data directory (nginx serves blobs from it, and writes bodies into it)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, credentials: harness.Credentials | None) -> harness.Client:
        return harness.Client(host=self.host, port=self.port, ca_file=self.ca, credentials=credentials)

    def logs(self) -> str:
        return f"{self.registry.log_tail()}\n--- nginx:\n" + "\n".join(
            self.nginx_log.read_text(errors="replace").splitlines()[-30:]
        )


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if found is None:
        raise FileNotFoundError("nginx is not installed: run `make setup` (hack/setup.sh installs it)")
    return found


@contextlib.contextmanager
def nginx_in_front(
    *,
    tmp: Path,
    registry: harness.Registry,
    data_dir: Path,
    ips: Sequence[str] = ("127.0.0.1",),
    token_flow: bool = False,
    body_files: bool = False,
) -> Iterator[Front]:
    """nginx, config rendered by the operator's builder, on a loopback port in front of `registry` (which
    must listen without TLS); its certificate names `ips` and localhost. `body_files`: the operator's
    variant for a data volume (the registry must run with `--body-file-dir`, see bodyfile.DIR_NAME)."""
    tls = certs.write_server_tls(directory=tmp / "tls", ips=list(ips))
    (tmp / "cache").mkdir(exist_ok=True)
    port = procs.reserve_port()
    conf = tmp / "nginx.conf"
    conf.write_text(
        nginx_configmap.render(
            nginx=model.Nginx(),
            paths=nginx_configmap.NginxPaths(
                cert=str(tls.cert_file), key=str(tls.key_file), pid=str(tmp / "nginx.pid"),
                temp_dir=str(tmp / "cache"), data_dir=str(data_dir),
            ),
            upstream=f"127.0.0.1:{registry.port}",
            listen_port=port.number,
            token_flow=token_flow,
            body_files=body_files,
        )
    )  # fmt: skip
    # As root, nginx would drop its workers to `nobody`, who cannot enter pytest's private temp dir.
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    nginx_log = tmp / "nginx.log"
    nginx = None
    try:
        nginx = procs.Process(
            name="nginx",
            argv=[nginx_binary(), "-e", "stderr", "-c", str(conf), "-p", str(tmp), "-g", directives],
            log=nginx_log,
            ports=[port],
        )
        procs.wait_http(
            f"https://127.0.0.1:{port.number}/healthz",
            watch=[nginx],
            timeout=30,
            context=ssl.create_default_context(cafile=str(tls.ca_file)),
        )
        yield Front(
            host="127.0.0.1", port=port.number, ca=tls.ca_file, registry=registry, nginx_log=nginx_log,
            data=data_dir,
        )  # fmt: skip
    finally:
        if nginx is not None:
            nginx.stop(grace=15)
        port.release()
