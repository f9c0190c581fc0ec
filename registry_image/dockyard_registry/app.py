"""The aiohttp application: factory, the one error middleware, and the authorizing dispatcher.

Owns: turning every failure into the OCI error envelope (domain errors via errors.translate; anything
unknown is logged here with its traceback and answered 500 UNKNOWN without one), authentication and
authorization of every `/v2/` request, and the nginx `auth_request` endpoint `/auth`; naming the client
address a request's password checks are charged to (auth's per-client budget; X-Real-IP only from a
trusted proxy).
Refuses pushes and deletes under a pull-through mirror's prefix (DENIED, before any handler runs).
Its background tasks and startup/cleanup steps (upload sweeps, scheduled gc, storage checks, issuer keys,
mirrors) are lifecycle.py's.
Must not: contain endpoint logic (handlers/) or storage rules (store.py).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import http_exceptions, web

from dockyard_registry import auth, errors, health, lifecycle, reference, routes, state, tokens
from dockyard_registry import metrics as metrics_
from dockyard_registry.errors import Code, OciError
from dockyard_registry.handlers import uploads

log = logging.getLogger(__name__)
# aiohttp's server log (parse errors, connection trouble), under our name so the filter below is ours.
http_log = logging.getLogger("dockyard_registry.http")
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
_SCOPE_ACTION = {
    routes.Scope.PULL: auth.Action.PULL,
    routes.Scope.PUSH: auth.Action.PUSH,
    routes.Scope.DELETE: auth.Action.DELETE,
}


class _NoRequestBytes(logging.Filter):
    """Keep what a client sent out of the log when aiohttp cannot parse a request.

    aiohttp answers 400 and logs the parser's exception at ERROR; its message quotes the offending
    bytes, so an oversized `Authorization` header put the start of `user:password` in the log. The
    record keeps who and what kind of error, at most WARNING (a client's mistake, not ours).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, http_exceptions.HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = (
                "malformed request from %s: %s (%s)",
                (remote, type(exc).__name__, exc.code),
            )
            record.exc_info, record.exc_text = None, None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


_NO_REQUEST_BYTES = _NoRequestBytes()


def create_app(settings: state.Settings, *, metrics: metrics_.Metrics | None = None) -> web.Application:
    """The registry app; with `metrics`, every request is counted (metrics.py, outermost middleware)."""
    http_log.addFilter(_NO_REQUEST_BYTES)  # once per process: a filter is added only if absent
    app = web.Application(
        middlewares=[_errors_middleware] if metrics is None else [metrics.middleware, _errors_middleware],
        client_max_size=1024**2 * 8,
        handler_args={"logger": http_log},
    )
    app[state.SETTINGS] = settings
    app.on_response_prepare.append(_api_version_header)
    lifecycle.install(app, settings)
    app.router.add_get("/healthz", _healthz, allow_head=True)
    app.router.add_get("/readyz", _readyz, allow_head=True)
    app.router.add_get("/auth", _auth_request, allow_head=False)
    app.router.add_get("/token", _token, allow_head=False)
    app.router.add_route("*", "/v2", _dispatch)
    # [\s\S], not `.`: a path with a percent-encoded newline is still ours to answer (routes.match).
    app.router.add_route("*", r"/v2/{tail:[\s\S]*}", _dispatch)
    return app


_SCOPE_ACTIONS = {auth.Action.PULL: "pull", auth.Action.PUSH: "pull,push", auth.Action.DELETE: "delete"}


def challenge(request: web.Request) -> str:
    """The WWW-Authenticate of a 401: Basic, or with --token-realm the token flow's Bearer challenge (a
    realm path is resolved on the Host and scheme the client used; from a trusted proxy, its
    X-Forwarded-Proto)."""
    settings = request.app[state.SETTINGS]
    realm = None
    if settings.token_realm is not None:
        scheme = request.scheme
        peer = _ip(request.remote)
        if peer is not None and any(peer in network for network in settings.trusted_proxies):
            scheme = request.headers.get("X-Forwarded-Proto", scheme).strip().lower()
        realm = tokens.realm_for(settings.token_realm, host=request.headers.get("Host"), scheme=scheme)
    if realm is None:
        return f'Basic realm="{settings.realm}"'
    value = f'Bearer realm="{realm}",service="{settings.realm}"'
    scope = request.get(state.SCOPE)
    return value + (f',scope="{scope}"' if scope else "")


