"""spec.auth.serviceAccounts and spec.auth.oidc: the model, and what the builders render for the registry.

Covers: the model's defaults and refusals (an OIDC rule naming nobody, duplicate or reserved issuer names,
an http issuer, bad namespace patterns); access.yaml carries the ServiceAccount and OIDC rules, and the
identities file the issuers (Kubernetes read in-cluster through the API Service with the Pod's projected
token and the cluster CA, default audience `dockyard.dev/<ns>/<registry>`; OIDC with its claims), both
accepted by the registry's own parsers (the operator/registry contract); the Secret, the registry's
`--identities` argument and the projected token volume appear only when tokens are configured, so a spec
without them renders exactly as before (same config hash: no roll on upgrade); no token in any of it.
"""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
import yaml

from dockyard_operator import model
from dockyard_operator.builders import deployment, htpasswd_secret
from dockyard_registry import auth, identity
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
    assert "kube-identity" not in volumes(dep)
    assert "serviceAccounts" not in yaml.safe_load(i.access_yaml)


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
