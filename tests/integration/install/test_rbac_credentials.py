"""The operator's credentials scenario (tests/integration/operator/test_credentials.py), chart RBAC.

Covers: every test of that module, collected here unchanged; only the `operator`
fixture differs: this package's conftest runs the operator as the chart's Deployment does, authenticated by a
TokenRequest token of the chart's ServiceAccount instead of the admin certificate. Any request RBAC refuses
fails the package.
"""

from __future__ import annotations

import pytest

from tests.integration.install import chart
from tests.integration.operator import test_credentials

pytestmark = pytest.mark.integration

globals().update(chart.scenario(test_credentials))
