"""The `<registry>-nginx` ConfigMap and the pure renderer of the sidecar's complete `nginx.conf`.

The sidecar terminates TLS (1.2 with ECDHE + AEAD suites only, and 1.3), asks the registry's `/auth`
endpoint about every `/v2/` request (`auth_request`, passing X-Original-URI/X-Original-Method and the
client's Authorization), streams uploads and downloads without buffering, and serves blob bytes itself
from the storage volume when the registry answers with `X-Accel-Redirect` (sendfile speed, the registry
never copies blob bytes). With object storage there is no volume to serve from: that variant
(`blobs_from_volume=False`) has no internal blob location, and blob GETs are the registry's answer as is
(a 307 to a presigned bucket URL, which passes through untouched, or the streamed bytes).
With the Docker token flow on (`token_flow=True`: the spec accepts ServiceAccount or OIDC tokens), `/token`
is proxied to the registry as is (it checks credentials itself; same per-client limits as `/v2/`), and the
auth subrequest carries the client's Host and scheme, from which the registry builds the challenge's realm
(`Bearer realm="https://<the host the client used>/token"`): one config serves every name the registry is
reached by (Service DNS names, an Ingress host, a node port).
Its own 401/403 answers carry `Docker-Distribution-API-Version` and an OCI error body, which
`docker login` needs (distribution #397).

Under a flood, per client address (`$binary_remote_addr`, passed to the registry as `X-Real-IP` so its
per-client budget of password checks counts the real client, not the sidecar): `limit_req` and
`limit_conn` on `/v2/` at rates no real client reaches, answered 429 TOOMANYREQUESTS; and the registry's
own 429 from `/auth` (that client's password checks are over budget), which `auth_request` cannot pass
on, becomes the same 429 instead of a 503 for everyone's eyes.

Owns: the config text and its parameters (paths, upstream, port default to the pod layout so tests can run
real `nginx -t` against temp dirs).
Must not: read files or know about Kubernetes beyond the ConfigMap envelope.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dockyard_operator import model
from dockyard_operator.builders import inputs as inputs_mod
from dockyard_registry import bodyfile, tlsauto

CONFIG_KEY = "nginx.conf"
CONFIG_DIR = "/etc/dockyard/nginx"
TLS_DIR = "/etc/dockyard/tls"
DATA_DIR = "/var/lib/registry"
CACHE_DIR = "/var/cache/nginx"
TMP_DIR = "/tmp"  # noqa: S108  # an emptyDir mount inside the pod
BLOB_PREFIX = "/_dockyard_blobs/"
TOKEN_PATH = "/token"  # noqa: S105  # a URL path: the registry's Docker token endpoint (`--token-realm`)
UPSTREAM = "127.0.0.1:5000"
LISTEN_PORT = 5443
# nginx's write size for upload bodies it writes to files (see render's body_files). Not above 1m: with
# writes of 2 MiB and more the copy into the page cache cost 3-7x more on the bench machine, and nginx's CPU
# per GiB doubled at 8m (bench/README.md, issue 15); 128k to 1m measured the same.
# Also its read size for request bodies it streams to the registry (object storage: no body files): with the
# default, one or two memory pages, every few KiB of a pushed blob was a read, a chunk and a write to the
# registry's socket; at 1m nginx took about a quarter less CPU per GiB pushed (S3, bench/README.md, issue 14).
# Allocated per request body in flight, at most the body's length when the client says it.
BODY_BUFFER = "1m"
# nginx's read size for answers it streams from the registry (proxy_buffering off), and so the size of
# what it hands TLS at a time: the default, one memory page, costs a read and a TLS record per 4 KiB of a
# blob streamed through the registry (a mirror's first fetch, object storage without redirects).
# Anything from two TLS records (32k) up measured the same (bench.mirror_pull: 32k, 128k and 512k); this
# is allocated per /v2/ request while it runs.
STREAM_BUFFER = "64k"

# TLS 1.2 suites: ECDHE + AEAD only, exactly the registry's own `--tls` server's list (one list for both
# TLS endpoints). `ssl_ciphers` does not touch TLS 1.3, whose suites are all AEAD.
TLS12_CIPHERS = tlsauto.TLS12_CIPHERS

_UNAUTHORIZED = '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}'
_DENIED = (
    '{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":null}]}'
)

_TOO_MANY = (
    '{"errors":[{"code":"TOOMANYREQUESTS","message":"too many requests from this client, retry later",'
    '"detail":null}]}'
)

_STORAGE_FULL = '{"errors":[{"code":"UNKNOWN","message":"registry storage is full","detail":null}]}'

_UNAVAILABLE = (
    '{"errors":[{"code":"UNAVAILABLE","message":"registry temporarily unavailable, retry","detail":null}]}'
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NginxPaths:
    """File system locations in the config; the defaults are the pod's mounts."""

    cert: str = f"{TLS_DIR}/tls.crt"
    key: str = f"{TLS_DIR}/tls.key"
    pid: str = f"{TMP_DIR}/nginx.pid"
    temp_dir: str = CACHE_DIR
    data_dir: str = DATA_DIR

    @property
    def body_dir(self) -> str:
        """Where nginx writes blob upload bodies: on the data volume, so the registry adopts them by rename
        (`dockyard-registry serve --body-file-dir`)."""
        return f"{self.data_dir.rstrip('/')}/{bodyfile.DIR_NAME}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientLimits:
    """Per client address on `/v2/`: far above real clients, low enough to take the edge off a flood.

    A real client's peak is a push or pull of a many-layer image: a few requests per layer, a handful
    in parallel (docker: 3 to 5, crane/buildkit: 16 or so); many nodes behind one NAT address pull at
    once. The registry answers a few thousand cached-credential requests a second in all, so one address
    held to 1000 leaves the rest to everyone else; fairness among password checks is the registry's
    own (auth.py), not this. `burst` is how many requests above the rate
    one address may send at once before it gets 429 (nodelay: never queued); `connections` how many
    requests it may have in flight at once (idle keep-alive connections do not count).
    """

    rate_per_minute: int = 60_000  # 1000 requests a second, sustained
    burst: int = 2000
    connections: int = 256


