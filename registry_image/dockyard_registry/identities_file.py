"""The identities file (`serve --identities`): the token issuers a registry trusts, and how it reads them.

Owns: `Issuer` (name, kind, the `iss` URL or the API server it is learned through, audience, CA and token
files for reading it, claim mapping, TokenReview, `keyRefreshSeconds`) and parsing the YAML with errors that
name the bad entry. Must not: fetch or verify anything (identity.py verifies, issuers.py fetches).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

Kind = Literal["kubernetes", "oidc"]
DEFAULT_KEY_REFRESH_SECONDS = 600.0
"""How often an issuer's keys are re-read by default: the bound on a key it dropped still verifying."""


class IdentitiesFileError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Claims:
    """Which claims name an OIDC user and its groups (`groups` None: no groups)."""

    user: str = "sub"
    groups: str | None = None


@dataclasses.dataclass(frozen=True)
class Issuer:
    """One trusted issuer from the identities file."""

    name: str
    kind: Kind
    url: str
    """The `iss` its tokens carry (and the base of its discovery document unless `api_server` is set);
    empty for a Kubernetes issuer read through `api_server`: learned from its discovery document then."""
    audience: str
    """The `aud` a token must carry to be accepted here: this registry's audience."""
    api_server: str | None = None
    """Kubernetes only: read discovery and JWKS through this API server URL (in-cluster) instead of `url`."""
    ca_file: Path | None = None
    token_file: Path | None = None
    """Bearer token for discovery, JWKS and reviews (re-read on every fetch: projected tokens rotate)."""
    claims: Claims = Claims()
    token_review: bool = False
    review_cache_seconds: float = 60.0
    key_refresh_seconds: float = DEFAULT_KEY_REFRESH_SECONDS
    """How often the keys are re-read: the bound on a dropped key still verifying."""

    @property
    def discovery_url(self) -> str:
        return f"{(self.api_server or self.url).rstrip('/')}/.well-known/openid-configuration"

    def jwks_url(self, published: str) -> str:
        """Where to read the JWKS the discovery document names: through the API server when one is given
        (the issuer's own host, e.g. kubernetes.default.svc.cluster.local, is often not reachable)."""
        if self.api_server is None:
            return published
        path = urlsplit(published).path or "/openid/v1/jwks"
        return self.api_server.rstrip("/") + path


def parse_identities(text: str) -> tuple[Issuer, ...]:
    """Parse the identities YAML; IdentitiesFileError names the bad entry."""
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise IdentitiesFileError(f"identities file is not valid YAML: {exc}") from None
    doc = doc or {}
    if not isinstance(doc, dict) or set(doc) - {"issuers"}:
        raise IdentitiesFileError("identities file must be a mapping with one key, issuers")
    entries = doc.get("issuers") or []
    if not isinstance(entries, list):
        raise IdentitiesFileError("issuers must be a list")
    issuers = tuple(_parse_issuer(i, entry) for i, entry in enumerate(entries))
    for attr in ("name", "url"):
        values = [getattr(i, attr) for i in issuers if getattr(i, attr)]
        if len(set(values)) != len(values):
            raise IdentitiesFileError(f"two issuers have the same {attr}")
    return issuers


_ISSUER_KEYS = {
    "name",
    "kind",
    "url",
    "audience",
    "apiServer",
    "caFile",
    "tokenFile",
    "claims",
    "tokenReview",
    "keyRefreshSeconds",
}


def _parse_issuer(index: int, entry: Any) -> Issuer:
    where = f"issuers[{index}]"
    if not isinstance(entry, dict):
        raise IdentitiesFileError(f"{where} must be a mapping")
    unknown = set(entry) - _ISSUER_KEYS
    if unknown:
        raise IdentitiesFileError(f"{where} has unknown keys: {sorted(unknown)}")
    kind = entry.get("kind", "oidc")
    learned = kind == "kubernetes" and entry.get("apiServer") is not None and entry.get("url") is None
    for key in ("name", "audience") if learned else ("name", "url", "audience"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise IdentitiesFileError(f"{where}.{key} must be a non-empty string")
    if kind not in ("kubernetes", "oidc"):
        raise IdentitiesFileError(f"{where}.kind must be kubernetes or oidc")
    for key in ("url", "apiServer"):
        value = entry.get(key)
        if value is not None and (
            not isinstance(value, str) or urlsplit(value).scheme not in ("https", "http")
        ):
            raise IdentitiesFileError(f"{where}.{key} must be an http(s) URL")
    if entry.get("apiServer") is not None and kind != "kubernetes":
        raise IdentitiesFileError(f"{where}.apiServer is for kind kubernetes only")
    claims_doc = entry.get("claims") or {}
    if not isinstance(claims_doc, dict) or set(claims_doc) - {"user", "groups"}:
        raise IdentitiesFileError(f"{where}.claims may have user and groups only")
    if kind == "kubernetes" and claims_doc:
        raise IdentitiesFileError(f"{where}.claims: a kubernetes issuer maps its own claims")
    review = entry.get("tokenReview") or {}
    if not isinstance(review, dict) or set(review) - {"enabled", "cacheSeconds"}:
        raise IdentitiesFileError(f"{where}.tokenReview may have enabled and cacheSeconds only")
    if review.get("enabled") and (kind != "kubernetes" or not entry.get("apiServer")):
        raise IdentitiesFileError(f"{where}.tokenReview needs kind kubernetes and apiServer")
    cache_seconds = review.get("cacheSeconds", 60)
    if not isinstance(cache_seconds, int | float) or cache_seconds < 0:
        raise IdentitiesFileError(f"{where}.tokenReview.cacheSeconds must be a number >= 0")
    refresh = entry.get("keyRefreshSeconds", DEFAULT_KEY_REFRESH_SECONDS)
    if not isinstance(refresh, int | float) or isinstance(refresh, bool) or not 1 <= refresh <= 86400:
        raise IdentitiesFileError(f"{where}.keyRefreshSeconds must be a number of seconds in [1, 86400]")
    return Issuer(
        name=entry["name"],
        kind=kind,
        url=entry.get("url") or "",
        audience=entry["audience"],
        api_server=entry.get("apiServer"),
        ca_file=Path(entry["caFile"]) if entry.get("caFile") else None,
        token_file=Path(entry["tokenFile"]) if entry.get("tokenFile") else None,
        claims=Claims(user=str(claims_doc.get("user", "sub")), groups=claims_doc.get("groups")),
        token_review=bool(review.get("enabled", False)),
        review_cache_seconds=float(cache_seconds),
        key_refresh_seconds=float(refresh),
    )
