"""The servers under test, each behind its own nginx on a reserved loopback port, and the static-file ceiling.

- `dockyard`: `dockyard-registry serve` with the pod's exact arguments (plain HTTP on loopback, htpasswd and
  access.yaml, `--accel-redirect`), behind the nginx.conf the operator renders (`nginx_configmap.render`):
  TLS, `auth_request` to `/auth`, blob bytes sent by nginx from the data dir.
- `dist2` / `dist3`: CNCF Distribution 2.8.2 (Debian's `docker-registry`) and v3 (from the Go tools cache)
  behind nginx with `auth_basic` and a bcrypt htpasswd, the setup Distribution's docs recommend, given the
  same TLS settings, upstream keep-alive and unbuffered proxying as Dockyard's nginx so that only the
  registry and the auth path differ.
- `static`: nginx with the same TLS settings serving one file, the ceiling for blob GETs.
- With a `Bucket`, Dockyard and Distribution keep their content in an S3 bucket instead (the S3 section,
  `bench/s3_push_pull.py`): Dockyard with the pod's S3 arguments and the operator's nginx.conf without the
  blob location; Distribution with its `s3` storage driver. Both redirect blob GETs to presigned URLs,
  or, with `Bucket.redirect` off (`--no-s3-redirect`, `redirect: disable: true`), stream them themselves.

Owns: config files, users, starting and stopping these processes, waiting until they answer.
Must not: listen anywhere but 127.0.0.1, or leave a process running (`Target.stop`).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import ssl
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support import procs as support_procs

from bench import prereqs, procs, tlsfiles
from dockyard_operator import model
from dockyard_operator.builders import nginx_configmap
from dockyard_registry import bodyfile

START_TIMEOUT = 60.0
MAX_COPY_OBJECT = 5 << 30  # CopyObject's limit, Distribution's largest multipartcopythresholdsize
USER = "bench"
REALM = "bench"


@dataclasses.dataclass
class Target:
    """One thing clients talk to: nginx on `port`, optionally a registry process behind it."""

    key: str
    label: str
    port: int
    nginx: procs.Proc
    registry: procs.Proc | None
    data_dir: Path | None
    password: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def creds(self) -> str:
        return f"{USER}:{self.password}"

    @property
    def authorization(self) -> str:
        return "Basic " + base64.b64encode(self.creds.encode()).decode()

    def processes(self) -> dict[str, procs.Proc]:
        found = {"nginx": self.nginx}
        if self.registry is not None:
            found["registry"] = self.registry
        return found

    def stop(self) -> None:
        self.nginx.stop()
        if self.registry is not None:
            self.registry.stop()


@dataclasses.dataclass(frozen=True)
class Bucket:
    """An S3 bucket (and a key prefix of its own) a registry keeps its content in."""

    endpoint: str
    name: str
    prefix: str
    access_key: str
    secret_key: str
    redirect: bool = True  # blob GETs answered with a presigned URL (else the registry streams them)

    def env(self) -> dict[str, str]:
        return {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


def _nginx_directives() -> str:
    # As root, nginx would drop its workers to `nobody`, who cannot enter the run's private temp dir.
    return "daemon off;" + (" user root;" if os.geteuid() == 0 else "")


def _start_nginx(
    *, tools: prereqs.Tools, conf: Path, workdir: Path, name: str, port: support_procs.Port
) -> procs.Proc:
    return procs.Proc(
        name=name,
        argv=[tools.nginx, "-e", "stderr", "-c", str(conf), "-p", str(workdir), "-g", _nginx_directives()],
        log=workdir / "nginx.log",
        ports=[port],
    )


def _wait_ready(
    *, url: str, tls: tlsfiles.ServerTLS, authorization: str | None, watch: list[procs.Proc]
) -> None:
    support_procs.wait_http(
        url,
        watch=watch,
        timeout=START_TIMEOUT,
        context=ssl.create_default_context(cafile=str(tls.ca_file)),
        headers={"Authorization": authorization} if authorization else None,
    )


def _tls_server_head(*, port: int, tls: tlsfiles.ServerTLS, zone: str) -> str:
    """The listen/TLS lines, identical to what the operator renders for Dockyard's sidecar."""
    return f"""\
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tls.cert_file};
        ssl_certificate_key {tls.key_file};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {nginx_configmap.TLS12_CIPHERS};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:{zone}:10m;
        ssl_session_timeout 1h;
"""


