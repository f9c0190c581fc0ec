"""Users' password Secrets: rotation, missing references, and passwords never leaking.

Covers:
- changing a password Secret rehashes that user only (the new password verifies, the old one
  does not, other users keep their hashes) and changes the pod template so pods roll; rotating
  back to the earlier password works too;
- a reference to a missing Secret (or a missing key) makes Ready False with a message naming
  it, posts an Event naming it, and leaves the existing children untouched; creating the Secret
  then completes the reconcile;
- no password appears in Events, the registry's status or spec, any child other than as a
  bcrypt hash, or the operator's log.
"""

from __future__ import annotations

import functools
from typing import Any

import lightkube
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.types
import pytest
from passlib import apache

from dockyard_operator import names
from tests.integration.operator import cluster
from tests.integration.operator.conftest import Operator
from tests.support import kube

pytestmark = pytest.mark.integration

core = lightkube.resources.core_v1
apps = lightkube.resources.apps_v1
MERGE = lightkube.types.PatchType.MERGE
N = names.Names.of("demo")
PASSWORDS = {"alice": "alice-Rotate-pw-6", "bob": "bob-Rotate-pw-7"}
NEW_ALICE = "alice-Rotated-pw-8"
CAROL = "carol-Late-pw-9"


@pytest.fixture
def demo(kube_client: lightkube.Client, namespace: str, operator: Operator) -> Any:
    spec = {
        "auth": {
            "users": [
                cluster.user("alice", "alice-password", access="push"),
                cluster.user("bob", "bob-password"),
            ]
        }
    }
    created = cluster.create_registry(kube_client, namespace=namespace, spec=spec, passwords=PASSWORDS)
    cluster.wait_child(kube_client, apps.Deployment, N.deployment, namespace)
    return created


def _htpasswd(client: lightkube.Client, namespace: str) -> apache.HtpasswdFile:
    data = cluster.secret_data(client.get(core.Secret, N.htpasswd_secret, namespace=namespace))
    return apache.HtpasswdFile.from_string(data["htpasswd"])


def _only_password(client: lightkube.Client, namespace: str, password: str) -> bool:
    htpasswd = _htpasswd(client, namespace)
    others = {PASSWORDS["alice"], NEW_ALICE} - {password}
    return bool(htpasswd.check_password("alice", password)) and not any(
        htpasswd.check_password("alice", other) for other in others
    )


def _template_annotations(client: lightkube.Client, namespace: str) -> dict[str, str]:
    deployment: Any = client.get(apps.Deployment, N.deployment, namespace=namespace)
    return dict(deployment.spec.template.metadata.annotations or {})


