"""The HTTP client of one mirrored upstream registry, with the authentication registries ask for.

Owns: sending a request to the upstream and authenticating it the way the upstream's challenge asks:
none, HTTP Basic with the mirror's credentials, or the Docker token flow (`WWW-Authenticate: Bearer
realm=…,service=…,scope=…`: fetch a token from the realm, with the credentials when there are any, and
reuse it for that scope until it expires). It turns every answer that is not a success into one of the
errors below, so callers never read status codes. Counts requests and errors for the metrics. Keeps
the upstream's TLS trust current: a changed `caFile` (cabundle.py) replaces the SSL context and the
connection pool, a broken new one is reported and the previous one kept.
Must not: store anything (mirror.py decides what is kept) or put a credential into an exception
message, a log line or a metric label.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ipaddress
import json
import logging
import re
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp

from dockyard_registry import cabundle, mirrors

log = logging.getLogger(__name__)

# Docker's token spec: a token without `expires_in` is valid for 60 seconds.
_DEFAULT_TOKEN_SECONDS = 60.0
# How often, at most, a mirror's CA file is looked at (one stat) for a rotated bundle.
CA_CHECK_SECONDS = 5.0
_TOKEN_MARGIN = 10.0  # renew this long before the upstream's expiry: clocks and transit differ
_MAX_TOKEN_BYTES = 1 << 20
_CHALLENGE_PARAM_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class UpstreamError(Exception):
    """The upstream did not give us what we asked for; the message is safe to show a client."""


class UnavailableError(UpstreamError):
    """Unreachable, timed out, or a server-side failure (5xx, 429): cached content may stand in."""


class AuthError(UpstreamError):
    """The upstream refused the mirror's credentials (or wants some and none are configured)."""


class NotFoundError(UpstreamError):
    """The upstream answered 404: the repository, tag or digest does not exist there."""


class DigestMismatchError(UpstreamError):
    """The upstream sent bytes whose digest is not the one asked for (or the one it announced)."""


