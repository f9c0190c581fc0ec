"""Token identities: JWTs verified offline against an issuer's discovery + JWKS, mapped to access rules.

Covers: an in-test OIDC issuer (own RSA/EC keys, discovery and JWKS over real HTTP) whose tokens verify and
map to `system:serviceaccount:<ns>:<name>` (Kubernetes kind) or a claim-mapped user and groups (OIDC kind);
each refusal names its check: expired, not yet valid, wrong audience, unknown issuer, tampered payload (bad
signature), `alg: none` and HMAC with the public key, unknown `kid`; an unknown `kid` refreshes the JWKS
(key rotation) at most once per interval; a key the issuer dropped stops verifying, remembered tokens
included, at the next scheduled refresh (keyRefreshSeconds) and not before; keys and verified tokens are
cached (no fetch per request); keys
can be read ahead of any token, and each issuer's status says whether it was reachable, how many keys it has
and the last error; the identities file and the access file's `serviceAccounts`/`oidc` rules parse, with
clear errors, and render back; over HTTP: a token as Basic password or Bearer pushes and pulls within its
rules, a token without a rule is 403 DENIED, a bad token is 401 UNAUTHORIZED with a Basic challenge and the
failing check in the body, and the token never reaches a log.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import test_utils, web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dockyard_registry import auth, identity, issuers
from tests.registry import conftest
from tests.registry.conftest import make_image

AUDIENCE = "registry.test"
K8S = "https://kubernetes.default.svc.cluster.local"


class Issuer:
    """A small OIDC issuer: its own signing keys, discovery and JWKS served by aiohttp on loopback."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.published: list[str] = []
        self.jwks_requests = 0
        self.url = ""
        self.server: test_utils.TestServer | None = None

    def add_key(self, kid: str, *, kind: str = "rsa", publish: bool = True) -> None:
        key: Any = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.keys[kid] = key
        if publish:
            self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid in self.published:
            key = self.keys[kid]
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
                jwk["alg"] = "RS256"
            else:
                jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
                jwk["alg"] = "ES256"
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, *, kid: str = "k1", iss: str | None = None, **claims: Any) -> str:
        now = time.time()
        body = {"iss": iss or self.url, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600}
        body.update(claims)
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})

    async def start(self) -> None:
        async def discovery(_r: web.Request) -> web.Response:
            return web.json_response({"issuer": self.url, "jwks_uri": f"{self.url}/keys"})

        async def keys(_r: web.Request) -> web.Response:
            self.jwks_requests += 1
            return web.json_response(self.jwks())

        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_get("/keys", keys)
        self.server = test_utils.TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self.url = str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    it = Issuer()
    it.add_key("k1")
    await it.start()
    yield it
    assert it.server is not None
    await it.server.close()


def sa_token(it: Issuer, ns: str = "ci", name: str = "builder", **claims: Any) -> str:
    return it.token(sub=f"system:serviceaccount:{ns}:{name}", **claims)


def verifier(
    it: Issuer, *, kind: identity.Kind = "oidc", clock: conftest.Clock | None = None, **kw: Any
) -> Any:
    config = identity.Issuer(
        name="test",
        kind=kind,
        url=it.url,
        audience=AUDIENCE,
        claims=identity.Claims(user="email", groups="groups") if kind == "oidc" else identity.Claims(),
    )
    return identity.TokenVerifier([config], issuers.HttpFetcher(), clock=clock or time.monotonic, **kw)


async def test_kubernetes_token_maps_to_its_service_account_and_namespace_group(issuer: Issuer) -> None:
    principal = await verifier(issuer, kind="kubernetes").verify(sa_token(issuer, "team-a", "kaniko"))
    assert principal.subject == "system:serviceaccount:team-a:kaniko"
    assert (principal.namespace, principal.service_account) == ("team-a", "kaniko")
    assert "system:serviceaccounts:team-a" in principal.groups


async def test_oidc_token_maps_user_and_groups_claims(issuer: Issuer) -> None:
    token = issuer.token(sub="123", email="ann@example.com", groups=["dev", "ops"])
    principal = await verifier(issuer).verify(token)
    assert (principal.kind, principal.subject, principal.groups) == (
        "oidc",
        "ann@example.com",
        ("dev", "ops"),
    )


async def test_kubernetes_issuer_refuses_a_subject_that_is_not_a_service_account(issuer: Issuer) -> None:
    with pytest.raises(identity.TokenError) as err:
        await verifier(issuer, kind="kubernetes").verify(issuer.token(sub="alice"))
    assert err.value.check == "not a service account"