def test_changing_a_password_rehashes_that_user_only_and_rolls_the_pods(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    before = kube.eventually(lambda: _htpasswd(kube_client, namespace), what="the htpasswd Secret")
    annotations = _template_annotations(kube_client, namespace)
    bob_hash = before.get_hash("bob")

    kube_client.patch(
        core.Secret,
        "alice-password",
        {"stringData": {"password": NEW_ALICE}},
        namespace=namespace,
        patch_type=MERGE,
    )

    after = kube.eventually(
        lambda: (found := _htpasswd(kube_client, namespace)).check_password("alice", NEW_ALICE) and found,
        what="alice's new password in the htpasswd Secret",
    )
    assert not after.check_password("alice", PASSWORDS["alice"])
    assert after.get_hash("bob") == bob_hash
    kube.eventually(
        lambda: _template_annotations(kube_client, namespace) != annotations,
        what="the pod template to change so the pods roll",
    )


def _mentions(condition: dict[str, Any] | None, text: str) -> bool:
    return condition is not None and text in condition.get("message", "")


def test_a_missing_password_secret_is_reported_by_name_and_leaves_the_children_untouched(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    htpasswd = kube.eventually(
        lambda: kube_client.get(core.Secret, N.htpasswd_secret, namespace=namespace),
        what="the htpasswd Secret",
    )
    template = kube_client.get(apps.Deployment, N.deployment, namespace=namespace).spec.template.to_dict()
    users = [
        cluster.user("alice", "alice-password", access="push"),
        cluster.user("bob", "bob-password"),
        cluster.user("carol", "carol-password"),
    ]

    kube_client.patch(
        cluster.PrivateRegistry,
        "demo",
        {"spec": {"auth": {"users": users}}},
        namespace=namespace,
        patch_type=MERGE,
    )

    ready = cluster.wait_condition(
        kube_client, "demo", namespace, "Ready", "False", match=lambda c: _mentions(c, "carol-password")
    )
    assert ready["reason"]
    kube.eventually(
        lambda: any(
            "carol-password" in (e.message or "") for e in cluster.events_for(kube_client, namespace, "demo")
        ),
        what="an Event naming the missing Secret",
    )
    unchanged = kube_client.get(core.Secret, N.htpasswd_secret, namespace=namespace)
    assert unchanged.data == htpasswd.data
    assert (
        kube_client.get(apps.Deployment, N.deployment, namespace=namespace).spec.template.to_dict()
        == template
    )

    kube_client.create(cluster.password_secret("carol-password", namespace, CAROL))

    kube.eventually(
        lambda: _htpasswd(kube_client, namespace).check_password("carol", CAROL),
        what="carol in the htpasswd Secret once her Secret exists",
    )

    # The status is written at the end of the pass that rewrote the htpasswd Secret: wait for it.
    def conditions_forget_carol() -> bool:
        registry = kube_client.get(cluster.PrivateRegistry, "demo", namespace=namespace)
        return not any(_mentions(c, "carol-password") for c in cluster.status_of(registry)["conditions"])

    kube.eventually(conditions_forget_carol, what="conditions that no longer name carol-password")


def test_a_missing_key_in_a_password_secret_is_reported_by_secret_and_key(
    kube_client: lightkube.Client, namespace: str, operator: Operator
) -> None:
    kube_client.create(cluster.password_secret("dave-password", namespace, "dave-Key-pw-10", key="pw"))
    spec = {"auth": {"users": [cluster.user("dave", "dave-password")]}}

    cluster.create_registry(kube_client, namespace=namespace, spec=spec)

    ready = cluster.wait_condition(
        kube_client, "demo", namespace, "Ready", "False", match=lambda c: _mentions(c, "dave-password")
    )
    assert "password" in ready["message"].replace("dave-password", "")  # names the missing key too


def test_no_password_appears_in_events_status_children_or_the_operator_log(
    control_plane: kube.ControlPlane,
    kube_client: lightkube.Client,
    namespace: str,
    demo: Any,
    operator: Operator,
) -> None:
    # Drive the interesting paths first: a rotation and a missing Secret.
    kube_client.patch(
        core.Secret,
        "alice-password",
        {"stringData": {"password": NEW_ALICE}},
        namespace=namespace,
        patch_type=MERGE,
    )
    kube.eventually(
        lambda: _htpasswd(kube_client, namespace).check_password("alice", NEW_ALICE), what="the rotation"
    )
    users = [cluster.user("alice", "alice-password"), cluster.user("erin", "erin-password")]
    kube_client.patch(
        cluster.PrivateRegistry,
        "demo",
        {"spec": {"auth": {"users": users}}},
        namespace=namespace,
        patch_type=MERGE,
    )
    cluster.wait_condition(
        kube_client, "demo", namespace, "Ready", "False", match=lambda c: _mentions(c, "erin-password")
    )

    secrets = [*PASSWORDS.values(), NEW_ALICE]
    events = control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    registry = control_plane.kubectl("get", "preg", "demo", "-n", namespace, "-o", "json").stdout
    children = control_plane.kubectl(
        "get", "deployments,configmaps,services,persistentvolumeclaims", "-n", namespace, "-o", "json"
    ).stdout
    htpasswd = cluster.secret_data(kube_client.get(core.Secret, N.htpasswd_secret, namespace=namespace))
    log = operator.output()
    # Each text is the real thing (so the checks below can fail): it mentions this registry.
    assert "CACreated" in events and N.htpasswd_secret in children
    assert "erin-password" in registry and f"{namespace}/demo" in log
    for password in secrets:
        for where, text in [("events", events), ("registry", registry), ("children", children), ("log", log)]:
            assert password not in text, f"a password appears in the {where}"
        assert password.encode() not in htpasswd["htpasswd"] + htpasswd["access.yaml"]


def test_rotating_back_to_an_earlier_password_works(
    kube_client: lightkube.Client, namespace: str, demo: Any
) -> None:
    for password in (NEW_ALICE, PASSWORDS["alice"]):
        kube_client.patch(
            core.Secret,
            "alice-password",
            {"stringData": {"password": password}},
            namespace=namespace,
            patch_type=MERGE,
        )
        kube.eventually(
            functools.partial(_only_password, kube_client, namespace, password),
            what="alice's current password, and only it, in the htpasswd Secret",
        )
