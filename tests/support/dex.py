"""Dex, a real external OIDC issuer, for the token identity tests (hack/tools.sh builds it: `dex`).

Dex v2.45.1 built without CGO, so on its memory storage (its SQLite storage needs CGO): clients, users and
signing keys live in the process and are made again at each start, which is all a test needs. It serves
HTTPS with a certificate from the test's CA, one static client per audience the test asks for, and one
static user in its password database; ID tokens come from its token endpoint by the OAuth2 password grant
(`oauth2.passwordConnector: local`), the way a CI job's non-interactive login would get one.

Owns: the config (written to the test's temp dir), the process (stopped by its PID), `id_token()`.
Must not: download anything (a missing binary raises with the command that builds it).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import ssl
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import bcrypt
import yaml

from tests.support import procs, tool


@dataclasses.dataclass(frozen=True)
class User:
    email: str
    password: str


@dataclasses.dataclass
class Dex:
    issuer: str
    ca_file: Path
    clients: dict[str, str]
    """Client id (the ID tokens' audience) -> its secret."""
    process: procs.Process

    def id_token(self, *, client: str, user: User) -> str:
        """An ID token for `user`, audience `client`, by the password grant at the token endpoint."""
        form = urllib.parse.urlencode(
            {
                "grant_type": "password",
                "scope": "openid email profile",
                "username": user.email,
                "password": user.password,
            }
        ).encode()
        basic = base64.b64encode(f"{client}:{self.clients[client]}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310  # the test's own https issuer
            f"{self.issuer}/token",
            data=form,
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
            answer = json.load(response)
        return str(answer["id_token"])


@contextlib.contextmanager
def running(
    tmp: Path, *, tls_cert: Path, tls_key: Path, ca_file: Path, clients: Sequence[str], users: Sequence[User]
) -> Iterator[Dex]:
    """Dex on a loopback port, serving HTTPS with `tls_cert` (which must name 127.0.0.1)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = procs.reserve_port()
    issuer = f"https://127.0.0.1:{port.number}/dex"
    secrets = {client: f"{client}-secret-{port.number}" for client in clients}
    config = {
        "issuer": issuer,
        "storage": {"type": "memory"},
        "web": {"https": f"127.0.0.1:{port.number}", "tlsCert": str(tls_cert), "tlsKey": str(tls_key)},
        "logger": {"level": "warn"},
        "oauth2": {"passwordConnector": "local", "skipApprovalScreen": True},
        "enablePasswordDB": True,
        "staticPasswords": [
            {
                "email": user.email,
                "hash": bcrypt.hashpw(user.password.encode(), bcrypt.gensalt(rounds=10)).decode(),
                "username": user.email.split("@")[0],
                "userID": f"user-{i}",
            }
            for i, user in enumerate(users)
        ],
        "staticClients": [
            {"id": client, "secret": secret, "name": client, "redirectURIs": ["https://127.0.0.1/callback"]}
            for client, secret in secrets.items()
        ],
    }
    path = tmp / "dex.yaml"
    path.write_text(yaml.safe_dump(config))
    process = procs.Process(
        name="dex", argv=[str(tool("dex")), "serve", str(path)], log=tmp / "dex.log", ports=[port]
    )
    try:
        procs.wait_http(
            f"{issuer}/.well-known/openid-configuration",
            watch=[process],
            timeout=60,
            context=ssl.create_default_context(cafile=str(ca_file)),
        )
        yield Dex(issuer=issuer, ca_file=ca_file, clients=secrets, process=process)
    finally:
        process.stop()
