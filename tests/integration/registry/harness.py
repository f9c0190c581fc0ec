"""Run the real `dockyard-registry` as a subprocess and talk to it over verified TLS.

Owns: starting `dockyard-registry serve` on a reserved loopback port (TLS `auto` unless told otherwise),
creating users through the real `user add --password-stdin` CLI, waiting for `/healthz`, stopping the
process by PID (SIGTERM, then SIGKILL), and a small HTTP client that verifies the server against the
generated CA. Also the handful of raw HTTP steps the tests need (monolithic blob push, manifest push,
a request whose body is cut off on purpose).

Must not: import `dockyard_registry` (the registry is tested only through its CLI and its HTTP API, the
way clients and the operator see it), disable certificate verification, or leave a process running
when a fixture ends. Passwords are passed on stdin or in an Authorization header, never on argv of
the registry.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from tests.support import procs

# The registry may generate its CA and a bcrypt-hashed user on first start: generous on a busy 2-core box.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
HTTP_TIMEOUT = 60.0

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


# `podman(*args, check=True)` from the conftest fixture: podman with its state in a temp dir.
Podman = Callable[..., subprocess.CompletedProcess[str]]


def registry_bin() -> Path:
    """The `dockyard-registry` console script of the virtualenv running the tests."""
    path = Path(sys.executable).parent / "dockyard-registry"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make setup` (pip install -e .)")
    return path


def require_binary(name: str) -> str:
    """Absolute path of a Debian client that `make setup` installs; a clear error when it is missing."""
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"`{name}` is not on PATH: run `make setup` (hack/setup.sh installs it)")
    return found


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A user name and password known to a running registry."""

    username: str
    password: str = dataclasses.field(repr=False)  # keep it out of assertion messages

    def basic(self) -> str:
        """The value of an `Authorization` header for these credentials."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def colon(self) -> str:
        """`user:password`, the form skopeo and podman take in `--creds`."""
        return f"{self.username}:{self.password}"


@dataclasses.dataclass(frozen=True)
class User:
    """A user to create with `dockyard-registry user add` before the registry starts."""

    credentials: Credentials
    access: str | None = None  # None: no access.yaml entry, which the contract makes `push` everywhere
    repositories: tuple[str, ...] = ()


def new_password() -> str:
    """A random password; random so that a leak into a log can be searched for without false hits."""
    return base64.urlsafe_b64encode(os.urandom(18)).decode()


def add_user(
    *,
    data_dir: Path,
    name: str,
    password: str,
    access: str | None = None,
    repositories: Sequence[str] = (),
) -> None:
    """Create or update a user with the registry's own CLI, the password on stdin."""
    argv = [str(registry_bin()), "user", "add", name, "--data-dir", str(data_dir), "--password-stdin"]
    if access is not None:
        argv += ["--access", access]
    for glob in repositories:
        argv += ["--repository", glob]
    done = subprocess.run(argv, input=password + "\n", capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(
            f"`dockyard-registry user add {name}` exited {done.returncode}: {done.stderr.strip()}"
        )


def run_cli(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run one `dockyard-registry` subcommand (gc, fsck, user ...) and return its result unchecked."""
    return subprocess.run(
        [str(registry_bin()), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclasses.dataclass
class Response:
    """One HTTP response, read in full."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> object:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        """The `code`s of an OCI error envelope, or [] when the body is not one."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return []
        if not isinstance(doc, dict) or not isinstance(doc.get("errors"), list):
            return []
        return [str(e.get("code")) for e in doc["errors"] if isinstance(e, dict)]

    def describe(self) -> str:
        """Status, headers and the start of the body, for assertion messages."""
        head = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"HTTP {self.status} [{head}] {self.body[:500]!r}"


class Client:
    """HTTPS to one registry, verifying its certificate against the CA the test trusts (plain HTTP
    only for a registry started with `--no-tls`, where `ca_file` is None).

    One connection per request keeps the tests independent of keep-alive behaviour; redirects are
    not followed so that a test sees exactly what the registry answered.
    """

    def __init__(
        self, *, host: str, port: int, ca_file: Path | None, credentials: Credentials | None
    ) -> None:
        self.host = host
        self.port = port
        self.credentials = credentials
        self.context = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None

    def _connection(self) -> http.client.HTTPConnection:
        if self.context is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=HTTP_TIMEOUT)

    def _headers(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        out = dict(headers or {})
        if self.credentials is not None and "Authorization" not in out:
            out["Authorization"] = self.credentials.basic()
        return out

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=self._headers(headers))
            resp = conn.getresponse()
            data = resp.read()
            return Response(status=resp.status, headers=resp.headers, body=data)
        finally:
            conn.close()

    def upload_stream(
        self, method: str, path: str, *, chunks: Iterable[bytes], length: int, headers: Mapping[str, str]
    ) -> Response:
        """Send a body of `length` bytes produced chunk by chunk (never whole in this process)."""
        conn = self._connection()
        try:
            sent = {**self._headers(headers), "Content-Length": str(length)}
            conn.request(method, path, body=chunks, headers=sent)
            resp = conn.getresponse()
            return Response(status=resp.status, headers=resp.headers, body=resp.read())
        finally:
            conn.close()

    def download_digest(self, path: str) -> tuple[Response, str, int]:
        """GET `path`, hashing the body as it arrives; returns (response sans body, sha256 digest, size)."""
        conn = self._connection()
        try:
            conn.request("GET", path, headers=self._headers(None))
            resp = conn.getresponse()
            hasher, size = hashlib.sha256(), 0
            while chunk := resp.read(1024 * 1024):
                hasher.update(chunk)
                size += len(chunk)
            return (
                Response(status=resp.status, headers=resp.headers, body=b""),
                f"sha256:{hasher.hexdigest()}",
                size,
            )
        finally:
            conn.close()

    @contextlib.contextmanager
    def partial_request(
        self, method: str, path: str, *, headers: Mapping[str, str], body_prefix: bytes
    ) -> Iterator[socket.socket]:
        """Send a request's headers and only the first bytes of its body, then hand the socket over.

        `headers` must announce the full Content-Length; the server is left waiting for the rest, which
        is how a client looks when the server dies in the middle of an upload.
        """
        sock = socket.create_connection((self.host, self.port), timeout=HTTP_TIMEOUT)
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_hostname=self.host)
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
            lines += [f"{k}: {v}" for k, v in self._headers(headers).items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body_prefix)
            yield sock
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    # --- the few registry operations the tests compose -------------------------------------------

    def push_blob(self, repo: str, data: bytes) -> str:
        """Monolithic POST + PUT of one blob; returns its digest."""
        digest = sha256(data)
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert start.status == 202, f"POST upload to {repo}: {start.describe()}"
        location = upload_path(start)
        sep = "&" if "?" in location else "?"
        done = self.request(
            "PUT",
            f"{location}{sep}digest={digest}",
            body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        assert done.status == 201, f"PUT blob {digest} to {repo}: {done.describe()}"
        return digest

    def push_manifest(
        self, repo: str, reference: str, manifest: bytes, *, media_type: str = OCI_MANIFEST
    ) -> str:
        """PUT a manifest by tag or digest; returns its digest."""
        resp = self.request(
            "PUT", f"/v2/{repo}/manifests/{reference}", body=manifest, headers={"Content-Type": media_type}
        )
        assert resp.status == 201, f"PUT manifest {repo}:{reference}: {resp.describe()}"
        return sha256(manifest)

    def get_manifest(self, repo: str, reference: str) -> Response:
        return self.request(
            "GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
        )

    def get_blob(self, repo: str, digest: str) -> Response:
        return self.request("GET", f"/v2/{repo}/blobs/{digest}")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_path(resp: Response) -> str:
    """The path (and query) of an upload's Location header, whether the registry sent it absolute or not."""
    location = resp.header("Location")
    assert location, f"upload response has no Location: {resp.describe()}"
    parts = urllib.parse.urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@dataclasses.dataclass
class Registry:
    """One running `dockyard-registry serve` process and how to reach it."""

    data_dir: Path
    host: str
    port: int
    ca_file: Path | None  # None: started with --no-tls
    log_file: Path
    argv: list[str]
    process: procs.Process | None = None
    # The port, reserved for this registry's lifetime (restarts included) when make_registry picked it.
    reserved: procs.Port | None = None

    @property
    def ca(self) -> Path:
        """The CA file clients must trust (DATA/tls/ca.crt for `--tls auto`)."""
        assert self.ca_file is not None, "this registry runs with --no-tls"
        return self.ca_file

    @property
    def address(self) -> str:
        """`host:port` as clients write it in image references."""
        return f"{self.host}:{self.port}"

    def client(self, credentials: Credentials | None) -> Client:
        return Client(host=self.host, port=self.port, ca_file=self.ca_file, credentials=credentials)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def start(self) -> None:
        """Start the process and wait until `/healthz` answers 200 over verified TLS."""
        assert self.process is None or not self.process.alive(), "already running"
        with self.log_file.open("ab") as log:
            log.write(f"--- start: {' '.join(self.argv)}\n".encode())
        # The port stays reserved by `reserved` across restarts; the process only binds it.
        self.process = procs.Process(name="dockyard-registry", argv=self.argv, log=self.log_file)
        deadline = time.monotonic() + START_TIMEOUT
        last_error = "no attempt"
        while time.monotonic() < deadline:
            self.process.check_alive()
            if self.ca_file is None or self.ca_file.exists():
                try:
                    resp = self.client(None).request("GET", "/healthz")
                    if resp.status == 200:
                        return
                    last_error = resp.describe()
                except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                    last_error = repr(exc)
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"dockyard-registry not healthy after {START_TIMEOUT}s ({last_error}):\n{self.log_tail()}"
        )

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; returns the exit code."""
        return None if self.process is None else self.process.stop(grace=timeout)

    def peak_rss_bytes(self) -> int:
        """The process's peak resident memory so far (VmHWM), from /proc."""
        assert self.process is not None and self.process.alive(), "registry is not running"
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush, rename or clean up anything."""
        assert self.process is not None and self.process.alive(), "registry is not running"
        self.process.popen.send_signal(signal.SIGKILL)
        self.process.popen.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        """Start again on the same data dir and port (upload Locations stay valid)."""
        self.stop()
        self.start()


def make_registry(
    *,
    data_dir: Path,
    log_file: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    tls_args: Sequence[str] = ("--tls", "auto"),
    ca_file: Path | None = None,
    extra_args: Sequence[str] = (),
) -> Registry:
    """Describe (not start) a registry serving `data_dir`; with `--tls auto` its CA is DATA/tls/ca.crt."""
    reserved = None
    if port is None:
        reserved = procs.reserve_port(host=host)
        port = reserved.number
    if "--no-tls" in tls_args:
        ca_file = None
    elif ca_file is None:
        ca_file = data_dir / "tls" / "ca.crt"
    argv = [
        str(registry_bin()),
        "serve",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"{host}:{port}",
        *tls_args,
        *extra_args,
    ]
    return Registry(
        data_dir=data_dir,
        host=host,
        port=port,
        ca_file=ca_file,
        log_file=log_file,
        argv=argv,
        reserved=reserved,
    )


@contextlib.contextmanager
def running_registry(
    *,
    tmp: Path,
    users: Sequence[User] = (),
    access_yaml: str | None = None,
    extra_args: Sequence[str] = (),
    host: str = "127.0.0.1",
    tls_args: Sequence[str] = ("--tls", "auto"),
    ca_file: Path | None = None,
) -> Iterator[Registry]:
    """A registry on a fresh data dir under `tmp` with `users` created by the CLI (and `access_yaml`
    written over whatever the CLI put there, when given); stopped by PID when the block ends."""
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for user in users:
        add_user(
            data_dir=data_dir,
            name=user.credentials.username,
            password=user.credentials.password,
            access=user.access,
            repositories=user.repositories,
        )
    if access_yaml is not None:
        (data_dir / "auth").mkdir(parents=True, exist_ok=True)
        write_atomically(data_dir / "auth" / "access.yaml", access_yaml)
    reg = make_registry(
        data_dir=data_dir,
        log_file=tmp / "registry.log",
        host=host,
        tls_args=tls_args,
        ca_file=ca_file,
        extra_args=extra_args,
    )
    try:
        reg.start()
        yield reg
    finally:
        reg.stop()


def write_atomically(path: Path, text: str) -> None:
    """Replace a file the registry watches so that it never reads a half-written one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def ca_dir(*, ca_file: Path, into: Path) -> Path:
    """A directory holding only the CA as `ca.crt`: what skopeo/podman `--cert-dir` want.

    DATA/tls itself cannot be used: containers/image treats every `*.key` there as a client key and
    fails when it has no matching `*.cert`.
    """
    into.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_file, into / "ca.crt")
    return into


def wait_for(what: str, check: Callable[[], bool], *, timeout: float = 20.0) -> None:
    """Poll `check()` until it returns True; the registry re-reads its auth files at most once a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} did not become true within {timeout}s")
