"""spec.auth.serviceAccounts and spec.auth.oidc: the model, and what the builders render for the registry.

Covers: the model's defaults and refusals (an OIDC rule naming nobody, duplicate or reserved issuer names,
an http issuer, bad namespace patterns); access.yaml carries the ServiceAccount and OIDC rules, and the
identities file the issuers (Kubernetes read in-cluster through the API Service with the Pod's projected
token and the cluster CA, default audience `dockyard.dev/<ns>/<registry>`; OIDC with its claims), both
accepted by the registry's own parsers (the operator/registry contract); the Secret, the registry's
`--identities` argument and the projected token volume appear only when tokens are configured, so a spec
without them renders exactly as before (same config hash: no roll on upgrade); no token in any of it.
Short-lived pull secrets: a token is the same within a half-lifetime window (no churn) and new after it;
the operator's minted token verifies in the registry as pull on the user's globs; `token.key` and
`--token-key` appear only with a key; with ServiceAccount or OIDC identities the registry offers the token
flow behind nginx (`--token-realm /token`, nginx's `/token` route, a token key made and kept so replicas
accept each other's tokens), and without them none of it; tokenLifetime is bounded (10m to 744h). Issuer
status from the pods' /status: per issuer the report of a pod that reached it, the unreachable ones named
(Degraded IssuerUnreachable), none from a registry that reports none.
"""

from __future__ import annotations

import time
from typing import Any

import pydantic
import pytest
import yaml

from dockyard_common import regtoken
from dockyard_operator import model, observations
from dockyard_operator.builders import deployment, htpasswd_secret, nginx_configmap
from dockyard_operator.reconcile import credentials
from dockyard_registry import auth, identity, tokens
from tests.operator.test_builders import container, decoded, make_inputs, mounts, volumes

SPEC: dict[str, Any] = {
    "auth": {
        "serviceAccounts": {
            "tokenReview": True,
            "rules": [
                {"namespace": "ci", "name": "kaniko", "access": "push", "repositories": ["ci/**"]},
                {"namespace": "team-*", "access": "pull"},
            ],
        },
        "oidc": [
            {
                "name": "github",
                "issuer": "https://token.actions.githubusercontent.com",
                "audience": "dockyard",
                "claims": {"user": "sub", "groups": "repository_owner"},
                "rules": [{"groups": ["acme"], "access": "push", "repositories": ["acme/**"]}],
            }
        ],
    }
}


def test_service_account_and_oidc_rules_reach_access_yaml_and_parse_in_the_registry() -> None:
    spec = model.parse_spec(SPEC)
    rules = auth.parse_access(htpasswd_secret.access_yaml(spec.auth))
    assert rules.service_accounts == (
        auth.ServiceAccountRule("ci", "kaniko", auth.UserRule(auth.Level.PUSH, ("ci/**",))),
        auth.ServiceAccountRule("team-*", "*", auth.UserRule(auth.Level.PULL, ("**",))),
    )
    assert rules.oidc == (
        auth.OidcRule("github", (), ("acme",), auth.UserRule(auth.Level.PUSH, ("acme/**",))),
    )


def test_identities_file_names_the_in_cluster_kubernetes_issuer_and_the_oidc_issuers() -> None:
    text = htpasswd_secret.identities(make_inputs(SPEC))
    k8s, github = identity.parse_identities(text)
    assert (k8s.kind, k8s.url, k8s.api_server) == ("kubernetes", "", "https://kubernetes.default.svc")
    assert k8s.audience == "dockyard.dev/ns/demo"
    assert (k8s.token_review, k8s.review_cache_seconds) == (True, 60.0)
    assert str(k8s.token_file).startswith(htpasswd_secret.KUBE_DIR)
    assert (github.url, github.audience) == ("https://token.actions.githubusercontent.com", "dockyard")
    assert github.claims == identity.Claims(user="sub", groups="repository_owner")


