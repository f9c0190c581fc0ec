"""Tenancy checks: what a PrivateRegistry's spec may make the operator do beyond the registry's own children.

Covers:
- ingress annotations: only allowlisted keys (exact or `prefix*`), never a key containing `snippet` (any case)
  whatever the allowlist says, and the refusal names every refused key;
- the default allowlist has no snippet key, no prefix wide enough to reach one, and equals the chart's default
  (`tenancy.ingressAnnotations.allowed` in charts/dockyard/values.yaml);
- pull secret targets: the registry's own namespace always, another one only with the opt-in label naming the
  source namespace; listed namespaces that did not opt in are named in the verdict; the selector chooses only
  among opted-in namespaces and never reveals the others; terminating namespaces get nothing;
- settings: DOCKYARD_INGRESS_ANNOTATIONS_ALLOWED unset gives the default, empty gives none;
  DOCKYARD_WATCH_NAMESPACES gives the namespaces of a scoped install, and a bad name is an error.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import tests.support
from dockyard_operator import settings, tenancy


def ns(name: str, labels: dict[str, str] | None = None, *, terminating: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "labels": labels or {}}}
    if terminating:
        body["status"] = {"phase": "Terminating"}
    return body


def opted(source: str) -> dict[str, str]:
    return {f"pull-secrets-from.dockyard.dev/{source}": "true"}


# ------------------------------------------------------------------------------- ingress annotations


@pytest.mark.parametrize(
    "key",
    [
        "nginx.ingress.kubernetes.io/configuration-snippet",
        "nginx.ingress.kubernetes.io/server-snippet",
        "nginx.ingress.kubernetes.io/auth-snippet",
        "nginx.ingress.kubernetes.io/stream-snippet",
        "example.com/Server-SNIPPET",
        "snippet",
    ],
)
def test_a_snippet_key_is_refused_even_when_the_allowlist_allows_everything(key: str) -> None:
    assert not tenancy.annotation_allowed(key, ["*", key])


def test_allowlist_entries_are_exact_keys_or_prefixes() -> None:
    allowed = ["cert-manager.io/*", "nginx.ingress.kubernetes.io/proxy-body-size"]
    assert tenancy.annotation_allowed("cert-manager.io/cluster-issuer", allowed)
    assert tenancy.annotation_allowed("nginx.ingress.kubernetes.io/proxy-body-size", allowed)
    assert not tenancy.annotation_allowed("nginx.ingress.kubernetes.io/proxy-body-size-x", allowed)
    assert not tenancy.annotation_allowed("nginx.ingress.kubernetes.io/auth-url", allowed)
    assert not tenancy.annotation_allowed("cert-manager.io.evil/x", allowed)


def test_refused_annotations_are_left_out_and_named_in_the_verdict() -> None:
    requested = {
        "nginx.ingress.kubernetes.io/server-snippet": "x",
        "nginx.ingress.kubernetes.io/auth-url": "http://a/",
        "cert-manager.io/cluster-issuer": "corp",
    }
    kept, verdict = tenancy.ingress_annotations(requested, allowed=tenancy.DEFAULT_INGRESS_ANNOTATIONS)
    assert kept == {"cert-manager.io/cluster-issuer": "corp"}
    assert not verdict.ok and verdict.reason == "IngressAnnotationsRefused"
    assert (
        "nginx.ingress.kubernetes.io/auth-url, nginx.ingress.kubernetes.io/server-snippet" in verdict.message
    )
    assert "corp" not in verdict.message and "http://a/" not in verdict.message


def test_no_annotations_is_fine() -> None:
    kept, verdict = tenancy.ingress_annotations(None, allowed=())
    assert kept == {} and verdict.ok


def test_the_default_allowlist_reaches_no_snippet_and_no_controller_wide_prefix() -> None:
    for entry in tenancy.DEFAULT_INGRESS_ANNOTATIONS:
        assert "snippet" not in entry
        assert entry != "*" and not entry.startswith("nginx.ingress.kubernetes.io/*")


def test_the_charts_default_allowlist_is_the_operators_default() -> None:
    values = yaml.safe_load((tests.support.ROOT / "charts" / "dockyard" / "values.yaml").read_text())
    chart_default = values["tenancy"]["ingressAnnotations"]["allowed"]
    assert tuple(chart_default) == tenancy.DEFAULT_INGRESS_ANNOTATIONS


def test_settings_take_the_allowlist_from_the_environment() -> None:
    assert settings.Settings.from_env({}).ingress_annotations_allowed == tenancy.DEFAULT_INGRESS_ANNOTATIONS
    assert (
        settings.Settings.from_env({"DOCKYARD_INGRESS_ANNOTATIONS_ALLOWED": ""}).ingress_annotations_allowed
        == ()
    )
    s = settings.Settings.from_env({"DOCKYARD_INGRESS_ANNOTATIONS_ALLOWED": " a.example/*, b ,,"})
    assert s.ingress_annotations_allowed == ("a.example/*", "b")


# -------------------------------------------------------------------------------------- pull secrets


def test_the_registrys_own_namespace_needs_no_opt_in() -> None:
    targets, verdict = tenancy.pull_secret_targets(
        [ns("team-a"), ns("team-b")], source_namespace="team-a", listed=["team-a"], match_labels=None
    )
    assert targets == ["team-a"] and verdict.ok


def test_a_listed_namespace_without_the_opt_in_is_skipped_and_named() -> None:
    namespaces = [ns("team-a"), ns("app", opted("team-a")), ns("kube-system"), ns("other", opted("team-z"))]
    targets, verdict = tenancy.pull_secret_targets(
        namespaces, source_namespace="team-a", listed=["app", "kube-system", "other"], match_labels=None
    )
    assert targets == ["app"]
    assert not verdict.ok and verdict.reason == "PullSecretNamespaceNotOptedIn"
    assert "kube-system, other" in verdict.message
    assert "pull-secrets-from.dockyard.dev/team-a=true" in verdict.message


def test_the_opt_in_label_must_say_true() -> None:
    namespace = ns("app", {"pull-secrets-from.dockyard.dev/team-a": "yes"})
    assert not tenancy.accepts_pull_secrets(namespace, source_namespace="team-a")
    assert tenancy.accepts_pull_secrets(ns("app", opted("team-a")), source_namespace="team-a")


def test_the_selector_chooses_only_among_opted_in_namespaces_and_names_none_of_the_others() -> None:
    selector = {"tier": "apps"}
    namespaces = [
        ns("web", {"tier": "apps", **opted("team-a")}),
        ns("secret-project", {"tier": "apps"}),
        ns("unrelated", opted("team-a")),
    ]
    targets, verdict = tenancy.pull_secret_targets(
        namespaces, source_namespace="team-a", listed=[], match_labels=selector
    )
    assert targets == ["web"]
    assert verdict.ok and "secret-project" not in verdict.message


def test_terminating_namespaces_get_nothing() -> None:
    targets, verdict = tenancy.pull_secret_targets(
        [ns("app", opted("team-a"), terminating=True)],
        source_namespace="team-a",
        listed=["app"],
        match_labels=None,
    )
    assert targets == [] and verdict.ok


def test_settings_take_the_watched_namespaces_from_the_environment() -> None:
    assert settings.Settings.from_env({}).watch_namespaces == ()
    s = settings.Settings.from_env({"DOCKYARD_WATCH_NAMESPACES": "team-a, team-b,"})
    assert s.watch_namespaces == ("team-a", "team-b")
    with pytest.raises(settings.SettingsError, match="Team_A"):
        settings.Settings.from_env({"DOCKYARD_WATCH_NAMESPACES": "Team_A"})
