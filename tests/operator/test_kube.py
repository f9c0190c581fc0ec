"""kube.py without a server: API errors become our error types and kinds map to API resources.

Covers: 404 → NotFound, 409 AlreadyExists vs. a stale-resourceVersion 409, 422 → Invalid, 403 → Forbidden
naming the verb and object, a 403 from a terminating namespace → NamespaceTerminating, 429/5xx → Unavailable;
every child kind the builders produce has an API resource, and an unknown kind is refused.
"""

from __future__ import annotations

import pytest
from lightkube import ApiError
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
