"""Reading token issuers over HTTP: OIDC discovery, JWKS and Kubernetes TokenReview.

Owns: the registry's only outbound HTTP (identity.Fetcher over aiohttp's client), TLS trust of an issuer
(`caFile`, else the system's), and the bearer token read from `tokenFile` on every call (a projected
token rotates on disk). Must not: decide whether a token is valid (identity.py does), or log a token.
Called only when keys are missing or stale and on a token's first use with tokenReview, never per request.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from dockyard_registry import identity

TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_BODY = 1 << 20


class HttpFetcher:
    """identity.Fetcher over HTTP(S)."""

    def __init__(self) -> None:
        self._contexts: dict[str, ssl.SSLContext] = {}

    def _ssl(self, issuer: identity.Issuer) -> ssl.SSLContext:
        key = str(issuer.ca_file or "")
        if key not in self._contexts:
            self._contexts[key] = ssl.create_default_context(cafile=key or None)
        return self._contexts[key]

    def _headers(self, issuer: identity.Issuer) -> dict[str, str]:
        # The API server serves its JWKS only as application/jwk-set+json.
        headers = {"Accept": "application/json, application/jwk-set+json"}
        if issuer.token_file is not None:
            try:
                token = issuer.token_file.read_text().strip()
            except OSError as exc:
                raise identity.FetchError(
                    f"cannot read tokenFile {issuer.token_file}: {exc.strerror}"
                ) from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def get_json(self, url: str, *, issuer: identity.Issuer) -> Any:
        return await self._request("GET", url, issuer=issuer, body=None)

    async def review(self, token: str, *, issuer: identity.Issuer) -> bool:
        if issuer.api_server is None:
            raise identity.FetchError("token review needs apiServer")
        url = issuer.api_server.rstrip("/") + "/apis/authentication.k8s.io/v1/tokenreviews"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [issuer.audience]},
        }
        answer = await self._request("POST", url, issuer=issuer, body=body)
        status = answer.get("status") if isinstance(answer, dict) else None
        return isinstance(status, dict) and status.get("authenticated") is True

    async def _request(self, method: str, url: str, *, issuer: identity.Issuer, body: Any) -> Any:
        ssl_context = self._ssl(issuer) if url.startswith("https:") else None
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.request(
                    method, url, json=body, headers=self._headers(issuer), ssl=ssl_context or False
                ) as response,
            ):
                if response.status >= 300:
                    raise identity.FetchError(f"{method} {url}: HTTP {response.status}")
                raw = bytearray()
                async for chunk in response.content.iter_any():
                    raw += chunk
                    if len(raw) > MAX_BODY:
                        raise identity.FetchError(f"{method} {url}: answer larger than {MAX_BODY} bytes")
                return json.loads(raw)
        except (aiohttp.ClientError, TimeoutError, ValueError, ssl.SSLError) as exc:
            raise identity.FetchError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
