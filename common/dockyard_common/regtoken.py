"""The registry token format, shared by the registry (`/token`, verification) and the operator (pull secrets).

Owns: minting a registry token (an HS256 JWT under the registry's own key: `iss`
`dockyard-registry/<service>`, `aud` the service, `sub`, `iat`/`nbf`/`exp`, and `access`, a list of
`{type: repository, name, actions}` whose names may be globs). Must not: verify tokens (the registry
does), read a clock or randomness (the caller passes `now` and any `jti`), or log a token or key.
"""

from __future__ import annotations

from collections.abc import Sequence

import jwt

ALGORITHM = "HS256"


def issuer(service: str) -> str:
    return f"dockyard-registry/{service}"


def mint(
    *,
    key: bytes,
    service: str,
    subject: str,
    grants: Sequence[tuple[str, Sequence[str]]],
    now: int,
    ttl_seconds: int,
    jti: str = "",
) -> str:
    """A token granting each `(repository or glob, actions)`; deterministic for the same arguments."""
    claims: dict[str, object] = {
        "iss": issuer(service),
        "aud": service,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "access": [
            {"type": "repository", "name": name, "actions": sorted(actions)} for name, actions in grants
        ],
    }
    if jti:
        claims["jti"] = jti
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def pull_window(*, now: float, lifetime_seconds: int) -> int:
    """When a pull-secret token minted at `now` is issued: the start of the current half-lifetime window.

    Every pass within a window mints the same token (no churn), a new one each half lifetime, so a copy
    written at any time still has at least half its lifetime left, and a pass per half lifetime (the
    operator's timer runs far more often) replaces it before it expires.
    """
    half = max(1, lifetime_seconds // 2)
    return int(now) // half * half
