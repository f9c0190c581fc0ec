"""Settings from the environment, the command line, and the small pure helpers of the kopf wiring.

Covers: defaults and overrides of the DOCKYARD_* variables (DOCKYARD_NODE_TRUST_ALLOWED_HOSTS: comma-separated
host patterns, lower-cased); bad values are a SettingsError and the CLI exits 2
with a message; `--help` works; which Secrets a spec references (passwords, a BYO TLS Secret); the owning
registry of a child is found through its controller owner reference only; RBAC_RULES name no wildcard and
cover every kind the reconciler writes; a watched object's pass goes through the triggers; kopf has only
event handlers for registries (no finalizer, no diffbase or progress annotations to write).
"""

from __future__ import annotations

import pytest

from dockyard_operator import builders, cache, cli, names, rbac, settings
from dockyard_operator import handlers as operator_handlers
from tests.operator import test_builders


def test_settings_have_documented_defaults() -> None:
    s = settings.Settings.from_env({})
    assert s.nginx_image == "nginx:1.27-alpine"
    assert s.resync_seconds == 60.0
    assert s.bcrypt_rounds == 12
    assert s.concurrent_passes == 16


def test_settings_come_from_the_environment() -> None:
    s = settings.Settings.from_env(
        {
            "DOCKYARD_REGISTRY_IMAGE": "r:1",
            "DOCKYARD_NGINX_IMAGE": "n:1",
            "DOCKYARD_RESYNC_SECONDS": "2.5",
            "DOCKYARD_BCRYPT_ROUNDS": "4",
            "DOCKYARD_CLUSTER_DOMAIN": "corp.local",
            "DOCKYARD_CONCURRENT_PASSES": "3",
        }
    )
    assert s.concurrent_passes == 3
    assert (s.registry_image, s.nginx_image, s.resync_seconds, s.bcrypt_rounds, s.cluster_domain) == (
        "r:1",
        "n:1",
        2.5,
        4,
        "corp.local",
    )


def test_node_trust_allowed_hosts_are_a_comma_separated_list_of_patterns() -> None:
    assert settings.Settings.from_env({}).node_trust_allowed_hosts == ()
    s = settings.Settings.from_env({"DOCKYARD_NODE_TRUST_ALLOWED_HOSTS": " *.Corp.example, docker.io,,"})
    assert s.node_trust_allowed_hosts == ("*.corp.example", "docker.io")


@pytest.mark.parametrize(
    "env",
    [
        {"DOCKYARD_RESYNC_SECONDS": "soon"},
        {"DOCKYARD_RESYNC_SECONDS": "0"},
        {"DOCKYARD_BCRYPT_ROUNDS": "40"},
        {"DOCKYARD_CONCURRENT_PASSES": "0"},
        {"DOCKYARD_CONCURRENT_PASSES": "many"},
        {"DOCKYARD_NODE_TRUST_ALLOWED_HOSTS": "corp.example:5000"},
        {"DOCKYARD_NODE_TRUST_ALLOWED_HOSTS": "registry.*.example"},
    ],
)
def test_bad_settings_are_an_error(env: dict[str, str]) -> None:
    with pytest.raises(settings.SettingsError):
        settings.Settings.from_env(env)


def test_the_cli_exits_2_on_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKYARD_RESYNC_SECONDS", "-1")
    assert cli.main([]) == 2
    assert "DOCKYARD_RESYNC_SECONDS" in capsys.readouterr().err


def test_the_cli_exits_2_on_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--bogus"])
    assert info.value.code == 2
    assert "--bogus" in capsys.readouterr().err


def test_referenced_secrets_are_the_password_secrets_and_a_byo_tls_secret() -> None:
    spec = {
        "auth": {
            "users": [
                {"name": "a", "passwordSecretRef": {"name": "s1"}},
                {"name": "b", "passwordSecretRef": {"name": "s2"}},
            ]
        },
        "tls": {"mode": "Secret", "secretName": "mine"},
    }
    assert operator_handlers.referenced_secrets(spec) == {"s1", "s2", "mine"}
    assert operator_handlers.referenced_secrets({"tls": {"secretName": "unused"}}) == set()


