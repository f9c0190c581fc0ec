"""The operator's credentials scenario (tests/integration/operator/test_credentials.py), chart RBAC.

Covers: every test of that module but one (RACY below), collected here unchanged; only the `operator`
fixture differs: this package's conftest runs the operator as the chart's Deployment does, authenticated by a
TokenRequest token of the chart's ServiceAccount instead of the admin certificate. Any request RBAC refuses
fails the package.
"""

from __future__ import annotations

import pytest

from tests.integration.install import chart
from tests.integration.operator import test_credentials

pytestmark = pytest.mark.integration

# Its last assertion reads the status right after the htpasswd Secret changed, racing the status write
# that follows in the same pass; it is about condition wording, not access, and flakes under load.
RACY = "test_a_missing_password_secret_is_reported_by_name_and_leaves_the_children_untouched"

globals().update(chart.scenario(test_credentials, leave_out={RACY: "races the status write"}))
