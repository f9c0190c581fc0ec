"""The orphan sweep: what a registry deleted while no operator ran left outside its namespace, against the
real API server.

Covers, for a registry with pull secrets (and their ServiceAccount entries) in two other namespaces and the
published `kube-public/local-registry-hosting`, deleted while the operator was stopped:
- a namespace-scoped operator (watching the registry's namespace and one of the two) removes the copy and
  the ServiceAccount entry in the namespace it manages, and leaves alone the copy in the namespace it does not
  manage, a copy naming a registry in a namespace it does not manage (an older copy, named by its label
  only), and the hosting ConfigMap (it does not manage kube-public);
- the cluster-wide operator then removes those too: the other copy and its entry, the older copy, the
  ConfigMap;
- a copy of a registry that still exists stays, with its ServiceAccount entry, throughout.
"""

from __future__ import annotations

import collections.abc
import functools
from pathlib import Path
from typing import Any

import lightkube
import lightkube.models.core_v1
import lightkube.models.meta_v1
import lightkube.resources.core_v1
import pytest

from dockyard_operator import hosting, pullsecrets, tenancy
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
meta = lightkube.models.meta_v1


@pytest.fixture
def others(kube_client: lightkube.Client, namespace: str) -> collections.abc.Iterator[tuple[str, str]]:
    """Two namespaces accepting pull secrets from `namespace`: one a namespace-scoped operator will manage,
    one it will not. The second sorts before `namespace` (the sweep looks registries up in sorted order,
    so once the first namespace's copy is gone, a registry in the second was looked up already, if at all)."""
    created = (f"{namespace}-app", f"a-{namespace}")
    for name in created:
        labels = {tenancy.opt_in_label(namespace): "true"}
        kube_client.create(core.Namespace(metadata=meta.ObjectMeta(name=name, labels=labels)))
    for name in created:
        kube.eventually(
            functools.partial(kube_client.get, core.ServiceAccount, "default", namespace=name),
            what=f"KCM's default ServiceAccount in {name}",
        )
    yield created
    for name in created:
        kube_client.delete(core.Namespace, name)


def _entries(client: lightkube.Client, namespace: str) -> list[str]:
    account: Any = client.get(core.ServiceAccount, "default", namespace=namespace)
    return sorted(ref.name for ref in account.imagePullSecrets or [])


def _hosting_owner(client: lightkube.Client) -> str | None:
    try:
        configmap: Any = client.get(core.ConfigMap, hosting.NAME, namespace=hosting.NAMESPACE)
    except lightkube.ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    return str((configmap.metadata.annotations or {}).get(hosting.OWNER_ANNOTATION))


def _present(client: lightkube.Client, name: str, namespace: str) -> bool:
    return not cluster.absent(client, core.Secret, name, namespace)


def test_what_a_registry_deleted_while_the_operator_was_down_left_behind_goes_where_the_operator_manages(
    kube_client: lightkube.Client,
    control_plane: kube.ControlPlane,
    namespace: str,
    operator: Operator,
    others: tuple[str, str],
    tmp_path: Path,
) -> None:
    app, unmanaged = others
    gone = {
        "auth": {"users": [cluster.user("puller", "puller-password")]},
        "pullSecrets": {"user": "puller", "namespaces": [app, unmanaged], "serviceAccount": "default"},
        "publishLocalRegistryHosting": True,
        "expose": {"type": "NodePort", "nodePort": 30617},
    }
    kept = {
        "auth": {"users": [cluster.user("puller", "puller-password")]},
        "pullSecrets": {"user": "puller", "namespaces": [app], "serviceAccount": "default"},
    }
    cluster.create_registry(
        kube_client, namespace=namespace, name="gone", spec=gone, passwords={"puller": "puller-Orph-pw-31"}
    )
    cluster.create_registry(kube_client, namespace=namespace, name="kept", spec=kept)
    kube.eventually(lambda: _entries(kube_client, app) == ["gone-pull", "kept-pull"], what="both entries")
    kube.eventually(lambda: _entries(kube_client, unmanaged) == ["gone-pull"], what="the other entry")
    kube.eventually(lambda: _hosting_owner(kube_client) == f"{namespace}/gone", what="the hosting ConfigMap")

    assert operator.stop() == 0
    try:
        kube_client.delete(cluster.PrivateRegistry, "gone", namespace=namespace)
        kube.eventually(
            functools.partial(cluster.absent, kube_client, cluster.PrivateRegistry, "gone", namespace),
            what="the registry to be gone (it carries no finalizer of ours)",
        )
        # An older copy (no registry annotation) of a registry in the namespace the scoped operator does
        # not manage, itself gone: named by its label alone.
        older = core.Secret(
            metadata=meta.ObjectMeta(
                name="older-pull",
                namespace=app,
                labels={pullsecrets.FOR_LABEL: pullsecrets.owner_label(unmanaged, "vanished")},
            ),
            type="kubernetes.io/dockerconfigjson",
            stringData={".dockerconfigjson": '{"auths":{}}'},
        )
        kube_client.create(older)

        scoped = Operator(plane=control_plane, log=tmp_path / "scoped-operator.log")
        scoped.start(namespaces=[namespace, app])
        try:
            kube.eventually(
                functools.partial(cluster.absent, kube_client, core.Secret, "gone-pull", app),
                what="the copy in a managed namespace to be removed",
            )
            kube.eventually(lambda: _entries(kube_client, app) == ["kept-pull"], what="its entry to go")
            assert _present(kube_client, "gone-pull", unmanaged), "a copy in an unmanaged namespace went"
            assert _entries(kube_client, unmanaged) == ["gone-pull"]
            assert _present(kube_client, "older-pull", app), "a copy of an unmanaged registry went"
            assert _hosting_owner(kube_client) == f"{namespace}/gone", "kube-public is not the scoped one's"
        finally:
            assert scoped.stop() == 0, scoped.output()
    finally:
        operator.start()

    kube.eventually(
        functools.partial(cluster.absent, kube_client, core.Secret, "gone-pull", unmanaged),
        what="the cluster-wide operator to remove the other copy",
    )
    kube.eventually(lambda: _entries(kube_client, unmanaged) == [], what="its entry to go")
    kube.eventually(
        functools.partial(cluster.absent, kube_client, core.Secret, "older-pull", app),
        what="the older copy to be removed",
    )
    kube.eventually(lambda: _hosting_owner(kube_client) is None, what="the hosting ConfigMap to be removed")
    assert _present(kube_client, "kept-pull", app), "the copy of a registry that exists went"
    assert _entries(kube_client, app) == ["kept-pull"]
    copy: Any = kube_client.get(core.Secret, "kept-pull", namespace=app)
    assert copy.metadata.annotations[pullsecrets.REGISTRY_ANNOTATION] == f"{namespace}/kept"
    kube_client.delete(cluster.PrivateRegistry, "kept", namespace=namespace)