@pytest.mark.parametrize(
    ("claims", "check"),
    [
        ({"exp": time.time() - 3600}, "expired"),
        ({"nbf": time.time() + 3600}, "not yet valid"),
        ({"aud": "another-registry"}, "wrong audience"),
        ({"iss": "https://elsewhere.example"}, "unknown issuer"),
    ],
)
async def test_each_failing_claim_check_is_named(issuer: Issuer, claims: dict[str, Any], check: str) -> None:
    with pytest.raises(identity.TokenError) as err:
        await verifier(issuer, kind="kubernetes").verify(sa_token(issuer, **claims))
    assert err.value.check == check


async def test_a_tampered_payload_fails_the_signature_check(issuer: Issuer) -> None:
    header, _payload, signature = sa_token(issuer).split(".")
    forged = base64.urlsafe_b64encode(
        json.dumps(
            {"iss": issuer.url, "aud": AUDIENCE, "exp": time.time() + 600, "sub": "system:serviceaccount:x:y"}
        ).encode()
    )
    with pytest.raises(identity.TokenError) as err:
        await verifier(issuer, kind="kubernetes").verify(
            f"{header}.{forged.decode().rstrip('=')}.{signature}"
        )
    assert err.value.check == "bad signature"


async def test_alg_none_and_hmac_with_the_public_key_are_refused(issuer: Issuer) -> None:
    claims = {
        "iss": issuer.url,
        "aud": AUDIENCE,
        "exp": time.time() + 600,
        "sub": "system:serviceaccount:a:b",
    }
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
    # The classic confusion attack: HS256 "signed" with the issuer's public key as the shared secret.
    public_pem = (
        issuer.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = b".".join(
        _b64(json.dumps(part).encode()) for part in ({"alg": "HS256", "kid": "k1"}, claims)
    )
    mac = _b64(hmac.new(public_pem, signing_input, "sha256").digest())
    hmac_signed = (signing_input + b"." + mac).decode()
    check = verifier(issuer, kind="kubernetes")
    for token in (unsigned, hmac_signed):
        with pytest.raises(identity.TokenError) as err:
            await check.verify(token)
        assert err.value.check == "algorithm"


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


async def test_unknown_kid_refreshes_the_keys_once_per_interval(issuer: Issuer) -> None:
    clock = conftest.Clock()
    check = verifier(issuer, kind="kubernetes", clock=clock, min_refresh_seconds=30)
    await check.verify(sa_token(issuer))
    assert issuer.jwks_requests == 1
    issuer.add_key("k2", publish=False)  # the issuer signs with a key it has not published yet
    with pytest.raises(identity.TokenError) as err:
        await check.verify(sa_token(issuer, kid="k2"))
    assert err.value.check == "unknown key"
    assert issuer.jwks_requests == 1, "a refresh within the interval is not attempted"
    issuer.published.append("k2")  # rotation: now published
    for _ in range(5):
        with pytest.raises(identity.TokenError):
            await check.verify(sa_token(issuer, kid="k2"))
    assert issuer.jwks_requests == 1
    clock.advance(31)
    principal = await check.verify(sa_token(issuer, kid="k2"))
    assert principal.service_account == "builder"
    assert issuer.jwks_requests == 2


async def test_a_rotated_key_verifies_after_one_refresh_and_ec_keys_work(issuer: Issuer) -> None:
    check = verifier(issuer, kind="kubernetes", min_refresh_seconds=0)
    await check.verify(sa_token(issuer))
    issuer.add_key("ec1", kind="ec")
    await check.verify(sa_token(issuer, kid="ec1"))
    assert issuer.jwks_requests == 2


async def test_a_dropped_key_stops_verifying_remembered_tokens_at_the_next_scheduled_refresh(
    issuer: Issuer,
) -> None:
    clock = conftest.Clock()
    config = identity.Issuer(
        name="test", kind="kubernetes", url=issuer.url, audience=AUDIENCE, key_refresh_seconds=60
    )
    check = identity.TokenVerifier([config], issuers.HttpFetcher(), clock=clock)
    keys = check.keysets["test"]
    old = sa_token(issuer)
    await check.verify(old)
    assert keys.seconds_until_due() == 60
    issuer.add_key("k2")
    issuer.published.remove("k1")  # the issuer's last rotation step: the old key is no longer published
    clock.advance(30)
    await keys.warm()  # not due yet: nothing is read, the old key still verifies (the stated bound)
    assert issuer.jwks_requests == 1
    assert (await check.verify(old)).service_account == "builder"
    clock.advance(30)
    assert keys.seconds_until_due() == 0
    await keys.warm()
    assert issuer.jwks_requests == 2
    with pytest.raises(identity.TokenError) as err:
        await check.verify(old)  # remembered as verified, but its key is gone
    assert err.value.check == "unknown key"
    assert (await check.verify(sa_token(issuer, kid="k2"))).service_account == "builder"


async def test_a_short_key_refresh_also_shortens_the_unknown_kid_interval(issuer: Issuer) -> None:
    config = identity.Issuer(name="t", kind="oidc", url=issuer.url, audience=AUDIENCE, key_refresh_seconds=5)
    keys = identity.TokenVerifier([config], issuers.HttpFetcher(), min_refresh_seconds=30).keysets["t"]
    assert (keys.max_age_seconds, keys.min_refresh_seconds) == (5, 5)


async def test_verified_tokens_and_keys_are_cached_no_fetch_per_request(issuer: Issuer) -> None:
    check = verifier(issuer, kind="kubernetes")
    tokens = [sa_token(issuer, name=f"sa{i}") for i in range(5)]
    for _ in range(3):
        for token in tokens:
            await check.verify(token)
    assert issuer.jwks_requests == 1


async def test_an_unreachable_issuer_is_named() -> None:
    config = identity.Issuer(name="gone", kind="oidc", url="http://127.0.0.1:9", audience=AUDIENCE)
    check = identity.TokenVerifier([config], issuers.HttpFetcher())
    it = Issuer()
    it.add_key("k1")
    it.url = "http://127.0.0.1:9"
    with pytest.raises(identity.TokenError) as err:
        await check.verify(it.token(sub="x"))
    assert err.value.check == "issuer unreachable"
    assert check.keysets["gone"].reachable is False
    status = check.keysets["gone"].status()
    assert (status["reachable"], status["keys"]) == (False, 0)
    assert "127.0.0.1:9" in status["error"]


async def test_warming_reads_the_keys_before_any_token_and_status_reports_them(issuer: Issuer) -> None:
    check = verifier(issuer, kind="kubernetes")
    assert check.keysets["test"].status()["reachable"] is None
    await check.keysets["test"].warm()
    status = check.keysets["test"].status()
    assert (status["reachable"], status["keys"], status["issuer"], status["error"]) == (
        True,
        1,
        issuer.url,
        None,
    )
    await check.verify(sa_token(issuer))
    assert issuer.jwks_requests == 1


def test_identities_file_parses_both_kinds() -> None:
    issuers_ = identity.parse_identities(
        """
issuers:
- name: kubernetes
  kind: kubernetes
  url: https://kubernetes.default.svc.cluster.local
  audience: dockyard
  apiServer: https://kubernetes.default.svc
  caFile: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
  tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
  tokenReview: {enabled: true, cacheSeconds: 30}
- name: dex
  url: https://dex.example
  audience: dockyard
  claims: {user: email, groups: groups}
  keyRefreshSeconds: 120
"""
    )
    k8s, dex = issuers_
    assert (k8s.key_refresh_seconds, dex.key_refresh_seconds) == (600.0, 120.0)
    assert k8s.discovery_url == "https://kubernetes.default.svc/.well-known/openid-configuration"
    assert k8s.jwks_url(f"{K8S}/openid/v1/jwks") == "https://kubernetes.default.svc/openid/v1/jwks"
    assert (k8s.token_review, k8s.review_cache_seconds) == (True, 30.0)
    assert (dex.kind, dex.claims) == ("oidc", identity.Claims(user="email", groups="groups"))
    assert dex.jwks_url("https://dex.example/keys") == "https://dex.example/keys"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("issuers: [{name: a, url: https://x}]", "audience"),
        ("issuers: [{name: a, url: ftp://x, audience: r}]", "http(s) URL"),
        ("issuers: [{name: a, url: https://x, audience: r, kind: saml}]", "kind"),
        ("issuers: [{name: a, url: https://x, audience: r, apiServer: https://k}]", "kubernetes only"),
        ("issuers: [{name: a, url: https://x, audience: r, tokenReview: {enabled: true}}]", "tokenReview"),
        (
            "issuers: [{name: a, url: https://x, audience: r}, {name: a, url: https://y, audience: r}]",
            "same name",
        ),
        ("nope: 1", "issuers"),
        ("issuers: [{name: a, url: https://x, audience: r, keyRefreshSeconds: 0}]", "keyRefreshSeconds"),
        ("issuers: [{name: a, url: https://x, audience: r, keyRefreshSeconds: soon}]", "keyRefreshSeconds"),
    ],
)
def test_identities_file_errors_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(identity.IdentitiesFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        identity.parse_identities(text)


ACCESS = """
users: {}
serviceAccounts:
- {namespace: ci, name: builder, access: push, repositories: ["ci/**"]}
- {namespace: "team-*", access: pull}
oidc:
- {issuer: test, users: ["ann@example.com"], access: admin, repositories: ["ann/**"]}
- {issuer: test, groups: [dev], access: pull, repositories: ["shared/*"]}
"""


def test_access_file_service_account_and_oidc_rules_parse_and_render_back() -> None:
    rules = auth.parse_access(ACCESS)
    assert rules.service_accounts[0] == auth.ServiceAccountRule(
        namespace="ci", name="builder", rule=auth.UserRule(level=auth.Level.PUSH, repositories=("ci/**",))
    )
    assert rules.service_accounts[1].name == "*"
    assert rules.service_accounts[1].rule.level is auth.Level.PULL
    assert rules.oidc[1].groups == ("dev",)
    assert auth.parse_access(auth.render_access(rules)) == rules


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("serviceAccounts: [{name: x}]", "namespace"),
        ("serviceAccounts: [{namespace: a, access: root}]", "access must be"),
        ("oidc: [{users: [a]}]", "issuer"),
        ("oidc: [{issuer: a}]", "at least one user or group"),
        ("serviceAccounts: {a: b}", "must be a list"),
    ],
)
def test_access_file_token_rule_errors(text: str, message: str) -> None:
    with pytest.raises(auth.AccessFileError, match=message):
        auth.parse_access(text)


