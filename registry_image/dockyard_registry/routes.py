"""The one route table of the `/v2/` API, and how a raw request path is matched against it.

Owns: which (method, path shape) reaches which handler and which permission it needs. Must not: parse
bodies or touch the store.

Repository names contain slashes, so aiohttp's router cannot split `/v2/<name>/manifests/<ref>` for us.
We match the *raw* (still percent-encoded) path instead of the decoded one: a valid name never contains
`%`, so an encoded `..%2F` stays inside the name and fails its grammar rather than being decoded into a
traversal. Only the last segment (reference, digest, upload id) is percent-decoded before validation.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from dockyard_registry.handlers import blobs, common, discovery, manifests, uploads


class Scope(enum.Enum):
    """What a route needs: just a login (`/v2/`, catalog), or an action on the named repository."""

    LOGIN = "login"
    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"


Handler = Callable[[web.Request, common.PathParams], Awaitable[web.StreamResponse]]


@dataclasses.dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    methods: Mapping[str, tuple[Handler, Scope]]


@dataclasses.dataclass(frozen=True)
class Match:
    handler: Handler
    scope: Scope
    params: common.PathParams

    @property
    def name(self) -> str:
        return self.params.name


class MethodNotAllowedError(Exception):
    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = allowed


_NAME = r"(?P<name>[^?#]+?)"
_LAST = r"(?P<arg>[^/?#]+)"

ROUTES: tuple[Route, ...] = (
    Route(re.compile(r"^$"), {"GET": (discovery.base, Scope.LOGIN), "HEAD": (discovery.base, Scope.LOGIN)}),
    Route(re.compile(r"^_catalog$"), {"GET": (discovery.catalog, Scope.LOGIN)}),
    Route(
        re.compile(rf"^{_NAME}/manifests/{_LAST}$"),
        {
            "GET": (manifests.get, Scope.PULL),
            "HEAD": (manifests.get, Scope.PULL),
            "PUT": (manifests.put, Scope.PUSH),
            "DELETE": (manifests.delete, Scope.DELETE),
        },
    ),
    Route(re.compile(rf"^{_NAME}/blobs/uploads/$"), {"POST": (uploads.start, Scope.PUSH)}),
    Route(
        re.compile(rf"^{_NAME}/blobs/uploads/{_LAST}$"),
        {
            "GET": (uploads.status, Scope.PUSH),
            "PATCH": (uploads.patch, Scope.PUSH),
            "PUT": (uploads.finish, Scope.PUSH),
            "DELETE": (uploads.cancel, Scope.PUSH),
        },
    ),
    Route(
        re.compile(rf"^{_NAME}/blobs/{_LAST}$"),
        {
            "GET": (blobs.get, Scope.PULL),
            "HEAD": (blobs.get, Scope.PULL),
            "DELETE": (blobs.delete, Scope.DELETE),
        },
    ),
    Route(re.compile(rf"^{_NAME}/tags/list$"), {"GET": (discovery.tags, Scope.PULL)}),
    Route(re.compile(rf"^{_NAME}/referrers/{_LAST}$"), {"GET": (discovery.referrers, Scope.PULL)}),
)


def match(method: str, raw_path: str) -> Match | None:
    """Match a raw request path (query string allowed) under `/v2/`; None when no route has that shape.

    Raises MethodNotAllowedError when the shape exists but not for this method.
    """
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/v2/"):
        return None if path != "/v2" else match(method, "/v2/")
    rest = path[len("/v2/") :]
    for route in ROUTES:
        m = route.pattern.match(rest)
        if m is None:
            continue
        entry = route.methods.get(method.upper())
        if entry is None:
            raise MethodNotAllowedError(tuple(route.methods))
        groups = m.groupdict()
        arg = urllib.parse.unquote(groups["arg"]) if groups.get("arg") else ""
        return Match(
            handler=entry[0], scope=entry[1], params=common.PathParams(name=groups.get("name") or "", arg=arg)
        )
    return None