def test_the_registry_pod_gets_the_identities_file_and_its_own_projected_token() -> None:
    i = make_inputs(SPEC)
    assert htpasswd_secret.IDENTITIES_FILE in decoded(htpasswd_secret.build(i))
    dep = deployment.build(i)
    args = container(dep, "registry")["args"]
    assert args[args.index("--identities") + 1] == f"{deployment.AUTH_DIR}/identities.yaml"
    assert mounts(container(dep, "registry"))["kube-identity"]["mountPath"] == htpasswd_secret.KUBE_DIR
    assert "kube-identity" not in mounts(container(dep, "nginx"))
    projected = volumes(dep)["kube-identity"]["projected"]["sources"]
    assert projected[0]["serviceAccountToken"]["expirationSeconds"] == 3600
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_oidc_alone_needs_no_kubernetes_token_in_the_pod() -> None:
    spec = {"auth": {"oidc": SPEC["auth"]["oidc"]}}
    dep = deployment.build(make_inputs(spec))
    assert "--identities" in container(dep, "registry")["args"]
    assert "kube-identity" not in volumes(dep)


def test_a_spec_without_tokens_renders_as_before() -> None:
    i = make_inputs({})
    assert htpasswd_secret.identities(i) == ""
    assert set(decoded(htpasswd_secret.build(i))) == {"htpasswd", "access.yaml"}
    dep = deployment.build(i)
    assert "--identities" not in container(dep, "registry")["args"]
    assert "--token-realm" not in container(dep, "registry")["args"]
    assert "location = /token" not in nginx_configmap.render_for(i)
    assert "kube-identity" not in volumes(dep)
    assert "serviceAccounts" not in yaml.safe_load(i.access_yaml)


@pytest.mark.parametrize("spec", [SPEC, {"auth": {"oidc": SPEC["auth"]["oidc"]}}])
def test_identities_turn_on_the_token_flow_with_a_realm_path_nginx_routes(spec: dict[str, Any]) -> None:
    i = make_inputs(spec, token_key="cd" * 32)
    args = container(deployment.build(i), "registry")["args"]
    assert args[args.index("--token-realm") + 1] == "/token"
    assert args[args.index("--token-key") + 1] == f"{deployment.AUTH_DIR}/token.key"
    conf = nginx_configmap.render_for(i)
    assert "location = /token {" in conf
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    # The registry's own parser takes the realm the operator passes.
    assert tokens.valid_realm(nginx_configmap.TOKEN_PATH)


def test_the_token_key_is_made_for_the_token_flow_and_kept_once_made() -> None:
    assert credentials.token_key(model.parse_spec({}), None) == ""
    flow = model.parse_spec({"auth": {"oidc": SPEC["auth"]["oidc"]}})
    made = credentials.token_key(flow, None)
    assert len(made) == 64
    assert credentials.token_key(flow, {htpasswd_secret.TOKEN_KEY_FILE: made.encode()}) == made
    assert credentials.token_key(flow, None) != made, "a key is random, never derived"


def test_a_custom_audience_is_used() -> None:
    spec = {"auth": {"serviceAccounts": {"audience": "registry.example", "rules": []}}}
    (k8s,) = identity.parse_identities(htpasswd_secret.identities(make_inputs(spec)))
    assert k8s.audience == "registry.example"