async def _token(request: web.Request) -> web.StreamResponse:
    """The Docker token flow's endpoint: a short registry token granting what the caller may do of the
    `scope`s it asks for (none it may not; anonymous callers what anonymous pull allows)."""
    authenticator = request.app[state.SETTINGS].authenticator
    if authenticator is None or authenticator.registry_tokens is None:
        raise OciError(Code.NAME_UNKNOWN, "no token service here", status=404)
    authorization = request.headers.get("Authorization")
    identity = await _authenticate(request, authorization=authorization)
    if identity.grants is not None:
        # A registry token (one from here, or a short-lived pull secret's that containerd sends here as its
        # password) never buys another, or a leaked one would live forever: it gets itself back, with what is
        # left of its lifetime and nothing added to its grants.
        answer = authenticator.registry_tokens.reissue(auth.presented_secret(authorization))
        return web.json_response(answer, headers={"Cache-Control": "no-store"})
    try:
        wanted = tokens.parse_scopes(request.query.getall("scope", []))
    except tokens.ScopeError as exc:
        raise OciError(Code.UNSUPPORTED, str(exc), status=400) from None
    granted = [
        tokens.Grant(
            repository=g.repository,
            actions=frozenset(
                a
                for a in g.actions
                if reference.is_valid_name(g.repository)
                and authenticator.permits(identity, g.repository, auth.Action(a))
            ),
        )
        for g in wanted
    ]
    answer = authenticator.registry_tokens.issue(subject=identity.user, grants=granted)
    return web.json_response(answer, headers={"Cache-Control": "no-store"})


def _render(err: OciError, *, request: web.Request, realm: str) -> web.Response:
    headers = dict(err.headers)
    if err.code is Code.UNAUTHORIZED:
        headers["WWW-Authenticate"] = challenge(request)
    body = None if request.method == "HEAD" else errors.envelope(err)
    response = web.Response(status=err.status, body=body, headers=headers)
    if body is not None:
        response.content_type = "application/json"
    return response


@web.middleware
async def _errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    realm = request.app[state.SETTINGS].realm
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own refusals (no route, a body over client_max_size): the same envelope as ours.
        return _render(_from_aiohttp(exc), request=request, realm=realm)
    except Exception as exc:
        err = errors.translate(exc)
        if err is None:
            log.exception("unhandled error on %s %s", request.method, request.path)
            err = OciError(Code.UNKNOWN, "internal server error")
        return _render(err, request=request, realm=realm)
    return response


_AIOHTTP_STATUS_CODES = {
    404: Code.NAME_UNKNOWN,
    405: Code.UNSUPPORTED,
    413: Code.SIZE_INVALID,
    416: Code.RANGE_INVALID,
}


def _from_aiohttp(exc: web.HTTPException) -> OciError:
    code = _AIOHTTP_STATUS_CODES.get(exc.status, Code.UNSUPPORTED)
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    return OciError(code, exc.reason.lower(), status=exc.status, headers=headers)


async def _api_version_header(request: web.Request, response: web.StreamResponse) -> None:
    """Every response (errors and streamed blobs included) says which API it speaks; docker login needs it."""
    response.headers.update(API_VERSION)


async def _healthz(request: web.Request) -> web.StreamResponse:
    """Liveness: the event loop answers. Never touches storage (see health.py)."""
    return web.Response(text="ok")


async def _readyz(request: web.Request) -> web.StreamResponse:
    """Readiness: the last storage check passed (503 with the reason otherwise)."""
    monitor = request.app[state.SETTINGS].storage
    if monitor is None:
        return web.Response(text="ok")
    verdict = monitor.state
    return web.Response(status=200 if verdict.ready else 503, text=verdict.message)


_WRITES = frozenset({"POST", "PATCH", "PUT"})


