"""The Docker token (Bearer) flow: short registry tokens issued at `/token` and accepted as `Bearer`.

Owns: parsing `scope` parameters (`repository:<name>:pull,push`), signing a token that lists exactly the
access granted (never more than the caller's rules allow: the HTTP edge asks `Authenticator.permits` for
each action), and verifying such a token on later requests. Must not: authenticate the caller (auth does),
know HTTP, or log a token.

Tokens are HS256 JWTs under a key only this registry knows (`serve --token-key FILE`, shared by replicas;
else a random key per process, so they fail over to a fresh login). They carry their grants, so a rule
removed later still holds for at most `ttl_seconds` (300 by default). External issuers' HMAC tokens stay
refused (identity.py): this key is never published. A verified token is remembered (under an HMAC with a
process-random key, never the token itself) until its `exp`, so a client using one for many requests pays
the JWT parsing once, not per request.

The realm a Bearer challenge names is either a fixed URL (`--token-realm https://host/token`) or a path
(`--token-realm /token`): then it is that path on the host and scheme the client used (`realm_for`), which
is what a registry reached by several names (Service DNS names, an Ingress host, a node port) needs, and
what the operator passes behind its nginx sidecar.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import jwt

from dockyard_common import regtoken

ALGORITHM = regtoken.ALGORITHM
ACTIONS = ("pull", "push", "delete")
CACHE_LIMIT = 10000


# A Host header we may put into a challenge: a DNS name or IPv4 address, or a bracketed IPv6 address, with an
# optional port. Anything else (quotes, spaces, a path) would let a client shape the header.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_REALM_PATH = re.compile(r"/[A-Za-z0-9._~/-]{0,200}")


class ScopeError(ValueError):
    pass


class RegistryTokenError(Exception):
    """A Bearer token of this registry is not valid (the message names why, never the token)."""


@dataclasses.dataclass(frozen=True)
class Grant:
    repository: str
    actions: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Verified:
    subject: str | None
    grants: tuple[Grant, ...]


def parse_scopes(values: Iterable[str]) -> list[Grant]:
    """`repository:<name>:<actions>` scopes (several per parameter, space-separated); `*` is every action.

    Other resource types (`registry:catalog:*`) are ignored, as Distribution does for unknown ones.
    """
    out: list[Grant] = []
    for value in values:
        for scope in value.split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository":
                continue
            if not name:
                raise ScopeError(f"scope {scope[:200]!r} is not repository:<name>:<actions>")
            wanted = set(ACTIONS) if actions == "*" else {a for a in actions.split(",") if a}
            out.append(Grant(repository=name, actions=frozenset(wanted & set(ACTIONS))))
    return out


def valid_realm(realm: str) -> bool:
    """Whether `--token-realm` is an http(s) URL or a path (`/token`) that may go into a challenge."""
    if realm.startswith("/"):
        return _REALM_PATH.fullmatch(realm) is not None
    return realm.startswith(("https://", "http://")) and not any(c in realm for c in '"\\ \t\r\n')


def realm_for(realm: str, *, host: str | None, scheme: str) -> str | None:
    """The challenge's realm URL: `realm` itself, or for a path that path on `scheme://host` (the address
    the client reached us by). None when the client sent no usable Host: the caller falls back to Basic."""
    if not realm.startswith("/"):
        return realm
    if host is None or _HOST.fullmatch(host) is None or scheme not in ("http", "https"):
        return None
    return f"{scheme}://{host}{realm}"


class RegistryTokens:
    def __init__(
        self,
        *,
        service: str,
        key: bytes | None = None,
        ttl_seconds: int = 300,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.service, self.ttl_seconds, self._wall = service, ttl_seconds, wall
        self._key = key or secrets.token_bytes(32)
        self.issuer = regtoken.issuer(service)
        self._mac_key = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[Verified, float]] = {}  # HMAC of a token -> (what it grants, exp)

    def _mac(self, token: str) -> bytes:
        return hmac.new(self._mac_key, token.encode(), "sha256").digest()

    def issue(self, *, subject: str | None, grants: Iterable[Grant]) -> dict[str, Any]:
        """The `/token` answer: `token` and `access_token` (the same), `expires_in`, `issued_at`."""
        now = int(self._wall())
        token = regtoken.mint(
            key=self._key,
            service=self.service,
            subject=subject or "",
            grants=[(g.repository, tuple(g.actions)) for g in grants],
            now=now,
            ttl_seconds=self.ttl_seconds,
            jti=secrets.token_hex(8),
        )
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"token": token, "access_token": token, "expires_in": self.ttl_seconds, "issued_at": issued}

    def reissue(self, token: str) -> dict[str, Any]:
        """The `/token` answer for a caller whose credential is one of our tokens: that same token, expiring
        when it does (`expires_in` what is left), never a new one. Raises RegistryTokenError when it is not
        valid."""
        self.verify(token)
        now = self._wall()
        expires = self._verified[self._mac(token)][1]
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {
            "token": token,
            "access_token": token,
            "expires_in": max(0, int(expires - now)),
            "issued_at": issued,
        }

    def owns(self, token: str) -> bool:
        """Whether a Bearer token claims to be ours (then only `verify` may accept it)."""
        if self._mac(token) in self._verified:
            return True
        try:
            return bool(jwt.decode(token, options={"verify_signature": False}).get("iss") == self.issuer)
        except jwt.PyJWTError:
            return False

    def verify(self, token: str) -> Verified:
        mac = self._mac(token)
        remembered = self._verified.get(mac)
        if remembered is not None:
            if self._wall() <= remembered[1]:
                return remembered[0]
            del self._verified[mac]
            raise RegistryTokenError("registry token has expired; ask /token for a new one")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self.service,
                issuer=self.issuer,
                options={"verify_exp": False, "verify_nbf": False, "require": ["exp", "access"]},
            )
        except jwt.InvalidSignatureError:
            raise RegistryTokenError("registry token signature is invalid") from None
        except jwt.PyJWTError:
            raise RegistryTokenError("registry token is not valid here") from None
        if not isinstance(claims["exp"], int | float) or self._wall() > claims["exp"]:
            raise RegistryTokenError("registry token has expired; ask /token for a new one")
        grants = tuple(
            Grant(repository=str(a.get("name")), actions=frozenset(map(str, a.get("actions") or ())))
            for a in claims["access"]
            if isinstance(a, dict) and a.get("type") == "repository"
        )
        verified = Verified(subject=claims.get("sub") or None, grants=grants)
        if len(self._verified) >= CACHE_LIMIT:
            now = self._wall()
            self._verified = {k: v for k, v in self._verified.items() if v[1] >= now}
            if len(self._verified) >= CACHE_LIMIT:
                self._verified.clear()
        self._verified[mac] = (verified, float(claims["exp"]))
        return verified
