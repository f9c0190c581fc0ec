"""The operator's pull-secrets scenarios (tests/integration/operator/test_pull_secrets.py and test_orphans.py,
the orphan sweep), chart RBAC.

Covers: every test of those modules, collected here unchanged; only the `operator` fixture differs: this
package's conftest runs the operator as the chart's Deployment does, under a token of the chart's
ServiceAccount. So copies into opted-in namespaces, ServiceAccount entries, reading the Namespaces' opt-in
labels, removing copies and the orphan sweep's list, lookups and removals all work with the chart's rules,
and any request RBAC refuses fails the package.
"""

from __future__ import annotations

import pytest

from tests.integration.install import chart
from tests.integration.operator import test_orphans, test_pull_secrets

pytestmark = pytest.mark.integration

globals().update(chart.scenario(test_pull_secrets))
globals().update(chart.scenario(test_orphans))