def principal(kind: identity.Kind, **kw: Any) -> auth.Identity:
    p = identity.Principal(issuer="test", kind=kind, **kw)
    return auth.Identity(user=p.subject, principal=p)


def test_rules_grant_service_accounts_by_name_or_namespace_pattern(tmp_path: Path) -> None:
    access = tmp_path / "access.yaml"
    access.write_text(ACCESS)
    authn = auth.Authenticator(htpasswd=None, access=access)

    def sa(ns: str, name: str) -> auth.Identity:
        return principal(
            "kubernetes", subject=f"system:serviceaccount:{ns}:{name}", namespace=ns, service_account=name
        )

    assert authn.permits(sa("ci", "builder"), "ci/app", auth.Action.PUSH)
    assert not authn.permits(sa("ci", "builder"), "other/app", auth.Action.PULL)
    assert not authn.permits(sa("ci", "default"), "ci/app", auth.Action.PULL)
    assert authn.permits(sa("team-b", "anyone"), "x/y", auth.Action.PULL)
    assert not authn.permits(sa("team-b", "anyone"), "x/y", auth.Action.PUSH)
    ann = principal("oidc", subject="ann@example.com")
    assert authn.permits(ann, "ann/x", auth.Action.DELETE)
    dev = principal("oidc", subject="bob@example.com", groups=("dev",))
    assert authn.permits(dev, "shared/base", auth.Action.PULL)
    assert not authn.permits(dev, "ann/x", auth.Action.PULL)
    # A token of another issuer gets nothing from this issuer's rules.
    other_issuer = auth.Identity(
        user="x", principal=identity.Principal(issuer="other", kind="oidc", subject="ann@example.com")
    )
    assert not authn.permits(other_issuer, "ann/x", auth.Action.PULL)


