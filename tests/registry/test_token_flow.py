"""The Docker token (Bearer) flow: `/token` issues short registry tokens; `Bearer` requests use them.

Covers: scope parsing (several scopes, `*`, other resource types ignored, malformed refused); with
`token_realm` a 401 challenges `Bearer realm=...,service=...,scope="repository:<name>:<actions>"`; a client
following the challenge (Basic credentials or a ServiceAccount-style JWT at /token) gets a token granting only
what its rules allow and cannot exchange it for a fresh or wider one (it gets the same token back, as a
short-lived pull secret's token does when containerd follows the challenge with it), pushes and pulls with it,
and is refused (403) outside its grants; an anonymous caller gets a token with no grants (anonymous pull off);
a forged, expired or foreign-service token is 401 naming why; without the flow configured `/token` is 404 and
challenges stay Basic; a minted token whose grants are repository globs (what a short-lived pull secret
carries) works as a Basic password.
"""

from __future__ import annotations

import base64
from pathlib import Path

import jwt
import pytest

from dockyard_common import htpasswd as htpasswd_file
from dockyard_registry import auth, tokens
from tests.registry import conftest
from tests.registry.conftest import make_image

REALM = "http://registry.test/token"


def test_scopes_parse_several_per_value_and_ignore_other_types() -> None:
    grants = tokens.parse_scopes(["repository:a/b:pull,push registry:catalog:*", "repository:c:*"])
    assert grants == [
        tokens.Grant("a/b", frozenset({"pull", "push"})),
        tokens.Grant("c", frozenset({"pull", "push", "delete"})),
    ]
    with pytest.raises(tokens.ScopeError):
        tokens.parse_scopes(["repository:pull"])


def test_a_token_verifies_only_with_its_key_service_and_lifetime() -> None:
    clock = conftest.Clock()
    issuer = tokens.RegistryTokens(service="reg", key=b"k" * 32, ttl_seconds=60, wall=clock)
    token = issuer.issue(subject="alice", grants=[tokens.Grant("a", frozenset({"pull"}))])["token"]
    assert issuer.owns(token)
    assert issuer.verify(token) == tokens.Verified("alice", (tokens.Grant("a", frozenset({"pull"})),))
    other_key = tokens.RegistryTokens(service="reg", key=b"x" * 32, wall=clock)
    with pytest.raises(tokens.RegistryTokenError, match="signature"):
        other_key.verify(token)
    other_service = tokens.RegistryTokens(service="other", key=b"k" * 32, wall=clock)
    assert not other_service.owns(token)
    assert issuer.verify(token) == tokens.Verified("alice", (tokens.Grant("a", frozenset({"pull"})),))
    clock.advance(61)
    with pytest.raises(tokens.RegistryTokenError, match="expired"):
        issuer.verify(token)  # remembered as verified, but not beyond its exp
    with pytest.raises(tokens.RegistryTokenError, match="expired"):
        issuer.verify(token)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(tokens.RegistryTokenError):
        issuer.verify(tampered)