@pytest.mark.parametrize(
    "auth_spec",
    [
        {"oidc": [{"name": "a", "issuer": "https://x", "audience": "r", "rules": [{"access": "pull"}]}]},
        {"oidc": [{"name": "kubernetes", "issuer": "https://x", "audience": "r"}]},
        {"oidc": [{"name": "a", "issuer": "https://x", "audience": "r"}] * 2},
        {"oidc": [{"name": "a", "issuer": "http://x", "audience": "r"}]},
        {"serviceAccounts": {"rules": [{"namespace": "Team A"}]}},
        {"serviceAccounts": {"tokenReviewCacheSeconds": -1}},
    ],
)
def test_the_model_refuses_bad_token_specs(auth_spec: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        model.parse_spec({"auth": auth_spec})


def test_pull_secret_tokens_are_the_same_within_a_half_lifetime_window_and_new_after_it() -> None:
    day = 24 * 3600
    start = regtoken.pull_window(now=1_000_000, lifetime_seconds=day)
    assert start <= 1_000_000 < start + day // 2
    assert regtoken.pull_window(now=start + day // 2 - 1, lifetime_seconds=day) == start
    assert regtoken.pull_window(now=start + day // 2, lifetime_seconds=day) == start + day // 2

    def mint(now: int) -> str:
        return regtoken.mint(
            key=b"k" * 32, service="demo", subject="u", grants=[("a/**", ("pull",))], now=now, ttl_seconds=day
        )

    assert mint(start) == mint(start)  # no churn: passes within a window write the same Secret


def test_a_minted_pull_token_verifies_in_the_registry_as_pull_on_the_users_globs() -> None:
    token = regtoken.mint(
        key=b"k" * 64,
        service="demo",
        subject="puller",
        grants=[("apps/**", ("pull",))],
        now=int(time.time()),
        ttl_seconds=600,
    )
    verified = tokens.RegistryTokens(service="demo", key=b"k" * 64).verify(token)
    assert verified == tokens.Verified("puller", (tokens.Grant("apps/**", frozenset({"pull"})),))
    with pytest.raises(tokens.RegistryTokenError):
        tokens.RegistryTokens(service="other", key=b"k" * 64).verify(token)


def test_a_token_key_puts_token_key_in_the_secret_and_the_registry_args_only_when_set() -> None:
    spec = {"auth": {"users": []}, "pullSecrets": {"user": "u", "tokenLifetime": "24h"}}
    i = make_inputs(spec, token_key="ab" * 32)
    assert decoded(htpasswd_secret.build(i))["token.key"] == b"ab" * 32
    args = container(deployment.build(i), "registry")["args"]
    assert args[args.index("--token-key") + 1] == f"{deployment.AUTH_DIR}/token.key"
    assert deployment.config_hash(i) != deployment.config_hash(make_inputs(spec))
    assert "--token-key" not in container(deployment.build(make_inputs(spec)), "registry")["args"]


@pytest.mark.parametrize("lifetime", ["5m", "800h"])
def test_token_lifetime_is_bounded(lifetime: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        model.parse_spec({"pullSecrets": {"user": "u", "tokenLifetime": lifetime}})


def _doc(*issuers: dict[str, Any]) -> dict[str, Any]:
    return {"storage": {"checked": False}, "gc": {"enabled": False}, "identities": list(issuers)}


def test_issuer_status_from_pods_prefers_a_pod_that_reached_the_issuer_and_names_the_unreachable() -> None:
    down = {"name": "kubernetes", "kind": "kubernetes", "reachable": False, "keys": 0, "error": "HTTP 403"}
    up = {"name": "kubernetes", "kind": "kubernetes", "issuer": "https://k", "reachable": True, "keys": 2}
    dex = {"name": "dex", "kind": "oidc", "issuer": "https://dex", "reachable": False, "error": "timeout"}
    reading = observations.combine([observations.parse(_doc(down, dex)), observations.parse(_doc(up, dex))])
    assert reading.identities is not None
    by_name = {i.name: i for i in reading.identities}
    assert (by_name["kubernetes"].reachable, by_name["kubernetes"].keys) == (True, 2)
    assert [i.name for i in observations.unreachable_issuers(reading)] == ["dex"]
    assert by_name["dex"].error == "timeout"


def test_a_registry_reporting_no_identities_leaves_them_unknown() -> None:
    assert observations.parse({"storage": {"checked": False}}).identities is None
    assert observations.parse(_doc()).identities == ()


def test_a_namespace_selector_rule_becomes_one_rule_per_matching_namespace() -> None:
    spec = {"auth": {"serviceAccounts": {"rules": [{"namespaceSelector": {"team": "a"}, "access": "push"}]}}}
    auth_spec = model.parse_spec(spec).auth
    assert htpasswd_secret.needs_namespaces(auth_spec)
    namespaces = {"a1": {"team": "a"}, "a2": {"team": "a", "x": "y"}, "b": {"team": "b"}, "plain": {}}
    rules = auth.parse_access(htpasswd_secret.access_yaml(auth_spec, namespaces=namespaces))
    assert [(r.namespace, r.name, r.rule.level) for r in rules.service_accounts] == [
        ("a1", "*", auth.Level.PUSH),
        ("a2", "*", auth.Level.PUSH),
    ]
    assert auth.parse_access(htpasswd_secret.access_yaml(auth_spec)).service_accounts == ()
    assert not htpasswd_secret.needs_namespaces(model.parse_spec(SPEC).auth)


@pytest.mark.parametrize("rule", [{"access": "pull"}, {"namespace": "a", "namespaceSelector": {"team": "a"}}])
def test_a_service_account_rule_names_exactly_one_of_namespace_and_selector(rule: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        model.parse_spec({"auth": {"serviceAccounts": {"rules": [rule]}}})
