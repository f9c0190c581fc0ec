"""The application's shared state and request-scoped keys (typed aiohttp keys).

Owns: the `Settings` a running registry needs. Must not: do I/O.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import pathlib

from aiohttp import web

from dockyard_registry import auth, bodyahead, health, maintenance, mirror, store

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The operator's nginx sidecar reaches the registry over the pod's loopback.
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclasses.dataclass(frozen=True)
class Settings:
    store: store.Store
    # None means --no-auth: every request is allowed (tests only).
    authenticator: auth.Authenticator | None
    delete_enabled: bool = True
    # X-Accel-Redirect prefix for blob GETs behind nginx; None serves blobs from this process.
    accel_redirect: str | None = None
    realm: str = "dockyard"
    # How often the registry purges expired upload sessions itself; None: never (gc still does).
    upload_sweep_seconds: float | None = 3600.0
    # Peers whose X-Real-IP names the client (a reverse proxy such as the sidecar); from anyone else the
    # header is ignored, so a client cannot pick the address its password checks are charged to.
    trusted_proxies: tuple[Network, ...] = LOOPBACK
    # The online gc (`serve --gc-schedule`); None: no scheduled gc.
    gc: maintenance.GcRunner | None = None
    # The storage check behind /readyz and refusing pushes; None: no check (/readyz answers ok).
    storage: health.StorageMonitor | None = None
    # Pull-through mirrors (`serve --mirrors FILE`); None: no repository is a mirror.
    mirror: mirror.PullThrough | None = None
    # The Docker token flow: 401s challenge `Bearer realm="<token_realm>"` (the URL of our /token as clients
    # reach it); None: Basic challenges (the flow's /token still works when the authenticator issues tokens).
    token_realm: str | None = None
    # Behind the operator's nginx (`serve --body-file-dir`): the directory on the data volume nginx writes
    # blob upload bodies to; only then is handlers.common.BODY_FILE_HEADER trusted. None: never.
    body_file_dir: pathlib.Path | None = None
    # With body_file_dir: hashes body files while nginx writes them (bodyahead.py; started and stopped by
    # lifecycle). None: each body is hashed once complete.
    body_ahead: bodyahead.Follower | None = None


SETTINGS = web.AppKey("settings", Settings)
IDENTITY = web.RequestKey("identity", auth.Identity)
SCOPE = web.RequestKey("scope", str)
"""The token-flow scope a refused request needed (`repository:<name>:pull`), for the Bearer challenge."""
HANDLER = web.RequestKey("handler", object)
"""The handler `_dispatch` routed the request to (metrics.py names the route class from it, without
matching the path a second time)."""