@pytest.fixture
async def flow(make_client: conftest.ClientFactory, tmp_path: Path) -> conftest.Registry:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_file.render({"alice": auth.hash_password("alice-pw", rounds=4)}))
    access = tmp_path / "access.yaml"
    access.write_text("users:\n  alice: {access: push, repositories: ['team/**']}\n")
    authn = auth.Authenticator(
        htpasswd=htpasswd, access=access, registry_tokens=tokens.RegistryTokens(service="dockyard")
    )
    return await make_client(authenticator=authn, token_realm=REALM)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_a_client_following_the_bearer_challenge_pushes_and_pulls_within_its_grants(
    flow: conftest.Registry,
) -> None:
    resp = await flow.client.get("/v2/team/app/tags/list")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == (
        f'Bearer realm="{REALM}",service="dockyard",scope="repository:team/app:pull"'
    )
    resp = await flow.client.get(
        "/token",
        params=[("service", "dockyard"), ("scope", "repository:team/app:pull,push,delete")],
        headers=basic("alice", "alice-pw"),
    )
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    answer = await resp.json()
    assert answer["token"] == answer["access_token"] and answer["expires_in"] == 300
    claims = jwt.decode(answer["token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]
    bearer = {"Authorization": f"Bearer {answer['token']}"}
    await flow.push_image("team/app", make_image("flow"), headers=bearer)
    assert (await flow.client.get("/v2/team/app/manifests/latest", headers=bearer)).status == 200
    assert (await flow.client.get("/v2/", headers=bearer)).status == 200
    renewed = await flow.client.get("/token", params={"scope": "repository:team/app:pull"}, headers=bearer)
    assert renewed.status == 200, "a client following the challenge with a registry token must get one"
    again = await renewed.json()
    assert again["token"] == answer["token"], "a registry token must not be exchanged for a fresh one"
    assert again["expires_in"] <= answer["expires_in"]
    wider = await flow.client.get(
        "/token", params={"scope": "repository:team/app:delete"}, headers=basic("x", answer["token"])
    )
    assert (await wider.json())["token"] == answer["token"], "asking for more must not widen a token"
    denied = await flow.client.delete("/v2/team/app/manifests/latest", headers=bearer)
    assert denied.status == 403
    other = await flow.client.get("/v2/team/other/tags/list", headers=bearer)
    assert other.status == 403


async def test_an_anonymous_token_grants_nothing_without_anonymous_pull(flow: conftest.Registry) -> None:
    resp = await flow.client.get("/token", params={"scope": "repository:team/app:pull"})
    token = (await resp.json())["token"]
    assert jwt.decode(token, options={"verify_signature": False})["access"] == [
        {"type": "repository", "name": "team/app", "actions": []}
    ]
    refused = await flow.client.get("/v2/team/app/tags/list", headers={"Authorization": f"Bearer {token}"})
    assert refused.status == 401


async def test_wrong_credentials_at_token_are_401_and_a_forged_token_names_why(
    flow: conftest.Registry,
) -> None:
    resp = await flow.client.get(
        "/token", params={"scope": "repository:team/app:pull"}, headers=basic("alice", "x")
    )
    assert resp.status == 401
    forged = jwt.encode(
        {"iss": "dockyard-registry/dockyard", "aud": "dockyard", "exp": 2**40, "access": []},
        b"not-the-key-but-long-enough-for-hs256",
        algorithm="HS256",
    )
    resp = await flow.client.get("/v2/team/app/tags/list", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status == 401
    assert "signature" in (await resp.json())["errors"][0]["message"]


async def test_without_the_flow_token_is_404_and_challenges_stay_basic(
    make_client: conftest.ClientFactory, tmp_path: Path
) -> None:
    reg = await make_client(authenticator=auth.Authenticator(htpasswd=tmp_path / "none", access=None))
    assert (await reg.client.get("/token")).status == 404
    resp = await reg.client.get("/v2/")
    assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")


async def test_a_minted_token_with_repository_globs_is_a_basic_password_for_pulls_only(
    make_client: conftest.ClientFactory, tmp_path: Path
) -> None:
    """What a short-lived pull secret carries: a registry token for `team/**`, pull, sent as a password."""
    issuer = tokens.RegistryTokens(service="dockyard", key=b"k" * 32)
    authn = auth.Authenticator(htpasswd=tmp_path / "none", access=None, registry_tokens=issuer)
    reg = await make_client(authenticator=authn)
    writer = issuer.issue(subject="ci", grants=[tokens.Grant("team/**", frozenset({"pull", "push"}))])[
        "token"
    ]
    await reg.push_image("team/a/b", make_image("glob"), headers=basic("ci", writer))
    pull = issuer.issue(subject="pull", grants=[tokens.Grant("team/**", frozenset({"pull"}))])["token"]
    assert (await reg.client.get("/v2/team/a/b/manifests/latest", headers=basic("pull", pull))).status == 200
    assert (await reg.client.get("/v2/other/x/tags/list", headers=basic("pull", pull))).status == 403
    pushed = await reg.client.post("/v2/team/a/b/blobs/uploads/", headers=basic("pull", pull))
    assert pushed.status == 403


@pytest.mark.parametrize(
    ("realm", "valid"),
    [
        ("https://registry.example/token", True),
        ("/token", True),
        ("token", False),
        ('https://x/"token', False),
        ("/to ken", False),
        ('/token"', False),
        ("ftp://x/token", False),
    ],
)
def test_a_token_realm_is_an_http_url_or_a_plain_path(realm: str, valid: bool) -> None:
    assert tokens.valid_realm(realm) is valid


def test_a_realm_path_is_resolved_on_the_clients_host_and_a_bad_host_gives_none() -> None:
    assert tokens.realm_for("https://fixed/token", host="other:1", scheme="http") == "https://fixed/token"
    assert tokens.realm_for("/token", host="demo.team-a.svc:5443", scheme="https") == (
        "https://demo.team-a.svc:5443/token"
    )
    assert tokens.realm_for("/token", host="[::1]:5443", scheme="https") == "https://[::1]:5443/token"
    for bad in (None, "", 'evil",x="', "a b", "host/path", "-lead"):
        assert tokens.realm_for("/token", host=bad, scheme="https") is None
    assert tokens.realm_for("/token", host="ok", scheme="javascript") is None


async def _challenge(reg: conftest.Registry, headers: dict[str, str]) -> str:
    resp = await reg.client.get("/v2/team/app/tags/list", headers=headers)
    assert resp.status == 401
    return resp.headers["WWW-Authenticate"]


async def test_a_realm_path_challenges_with_the_host_the_client_used_and_a_trusted_proxys_scheme(
    make_client: conftest.ClientFactory, tmp_path: Path
) -> None:
    authn = auth.Authenticator(
        htpasswd=tmp_path / "none", access=None, registry_tokens=tokens.RegistryTokens(service="dockyard")
    )
    reg = await make_client(authenticator=authn, token_realm="/token")
    name = await _challenge(reg, {"Host": "demo.team-a.svc:5443"})
    assert (
        name
        == 'Bearer realm="http://demo.team-a.svc:5443/token",service="dockyard",scope="repository:team/app:pull"'
    )
    # The test client connects from loopback, a trusted proxy by default: its X-Forwarded-Proto counts.
    proxied = await _challenge(reg, {"Host": "registry.example", "X-Forwarded-Proto": "https"})
    assert proxied.startswith('Bearer realm="https://registry.example/token",')
    # A Host that could shape the header gets the Basic challenge (Basic credentials still work).
    assert (await _challenge(reg, {"Host": 'x",realm="https://evil'})) == 'Basic realm="dockyard"'

    untrusting = await make_client(authenticator=authn, token_realm="/token", trusted_proxies=())
    direct = await _challenge(untrusting, {"Host": "registry.example", "X-Forwarded-Proto": "https"})
    assert direct.startswith('Bearer realm="http://registry.example/token",'), (
        "an untrusted peer set the scheme"
    )
