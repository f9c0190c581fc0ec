"""Fixtures of the node trust integration tests: a Node object for the DaemonSet controller to schedule an
agent Pod onto. The operator fixtures come from tests/integration/conftest.py (one operator per session).
"""

from __future__ import annotations

import collections.abc
import secrets

import lightkube
import lightkube.models.meta_v1
import lightkube.resources.core_v1
import pytest


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
