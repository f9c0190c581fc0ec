"""Token identities: Kubernetes ServiceAccount tokens and external OIDC ID tokens as registry credentials.

Owns: verifying a JWT offline against its issuer's published keys (OIDC discovery + JWKS, cached per
issuer; the issuers come from identities_file.py), and mapping verified claims to a `Principal`. Must not:
know HTTP serving (auth and app do), do I/O except through the injected `Fetcher` (issuers.py fetches
over HTTP), or put a token, or anything derived from one without a secret key, into a log, an exception
message or a cache key.

Verification order, each failure a `TokenError` naming the failing check: shape; algorithm (asymmetric
only: `none` and HMAC are never accepted, so a public key can never be used as a shared secret); issuer
(the unverified `iss` selects one configured issuer, nothing else is trusted); the signing key (`kid` in
the cached JWKS; an unknown `kid` refreshes the JWKS, at most once per `min_refresh_seconds` per issuer,
so a flood of forged `kid`s costs the issuer one request per interval); signature; `aud` (the issuer's
configured audience, i.e. this registry); `exp` and `nbf` against the wall clock with `LEEWAY_SECONDS`.

No API call per request: keys come from the cache, and a verified token is remembered (by HMAC under a
process-random key) until it expires, as long as the key it was signed with is still published.

Key rotation at the issuer: a token signed by a new key names an unknown `kid`, which refreshes the keys (at
most once per `min_refresh_seconds`); a key the issuer stopped publishing stops verifying, tokens remembered
as verified included, at the next refresh: each issuer's keys are re-read every `keyRefreshSeconds`
(default 600), so that is the bound. With `tokenReview` on a Kubernetes issuer, the first use of a token
is also checked by a TokenReview (the API server refuses a token whose Pod or ServiceAccount was deleted),
and that answer is reused for at most `cacheSeconds`: a bound token is refused within that bound after
its object is gone. Without it, a token stays valid until its own `exp`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jwt

# The identities file (`serve --identities`) and its issuers, parsed in identities_file; named here too.
from dockyard_registry.identities_file import Claims as Claims
from dockyard_registry.identities_file import IdentitiesFileError as IdentitiesFileError
from dockyard_registry.identities_file import Issuer as Issuer
from dockyard_registry.identities_file import Kind as Kind
from dockyard_registry.identities_file import parse_identities as parse_identities

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_SECONDS = 30.0
"""Clock skew allowed on `exp` and `nbf` (Kubernetes' own authenticator allows more)."""
SA_PREFIX = "system:serviceaccount:"
CACHE_LIMIT = 10000


class TokenError(Exception):
    """A token was refused; `check` names the failing check. The message never contains the token."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


@dataclasses.dataclass(frozen=True)
class Principal:
    """A verified token's identity."""

    issuer: str
    """The issuer's name in the identities file."""
    kind: Kind
    subject: str
    """`system:serviceaccount:<ns>:<name>` for Kubernetes, the mapped user claim for OIDC."""
    groups: tuple[str, ...] = ()
    namespace: str | None = None
    service_account: str | None = None
    expires: float = 0.0


def looks_like_jwt(value: str) -> bool:
    """A compact JWS (three base64url parts, a JSON header): the only passwords sent to `TokenVerifier`."""
    parts = value.split(".")
    return len(parts) == 3 and value.startswith("eyJ") and all(parts[:2])


def name_matches(pattern: str, value: str) -> bool:
    """Namespace / ServiceAccount / user / group patterns: exact, or shell-style `*` and `?`."""
    return fnmatch.fnmatchcase(value, pattern)


# ------------------------------------------------------------------------------------------- fetching
class Fetcher(Protocol):
    """The I/O verification needs; issuers.HttpFetcher does it over HTTP."""

    async def get_json(self, url: str, *, issuer: Issuer) -> Any: ...

    async def review(self, token: str, *, issuer: Issuer) -> bool:
        """TokenReview: does the API server still accept this token for the issuer's audience?"""
        ...


class FetchError(Exception):
    """The issuer could not be read (network, HTTP status, not JSON); the message names the URL."""


class KeySet:
    """One issuer's signing keys, read from its discovery document and JWKS and kept.

    Refreshed when a token names an unknown `kid` or the keys are older than `max_age_seconds` (the
    issuer's keyRefreshSeconds; the app's loop refreshes them when due, `seconds_until_due`), never more
    often than `min_refresh_seconds` (monotonic clock injected); concurrent refreshes share one.
    A failed refresh keeps the keys already known.
    """

    def __init__(
        self,
        issuer: Issuer,
        fetcher: Fetcher,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_refresh_seconds: float = 30.0,
        max_age_seconds: float | None = None,
    ) -> None:
        self.issuer, self._fetcher, self._clock = issuer, fetcher, clock
        self.max_age_seconds = issuer.key_refresh_seconds if max_age_seconds is None else max_age_seconds
        self.min_refresh_seconds = min(min_refresh_seconds, self.max_age_seconds)
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None
        self._refreshing: asyncio.Future[None] | None = None
        self.fetches = 0
        self.last_error: str | None = None

    def status(self) -> dict[str, Any]:
        """What /status reports of this issuer (no secret: names, URLs, key ids count, last error)."""
        return {
            "name": self.issuer.name,
            "kind": self.issuer.kind,
            "issuer": self.issuer.url or None,
            "audience": self.issuer.audience,
            "reachable": self.reachable,
            "keys": len(self._keys),
            "error": self.last_error,
            "tokenReview": self.issuer.token_review,
        }

    async def warm(self) -> None:
        """Read the keys when due (at startup: now, so /status shows reachability before the first token)."""
        if self.seconds_until_due() <= 0:
            await self._refresh()

    def seconds_until_due(self) -> float:
        """Until the next scheduled read: the keys' age reaching `max_age_seconds`, or for an issuer not
        read yet or whose last read failed, `min_refresh_seconds` after that attempt."""
        now = self._clock()
        if self._attempted_at is None:
            return 0.0
        if self._loaded_at is None or self.last_error is not None:
            return max(0.0, self._attempted_at + self.min_refresh_seconds - now)
        return max(0.0, self._loaded_at + self.max_age_seconds - now)

    def publishes(self, kid: str | None) -> bool:
        """Whether the keys read last still hold `kid` (a remembered token's key), without fetching."""
        return kid in self._keys or (kid is None and len(self._keys) == 1)

    @property
    def reachable(self) -> bool | None:
        """None before the first fetch; then whether the last one succeeded."""
        return None if self._attempted_at is None else self.last_error is None

    async def key(self, kid: str | None) -> jwt.PyJWK:
        now = self._clock()
        stale = self._loaded_at is None or now - self._loaded_at >= self.max_age_seconds
        if (kid not in self._keys or stale) and (self._refreshing is not None or self._may_refresh(now)):
            await self._refresh()  # joins a refresh already under way (the startup read) or starts one
        found = self._keys.get(kid)
        if found is None and kid is None and len(self._keys) == 1:
            found = next(iter(self._keys.values()))
        if found is None:
            if self._loaded_at is None and self.last_error is not None:
                raise TokenError(
                    "issuer unreachable", f"issuer {self.issuer.name} unreachable: {self.last_error}"
                )
            raise TokenError("unknown key", f"token signing key is unknown to issuer {self.issuer.name}")
        return found

    async def learn(self) -> None:
        """Read discovery once (rate-bounded) for an issuer whose URL comes from its discovery document."""
        if not self.issuer.url and self._may_refresh(self._clock()):
            await self._refresh()

    def _may_refresh(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.min_refresh_seconds

    async def _refresh(self) -> None:
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._load())
            self._refreshing.add_done_callback(lambda _f: setattr(self, "_refreshing", None))
        await asyncio.shield(self._refreshing)

    async def _load(self) -> None:
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            discovery = await self._fetcher.get_json(self.issuer.discovery_url, issuer=self.issuer)
            if not isinstance(discovery, dict) or not isinstance(discovery.get("issuer"), str):
                raise FetchError(f"discovery at {self.issuer.discovery_url} names no issuer")
            if not self.issuer.url:
                # Read through the API server with its CA and our own token: as trusted as the keys.
                self.issuer = dataclasses.replace(self.issuer, url=discovery["issuer"])
            elif discovery["issuer"] != self.issuer.url:
                raise FetchError(f"discovery at {self.issuer.discovery_url} names another issuer")
            published = discovery.get("jwks_uri")
            if not isinstance(published, str):
                raise FetchError(f"discovery at {self.issuer.discovery_url} has no jwks_uri")
            jwks = await self._fetcher.get_json(self.issuer.jwks_url(published), issuer=self.issuer)
            keys = _parse_jwks(jwks)
        except FetchError as exc:
            self.last_error = str(exc)
            log.warning("cannot refresh keys of issuer %s: %s", self.issuer.name, exc)
            return
        self._keys, self._loaded_at, self.last_error = keys, self._clock(), None


def _parse_jwks(doc: Any) -> dict[str | None, jwt.PyJWK]:
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise FetchError("JWKS is not a JSON object with a keys list")
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in doc["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue  # a key type this registry cannot use; others may still verify
        if key.algorithm_name in ALGORITHMS:
            keys[entry.get("kid")] = key
    return keys


# ------------------------------------------------------------------------------------------- verifying
class TokenVerifier:
    """Verifies tokens of the configured issuers; see the module docstring for the checks and caching."""

    def __init__(
        self,
        issuers: Sequence[Issuer],
        fetcher: Fetcher,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        min_refresh_seconds: float = 30.0,
    ) -> None:
        self.keysets: Mapping[str, KeySet] = {
            i.name: KeySet(i, fetcher, clock=clock, min_refresh_seconds=min_refresh_seconds) for i in issuers
        }
        self._fetcher, self._wall = fetcher, wall
        self._key = secrets.token_bytes(32)
        # HMAC of a token -> (its principal, until when, its issuer's name, its key id).
        self._verified: dict[bytes, tuple[Principal, float, str, str | None]] = {}
        self.reviews = 0

    async def verify(self, token: str) -> Principal:
        mac = hmac.new(self._key, token.encode(), "sha256").digest()
        now = self._wall()
        cached = self._verified.get(mac)
        if cached is not None and now < cached[1] and self.keysets[cached[2]].publishes(cached[3]):
            return cached[0]
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.DecodeError:
            raise TokenError("malformed", "token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenError("algorithm", f"token algorithm {str(alg)[:20]!r} is not accepted")
        keyset = await self._keyset_of(str(unverified.get("iss")))
        if keyset is None:
            raise TokenError("unknown issuer", "token issuer is not trusted by this registry")
        key = await keyset.key(header.get("kid"))
        issuer = keyset.issuer
        claims = _decode(token, key=key, alg=alg, issuer=issuer)
        now = self._wall()
        exp = claims["exp"]
        if not isinstance(exp, int | float) or now > exp + LEEWAY_SECONDS:
            raise TokenError("expired", "token has expired")
        nbf = claims.get("nbf")
        if nbf is not None and (not isinstance(nbf, int | float) or now + LEEWAY_SECONDS < nbf):
            raise TokenError("not yet valid", "token is not valid yet (nbf)")
        principal = _principal(issuer, claims, expires=float(exp))
        until = float(exp)
        if issuer.token_review:
            self.reviews += 1
            try:
                ok = await self._fetcher.review(token, issuer=issuer)
            except FetchError as exc:
                raise TokenError("token review", f"token review failed: {exc}") from None
            if not ok:
                raise TokenError("revoked", "the API server no longer accepts this token (token review)")
            until = min(until, now + issuer.review_cache_seconds)
        self._remember(mac, (principal, until, keyset.issuer.name, header.get("kid")))
        return principal

    async def _keyset_of(self, iss: str) -> KeySet | None:
        for keyset in self.keysets.values():
            if keyset.issuer.url == iss:
                return keyset
        for keyset in self.keysets.values():
            if not keyset.issuer.url:
                await keyset.learn()
                if keyset.issuer.url == iss:
                    return keyset
        return None

    def _remember(self, mac: bytes, entry: tuple[Principal, float, str, str | None]) -> None:
        if len(self._verified) >= CACHE_LIMIT:
            now = self._wall()
            self._verified = {k: v for k, v in self._verified.items() if v[1] > now}
            if len(self._verified) >= CACHE_LIMIT:
                self._verified.clear()
        self._verified[mac] = entry


def _decode(token: str, *, key: jwt.PyJWK, alg: str, issuer: Issuer) -> dict[str, Any]:
    if key.algorithm_name != alg:
        raise TokenError("bad signature", "token algorithm does not match its signing key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key.key,
            algorithms=[alg],
            audience=issuer.audience,
            issuer=issuer.url,
            # exp and nbf are checked by the caller against the injected wall clock.
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "require": ["exp", "sub"],
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenError("bad signature", "token signature is invalid") from None
    except jwt.InvalidAudienceError:
        raise TokenError("wrong audience", "token audience is not this registry's") from None
    except jwt.InvalidIssuerError:
        raise TokenError("unknown issuer", "token issuer is not trusted by this registry") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError("malformed", f"token has no {exc.claim} claim") from None
    except jwt.PyJWTError:
        raise TokenError("bad signature", "token cannot be verified with the issuer's key") from None
    return claims


def _principal(issuer: Issuer, claims: Mapping[str, Any], *, expires: float) -> Principal:
    if issuer.kind == "kubernetes":
        subject = str(claims["sub"])
        parts = subject.split(":")
        if not subject.startswith(SA_PREFIX) or len(parts) != 4 or not all(parts[2:]):
            raise TokenError("not a service account", "token subject is not a ServiceAccount")
        namespace, name = parts[2], parts[3]
        groups: tuple[str, ...] = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
        return Principal(
            issuer=issuer.name,
            kind="kubernetes",
            subject=subject,
            groups=groups,
            namespace=namespace,
            service_account=name,
            expires=expires,
        )
    user = claims.get(issuer.claims.user)
    if not isinstance(user, str) or not user:
        raise TokenError("unmapped", f"token has no string {issuer.claims.user} claim")
    groups_claim = claims.get(issuer.claims.groups) if issuer.claims.groups else None
    if isinstance(groups_claim, str):
        groups_claim = [groups_claim]
    oidc_groups = tuple(g for g in groups_claim or () if isinstance(g, str))
    return Principal(issuer=issuer.name, kind="oidc", subject=user, groups=oidc_groups, expires=expires)