def _http_head(*, workdir: Path) -> str:
    """Global and http-level settings, identical to the operator's rendering."""
    cache = workdir / "cache"
    cache.mkdir(exist_ok=True)
    return f"""\
worker_processes auto;
pid {workdir}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log /dev/stdout;
    server_tokens off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65s;
    client_body_temp_path {cache}/client_body;
    proxy_temp_path {cache}/proxy;
    fastcgi_temp_path {cache}/fastcgi;
    uwsgi_temp_path {cache}/uwsgi;
    scgi_temp_path {cache}/scgi;
"""


# The throughput loops send thousands of requests a second from one address (wrk on loopback), which the
# pod's per-address limits (nginx_configmap.ClientLimits) would answer with 429; they get these instead.
# The auth flood workload runs against the pod's own limits.
THROUGHPUT_LIMITS = nginx_configmap.ClientLimits(
    rate_per_minute=60_000_000, burst=1_000_000, connections=4096
)


def add_user(*, tools: prereqs.Tools, data: Path, user: str, password: str) -> None:
    """`dockyard-registry user add` (bcrypt cost 10, as for real users); a running registry reloads it."""
    subprocess.run(
        [tools.dockyard_registry, "user", "add", user, "--data-dir", str(data), "--access", "admin",
         "--password-stdin"],
        input=password + "\n", text=True, check=True, capture_output=True,
    )  # fmt: skip


def start_dockyard(
    *,
    tools: prereqs.Tools,
    workdir: Path,
    tls: tlsfiles.ServerTLS,
    password: str,
    limits: nginx_configmap.ClientLimits = THROUGHPUT_LIMITS,
    extra_args: Sequence[str] = (),
    bucket: Bucket | None = None,
    body_files: bool = True,
    key: str = "dockyard",
    label: str = "Dockyard",
) -> Target:
    """Dockyard's registry behind the operator's nginx.conf; `extra_args` go to `serve` (e.g. --mirrors).
    With `bucket`, content lives there (the pod's S3 arguments; `data` holds only the auth files).

    `body_files` as the operator renders it for a data volume: nginx writes upload bodies to files that
    the registry adopts (`--body-file-dir`); False, or with a bucket: bodies streamed through the
    registry's socket (the operator's S3 variant, and every Dockyard before issue 15)."""
    body_files = body_files and bucket is None
    workdir.mkdir(parents=True)
    data = workdir / "data"
    data.mkdir()
    add_user(tools=tools, data=data, user=USER, password=password)
    upstream_port = support_procs.reserve_port()
    if bucket is None:
        storage = ["--data-dir", str(data), "--accel-redirect", nginx_configmap.BLOB_PREFIX]
    else:
        storage = [
            "--state-dir", str(data), "--storage-driver", "s3", "--s3-endpoint", bucket.endpoint,
            "--s3-bucket", bucket.name, "--s3-prefix", bucket.prefix,
            "--s3-redirect" if bucket.redirect else "--no-s3-redirect",
        ]  # fmt: skip
    registry = procs.Proc(
        name=f"dockyard-registry ({key})",
        argv=[
            tools.dockyard_registry, "serve", "--listen", f"127.0.0.1:{upstream_port.number}", "--no-tls",
            *storage, "--htpasswd", str(data / "auth" / "htpasswd"),
            "--access", str(data / "auth" / "access.yaml"), "--realm", REALM, *extra_args,
            *(["--body-file-dir", str(data / bodyfile.DIR_NAME)] if body_files else []),
        ],
        log=workdir / "registry.log",
        env=None if bucket is None else bucket.env(),
        ports=[upstream_port],
    )  # fmt: skip
    port = support_procs.reserve_port()
    (workdir / "cache").mkdir()
    conf = workdir / "nginx.conf"
    paths = nginx_configmap.NginxPaths(
        cert=str(tls.cert_file), key=str(tls.key_file), pid=str(workdir / "nginx.pid"),
        temp_dir=str(workdir / "cache"), data_dir=str(data),
    )  # fmt: skip
    conf.write_text(
        nginx_configmap.render(
            nginx=model.Nginx(), paths=paths, upstream=f"127.0.0.1:{upstream_port.number}",
            listen_port=port.number, limits=limits, blobs_from_volume=bucket is None, body_files=body_files,
        )
    )  # fmt: skip
    nginx = _start_nginx(tools=tools, conf=conf, workdir=workdir, name=f"nginx ({key})", port=port)
    target = Target(key=key, label=label, port=port.number, nginx=nginx, registry=registry,
                    data_dir=data, password=password)  # fmt: skip
    try:
        _wait_ready(url=f"https://{target.address}/v2/", tls=tls, authorization=target.authorization,
                    watch=[nginx, registry])  # fmt: skip
    except BaseException:
        target.stop()
        raise
    return target