def challenge(header: str) -> tuple[str, dict[str, str]]:
    """The scheme (lower case) and parameters of a `WWW-Authenticate` header value."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for m in _CHALLENGE_PARAM_RE.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


class Client:
    """One upstream's client: one connection pool, the remembered auth scheme, and cached tokens.

    Safe for one event loop. The session is made on first use (it needs the running loop).
    """

    def __init__(
        self,
        mirror: mirrors.Mirror,
        *,
        clock: Callable[[], float] = time.monotonic,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        ca_check_seconds: float = CA_CHECK_SECONDS,
    ) -> None:
        self.mirror = mirror
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._context: ssl.SSLContext | bool | None = None  # loaded by prepare(), else on first use
        self._ca_check_seconds = ca_check_seconds
        self._ca_checked_at = 0.0  # our clock: when the CA file's stamp was last looked at
        self._ca_seen: cabundle.Stamp | None = None  # the CA file's version last tried (loaded or not)
        self._users: dict[aiohttp.ClientSession, int] = {}  # sessions with requests in flight, how many
        self._basic = False  # the upstream challenged with Basic: send the credentials up front from now on
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, expires at, our clock)
        self.requests: collections.Counter[str] = collections.Counter()  # by kind: manifest, blob, token, …
        self.errors: collections.Counter[str] = collections.Counter()  # by reason: unavailable, auth, …
        # For the status endpoint: whether the last request reached the upstream (None: none sent yet),
        # the last failure other than a 404 (a message safe to show), with its time and its metrics reason
        # (the operator tells an unreachable upstream from one refusing the credentials by it), and the
        # time of the last answered request.
        self.reachable: bool | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_error_reason: str | None = None
        self.last_success_at: float | None = None
        # Why the CA file on disk is not the one in use (a changed file that cannot be loaded), else None.
        self.ca_error: str | None = None

    async def prepare(self) -> None:
        """Load the TLS settings now, in a worker thread: with a CA file that is the system's CA bundle
        too (tens of milliseconds of parsing), which would otherwise hold up the event loop, and the
        first fetch, when the first request is sent. A CA file that cannot be loaded is left to that
        request to report."""
        if self._context is None and self.mirror.ca_file is not None:
            with contextlib.suppress(UnavailableError):
                await self._check_trust()

    async def _check_trust(self) -> None:
        """Before a request: (re)load the CA file when it is not loaded yet, or when it changed on disk
        (looked at once per `ca_check_seconds`), in a worker thread. A changed file replaces the context
        and the connection pool (connections in use finish on the old one); a changed file that cannot
        be loaded keeps the previous context and is reported (ca_error, last_error, the log). Without
        any context loaded, that raises UnavailableError."""
        path = self.mirror.ca_file
        if path is None:
            self._context = True
            return
        if self._context is not None and self._clock() - self._ca_checked_at < self._ca_check_seconds:
            return
        self._ca_checked_at = self._clock()
        try:
            # Without a context yet, the file is loaded whatever its stamp: the request needs one.
            known = self._ca_seen if self._context is not None else None
            loaded = await asyncio.to_thread(cabundle.reload_if_changed, path, known)
        except cabundle.CaBundleError as exc:
            message = f"cannot load the CA bundle of upstream {self.mirror.upstream}: {exc}"
            first = self.ca_error is None or exc.stamp != self._ca_seen
            self._ca_seen = exc.stamp
            if self._context is None:
                raise UnavailableError(message) from None
            self.ca_error = message + "; the previously loaded CA bundle is still used"
            if first:  # once per broken version of the file, not at every check
                log.warning("mirror %s: %s", self.mirror.prefix, self.ca_error)
                self.last_error, self.last_error_at = self.ca_error, time.time()
                self.last_error_reason = "other"
            return
        if loaded is None:
            return
        renewed = self._context is not None
        self._context, self._ca_seen, self.ca_error = loaded.context, loaded.stamp, None
        if renewed:
            log.info("mirror %s: the CA bundle %s changed; loaded it", self.mirror.prefix, path)
            await self._retire_session()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            assert self._context is not None, "_check_trust() runs before the first request"
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._context),
                timeout=self._timeout,
                headers={"User-Agent": "dockyard-registry-mirror"},
            )
        return self._session

    @contextlib.asynccontextmanager
    async def _using_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The current session, counted as in use until the block ends: a session replaced meanwhile (the
        CA changed) is closed by its last user, so a download in progress is not cut off."""
        session = self._get_session()
        self._users[session] = self._users.get(session, 0) + 1
        try:
            yield session
        finally:
            self._users[session] -= 1
            if not self._users[session]:
                del self._users[session]
                if session is not self._session:
                    await session.close()

    async def _retire_session(self) -> None:
        """New connections use the current context from now on; idle ones of the old pool are closed."""
        old, self._session = self._session, None
        if old is not None and old not in self._users:
            await old.close()

    async def close(self) -> None:
        for session in {*self._users, *([self._session] if self._session is not None else [])}:
            await session.close()

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        *,
        repository: str,
        kind: str,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A successful (2xx) response to `method path` on the upstream, authenticated for a pull of
        `repository`; raises an UpstreamError subclass otherwise. `kind` labels the metrics."""
        self.requests[kind] += 1
        try:
            async with self._send(method, path, repository=repository, headers=headers) as response:
                self.reachable = True
                self.last_success_at = time.time()
                yield response
        except UpstreamError as exc:
            self.errors[_reason(exc)] += 1
            if not isinstance(exc, NotFoundError):
                self.reachable = not isinstance(exc, UnavailableError)
                self.last_error, self.last_error_at = str(exc), time.time()
                self.last_error_reason = _reason(exc)
            raise

    @contextlib.asynccontextmanager
    async def _send(
        self, method: str, path: str, *, repository: str, headers: Mapping[str, str] | None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        scope = f"repository:{repository}:pull"
        url = self.mirror.upstream + path
        await self._check_trust()
        for attempt in (1, 2):
            sent = dict(headers or {})
            authorization = self._authorization(scope)
            if authorization is not None:
                sent["Authorization"] = authorization
            try:
                async with (
                    self._using_session() as session,
                    session.request(method, url, headers=sent) as response,
                ):
                    if response.status == 401 and attempt == 1:
                        await self._answer_challenge(
                            response.headers.get("WWW-Authenticate", ""),
                            scope=scope,
                            sent_basic=authorization is not None and authorization.startswith("Basic "),
                        )
                        continue
                    _raise_for(response, what=f"{method} {path}", upstream=self.mirror.upstream)
                    yield response
                    return
            except (TimeoutError, aiohttp.ClientError) as exc:
                # Also a body that breaks off midway while the caller reads it (ClientPayloadError).
                raise UnavailableError(
                    f"upstream {self.mirror.upstream} unreachable: {type(exc).__name__}"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _authorization(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token is not None and token[1] > self._clock():
            return f"Bearer {token[0]}"
        if self._basic and self.mirror.credentials is not None:
            return _basic(*self._credentials())
        return None

    def _credentials(self) -> tuple[str, str]:
        assert self.mirror.credentials is not None
        try:
            return self.mirror.credentials.read()
        except mirrors.MirrorConfigError as exc:
            raise AuthError(f"mirror {self.mirror.prefix}: {exc}") from None

    async def _answer_challenge(self, header: str, *, scope: str, sent_basic: bool) -> None:
        """Prepare the authorization a 401's challenge asks for (the request is then sent again).

        `sent_basic`: the challenged request carried the credentials already, so they were refused.
        Requests sent at once before the first challenge was answered carry none and are each challenged:
        each is sent again with the credentials, none counts as refused."""
        scheme, params = challenge(header)
        if scheme == "basic":
            if self.mirror.credentials is None:
                raise AuthError(f"upstream {self.mirror.upstream} requires credentials; the mirror has none")
            if sent_basic:
                raise AuthError(f"upstream {self.mirror.upstream} refused the mirror's credentials")
            self._basic = True
            return
        if scheme == "bearer" and params.get("realm"):
            self._tokens[scope] = await self._fetch_token(params, scope=scope)
            return
        raise AuthError(
            f"upstream {self.mirror.upstream} refused the request (401) without a usable challenge"
        )

    async def _fetch_token(self, params: Mapping[str, str], *, scope: str) -> tuple[str, float]:
        realm = params["realm"]
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https"):
            raise AuthError(f"upstream {self.mirror.upstream} names a token realm that is not http(s)")
        if _internal(parts.hostname) and not _internal(urllib.parse.urlsplit(self.mirror.upstream).hostname):
            # A public upstream must not point the mirror (and its credentials) at the cluster's own
            # network. Only address literals and localhost are judged: names are not resolved here.
            raise AuthError(
                f"upstream {self.mirror.upstream} names a token realm on an internal address; refused"
            )
        if parts.scheme == "http" and self.mirror.upstream.startswith("https:") and self.mirror.credentials:
            # As docker and crane do: credentials for a TLS registry never travel in clear text.
            raise AuthError(f"upstream {self.mirror.upstream} names a plain-http token realm; refused")
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {}
        if self.mirror.credentials is not None:
            headers["Authorization"] = _basic(*self._credentials())
        self.requests["token"] += 1
        started = self._clock()
        try:
            async with (
                self._using_session() as session,
                session.get(realm, params=query, headers=headers) as response,
            ):
                if response.status in (401, 403):
                    raise AuthError(
                        f"the token service of upstream {self.mirror.upstream} refused the mirror's "
                        f"credentials ({response.status})"
                    )
                _raise_for(response, what="token request", upstream=self.mirror.upstream)
                body = await response.content.read(_MAX_TOKEN_BYTES)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UnavailableError(
                f"token service of upstream {self.mirror.upstream} unreachable: {type(exc).__name__}"
            ) from None
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
            seconds = float(doc.get("expires_in") or _DEFAULT_TOKEN_SECONDS)
        except (ValueError, AttributeError, TypeError):
            token, seconds = None, 0.0
        if not isinstance(token, str) or not token:
            raise AuthError(f"the token service of upstream {self.mirror.upstream} sent no token")
        return token, started + max(seconds, _DEFAULT_TOKEN_SECONDS) - _TOKEN_MARGIN


def _internal(host: str | None) -> bool:
    """A loopback, private or link-local address literal, or `localhost`."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _raise_for(response: aiohttp.ClientResponse, *, what: str, upstream: str) -> None:
    status = response.status
    if 200 <= status < 300:
        return
    if status == 404:
        raise NotFoundError(f"not found on upstream {upstream}")
    if status in (401, 403):
        raise AuthError(f"upstream {upstream} refused the mirror's credentials for {what} ({status})")
    if status == 429 or status >= 500:
        raise UnavailableError(f"upstream {upstream} failed {what} ({status})")
    raise UpstreamError(f"upstream {upstream} answered {what} with {status}")


def _reason(exc: UpstreamError) -> str:
    if isinstance(exc, UnavailableError):
        return "unavailable"
    if isinstance(exc, AuthError):
        return "auth"
    if isinstance(exc, NotFoundError):
        return "not_found"
    if isinstance(exc, DigestMismatchError):
        return "digest"
    return "other"
