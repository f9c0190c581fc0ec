"""The pod hygiene scenario (tests/integration/operator/test_pod_hygiene.py) under the chart's RBAC.

Covers: every test of that module, collected here unchanged, with the operator run as the chart's Deployment
runs it (its ServiceAccount's token): PodDisruptionBudgets and NetworkPolicies are created and deleted, and
its metrics are served, with nothing RBAC refuses.
"""

from __future__ import annotations

import pytest

from tests.integration.install import chart
from tests.integration.operator import test_pod_hygiene

pytestmark = pytest.mark.integration

globals().update(chart.scenario(test_pod_hygiene))
