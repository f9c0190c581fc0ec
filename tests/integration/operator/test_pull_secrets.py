"""spec.pullSecrets: dockerconfigjson copies in other namespaces, against the real API server.

Covers:
- a listed namespace gets a `kubernetes.io/dockerconfigjson` Secret whose every `auths` entry
  carries the chosen user's current credentials, and its `default` ServiceAccount lists it in
  imagePullSecrets (keeping what was there);
- rotating the user's password updates the copy;
- a namespace that gains the selector's labels later gets a copy too;
- a namespace that did not opt in (label `pull-secrets-from.dockyard.dev/<registry namespace>: "true"`)
  gets no copy and its ServiceAccount is untouched, whether listed (Degraded names it) or selected (not
  named); once it opts in, the copy arrives;
- deleting the registry, or dropping spec.pullSecrets, removes the copies and the
  ServiceAccount entry (they live in other namespaces, so no owner reference can), leaving the
  ServiceAccount's other entries alone.
"""

from __future__ import annotations

import base64
import collections.abc
import functools
import json
from typing import Any

import lightkube
import lightkube.models.core_v1
import lightkube.models.meta_v1
import lightkube.resources.core_v1
import lightkube.types
import pytest

from dockyard_operator import tenancy
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
meta = lightkube.models.meta_v1
MERGE = lightkube.types.PatchType.MERGE
PULL = "demo-pull"


@pytest.fixture
def app_namespaces(
    kube_client: lightkube.Client, namespace: str
) -> collections.abc.Iterator[tuple[str, str]]:
    """Two namespaces for workloads, both accepting pull secrets from `namespace`: one listed by name, one to
    be selected by label."""
    created = (f"{namespace}-app", f"{namespace}-web")
    for name in created:
        kube_client.create(core.Namespace(metadata=meta.ObjectMeta(name=name, labels=_opt_in(namespace))))
    yield created
    for name in created:
        kube_client.delete(core.Namespace, name)


def _opt_in(source: str) -> dict[str, str]:
    return {tenancy.opt_in_label(source): "true"}


def _credentials(client: lightkube.Client, namespace: str) -> set[str]:
    """The distinct `user:password` pairs in a pull Secret's auths entries."""
    secret: Any = client.get(core.Secret, PULL, namespace=namespace)
    assert secret.type == "kubernetes.io/dockerconfigjson"
    config = json.loads(cluster.secret_data(secret)[".dockerconfigjson"])
    assert config["auths"], "no auths entry"
    return {base64.b64decode(entry["auth"]).decode() for entry in config["auths"].values()}


def _pull_secret_names(client: lightkube.Client, namespace: str) -> list[str]:
    account: Any = client.get(core.ServiceAccount, "default", namespace=namespace)
    return [ref.name for ref in account.imagePullSecrets or []]


def test_pull_secrets_follow_the_users_password_and_go_with_the_registry(
    kube_client: lightkube.Client, namespace: str, operator: Operator, app_namespaces: tuple[str, str]
) -> None:
    app, _ = app_namespaces
    kube.eventually(
        lambda: kube_client.get(core.ServiceAccount, "default", namespace=app),
        what="KCM's default ServiceAccount",
    )
    kube_client.patch(
        core.ServiceAccount,
        "default",
        {"imagePullSecrets": [{"name": "theirs"}]},
        namespace=app,
        patch_type=MERGE,
    )
    spec = {
        "auth": {"users": [cluster.user("puller", "puller-password")]},
        "pullSecrets": {"user": "puller", "namespaces": [app], "serviceAccount": "default"},
    }
    cluster.create_registry(
        kube_client, namespace=namespace, spec=spec, passwords={"puller": "puller-Pull-pw-25"}
    )

    kube.eventually(
        lambda: _credentials(kube_client, app) == {"puller:puller-Pull-pw-25"},
        what="the pull Secret in the app namespace",
    )
    kube.eventually(
        lambda: sorted(_pull_secret_names(kube_client, app)) == ["demo-pull", "theirs"],
        what="the ServiceAccount to list the pull Secret beside its own",
    )

    kube_client.patch(
        core.Secret,
        "puller-password",
        {"stringData": {"password": "puller-Rotated-pw-26"}},
        namespace=namespace,
        patch_type=MERGE,
    )
    kube.eventually(
        lambda: _credentials(kube_client, app) == {"puller:puller-Rotated-pw-26"}, what="the copy to follow"
    )

    kube_client.delete(cluster.PrivateRegistry, "demo", namespace=namespace)

    kube.eventually(
        functools.partial(cluster.absent, kube_client, core.Secret, PULL, app),
        timeout=90,
        what="the pull Secret to be removed with the registry",
    )

    def entry_removed() -> bool:
        listed = _pull_secret_names(kube_client, app)
        assert listed == ["theirs"], f"imagePullSecrets of {app}/default: {listed}"
        return True

    kube.eventually(entry_removed, what="the ServiceAccount entry to be removed, theirs kept")