def start_distribution(
    *,
    key: str,
    label: str,
    binary: str,
    tools: prereqs.Tools,
    workdir: Path,
    tls: tlsfiles.ServerTLS,
    password: str,
    bucket: Bucket | None = None,
) -> Target:
    """Distribution behind nginx with Basic auth; with `bucket`, on its `s3` storage driver."""
    workdir.mkdir(parents=True)
    data = workdir / "data"
    data.mkdir()
    htpasswd = workdir / "htpasswd"
    # bcrypt (-B) at htpasswd's default cost 5: cheaper per request for nginx than Dockyard's cost 10, so
    # this choice, if anything, favours the reference.
    subprocess.run([tools.htpasswd, "-B", "-i", "-c", str(htpasswd), USER], input=password, text=True,
                   check=True, capture_output=True)  # fmt: skip
    upstream_port = support_procs.reserve_port()
    config = workdir / "config.yml"
    if bucket is None:
        storage = f"""\
  filesystem:
    rootdirectory: {data}
"""
    else:
        storage = f"""\
  s3:
    accesskey: {bucket.access_key}
    secretkey: {bucket.secret_key}
    region: us-east-1
    regionendpoint: {bucket.endpoint}
    forcepathstyle: true
    bucket: {bucket.name}
    rootdirectory: /{bucket.prefix}
    secure: false
    # Move an upload into place with CopyObject up to its 5 GiB limit, as Dockyard's driver does: above
    # the 32 MiB default Distribution copies with UploadPartCopy, which gofakes3 does not implement (it
    # answers 411 MissingContentLength, and Distribution the layer's final PUT with 500).
    multipartcopythresholdsize: {MAX_COPY_OBJECT}
  redirect:
    disable: {"false" if bucket.redirect else "true"}
"""
    config.write_text(
        f"""\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
{storage}  delete:
    enabled: true
http:
  addr: 127.0.0.1:{upstream_port.number}
  secret: bench-{os.urandom(8).hex()}
"""
    )
    registry = procs.Proc(
        name=label,
        argv=[binary, "serve", str(config)],
        log=workdir / "registry.log",
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
        ports=[upstream_port],
    )
    port = support_procs.reserve_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        _http_head(workdir=workdir)
        + f"""\
    upstream docker-registry {{
        server 127.0.0.1:{upstream_port.number};
        keepalive 16;
    }}
    map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {{
        '' 'registry/2.0';
    }}
    server {{
{_tls_server_head(port=port.number, tls=tls, zone=f"{key}_tls")}
        client_max_body_size 0;
        chunked_transfer_encoding on;

        location /v2/ {{
            auth_basic "Registry realm";
            auth_basic_user_file {htpasswd};
            add_header 'Docker-Distribution-Api-Version' $docker_distribution_api_version always;

            proxy_pass http://docker-registry;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 900;
            proxy_request_buffering off;
            proxy_buffering off;
            # the operator's read size for streamed answers, so the references stream as Dockyard does
            proxy_buffer_size {nginx_configmap.STREAM_BUFFER};
            proxy_buffers 3 {nginx_configmap.STREAM_BUFFER};
            proxy_busy_buffers_size {nginx_configmap.STREAM_BUFFER};
        }}
    }}
}}
"""
    )
    nginx = _start_nginx(tools=tools, conf=conf, workdir=workdir, name=f"nginx ({label})", port=port)
    target = Target(key=key, label=label, port=port.number, nginx=nginx, registry=registry, data_dir=data,
                    password=password)  # fmt: skip
    try:
        _wait_ready(url=f"https://{target.address}/v2/", tls=tls, authorization=target.authorization,
                    watch=[nginx, registry])  # fmt: skip
    except BaseException:
        target.stop()
        raise
    return target


def start_static(*, tools: prereqs.Tools, workdir: Path, tls: tlsfiles.ServerTLS, files: Path) -> Target:
    """nginx serving `files/` at `/static/` over the same TLS: the ceiling for blob GETs."""
    workdir.mkdir(parents=True)
    port = support_procs.reserve_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        _http_head(workdir=workdir)
        + f"""\
    server {{
{_tls_server_head(port=port.number, tls=tls, zone="static_tls")}
        location /static/ {{
            alias {files}/;
        }}
    }}
}}
"""
    )
    nginx = _start_nginx(tools=tools, conf=conf, workdir=workdir, name="nginx (static)", port=port)
    target = Target(key="static", label="nginx static file", port=port.number, nginx=nginx, registry=None,
                    data_dir=None, password="")  # fmt: skip
    try:
        first = next(files.iterdir()).name
        _wait_ready(
            url=f"https://{target.address}/static/{first}", tls=tls, authorization=None, watch=[nginx]
        )
    except BaseException:
        target.stop()
        raise
    return target
