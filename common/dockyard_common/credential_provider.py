"""`dockyard-credential-provider`: a kubelet image credential provider that pulls with the Pod's own identity.

With KEP-4412 (kubelet credential providers given ServiceAccount tokens; `tokenAttributes` in the
kubelet's CredentialProviderConfig), the kubelet requests a token of the Pod's ServiceAccount for the
registry's audience and passes it in the `CredentialProviderRequest`. This plugin answers with that token as
the Basic password for the image's registry host, so a Pod pulls with its own identity and no pull Secret
exists anywhere; the registry checks it like any ServiceAccount token (docs/security.md).

Owns: reading one request from stdin, writing one response to stdout, and a cache duration that never
outlives the token (`exp` read without verification: the registry verifies; this only avoids handing the
kubelet a credential it would keep past its expiry). Must not: log or print the token anywhere but the
response, or talk to the network. Exit 1 with a message on stderr for a request it cannot answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any

API_VERSION = "credentialprovider.kubelet.k8s.io/v1"
MARGIN_SECONDS = 60


class RequestError(ValueError):
    pass


def registry_host(image: str) -> str:
    """The registry part of an image reference (`host[:port]`); Docker Hub's for a bare name."""
    first, sep, _rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def token_expiry(token: str) -> float | None:
    """The token's `exp`, read without verifying it; None when it has none or is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def respond(request: Any, *, now: float) -> dict[str, Any]:
    """The CredentialProviderResponse for one request; RequestError for one without a usable token."""
    if not isinstance(request, dict) or request.get("kind") != "CredentialProviderRequest":
        raise RequestError("not a CredentialProviderRequest")
    image, token = request.get("image"), request.get("serviceAccountToken")
    if not isinstance(image, str) or not image:
        raise RequestError("the request names no image")
    if not isinstance(token, str) or not token:
        raise RequestError(
            "no serviceAccountToken in the request: configure tokenAttributes.serviceAccountTokenAudience "
            "for this provider in the kubelet's CredentialProviderConfig"
        )
    exp = token_expiry(token)
    cache = 0 if exp is None else max(0, int(exp - now - MARGIN_SECONDS))
    return {
        "apiVersion": request.get("apiVersion") or API_VERSION,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "cacheDuration": f"{cache}s",
        "auth": {registry_host(image): {"username": "serviceaccount", "password": token}},
    }


def main(
    stdin: IO[str] = sys.stdin,
    stdout: IO[str] = sys.stdout,
    stderr: IO[str] = sys.stderr,
    clock: Callable[[], float] = time.time,
) -> int:
    try:
        request = json.load(stdin)
        answer = respond(request, now=clock())
    except (ValueError, RequestError) as exc:
        print(f"dockyard-credential-provider: {exc}", file=stderr)
        return 1
    json.dump(answer, stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
