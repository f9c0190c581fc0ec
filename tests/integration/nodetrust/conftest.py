"""Fixtures of the node trust integration tests: the operator fixtures of tests/integration/operator, reused.

Importing them here makes pytest register them for this directory too (one operator per session: the
session fixture is the same object both directories use).
"""

from __future__ import annotations

from tests.integration.operator.conftest import (  # noqa: F401  # fixtures, registered by import
    crd_installed,
    operator,
    operator_session,
    pytest_runtest_makereport,
)