def test_a_child_maps_to_its_registry_through_the_owner_reference_only() -> None:
    owned = {
        "metadata": {
            "ownerReferences": [{"apiVersion": names.API_VERSION, "kind": names.KIND, "name": "demo"}]
        }
    }
    foreign = {
        "metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "demo"}]}
    }
    assert operator_handlers.owner_registry(owned) == "demo"
    assert operator_handlers.owner_registry(foreign) is None
    assert operator_handlers.owner_registry({"metadata": {}}) is None


def test_rbac_rules_have_no_wildcards_and_cover_every_child_kind() -> None:
    plural = {
        "Secret": ("", "secrets"),
        "ConfigMap": ("", "configmaps"),
        "Service": ("", "services"),
        "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
        "Deployment": ("apps", "deployments"),
        "Ingress": ("networking.k8s.io", "ingresses"),
        "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
        "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    }
    granted = {
        (group, resource, verb)
        for rule in rbac.RBAC_RULES
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any("*" in part for entry in granted for part in entry)
    spec = {
        "expose": {"ingress": {"host": "r.example.com"}},
        "replicas": 2,
        "storage": {"pvc": {"accessModes": ["ReadWriteMany"]}},
        "networkPolicy": {"enabled": True},
    }
    made = test_builders.make_inputs(spec)
    kinds = {child["kind"] for child in builders.desired_children(made)}
    assert kinds == set(plural)
    for child in builders.desired_children(made):
        group, resource = plural[child["kind"]]
        for verb in ("get", "create", "patch", "watch"):
            assert (group, resource, verb) in granted, (child["kind"], verb)
    for optional in builders.optional_children(made):  # deleted when no longer wanted
        group, resource = plural[optional.kind]
        assert (group, resource, "delete") in granted, optional.kind
    assert (names.GROUP, f"{names.PLURAL}/status", "patch") in granted
    assert ("", "events", "create") in granted


class _Triggers:
    def __init__(self) -> None:
        self.triggers = self
        self.cache = cache.Cache()
        self.calls: list[tuple[str, str]] = []

    async def run(self, *, namespace: str, name: str, periodic: bool = False) -> None:
        self.calls.append((namespace, name))


async def test_a_watched_object_asks_the_triggers_for_its_registrys_pass_not_a_cluster_scoped_one() -> None:
    # (Every event handler marks the cache primed before it gets here: tests/operator/test_cache.py.)
    memo = _Triggers()
    await operator_handlers._run(memo, namespace="ns", name="demo")
    await operator_handlers._run(memo, namespace=None, name="demo")
    assert memo.calls == [("ns", "demo")]


def test_kopf_has_no_changing_handler_or_timer_for_registries_so_it_writes_nothing_to_them() -> None:
    import kopf

    registry = kopf.get_default_registry()
    resource = kopf.Resource(names.GROUP, names.VERSION, names.PLURAL)
    assert not registry._changing.has_handlers(resource=resource)
    assert not registry._spawning.has_handlers(resource=resource)
    assert registry._watching.has_handlers(resource=resource)


def test_help_describes_the_operator_and_its_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "PrivateRegistry" in out and "DOCKYARD_RESYNC_SECONDS" in out


def test_the_only_configmap_the_operator_may_delete_is_kube_public_local_registry_hosting() -> None:
    from dockyard_operator import hosting

    deletes = [r for r in rbac.RBAC_RULES if "configmaps" in r["resources"] and "delete" in r["verbs"]]
    assert [r.get("resourceNames") for r in deletes] == [[hosting.NAME]]
    assert rbac.HOSTING_NAME == hosting.NAME