def _refuse_push_without_storage(
    request: web.Request, *, match: routes.Match, method: str | None = None
) -> None:
    """A push while storage cannot take it is refused before a byte is stored (health.py); `method` is the
    original request's when judging it for nginx's `auth_request`."""
    monitor = request.app[state.SETTINGS].storage
    if monitor is None or match.scope is not routes.Scope.PUSH or (method or request.method) not in _WRITES:
        return
    verdict = monitor.state
    if not verdict.refuses_pushes:
        return
    if verdict.problem is health.Problem.FULL:
        raise OciError(Code.UNKNOWN, verdict.message, status=507)
    raise OciError(Code.UNKNOWN, verdict.message, status=503, headers={"Retry-After": "30"})


def _refuse_mirror_writes(request: web.Request, *, match: routes.Match) -> None:
    """A mirror's repositories hold what its upstream has: pushes and deletes there are DENIED."""
    mirrors = request.app[state.SETTINGS].mirror
    if mirrors is None or match.scope not in (routes.Scope.PUSH, routes.Scope.DELETE):
        return
    mirror = mirrors.config.covers(match.name)
    if mirror is None:
        return
    raise OciError(
        Code.DENIED,
        f"repository {match.name} is under {mirror.prefix}/, a read-only mirror of {mirror.upstream}: "
        "pushes and deletes are refused there; push to a repository outside the mirror's prefix",
    )


def client_address(request: web.Request) -> str:
    """The address a request's password checks are charged to (auth's per-client budget).

    The TCP peer, unless the peer is a trusted proxy: then nginx's `X-Real-IP` (its `$remote_addr`).
    IPv6 clients count per /64, the block one host or one customer line usually holds, so rotating
    through one's own addresses buys no extra budget. Asked on every request: the answer is cached per
    (peer, X-Real-IP), and a header only counts (and is only cached) from a trusted peer.
    """
    trusted = request.app[state.SETTINGS].trusted_proxies
    remote = request.remote
    real_ip = request.headers.get("X-Real-IP") if _trusted_peer(remote, trusted) else None
    if real_ip is not None and len(real_ip) > _MAX_ADDRESS:
        real_ip = ""  # no address: the peer's own, as for any header that does not parse
    return _client_address(remote, real_ip, trusted)


_MAX_ADDRESS = 64  # longer than any textual IP address (an IPv6 with a zone): not cached, not one


@functools.lru_cache(maxsize=1024)
def _trusted_peer(remote: str | None, trusted: tuple[state.Network, ...]) -> bool:
    peer = _ip(remote)
    return peer is not None and any(peer in network for network in trusted)


@functools.lru_cache(maxsize=4096)
def _client_address(remote: str | None, real_ip: str | None, trusted: tuple[state.Network, ...]) -> str:
    peer = _ip(remote)
    if peer is None:
        return remote or ""
    client = peer
    if real_ip is not None:
        client = _ip(real_ip) or peer
    if isinstance(client, ipaddress.IPv6Address):
        if client.ipv4_mapped is not None:
            return str(client.ipv4_mapped)
        return str(ipaddress.IPv6Network((client, 64), strict=False))
    return str(client)


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None


