"""Fixtures of the node trust integration tests: the operator fixtures of tests/integration/operator, reused,
and a Node object for the DaemonSet controller to schedule an agent Pod onto.

Importing the operator fixtures here makes pytest register them for this directory too (one operator per
session: the session fixture is the same object both directories use).
"""

from __future__ import annotations

import collections.abc
import secrets

import lightkube
import lightkube.models.meta_v1
import lightkube.resources.core_v1
import pytest

from tests.integration.operator.conftest import (  # noqa: F401  # fixtures, registered by import
    crd_installed,
    operator,
    operator_session,
    pytest_runtest_makereport,
)


@pytest.fixture
def node(kube_client: lightkube.Client) -> collections.abc.Iterator[str]:
    """A Node object (no kubelet): the DaemonSet controller makes one agent Pod for it. Deleted afterwards."""
    name = f"trust-node-{secrets.token_hex(3)}"
    kube_client.create(
        lightkube.resources.core_v1.Node(
            metadata=lightkube.models.meta_v1.ObjectMeta(name=name, labels={"kubernetes.io/os": "linux"})
        )
    )
    yield name
    kube_client.delete(lightkube.resources.core_v1.Node, name)