def render(
    *,
    nginx: model.Nginx,
    paths: NginxPaths = NginxPaths(),  # frozen dataclass: a safe default
    upstream: str = UPSTREAM,
    listen_port: int = LISTEN_PORT,
    limits: ClientLimits = ClientLimits(),  # frozen dataclass: a safe default
    blobs_from_volume: bool = True,
    body_files: bool = False,
    token_flow: bool = False,
) -> str:
    """The complete nginx.conf for the sidecar; `blobs_from_volume=False` for a registry whose blobs are
    not on a volume nginx can read (object storage). `body_files=True` (with a volume only; the registry
    must then run with `--body-file-dir paths.body_dir`): blob upload bodies go to files on the volume.
    `token_flow` routes the Docker token endpoint."""
    data_dir = paths.data_dir.rstrip("/") + "/"
    blob_location = (
        f"""
        # Blob bytes, after the registry authorized the request and answered with X-Accel-Redirect.
        location {BLOB_PREFIX} {{
            internal;
            alias {data_dir};
            etag off;
            add_header Docker-Content-Digest $upstream_http_docker_content_digest always;
            add_header ETag $upstream_http_etag always;
            add_header Docker-Distribution-API-Version registry/2.0 always;
        }}
"""
        if blobs_from_volume
        else ""
    )
    temp = paths.temp_dir.rstrip("/")
    api_version_header = "add_header Docker-Distribution-API-Version $dockyard_api_version always;"
    upload_location = (
        f"""
            # Blob upload bodies (POST ?digest=, PATCH, PUT): nginx writes each whole body to a file on the
            # data volume and passes the registry only the file's path, which it hashes and renames into
            # the upload (no copy through a socket). A client's own {bodyfile.HEADER} never passes: it
            # is overwritten here and cleared everywhere else. `clean`: nginx removes the file when the
            # request ends unless the registry adopted it.
            location ~ ^/v2/.+/blobs/uploads/ {{
                client_body_temp_path {paths.body_dir};
                client_body_in_file_only clean;
                # Bodies reach the file in writes of this size (the default 16k costs nginx a syscall
                # per 16 KiB); allocated per upload in flight, at most the body's length.
                client_body_buffer_size {BODY_BUFFER};
                proxy_request_buffering on;
                proxy_pass_request_body off;
                {_indented(_PROXY_HEADERS, 16)}
                proxy_set_header Content-Length "";
                proxy_set_header {bodyfile.HEADER} $request_body_file;
                proxy_pass http://dockyard_registry;
                {api_version_header}
            }}
"""
        if blobs_from_volume and body_files
        else ""
    )
    token_location = (
        f"""
        # The Docker token flow: the registry checks the credentials itself (no auth_request) and answers
        # a short registry token; the same per-client limits as /v2/.
        location = {TOKEN_PATH} {{
            limit_req zone=dockyard_requests burst={limits.burst} nodelay;
            limit_conn dockyard_connections {limits.connections};
            error_page 429 = @dockyard_too_many;
            error_page 500 502 503 504 = @dockyard_unavailable;
            proxy_pass http://dockyard_registry;
            {api_version_header}
        }}
"""
        if token_flow
        else ""
    )
    # The challenge's realm is /token on the host and scheme the client used (only with the token flow:
    # other registries' config, and so their pods, stay as they were).
    realm_headers = (
        """
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;"""
        if token_flow
        else ""
    )
    return f"""\
# Rendered by the Dockyard operator; edits are overwritten.
worker_processes auto;
pid {paths.pid};
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

    # Writable paths under a read-only root file system.
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    # The registry sets this header on its own answers; add it only where it is missing, never twice.
    map $upstream_http_docker_distribution_api_version $dockyard_api_version {{
        "" "registry/2.0";
        default "";
    }}

    # Per client address; see ClientLimits.
    limit_req_zone $binary_remote_addr zone=dockyard_requests:10m rate={limits.rate_per_minute}r/m;
    limit_conn_zone $binary_remote_addr zone=dockyard_connections:10m;
    limit_req_status 429;
    limit_conn_status 429;

    upstream dockyard_registry {{
        server {upstream};
        keepalive 16;
    }}

    server {{
        listen {listen_port} ssl;
        ssl_certificate {paths.cert};
        ssl_certificate_key {paths.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {TLS12_CIPHERS};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:dockyard_tls:10m;
        ssl_session_timeout 1h;

        client_max_body_size {nginx.client_max_body_size};
        chunked_transfer_encoding on;

        proxy_http_version 1.1;
        {_indented(_PROXY_HEADERS, 8)}
        # Only nginx itself names a body file (the upload location below); never a client.
        proxy_set_header {bodyfile.HEADER} "";
        proxy_connect_timeout {nginx.proxy_connect_timeout};
        proxy_read_timeout {nginx.proxy_read_timeout};
        proxy_send_timeout {nginx.proxy_send_timeout};

        # Liveness: the registry answers (never touches storage).
        location = /healthz {{
            proxy_pass http://dockyard_registry/healthz;
        }}

        # Readiness: the registry's last storage check (writable, below the fill threshold).
        location = /readyz {{
            proxy_pass http://dockyard_registry/readyz;
        }}

        location /v2/ {{
            limit_req zone=dockyard_requests burst={limits.burst} nodelay;
            limit_conn dockyard_connections {limits.connections};
            error_page 429 = @dockyard_too_many;
            # On 401 auth_request itself copies the registry's WWW-Authenticate to the answer.
            auth_request /_dockyard_auth;
            # Any other status of /auth is a 500 here; this keeps the registry's 429 (this client's
            # password checks are over its budget) apart from a registry that is down.
            auth_request_set $dockyard_auth_status $upstream_status;
            error_page 401 = @dockyard_unauthorized;
            error_page 403 = @dockyard_denied;
            # nginx's own 5xx (the registry container is restarting, so the auth subrequest or the proxy
            # fails) becomes a retryable OCI 503; the registry's own JSON errors pass through untouched.
            error_page 500 502 503 504 = @dockyard_unavailable;

            # Stream uploads and downloads: no temp files, no size-dependent latency.
            proxy_request_buffering off;
            client_body_buffer_size {BODY_BUFFER};
            proxy_buffering off;
            proxy_buffer_size {STREAM_BUFFER};
            # Unused with buffering off (unless the registry asked for it with X-Accel-Buffering); nginx
            # only insists they be consistent with the size above.
            proxy_buffers 3 {STREAM_BUFFER};
            proxy_busy_buffers_size {STREAM_BUFFER};
            proxy_pass http://dockyard_registry;
            {api_version_header}
{upload_location}        }}

        location = /_dockyard_auth {{
            internal;
            proxy_pass http://dockyard_registry/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            # The client the registry charges password checks to (it trusts this from loopback only).
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header Authorization $http_authorization;{realm_headers}
            proxy_set_header {bodyfile.HEADER} "";
        }}
{token_location}
        location @dockyard_unauthorized {{
            default_type application/json;
            add_header Docker-Distribution-API-Version registry/2.0 always;
            return 401 '{_UNAUTHORIZED}';
        }}

        location @dockyard_denied {{
            default_type application/json;
            add_header Docker-Distribution-API-Version registry/2.0 always;
            return 403 '{_DENIED}';
        }}

        location @dockyard_unavailable {{
            default_type application/json;
            add_header Docker-Distribution-API-Version registry/2.0 always;
            add_header Retry-After 5 always;
            if ($dockyard_auth_status = 429) {{
                return 429 '{_TOO_MANY}';
            }}
            # The registry's storage cannot take a push (full or above spec.storage.maxFillPercent): said
            # by /auth, before nginx reads (and, with body files, stores) a byte of the body.
            if ($dockyard_auth_status = 507) {{
                return 507 '{_STORAGE_FULL}';
            }}
            return 503 '{_UNAVAILABLE}';
        }}

        location @dockyard_too_many {{
            default_type application/json;
            add_header Docker-Distribution-API-Version registry/2.0 always;
            add_header Retry-After 1 always;
            return 429 '{_TOO_MANY}';
        }}
{blob_location}
        location / {{
            default_type application/json;
            add_header Docker-Distribution-API-Version registry/2.0 always;
            return 404 '{{"errors":[{{"code":"NOT_FOUND","message":"not found","detail":null}}]}}';
        }}
    }}
}}
"""


# The server's proxy headers; repeated in the upload location, which sets headers of its own (nginx
# inherits proxy_set_header only into a level that sets none).
_PROXY_HEADERS = """\
proxy_set_header Connection "";
proxy_set_header Host $http_host;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Real-IP $remote_addr;"""


def _indented(lines: str, spaces: int) -> str:
    """`lines` for a place in the config indented by `spaces` (its first line is placed already)."""
    return lines.replace("\n", "\n" + " " * spaces)


def render_for(inputs: inputs_mod.Inputs) -> str:
    """The sidecar's config for this registry: blobs from the volume unless they live in a bucket, and
    then upload bodies written to files on that volume too; /token when the registry offers the token
    flow."""
    on_volume = inputs.spec.storage.kind != "s3"
    return render(
        nginx=inputs.spec.nginx,
        blobs_from_volume=on_volume,
        body_files=on_volume,
        token_flow=inputs.spec.auth.token_flow,
    )


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": inputs_mod.metadata(inputs, name=inputs.names.nginx_configmap, component="nginx"),
        "data": {CONFIG_KEY: render_for(inputs)},
    }