def test_a_namespace_that_gains_the_selector_labels_gets_a_copy(
    kube_client: lightkube.Client, namespace: str, operator: Operator, app_namespaces: tuple[str, str]
) -> None:
    _, web = app_namespaces
    selector = {"dockyard.test/pull-from": namespace}
    spec = {
        "auth": {"users": [cluster.user("puller", "puller-password")]},
        "pullSecrets": {"user": "puller", "namespaceSelector": selector},
    }
    cluster.create_registry(
        kube_client, namespace=namespace, spec=spec, passwords={"puller": "puller-Select-pw-27"}
    )
    cluster.wait_condition(kube_client, "demo", namespace, "CertificateReady", "True")
    assert cluster.absent(kube_client, core.Secret, PULL, web)

    kube_client.patch(core.Namespace, web, {"metadata": {"labels": selector}}, patch_type=MERGE)

    kube.eventually(
        lambda: _credentials(kube_client, web) == {"puller:puller-Select-pw-27"},
        what="a copy in the newly labelled namespace",
    )


def test_dropping_pull_secrets_from_the_spec_removes_the_copies_and_the_service_account_entry(
    kube_client: lightkube.Client, namespace: str, operator: Operator, app_namespaces: tuple[str, str]
) -> None:
    app, _ = app_namespaces
    kube.eventually(
        lambda: kube_client.get(core.ServiceAccount, "default", namespace=app),
        what="KCM's default ServiceAccount",
    )
    spec = {
        "auth": {"users": [cluster.user("puller", "puller-password")]},
        "pullSecrets": {"user": "puller", "namespaces": [app], "serviceAccount": "default"},
    }
    cluster.create_registry(
        kube_client, namespace=namespace, spec=spec, passwords={"puller": "puller-Drop-pw-28"}
    )
    kube.eventually(lambda: _pull_secret_names(kube_client, app) == [PULL], what="the ServiceAccount entry")

    kube_client.patch(
        cluster.PrivateRegistry,
        "demo",
        [{"op": "remove", "path": "/spec/pullSecrets"}],
        namespace=namespace,
        patch_type=lightkube.types.PatchType.JSON,
    )

    kube.eventually(
        functools.partial(cluster.absent, kube_client, core.Secret, PULL, app), what="the copy to be removed"
    )
    kube.eventually(lambda: _pull_secret_names(kube_client, app) == [], what="the ServiceAccount entry to go")


@pytest.fixture
def closed_namespace(kube_client: lightkube.Client, namespace: str) -> collections.abc.Iterator[str]:
    """A namespace that has not opted in to pull secrets from `namespace`."""
    name = f"{namespace}-closed"
    kube_client.create(core.Namespace(metadata=meta.ObjectMeta(name=name, labels={"tier": namespace})))
    yield name
    kube_client.delete(core.Namespace, name)


def test_a_namespace_that_did_not_opt_in_gets_no_copy_until_it_does(
    kube_client: lightkube.Client, namespace: str, operator: Operator, closed_namespace: str
) -> None:
    closed = closed_namespace
    kube.eventually(
        lambda: kube_client.get(core.ServiceAccount, "default", namespace=closed),
        what="KCM's default ServiceAccount",
    )
    spec = {
        "auth": {"users": [cluster.user("puller", "puller-password")]},
        "pullSecrets": {"user": "puller", "namespaces": [closed, namespace], "serviceAccount": "default"},
    }
    cluster.create_registry(
        kube_client, namespace=namespace, spec=spec, passwords={"puller": "puller-Closed-pw-29"}
    )

    degraded = cluster.wait_condition(
        kube_client, "demo", namespace, "Degraded", "True",
        match=lambda c: c["reason"] == "PullSecretNamespaceNotOptedIn",
    )  # fmt: skip
    assert closed in degraded["message"] and tenancy.opt_in_label(namespace) in degraded["message"]
    kube.eventually(
        lambda: _credentials(kube_client, namespace) == {"puller:puller-Closed-pw-29"},
        what="the copy in the registry's own namespace (no opt-in needed)",
    )
    assert cluster.absent(kube_client, core.Secret, PULL, closed)
    assert _pull_secret_names(kube_client, closed) == []

    kube_client.patch(core.Namespace, closed, {"metadata": {"labels": _opt_in(namespace)}}, patch_type=MERGE)

    kube.eventually(
        lambda: _credentials(kube_client, closed) == {"puller:puller-Closed-pw-29"},
        what="the copy once the namespace opted in",
    )
    cluster.wait_condition(kube_client, "demo", namespace, "Degraded", "False")
