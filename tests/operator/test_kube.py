"""kube.py without a server: API errors become our error types and kinds map to API resources.

Covers: 404 → NotFound, 409 AlreadyExists vs. a stale-resourceVersion 409, 422 → Invalid, 403 → Forbidden
naming the verb and object, a 403 from a terminating namespace → NamespaceTerminating, 429/5xx → Unavailable;
every child kind the builders produce has an API resource, and an unknown kind is refused; a client limited to
some namespaces (a namespace-scoped install) lists each of them instead of all namespaces and reads those
Namespaces one by one, skipping one that does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import ALL_NS, ApiError
from lightkube.models import meta_v1

from dockyard_operator import builders, kube
from tests.operator import test_builders


def _error(code: int, reason: str, message: str = "boom") -> ApiError:
    return ApiError(status=meta_v1.Status(code=code, reason=reason, message=message))


@pytest.mark.parametrize(
    ("code", "reason", "message", "expected"),
    [
        (404, "NotFound", "gone", kube.NotFound),
        (409, "AlreadyExists", "exists", kube.AlreadyExists),
        (409, "Conflict", "the object has been modified", kube.Conflict),
        (422, "Invalid", "spec.accessModes: field is immutable", kube.Invalid),
        (403, "Forbidden", 'User "x" cannot create resource "secrets"', kube.Forbidden),
        (
            403,
            "Forbidden",
            "unable to create new content in namespace ns because it is being terminated",
            kube.NamespaceTerminating,
        ),
        (429, "TooManyRequests", "slow down", kube.Unavailable),
        (503, "ServiceUnavailable", "etcd", kube.Unavailable),
        (400, "BadRequest", "nope", kube.KubeError),
    ],
)
def test_api_errors_become_our_error_types(
    code: int, reason: str, message: str, expected: type[kube.KubeError]
) -> None:
    translated = kube._translate(_error(code, reason, message), verb="create", what="Secret ns/demo-tls")
    assert type(translated) is expected
    assert translated.status == code
    assert "create Secret ns/demo-tls" in str(translated) and message in str(translated)


def test_a_conflict_is_never_mistaken_for_already_exists() -> None:
    translated = kube._translate(_error(409, "Conflict"), verb="update", what="x")
    assert not isinstance(translated, kube.AlreadyExists)


def test_every_child_kind_has_an_api_resource() -> None:
    spec = {"expose": {"ingress": {"host": "r.example.com"}}}
    for child in builders.desired_children(test_builders.make_inputs(spec)):
        assert kube.resource_for(child["apiVersion"], child["kind"]).__name__ == child["kind"]


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="does not manage"):
        kube.resource_for("v1", "Node")


class _Client:
    """Records what a Kube facade asks lightkube for; namespaces "a" and "b" exist, "gone" does not."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    async def list(self, res: Any, *, namespace: Any, labels: Any) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("list", res.__name__, namespace))
        yield {"metadata": {"name": f"secret-in-{namespace}", "namespace": namespace}}

    async def get(self, res: Any, name: str, namespace: Any = None) -> dict[str, Any]:
        self.calls.append(("get", res.__name__, name))
        if name == "gone":
            raise _error(404, "NotFound")
        return {"metadata": {"name": name}}


async def test_a_namespace_scoped_client_lists_each_watched_namespace_instead_of_all() -> None:
    client = _Client()
    scoped = kube.Kube(client, field_manager="t", namespaces=["b", "a", "gone"])  # type: ignore[arg-type]

    secrets = await scoped.list(api_version="v1", kind="Secret", labels={"x": "y"})
    namespaces = await scoped.list_namespaces()

    assert [s["metadata"]["namespace"] for s in secrets] == ["a", "b", "gone"]
    assert ("list", "Secret", ALL_NS) not in client.calls
    assert [n["metadata"]["name"] for n in namespaces] == ["a", "b"]
    assert not [c for c in client.calls if c[:2] == ("list", "Namespace")]


async def test_an_unscoped_client_lists_across_all_namespaces() -> None:
    client = _Client()
    everywhere = kube.Kube(client, field_manager="t")  # type: ignore[arg-type]
    await everywhere.list(api_version="v1", kind="Secret")
    assert client.calls == [("list", "Secret", ALL_NS)]
