"""Fixtures shared by the integration tests: one real control plane per session, a namespace per test.

The control plane (etcd, kube-apiserver, kube-controller-manager; see tests/support/kube.py)
starts once, lazily, for the first test that asks for it, with every CRD in `crds/` applied
before the controller manager starts. A missing binary fails the test with the command that
builds it; nothing is skipped.
"""

from __future__ import annotations

import collections.abc
import os
import re
import secrets
from pathlib import Path

import lightkube
import lightkube.models.meta_v1
import lightkube.resources.core_v1
import pytest

import tests.support
from tests.support import kube


@pytest.fixture(scope="session")
def control_plane() -> collections.abc.Iterator[kube.ControlPlane]:
    # DOCKYARD_TEST_CRDS points at another directory of CRDs, to try a schema change before
    # committing it; by default the tests use the committed files, which the chart ships.
    crd_dir = Path(os.environ.get("DOCKYARD_TEST_CRDS") or tests.support.ROOT / "crds")
    crds = sorted(crd_dir.glob("*.yaml"))
    with kube.ControlPlane(crds=crds) as plane:
        yield plane


@pytest.fixture(scope="session")
def kube_client(control_plane: kube.ControlPlane) -> collections.abc.Iterator[lightkube.Client]:
    """A client with the admin (system:masters) identity."""
    client = lightkube.Client(
        config=lightkube.KubeConfig.from_file(control_plane.kubeconfig), field_manager="dockyard-tests"
    )
    yield client
    client.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_client: lightkube.Client) -> collections.abc.Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards (KCM finishes it in the background)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    kube_client.create(
        lightkube.resources.core_v1.Namespace(metadata=lightkube.models.meta_v1.ObjectMeta(name=name))
    )
    yield name
    kube_client.delete(lightkube.resources.core_v1.Namespace, name)