@pytest.fixture
async def secured(make_client: conftest.ClientFactory, issuer: Issuer, tmp_path: Path) -> conftest.Registry:
    access = tmp_path / "access.yaml"
    access.write_text(ACCESS)
    authn = auth.Authenticator(htpasswd=None, access=access, tokens=verifier(issuer, kind="kubernetes"))
    return await make_client(authenticator=authn)


def basic(password: str, user: str = "token") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_a_token_as_basic_password_pushes_and_pulls_within_its_rules(
    secured: conftest.Registry, issuer: Issuer
) -> None:
    headers = basic(sa_token(issuer, "ci", "builder"))
    image = make_image("ident")
    await secured.push_image("ci/app", image, headers=headers)
    resp = await secured.client.get("/v2/ci/app/manifests/latest", headers=headers)
    assert resp.status == 200
    bearer = {"Authorization": f"Bearer {sa_token(issuer, 'ci', 'builder')}"}
    resp = await secured.client.get("/v2/ci/app/manifests/latest", headers=bearer)
    assert resp.status == 200
    resp = await secured.client.get("/v2/", headers=headers)
    assert resp.status == 200


async def test_a_token_without_a_rule_is_denied(secured: conftest.Registry, issuer: Issuer) -> None:
    resp = await secured.client.get("/v2/ci/app/tags/list", headers=basic(sa_token(issuer, "ci", "default")))
    assert resp.status == 403
    assert (await resp.json())["errors"][0]["code"] == "DENIED"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [({"aud": "elsewhere"}, "audience"), ({"exp": time.time() - 3600}, "expired")],
)
async def test_a_refused_token_is_401_with_a_basic_challenge_and_the_check_but_never_logged(
    secured: conftest.Registry,
    issuer: Issuer,
    caplog: pytest.LogCaptureFixture,
    claims: dict[str, Any],
    reason: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = sa_token(issuer, "ci", "builder", **claims)
    resp = await secured.client.get("/v2/ci/app/tags/list", headers=basic(token))
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
    error = (await resp.json())["errors"][0]
    assert error["code"] == "UNAUTHORIZED"
    assert reason in error["message"]
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text
    assert reason in caplog.text