async def _authenticate(request: web.Request, *, authorization: str | None) -> auth.Identity:
    """Who sent the request; raises OciError UNAUTHORIZED (bad credentials) or TOO_MANY_REQUESTS."""
    authenticator = request.app[state.SETTINGS].authenticator
    if authenticator is None:
        return auth.ANONYMOUS
    try:
        return await authenticator.authenticate(authorization, client=client_address(request))
    except auth.BadCredentialsError as exc:
        raise OciError(Code.UNAUTHORIZED, str(exc)) from None
    except auth.TooManyVerificationsError as exc:
        raise OciError(Code.TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": "1"}) from None


async def _authorize(
    request: web.Request, *, match: routes.Match, authorization: str | None
) -> auth.Identity:
    """Authenticate and authorize one matched request; raises OciError UNAUTHORIZED/DENIED."""
    settings = request.app[state.SETTINGS]
    authenticator = settings.authenticator
    if authenticator is None:
        return auth.ANONYMOUS
    identity = await _authenticate(request, authorization=authorization)
    if match.scope is routes.Scope.LOGIN:
        if identity.user is None and identity.grants is None:  # any registry token may see /v2/
            raise OciError(Code.UNAUTHORIZED)
        return identity
    action = _SCOPE_ACTION[match.scope]
    if not reference.is_valid_name(match.name):
        # Let the handler answer NAME_INVALID; there is nothing to authorize against. Anonymous callers
        # still have to log in first so probing names reveals nothing.
        if identity.user is None and not authenticator.permits(identity, match.name, action):
            raise OciError(Code.UNAUTHORIZED)
        return identity
    if authenticator.permits(identity, match.name, action):
        return identity
    request[state.SCOPE] = f"repository:{match.name}:{_SCOPE_ACTIONS[action]}"
    if identity.user is None:
        raise OciError(Code.UNAUTHORIZED)
    raise OciError(Code.DENIED, f"user may not {action.value} in {match.name}")


def _match(method: str, raw_path: str) -> routes.Match:
    try:
        found = routes.match(method, raw_path)
    except routes.MethodNotAllowedError as exc:
        raise OciError(
            Code.UNSUPPORTED, f"method {method} not allowed here", headers={"Allow": ", ".join(exc.allowed)}
        ) from None
    if found is None:
        raise OciError(Code.NAME_UNKNOWN, "no such endpoint", status=404)
    return found


async def _dispatch(request: web.Request) -> web.StreamResponse:
    match = _match(request.method, request.raw_path)
    request[state.HANDLER] = match.handler
    identity = await _authorize(request, match=match, authorization=request.headers.get("Authorization"))
    request[state.IDENTITY] = identity
    _refuse_mirror_writes(request, match=match)
    _refuse_push_without_storage(request, match=match)
    return await match.handler(request, match.params)


async def _auth_request(request: web.Request) -> web.StreamResponse:
    """nginx `auth_request`: judge the original request from X-Original-URI/-Method; empty body.

    Only a request this endpoint can map to a known route and a repository scope passes. Anything else
    (an unknown path, a method the route lacks, an invalid repository name, no X-Original-URI at all) is
    refused like any other denial: 401 without valid credentials, 403 with them. The registry would
    answer such a request with an error anyway; refusing it here keeps a future route or a parsing
    difference between nginx and us from ever reaching the registry unjudged.
    """
    uri = request.headers.get("X-Original-URI", "")
    method = request.headers.get("X-Original-Method", "GET")
    authorization = request.headers.get("Authorization")
    try:
        try:
            match = routes.match(method, uri)
        except routes.MethodNotAllowedError:
            match = None
        if match is not None and (match.scope is routes.Scope.LOGIN or reference.is_valid_name(match.name)):
            await _authorize(request, match=match, authorization=authorization)
            _refuse_mirror_writes(request, match=match)
            # Before nginx reads a body (the body-file variant writes it to the volume first): a push the
            # storage cannot take gets its 507/503 here, and nginx answers it without a byte stored.
            _refuse_push_without_storage(request, match=match, method=method)
            uploads.expect_body(request, method=method, handler=match.handler, upload_id=match.params.arg)
        else:
            await _refuse_unmapped(request, authorization=authorization)
    except OciError as err:
        if err.code is Code.UNAUTHORIZED:
            return web.Response(status=401, headers={"WWW-Authenticate": challenge(request)})
        if err.code is Code.TOO_MANY_REQUESTS:
            return web.Response(status=429, headers=err.headers)
        if err.status in (503, 507):  # storage refuses pushes (nginx_configmap maps these statuses)
            return web.Response(status=err.status, headers=err.headers)
        return web.Response(status=403)
    return web.Response(status=200)


async def _refuse_unmapped(request: web.Request, *, authorization: str | None) -> None:
    """Raise UNAUTHORIZED for a caller without valid credentials, DENIED for everyone else."""
    if request.app[state.SETTINGS].authenticator is not None:
        identity = await _authenticate(request, authorization=authorization)
        if identity.user is None:
            raise OciError(Code.UNAUTHORIZED)
    raise OciError(Code.DENIED, "not a request of the registry API")
